"""End to end against the emulator: every terminal status, retries, the dead letter, pausing."""

from __future__ import annotations

import subprocess
import sys

import pytest

from batchd import CancelError
from batchd.runtime import Runtime
from batchd.store import assemblies as asm_store
from batchd.store.assemblies import Line
from tests.e2e.conftest import Stack, SubmitFn, params
from tests.support.daemon import wait_for


def test_requests_succeed_with_their_message(stack: Stack, submit: SubmitFn) -> None:
    """Submitted requests come back succeeded, each with a Message, billed exactly once."""
    stack.daemon()
    ids = submit(40)
    results = [stack.client.wait(i, timeout=60) for i in ids]
    assert {r.status for r in results} == {"succeeded"}
    assert all(r.message_dict and r.message_dict["type"] == "message" for r in results)
    assert all(r.message is not None and r.message.type == "message" for r in results)
    assert all(r.text for r in results)
    assert all(r.batch_id and r.batch_id.startswith("msgbatch_") for r in results)
    audit = stack.emulator.audit()[stack.emulator.api_key]
    assert audit["billed"] == 40
    assert audit["double_submitted"] == []
    assert audit["batches_created"] == stack.counters()["batches_created"]


def test_reply_queue_gets_each_result_once(stack: Stack, submit: SubmitFn) -> None:
    """The reply queue receives one envelope per request, none twice."""
    stack.daemon()
    ids = submit(30, reply_to="q")
    stack.wait_ended(30)
    got = [r.id for r in stack.client.replies("q", timeout=1)]
    assert sorted(got) == sorted(ids)


def test_invalid_params_end_errored_without_retry(stack: Stack, submit: SubmitFn) -> None:
    """A request the API refuses after the batch ran ends errored on its first attempt."""
    stack.daemon()
    [rid] = submit(1, temperature=5)
    result = stack.client.wait(rid, timeout=60)
    assert result.status == "errored"
    assert result.attempts == 1
    assert result.error is not None and result.error["type"] == "invalid_request_error"


def test_retryable_errors_go_round_until_dead(stack: Stack, submit: SubmitFn) -> None:
    """api_error results are sent again, and end dead with the last error at the cap."""
    stack.emulator.set_profile({"result_api_error_rate": 1.0})
    stack.daemon(BATCHD_RETRY__MAX_ATTEMPTS="2")
    ids = submit(5)
    results = [stack.client.wait(i, timeout=60) for i in ids]
    assert {r.status for r in results} == {"dead"}
    assert {r.attempts for r in results} == {2}
    assert all(r.error and r.error["type"] == "api_error" for r in results)
    dead = stack.client.redis.zrange(stack.client.keys.dead("default"), 0, -1)
    assert sorted(d.decode() for d in dead) == sorted(ids)
    assert stack.counters()["retries"] == 5


def test_retried_request_succeeds_on_a_later_attempt(stack: Stack, submit: SubmitFn) -> None:
    """An overloaded result goes round again and succeeds in a new batch."""
    stack.emulator.set_profile({"result_overloaded_rate": 1.0})
    stack.daemon()
    [rid] = submit(1)
    wait_for(lambda: stack.counters().get("retries", 0) >= 1, 30, "a retry")
    stack.emulator.set_profile({})
    result = stack.client.wait(rid, timeout=60)
    assert result.status == "succeeded"
    assert result.attempts >= 2
    assert stack.emulator.audit()[stack.emulator.api_key]["double_submitted"] == []


def test_expired_requests_go_round_again(stack: Stack, submit: SubmitFn) -> None:
    """Requests that expire unprocessed after 24 h are sent again and then succeed."""
    stack.emulator.set_profile({"result_expired_rate": 1.0})
    stack.daemon()
    ids = submit(3)
    audit = stack.emulator.audit
    wait_for(lambda: audit()[stack.emulator.api_key]["batches_created"] >= 1, 30, "a batch")
    stack.emulator.set_profile({})
    stack.emulator.advance(86_400 + 60)
    results = [stack.client.wait(i, timeout=60) for i in ids]
    assert {r.status for r in results} == {"succeeded"}
    assert {r.attempts for r in results} == {2}


def test_expired_is_terminal_when_retry_is_off(stack: Stack, submit: SubmitFn) -> None:
    """With retry.retry_expired off, an expired request ends expired."""
    stack.emulator.set_profile({"result_expired_rate": 1.0})
    stack.daemon(BATCHD_RETRY__RETRY_EXPIRED="false")
    [rid] = submit(1)
    audit = stack.emulator.audit
    wait_for(lambda: audit()[stack.emulator.api_key]["batches_created"] >= 1, 30, "a batch")
    stack.emulator.advance(86_400 + 60)
    result = stack.client.wait(rid, timeout=60)
    assert result.status == "expired"
    assert result.result == {"type": "expired"}


def test_operator_cancel_of_a_batch_ends_requests_canceled(stack: Stack, submit: SubmitFn) -> None:
    """`batchd batches cancel` ends the batch's unprocessed requests canceled, not retried."""
    stack.emulator.set_profile({"processing_time": [10_000, 10_000]})
    d = stack.daemon()
    [rid] = submit(1)
    wait_for(lambda: stack.client.get(rid).batch_id, 30, "the batch id")
    batch_id = stack.client.get(rid).batch_id
    with pytest.raises(CancelError):
        stack.client.cancel(rid)
    out = subprocess.run(
        [sys.executable, "-m", "batchd", "batches", "cancel", str(batch_id)],
        env=d.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = stack.client.wait(rid, timeout=60)
    assert result.status == "canceled"
    assert result.attempts == 1


def test_producer_cancel_of_a_pending_request(stack: Stack, submit: SubmitFn) -> None:
    """A pending request canceled by its producer ends canceled and is never sent."""
    stack.daemon(BATCHD_BATCH__MAX_WAIT="3600")
    [rid] = submit(1)
    result = stack.client.cancel(rid)
    assert result.status == "canceled"
    assert stack.client.wait(rid, timeout=5).status == "canceled"
    assert stack.emulator.audit()[stack.emulator.api_key]["requests"] == 0


def test_corrupted_record_is_rejected_and_others_proceed(stack: Stack, submit: SubmitFn) -> None:
    """A request whose stored params were corrupted ends rejected; its neighbours succeed."""
    stack.daemon(BATCHD_BATCH__MAX_WAIT="3600")
    ids = submit(3)
    _, token = ids[1].split(".", 1)
    stack.client.redis.set(stack.client.keys.params("default", token), b"{}")
    stack.client.flush()
    results = {i: stack.client.wait(i, timeout=60) for i in ids}
    assert results[ids[1]].status == "rejected"
    assert results[ids[0]].status == results[ids[2]].status == "succeeded"
    assert results[ids[0]].attempts == 1


def test_wait_from_another_process(stack: Stack, submit: SubmitFn) -> None:
    """A process that did not submit the request waits for it and gets its result."""
    stack.daemon(BATCHD_BATCH__MAX_WAIT="3600")
    [rid] = submit(1)
    code = (
        "import sys; from batchd import Client, Settings;"
        f"c = Client(settings=Settings.load(redis_url={stack.redis.url!r}));"
        f"print(c.wait({rid!r}, timeout=60).status)"
    )
    waiter = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    stack.client.flush()
    out, _ = waiter.communicate(timeout=90)
    assert out.strip() == "succeeded"


def test_refused_api_key_pauses_and_keeps_requests(stack: Stack, submit: SubmitFn) -> None:
    """A refused API key pauses the account and keeps its requests until a good key comes."""
    bad = stack.daemon(BATCHD_ACCOUNTS__DEFAULT__API_KEY="sk-ant-wrong-key")
    ids = submit(4)
    wait_for(lambda: stack.client.redis.exists(stack.client.keys.paused("default")), 30, "pause")
    assert "account paused" in bad.log_text()
    assert "sk-ant-wrong-key" not in bad.log_text()
    assert {stack.client.get(i).state for i in ids} <= {"pending", "batched"}
    bad.stop()
    stack.daemon()
    results = [stack.client.wait(i, timeout=60) for i in ids]
    assert {r.status for r in results} == {"succeeded"}


def test_results_stream_cut_mid_way_loses_nothing(stack: Stack, submit: SubmitFn) -> None:
    """Results streams reset mid-body and in CRLF still end every request exactly once."""
    stack.emulator.set_profile(
        {"results_reset_rate": 0.5, "results_reset_after": 0.4, "results_crlf": True}
    )
    stack.daemon()
    ids = submit(600, reply_to="cut")
    stack.wait_ended(600)
    assert sorted(stack.reply_ids("cut")) == sorted(ids)


def test_api_faults_are_retried(stack: Stack, submit: SubmitFn) -> None:
    """429, 500 and 529 answers on every endpoint delay requests but lose none."""
    stack.emulator.set_profile(
        {"http_429_rate": 0.2, "http_500_rate": 0.1, "http_529_rate": 0.1, "retry_after": 0.1}
    )
    stack.daemon()
    ids = submit(200, reply_to="faults")
    stack.wait_ended(200, timeout=90)
    assert sorted(stack.reply_ids("faults")) == sorted(ids)
    audit = stack.emulator.audit()[stack.emulator.api_key]
    assert audit["double_submitted"] == []
    assert audit["billed"] == 200


def test_params_unchanged_on_the_wire(stack: Stack) -> None:
    """Producer params with unicode and floats reach the API byte-identical (echoed back)."""
    stack.daemon()
    p = params(0)
    p["messages"] = [{"role": "user", "content": "héllo ✓ 0.1"}]
    ticket = stack.client.submit(p, metadata={"x": 1.5})
    result = stack.client.wait(ticket.id, timeout=60)
    assert result.status == "succeeded"
    assert result.metadata == {"x": 1.5}


def test_batch_vanished_from_the_api_ends_its_requests_errored(
    stack: Stack, submit: SubmitFn
) -> None:
    """A batch the API no longer knows (404, and not in its list) past `poll.not_found_grace`
    ends its requests errored, not sent twice."""
    stack.emulator.set_profile({"processing_time": [10_000, 10_000]})
    stack.daemon(BATCHD_POLL__NOT_FOUND_GRACE="2")
    [rid] = submit(1)
    wait_for(lambda: stack.client.get(rid).batch_id, 30, "the batch id")
    stack.emulator.reset()
    result = stack.client.wait(rid, timeout=60)
    assert result.status == "errored"
    assert result.error is not None and result.error["type"] == "not_found_error"
    assert result.attempts == 1


def test_transient_404s_are_polled_through(stack: Stack, submit: SubmitFn) -> None:
    """Batches answering 404 for a while (after create, in mid-life, on results) are polled
    and read again: every request succeeds, billed once, none ends errored."""
    stack.emulator.set_profile(
        {"transient_404_rate": 1.0, "transient_404_seconds": 1.5, "processing_time": [3, 3]}
    )
    stack.daemon()
    ids = submit(30)
    results = [stack.client.wait(i, timeout=90) for i in ids]
    assert {r.status for r in results} == {"succeeded"}
    audit = stack.emulator.audit()[stack.emulator.api_key]
    assert audit["transient_404s"] > 0, "no transient 404 was served"
    assert audit["billed"] == 30
    assert audit["double_submitted"] == []


def test_results_come_from_results_url(stack: Stack, submit: SubmitFn) -> None:
    """Results are read from the batch's `results_url`, not a path batchd builds itself."""
    stack.emulator.set_profile({"opaque_results_url": True})
    stack.daemon()
    ids = submit(5)
    assert {stack.client.wait(i, timeout=60).status for i in ids} == {"succeeded"}
    downloads = stack.emulator.audit()[stack.emulator.api_key]["results_downloads"]
    assert downloads, "no results download was counted"
    assert all("batch-results" in path for path in downloads), downloads


def test_unknown_and_repeated_result_lines_are_ignored(stack: Stack) -> None:
    """Fan-out lines for ids not in the batch, or seen before, change nothing."""
    stack.daemon()
    ticket = stack.client.submit(params(1))
    first = stack.client.wait(ticket.id, timeout=60)
    rt = Runtime(stack.client.settings)
    try:
        _, token = ticket.id.split(".", 1)
        out = rt.store.run(
            asm_store.fanout(
                rt.keys, "default", "some-assembly", str(first.batch_id), "0",
                [Line(token, "err", b'{"type":"errored"}'),
                 Line("0" * 26, "ok", b'{"type":"succeeded"}')],
                retention_ms=60_000, max_attempts=3,
                ledger=asm_store.ledger_keys(rt.keys, "default", rt.now_ms()),
            )
        )  # fmt: skip
    finally:
        rt.close()
    assert (out.done, out.requeued, out.ignored) == (0, 0, 2)
    assert stack.client.wait(ticket.id, timeout=5).raw == first.raw
