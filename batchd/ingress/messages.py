"""The drop-in Messages API: `POST /v1/messages` queued for a batch, held open until its
result, answered exactly as the Messages API would (the Message, or its error); and the routes
an SDK user calls beside it (`count_tokens`, `models`), passed through to the API.

An Anthropic SDK pointed here with `base_url` gets batch prices without a code change. The SDKs
retry a timed-out or 5xx call by themselves: a retry (`X-Stainless-Retry-Count` above 0, or the
same `Idempotency-Key`) re-attaches to the request its first attempt queued, so one call is
paid once however many HTTP attempts it takes. An answer that must not be retried says so
(`x-should-retry: false`); one that may carries `retry-after`.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from typing import Any

import orjson
from aiohttp import web

from batchd.api import APIResponse
from batchd.client import SubmitItem
from batchd.errors import APIError, SubmitError
from batchd.ingress.app import (
    IDEMPOTENCY_HEADER,
    PRINCIPAL,
    idempotency_key,
    ingress,
    only_query,
    parse_json,
    submit_error,
)
from batchd.ingress.errors import TYPE_STATUS, IngressError
from batchd.ingress.limits import read_body, retry_headers
from batchd.results import Result
from batchd.store import requests as req_store
from batchd.validate import check_betas

#: Optional header naming the account a drop-in call runs under (else the token's first).
ACCOUNT_HEADER = "batchd-account"
#: Header of every drop-in answer after the submit: batchd's id of the queued request.
BATCHD_ID_HEADER = "batchd-request-id"
#: Sent by the official SDKs: 0 on a call's first attempt, n on its n-th retry.
RETRY_COUNT_HEADER = "x-stainless-retry-count"
#: Sent by the official SDKs: the client's own timeout for this attempt, in seconds.
TIMEOUT_HEADER = "x-stainless-timeout"
#: Sent by the official Python SDK: its read timeout for this attempt, in seconds.
READ_TIMEOUT_HEADER = "x-stainless-read-timeout"
BETA_HEADER = "anthropic-beta"
#: Optional header: the ledger tag (a tenant, feature or team) of a drop-in call.
TAG_HEADER = "batchd-tag"
#: Optional header: when the call's result is needed by (ISO 8601 with its offset, or epoch
#: seconds); past what a batch can make, the account's deadline_policy decides.
DEADLINE_HEADER = "batchd-deadline"
#: Header of a drop-in answer with a result: the route that produced it (batch or realtime).
MODE_HEADER = "batchd-mode"
#: Anthropic SDKs honour it: an answer whose retry could not turn out differently says so.
NO_RETRY = {"x-should-retry": "false"}
#: Seconds a held call answers before the SDK's own timeout would cut it.
TIMEOUT_MARGIN = 3.0
#: Seconds an SDK is told to wait before re-attaching after a hold ran out.
REATTACH_AFTER = 1.0


def _api_message(exc: SubmitError) -> str:
    """A refusal worded for the Messages API's body, whose fields are at the top level."""
    message = str(exc)
    if message.startswith("params."):
        return message[len("params.") :]
    if message.startswith("params:"):
        return "body" + message[len("params") :]
    return message


def render(result: Result, headers: dict[str, str]) -> web.Response:
    """What the Messages API would have answered for this batch result. Every answer but a
    Message is final: the request has ended, so a retry would only re-attach to it."""
    outcome = result.result
    kind = outcome.get("type")
    final = headers | NO_RETRY
    if kind == "succeeded" and result.message_dict is not None:
        return web.Response(
            body=orjson.dumps(result.message_dict),
            content_type="application/json",
            headers=headers,
        )
    if kind == "errored":
        error = outcome.get("error")
        inner = error.get("error") if isinstance(error, dict) else None
        if isinstance(error, dict) and isinstance(inner, dict):
            etype = str(inner.get("type"))
            status = TYPE_STATUS.get(etype)
            if status is not None:
                # The API's own error object, as its result line carried it.
                return web.Response(
                    body=orjson.dumps(error),
                    status=status,
                    content_type="application/json",
                    headers=final,
                )
            # batchd's own reasons (a result line that never came, a corrupted record).
            raise IngressError(500, f"{etype}: {inner.get('message', '')}", headers=final)
        raise IngressError(500, f"request {result.id} ended {result.status}", headers=final)
    if kind == "expired":
        raise IngressError(
            504,
            f"request {result.id} expired in its batch before it was processed "
            f"({result.attempts} attempts); nothing was billed",
            headers=final,
        )
    if kind == "canceled":
        raise IngressError(
            500,
            f"request {result.id} was canceled before it ran (DELETE /v1/requests/{result.id} "
            "or an operator's batch cancel); nothing was billed",
            headers=final,
        )
    raise IngressError(500, f"request {result.id} ended {result.status}", headers=final)


def _betas(request: web.Request) -> list[str] | None:
    raw = request.headers.getall(BETA_HEADER, [])
    names = [b.strip() for value in raw for b in value.split(",") if b.strip()]
    return names or None


def _passed_betas(request: web.Request) -> list[str] | None:
    """The betas of a call passed through, refused as the drop-in refuses them: a name batchd
    does not know (api.known_betas) gets the API's own message."""
    try:
        found = check_betas(_betas(request), ingress(request).settings)
    except SubmitError as exc:
        raise IngressError(400, str(exc), headers=NO_RETRY) from None
    return list(found) or None


def _retry_count(request: web.Request) -> int:
    raw = request.headers.get(RETRY_COUNT_HEADER, "0")
    return int(raw) if raw.isdigit() else 0


def _sdk_timeout(request: web.Request) -> float | None:
    """The seconds the SDK waits for this answer, if it says. The Python SDK's own
    `x-stainless-timeout` reads NOT_GIVEN when the timeout is set on the client rather than on
    the call; its `x-stainless-read-timeout` always holds the timeout in force."""
    for name in (READ_TIMEOUT_HEADER, TIMEOUT_HEADER):
        try:
            value = float(request.headers.get(name, ""))
        except ValueError:
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None


def _hold(request: web.Request, most: float) -> float:
    """How long to hold this attempt: the configured most, or less than the SDK waits."""
    sdk = _sdk_timeout(request)
    if sdk is None:
        return most
    return max(1.0, min(most, sdk - TIMEOUT_MARGIN))


async def create_message(request: web.Request) -> web.Response:
    """POST /v1/messages: queue the request (or re-attach to the one an earlier attempt of this
    call queued), hold the connection, answer with its result."""
    ctx = ingress(request)
    cfg = ctx.settings.ingress
    principal = request[PRINCIPAL]
    # SDKs add ?beta=true on their beta surface; it changes nothing here.
    only_query(request, "beta")
    key = idempotency_key(request)
    account = request.headers.get(ACCOUNT_HEADER, principal.default_account)
    raw = await read_body(request, cfg.max_body_bytes, cfg.body_timeout)
    body = parse_json(raw)
    if not isinstance(body, dict):
        raise IngressError(400, "body: must be a JSON object", headers=NO_RETRY)
    if body.get("stream") is True:
        raise IngressError(
            400,
            "stream: batchd answers through the Message Batches API, which does not stream; "
            "send the request without `stream: true`",
            headers=NO_RETRY,
        )
    principal.check(account)
    betas = _betas(request)
    digest = hashlib.sha256(raw + b"\x1f" + ",".join(sorted(betas or [])).encode()).hexdigest()
    hold = _hold(request, cfg.drop_in_max_hold)
    store, keys = ctx.client.store, ctx.client.keys
    # The slot is taken before the submit: a caller turned away has queued nothing.
    with ctx.held.hold():
        rid: str | None = None
        if key is None and _retry_count(request) > 0:
            rid = await store.read(req_store.find_attempt(keys, account, principal.name, digest))
        if rid is None:
            item = SubmitItem(
                body,
                key=key,
                account=account,
                betas=betas,
                tag=request.headers.get(TAG_HEADER),
                deadline=request.headers.get(DEADLINE_HEADER),
            )
            remember = key is None
            ttl_ms = int(cfg.drop_in_reattach * 1000)

            async def queue() -> str:
                ticket = await ctx.coalescer.submit(item, interactive=True)
                if remember:
                    await store.read(
                        req_store.remember_attempt(
                            keys, account, principal.name, digest, ticket.id, ttl_ms
                        )
                    )
                return ticket.id

            try:
                # Shielded: a client that hangs up mid-way (its timeout) must not leave a
                # request queued but not remembered, or its retry would queue another.
                rid = await asyncio.shield(queue())
            except SubmitError as exc:
                err = submit_error(exc)
                raise IngressError(
                    err.status, _api_message(exc), headers=err.headers | NO_RETRY
                ) from None
        headers = {BATCHD_ID_HEADER: rid}
        result = await ctx.wait_result(rid, hold)
    if result is None:
        why = (
            "batchd is shutting down"
            if ctx.stopping.is_set()
            else f"it has no result after {hold:g} s ("
            + (
                "ingress.drop_in_max_hold)"
                if hold >= cfg.drop_in_max_hold
                else "held short of the client's own timeout)"
            )
        )
        raise IngressError(
            503,
            f"the request is queued for a batch as {rid} and will still run, but {why}. "
            "Send the same call again (an SDK's own retry does): it waits for this same "
            f"request instead of queuing a new one; so does a call with the same "
            f"{IDEMPOTENCY_HEADER}, or GET /v1/requests/{rid}?wait=60 on this server",
            headers=headers | retry_headers(REATTACH_AFTER),
        )
    return render(result, headers | {MODE_HEADER: result.mode})


# -- pass-through ------------------------------------------------------------------------------


def _passed(answer: APIResponse) -> web.Response:
    return web.Response(body=answer.content, status=answer.status, headers=dict(answer.headers))


def _account(request: web.Request) -> str:
    ctx = ingress(request)
    principal = request[PRINCIPAL]
    account = request.headers.get(ACCOUNT_HEADER, principal.default_account)
    principal.check(account)
    if account not in ctx.settings.accounts:
        known = ", ".join(sorted(ctx.settings.accounts))
        raise IngressError(
            400,
            f"{ACCOUNT_HEADER}: account {account!r} is not configured (known: {known})",
            headers=NO_RETRY,
        )
    if ctx.settings.api_key(account) is None:
        raise IngressError(
            500,
            f"account {account!r} has no API key (accounts.{account}.api_key), so batchd cannot "
            "pass this call on to the API",
            headers=NO_RETRY,
        )
    return account


async def _call(fn: Any, *args: Any, **kwargs: Any) -> web.Response:
    """Run one pass-through call of the (blocking) API client off the event loop."""
    try:
        answer = await asyncio.to_thread(fn, *args, **kwargs)
    except APIError as exc:
        raise IngressError(
            502, f"the API could not be reached: {exc}", headers=retry_headers(1)
        ) from None
    return _passed(answer)


async def count_tokens(request: web.Request) -> web.Response:
    """POST /v1/messages/count_tokens: passed through to the API with the account's key."""
    ctx = ingress(request)
    cfg = ctx.settings.ingress
    only_query(request, "beta")
    account = _account(request)
    raw = await read_body(request, cfg.max_body_bytes, cfg.body_timeout)
    api = ctx.api(account)
    return await _call(api.count_tokens, raw, betas=_passed_betas(request))


async def list_models(request: web.Request) -> web.Response:
    """GET /v1/models: passed through to the API with the account's key."""
    ctx = ingress(request)
    only_query(request, "before_id", "after_id", "limit", "beta")
    account = _account(request)
    query = {k: v for k, v in request.query.items() if k != "beta"}
    api = ctx.api(account)
    return await _call(api.list_models, query=query or None, betas=_passed_betas(request))


async def retrieve_model(request: web.Request) -> web.Response:
    """GET /v1/models/{id}: passed through to the API with the account's key."""
    ctx = ingress(request)
    only_query(request, "beta")
    account = _account(request)
    api = ctx.api(account)
    model = request.match_info["id"]
    return await _call(api.retrieve_model, model, betas=_passed_betas(request))
