"""The sweeper: finds assemblies whose stage job was lost (a crash, a lost rq job) and re-queues it.

Every stage job leaves a due time in the account's assembly index; past it, with no lease held,
the sweeper sends the stage again. Stages are idempotent, so a needless re-send does no harm.
"""

from __future__ import annotations

from batchd.logs import get_logger
from batchd.runtime import Runtime
from batchd.store import text

log = get_logger("batchd.sweeper")

STAGE_OF_STATE = {
    "assembling": "submit",
    "sealed": "submit",
    "submitting": "submit",
    "submitted": "poll",
    "ended": "fanout",
}


def sweep(rt: Runtime, limit: int = 200) -> int:
    """One pass; returns how many stage jobs were re-queued."""
    sent = 0
    now = rt.now_ms()
    stale = int(rt.settings.run.stale_after * 1000)
    for account in rt.settings.accounts:
        index = rt.keys.assemblies(account)
        for raw in rt.redis.zrangebyscore(index, "-inf", now, start=0, num=limit):
            asm = text(raw)
            if rt.redis.exists(rt.keys.assembly_lease(account, asm)):
                rt.redis.zadd(index, {asm: now + stale})
                continue
            st = text(rt.redis.hget(rt.keys.assembly(account, asm), "st"))
            stage = STAGE_OF_STATE.get(st)
            if stage is None:
                rt.redis.zrem(index, asm)
                continue
            log.info("re-queueing a stalled stage", account=account, assembly=asm, stage=stage)
            rt.enqueue(stage, account, asm)
            sent += 1
    return sent


def wake_held(rt: Runtime) -> int:
    """At start-up: assemblies held back (paused key, rate limit) are retried at once, since
    the new configuration may have fixed what held them."""
    woken = 0
    for account in rt.settings.accounts:
        index = rt.keys.assemblies(account)
        for raw in rt.redis.zrange(index, 0, -1):
            asm = text(raw)
            if text(rt.redis.hget(rt.keys.assembly(account, asm), "st")) == "sealed":
                rt.redis.zadd(index, {asm: 0})
                woken += 1
    return woken
