"""The emulator's HTTP face: the Message Batches endpoints (GA and beta form) and the app itself.

The real-time routes live in `realtime.py`, the admin endpoints under `/_emulator/` in
`admin.py`; every API call passes the checks of `endpoint.api` first.
"""

from __future__ import annotations

import asyncio
import functools
import time

from aiohttp import web

from batchd.emulator import admin, realtime
from batchd.emulator.config import (
    DOCUMENTED_RESULTS_PATH,
    LIST_DEFAULT_LIMIT,
    LIST_MAX_LIMIT,
    OPAQUE_RESULTS_PATH,
)
from batchd.emulator.endpoint import (
    BETAS,
    BODY,
    EMULATOR,
    ERROR_TYPES,
    FAULT_MESSAGES,
    api,
    base_url,
    cut_connection,
    errors_middleware,
    is_beta,
    json_response,
    stamp_headers,
)
from batchd.emulator.messages import InvalidBody, parse_and_release
from batchd.emulator.results import result_chunks
from batchd.emulator.state import ApiFailure, Batch, Emulator, Workspace, rfc3339
from batchd.logs import get_logger

_log = get_logger("batchd.emulator")
BATCHES = "/v1/messages/batches"


def batch_json(request: web.Request, emulator: Emulator, batch: Batch) -> dict[str, object]:
    """The MessageBatch as this emulator reports it: its clock offset, its results_url."""
    profile = emulator.profile
    return batch.to_json(
        emulator.now(),
        base_url(request, emulator),
        offset=profile.clock_offset,
        opaque=profile.opaque_results_url,
    )


@api("create", reads_body=True)
async def create_batch(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    body = request.pop(BODY)
    started = time.monotonic()
    parse = functools.partial(
        parse_and_release, body, emulator.config.max_batch_requests, beta=is_beta(request)
    )
    try:
        # Off the event loop: a 256 MB body takes a while to read through.
        parsed = await asyncio.get_running_loop().run_in_executor(None, parse)
    except InvalidBody as exc:
        raise ApiFailure(400, "invalid_request_error", str(exc)) from None
    # Only the compact records stay; the body and its parsed tree go now.
    del parse, body
    batch = emulator.create(workspace, parsed, betas=request[BETAS])
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
            cut_connection(request, reset=True)
            return web.Response(status=500)
        raise ApiFailure(status, ERROR_TYPES[status], FAULT_MESSAGES[status])
    return json_response(batch_json(request, emulator, batch))


@api("retrieve")
async def retrieve_batch(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    batch = emulator.retrieve(workspace, request.match_info["batch_id"])
    return json_response(batch_json(request, emulator, batch))


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
    now = emulator.now()
    for batch in page:
        workspace.bill(batch, now)
    return json_response(
        {
            "data": [batch_json(request, emulator, batch) for batch in page],
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
    return json_response(batch_json(request, emulator, batch))


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
    """Results by the documented path; they are counted under its template in the audit."""
    batch = emulator.retrieve(workspace, request.match_info["batch_id"], "results")
    return await _stream_results(request, emulator, workspace, batch, DOCUMENTED_RESULTS_PATH)


@api("results")
async def download_results(
    request: web.Request, emulator: Emulator, workspace: Workspace
) -> web.StreamResponse:
    """Results by the opaque path a `results_url` names when `opaque_results_url` is on."""
    batch_id = workspace.tokens.get(request.match_info["token"], "")
    if batch_id not in workspace.batches:
        raise ApiFailure(404, "not_found_error", "Not found")
    batch = emulator.retrieve(workspace, batch_id, "results")
    return await _stream_results(request, emulator, workspace, batch, OPAQUE_RESULTS_PATH)


async def _stream_results(
    request: web.Request, emulator: Emulator, workspace: Workspace, batch: Batch, path: str
) -> web.StreamResponse:
    now = emulator.now()
    if not batch.ended(now):
        raise ApiFailure(
            400,
            "invalid_request_error",
            f"Message batch {batch.id} is still {batch.status(now)};"
            " its results are available once it has ended.",
        )
    if batch.archived(now):
        raise ApiFailure(
            404,
            "not_found_error",
            f"Results of message batch {batch.id} were archived at"
            f" {rfc3339(batch.archived_at() + emulator.profile.clock_offset)} and are no"
            " longer available.",
        )
    workspace.downloads[path] = workspace.downloads.get(path, 0) + 1
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
        batch, beta=is_beta(request), newline=newline, stop_after=stop_after
    ):
        if split and chunk.endswith(b"\r\n"):
            # End this write between CR and LF, so a reader's chunks split the pair.
            await response.write(carry + chunk[:-1])
            carry = b"\n"
        else:
            await response.write(carry + chunk)
            carry = b""
    if reset:
        cut_connection(request, reset=profile.results_reset_mode == "rst")
        return response
    if carry:
        await response.write(carry)
    await response.write_eof()
    return response


def build_app(emulator: Emulator) -> web.Application:
    """The aiohttp application serving `emulator`."""
    app = web.Application(middlewares=[errors_middleware])
    app[EMULATOR] = emulator
    app.on_response_prepare.append(stamp_headers)
    batch = BATCHES + "/{batch_id}"
    app.router.add_post(BATCHES, create_batch)
    app.router.add_get(BATCHES, list_batches, allow_head=False)
    app.router.add_get(batch, retrieve_batch, allow_head=False)
    app.router.add_delete(batch, delete_batch)
    app.router.add_post(batch + "/cancel", cancel_batch)
    app.router.add_get(batch + "/results", batch_results, allow_head=False)
    app.router.add_get(OPAQUE_RESULTS_PATH, download_results, allow_head=False)
    realtime.add_routes(app.router)
    admin.add_routes(app.router)
    return app
