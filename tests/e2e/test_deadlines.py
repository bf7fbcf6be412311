"""Deadlines end to end: `batchd run`, the emulator and Redis, each policy, the real-time route,
a batch canceled for a deadline, and crashes around a real-time call that never pay twice."""

from __future__ import annotations

import time
from typing import Any

import pytest

from batchd import Result
from batchd.store import ledger as ledger_store
from tests.e2e.conftest import Stack, params
from tests.support.daemon import wait_for

#: Plans for the tests: a batch is taken to need a minute (+1 s margin) until 5 are seen, so a
#: deadline in 20 s is one no batch can make, with time to spare for the real-time route; a
#: batch still running 3 s before its earliest deadline is canceled.
PLANS = {
    "BATCHD_DEADLINES__DEFAULT_DURATION": "60",
    "BATCHD_DEADLINES__MARGIN": "1",
    "BATCHD_DEADLINES__REALTIME_RESERVE": "3",
    "BATCHD_REALTIME__MAX_ATTEMPTS": "6",
}


def deadline_daemon(stack: Stack, policy: str = "realtime", **extra: str) -> None:
    """A daemon with PLANS and `policy`; lanes wait 2 s, so the planner sees a new request
    before any cut would take it."""
    env = {**PLANS, "BATCHD_BATCH__MAX_WAIT": "2", **extra}
    stack.daemon(True, **env, BATCHD_ACCOUNTS__DEFAULT__DEADLINE_POLICY=policy)


def submit(stack: Stack, n: int, deadline: float | None) -> str:
    return stack.client.submit(params(n), reply_to="results", deadline=deadline).id


def audit(stack: Stack) -> dict[str, Any]:
    found: dict[str, Any] = stack.emulator.audit()[stack.emulator.api_key]
    return found


def billed_once(stack: Stack) -> None:
    """No request was billed on both routes, nor twice in real time."""
    a = audit(stack)
    assert a["billed_both_routes"] == []
    assert a["realtime_double_billed"] == []


def test_deadline_a_batch_can_make_is_met_by_batch(stack: Stack) -> None:
    """A deadline well beyond a batch's duration is met by a batch, at the batch price."""
    deadline_daemon(stack)
    result = stack.client.wait(submit(stack, 1, time.time() + 120), timeout=60)
    assert (result.status, result.mode, result.deadline_met) == ("succeeded", "batch", True)
    assert result.deadline is not None and result.deadline_missed is None
    assert audit(stack)["realtime_billed"] == 0


def test_lane_holding_a_request_at_risk_is_cut_before_its_window(stack: Stack) -> None:
    """A lane whose window (60 s) would make a deadline miss is cut at once for it."""
    deadline_daemon(stack, BATCHD_BATCH__MAX_WAIT="60", BATCHD_DEADLINES__DEFAULT_DURATION="5")
    started = time.monotonic()
    # A batch is planned at 6 s: the 60 s window would miss a deadline in 50 s, a cut now makes
    # it. The result well before the window ends shows the cut was early (time for a busy box).
    result = stack.client.wait(submit(stack, 1, time.time() + 50), timeout=45)
    assert time.monotonic() - started < 45
    assert (result.mode, result.deadline_met) == ("batch", True)


def test_policy_realtime_sends_what_no_batch_can_make(stack: Stack) -> None:
    """Under policy realtime a deadline no batch can make is met through the Messages API."""
    deadline_daemon(stack)
    result = stack.client.wait(submit(stack, 1, time.time() + 20), timeout=30)
    assert (result.status, result.mode, result.deadline_met) == ("succeeded", "realtime", True)
    assert result.text
    a = audit(stack)
    assert (a["batches_created"], a["realtime_billed"]) == (0, 1)
    billed_once(stack)
    counters = stack.counters()
    assert counters["escalated:realtime"] == 1
    assert counters["realtime:succeeded"] == 1
    assert counters["deadlines_met"] == 1


def test_realtime_usage_is_in_the_ledger_at_list_price(stack: Stack) -> None:
    """A real-time result's usage is in the ledger under lane `realtime` (mode realtime)."""
    deadline_daemon(stack)
    result = stack.client.wait(submit(stack, 1, time.time() + 20), timeout=30)
    assert result.mode == "realtime"
    now = int(time.time() * 1000)
    entries = stack.client.store.read(
        ledger_store.read(stack.client.keys, ["default"], now - 3_600_000, now + 60_000, now)
    )
    realtime = [e for e in entries if e.mode == "realtime"]
    assert sum(e.usage.requests for e in realtime) == 1
    message = result.message_dict or {}
    assert realtime[0].usage.output == message["usage"]["output_tokens"]


def test_policy_batch_keeps_it_in_a_batch_and_reports_it_late(stack: Stack) -> None:
    """Under policy batch an unreachable deadline stays on the batch route; its result comes
    late and says so."""
    stack.emulator.set_profile({"processing_time": [3.0, 3.0]})
    deadline_daemon(stack, "batch")
    result = stack.client.wait(submit(stack, 1, time.time() + 1.5), timeout=30)
    assert (result.status, result.mode) == ("succeeded", "batch")
    assert (result.deadline_met, result.deadline_missed) == (False, "late")
    assert audit(stack)["realtime_billed"] == 0
    assert stack.counters()["escalated:batch"] == 1


def test_policy_fail_ends_it_errored_deadline_exceeded(stack: Stack) -> None:
    """Under policy fail an unreachable deadline ends errored (deadline_exceeded), unsent."""
    deadline_daemon(stack, "fail")
    result = stack.client.wait(submit(stack, 1, time.time() + 20), timeout=30)
    assert result.status == "errored"
    assert result.error is not None and result.error["type"] == "deadline_exceeded"
    assert (result.deadline_met, result.deadline_missed) == (False, "unreachable")
    a = audit(stack)
    assert (a["batches_created"], a["realtime_billed"]) == (0, 0)


def test_expired_lines_go_realtime_under_retry_expired_realtime(stack: Stack) -> None:
    """retry.expired = realtime sends a request whose batch expired through the Messages API."""
    stack.emulator.set_profile({"result_expired_rate": 1.0})
    deadline_daemon(stack, BATCHD_RETRY__EXPIRED="realtime")
    rid = submit(stack, 1, None)
    wait_for(lambda: audit(stack)["batches_created"] >= 1, 30, "a batch")
    stack.emulator.set_profile({})
    stack.emulator.advance(86_400 + 60)
    result = stack.client.wait(rid, timeout=60)
    assert (result.status, result.mode) == ("succeeded", "realtime")
    billed_once(stack)


def test_batch_that_cannot_make_its_deadline_is_canceled(stack: Stack) -> None:
    """A batch still running 5 s before its earliest deadline is canceled: lines it finished are
    kept, its canceled deadline lines go real-time, the others go round again; each request is
    billed once."""
    deadline_daemon(
        stack, BATCHD_DEADLINES__REALTIME_RESERVE="5", BATCHD_DEADLINES__DEFAULT_DURATION="5"
    )
    # Workers up, so the batch is made at once (a batch counts from its cut).
    stack.client.wait(submit(stack, 1000, None), timeout=60)
    stack.emulator.set_profile({"processing_time": [0.2, 25.0], "seed": 3})
    deadline = time.time() + 14
    with_deadline = [submit(stack, n, deadline) for n in range(12)]
    without = [submit(stack, 100 + n, None) for n in range(6)]
    results = {rid: stack.client.wait(rid, timeout=90) for rid in with_deadline + without}
    assert all(r.status == "succeeded" for r in results.values())
    assert stack.counters()["batches_canceled:deadline"] >= 1
    modes = {results[rid].mode for rid in with_deadline}
    assert modes == {"batch", "realtime"}, "some lines finished before the cancel, some did not"
    assert {results[rid].mode for rid in without} == {"batch"}
    assert all(results[rid].deadline_met for rid in with_deadline)
    a = audit(stack)
    assert a["billed"] + a["realtime_billed"] == len(results) + 1
    billed_once(stack)


def test_api_429_on_a_realtime_call_is_honoured_and_retried(stack: Stack) -> None:
    """A 429 with retry-after billed nothing: the request waits it out and is sent again."""
    stack.emulator.set_profile(
        {"http_429_rate": 1.0, "fault_operations": ["messages"], "retry_after": 1.0}
    )
    deadline_daemon(stack)
    rid = submit(stack, 1, time.time() + 20)
    wait_for(lambda: stack.counters().get("realtime:retried", 0) >= 1, 30, "a 429")
    stack.emulator.set_profile({})
    result = stack.client.wait(rid, timeout=30)
    assert (result.status, result.mode) == ("succeeded", "realtime")
    assert audit(stack)["realtime_billed"] == 1


def test_realtime_error_answer_ends_the_request_with_it(stack: Stack) -> None:
    """A final error answer (an unknown model: 404) ends the request errored with the API's
    error, nothing billed and nothing sent again."""
    deadline_daemon(stack)
    body = {**params(1), "model": "claude-none"}
    rid = stack.client.submit(body, deadline=time.time() + 20).id
    result = stack.client.wait(rid, timeout=30)
    assert (result.status, result.mode) == ("errored", "realtime")
    assert result.error is not None and result.error["type"] == "not_found_error"
    assert result.deadline_missed == "realtime_errored"
    assert audit(stack)["realtime_billed"] == 0


def test_realtime_call_without_an_answer_is_never_sent_again(stack: Stack) -> None:
    """A real-time call billed whose answer was lost ends errored (realtime_unanswered), once."""
    stack.emulator.set_profile({"realtime_lost_response_rate": 1.0})
    deadline_daemon(stack)
    result = stack.client.wait(submit(stack, 1, time.time() + 20), timeout=30)
    assert_unanswered(result)
    assert audit(stack)["realtime_billed"] == 1
    billed_once(stack)


def assert_unanswered(result: Result) -> None:
    assert (result.status, result.mode) == ("errored", "realtime")
    assert result.error is not None and result.error["type"] == "realtime_unanswered"
    assert result.deadline_missed == "realtime_unanswered"


@pytest.mark.parametrize(
    ("crash_at", "billed"), [("after_realtime_intent", 0), ("after_realtime_answer", 1)]
)
def test_crash_around_a_realtime_call_does_not_pay_twice(
    stack: Stack, crash_at: str, billed: int
) -> None:
    """kill -9 after the send intent (before the POST) or after the answer (before it is
    recorded): the restarted daemon finds the lease run out and ends the request errored
    (realtime_unanswered) without sending it again."""
    marker = stack.tmp / "crashed"
    env = {**PLANS, "BATCHD_BATCH__MAX_WAIT": "2", "BATCHD_CRASH_AT": crash_at,
           "BATCHD_CRASH_MARKER": str(marker)}  # fmt: skip
    d = stack.daemon(True, **env)
    rid = submit(stack, 1, time.time() + 20)
    assert d.proc is not None
    d.wait_exit(30)
    assert marker.exists()
    assert stack.client.get(rid).state == "realtime"
    d.start()
    result = stack.client.wait(rid, timeout=30)
    assert_unanswered(result)
    assert audit(stack)["realtime_billed"] == billed
    billed_once(stack)
