"""The ingress's operator routes: dead requests (list, requeue, purge) and look-ups of requests by
idempotency key or by batch. `install(app)` adds them, and the metering, to the app.

Each route acts only on the accounts the caller's token may use, as the producer routes do.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from batchd.errors import RequestNotFoundError
from batchd.ingress import metering
from batchd.ingress.app import (
    PRINCIPAL,
    batch_json,
    ingress,
    json_response,
    only_query,
    read_object,
    state_json,
)
from batchd.ingress.errors import IngressError
from batchd.settings import Settings
from batchd.store import AssemblyState, split_request_id
from batchd.store import requests as req_store
from batchd.store.requests import DeadLetter

#: Dead letters one `GET /v1/dead` lists at most.
MAX_DEAD_LIST = 1000
#: Requests of a batch one `GET /v1/requests?batch=` lists at most (page on with `offset`).
MAX_BATCH_LIST = 10_000
#: Request states read per round trip.
STATE_CHUNK = 500
_CLOSED_NOTE = (
    "the batch has closed: batchd keeps the list of a batch's requests only while it is in "
    "flight; its results at the API name them (`batchd batches results`)"
)
_INSTALLED = web.AppKey("batchd_operator_routes", bool)


def _iso(ms: int) -> str:
    stamp = datetime.fromtimestamp(ms / 1000, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def letter_json(x: DeadLetter) -> dict[str, Any]:
    etype, message = x.error
    return {"id": x.id, "account": x.account, "died_at": _iso(x.died_ms), "attempts": x.attempts,
            "error": {"type": etype, "message": message}, "lane": x.lane,
            "requeueable": x.requeueable}  # fmt: skip


def _int(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise IngressError(400, f"{name}: an integer from {low} to {high}, got {raw!r}", field=name)
    return int(raw)


def _accounts(request: web.Request, wanted: Any) -> list[str]:
    """The accounts a call may act on: `wanted` if given (checked), else all the token's."""
    ctx = ingress(request)
    principal = request[PRINCIPAL]
    if wanted is None:
        return principal.visible(ctx.settings.accounts)
    if not isinstance(wanted, str) or wanted not in ctx.settings.accounts:
        raise IngressError(400, f"account: {wanted!r} is not configured", field="account")
    principal.check(wanted)
    return [wanted]


def _error_type(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and value):
        return value
    raise IngressError(400, "error_type: a non-empty string", field="error_type")


async def list_dead(request: web.Request) -> web.Response:
    """GET /v1/dead[?account=A][&error_type=T][&limit=N]: dead requests, newest first."""
    ctx = ingress(request)
    only_query(request, "account", "error_type", "limit")
    accounts = _accounts(request, request.query.get("account"))
    error_type = _error_type(request.query.get("error_type"))
    limit = _int(request, "limit", 100, 1, MAX_DEAD_LIST)
    letters: list[DeadLetter] = []
    for account in accounts:
        letters += await ctx.client.dead(account=account, limit=limit, error_type=error_type)
    letters.sort(key=lambda x: x.died_ms, reverse=True)
    data = [letter_json(x) for x in letters[:limit]]
    return json_response({"data": data, "count": len(data)})


async def _chosen(request: web.Request) -> tuple[list[str] | None, list[str], str | None]:
    """(ids, accounts, error_type) of a requeue or purge: the ids named, or the selection."""
    body = await read_object(request)
    unknown = sorted(set(body) - {"ids", "all", "account", "error_type"})
    if unknown:
        raise IngressError(400, f"{unknown[0]}: unknown field (allowed: ids, all, account, "
                           "error_type)", field=unknown[0])  # fmt: skip
    ids, every = body.get("ids"), body.get("all", False)
    selection = every is True or body.get("account") is not None or "error_type" in body
    if not isinstance(every, bool):
        raise IngressError(400, "all: true or false", field="all")
    if ids is not None:
        if selection:
            raise IngressError(400, "ids: name dead requests or select them (all, account, "
                               "error_type), not both", field="ids")  # fmt: skip
        if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
            raise IngressError(400, "ids: a non-empty list of request ids", field="ids")
        principal = request[PRINCIPAL]
        for rid in ids:
            try:
                account, _ = split_request_id(rid)
            except ValueError:
                raise IngressError(400, f"ids: {rid!r} is not a batchd request id",
                                   field="ids") from None  # fmt: skip
            principal.check(account)
        return ids, [], None
    if not selection:
        raise IngressError(400, "body: name dead requests (`ids`) or select them (`all: true`, "
                           "`account`, `error_type`)", field="body")  # fmt: skip
    return None, _accounts(request, body.get("account")), _error_type(body.get("error_type"))


async def requeue_dead(request: web.Request) -> web.Response:
    """POST /v1/dead/requeue: send dead requests round again; what happened to each."""
    ctx = ingress(request)
    only_query(request)
    ids, accounts, error_type = await _chosen(request)
    outcomes: dict[str, str] = {}
    if ids is not None:
        outcomes = await ctx.client.requeue_dead(ids)
    for account in accounts:
        outcomes |= await ctx.client.requeue_dead(account=account, error_type=error_type)
    requeued = sum(1 for v in outcomes.values() if v == "requeued")
    return json_response({"data": outcomes, "requeued": requeued})


async def purge_dead(request: web.Request) -> web.Response:
    """POST /v1/dead/purge: forget dead letters (their results stay until retention ends)."""
    ctx = ingress(request)
    only_query(request)
    ids, accounts, error_type = await _chosen(request)
    purged = await ctx.client.purge_dead(ids) if ids is not None else 0
    for account in accounts:
        purged += await ctx.client.purge_dead(account=account, error_type=error_type)
    return json_response({"purged": purged})


async def find_requests(request: web.Request) -> web.Response:
    """GET /v1/requests?key=K[&account=A] | ?batch=ID[&offset=N][&limit=N]: look-ups."""
    only_query(request, "key", "account", "batch", "offset", "limit")
    key, batch = request.query.get("key"), request.query.get("batch")
    if (key is None) == (batch is None):
        raise IngressError(400, "key or batch: give one of them", field="key")
    if key is not None:
        return await _by_key(request, key)
    assert batch is not None
    return await _by_batch(request, batch)


async def _by_key(request: web.Request, key: str) -> web.Response:
    ctx = ingress(request)
    if "offset" in request.query or "limit" in request.query:
        raise IngressError(400, "offset, limit: only with batch", field="offset")
    wanted = request.query.get("account")
    [account] = _accounts(request, wanted or request[PRINCIPAL].default_account)
    try:
        state = await ctx.client.find(key, account=account)
    except RequestNotFoundError:
        return json_response({"data": [], "count": 0})
    return json_response({"data": [state_json(state)], "count": 1})


async def _by_batch(request: web.Request, ref: str) -> web.Response:
    ctx = ingress(request)
    if "account" in request.query:
        raise IngressError(400, "account: only with key (a batch names its account)",
                           field="account")  # fmt: skip
    offset = _int(request, "offset", 0, 0, 10**9)
    limit = _int(request, "limit", 1000, 1, MAX_BATCH_LIST)
    record = await ctx.client.batch(ref)
    if record is None:
        raise IngressError(404, f"no batch {ref!r} known to batchd (or past retention)")
    request[PRINCIPAL].check(record.account)
    ids = (await ctx.client.batch_requests(record))[offset : offset + limit]
    data: list[dict[str, Any]] = []
    for i in range(0, len(ids), STATE_CHUNK):
        part = ids[i : i + STATE_CHUNK]
        records = await ctx.client.store.read(req_store.read_many(ctx.client.keys, part))
        data += [{"id": rid, "status": str(r.status) if r else "unknown",
                  "attempts": r.attempts if r else None}
                 for rid, r in zip(part, records, strict=True)]  # fmt: skip
    out: dict[str, Any] = {"data": data, "count": len(data), "batch": batch_json(record)}
    if record.state is AssemblyState.DONE and not data:
        out["note"] = _CLOSED_NOTE
    return json_response(out)


def add_routes(app: web.Application) -> None:
    app.router.add_get("/v1/requests", find_requests, allow_head=False)
    app.router.add_get("/v1/dead", list_dead, allow_head=False)
    app.router.add_post("/v1/dead/requeue", requeue_dead)
    app.router.add_post("/v1/dead/purge", purge_dead)


def install(app: web.Application) -> None:
    """Add the operator routes and the metering to an app `build_app` made; once per app."""
    if not app.get(_INSTALLED):
        app[_INSTALLED] = True
        add_routes(app)
    metering.install(app)


# -- the OpenAPI document --------------------------------------------------------------------------


def _ok(schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "description": text,
        "headers": {"request-id": {"$ref": "#/components/headers/RequestId"}},
        "content": {"application/json": {"schema": schema}},
    }


def _errors(*statuses: str) -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/Error{s}"} for s in statuses}


def _query(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": text}


def openapi_paths(settings: Settings) -> dict[str, dict[str, Any]]:
    """The operator routes' path items, to merge into the ingress's document."""
    accounts = {"type": "string", "enum": sorted(settings.accounts)}
    letter = {
        "type": "object",
        "required": ["id", "account", "died_at", "attempts", "error", "requeueable"],
        "properties": {
            "id": {"type": "string"},
            "account": {"type": "string"},
            "died_at": {"type": "string"},
            "attempts": {"type": "integer"},
            "error": {
                "type": "object",
                "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
            },
            "lane": {"type": ["string", "null"]},
            "requeueable": {"type": "boolean"},
        },
    }
    selection = {
        "type": "object",
        "additionalProperties": False,
        "description": "`ids`, or a selection: `all: true`, `account`, `error_type` (together "
        "they narrow each other)",
        "properties": {
            "ids": {"type": "array", "minItems": 1, "items": {"type": "string"}},
            "all": {"type": "boolean"},
            "account": accounts,
            "error_type": {"type": "string", "minLength": 1},
        },
    }
    body = {"required": True, "content": {"application/json": {"schema": selection}}}
    return {
        "/v1/requests": {
            "get": {
                "operationId": "findRequests",
                "summary": "Requests by idempotency key, or the requests of a batch",
                "parameters": [
                    _query("key", {"type": "string", "minLength": 1}, "an idempotency key"),
                    _query("account", accounts, "the key's account (with key)"),
                    _query("batch", {"type": "string"}, "the API's batch id, or batchd's id"),
                    _query("offset", {"type": "integer", "minimum": 0}, "with batch"),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_BATCH_LIST},
                        "with batch",
                    ),
                ],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "data": {"type": "array", "items": {"type": "object"}},
                                "count": {"type": "integer"},
                                "batch": {"type": "object"},
                                "note": {"type": "string"},
                            },
                        },
                        "The request under the key (none: an empty list), or the batch's "
                        "requests (`{id, status, attempts}`) while it is in flight.",
                    ),
                    **_errors("400", "401", "403", "404", "429", "503"),
                },
            }
        },
        "/v1/dead": {
            "get": {
                "operationId": "listDead",
                "summary": "Requests that ended dead (retries exhausted), newest first",
                "parameters": [
                    _query("account", accounts, "only this account"),
                    _query(
                        "error_type",
                        {"type": "string", "minLength": 1},
                        "only those whose last error has this type",
                    ),
                    _query(
                        "limit",
                        {"type": "integer", "minimum": 1, "maximum": MAX_DEAD_LIST},
                        "at most this many (default 100)",
                    ),
                ],
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "data": {"type": "array", "items": letter},
                                "count": {"type": "integer"},
                            },
                        },
                        "The dead requests.",
                    ),
                    **_errors("400", "401", "403", "429", "503"),
                },
            }
        },
        "/v1/dead/requeue": {
            "post": {
                "operationId": "requeueDead",
                "summary": "Send dead requests round again from their first attempt",
                "requestBody": body,
                "responses": {
                    "200": _ok(
                        {
                            "type": "object",
                            "properties": {
                                "data": {
                                    "type": "object",
                                    "additionalProperties": {
                                        "enum": ["requeued", "not dead", "params gone"]
                                    },
                                },
                                "requeued": {"type": "integer"},
                            },
                        },
                        "What happened to each.",
                    ),
                    **_errors("400", "401", "403", "408", "413", "429", "503"),
                },
            }
        },
        "/v1/dead/purge": {
            "post": {
                "operationId": "purgeDead",
                "summary": "Forget dead letters (their results stay until retention ends)",
                "requestBody": body,
                "responses": {
                    "200": _ok(
                        {"type": "object", "properties": {"purged": {"type": "integer"}}},
                        "How many were forgotten.",
                    ),
                    **_errors("400", "401", "403", "408", "413", "429", "503"),
                },
            }
        },
    }
