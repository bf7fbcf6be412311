"""Upgrading the data an earlier batchd left in Redis to this layout, in bounded steps.

Layout 1 kept every pending request's params in one hash per account, counters and the batch
index in global keys, and known batches in an unbounded set. Layout 2 (this one) keeps params
per request, everything that scripts write per account, and the batch index as keys that expire.
`batchd run` migrates at start, before any stage runs; each step is idempotent, so a migration
cut short by a crash is finished by the next start. Stop every replica of the older version
before starting this one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from batchd.logs import get_logger
from batchd.store.records import Assembly, AssemblyState
from batchd.store.runner import Read, Store
from batchd.store.scripts import text

log = get_logger("batchd.store.migrate")

LAYOUT = 2
#: Hash fields moved per round trip: each step is short, so Redis is never held for long.
STEP = 500


def layout(store: Store) -> int:
    value = store.read(Read([("GET", store.keys.migrated())], lambda out: text(out[0])))
    return int(value) if value.isdigit() else 0


def migrate(store: Store, accounts: Sequence[str], retention_ms: int) -> dict[str, int]:
    """Bring the data to LAYOUT; returns what was moved. A no-op on data already there."""
    moved = {"params": 0, "counters": 0, "batches": 0}
    if layout(store) >= LAYOUT:
        return moved
    keys = store.keys
    for account in accounts:
        moved["params"] += _params(store, account)
        store.read(Read([("DEL", keys.legacy_known_batches(account))], lambda out: None))
    moved["counters"] = _counters(store, accounts)
    moved["batches"] = _batch_index(store, accounts, retention_ms)
    store.read(
        Read(
            [("DEL", keys.legacy_counters_by_minute()), ("SET", keys.migrated(), LAYOUT)],
            lambda out: None,
        )
    )
    if any(moved.values()):
        log.info("data migrated to this layout", layout=LAYOUT, **moved)
    return moved


def _scan(store: Store, key: str, cursor: int) -> tuple[int, list[tuple[bytes, bytes]]]:
    def parse(out: list[Any]) -> tuple[int, list[tuple[bytes, bytes]]]:
        if isinstance(out[0], Exception):
            return 0, []
        nxt, items = out[0]
        if isinstance(items, dict):
            pairs = list(items.items())
        else:
            pairs = list(zip(items[::2], items[1::2], strict=True))
        return int(nxt), pairs

    return store.read(Read([("HSCAN", key, cursor, "COUNT", STEP)], parse))


def _params(store: Store, account: str) -> int:
    """The account's params hash -> one key per request (SET, then HDEL: a step repeated after a
    crash writes the same value again)."""
    keys = store.keys
    big = keys.legacy_params(account)
    n = 0
    cursor = 0
    while True:
        cursor, pairs = _scan(store, big, cursor)
        if pairs:
            commands: list[tuple[Any, ...]] = [
                ("SET", keys.params(account, text(token)), value) for token, value in pairs
            ]
            commands.append(("HDEL", big, *[token for token, _ in pairs]))
            store.read(Read(commands, lambda out: None))
            n += len(pairs)
        if cursor == 0:
            return n


def _counters(store: Store, accounts: Sequence[str]) -> int:
    """The global counters are added to the first account's (they are totals either way)."""
    keys = store.keys
    old = keys.legacy_counters()
    raw = store.read(Read([("HGETALL", old)], lambda out: out[0]))
    if isinstance(raw, list):
        raw = dict(zip(raw[::2], raw[1::2], strict=True))
    if not raw or not accounts:
        return 0
    target = keys.counters(accounts[0])
    commands: list[tuple[Any, ...]] = [
        ("HINCRBY", target, text(k), int(v))
        for k, v in raw.items()
        if text(v).lstrip("-").isdigit()
    ]
    commands.append(("DEL", old))
    store.read(Read(commands, lambda out: None))
    return len(raw)


def _batch_index(store: Store, accounts: Sequence[str], retention_ms: int) -> int:
    """The global batch index -> a key per batch in its account's slot, expiring `retention`
    after its assembly closed (at once, when that is long past)."""
    keys = store.keys
    old = keys.legacy_batch_index()
    n = 0
    cursor = 0
    known = set(accounts)
    while True:
        cursor, pairs = _scan(store, old, cursor)
        for bid, where in pairs:
            account, _, asm = text(where).partition(" ")
            if account not in known or not asm:
                continue
            a = store.read(
                Read(
                    [("HMGET", keys.assembly(account, asm), Assembly.STATE, Assembly.SUBMITTED)],
                    lambda out: out[0],
                )
            )
            commands: list[tuple[Any, ...]] = [("SET", keys.batch(account, text(bid)), asm)]
            submitted = text(a[1]) if isinstance(a, list) else ""
            if submitted.isdigit():
                commands.append(("ZADD", keys.batches(account), int(submitted), asm))
            if not isinstance(a, list) or text(a[0]) in ("", AssemblyState.DONE.value):
                commands.append(("PEXPIRE", keys.batch(account, text(bid)), retention_ms))
            store.read(Read(commands, lambda out: None))
            n += 1
        if cursor == 0:
            break
    store.read(Read([("DEL", old)], lambda out: None))
    return n
