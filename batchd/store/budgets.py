"""Spend caps' own keys: what batches cut under a cap may still cost (until their results are in
the ledger), the lanes a cap holds, the scopes that refuse submits, and what a pending request's
record says about its cost."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchd.store.keys import Keys
from batchd.store.records import Assembly, Field
from batchd.store.runner import Read
from batchd.store.scripts import text


def _mapping(raw: Any) -> dict[Any, Any]:
    if isinstance(raw, Exception) or not raw:
        return {}
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def _json(raw: Any) -> dict[str, Any]:
    try:
        value = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        return {}
    return value if isinstance(value, dict) else {}


def lock_key(keys: Keys) -> str:
    """The lease under which one replica at a time checks a cut against the caps."""
    return keys.budget_lock()


# -- estimates of batches in flight ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reserved:
    """The estimate a cut reserved against the caps for its assembly."""

    account: str
    assembly: str
    at_ms: int
    usd: float
    tags: dict[str, float] = field(default_factory=dict)


def reserved(keys: Keys, accounts: Sequence[str]) -> Read[list[Reserved]]:
    """Every estimate still reserved by these accounts' cuts."""
    names = list(accounts)

    def parse(out: list[Any]) -> list[Reserved]:
        found: list[Reserved] = []
        for account, raw in zip(names, out, strict=True):
            for asm, value in _mapping(raw).items():
                v = _json(value)
                tags = v.get("tags")
                found.append(
                    Reserved(
                        account,
                        text(asm),
                        int(v.get("at") or 0),
                        float(v.get("usd") or 0.0),
                        {str(k): float(x) for k, x in tags.items()}
                        if isinstance(tags, dict)
                        else {},
                    )
                )
        return found

    return Read([("HGETALL", keys.budget_inflight(a)) for a in names], parse, errors=True)


def reserve(
    keys: Keys, account: str, asm: str, usd: float, tags: Mapping[str, float], now_ms: int
) -> Read[None]:
    """Reserve a cut's estimate before its claim, so every replica counts it at once."""
    value = orjson.dumps({"at": now_ms, "usd": usd, "tags": dict(tags)})
    return Read([("HSET", keys.budget_inflight(account), asm, value)], lambda out: None)


def forget(keys: Keys, account: str, assemblies: Sequence[str]) -> Read[None]:
    """Drop estimates whose assembly is done (its results are in the ledger) or never was."""
    if not assemblies:
        return Read([], lambda out: None)
    return Read([("HDEL", keys.budget_inflight(account), *assemblies)], lambda out: None)


def assembly_states(keys: Keys, pairs: Sequence[tuple[str, str]]) -> Read[list[str | None]]:
    """The state of each (account, assembly); None where there is no such assembly."""

    def parse(out: list[Any]) -> list[str | None]:
        return [None if isinstance(v, Exception) or v is None else text(v) for v in out]

    return Read(
        [("HGET", keys.assembly(a, asm), Assembly.STATE) for a, asm in pairs], parse, errors=True
    )


# -- what a pending request may cost -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Basis:
    """What a pending request's record tells a cost estimate: its tag, model and max_tokens
    (an older record has no estimate field: model '' and max_tokens None). The model is as the
    record has it: a priced model's short name (`~` and four letters, see `pricing.short_name`)
    or the name itself."""

    tag: str
    model: str
    max_tokens: int | None


_ESTIMATE = re.compile(r"(\d+)(?: (.*)|(~.*))", re.DOTALL)


def parse_estimate(value: str) -> tuple[int | None, str]:
    """The record's estimate field, `<max_tokens> <model>` or `<max_tokens>~<short name>`, as
    (max_tokens, model); (None, '') for none or one not of this form."""
    m = _ESTIMATE.fullmatch(value)
    if m is None:
        return None, ""
    return int(m[1]), m[2] if m[2] is not None else m[3]


def bases(keys: Keys, account: str, tokens: Sequence[str]) -> Read[list[Basis | None]]:
    """Each request's basis; None for one that is not pending (it will not be sent: a claim
    drops or sets it aside) or whose record is not batchd's."""

    def parse(out: list[Any]) -> list[Basis | None]:
        found: list[Basis | None] = []
        for raw in out:
            if isinstance(raw, Exception) or text(raw[0]) != "pending":
                found.append(None)
                continue
            max_tokens, model = parse_estimate(text(raw[2]))
            found.append(Basis(text(raw[1]), model, max_tokens))
        return found

    return Read(
        [
            ("HMGET", keys.request(account, t), Field.STATUS, Field.TAG, Field.ESTIMATE)
            for t in tokens
        ],
        parse,
        errors=True,
    )


# -- holds -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hold:
    """A lane a cap holds: which cap, its limit, what is used of it, and what the lane's next
    request would add."""

    account: str
    lane: str
    scope: str
    period: str
    cap_usd: float
    used_usd: float
    next_usd: float
    since_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "lane": self.lane,
            "scope": self.scope,
            "period": self.period,
            "cap_usd": self.cap_usd,
            "used_usd": self.used_usd,
            "next_usd": self.next_usd,
            "since_ms": self.since_ms,
        }


def holds(keys: Keys, accounts: Sequence[str]) -> Read[list[Hold]]:
    """Every lane a cap holds now."""
    names = list(accounts)

    def parse(out: list[Any]) -> list[Hold]:
        found: list[Hold] = []
        for account, raw in zip(names, out, strict=True):
            for lane, value in sorted(_mapping(raw).items()):
                v = _json(value)
                found.append(
                    Hold(
                        account,
                        text(lane),
                        str(v.get("scope", "")),
                        str(v.get("period", "")),
                        float(v.get("cap_usd") or 0.0),
                        float(v.get("used_usd") or 0.0),
                        float(v.get("next_usd") or 0.0),
                        int(v.get("since_ms") or 0),
                    )
                )
        return found

    return Read([("HGETALL", keys.budget_holds(a)) for a in names], parse, errors=True)


def hold(keys: Keys, h: Hold, ttl_ms: int) -> Read[None]:
    """Record (or renew) a lane's hold; it lapses after `ttl_ms` unless renewed."""
    k = keys.budget_holds(h.account)
    body = dict(h.as_dict())
    del body["account"], body["lane"]
    return Read([("HSET", k, h.lane, orjson.dumps(body)), ("PEXPIRE", k, ttl_ms)], lambda out: None)


def unhold(keys: Keys, account: str, lanes: Sequence[str]) -> Read[None]:
    if not lanes:
        return Read([], lambda out: None)
    return Read([("HDEL", keys.budget_holds(account), *lanes)], lambda out: None)


# -- refused submits ---------------------------------------------------------------------------

#: The scope of a refusal that covers every request of the account.
EVERY_REQUEST = "*"


def closed(keys: Keys, account: str) -> Read[dict[str, str]]:
    """`*` or `tag:<tag>` -> why submits to this account are refused now."""
    return Read(
        [("HGETALL", keys.budget_closed(account))],
        lambda out: {text(k): text(v) for k, v in _mapping(out[0]).items()},
        errors=True,
    )


def set_closed(keys: Keys, account: str, scopes: Mapping[str, str], ttl_ms: int) -> Read[None]:
    """Replace the account's refusals with these (none: submits are open)."""
    k = keys.budget_closed(account)
    commands: list[tuple[Any, ...]] = [("DEL", k)]
    if scopes:
        flat = [x for pair in scopes.items() for x in pair]
        commands += [("HSET", k, *flat), ("PEXPIRE", k, ttl_ms)]
    return Read(commands, lambda out: None)
