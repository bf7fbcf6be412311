"""Crash safety: kill -9 at each step boundary, two daemons at once, Redis restarts.

After each, every request ends exactly once, reply queues hold no duplicate, and the emulator
(which does not trust batchd) saw no request in two live batches and no batch it did not know.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack, SubmitFn
from tests.support.daemon import FAST_ENV, wait_for


def assert_exactly_once(stack: Stack, ids: list[str], queue: str) -> None:
    replies = stack.reply_ids(queue)
    assert len(replies) == len(set(replies)), "a reply queue holds a duplicate"
    assert sorted(replies) == sorted(ids), "a request is missing from its reply queue"
    states = {stack.client.get(i).state for i in ids}
    assert states == {"succeeded"}
    audit = stack.emulator.audit()[stack.emulator.api_key]
    assert audit["double_submitted"] == [], "a request was in two live batches"
    assert audit["billed"] == len(ids), "a request was billed twice"
    assert audit["batches_created"] == stack.counters()["batches_created"], (
        "the API holds a batch batchd never recorded"
    )


@pytest.mark.parametrize("point", ["after_claim", "after_intent", "after_create", "mid_fanout"])
def test_kill_at_step_boundary_then_restart(
    stack: Stack, submit: SubmitFn, tmp_path: Path, point: str
) -> None:
    """kill -9 of the daemon at a step boundary, then a restart: every request ends once."""
    marker = tmp_path / f"crashed-{point}"
    daemon = stack.daemon(
        start=False,
        BATCHD_BATCH__MAX_REQUESTS="700",
        BATCHD_CRASH_AT=point,
        BATCHD_CRASH_MARKER=str(marker),
    )
    daemon.start()
    ids = submit(1400, reply_to="crash")
    wait_for(marker.exists, 60, f"the crash at {point}")
    daemon.wait_exit(30)
    assert stack.ended() < 1400
    daemon.start()
    stack.wait_ended(1400, timeout=120)
    assert_exactly_once(stack, ids, "crash")
    if point == "after_create":
        assert "adopted a batch created before a crash" in daemon.log_text()


def test_two_daemons_share_one_redis(stack: Stack, submit: SubmitFn) -> None:
    """Two daemons on one Redis create no batch twice and end every request once."""
    env = {"BATCHD_BATCH__MAX_REQUESTS": "150"}
    stack.daemon(True, **env)
    stack.daemon(True, **env)
    ids = submit(1500, reply_to="pair")
    stack.wait_ended(1500, timeout=120)
    assert_exactly_once(stack, ids, "pair")
    assert stack.counters()["batches_created"] >= 10


def test_sigterm_stops_gracefully_and_work_resumes(stack: Stack, submit: SubmitFn) -> None:
    """SIGTERM stops the daemon within its grace, losing nothing; a restart finishes."""
    stack.emulator.set_profile({"processing_time": [1.0, 1.0]})
    daemon = stack.daemon(BATCHD_BATCH__MAX_REQUESTS="100")
    ids = submit(500, reply_to="term")
    wait_for(lambda: stack.counters().get("batches_created", 0) >= 1, 30, "a batch")
    started = time.monotonic()
    assert daemon.stop(timeout=30) == 0
    assert time.monotonic() - started < 15
    daemon.start()
    stack.wait_ended(500, timeout=120)
    assert_exactly_once(stack, ids, "term")


def test_redis_crash_and_restart_mid_run(stack: Stack, submit: SubmitFn) -> None:
    """Redis killed -9 (appendfsync always) mid-run and restarted: nothing lost or repeated,
    and the stage workers outlive it (no traceback: the stack fixture checks the log)."""
    stack.emulator.set_profile({"processing_time": [0.5, 0.5]})
    daemon = stack.daemon(BATCHD_BATCH__MAX_REQUESTS="200")
    ids = submit(1000, reply_to="redis")
    wait_for(lambda: stack.counters().get("batches_created", 0) >= 2, 30, "batches")
    stack.redis.restart(crash=True)
    stack.wait_ended(1000, timeout=120)
    assert_exactly_once(stack, ids, "redis")
    log = daemon.log_text()
    # The crash did reach rq's bookkeeping, and no worker ended over it.
    assert "the worker carries on" in log
    assert log.count("started with PID") == int(FAST_ENV["BATCHD_RUN__WORKERS"])
