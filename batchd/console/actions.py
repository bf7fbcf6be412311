"""What an operator can do from the console: requeue and purge dead letters (named, filtered, or
all), retry webhook deliveries that gave up, resume a paused account. Each is logged with who did
it, from where, what was chosen and what came of it.

Every function takes the parsed JSON body, checks it (raising `Refused` with a message for the
page), acts through the client, the outbox or the store, and returns what happened.
"""

from __future__ import annotations

from typing import Any

from batchd.client import Client
from batchd.logs import get_logger
from batchd.settings import Settings
from batchd.store import Store, split_request_id
from batchd.store import lanes as lane_store
from batchd.webhooks import outbox

from .auth import Principal

log = get_logger("batchd.console")

#: Dead letters or deliveries one action may name at most (a filter or `all` has no limit).
MAX_IDS = 10_000


class Refused(Exception):
    """An action's body does not say what to act on; the message says why (HTTP 400)."""


def _ids(body: dict[str, Any], settings: Settings) -> list[str]:
    ids = body.get("ids")
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise Refused("ids: a non-empty list of request ids")
    if len(ids) > MAX_IDS:
        raise Refused(f"ids: at most {MAX_IDS} at once (select by filter for more)")
    for rid in ids:
        try:
            account, _ = split_request_id(rid)
        except ValueError:
            raise Refused(f"ids: {rid!r} is not a batchd request id") from None
        if account not in settings.accounts:
            raise Refused(f"ids: {rid!r} names account {account!r}, which is not configured")
    return list(dict.fromkeys(ids))


def _selection(body: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """`{requests: [...]}` for named dead letters, else the filters of `Client.requeue_dead`."""
    unknown = sorted(set(body) - {"ids", "all", "account", "error_type"})
    if unknown:
        raise Refused(f"{unknown[0]}: unknown field (allowed: ids, all, account, error_type)")
    every = body.get("all", False)
    account, error_type = body.get("account"), body.get("error_type")
    if not isinstance(every, bool):
        raise Refused("all: true or false")
    if "ids" in body:
        if every or account is not None or error_type is not None:
            raise Refused("name dead letters (ids) or select them (all, account, error_type)")
        return {"requests": _ids(body, settings)}
    if account is not None and (not isinstance(account, str) or account not in settings.accounts):
        raise Refused(f"account: {account!r} is not configured")
    if error_type is not None and (not isinstance(error_type, str) or not error_type):
        raise Refused("error_type: a non-empty string")
    if account is None and error_type is None and not every:
        raise Refused("say which: ids, account, error_type, or all: true")
    return {
        "account": account,
        "error_type": error_type,
        "every": account is None and error_type is None,
    }


def _log(who: Principal, remote: str | None, action: str, **fields: Any) -> None:
    log.info("console.action", action=action, who=who.name, role=who.role, remote=remote, **fields)


def requeue_dead(
    client: Client, settings: Settings, who: Principal, remote: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    chosen = _selection(body, settings)
    outcomes = client.requeue_dead(**chosen)
    requeued = sum(1 for v in outcomes.values() if v == "requeued")
    _log(who, remote, "requeue_dead", chosen=_shown(chosen), requeued=requeued,
         not_requeued=len(outcomes) - requeued)  # fmt: skip
    return {"outcomes": outcomes, "requeued": requeued}


def purge_dead(
    client: Client, settings: Settings, who: Principal, remote: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    chosen = _selection(body, settings)
    purged = client.purge_dead(**chosen)
    _log(who, remote, "purge_dead", chosen=_shown(chosen), purged=purged)
    return {"purged": purged}


def retry_webhooks(
    store: Store, settings: Settings, who: Principal, remote: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    accounts = list(settings.accounts)
    unknown = sorted(set(body) - {"ids", "all"})
    if unknown:
        raise Refused(f"{unknown[0]}: unknown field (allowed: ids, all)")
    if body.get("all") is True:
        if "ids" in body:
            raise Refused("name deliveries (ids) or retry all: not both")
        counts = outbox.retry_all_dead(store, accounts)
        _log(who, remote, "retry_webhooks", chosen="all", before=counts)
        return {"retried": sum(counts.values()), "before": counts}
    outcomes: dict[str, str] = {}
    for rid in _ids(body, settings):
        where = outbox.find_delivery(store, accounts, rid)
        outcomes[rid] = "missing" if where is None else outbox.retry_delivery(store, *where)
    retried = sum(1 for v in outcomes.values() if v != "missing")
    _log(who, remote, "retry_webhooks", chosen=list(outcomes), retried=retried)
    return {"retried": retried, "outcomes": outcomes}


def resume(
    store: Store, settings: Settings, who: Principal, remote: str | None, body: dict[str, Any]
) -> dict[str, Any]:
    account = body.get("account")
    if set(body) - {"account"}:
        raise Refused("only account may be given")
    if not isinstance(account, str) or account not in settings.accounts:
        raise Refused(f"account: {account!r} is not configured")
    resumed = store.read(lane_store.resume(store.keys, account))
    _log(who, remote, "resume", account=account, resumed=resumed)
    return {"account": account, "resumed": resumed}


def _shown(chosen: dict[str, Any]) -> Any:
    """The selection as logged: the ids named, or the filters."""
    if "requests" in chosen:
        return chosen["requests"]
    return {k: v for k, v in chosen.items() if v not in (None, False)}
