"""The rq worker class of `batchd worker`: rq's SimpleWorker, timing and counting each stage job.

A job's stage is its first argument (`run_stage(stage, account, assembly)`); failures are jobs
that raised or ran past their timeout, which rq keeps in its failed registry.
"""

from __future__ import annotations

import time
from typing import Any

from rq import SimpleWorker

from batchd.observe import metrics


def stage_of(job: Any) -> str:
    """The job's stage, or `other` when it is not a stage job (or its arguments cannot be read)."""
    try:
        args = job.args
    except Exception:  # an undecodable job: rq reports it; here it only needs a label
        return "other"
    if args and isinstance(args[0], str):
        return str(args[0])
    return "other"


class StageWorker(SimpleWorker):
    """Runs jobs in its own process, one at a time, and feeds `batchd_stage_job_*`."""

    def perform_job(self, job: Any, *args: Any, **kwargs: Any) -> bool:
        started = time.monotonic()
        ok = bool(super().perform_job(job, *args, **kwargs))
        metrics.stage_job(stage_of(job), ok, time.monotonic() - started)
        return ok
