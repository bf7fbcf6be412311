"""What a submit can write, read back for tests that check a refused submit stored nothing.

`DBSIZE` is no such check while a daemon runs: its own keys (locks, heartbeats, per-minute
counters, rq's bookkeeping) come and go on their own schedule. Every key is read by its type, so
a key a test spoiled with another type is part of the state too.
"""

from __future__ import annotations

from typing import Any

import redis

from batchd.store import Keys


def key_state(r: redis.Redis, key: str | bytes) -> tuple[str, Any]:
    """A key's type and its value (a list's length), whatever the type."""
    kind = r.type(key)
    name = kind.decode() if isinstance(kind, bytes) else str(kind)
    if name == "hash":
        return name, r.hgetall(key)
    if name == "list":
        return name, r.llen(key)
    if name == "set":
        return name, sorted(r.smembers(key))
    if name == "string":
        return name, r.get(key)
    return name, None


def submit_state(r: redis.Redis, keys: Keys, account: str) -> dict[str, Any]:
    """Every key and count SUBMIT writes for `account`: records, params, idempotency keys,
    lanes (pending lists, their counters, the lane set, beta sets), and the submitted counter."""
    state: dict[str, Any] = {}
    # Names only: a running daemon rewrites the records of requests it is working on.
    for pattern in (
        keys.request(account, "*"),
        keys.params(account, "*"),
        keys.idempotency(account, "*"),
    ):
        state[pattern] = sorted(r.scan_iter(match=pattern, count=1000))
    for pattern in (keys.pending(account, "*"), keys.lane_stats(account, "*")):
        for key in r.scan_iter(match=pattern, count=1000):
            state[key] = key_state(r, key)
    state["lanes"] = key_state(r, keys.lanes(account))
    state["betas"] = key_state(r, keys.lane_betas(account))
    counters = keys.counters(account)
    kind, _ = key_state(r, counters)
    state["submitted"] = r.hget(counters, "submitted") if kind == "hash" else kind
    return state
