"""Counters and who is alive: each account's monotonic counters, a snapshot of them per minute
(for throughput), `batchd run` heartbeats, and the accounts the daemon serves."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from batchd.defaults import KEEP_MINUTES, PROCESS_ALIVE_MS, PROCESS_FORGET_MS
from batchd.store.keys import Keys
from batchd.store.runner import Read
from batchd.store.scripts import text


def read(keys: Keys, accounts: Sequence[str]) -> Read[dict[str, dict[str, int]]]:
    """Each account's counters."""
    names = list(accounts)

    def parse(out: list[Any]) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for account, raw in zip(names, out, strict=True):
            if isinstance(raw, Exception):
                raw = {}
            if isinstance(raw, list):
                raw = dict(zip(raw[::2], raw[1::2], strict=True))
            found[account] = {
                text(k): int(v) for k, v in raw.items() if text(v).lstrip("-").isdigit()
            }
        return found

    return Read([("HGETALL", keys.counters(a)) for a in names], parse, errors=True)


def total(per_account: dict[str, dict[str, int]]) -> dict[str, int]:
    """The counters of every account added up."""
    out: dict[str, int] = {}
    for counters in per_account.values():
        for k, v in counters.items():
            out[k] = out.get(k, 0) + v
    return out


def snapshot_minute(
    keys: Keys, counters: dict[str, dict[str, int]], minute: int
) -> Read[tuple[bool, dict[str, list[Any]]]]:
    """Store this minute's snapshot of each account's counters (the first writer wins); whether
    this call wrote any, and each account's snapshot minutes (to forget the old ones)."""
    accounts = list(counters)
    commands: list[tuple[Any, ...]] = []
    for account in accounts:
        km = keys.counters_by_minute(account)
        commands.append(("HSETNX", km, str(minute), orjson.dumps(counters[account])))
        commands.append(("HKEYS", km))

    def parse(out: list[Any]) -> tuple[bool, dict[str, list[Any]]]:
        written = any(bool(out[2 * i]) for i in range(len(accounts)))
        return written, {a: list(out[2 * i + 1]) for i, a in enumerate(accounts)}

    return Read(commands, parse)


def old_minutes(keys: Keys, account: str, fields: Iterable[Any], minute: int) -> Read[None]:
    old = [f for f in fields if not text(f).isdigit() or int(text(f)) < minute - KEEP_MINUTES]
    if not old:
        return Read([], lambda out: None)
    return Read([("HDEL", keys.counters_by_minute(account), *old)], lambda out: None)


def minutes(keys: Keys, accounts: Sequence[str]) -> Read[dict[int, dict[str, int]]]:
    """Per minute, the snapshot of every account's counters added up."""
    names = list(accounts)

    def parse(out: list[Any]) -> dict[int, dict[str, int]]:
        per_minute: dict[int, dict[str, int]] = {}
        for raw in out:
            if isinstance(raw, Exception) or not raw:
                continue
            if isinstance(raw, list):
                raw = dict(zip(raw[::2], raw[1::2], strict=True))
            for k, v in raw.items():
                if not text(k).isdigit():
                    continue
                slot = per_minute.setdefault(int(text(k)), {})
                for name, n in orjson.loads(v).items():
                    slot[name] = slot.get(name, 0) + int(n)
        return per_minute

    return Read([("HGETALL", keys.counters_by_minute(a)) for a in names], parse, errors=True)


def heartbeat(keys: Keys, identity: str, now_ms: int) -> Read[None]:
    return Read(
        [
            ("ZADD", keys.processes(), now_ms, identity),
            ("ZREMRANGEBYSCORE", keys.processes(), "-inf", now_ms - PROCESS_FORGET_MS),
        ],
        lambda out: None,
    )


def leave(keys: Keys, identity: str) -> Read[None]:
    return Read([("ZREM", keys.processes(), identity)], lambda out: None)


def alive(keys: Keys, now_ms: int) -> Read[list[tuple[str, float]]]:
    """(identity, seconds since its heartbeat) of every `batchd run` alive."""

    def parse(out: list[Any]) -> list[tuple[str, float]]:
        raw = out[0]
        if raw and not isinstance(raw[0], list | tuple):
            raw = list(zip(raw[::2], raw[1::2], strict=True))
        return [
            (text(m), max(0.0, (now_ms - float(s)) / 1000))
            for m, s in raw
            if now_ms - float(s) <= PROCESS_ALIVE_MS
        ]

    return Read(
        [("ZRANGEBYSCORE", keys.processes(), now_ms - PROCESS_ALIVE_MS, "+inf", "WITHSCORES")],
        parse,
    )


def publish_accounts(keys: Keys, accounts: Sequence[str]) -> Read[None]:
    """Tell producers which accounts the daemon serves, so they can refuse unknown ones; a
    daemon starting with (maybe) new keys clears every pause, to try them at once."""
    commands: list[tuple[Any, ...]] = [
        ("DEL", keys.accounts()),
        ("SADD", keys.accounts(), *accounts),
    ]
    commands += [("DEL", keys.paused(a)) for a in accounts]
    return Read(commands, lambda out: None)


def known_accounts(keys: Keys) -> Read[frozenset[str]]:
    return Read(
        [("SMEMBERS", keys.accounts())], lambda out: frozenset(text(m) for m in out[0] or ())
    )


def note_rate_limit(
    keys: Keys,
    account: str,
    scope: str,
    limit: int | None,
    remaining: int | None,
    reset_ms: int | None,
    status: int,
    retry_after: float | None,
    at_ms: int,
) -> Read[None]:
    """What the API last said of the account's rate limit for one scope (batches, messages):
    kept for `status` and /metrics, which read it from every replica's view."""
    value = orjson.dumps(
        {
            "limit": limit,
            "remaining": remaining,
            "reset_ms": reset_ms,
            "status": status,
            "retry_after": retry_after,
            "at_ms": at_ms,
        }
    )
    return Read([("HSET", keys.rate_limits(account), scope, value)], lambda out: None)


def rate_limits(keys: Keys, accounts: Sequence[str]) -> Read[dict[str, dict[str, dict[str, Any]]]]:
    """Per account and scope, what the API last said of its rate limit."""
    names = list(accounts)

    def parse(out: list[Any]) -> dict[str, dict[str, dict[str, Any]]]:
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for account, raw in zip(names, out, strict=True):
            if isinstance(raw, Exception) or not raw:
                continue
            if isinstance(raw, list):
                raw = dict(zip(raw[::2], raw[1::2], strict=True))
            found[account] = {text(k): orjson.loads(v) for k, v in raw.items()}
        return found

    return Read([("HGETALL", keys.rate_limits(a)) for a in names], parse, errors=True)
