"""The emulator's HTTP face: the Message Batches endpoints (GA and beta form) and `/_emulator/`.

Every API call passes authentication, version check, rate limits and injected faults in that
order; admin endpoints under `/_emulator/` need no key and never fail on purpose.
"""

from __future__ import annotations

import asyncio
import functools
import math
import re
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from batchd.emulator.config import LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT, OLDEST_API_VERSION
from batchd.emulator.faults import FaultProfile
from batchd.emulator.messages import InvalidBody, error_body, parse_and_release
from batchd.emulator.results import result_chunks
from batchd.emulator.state import ApiFailure, Emulator, Workspace, random_id, rfc3339
from batchd.errors import ConfigError
from batchd.logs import get_logger

EMULATOR = web.AppKey("emulator", Emulator)
_log = get_logger("batchd.emulator")
REQUEST_ID = web.RequestKey("request_id", str)
BODY = web.RequestKey("body", bytearray)
BATCHES = "/v1/messages/batches"
_VERSION = re.compile(r"\d{4}-\d{2}-\d{2}")

ApiHandler = Callable[[web.Request, Emulator, Workspace], Awaitable[web.StreamResponse]]

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}
_FAULT_MESSAGES = {
    429: "Number of request tokens has exceeded your per-minute rate limit (emulated).",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Request timed out",
    529: "Overloaded",
}


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")


def error_response(request: web.Request, failure: ApiFailure) -> web.Response:
    response = web.Response(
        status=failure.status,
        # aiohttp knows no phrase for 529.
        reason="Overloaded" if failure.status == 529 else None,
        body=orjson.dumps(error_body(failure.error_type, failure.message, request[REQUEST_ID])),
        content_type="application/json",
    )
    if failure.retry_after is not None:
        response.headers["retry-after"] = str(max(1, math.ceil(failure.retry_after)))
    if failure.status == 413:
        # The rest of an oversized body is not worth reading: answer and hang up.
        response.force_close()
    return response


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    request[REQUEST_ID] = random_id("req_")
    try:
        return await handler(request)
    except ApiFailure as failure:
        return error_response(request, failure)
    except ConnectionError:
        # The client went away mid-request (often on purpose, in chaos tests): not our error.
        _log.info("client_disconnected", method=request.method, path=request.path)
        return error_response(
            request, ApiFailure(400, "invalid_request_error", "connection lost mid-request")
        )
    except web.HTTPException as exc:
        if exc.status not in (404, 405):
            raise
        message = (
            f"Not found: {request.method} {request.path}"
            if exc.status == 404
            else f"Method {request.method} is not allowed on {request.path}"
        )
        return error_response(request, ApiFailure(exc.status, _ERROR_TYPES[exc.status], message))


async def _stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers["request-id"] = request.get(REQUEST_ID) or random_id("req_")


def _authenticate(request: web.Request, emulator: Emulator) -> Workspace:
    key = request.headers.get("x-api-key")
    if not key:
        # Newer SDKs send the API key as a bearer token instead.
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    if not key:
        raise ApiFailure(401, "authentication_error", "x-api-key header is required")
    workspace = emulator.workspaces.get(key)
    if workspace is None:
        raise ApiFailure(401, "authentication_error", "invalid x-api-key")
    version = request.headers.get("anthropic-version")
    if not version:
        raise ApiFailure(400, "invalid_request_error", "anthropic-version: header is required")
    if not _VERSION.fullmatch(version) or version < OLDEST_API_VERSION:
        raise ApiFailure(
            400, "invalid_request_error", f"anthropic-version: '{version}' is not a valid version"
        )
    return workspace


def _check_rate(emulator: Emulator, workspace: Workspace) -> None:
    limit = emulator.profile.requests_per_minute
    if not limit:
        return
    now = time.monotonic()
    if now - workspace.minute_start >= 60.0:
        workspace.minute_start, workspace.minute_calls = now, 0
    workspace.minute_calls += 1
    if workspace.minute_calls > limit:
        raise ApiFailure(
            429,
            "rate_limit_error",
            f"This workspace exceeded its rate limit of {limit} batch API requests per minute.",
            retry_after=60.0 - (now - workspace.minute_start),
        )


def api(
    operation: str, *, reads_body: bool = False
) -> Callable[[ApiHandler], Callable[[web.Request], Awaitable[Any]]]:
    """Wrap an endpoint with authentication, rate limits and the faults of `operation`.

    With `reads_body`, the body is read (into `request[BODY]`) before faults are drawn, so an
    injected error reaches the client instead of a connection cut while it is still sending.
    """

    def wrap(handler: ApiHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def endpoint(request: web.Request) -> web.StreamResponse:
            emulator = request.app[EMULATOR]
            workspace = _authenticate(request, emulator)
            _check_rate(emulator, workspace)
            if reads_body:
                request[BODY] = await _read_body(request, emulator.config.max_body_bytes)
            delay = emulator.injector.slow(operation)
            if delay:
                await asyncio.sleep(delay)
            status = emulator.injector.status(operation)
            if status:
                retry = emulator.profile.retry_after if status == 429 else None
                failure = ApiFailure(
                    status, _ERROR_TYPES[status], _FAULT_MESSAGES[status], retry_after=retry
                )
                raise failure
            return await handler(request, emulator, workspace)

        return endpoint

    return wrap


def _base_url(request: web.Request, emulator: Emulator) -> str:
    return emulator.config.public_url or f"{request.scheme}://{request.host}"


def _is_beta(request: web.Request) -> bool:
    return request.query.get("beta") == "true"


def _cut_connection(request: web.Request, *, reset: bool) -> None:
    """Drop the client's connection: a FIN after what was sent, or a TCP reset."""
    transport = request.transport
    if transport is None:
        return
    if reset:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 makes close() send RST instead of FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    else:
        transport.close()


async def _read_body(request: web.Request, limit: int) -> bytearray:
    """The request body, refused with 413 as soon as it is known to pass `limit` bytes."""
    too_large = ApiFailure(
        413,
        "request_too_large",
        f"Request exceeds the maximum allowed number of bytes ({limit}).",
    )
    declared = request.content_length
    if declared is not None and declared > limit:
        raise too_large
    if declared is not None:
        # One allocation of the declared size, filled in place: no regrowth, no copies.
        body = bytearray(declared)
        filled = 0
        with memoryview(body) as view:
            while filled < declared:
                chunk = await request.content.readany()
                if not chunk:
                    break
                view[filled : filled + len(chunk)] = chunk
                filled += len(chunk)
        if filled < declared:
            del body[filled:]
        return body
    body = bytearray()
    # Counted as it arrives, since a chunked body declares no length.
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise too_large
    return body


@api("create", reads_body=True)
async def create_batch(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    body = request.pop(BODY)
    started = time.monotonic()
    parse = functools.partial(
        parse_and_release, body, emulator.config.max_batch_requests, beta=_is_beta(request)
    )
    try:
        # Off the event loop: a 256 MB body takes a while to read through.
        parsed = await asyncio.get_running_loop().run_in_executor(None, parse)
    except InvalidBody as exc:
        raise ApiFailure(400, "invalid_request_error", str(exc)) from None
    # Only the compact records stay; the body and its parsed tree go now.
    del parse, body
    batch = emulator.create(workspace, parsed)
    _log.info(
        "batch_created",
        batch_id=batch.id,
        workspace_id=workspace.id,
        requests=batch.size,
        parse_seconds=round(time.monotonic() - started, 3),
    )
    if emulator.injector.lose_create_response():
        status = emulator.profile.create_lost_response_status
        if status == 0:
            _cut_connection(request, reset=True)
            return web.Response(status=500)
        raise ApiFailure(status, _ERROR_TYPES[status], _FAULT_MESSAGES[status])
    return json_response(batch.to_json(emulator.now(), _base_url(request, emulator)))


@api("retrieve")
async def retrieve_batch(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    batch = emulator.get(workspace, request.match_info["batch_id"])
    return json_response(batch.to_json(emulator.now(), _base_url(request, emulator)))


@api("list")
async def list_batches(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    query = request.query
    raw_limit = query.get("limit", str(LIST_DEFAULT_LIMIT))
    try:
        limit = int(raw_limit)
    except ValueError:
        limit = 0
    if not 1 <= limit <= LIST_MAX_LIMIT:
        raise ApiFailure(
            400,
            "invalid_request_error",
            f"limit: Input should be an integer between 1 and {LIST_MAX_LIMIT}",
        )
    before_id, after_id = query.get("before_id"), query.get("after_id")
    if before_id and after_id:
        raise ApiFailure(
            400, "invalid_request_error", "before_id and after_id cannot be given together"
        )
    page, has_more = emulator.page(
        workspace, limit=limit, before_id=before_id or None, after_id=after_id or None
    )
    now, base = emulator.now(), _base_url(request, emulator)
    for batch in page:
        workspace.bill(batch, now)
    return json_response(
        {
            "data": [batch.to_json(now, base) for batch in page],
            "has_more": has_more,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
        }
    )


@api("cancel")
async def cancel_batch(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    batch = emulator.cancel(workspace, request.match_info["batch_id"])
    return json_response(batch.to_json(emulator.now(), _base_url(request, emulator)))


@api("delete")
async def delete_batch(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    batch_id = request.match_info["batch_id"]
    emulator.delete(workspace, batch_id)
    return json_response({"id": batch_id, "type": "message_batch_deleted"})


@api("results")
async def batch_results(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    batch_id = request.match_info["batch_id"]
    batch = emulator.get(workspace, batch_id)
    now = emulator.now()
    if not batch.ended(now):
        raise ApiFailure(
            400,
            "invalid_request_error",
            f"Message batch {batch_id} is still {batch.status(now)};"
            " its results are available once it has ended.",
        )
    if batch.archived(now):
        raise ApiFailure(
            404,
            "not_found_error",
            f"Results of message batch {batch_id} were archived at"
            f" {rfc3339(batch.archived_at())} and are no longer available.",
        )
    profile = emulator.profile
    reset = emulator.injector.reset_results()
    newline = b"\r\n" if profile.results_crlf else b"\n"
    split = profile.results_crlf and profile.results_split_crlf
    response = web.StreamResponse(headers={"content-type": "application/x-jsonl"})
    response.enable_chunked_encoding()
    await response.prepare(request)
    stop_after = int(batch.size * profile.results_reset_after) if reset else None
    carry = b""
    for chunk in result_chunks(
        batch, beta=_is_beta(request), newline=newline, stop_after=stop_after
    ):
        if split and chunk.endswith(b"\r\n"):
            # End this write between CR and LF, so a reader's chunks split the pair.
            await response.write(carry + chunk[:-1])
            carry = b"\n"
        else:
            await response.write(carry + chunk)
            carry = b""
    if reset:
        _cut_connection(request, reset=profile.results_reset_mode == "rst")
        return response
    if carry:
        await response.write(carry)
    await response.write_eof()
    return response


async def _json_object(request: web.Request) -> dict[str, Any]:
    try:
        data = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise ApiFailure(400, "invalid_request_error", f"body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiFailure(400, "invalid_request_error", "body must be a JSON object")
    return data


def _profile_json(emulator: Emulator) -> dict[str, Any]:
    return emulator.profile.to_dict() | {"seed": emulator.injector.seed}


async def get_profile(request: web.Request) -> web.StreamResponse:
    return json_response(_profile_json(request.app[EMULATOR]))


async def set_profile(request: web.Request) -> web.StreamResponse:
    """POST: the startup profile with the given keys changed; PATCH: the current one."""
    emulator = request.app[EMULATOR]
    data = await _json_object(request)
    base = emulator.config.profile if request.method == "POST" else emulator.profile
    try:
        profile = FaultProfile.from_mapping(data, base)
    except ConfigError as exc:
        raise ApiFailure(400, "invalid_request_error", str(exc)) from None
    emulator.set_profile(profile)
    return json_response(_profile_json(emulator))


async def get_audit(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[EMULATOR].audit())


def _clock_json(emulator: Emulator) -> dict[str, Any]:
    now = emulator.now()
    return {"now": rfc3339(now), "epoch": now, "scale": emulator.clock.scale}


def _number(data: dict[str, Any], key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        raise ApiFailure(400, "invalid_request_error", f"{key}: a number >= 0")
    return float(value)


async def advance_clock(request: web.Request) -> web.StreamResponse:
    emulator = request.app[EMULATOR]
    data = await _json_object(request)
    if "seconds" not in data:
        raise ApiFailure(400, "invalid_request_error", "seconds: Field required")
    emulator.clock.advance(_number(data, "seconds"))
    return json_response(_clock_json(emulator))


async def get_clock(request: web.Request) -> web.StreamResponse:
    return json_response(_clock_json(request.app[EMULATOR]))


async def set_clock(request: web.Request) -> web.StreamResponse:
    emulator = request.app[EMULATOR]
    data = await _json_object(request)
    if "scale" in data:
        emulator.clock.set_scale(_number(data, "scale"))
    if "advance" in data:
        emulator.clock.advance(_number(data, "advance"))
    return json_response(_clock_json(emulator))


async def reset(request: web.Request) -> web.StreamResponse:
    emulator = request.app[EMULATOR]
    emulator.reset()
    return json_response({"reset": True, "clock": _clock_json(emulator)})


async def health(request: web.Request) -> web.StreamResponse:
    return json_response({"status": "ok"})


async def get_config(request: web.Request) -> web.StreamResponse:
    config = request.app[EMULATOR].config
    return json_response(
        {
            "api_keys": len(config.api_keys),
            "max_body_bytes": config.max_body_bytes,
            "max_batch_requests": config.max_batch_requests,
            "expiry_seconds": config.expiry_seconds,
            "retention_seconds": config.retention_seconds,
            "clock_scale": config.clock_scale,
        }
    )


def build_app(emulator: Emulator) -> web.Application:
    """The aiohttp application serving `emulator`."""
    app = web.Application(middlewares=[errors_middleware])
    app[EMULATOR] = emulator
    app.on_response_prepare.append(_stamp_request_id)
    batch = BATCHES + "/{batch_id}"
    app.router.add_post(BATCHES, create_batch)
    app.router.add_get(BATCHES, list_batches, allow_head=False)
    app.router.add_get(batch, retrieve_batch, allow_head=False)
    app.router.add_delete(batch, delete_batch)
    app.router.add_post(batch + "/cancel", cancel_batch)
    app.router.add_get(batch + "/results", batch_results, allow_head=False)
    admin = "/_emulator"
    app.router.add_get(admin + "/health", health, allow_head=False)
    app.router.add_get(admin + "/config", get_config, allow_head=False)
    app.router.add_get(admin + "/profile", get_profile, allow_head=False)
    app.router.add_post(admin + "/profile", set_profile)
    app.router.add_patch(admin + "/profile", set_profile)
    app.router.add_get(admin + "/audit", get_audit, allow_head=False)
    app.router.add_get(admin + "/clock", get_clock, allow_head=False)
    app.router.add_post(admin + "/clock", set_clock)
    app.router.add_post(admin + "/advance", advance_clock)
    app.router.add_post(admin + "/reset", reset)
    return app
