"""Throughput over the last minutes: each minute, one snapshot of the counters hash in Redis.

Any replica writes the minute's snapshot (the first one wins); `batchd status` turns consecutive
snapshots into requests submitted and ended per minute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
import redis

from batchd.keys import Keys
from batchd.store import text

#: Minutes of snapshots kept in Redis.
KEEP_MINUTES = 60
#: Counters shown per minute.
FIELDS = ("submitted", "ended", "succeeded", "retries", "batches_created")

_last_minute: dict[str, int] = {}


def record(client: redis.Redis, keys: Keys, now_ms: int) -> bool:
    """Store this minute's snapshot once per process and minute; True when this call wrote it."""
    minute = now_ms // 60_000
    if _last_minute.get(keys.prefix) == minute:
        return False
    counters = {text(k): int(v) for k, v in client.hgetall(keys.counters()).items()}
    written = bool(client.hsetnx(keys.counters_by_minute(), str(minute), orjson.dumps(counters)))
    old = [f for f in client.hkeys(keys.counters_by_minute())
           if not text(f).isdigit() or int(text(f)) < minute - KEEP_MINUTES]  # fmt: skip
    if old:
        client.hdel(keys.counters_by_minute(), *old)
    _last_minute[keys.prefix] = minute
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
    client: redis.Redis, keys: Keys, now_ms: int, current: dict[str, int], minutes: int = 5
) -> list[Minute]:
    """Per minute, oldest first: the last `minutes` whole minutes with snapshots at both ends,
    then the current minute so far (from its snapshot to `current`)."""
    raw = client.hgetall(keys.counters_by_minute())
    snaps = {int(text(k)): _view(orjson.loads(v)) for k, v in raw.items() if text(k).isdigit()}
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
