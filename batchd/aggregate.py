"""The aggregator: decides when a lane is cut and claims its requests into an assembly.

A lane (account x priority) is cut when its pending count reaches `max_requests`, its exact
encoded body reaches `max_bytes`, its oldest request has waited `max_wait`, or a flush asks.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis

from batchd.keys import new_token
from batchd.logs import get_logger
from batchd.runtime import Runtime, crash_point, lease
from batchd.store import text
from batchd.validate import BODY_ENVELOPE

log = get_logger("batchd.aggregate")


@dataclass(frozen=True, slots=True)
class LaneStats:
    account: str
    priority: int
    count: int
    bytes: int
    oldest_ms: int | None

    def body_bytes(self) -> int:
        """The encoded size of one batch holding the whole lane."""
        return BODY_ENVELOPE + self.bytes + max(self.count - 1, 0)


def lane_stats(rt: Runtime, account: str, priority: int) -> LaneStats:
    pipe = rt.redis.pipeline(transaction=False)
    pipe.hmget(rt.keys.lane_stats(account, priority), "count", "bytes")
    pipe.lindex(rt.keys.pending(account, priority), 0)
    (count, nbytes), head = pipe.execute()
    oldest = None
    if head:
        parts = text(head).split(" ")
        # An entry batchd did not write counts as due at once, so a cut sets it aside.
        oldest = int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else 0
    counts = (text(count or b"0"), text(nbytes or b"0"))
    if not all(c.lstrip("-").isdigit() for c in counts):
        # Counters spoiled by a foreign writer: start them again from the list itself.
        length = int(rt.redis.llen(rt.keys.pending(account, priority)))
        log.warning("lane counters were not numbers; reset", lane=f"{account}/{priority}",
                    count=length)  # fmt: skip
        rt.redis.hset(rt.keys.lane_stats(account, priority), mapping={"count": length, "bytes": 0})
        counts = (str(length), "0")
    return LaneStats(account, priority, int(counts[0]), int(counts[1]), oldest)


def lanes(rt: Runtime, account: str) -> list[int]:
    prios = [int(text(p)) for p in rt.redis.smembers(rt.keys.lanes(account)) if text(p).isdigit()]
    return sorted(prios, reverse=True)


def due_reason(rt: Runtime, stats: LaneStats, now_ms: int, flushed: bool) -> str | None:
    """Why the lane must be cut now, or None."""
    b = rt.settings.batch
    if stats.count <= 0:
        return None
    if stats.count >= b.max_requests:
        return "count"
    if stats.body_bytes() >= b.max_bytes:
        return "bytes"
    if flushed:
        return "flush"
    if stats.oldest_ms is not None and now_ms - stats.oldest_ms >= b.max_wait * 1000:
        return "age"
    return None


def claim(rt: Runtime, account: str, priority: int, asm: str) -> tuple[int, int]:
    """Claim the lane's head into assembly `asm` (chunk by chunk) and seal it.

    Returns (requests, content length); (0, 0) when there was nothing to claim.
    """
    b = rt.settings.batch
    tag = rt.keys.tag(account)
    count = 0
    while True:
        code, count, _ = rt.scripts.claim(
            args=[tag, priority, asm, b.max_requests, b.max_bytes, b.claim_chunk,
                  int(rt.settings.run.lease * 1000), rt.keys.prefix, account,
                  int(rt.settings.retention * 1000)]
        )  # fmt: skip
        if int(code) != 0:
            break
    clen = int(rt.scripts.seal(args=[tag, asm]))
    return (int(count), clen) if clen > 0 else (0, 0)


def cut(rt: Runtime, account: str, priority: int, reason: str) -> str | None:
    """Cut one batch's worth from the lane; returns the new assembly id, if any."""
    asm = new_token()
    count, clen = claim(rt, account, priority, asm)
    if count == 0:
        return None
    crash_point("after_claim")
    log.info(
        "lane cut",
        lane=f"{account}/{priority}",
        assembly=asm,
        requests=count,
        bytes=clen,
        reason=reason,
    )
    rt.enqueue("submit", account, asm)
    return asm


def tick(rt: Runtime) -> int:
    """One pass over every lane of every account; returns how many assemblies were cut."""
    cuts = 0
    now = rt.now_ms()
    for account in rt.settings.accounts:
        if rt.redis.exists(rt.keys.paused(account)):
            continue
        pipe = rt.redis.pipeline()
        pipe.smembers(rt.keys.flush(account))
        pipe.delete(rt.keys.flush(account))
        flushed_raw, _ = pipe.execute()
        flushed = {text(f) for f in flushed_raw}
        for priority in lanes(rt, account):
            want_flush = "*" in flushed or str(priority) in flushed
            try:
                cuts += cut_lane(rt, account, priority, now, want_flush)
            except redis.ResponseError as exc:
                # One lane's keys spoiled by foreign data must not stop the others.
                log.error("lane cannot be cut", lane=f"{account}/{priority}", error=str(exc))
    return cuts


def cut_lane(rt: Runtime, account: str, priority: int, now: int, want_flush: bool) -> int:
    """Cut one lane for as long as it is due; how many assemblies were cut."""
    cuts = 0
    with lease(rt, rt.keys.lane_lock(account, priority)) as held:
        if held is None:
            return 0  # another replica is cutting this lane
        while True:
            stats = lane_stats(rt, account, priority)
            reason = due_reason(rt, stats, now, want_flush)
            # A flush cuts everything pending now, in as many batches as it takes.
            if reason is None or cut(rt, account, priority, reason) is None:
                return cuts
            cuts += 1
