"""The ingress's HTTP face: submit, bulk submit, fetch (long-poll), cancel, batches, OpenAPI.

Every route goes through the producer path of `AsyncClient` (the same validation, Lua submit,
idempotency and wait), behind one middleware for request ids, auth, rate limits and errors.
"""

from __future__ import annotations

import asyncio
import math
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from batchd.api import BatchesClient
from batchd.client import AsyncClient, SubmitItem
from batchd.defaults import SUBMIT_CHUNK
from batchd.errors import (
    CancelError,
    IdempotencyConflictError,
    RedisFullError,
    RedisUnavailableError,
    RequestNotFoundError,
    RequestTooLargeError,
    SubmitError,
    WaitTimeoutError,
)
from batchd.ingress.auth import Authenticator, Principal
from batchd.ingress.errors import IngressError, error_body
from batchd.ingress.limits import HeldSlots, RateLimiter, read_body, retry_headers
from batchd.logs import get_logger
from batchd.results import RequestState, Result, Ticket
from batchd.settings import ACCOUNT_NAME, Settings
from batchd.store import AssemblyRecord, split_request_id
from batchd.store import assemblies as asm_store
from batchd.store.requests import NewRequest

log = get_logger("batchd.ingress")

REQUEST_ID = web.RequestKey("request_id", str)
PRINCIPAL = web.RequestKey("principal", Principal)

#: Paths served without a token.
PUBLIC_PATHS = frozenset({"/openapi.json"})
#: The drop-in Messages endpoint and the API routes beside it: errors there carry no `field`,
#: exactly as the Messages API's do.
MESSAGES_PATH = "/v1/messages"
SDK_PREFIXES = ("/v1/messages", "/v1/models")
IDEMPOTENCY_HEADER = "Idempotency-Key"
#: Fields of one submitted request: those of `Client.submit`.
SUBMIT_FIELDS = frozenset(SubmitItem.__dataclass_fields__)
_JSONL_TYPES = frozenset({"application/jsonl", "application/x-jsonl", "application/x-ndjson",
                          "application/ndjson"})  # fmt: skip
_TOKEN = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")


class Coalescer:
    """Submits arriving in one turn of the event loop go to Redis in one call per account.

    Each still gets its own outcome (a Ticket, or the SubmitError of `prepare`); under load this
    turns one round trip (and one write syscall) per submit into one per loop turn.
    """

    def __init__(self, client: AsyncClient) -> None:
        self.client = client
        self._waiting: list[tuple[SubmitItem, bool, asyncio.Future[Ticket]]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: SubmitItem, *, interactive: bool = False) -> Ticket:
        """Queue one request (`interactive`: a drop-in call, cut after its own short wait)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Ticket] = loop.create_future()
        if not self._waiting:
            loop.call_soon(self._flush)
        self._waiting.append((item, interactive, future))
        return await future

    def _flush(self) -> None:
        waiting, self._waiting = self._waiting, []
        task = asyncio.ensure_future(self._send(waiting))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, waiting: list[tuple[SubmitItem, bool, asyncio.Future[Ticket]]]) -> None:
        groups: dict[str, list[tuple[NewRequest, str | None, asyncio.Future[Ticket]]]] = {}
        for item, interactive, future in waiting:
            try:
                r = await self.client.prepare(item, interactive=interactive)
            except SubmitError as exc:
                if not future.done():
                    future.set_exception(exc)
                continue
            groups.setdefault(r.account, []).append((r, item.key, future))
        for group in groups.values():
            for i in range(0, len(group), SUBMIT_CHUNK):
                await self._store(group[i : i + SUBMIT_CHUNK])

    async def _store(
        self, group: list[tuple[NewRequest, str | None, asyncio.Future[Ticket]]]
    ) -> None:
        try:
            outcomes = await self.client.submit_prepared([(r, k) for r, k, _ in group])
        except asyncio.CancelledError:
            for _, _, future in group:
                future.cancel()
            raise
        except Exception as exc:  # a Redis failure is every waiter's failure
            for _, _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, _, future), outcome in zip(group, outcomes, strict=True):
            if future.done():  # its caller went away (handler cancelled)
                continue
            if isinstance(outcome, SubmitError):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)


@dataclass
class Ingress:
    """What every handler shares: settings, the producer client, auth and limits."""

    settings: Settings
    client: AsyncClient
    auth: Authenticator
    limiter: RateLimiter
    held: HeldSlots
    openapi: bytes
    coalescer: Coalescer
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    apis: dict[str, BatchesClient] = field(default_factory=dict)

    def api(self, account: str) -> BatchesClient:
        """The API client of an account (for the routes passed through to the API)."""
        client = self.apis.get(account)
        if client is None:
            client = self.apis[account] = BatchesClient.from_settings(self.settings, account)
        return client

    async def wait_result(self, request_id: str, timeout: float) -> Result | None:
        """The request's result once terminal; None after `timeout` s or when stopping.

        Blocks on the request's done list (`AsyncClient.wait`), never polls.
        """
        waiter = asyncio.ensure_future(self.client.wait(request_id, timeout))
        stopper = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                if not task.done():
                    task.cancel()
            await asyncio.gather(waiter, stopper, return_exceptions=True)
        if waiter.cancelled():
            return None
        exc = waiter.exception()
        if isinstance(exc, WaitTimeoutError):
            return None
        if exc is not None:
            raise exc
        return waiter.result()


INGRESS = web.AppKey("ingress", Ingress)


def json_response(
    obj: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(obj), status=status, content_type="application/json", headers=headers
    )


def error_response(exc: IngressError, request_id: str, *, with_field: bool) -> web.Response:
    body = error_body(exc.error_type, exc.message, request_id, exc.field if with_field else None)
    return web.Response(
        body=body, status=exc.status, content_type="application/json", headers=exc.headers
    )


def ingress(request: web.Request) -> Ingress:
    return request.app[INGRESS]


def parse_json(raw: bytes, what: str = "body") -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise IngressError(400, f"{what}: not valid JSON: {exc}", field=what) from None


async def read_object(request: web.Request) -> dict[str, Any]:
    ctx = ingress(request)
    cfg = ctx.settings.ingress
    body = parse_json(await read_body(request, cfg.max_body_bytes, cfg.body_timeout))
    if not isinstance(body, dict):
        raise IngressError(400, "body: must be a JSON object", field="body")
    return body


def submit_error(exc: SubmitError) -> IngressError:
    """A refused submit as an HTTP error: 413 when it cannot fit a batch, 409 for a reused
    idempotency key with another body, else 400."""
    if isinstance(exc, IdempotencyConflictError):
        return IngressError(409, str(exc), field=exc.field, headers={"x-should-retry": "false"})
    status = 413 if isinstance(exc, RequestTooLargeError) else 400
    return IngressError(status, str(exc), field=exc.field)


def idempotency_key(request: web.Request) -> str | None:
    """The Idempotency-Key header, if sent; 400 when it is empty or too long."""
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        return None
    limit = ingress(request).settings.submit.max_key_length
    if not key or len(key) > limit:
        raise IngressError(
            400,
            f"{IDEMPOTENCY_HEADER}: 1 to {limit} characters, got {len(key)}",
            field=IDEMPOTENCY_HEADER,
        )
    return key


def only_query(request: web.Request, *names: str) -> None:
    """400 for a query parameter the route does not know (a typo must not be ignored)."""
    for name in request.query:
        if name not in names:
            known = ", ".join(names) if names else "none"
            raise IngressError(
                400, f"{name}: unknown query parameter (known here: {known})", field=name
            )


def submit_item(
    obj: Any, principal: Principal, header_key: str | None, where: str = ""
) -> dict[str, Any]:
    """One request's fields, checked for shape and permission; `prepare` checks the rest."""
    if not isinstance(obj, dict):
        raise IngressError(400, f"{where}item: must be a JSON object", field="item")
    unknown = sorted(set(obj) - SUBMIT_FIELDS)
    if unknown:
        raise IngressError(
            400,
            f"{where}{unknown[0]}: unknown field (allowed: {', '.join(sorted(SUBMIT_FIELDS))})",
            field=unknown[0],
        )
    if "params" not in obj:
        raise IngressError(400, f"{where}params: required", field="params")
    item = dict(obj)
    if header_key is not None:
        if item.get("key") is not None and item["key"] != header_key:
            raise IngressError(
                400,
                f"{where}key: differs from the {IDEMPOTENCY_HEADER} header; send one or the other",
                field="key",
            )
        item["key"] = header_key
    account = item.get("account")
    if account is None:
        item["account"] = principal.default_account
    elif isinstance(account, str):
        principal.check(account)
    return item


def ticket_json(ticket: Ticket, account: str, status: str) -> dict[str, Any]:
    return {
        "id": ticket.id,
        "status": status,
        "key": ticket.key,
        "account": account,
        "duplicate": ticket.duplicate,
    }


def state_json(state: RequestState) -> dict[str, Any]:
    return {
        "id": state.id,
        "status": state.state,
        "attempts": state.attempts,
        "batch_id": state.batch_id,
        "result": state.result.to_dict() if state.result is not None else None,
    }


async def statuses(ctx: Ingress, ids: list[str]) -> list[str]:
    """The state now of each request (one pipelined round trip)."""
    return await ctx.client.states(ids)


# -- routes ----------------------------------------------------------------------------------


async def submit(request: web.Request) -> web.Response:
    """POST /v1/requests: queue one request; 202 with its id."""
    ctx = ingress(request)
    only_query(request)
    body = await read_object(request)
    item = submit_item(body, request[PRINCIPAL], idempotency_key(request))
    try:
        ticket = await ctx.coalescer.submit(SubmitItem(**item))
    except SubmitError as exc:
        raise submit_error(exc) from None
    status = "pending"
    if ticket.duplicate:
        [status] = await statuses(ctx, [ticket.id])
    return json_response(ticket_json(ticket, item["account"], status), 202)


def bulk_items(raw: bytes, content_type: str) -> list[Any]:
    """The items of a bulk body: a JSON array, or JSONL under a JSONL content type (a bad line
    is an item carrying its own error, so the others still go in)."""
    if content_type not in _JSONL_TYPES:
        items = parse_json(raw)
        if not isinstance(items, list):
            raise IngressError(
                400,
                "body: must be a JSON array (or JSONL, sent as application/x-ndjson)",
                field="body",
            )
        return items
    out: list[Any] = []
    for n, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(orjson.loads(line))
        except orjson.JSONDecodeError as exc:
            out.append(IngressError(400, f"line {n}: not valid JSON: {exc}", field="item"))
    return out


async def submit_bulk(request: web.Request) -> web.Response:
    """POST /v1/requests/bulk: many requests; one outcome each, in order."""
    ctx = ingress(request)
    cfg = ctx.settings.ingress
    principal = request[PRINCIPAL]
    only_query(request)
    raw = await read_body(request, cfg.max_body_bytes, cfg.body_timeout)
    items = bulk_items(raw, request.content_type)
    if len(items) > cfg.max_bulk_items:
        raise IngressError(
            413, f"body: {len(items)} items; at most {cfg.max_bulk_items} per call", field="body"
        )
    header_key = idempotency_key(request)
    outcomes: list[dict[str, Any]] = [{"index": i} for i in range(len(items))]
    good: list[tuple[int, dict[str, Any]]] = []
    for i, obj in enumerate(items):
        try:
            if isinstance(obj, IngressError):
                raise obj
            # With the header, each item without a key of its own gets `<header>#<index>`,
            # so the whole call can be repeated safely.
            key = None
            if header_key is not None and isinstance(obj, dict) and obj.get("key") is None:
                key = f"{header_key}#{i}"
            good.append((i, submit_item(obj, principal, key, f"item {i}: ")))
        except IngressError as exc:
            outcomes[i]["error"] = _item_error(exc.error_type, exc.message, exc.field)
    sent = await ctx.client.submit_many([item for _, item in good])
    dup_slots: list[int] = []
    for (i, item), outcome in zip(good, sent, strict=True):
        if isinstance(outcome, SubmitError):
            err = submit_error(outcome)
            outcomes[i]["error"] = _item_error(
                err.error_type, f"item {i}: {err.message}", err.field
            )
            continue
        outcomes[i].update(ticket_json(outcome, item["account"], "pending"))
        if outcome.duplicate:
            dup_slots.append(i)
    if dup_slots:
        states = await statuses(ctx, [outcomes[i]["id"] for i in dup_slots])
        for i, st in zip(dup_slots, states, strict=True):
            outcomes[i]["status"] = st
    accepted = sum(1 for o in outcomes if "id" in o)
    return json_response(
        {"data": outcomes, "accepted": accepted, "refused": len(outcomes) - accepted}
    )


def _item_error(etype: str, message: str, fld: str | None) -> dict[str, Any]:
    return {"type": etype, "message": message, "field": fld}


def request_account(request: web.Request) -> tuple[str, str]:
    """(request id, account) of the `{id}` in the path; 404 if it is not one, 403 if not ours."""
    rid = request.match_info["id"]
    try:
        account, _ = split_request_id(rid)
    except ValueError:
        raise IngressError(404, f"no request {rid!r}: not a batchd request id") from None
    request[PRINCIPAL].check(account)
    return rid, account


def wait_seconds(request: web.Request, limit: float) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise IngressError(400, f"wait: a number of seconds >= 0, got {raw!r}", field="wait")
    return min(value, limit)


async def get_request(request: web.Request) -> web.Response:
    """GET /v1/requests/{id}[?wait=S]: its state, and its result once terminal."""
    ctx = ingress(request)
    rid, _ = request_account(request)
    only_query(request, "wait")
    wait = wait_seconds(request, ctx.settings.ingress.max_poll_wait)
    try:
        state = await ctx.client.get(rid)
        if wait > 0 and not state.terminal:
            with ctx.held.hold():
                result = await ctx.wait_result(rid, wait)
            if result is not None:
                state = RequestState(rid, result.status, result.attempts, result.batch_id, result)
            else:
                state = await ctx.client.get(rid)
    except RequestNotFoundError as exc:
        raise IngressError(404, str(exc)) from None
    return json_response(state_json(state))


async def cancel_request(request: web.Request) -> web.Response:
    """DELETE /v1/requests/{id}: cancel a pending request (the Python client's `cancel`)."""
    ctx = ingress(request)
    rid, _ = request_account(request)
    only_query(request)
    try:
        result = await ctx.client.cancel(rid)
    except RequestNotFoundError as exc:
        raise IngressError(404, str(exc)) from None
    except CancelError as exc:
        raise IngressError(409, str(exc)) from None
    state = RequestState(rid, result.status, result.attempts, result.batch_id, result)
    return json_response(state_json(state))


def _iso(ms: int | None) -> str | None:
    if not ms:
        return None
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def batch_json(a: AssemblyRecord) -> dict[str, Any]:
    return {
        "id": f"{a.account}.{a.id}",
        "account": a.account,
        "lane": a.lane,
        "state": a.state.value if a.state is not None else "unknown",
        "batch_id": a.batch_id,
        "requests": a.count,
        "bytes": a.content_length or a.bytes,
        "polls": a.polls,
        "request_counts": a.counts,
        "created_at": _iso(a.created_ms),
        "submitted_at": _iso(a.submitted_ms),
        "closed_at": _iso(a.closed_ms),
    }


async def list_batches(request: web.Request) -> web.Response:
    """GET /v1/batches[?account=A]: the batches in the making or in flight."""
    ctx = ingress(request)
    principal = request[PRINCIPAL]
    accounts = principal.visible(ctx.settings.accounts)
    only_query(request, "account")
    wanted = request.query.get("account")
    if wanted is not None:
        if wanted not in ctx.settings.accounts:
            raise IngressError(400, f"account: {wanted!r} is not configured", field="account")
        principal.check(wanted)
        accounts = [wanted]
    store, keys = ctx.client.store, ctx.client.keys
    data: list[dict[str, Any]] = []
    for account in accounts:
        asms = await store.read(asm_store.live(keys, account))
        for a in await store.read(asm_store.read_many(keys, [(account, x) for x in asms])):
            data.append(batch_json(a))
    return json_response({"data": data, "count": len(data)})


async def get_batch(request: web.Request) -> web.Response:
    """GET /v1/batches/{id}: one batch, by the API's batch id or batchd's `<account>.<id>`."""
    ctx = ingress(request)
    bid = request.match_info["id"]
    only_query(request)
    store, keys = ctx.client.store, ctx.client.keys
    where = await store.read(asm_store.find_batch(keys, list(ctx.settings.accounts), bid))
    if where is not None:
        account, asm = where
    else:
        account, _, asm = bid.partition(".")
        if not ACCOUNT_NAME.fullmatch(account) or not _TOKEN.fullmatch(asm):
            raise IngressError(404, f"no batch {bid!r} known to batchd")
    if account not in ctx.settings.accounts:
        raise IngressError(404, f"no batch {bid!r} known to batchd")
    request[PRINCIPAL].check(account)
    a = await store.read(asm_store.read(keys, account, asm))
    if a is None:
        raise IngressError(404, f"no batch {bid!r} known to batchd (or past retention)")
    return json_response(batch_json(a))


async def openapi(request: web.Request) -> web.Response:
    """GET /openapi.json: the document describing this listener."""
    return web.Response(body=ingress(request).openapi, content_type="application/json")


# -- middleware ------------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, auth and rate limit before the handler; every failure in the one shape."""
    ctx = ingress(request)
    rid = "req_" + secrets.token_hex(12)
    request[REQUEST_ID] = rid
    drop_in = request.path.startswith(SDK_PREFIXES)
    response: web.StreamResponse
    try:
        if request.path not in PUBLIC_PATHS:
            principal = ctx.auth.authenticate(request.headers, api_key_header=True)
            request[PRINCIPAL] = principal
            ctx.limiter.check(principal.name)
        response = await handler(request)
    except IngressError as exc:
        response = error_response(exc, rid, with_field=not drop_in)
    except web.HTTPException as exc:
        # The router's own answers (404, 405) and aiohttp's, in the one error shape.
        message = exc.text if exc.text and exc.status != 404 else f"no route {request.path}"
        headers = {}
        if exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
            headers["Allow"] = exc.headers.get("Allow", "")
        response = error_response(
            IngressError(exc.status, message or exc.reason, headers=headers),
            rid,
            with_field=not drop_in,
        )
    except RedisUnavailableError as exc:
        log.warning("ingress.redis_unavailable", error=str(exc), path=request.path)
        response = error_response(
            IngressError(503, "batchd's Redis is unavailable; retry shortly",
                         headers=retry_headers(1)),
            rid, with_field=not drop_in,
        )  # fmt: skip
    except RedisFullError as exc:
        log.warning("ingress.redis_full", error=str(exc), path=request.path)
        response = error_response(
            IngressError(503, str(exc), headers=retry_headers(5)), rid, with_field=not drop_in
        )
    except Exception:
        log.exception("ingress.handler_failed", path=request.path, request_id=rid)
        response = error_response(
            IngressError(500, "internal error in the batchd ingress"), rid, with_field=not drop_in
        )
    response.headers["request-id"] = rid
    return response
