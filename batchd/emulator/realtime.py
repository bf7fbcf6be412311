"""The routes beside the batches: real-time `POST /v1/messages`, token counting and models.

A real-time Message comes from the same generator as a batch result, at `service_tier:
"standard"`; bad params are HTTP errors here, not result lines. Each billed call is audited,
by the `batchd-custom-id` header when batchd sends one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from batchd.emulator.catalog import MODELS, find_model, model_info
from batchd.emulator.config import LIST_MAX_LIMIT, MODELS_DEFAULT_LIMIT
from batchd.emulator.endpoint import (
    EXTRA_HEADERS,
    api,
    cut_connection,
    is_beta,
    json_body,
    json_response,
    limit_headers,
    stamp_limit,
    take,
)
from batchd.emulator.generate import answer, fake_message, reply_text
from batchd.emulator.state import ApiFailure, Emulator, Workspace, random_id
from batchd.emulator.usage import measure
from batchd.emulator.validate import (
    BETA_PARAMS_FIELDS,
    COUNT_FIELDS,
    PARAMS_FIELDS,
    Invalid,
    params_error,
)

# The header batchd puts on a real-time call: the custom_id it uses for the same request in
# batches, so the audit can tell a request billed on both routes.
CUSTOM_ID_HEADER = "batchd-custom-id"


def _refuse(invalid: Invalid) -> ApiFailure:
    return ApiFailure(invalid.status, invalid.error_type, invalid.message)


def _check_tokens(
    request: web.Request, emulator: Emulator, workspace: Workspace, params: dict[str, Any]
) -> int:
    """Input tokens of the call, after the input- and output-tokens-per-minute limits."""
    limits = emulator.limits
    tokens = measure(params).tokens
    out = params.get("max_tokens")
    wanted = out if isinstance(out, int) else 0
    inputs = workspace.buckets.get("input", limits.input_tpm) if limits.input_tpm else None
    outputs = workspace.buckets.get("output", limits.output_tpm) if limits.output_tpm else None
    headers = request[EXTRA_HEADERS]
    try:
        take(
            request, emulator, inputs, f"{limits.input_tpm or 0:,} input tokens per minute", tokens
        )
        take(
            request,
            emulator,
            outputs,
            f"{limits.output_tpm or 0:,} output tokens per minute",
            wanted,
        )
    finally:
        headers.update(limit_headers(emulator, "input-tokens", inputs))
        headers.update(limit_headers(emulator, "output-tokens", outputs))
        if inputs is not None and outputs is not None:
            # The tokens headers show input and output together, as the API's do.
            headers.update(
                stamp_limit(
                    emulator,
                    "tokens",
                    inputs.limit + outputs.limit,
                    inputs.remaining() + outputs.remaining(),
                    max(inputs.seconds_to_full(), outputs.seconds_to_full()),
                )
            )
        else:
            headers.update(limit_headers(emulator, "tokens", None))
    return tokens


@api("messages", reads_body=True)
async def create_message(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    params = json_body(request)
    allowed = BETA_PARAMS_FIELDS if is_beta(request) else PARAMS_FIELDS
    invalid = params_error(params, allowed)
    if invalid is not None:
        raise _refuse(invalid)
    if params.get("stream") is True:
        raise ApiFailure(
            400,
            "invalid_request_error",
            "stream: this emulator answers Messages whole; streaming is not supported",
        )
    _check_tokens(request, emulator, workspace, params)
    delay = emulator.injector.realtime_latency()
    if delay:
        await asyncio.sleep(delay)
    model = str(params["model"])
    entry = find_model(model)
    size = measure(params)
    cache = workspace.cache.use(size, entry.min_cache_tokens if entry else 1024, emulator.now())
    reply = reply_text(params)
    message = fake_message(
        message_id=random_id("msg_"),
        model=model,
        text=reply,
        input_tokens=size.tokens,
        beta=is_beta(request),
        result=answer(params, reply),
        cache=cache,
        service_tier="standard",
    )
    workspace.bill_realtime(request.headers.get(CUSTOM_ID_HEADER))
    if emulator.injector.lose_realtime_response():
        # Billed, and the answer never arrives.
        cut_connection(request, reset=True)
        return web.Response(status=500)
    return json_response(message)


@api("count_tokens", reads_body=True)
async def count_tokens(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    params = json_body(request)
    invalid = params_error(params, COUNT_FIELDS, count_only=True)
    if invalid is not None:
        raise _refuse(invalid)
    return json_response({"input_tokens": measure(params).tokens})


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", str(MODELS_DEFAULT_LIMIT))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= LIST_MAX_LIMIT:
        raise ApiFailure(
            400,
            "invalid_request_error",
            f"limit: Input should be an integer between 1 and {LIST_MAX_LIMIT}",
        )
    return limit


@api("models")
async def list_models(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    """Models newest first, paged like every list of the API."""
    limit = _limit(request)
    ids = [entry.id for entry in MODELS]
    before_id, after_id = request.query.get("before_id"), request.query.get("after_id")
    for name, cursor in (("before_id", before_id), ("after_id", after_id)):
        if cursor and cursor not in ids:
            raise ApiFailure(400, "invalid_request_error", f"{name}: no model {cursor}")
    if after_id:
        rest = MODELS[ids.index(after_id) + 1 :]
        page, has_more = rest[:limit], len(rest) > limit
    elif before_id:
        rest = MODELS[: ids.index(before_id)]
        page, has_more = rest[max(0, len(rest) - limit) :], len(rest) > limit
    else:
        page, has_more = MODELS[:limit], len(MODELS) > limit
    return json_response(
        {
            "data": [model_info(entry) for entry in page],
            "has_more": has_more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }
    )


@api("models")
async def get_model(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    """One model by id or alias; 404 not_found_error for a name the API does not know."""
    name = request.match_info["model_id"]
    entry = find_model(name)
    if entry is None:
        raise ApiFailure(404, "not_found_error", f"model: {name}")
    return json_response(model_info(entry))


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/v1/messages", create_message)
    router.add_post("/v1/messages/count_tokens", count_tokens)
    router.add_get("/v1/models", list_models, allow_head=False)
    router.add_get("/v1/models/{model_id}", get_model, allow_head=False)
