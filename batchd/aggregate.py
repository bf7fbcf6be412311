"""The aggregator: decides when a lane is cut and claims its requests into an assembly.

A lane (account x priority x kind x betas) is cut when its pending count reaches
`max_requests`, its exact encoded body reaches `max_bytes`, its oldest request has waited its
lane's window (`batch.max_wait`, or `ingress.drop_in_max_wait` for drop-in calls), or a flush
asks (the deadline planner asks for lanes holding a request a later cut would make late; each
pass routes the requests no batch can make any more first). Under a spend cap (`budgets`), a
cut takes only what fits the cap; a lane with nothing that fits is held, its requests pending.
"""

from __future__ import annotations

import weakref

from batchd import deadlines
from batchd.budgets import Budgets
from batchd.errors import StoreError
from batchd.logs import get_logger
from batchd.runtime import Runtime, crash_point, lease
from batchd.store import LaneStats, new_token
from batchd.store import assemblies as asm_store
from batchd.store import lanes as lane_store
from batchd.store import replies as reply_store
from batchd.store.lanes import Claimed
from batchd.store.records import LaneId
from batchd.validate import BODY_ENVELOPE

log = get_logger("batchd.aggregate")


def body_bytes(stats: LaneStats) -> int:
    """The encoded size of one batch holding the whole lane."""
    return BODY_ENVELOPE + stats.bytes + max(stats.count - 1, 0)


def window(rt: Runtime, lane: str) -> float:
    """Seconds the oldest request of this lane may wait before the lane is cut."""
    return deadlines.lane_window(rt.settings, lane)


def due_reason(rt: Runtime, stats: LaneStats, now_ms: int, flushed: bool) -> str | None:
    """Why the lane must be cut now, or None."""
    b = rt.settings.batch
    if stats.count <= 0:
        return None
    if stats.count >= b.max_requests:
        return "count"
    if body_bytes(stats) >= b.max_bytes:
        return "bytes"
    if flushed:
        return "flush"
    if stats.oldest_ms is not None and now_ms - stats.oldest_ms >= window(rt, stats.lane) * 1000:
        return "age"
    return None


def claim(
    rt: Runtime, account: str, lane: str, asm: str, max_count: int | None = None
) -> tuple[int, int]:
    """Claim the lane's head into assembly `asm` (chunk by chunk, at most `max_count` requests
    besides the batch limits) and seal it.

    Returns (requests, content length); (0, 0) when there was nothing to claim.
    """
    b = rt.settings.batch
    limit = b.max_requests if max_count is None else min(max_count, b.max_requests)
    out = Claimed(0, 0, 0)
    while True:
        entries = rt.store.read(lane_store.head(rt.keys, account, lane, b.claim_chunk))
        out = rt.store.run(
            lane_store.claim(
                rt.keys,
                account,
                lane,
                asm,
                entries,
                max_count=limit,
                max_bytes=b.max_bytes,
                lease_ms=int(rt.settings.run.lease * 1000),
                retention_ms=int(rt.settings.retention * 1000),
            )
        )
        if out.replies:
            reply_store.drain_all(rt.store, account)
        if out.code == Claimed.MOVED:
            continue  # the head changed under us (a cancel, a foreign writer): read again
        if out.code != 0 or not entries:
            break
    clen = rt.store.run(asm_store.seal(rt.keys, account, asm))
    return (out.count, clen) if clen > 0 else (0, 0)


def cut(
    rt: Runtime,
    account: str,
    lane: str,
    reason: str,
    *,
    asm: str | None = None,
    max_count: int | None = None,
) -> str | None:
    """Cut one batch's worth (at most `max_count` requests) from the lane into a new assembly
    (`asm`, when its id was chosen before); returns its id, if anything was claimed."""
    asm = asm or new_token()
    count, clen = claim(rt, account, lane, asm, max_count)
    if count == 0:
        return None
    crash_point("after_claim")
    log.info(
        "lane cut",
        lane=f"{account}/{lane}",
        assembly=asm,
        requests=count,
        bytes=clen,
        reason=reason,
    )
    rt.enqueue("submit", account, asm)
    return asm


def _wants_flush(lane: str, flushed: set[str]) -> bool:
    if "*" in flushed or lane in flushed:
        return True
    parsed = LaneId.parse(lane)
    return parsed is not None and f"p{parsed.priority}" in flushed


_budgets: weakref.WeakKeyDictionary[Runtime, Budgets] = weakref.WeakKeyDictionary()


def budgets(rt: Runtime) -> Budgets | None:
    """The runtime's spend caps (one reader per runtime, which caches final days); None when
    no cap is set."""
    if not rt.settings.budgets.caps:
        return None
    found = _budgets.get(rt)
    if found is None:
        found = _budgets[rt] = Budgets(rt.store, rt.settings)
    return found


def tick(rt: Runtime) -> int:
    """One pass over every lane of every account; returns how many assemblies were cut."""
    cuts = 0
    now = rt.now_ms()
    caps = budgets(rt)
    if caps is not None and rt.settings.budgets.refuse_submits:
        try:
            caps.publish_refusals(now)
        except StoreError as exc:
            log.error("spend caps could not be read", error=str(exc))
    for account in rt.settings.accounts:
        if rt.store.read(lane_store.paused_ms(rt.keys, account)) > 0:
            continue
        try:
            # Before any cut: a request no batch can make by its deadline must not be batched,
            # and the lanes its neighbours need cut now are flushed for this very pass.
            deadlines.route(rt, account)
        except StoreError as exc:
            log.error("deadlines cannot be routed", account=account, error=str(exc))
        flushed = rt.store.read(lane_store.take_flushes(rt.keys, account))
        lanes = rt.store.read(lane_store.lane_ids(rt.keys, account))
        ordered = sorted(lanes, key=lambda ln: -(LaneId.parse(ln) or LaneId(0, False, "")).priority)
        capped = caps if caps is not None and caps.covers(account) else None
        held = capped.held_lanes(account) if capped is not None else set()
        for lane in ordered:
            try:
                cuts += cut_lane(
                    rt, account, lane, now, _wants_flush(lane, flushed), capped, lane in held
                )
            except StoreError as exc:
                # One lane's keys spoiled by foreign data must not stop the others.
                log.error("lane cannot be cut", lane=f"{account}/{lane}", error=str(exc))
    return cuts


def lane_stats(rt: Runtime, account: str, lane: str) -> LaneStats:
    """The lane's stats; counters a foreign writer spoiled start again from the list."""
    [counted] = rt.store.read(lane_store.stats(rt.keys, account, [lane]))
    if not counted.spoiled:
        return counted.stats
    length = rt.store.read(lane_store.reset_stats(rt.keys, account, lane))
    log.warning("lane counters were not numbers; reset", lane=f"{account}/{lane}", count=length)
    rt.store.read(lane_store.set_stats(rt.keys, account, lane, length, 0))
    s = counted.stats
    return LaneStats(account, lane, length, 0, s.oldest_ms)


def cut_lane(
    rt: Runtime,
    account: str,
    lane: str,
    now: int,
    want_flush: bool,
    caps: Budgets | None = None,
    was_held: bool = False,
) -> int:
    """Cut one lane for as long as it is due (and, under `caps`, fits them); how many
    assemblies were cut."""
    cuts = 0
    with lease(rt, lane_store.lock_key(rt.keys, account, lane)) as held:
        if held is None:
            return 0  # another replica is cutting this lane
        while True:
            stats = lane_stats(rt, account, lane)
            reason = due_reason(rt, stats, now, want_flush)
            if reason is None:
                if was_held and caps is not None:
                    caps.release(account, lane)
                return cuts
            asm, limit = new_token(), None
            if caps is not None:
                limit = caps.admit(rt, account, lane, asm, rt.now_ms())
                if not limit:
                    return cuts  # held at a cap (0), or another replica checks the caps (None)
            # A flush cuts everything pending now, in as many batches as it takes.
            if cut(rt, account, lane, reason, asm=asm, max_count=limit) is None:
                return cuts
            cuts += 1
