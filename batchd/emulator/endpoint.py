"""What every API call passes before its handler, and the shape of every answer.

In order: authentication, `anthropic-version`, `anthropic-beta`, rate limits, the body and its
`content-type`, then injected stalls and errors. Answers carry `request-id`, and authenticated
ones `anthropic-organization-id` and the `anthropic-ratelimit-*` headers.
"""

from __future__ import annotations

import asyncio
import functools
import math
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from batchd.emulator.headers import HeaderError, check_content_type, check_version, parse_betas
from batchd.emulator.limits import NOMINAL_LIMIT, Bucket, exceeded_message
from batchd.emulator.messages import error_body
from batchd.emulator.state import ApiFailure, Emulator, Workspace, random_id
from batchd.logs import get_logger

EMULATOR = web.AppKey("emulator", Emulator)
REQUEST_ID = web.RequestKey("request_id", str)
BODY = web.RequestKey("body", bytearray)
BETAS = web.RequestKey("betas", tuple)
WORKSPACE = web.RequestKey("workspace", Workspace)
# Headers an authenticated answer carries, filled in as the call is checked.
EXTRA_HEADERS = web.RequestKey("extra_headers", dict)
_log = get_logger("batchd.emulator")

ApiHandler = Callable[[web.Request, Emulator, Workspace], Awaitable[web.StreamResponse]]

ERROR_TYPES = {
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
FAULT_MESSAGES = {
    429: "Number of request tokens has exceeded your per-minute rate limit (emulated).",
    500: "Internal server error",
    502: "Bad gateway",
    503: "Service unavailable",
    504: "Request timed out",
    529: "Overloaded",
}
# Which bucket each operation draws from: the batch endpoints share one, as the API's do.
_LIMIT_KINDS = {
    "create": "batch",
    "retrieve": "batch",
    "list": "batch",
    "cancel": "batch",
    "delete": "batch",
    "results": "batch",
    "messages": "realtime",
    "count_tokens": "count",
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
        return error_response(request, ApiFailure(exc.status, ERROR_TYPES[exc.status], message))


async def stamp_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: request-id always; organization and rate limits once known."""
    response.headers["request-id"] = request.get(REQUEST_ID) or random_id("req_")
    extra: dict[str, str] | None = request.get(EXTRA_HEADERS)
    if extra:
        response.headers.update(extra)


def _bad_request(message: str) -> ApiFailure:
    return ApiFailure(400, "invalid_request_error", message)


def authenticate(request: web.Request, emulator: Emulator) -> Workspace:
    """The caller's workspace, after its key, `anthropic-version` and `anthropic-beta`."""
    key = request.headers.get("x-api-key")
    if not key:
        # The official SDKs send the API key as a bearer token instead.
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        key = token.strip() if scheme.lower() == "bearer" else ""
    if not key:
        raise ApiFailure(401, "authentication_error", "x-api-key header is required")
    workspace = emulator.workspaces.get(key)
    if workspace is None:
        raise ApiFailure(401, "authentication_error", "invalid x-api-key")
    request[EXTRA_HEADERS] = {"anthropic-organization-id": emulator.config.organization_id}
    try:
        check_version(request.headers.getall("anthropic-version", []))
        request[BETAS] = parse_betas(request.headers.getall("anthropic-beta", []))
    except HeaderError as exc:
        raise _bad_request(str(exc)) from None
    return workspace


def _reset_stamp(emulator: Emulator, seconds: float) -> str:
    """An RFC 3339 time `seconds` from now on the server's (offset) wall clock."""
    moment = time.time() + emulator.profile.clock_offset + seconds
    return (
        datetime.fromtimestamp(moment, UTC)
        .replace(microsecond=0)
        .isoformat()
        .replace("+00:00", "Z")
    )


def limit_headers(emulator: Emulator, prefix: str, bucket: Bucket | None) -> dict[str, str]:
    """`anthropic-ratelimit-{prefix}-limit/remaining/reset` for a bucket (or none enforced)."""
    if bucket is None:
        return stamp_limit(emulator, prefix, NOMINAL_LIMIT, NOMINAL_LIMIT, 0.0)
    return stamp_limit(emulator, prefix, bucket.limit, bucket.remaining(), bucket.seconds_to_full())


def stamp_limit(
    emulator: Emulator, prefix: str, limit: int, remaining: int, reset: float
) -> dict[str, str]:
    """The three headers of one limit; `reset` is seconds until it is full again."""
    name = f"anthropic-ratelimit-{prefix}"
    return {
        f"{name}-limit": str(limit),
        f"{name}-remaining": str(remaining),
        f"{name}-reset": _reset_stamp(emulator, reset),
    }


def take(
    request: web.Request,
    emulator: Emulator,
    bucket: Bucket | None,
    what: str,
    amount: float = 1.0,
) -> None:
    """Take from a bucket, or raise the API's 429 with the wait in `retry-after`."""
    if bucket is None:
        return
    wait = bucket.take(amount)
    if wait:
        raise ApiFailure(
            429,
            "rate_limit_error",
            exceeded_message(emulator.config.organization_id, what),
            retry_after=wait,
        )


def check_rate(
    request: web.Request, emulator: Emulator, workspace: Workspace, operation: str
) -> None:
    """Requests per minute for the operation's limit; the headers tell where it stands."""
    kind = _LIMIT_KINDS.get(operation)
    if kind is None:
        # Not limited here (models): the headers still say so, with the nominal limit.
        request[EXTRA_HEADERS].update(limit_headers(emulator, "requests", None))
        return
    limits = emulator.limits
    limit = {
        "batch": limits.batch_rpm,
        "realtime": limits.realtime_rpm,
        "count": limits.count_rpm,
    }[kind]
    bucket = workspace.buckets.get(kind, limit) if limit else None
    try:
        take(request, emulator, bucket, f"{limit or 0:,} requests per minute")
    finally:
        request[EXTRA_HEADERS].update(limit_headers(emulator, "requests", bucket))


def api(
    operation: str, *, reads_body: bool = False
) -> Callable[[ApiHandler], Callable[[web.Request], Awaitable[Any]]]:
    """Wrap an endpoint with the API's checks, rate limits and the faults of `operation`.

    With `reads_body`, the body is read (into `request[BODY]`) before faults are drawn, so an
    injected error reaches the client instead of a connection cut while it is still sending.
    """

    def wrap(handler: ApiHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def endpoint(request: web.Request) -> web.StreamResponse:
            emulator = request.app[EMULATOR]
            workspace = authenticate(request, emulator)
            request[WORKSPACE] = workspace
            check_rate(request, emulator, workspace, operation)
            if reads_body:
                body = await read_body(request, emulator.config.max_body_bytes)
                if body:
                    try:
                        check_content_type(request.headers.get("content-type"))
                    except HeaderError as exc:
                        raise _bad_request(str(exc)) from None
                request[BODY] = body
            delay = emulator.injector.slow(operation)
            if delay:
                await asyncio.sleep(delay)
            status = emulator.injector.status(operation)
            if status:
                retry = emulator.profile.retry_after if status == 429 else None
                raise ApiFailure(
                    status, ERROR_TYPES[status], FAULT_MESSAGES[status], retry_after=retry
                )
            return await handler(request, emulator, workspace)

        return endpoint

    return wrap


def base_url(request: web.Request, emulator: Emulator) -> str:
    return emulator.config.public_url or f"{request.scheme}://{request.host}"


def is_beta(request: web.Request) -> bool:
    return request.query.get("beta") == "true"


def json_body(request: web.Request) -> dict[str, Any]:
    """The body read by `api(reads_body=True)` as a JSON object, or the API's 400."""
    try:
        data = orjson.loads(request.pop(BODY))
    except orjson.JSONDecodeError as exc:
        raise _bad_request(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad_request("body: Input should be a valid dictionary")
    return data


def cut_connection(request: web.Request, *, reset: bool) -> None:
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


async def read_body(request: web.Request, limit: int) -> bytearray:
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
