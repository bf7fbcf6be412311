"""Throughput over the last minutes: each minute, one snapshot of every account's counters.

Any replica writes the minute's snapshot (the first one wins); `batchd status` turns consecutive
snapshots into requests submitted and ended per minute.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchd.store import Store
from batchd.store import counters as counter_store

#: Counters shown per minute.
FIELDS = ("submitted", "ended", "succeeded", "retries", "batches_created")

_last_minute: dict[str, int] = {}


def record(store: Store, accounts: Sequence[str], now_ms: int) -> bool:
    """Store this minute's snapshot once per process and minute; True when this call wrote it."""
    minute = now_ms // 60_000
    if _last_minute.get(store.keys.prefix) == minute:
        return False
    counters = store.read(counter_store.read(store.keys, accounts))
    written, fields = store.read(counter_store.snapshot_minute(store.keys, counters, minute))
    for account, names in fields.items():
        store.read(counter_store.old_minutes(store.keys, account, names, minute))
    _last_minute[store.keys.prefix] = minute
    return written


@dataclass(frozen=True)
class Minute:
    minute: int
    """Minutes since the epoch."""
    partial: bool
    """The current minute, counted up to now."""
    counts: dict[str, int]


def _view(counters: dict[str, Any]) -> dict[str, int]:
    out = {name: int(counters.get(name, 0)) for name in FIELDS if name != "ended"}
    out["ended"] = sum(int(v) for k, v in counters.items() if k.startswith("ended:"))
    out["succeeded"] = int(counters.get("ended:succeeded", 0))
    return out


def recent(
    store: Store,
    accounts: Sequence[str],
    now_ms: int,
    current: dict[str, int],
    minutes: int = 5,
) -> list[Minute]:
    """Per minute, oldest first: the last `minutes` whole minutes with snapshots at both ends,
    then the current minute so far (from its snapshot to `current`)."""
    snaps = {
        m: _view(c) for m, c in store.read(counter_store.minutes(store.keys, accounts)).items()
    }
    now_minute = now_ms // 60_000
    out: list[Minute] = []
    for m in range(now_minute - minutes, now_minute):
        start, end = snaps.get(m), snaps.get(m + 1)
        if start is not None and end is not None:
            out.append(Minute(m, False, {f: max(0, end[f] - start[f]) for f in FIELDS}))
    start = snaps.get(now_minute)
    if start is not None:
        live = _view(current)
        out.append(Minute(now_minute, True, {f: max(0, live[f] - start[f]) for f in FIELDS}))
    return out
