"""The drop-in `POST /v1/messages`: a Messages API request in, queued for a batch, held open
until its result, answered exactly as the Messages API would (the Message, or its error).

An Anthropic SDK pointed here with `base_url` gets batch prices without a code change.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from batchd.client import SubmitItem
from batchd.errors import SubmitError
from batchd.ingress.app import (
    IDEMPOTENCY_HEADER,
    PRINCIPAL,
    idempotency_key,
    ingress,
    only_query,
    read_object,
    submit_error,
)
from batchd.ingress.errors import TYPE_STATUS, IngressError
from batchd.results import Result

#: Optional header naming the account a drop-in call runs under (else the token's first).
ACCOUNT_HEADER = "batchd-account"
#: Header of every drop-in answer after the submit: batchd's id of the queued request.
BATCHD_ID_HEADER = "batchd-request-id"
#: Anthropic SDKs honour it: answers whose retry would queue the same request again say no.
NO_RETRY = {"x-should-retry": "false"}


def _api_message(exc: SubmitError) -> str:
    """A refusal worded for the Messages API's body, whose fields are at the top level."""
    message = str(exc)
    if message.startswith("params."):
        return message[len("params.") :]
    if message.startswith("params:"):
        return "body" + message[len("params") :]
    return message


def render(result: Result, headers: dict[str, str]) -> web.Response:
    """What the Messages API would have answered for this batch result."""
    outcome = result.result
    kind = outcome.get("type")
    if kind == "succeeded" and result.message_dict is not None:
        return web.Response(
            body=orjson.dumps(result.message_dict), content_type="application/json", headers=headers
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
                    headers=headers,
                )
            # batchd's own reasons (a result line that never came, a corrupted record).
            raise IngressError(500, f"{etype}: {inner.get('message', '')}", headers=headers)
        raise IngressError(500, f"request {result.id} ended {result.status}", headers=headers)
    if kind == "expired":
        raise IngressError(
            504,
            f"request {result.id} expired in its batch before it was processed "
            f"({result.attempts} attempts); nothing was billed",
            headers=headers,
        )
    if kind == "canceled":
        raise IngressError(
            500,
            f"request {result.id} was canceled before it ran (DELETE /v1/requests/{result.id} "
            "or an operator's batch cancel); nothing was billed",
            headers=headers | NO_RETRY,
        )
    raise IngressError(500, f"request {result.id} ended {result.status}", headers=headers)


async def create_message(request: web.Request) -> web.Response:
    """POST /v1/messages: queue the request, hold the connection, answer with its result."""
    ctx = ingress(request)
    principal = request[PRINCIPAL]
    # SDKs add ?beta=true on their beta surface; it changes nothing here.
    only_query(request, "beta")
    key = idempotency_key(request)
    account = request.headers.get(ACCOUNT_HEADER, principal.default_account)
    body: dict[str, Any] = await read_object(request)
    if body.get("stream") is True:
        raise IngressError(
            400,
            "stream: batchd answers through the Message Batches API, which does not stream; "
            "send the request without `stream: true`",
        )
    principal.check(account)
    hold = ctx.settings.ingress.drop_in_max_hold
    # The slot is taken before the submit: a caller turned away has queued nothing.
    with ctx.held.hold():
        try:
            ticket = await ctx.coalescer.submit(SubmitItem(body, key=key, account=account))
        except SubmitError as exc:
            err = submit_error(exc)
            raise IngressError(err.status, _api_message(exc)) from None
        headers = {BATCHD_ID_HEADER: ticket.id}
        result = await ctx.wait_result(ticket.id, hold)
    if result is None:
        why = (
            "batchd is shutting down"
            if ctx.stopping.is_set()
            else f"it has no result after {hold:g} s (ingress.drop_in_max_hold)"
        )
        raise IngressError(
            504,
            f"the request is queued for a batch as {ticket.id} and will still run, but {why}. "
            f"Fetch its result later with GET /v1/requests/{ticket.id}?wait=60 on this server. "
            f"A call carrying an {IDEMPOTENCY_HEADER} header may be sent again with the same key "
            "to wait for this same request instead of queuing a new one",
            headers=headers | NO_RETRY,
        )
    return render(result, headers)
