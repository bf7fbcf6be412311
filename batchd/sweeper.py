"""The sweeper: runs each assembly's stage when it is due, and again when its job was lost.

Every assembly in flight has a due time in its account's live index: when its delayed stage is
due, or when to check that its queued job ran (a running stage keeps moving it on while its
lease lives). Past it, one sweeper takes it (SCHEDULE), and queues its stage unless a job for it
is still waiting in rq's queue or a live lease says it is running. Stages are idempotent, so a
needless run does no harm. This replaces rq's scheduler: delays live in batchd's own data, so
nothing waits on a scheduler process, and a crashed replica's stages resume within a lease.
Each pass also runs the deadline planner (`deadlines.plan`).
"""

from __future__ import annotations

from batchd import deadlines
from batchd.logs import get_logger
from batchd.runtime import Runtime
from batchd.stages import STAGE_OF_STATE, poll
from batchd.store import AssemblyState
from batchd.store import assemblies as asm_store
from batchd.store import replies as reply_store

log = get_logger("batchd.sweeper")

#: Seconds between retries of replies a reply queue refused (parked).
PARKED_RETRY = 30.0

_parked_at: dict[str, float] = {}


def sweep(rt: Runtime, limit: int = 200) -> int:
    """One pass; returns how many stage jobs were queued."""
    poll.list_accounts(rt)
    deadlines.plan(rt)
    sent = 0
    now = rt.now_ms()
    recheck = now + int(rt.settings.run.stale_after * 1000)
    # A live lease moves the due time on while its holder lives; one that lapses (its process
    # died) is noticed within a lease, not a whole `stale_after`.
    lease_check = now + int(rt.settings.run.lease * 1000)
    for account in rt.settings.accounts:
        drain_replies(rt, account, now)
        due = rt.store.read(asm_store.overdue(rt.keys, account, now, limit))
        if not due:
            continue
        leased = rt.store.read(asm_store.leased(rt.keys, account, [a for a, _ in due]))
        for (asm, seen), busy in zip(due, leased, strict=True):
            nxt = lease_check if busy else recheck
            if not rt.store.run(asm_store.schedule(rt.keys, account, asm, seen, nxt)):
                continue  # another sweeper took it
            if busy:
                continue  # running: its lease moves the due time on
            a = rt.store.read(asm_store.read(rt.keys, account, asm))
            stage = STAGE_OF_STATE.get(a.state) if a is not None and a.state else None
            if a is None or stage is None:
                rt.store.read(asm_store.forget(rt.keys, account, asm))
                continue
            if a.job and rt.job_waiting(a.job):
                continue  # its job is queued, waiting for a worker
            rt.enqueue(stage, account, asm)
            sent += 1
    return sent


def drain_replies(rt: Runtime, account: str, now_ms: int) -> None:
    """Replies left in the account's outbox (the step that ended them died before moving
    them, or an asyncio cancel) go to their queues; refused ones are retried now and then."""
    reply_store.drain_all(rt.store, account)
    key = f"{rt.keys.prefix}/{account}"
    if now_ms - _parked_at.get(key, 0) > PARKED_RETRY * 1000:
        _parked_at[key] = now_ms
        reply_store.drain(rt.store, account, parked=True)


def wake_held(rt: Runtime) -> int:
    """At start-up: assemblies held back (paused key, rate limit) are retried at once, since
    the new configuration may have fixed what held them."""
    woken = 0
    for account in rt.settings.accounts:
        asms = rt.store.read(asm_store.live(rt.keys, account))
        for a in rt.store.read(asm_store.read_many(rt.keys, [(account, x) for x in asms])):
            if a.state is AssemblyState.SEALED:
                rt.store.read(asm_store.set_due(rt.keys, account, a.id, 0))
                woken += 1
    return woken
