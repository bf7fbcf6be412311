"""The ingress's cost route: `GET /v1/cost`, the ledger's report (as `batchd cost --json`) over
the accounts the caller's token may see."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from batchd.cost import DEFAULT_SPAN_MS, GROUPS, build, check_groups, parse_time
from batchd.errors import IngressError
from batchd.ingress.app import PRINCIPAL, ingress, json_response, only_query
from batchd.pricing import Prices
from batchd.store import ledger as ledger_store
from batchd.store.ledger import HOUR_MS

#: The route's path (the lead's route table adds `app.router.add_get(COST_PATH, get_cost)`).
COST_PATH = "/v1/cost"


async def get_cost(request: web.Request) -> web.Response:
    """GET /v1/cost[?since=7d][&until=now][&by=account,model,tag,lane,mode,day,hour]
    [&account=A][&tag=T]: tokens, cost as billed, the same tokens at real-time prices and the
    saving, by the groups asked (default: account), with the total."""
    ctx = ingress(request)
    only_query(request, "since", "until", "by", "account", "tag")
    principal = request[PRINCIPAL]
    accounts = principal.visible(ctx.settings.accounts)
    wanted = request.query.get("account")
    if wanted is not None:
        if wanted not in ctx.settings.accounts:
            raise IngressError(400, f"account: {wanted!r} is not configured", field="account")
        principal.check(wanted)
        accounts = [wanted]
    try:
        by = check_groups(request.query.get("by", "account").split(","))
    except ValueError as exc:
        raise IngressError(400, f"by: {exc}", field="by") from None
    store = ctx.client.store
    now = await store.time_ms()
    times: dict[str, int] = {}
    for name in ("since", "until"):
        value = request.query.get(name)
        if value is None:
            continue
        try:
            times[name] = parse_time(value, now)
        except ValueError as exc:
            raise IngressError(400, f"{name}: {exc}", field=name) from None
    until = times.get("until", now)
    since = times.get("since", until - DEFAULT_SPAN_MS)
    if since >= until:
        raise IngressError(400, "since: must come before until", field="since")
    since = since // HOUR_MS * HOUR_MS  # what the ledger's resolution covers
    entries = await store.read(ledger_store.read(store.keys, accounts, since, until, now))
    tag = request.query.get("tag")
    if tag is not None:
        entries = [e for e in entries if e.tag == tag]
    report = build(entries, Prices(ctx.settings.prices), by, since, until)
    return json_response(report.as_dict())


# -- its part of the OpenAPI document (openapi.py adds these to `paths` and `schemas`) -----------


def openapi_paths(accounts: list[str]) -> dict[str, Any]:
    """The route's entry under `paths`."""

    def query(name: str, description: str, **schema: Any) -> dict[str, Any]:
        return {
            "name": name,
            "in": "query",
            "required": False,
            "description": description,
            "schema": {"type": "string", **schema},
        }

    return {
        COST_PATH: {
            "get": {
                "operationId": "getCost",
                "summary": "Tokens, cost as billed, real-time cost and saving, from the ledger",
                "parameters": [
                    query(
                        "since",
                        "start: now, 30m, 24h, 7d, 2w, an ISO date or time (UTC), "
                        "or epoch ms (default: 7 days before until)",
                    ),
                    query("until", "end, in the same forms (default: now)"),
                    query(
                        "by", f"comma-separated groups among {', '.join(GROUPS)} (default: account)"
                    ),
                    query("account", "only this account", enum=sorted(accounts)),
                    query("tag", "only requests with this tag"),
                ],
                "responses": {
                    "200": {
                        "description": "The report.",
                        "headers": {"request-id": {"$ref": "#/components/headers/RequestId"}},
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/CostReport"}
                            }
                        },
                    },
                    **{
                        s: {"$ref": f"#/components/responses/Error{s}"}
                        for s in ("400", "401", "403", "429", "503")
                    },
                },
            }
        }
    }


def openapi_schemas() -> dict[str, Any]:
    """The report's schemas, for `components.schemas`."""
    count = {"type": "integer", "minimum": 0}
    usd = {"type": "number"}
    row = {
        "type": "object",
        "description": "One group (its keys are the `by` names, their values strings) or the "
        "total. Costs in USD.",
        "required": [
            "requests",
            "tokens",
            "cost_usd",
            "realtime_cost_usd",
            "saved_usd",
            "priced",
            "unpriced_models",
        ],
        "properties": {
            "requests": count,
            "tokens": {
                "type": "object",
                "required": ["input", "output", "cache_write_5m", "cache_write_1h", "cache_read"],
                "properties": {
                    k: count
                    for k in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
                },
            },
            "cost_usd": {**usd, "description": "as billed (batch usage at the batch discount)"},
            "realtime_cost_usd": {**usd, "description": "the same tokens at real-time prices"},
            "saved_usd": {**usd, "description": "realtime_cost_usd minus cost_usd"},
            "priced": {"type": "boolean", "description": "false when a model had no price"},
            "unpriced_models": {"type": "array", "items": {"type": "string"}},
        },
        "additionalProperties": {"type": "string"},
    }
    return {
        "CostRow": row,
        "CostReport": {
            "type": "object",
            "required": ["since", "until", "by", "currency", "rows", "total"],
            "properties": {
                "since": {"type": "string", "format": "date-time"},
                "until": {"type": "string", "format": "date-time"},
                "by": {"type": "array", "items": {"type": "string", "enum": list(GROUPS)}},
                "currency": {"const": "USD"},
                "rows": {"type": "array", "items": {"$ref": "#/components/schemas/CostRow"}},
                "total": {"$ref": "#/components/schemas/CostRow"},
            },
        },
    }
