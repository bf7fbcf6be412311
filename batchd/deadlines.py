"""The deadline planner, a step of the sweeper: cuts the lanes that hold requests at risk early
enough for a batch to make them, hands the requests no batch can make to their account's
deadline policy, and cancels a batch in flight that can no longer make its earliest deadline.

How long a batch takes is learned per account: each batch that ends adds its duration (from its
cut to its end, as batchd saw it); plans use the configured percentile of them once enough are
in, `deadlines.default_duration` until then, plus `deadlines.margin` for the fan-out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

from batchd.defaults import DURATION_REFRESH, ESCALATE_CHUNK, PLAN_BATCHES, PLAN_CHUNK
from batchd.errors import APIError, BadRequestError, ConflictError, NotFoundError, StoreError
from batchd.logs import get_logger
from batchd.runtime import Runtime
from batchd.settings import Settings
from batchd.store import AssemblyState
from batchd.store import assemblies as asm_store
from batchd.store import deadlines as dl_store
from batchd.store import lanes as lane_store
from batchd.store import replies as reply_store
from batchd.store.records import LaneId

log = get_logger("batchd.deadlines")


@dataclass(frozen=True, slots=True)
class Estimate:
    """What an account's batches have taken, and the duration a plan uses."""

    samples: int
    median_s: float | None
    percentile_s: float | None
    planned_s: float
    """The duration plans use: the percentile once enough samples are in, else the default."""
    observed: bool

    def as_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "median_s": self.median_s,
            "percentile_s": self.percentile_s,
            "planned_s": self.planned_s,
            "source": "observed" if self.observed else "default",
        }


def _quantile(ordered: list[int], q: float) -> float:
    """The q-quantile (nearest rank) of sorted samples, in seconds."""
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1] / 1000


def estimate(settings: Settings, samples: list[int]) -> Estimate:
    """The estimate from an account's observed durations (ms)."""
    d = settings.deadlines
    if not samples:
        return Estimate(0, None, None, d.default_duration, False)
    ordered = sorted(samples)
    median, pct = _quantile(ordered, 0.5), _quantile(ordered, d.percentile)
    observed = len(ordered) >= d.min_samples
    return Estimate(len(ordered), median, pct, pct if observed else d.default_duration, observed)


_estimates: dict[tuple[str, str], tuple[float, Estimate]] = {}


def account_estimate(rt: Runtime, account: str) -> Estimate:
    """The account's estimate, read again at most every DURATION_REFRESH seconds."""
    key = (rt.keys.prefix, account)
    cached = _estimates.get(key)
    now = time.monotonic()
    if cached is not None and now - cached[0] < DURATION_REFRESH:
        return cached[1]
    samples = rt.store.read(dl_store.durations(rt.keys, [account]))[account]
    found = estimate(rt.settings, samples)
    _estimates[key] = (now, found)
    return found


def batch_needs_ms(rt: Runtime, account: str) -> int:
    """How long (ms) a batch cut now is planned to take until its results are in."""
    planned = account_estimate(rt, account).planned_s + rt.settings.deadlines.margin
    return int(planned * 1000)


def too_late_ms(rt: Runtime, account: str, now_ms: int) -> int:
    """Deadlines before this (ms) no batch cut now can make."""
    return now_ms + batch_needs_ms(rt, account)


def lane_window(settings: Settings, lane: str) -> float:
    """Seconds the oldest request of this lane may wait before the lane is cut."""
    parsed = LaneId.parse(lane)
    if parsed is not None and parsed.interactive:
        return min(settings.ingress.drop_in_max_wait, settings.batch.max_wait)
    return settings.batch.max_wait


def plan(rt: Runtime) -> int:
    """The sweeper's pass over every account: route the pending requests by their deadlines,
    and cancel the batches that can no longer make theirs. Returns how many requests left the
    batch route."""
    moved = 0
    for account in rt.settings.accounts:
        try:
            moved += route(rt, account)
            if rt.settings.accounts[account].deadline_policy != "batch":
                cancel_doomed(rt, account)
        except StoreError as exc:
            log.error("deadlines cannot be planned", account=account, error=str(exc))
    return moved


def route(rt: Runtime, account: str) -> int:
    """The account's pending requests whose deadline is near: those no batch can make go to the
    deadline policy, the lanes of those a batch can make only if cut now are flushed (cut in
    this same aggregator pass, when the aggregator calls it before its cuts). Returns how many
    left the batch route. One read when no deadline is near."""
    now = rt.now_ms()
    policy = rt.settings.accounts[account].deadline_policy
    needs = batch_needs_ms(rt, account)
    tick = int(rt.settings.run.tick * 1000)
    widest = int(rt.settings.batch.max_wait * 1000)  # no lane waits longer before its cut
    due = rt.store.read(dl_store.due(rt.keys, account, now + needs + widest + tick, PLAN_CHUNK))
    if not due:
        return 0
    late = [d for d in due if d.deadline_ms < now + needs or not d.token]
    on_time = [d for d in due if d.deadline_ms >= now + needs and d.token]
    moved = _escalate(rt, account, policy, late)
    # Cut now, or the lane's own window would make it miss: a flush cuts the whole lane.
    lanes = {
        d.lane
        for d in on_time
        if d.deadline_ms < now + needs + int(lane_window(rt.settings, d.lane) * 1000) + tick
    }
    if policy == "batch":
        lanes |= {d.lane for d in late if d.token}  # late already: out as soon as it can
    for lane in sorted(lanes):
        rt.store.read(lane_store.request_flush(rt.keys, account, lane))
    if lanes:
        log.debug("lanes cut early for deadlines", account=account, lanes=sorted(lanes))
    return moved


def _escalate(rt: Runtime, account: str, policy: str, late: list[dl_store.Due]) -> int:
    """Hand the requests no batch can make to the account's policy."""
    moved = 0
    replies = 0
    retention = int(rt.settings.retention * 1000)
    for i in range(0, len(late), ESCALATE_CHUNK):
        part = late[i : i + ESCALATE_CHUNK]
        out = rt.store.run(
            dl_store.escalate(rt.keys, account, policy, part, retention_ms=retention)
        )
        moved += out.escalated
        replies += out.replies
    if replies:
        reply_store.drain_all(rt.store, account)
    if moved:
        log.info(
            "requests no batch can finish by their deadline",
            account=account,
            requests=moved,
            policy=policy,
        )
    return moved


def cancel_doomed(rt: Runtime, account: str) -> None:
    """Cancel each batch in flight still unfinished `deadlines.realtime_reserve` seconds before
    its earliest deadline: what it has not processed comes back `canceled` (never billed) and
    goes on by its own deadline; what it finished is kept."""
    now = rt.now_ms()
    reserve = int(rt.settings.deadlines.realtime_reserve * 1000)
    for asm, earliest in rt.store.read(
        dl_store.batches_due(rt.keys, account, now + reserve, PLAN_BATCHES)
    ):
        a = rt.store.read(asm_store.read(rt.keys, account, asm))
        if a is None or a.state is AssemblyState.DONE or a.state is AssemblyState.ENDED:
            rt.store.read(dl_store.forget_batch(rt.keys, account, asm))
            continue
        if a.state is not AssemblyState.SUBMITTED or not a.batch_id:
            continue  # not created yet: looked at again once it is
        if a.operator_canceled or a.deadline_canceled_ms:
            rt.store.read(dl_store.forget_batch(rt.keys, account, asm))
            continue
        if not rt.store.read(asm_store.deadline_cancel(rt.keys, account, asm, now)):
            continue  # another replica is canceling it
        bound = log.bind(account=account, assembly=asm, batch_id=a.batch_id)
        try:
            rt.api(account).cancel(a.batch_id)
        except (BadRequestError, ConflictError, NotFoundError) as exc:
            # It ended (or is ending) on its own: nothing to cancel; its lines come as they are.
            bound.info("batch not canceled for its deadline: it is ending", error=str(exc))
            rt.store.read(asm_store.deadline_cancel_failed(rt.keys, account, asm))
            rt.store.read(dl_store.forget_batch(rt.keys, account, asm))
            continue
        except APIError as exc:
            rt.store.read(asm_store.deadline_cancel_failed(rt.keys, account, asm))
            bound.warning("cancel for a deadline failed; trying again", error=str(exc))
            continue
        rt.store.read(dl_store.canceled(rt.keys, account, asm))
        bound.info(
            "batch canceled: it cannot end before its earliest deadline",
            deadline_in_s=round((earliest - now) / 1000, 1),
        )
        # Its end is near: look soon rather than at the next scheduled poll.
        rt.enqueue("poll", account, asm, delay=1.0)
