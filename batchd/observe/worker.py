"""The rq worker class of `batchd worker`: rq's SimpleWorker, timing and counting each stage job,
and outliving a Redis that goes away for a while.

A job's stage is its first argument (`run_stage(stage, account, assembly)`); failures are jobs
that raised or ran past their timeout, which rq keeps in its failed registry.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from rq import SimpleWorker

from batchd.logs import get_logger
from batchd.observe import metrics

log = get_logger("batchd.worker")

#: What a restart, a failover or a dropped connection of Redis raises in rq's own calls.
REDIS_GONE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def stage_of(job: Any) -> str:
    """The job's stage, or `other` when it is not a stage job (or its arguments cannot be read)."""
    try:
        args = job.args
    except Exception:  # an undecodable job: rq reports it; here it only needs a label
        return "other"
    if args and isinstance(args[0], str):
        return str(args[0])
    return "other"


@contextmanager
def _redis_may_be_gone(step: str) -> Iterator[None]:
    """rq's bookkeeping around a job (its worker's state, heartbeats, the job's end) fails when
    Redis goes away, and rq's loop then ends the worker. The stages keep their own state in
    Redis and are done again from it, so the worker notes it and carries on: its next dequeue
    waits for Redis, as rq's loop does."""
    try:
        yield
    except REDIS_GONE as exc:
        log.warning("redis went away during rq's bookkeeping; the worker carries on",
                    step=step, error=str(exc))  # fmt: skip


class StageWorker(SimpleWorker):
    """Runs jobs in its own process, one at a time, and feeds `batchd_stage_job_*`."""

    def perform_job(self, job: Any, *args: Any, **kwargs: Any) -> bool:
        started = time.monotonic()
        ok = bool(super().perform_job(job, *args, **kwargs))
        metrics.stage_job(stage_of(job), ok, time.monotonic() - started)
        return ok

    def handle_exception(self, job: Any, *exc_info: Any) -> None:
        """rq logs a job's failure with its traceback; a job that ended with Redis gone (most
        often rq's own bookkeeping after the stage ran) is a warning, not an error."""
        if len(exc_info) > 1 and isinstance(exc_info[1], REDIS_GONE):
            log.warning("redis went away during a job; batchd's own state says what is left to do",
                        job=getattr(job, "id", None), error=str(exc_info[1]))  # fmt: skip
            return
        super().handle_exception(job, *exc_info)

    def execute_job(self, job: Any, queue: Any) -> None:
        with _redis_may_be_gone("job"):
            super().execute_job(job, queue)

    def check_for_suspension(self, burst: bool) -> None:
        with _redis_may_be_gone("suspension check"):
            super().check_for_suspension(burst)

    def run_maintenance_tasks(self) -> None:
        with _redis_may_be_gone("maintenance"):
            super().run_maintenance_tasks()  # type: ignore[no-untyped-call, unused-ignore]

    def set_state(self, state: str, pipeline: Any = None) -> None:
        with _redis_may_be_gone("state"):
            super().set_state(state, pipeline)

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        with _redis_may_be_gone("heartbeat"):
            super().heartbeat(timeout, pipeline)
