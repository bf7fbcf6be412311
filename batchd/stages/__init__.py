"""The stage jobs run by rq workers: create a batch exactly once, poll it, fan out its results.

Each stage takes the assembly's lease, reads its state from Redis alone and is idempotent, so
any replica can finish another's work and a repeated job does no harm. Which stage an assembly
needs is the one table below, which the sweeper reads too.
"""

from __future__ import annotations

from batchd.errors import RedisUnavailableError
from batchd.logs import get_logger
from batchd.runtime import Runtime, current, lease
from batchd.stages import fanout, poll, submit
from batchd.stages.ending import seal_abandoned
from batchd.store import AssemblyState
from batchd.store import assemblies as asm_store

log = get_logger("batchd.stages")

#: The assembly's state machine: the stage that moves it on from each live state.
#: assembling -> sealed -> submitting -> submitted -> ended -> done
STAGE_OF_STATE: dict[AssemblyState, str] = {
    AssemblyState.ASSEMBLING: "submit",  # an aggregator died mid-claim: seal what it took
    AssemblyState.SEALED: "submit",
    AssemblyState.SUBMITTING: "submit",
    AssemblyState.SUBMITTED: "poll",
    AssemblyState.ENDED: "fanout",
}


def run_stage(stage: str, account: str, asm: str) -> str:
    """rq entry point: run the stage the assembly's state calls for (`stage` is what the
    queuer expected: a label for metrics)."""
    rt = current()
    try:
        return run(rt, account, asm)
    except RedisUnavailableError as exc:
        # Redis away (restarting, failing over): the assembly's due time brings the sweeper
        # back to it once Redis answers, so this is no failure of the job.
        log.warning("redis unavailable; the stage runs again later", stage=stage, error=str(exc))
        return "redis unavailable"


def run(rt: Runtime, account: str, asm: str) -> str:
    bound = log.bind(account=account, assembly=asm)
    with lease(rt, asm_store.lease_key(rt.keys, account, asm), due=(account, asm)) as held:
        if held is None:
            bound.debug("stage busy elsewhere")
            return "busy"
        state = rt.store.read(asm_store.read(rt.keys, account, asm))
        if state is None or state.state not in STAGE_OF_STATE:
            rt.store.read(asm_store.forget(rt.keys, account, asm))
            return "gone" if state is None else str(state.state)
        if state.state is AssemblyState.ASSEMBLING:
            seal_abandoned(rt, account, asm)
            return "sealed"
        if state.state in (AssemblyState.SEALED, AssemblyState.SUBMITTING):
            return submit.run(rt, state, held)
        if state.state is AssemblyState.SUBMITTED:
            return poll.run(rt, state)
        return fanout.run(rt, state, held)


__all__ = ["STAGE_OF_STATE", "run", "run_stage"]
