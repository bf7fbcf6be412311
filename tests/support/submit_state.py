"""What a submit can write, read back for tests that check a refused submit stored nothing.

`DBSIZE` is no such check while a daemon runs: its own keys (locks, heartbeats, per-minute
counters, rq's bookkeeping) come and go on their own schedule.
"""

from __future__ import annotations

from typing import Any

import redis

from batchd.keys import Keys


def submit_state(r: redis.Redis, keys: Keys, account: str) -> dict[str, Any]:
    """Every key and count SUBMIT writes for `account`: records, idempotency keys, params,
    lanes (lists and their counters), and the submitted counter."""
    tag = keys.tag(account)
    state: dict[str, Any] = {}
    for pattern in (f"{tag}:r:*", f"{tag}:k:*"):
        state[pattern] = sorted(r.scan_iter(match=pattern, count=1000))
    params = keys.params(account)
    state["params"] = r.hlen(params) if r.type(params) == b"hash" else r.type(params)
    state["lanes"] = sorted(r.smembers(keys.lanes(account)))
    lane_keys = [*r.scan_iter(match=f"{tag}:q:*", count=1000),
                 *r.scan_iter(match=f"{tag}:qs:*", count=1000)]  # fmt: skip
    for key in sorted(lane_keys):
        kind = r.type(key)
        if kind == b"list":
            state[key] = r.llen(key)
        elif kind == b"hash":
            state[key] = r.hgetall(key)
        else:
            state[key] = kind
    state["submitted"] = r.hget(keys.counters(), "submitted")
    return state
