"""How a request ends and how its producer hears of it: get, wait, cancel, replies, retries."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
import redis

from batchd import (
    CancelError,
    Client,
    RequestNotFoundError,
    Result,
    Settings,
    WaitTimeoutError,
)
from batchd.keys import Keys
from batchd.runtime import Runtime
from batchd.store import text
from tests.pipeline import (
    ACCOUNT,
    BATCH_ID,
    Flow,
    errored,
    params,
    stop,
    succeeded,
    token_of,
    wait_for,
)

ENVELOPE_KEYS = [
    "id",
    "key",
    "account",
    "status",
    "result",
    "batch_id",
    "attempts",
    "metadata",
    "submitted_at",
    "ended_at",
]
UNKNOWN = "default.01ARZ3NDEKTSV4RRFFQ69G5FAV"
MALFORMED = [
    "nope",
    "default.",
    ".01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "default.short",
    "default." + "U" * 26,
]


def blocked(r: redis.Redis) -> int:
    return int(r.info("clients")["blocked_clients"])


def lane_stats(r: redis.Redis, priority: int = 0) -> tuple[int, int]:
    count, nbytes = r.hmget(Keys().lane_stats(ACCOUNT, priority), "count", "bytes")
    return int(count or 0), int(nbytes or 0)


# -- get ------------------------------------------------------------------------------------


def test_get_of_an_unknown_id_raises_not_found(client: Client) -> None:
    """A well-formed id nobody submitted raises RequestNotFoundError."""
    with pytest.raises(RequestNotFoundError):
        client.get(UNKNOWN)


@pytest.mark.parametrize("rid", MALFORMED)
def test_get_of_a_malformed_id_raises_not_found(client: Client, rid: str) -> None:
    """An id that is not batchd's raises RequestNotFoundError, not ValueError."""
    with pytest.raises(RequestNotFoundError):
        client.get(rid)


def test_get_shows_a_claimed_request_as_batched(client: Client, flow: Flow) -> None:
    """After a cut the request is batched with one attempt; its batch id shows once recorded."""
    ticket = client.submit(params())
    asm = flow.cut()
    state = client.get(ticket.id)
    assert (state.state, state.attempts, state.batch_id) == ("batched", 1, None)
    flow.record(asm)
    assert client.get(ticket.id).batch_id == BATCH_ID


def test_get_of_an_ended_request_carries_its_result(client: Client, flow: Flow) -> None:
    """Once terminal, `get` returns the state and the same envelope `wait` returns."""
    ticket = client.submit(params())
    flow.end(ticket.id)
    state = client.get(ticket.id)
    assert state.terminal
    assert state.state == "succeeded"
    assert state.batch_id == BATCH_ID
    assert state.result is not None
    assert state.result.raw == client.wait(ticket.id, timeout=0).raw


# -- wait -----------------------------------------------------------------------------------


def test_wait_returns_at_once_for_a_result_that_arrived_before(client: Client, flow: Flow) -> None:
    """A result stored long before the call is returned even with a zero timeout."""
    ticket = client.submit(params())
    flow.end(ticket.id)
    result = client.wait(ticket.id, timeout=0)
    assert result.status == "succeeded"
    assert result.id == ticket.id


def test_wait_blocks_until_another_process_ends_the_request(
    client: Client, flow: Flow, redis_url: str, redis_client: redis.Redis
) -> None:
    """A waiter in another process blocks, then wakes with the result when the fan-out ends it."""
    ticket = client.submit(params())
    code = (
        "import sys\n"
        "from batchd import Client\n"
        "with Client(sys.argv[1]) as c:\n"
        "    print(c.wait(sys.argv[2], timeout=20).status, flush=True)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, redis_url, ticket.id],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: blocked(redis_client) == 1 or proc.poll() is not None, 20, "the waiter")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        flow.end(ticket.id)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out.strip() == "succeeded"


def test_several_waiters_all_wake(
    make_client: Callable[..., Client], flow: Flow, redis_client: redis.Redis
) -> None:
    """Every waiter blocked on one request wakes when it ends, and none consumes the signal."""
    ticket = make_client().submit(params())
    got: list[str] = []
    errors: list[BaseException] = []
    clients = [make_client() for _ in range(5)]

    def waiter(c: Client) -> None:
        try:
            got.append(c.wait(ticket.id, timeout=20).status)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=waiter, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    wait_for(lambda: blocked(redis_client) == 5, 20, "five blocked waiters")
    flow.end(ticket.id)
    for t in threads:
        t.join(20)
    assert not errors
    assert got == ["succeeded"] * 5
    assert clients[0].wait(ticket.id, timeout=0).status == "succeeded"


def test_wait_times_out(client: Client, redis_client: redis.Redis) -> None:
    """A request still pending at the deadline raises WaitTimeoutError naming its state."""
    ticket = client.submit(params())
    with pytest.raises(WaitTimeoutError, match="pending"):
        client.wait(ticket.id, timeout=0.2)
    assert blocked(redis_client) == 0


def test_wait_on_a_callers_connection_honours_its_socket_timeout(
    settings: Settings, redis_url: str
) -> None:
    """A Client built on the caller's connection ends a long wait with WaitTimeoutError."""
    connection = redis.Redis.from_url(redis_url, socket_timeout=0.3)
    try:
        client = Client(settings=settings, connection=connection)
        ticket = client.submit(params())
        with pytest.raises(WaitTimeoutError):
            client.wait(ticket.id, timeout=1.0)
    finally:
        connection.close()


def test_wait_for_an_unknown_id_raises_not_found(client: Client) -> None:
    """Waiting on an id nobody submitted raises at once instead of blocking."""
    with pytest.raises(RequestNotFoundError):
        client.wait(UNKNOWN, timeout=5)


@pytest.mark.parametrize("rid", MALFORMED)
def test_wait_for_a_malformed_id_raises_not_found(client: Client, rid: str) -> None:
    """Waiting on an id that is not batchd's raises RequestNotFoundError."""
    with pytest.raises(RequestNotFoundError):
        client.wait(rid, timeout=5)


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_of_a_pending_request_ends_it_canceled(client: Client) -> None:
    """Cancel returns a `canceled` envelope at once, and `get` agrees."""
    ticket = client.submit(params(), key="to-cancel", metadata={"m": 1})
    result = client.cancel(ticket.id)
    assert (result.id, result.status, result.key, result.metadata) == (
        ticket.id,
        "canceled",
        "to-cancel",
        {"m": 1},
    )
    assert result.result == {"type": "canceled"}
    assert result.batch_id is None
    assert client.get(ticket.id).state == "canceled"


def test_cancel_removes_the_request_from_its_lane(
    client: Client, redis_client: redis.Redis
) -> None:
    """The lane's entry goes, and its count and bytes come back to what they were."""
    keep = client.submit(params("stay"), priority=2)
    before = lane_stats(redis_client, 2)
    ticket = client.submit(params("go, with more text"), priority=2)
    client.cancel(ticket.id)
    assert lane_stats(redis_client, 2) == before
    entries = redis_client.lrange(Keys().pending(ACCOUNT, 2), 0, -1)
    assert [text(e).split(" ")[0] for e in entries] == [token_of(keep.id)]
    client.cancel(keep.id)
    assert lane_stats(redis_client, 2) == (0, 0)


def test_cancel_wakes_a_waiter(
    make_client: Callable[..., Client], redis_client: redis.Redis
) -> None:
    """A waiter blocked on a pending request wakes with `canceled`."""
    producer, waiter = make_client(), make_client()
    ticket = producer.submit(params())
    got: list[Result] = []
    thread = threading.Thread(target=lambda: got.append(waiter.wait(ticket.id, timeout=20)))
    thread.start()
    wait_for(lambda: blocked(redis_client) == 1, 20, "the waiter")
    producer.cancel(ticket.id)
    thread.join(20)
    assert [r.status for r in got] == ["canceled"]


def test_cancel_feeds_the_reply_queue(client: Client) -> None:
    """The canceled envelope reaches the request's reply queue."""
    ticket = client.submit(params(), reply_to="svc")
    canceled = client.cancel(ticket.id)
    got = next(client.replies("svc", timeout=5))
    assert got.raw == canceled.raw


def test_cancel_of_a_batched_request_is_refused(client: Client, flow: Flow) -> None:
    """A request claimed into a batch cannot be withdrawn, and CancelError says so."""
    ticket = client.submit(params())
    flow.cut()
    with pytest.raises(CancelError, match="cannot be withdrawn"):
        client.cancel(ticket.id)
    assert client.get(ticket.id).state == "batched"


def test_cancel_twice_is_refused(client: Client) -> None:
    """The second cancel raises CancelError: the request has already ended."""
    ticket = client.submit(params())
    client.cancel(ticket.id)
    with pytest.raises(CancelError, match="already ended"):
        client.cancel(ticket.id)


def test_cancel_of_an_ended_request_is_refused(client: Client, flow: Flow) -> None:
    """A succeeded request cannot be canceled and keeps its result."""
    ticket = client.submit(params())
    flow.end(ticket.id)
    with pytest.raises(CancelError, match="succeeded"):
        client.cancel(ticket.id)
    assert client.wait(ticket.id, timeout=0).status == "succeeded"


def test_cancel_of_an_unknown_id_raises_not_found(client: Client) -> None:
    """Canceling an id nobody submitted raises RequestNotFoundError."""
    with pytest.raises(RequestNotFoundError):
        client.cancel(UNKNOWN)


@pytest.mark.parametrize("rid", MALFORMED)
def test_cancel_of_a_malformed_id_raises_not_found(client: Client, rid: str) -> None:
    """Canceling an id that is not batchd's raises RequestNotFoundError."""
    with pytest.raises(RequestNotFoundError):
        client.cancel(rid)


# -- the envelope ---------------------------------------------------------------------------

#: A result with floats and text that any re-encoding would change.
RESULT = (
    '{"type":"succeeded","message":{"id":"msg_é","content":[{"type":"text",'
    '"text":"h\\u00e9llo 😀 \\"q\\" \\n"}],"usage":{"input_tokens":3,"output_tokens":1},'
    '"x":{"f":1.10,"g":1e-7,"h":0.30000000000000004,"i":-0.0,"j":12345678901234567890}}}'
).encode()


def test_envelope_has_exactly_the_documented_fields(client: Client, flow: Flow) -> None:
    """The envelope's keys are the ten documented ones, in order."""
    ticket = client.submit(params())
    flow.end(ticket.id)
    raw = client.wait(ticket.id, timeout=0).raw
    assert list(orjson.loads(raw)) == ENVELOPE_KEYS


def test_envelope_carries_the_request_fields(client: Client, flow: Flow) -> None:
    """id, key, account, status, batch id, attempts and metadata are those of the request."""
    ticket = client.submit(params(), key="ключ", metadata={"trace": "t-1", "n": [1, 2]})
    flow.end(ticket.id)
    env = orjson.loads(client.wait(ticket.id, timeout=0).raw)
    assert {
        k: env[k] for k in ENVELOPE_KEYS if k not in ("result", "submitted_at", "ended_at")
    } == {
        "id": ticket.id,
        "key": "ключ",
        "account": "default",
        "status": "succeeded",
        "batch_id": BATCH_ID,
        "attempts": 1,
        "metadata": {"trace": "t-1", "n": [1, 2]},
    }


def test_envelope_without_key_or_metadata_has_nulls(client: Client, flow: Flow) -> None:
    """A request submitted with neither has `key` and `metadata` null."""
    ticket = client.submit(params())
    flow.end(ticket.id)
    env = orjson.loads(client.wait(ticket.id, timeout=0).raw)
    assert env["key"] is None and env["metadata"] is None


def test_anthropic_result_is_passed_through_byte_identical(client: Client, flow: Flow) -> None:
    """The result object is inserted verbatim: floats and unicode keep their exact bytes."""
    ticket = client.submit(params())
    flow.end(ticket.id, result=RESULT)
    result = client.wait(ticket.id, timeout=0)
    assert b'"result":' + RESULT + b',"batch_id"' in result.raw
    assert result.result == orjson.loads(RESULT)
    assert result.message is not None
    assert result.message["content"][0]["text"] == 'héllo 😀 "q" \n'


def test_envelope_times_are_the_records_times(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """submitted_at and ended_at are the record's millisecond times, in UTC: the submit time
    it was stored with, and the end its expiry (`retention` later) was set from."""
    ticket = client.submit(params())
    rk = Keys().request(ACCOUNT, token_of(ticket.id))
    ts = redis_client.hget(rk, "ts")
    flow.end(ticket.id)
    result = client.wait(ticket.id, timeout=0)
    assert redis_client.get(rk) == result.raw  # an ended request's record is its envelope
    te = int(redis_client.execute_command("PEXPIRETIME", rk)) - int(
        client.settings.retention * 1000
    )
    assert result.submitted_at == datetime.fromtimestamp(int(text(ts)) / 1000, tz=UTC)
    assert result.ended_at == datetime.fromtimestamp(te / 1000, tz=UTC)
    assert result.submitted_at <= result.ended_at


@pytest.mark.parametrize(
    "when",
    [
        "2000-02-29T23:59:59.999",
        "2024-12-31T23:59:59.000",
        "2100-03-01T00:00:00.001",
        "1999-12-31T00:00:00.500",
    ],
)
def test_envelope_times_are_exact_on_calendar_edges(
    client: Client, flow: Flow, redis_client: redis.Redis, when: str
) -> None:
    """Leap days, year ends and century rules come out as Python's own calendar says."""
    ticket = client.submit(params())
    moment = datetime.fromisoformat(when).replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    redis_client.hset(Keys().request(ACCOUNT, token_of(ticket.id)), "ts", ms)
    flow.end(ticket.id)
    raw = client.wait(ticket.id, timeout=0).raw
    assert orjson.loads(raw)["submitted_at"] == when + "Z"


def test_webhook_outbox_gets_the_same_envelope(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """A request with a callback URL ends with a delivery queued whose body is the envelope."""
    ticket = client.submit(params(), callback_url="https://hooks.example.com/in")
    flow.end(ticket.id)
    token = token_of(ticket.id)
    delivery = redis_client.hgetall(Keys().delivery(ACCOUNT, token))
    assert delivery[b"body"] == client.wait(ticket.id, timeout=0).raw
    assert delivery[b"url"] == b"https://hooks.example.com/in"
    assert delivery[b"wid"] == f"msg_{token}".encode()
    assert redis_client.zscore(Keys().deliveries_due(ACCOUNT), token) is not None


def test_same_envelope_on_every_path(client: Client, flow: Flow) -> None:
    """wait, get and the reply queue hand out the very same bytes."""
    ticket = client.submit(params(), reply_to="svc", key="k", metadata={"a": 1.5})
    flow.end(ticket.id, result=RESULT)
    waited = client.wait(ticket.id, timeout=0)
    state = client.get(ticket.id)
    replied = next(client.replies("svc", timeout=5))
    assert state.result is not None
    assert waited.raw == state.result.raw == replied.raw
    assert waited == state.result == replied


@pytest.mark.parametrize(
    ("cls", "result", "status"),
    [
        ("err", errored("invalid_request_error"), "errored"),
        ("expired", b'{"type":"expired"}', "expired"),
        ("canceled", b'{"type":"canceled"}', "canceled"),
    ],
)
def test_final_classes_end_the_request(
    client: Client, flow: Flow, cls: str, result: bytes, status: str
) -> None:
    """err, expired and canceled lines end the request with that status and the result as is."""
    ticket = client.submit(params())
    flow.end(ticket.id, cls=cls, result=result)
    got = client.wait(ticket.id, timeout=0)
    assert got.status == status
    assert got.result == orjson.loads(result)


# -- retries and the dead letter ------------------------------------------------------------


def test_retry_puts_the_request_back_at_the_tail(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """A retryable line sends the request back to pending, behind newer ones, attempts kept."""
    ticket = client.submit(params())
    asm = flow.cut()
    newer = client.submit(params("newer"))
    flow.record(asm)
    done, requeued, ignored = flow.fanout(
        asm, [(token_of(ticket.id), "retry", errored("overloaded_error"))]
    )
    assert (done, requeued, ignored) == (0, 1, 0)
    state = client.get(ticket.id)
    assert (state.state, state.attempts, state.result) == ("pending", 1, None)
    entries = redis_client.lrange(Keys().pending(ACCOUNT, 0), 0, -1)
    assert [text(e).split(" ")[0] for e in entries] == [token_of(newer.id), token_of(ticket.id)]
    rk = Keys().request(ACCOUNT, token_of(ticket.id))
    assert orjson.loads(text(redis_client.hget(rk, "le"))) == orjson.loads(
        errored("overloaded_error")
    )


def test_retried_request_counts_in_its_lane_again(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """After a cut and a retry the lane counts the request and its bytes once more."""
    ticket = client.submit(params())
    stats = lane_stats(redis_client)
    asm = flow.cut()
    assert lane_stats(redis_client) == (0, 0)
    flow.fanout(asm, [(token_of(ticket.id), "retry", errored("api_error"))])
    assert lane_stats(redis_client) == stats


def test_retries_end_dead_past_max_attempts(
    make_client: Callable[..., Client],
    make_runtime: Callable[..., Runtime],
    make_settings: Callable[..., Settings],
    redis_client: redis.Redis,
) -> None:
    """At max_attempts a retryable line ends the request `dead` with its last error."""
    s = make_settings(retry={"max_attempts": 2})
    client, flow = make_client(s), Flow(make_runtime(s))
    ticket = client.submit(params())
    token = token_of(ticket.id)
    asm = flow.cut()
    assert flow.fanout(asm, [(token, "retry", errored("api_error", "first"))]) == [0, 1, 0]
    asm = flow.cut()
    last = errored("overloaded_error", "second")
    assert flow.fanout(asm, [(token, "retry", last)]) == [1, 0, 0]
    result = client.wait(ticket.id, timeout=0)
    assert (result.status, result.attempts) == ("dead", 2)
    assert result.result == orjson.loads(last)
    assert result.error == {"type": "overloaded_error", "message": "second"}
    assert redis_client.zscore(Keys().dead(ACCOUNT), ticket.id) is not None
    assert lane_stats(redis_client) == (0, 0)


def test_missing_line_requeues_the_request(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """A request with no line in its batch's results goes back to pending."""
    a = client.submit(params("a"))
    b = client.submit(params("b"))
    asm = flow.cut()
    flow.fanout(asm, [(token_of(a.id), "ok", succeeded())])
    assert flow.missing(asm, flow.tokens(asm)) == [0, 1]
    assert client.get(a.id).state == "succeeded"
    state = client.get(b.id)
    assert (state.state, state.attempts) == ("pending", 1)
    assert lane_stats(redis_client)[0] == 1


def test_missing_applied_twice_requeues_once(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """Sweeping the same assembly twice puts its unanswered request back only once."""
    ticket = client.submit(params())
    asm = flow.cut()
    assert flow.missing(asm, flow.tokens(asm)) == [0, 1]
    assert flow.missing(asm, flow.tokens(asm)) == [0, 0]
    assert lane_stats(redis_client)[0] == 1
    assert redis_client.llen(Keys().pending(ACCOUNT, 0)) == 1
    assert client.get(ticket.id).attempts == 1


def test_retried_request_can_be_canceled(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """Back in its lane after a retry, a request can be canceled again, attempts kept."""
    ticket = client.submit(params())
    asm = flow.cut()
    flow.fanout(asm, [(token_of(ticket.id), "retry", errored("api_error"))])
    result = client.cancel(ticket.id)
    assert (result.status, result.attempts) == ("canceled", 1)
    assert lane_stats(redis_client) == (0, 0)


def test_missing_past_max_attempts_ends_dead(
    make_client: Callable[..., Client],
    make_runtime: Callable[..., Runtime],
    make_settings: Callable[..., Settings],
) -> None:
    """A request missing from its results at the last attempt ends `dead`."""
    s = make_settings(retry={"max_attempts": 1})
    client, flow = make_client(s), Flow(make_runtime(s))
    ticket = client.submit(params())
    asm = flow.cut()
    assert flow.missing(asm, flow.tokens(asm)) == [1, 0]
    result = client.wait(ticket.id, timeout=0)
    assert result.status == "dead"
    assert result.error is not None and result.error["type"] == "missing_result"


def test_line_for_a_request_not_in_the_assembly_is_ignored(client: Client, flow: Flow) -> None:
    """A line naming a request of another assembly (or none) changes nothing."""
    ticket = client.submit(params())
    asm = flow.cut()
    other = client.submit(params("other"))
    out = flow.fanout(
        asm,
        [
            (token_of(other.id), "ok", succeeded()),
            ("01ARZ3NDEKTSV4RRFFQ69G5FAV", "ok", succeeded()),
        ],
    )
    assert out == [0, 0, 2]
    assert client.get(other.id).state == "pending"
    assert client.get(ticket.id).state == "batched"


# -- replies --------------------------------------------------------------------------------


def test_replies_come_oldest_first(client: Client, flow: Flow) -> None:
    """Results reach the reply queue in the order they ended and are read in that order."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(3)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5)
    got = [next(replies).id for _ in ids]
    stop(replies)
    assert got == ids


def test_replies_end_after_the_timeout_with_nothing_new(client: Client, flow: Flow) -> None:
    """Iteration stops once the queue stays empty for `timeout` seconds."""
    ticket = client.submit(params(), reply_to="svc")
    flow.end(ticket.id)
    assert [r.id for r in client.replies("svc", timeout=0.2)] == [ticket.id]


def test_unacknowledged_reply_is_delivered_again(client: Client, flow: Flow) -> None:
    """A consumer that stops mid-item gets that item again on its next `replies` call."""
    first = client.submit(params("1"), reply_to="svc")
    second = client.submit(params("2"), reply_to="svc")
    flow.end(first.id, second.id)
    for result in client.replies("svc", timeout=5, consumer="worker-1"):
        assert result.id == first.id
        break  # the consumer dies while handling it
    again = client.replies("svc", timeout=5, consumer="worker-1")
    assert [next(again).id, next(again).id] == [first.id, second.id]
    stop(again)


def test_unacknowledged_reply_stays_with_its_consumer(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """While unacknowledged, the item sits in that consumer's in-flight list, not the queue."""
    ticket = client.submit(params(), reply_to="svc")
    flow.end(ticket.id)
    replies = client.replies("svc", timeout=5, consumer="c1")
    got = next(replies)
    assert redis_client.llen(Keys().reply_queue("svc")) == 0
    assert redis_client.lrange(Keys().reply_inflight("svc", "c1"), 0, -1) == [got.raw]
    stop(replies)


def test_reading_the_next_reply_acknowledges_the_previous(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """Asking for the next item removes the previous one from the in-flight list."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(2)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5)
    next(replies)
    second = next(replies)
    assert redis_client.lrange(Keys().reply_inflight("svc", "default"), 0, -1) == [second.raw]
    stop(replies)


def test_ack_removes_the_item(client: Client, flow: Flow, redis_client: redis.Redis) -> None:
    """An acknowledged item is not delivered again after the consumer stops."""
    first = client.submit(params("1"), reply_to="svc")
    second = client.submit(params("2"), reply_to="svc")
    flow.end(first.id, second.id)
    for result in client.replies("svc", timeout=5):
        client.ack("svc", result)
        break
    assert redis_client.llen(Keys().reply_inflight("svc", "default")) == 0
    assert [r.id for r in client.replies("svc", timeout=0.2)] == [second.id]


def test_fanout_applied_twice_replies_once(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """Repeating the same fan-out lines is ignored: the reply queue holds the result once, and
    a waiter is woken once."""
    ticket = client.submit(params(), reply_to="svc")
    redis_client.set(Keys().waiter(ACCOUNT, token_of(ticket.id)), 1)
    asm = flow.cut()
    flow.record(asm)
    line = (token_of(ticket.id), "ok", succeeded())
    assert flow.fanout(asm, [line]) == [1, 0, 0]
    assert flow.fanout(asm, [line]) == [0, 0, 1]
    assert redis_client.llen(Keys().reply_queue("svc")) == 1
    assert redis_client.llen(Keys().done(ACCOUNT, token_of(ticket.id))) == 1


def test_consumers_do_not_take_each_others_items(client: Client, flow: Flow) -> None:
    """An item in flight with one consumer is not handed to a consumer of another name."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(2)]
    flow.end(*ids)
    a = client.replies("svc", timeout=5, consumer="a")
    assert next(a).id == ids[0]
    assert [r.id for r in client.replies("svc", timeout=0.2, consumer="b")] == [ids[1]]
    stop(a)
    assert [r.id for r in client.replies("svc", timeout=0.2, consumer="a")] == [ids[0]]


def test_redelivered_items_keep_oldest_first_order(client: Client, flow: Flow) -> None:
    """Two unacknowledged items of one consumer name come back oldest first."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(4)]
    flow.end(*ids)
    # Two readers sharing the consumer name (two replicas left on the default) each hold one.
    g1 = client.replies("svc", timeout=5)
    g2 = client.replies("svc", timeout=5)
    assert next(g1).id == ids[0]
    assert next(g2).id == ids[0]  # starting g2 handed ids[0] back, and g2 took it
    assert next(g1).id == ids[1]
    assert next(g2).id == ids[2]
    # Both stop without acknowledging: ids[1] and ids[2] are in flight.
    stop(g1)
    stop(g2)
    assert [r.id for r in client.replies("svc", timeout=0.2)] == ids[1:]


def test_replies_with_zero_timeout_do_not_block(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """timeout=0 drains what is there and ends, like wait(timeout=0)."""
    ticket = client.submit(params(), reply_to="svc")
    flow.end(ticket.id)
    got: list[str] = []

    def drain() -> None:
        try:
            got.extend(r.id for r in client.replies("svc", timeout=0))
        except redis.RedisError:
            pass  # unblocked below

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    thread.join(2)
    hung = thread.is_alive()
    if hung:
        for c in redis_client.client_list():
            if c["cmd"] == "blmove":
                redis_client.client_unblock(int(c["id"]), error=True)
        thread.join(5)
    assert not hung
    assert got == [ticket.id]


# -- replies with prefetch -----------------------------------------------------------------


def test_prefetch_takes_a_group_into_the_in_flight_list(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """With prefetch=3, the first read moves the three oldest replies in flight at once."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(5)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5, prefetch=3)
    assert next(replies).id == ids[0]
    assert redis_client.llen(Keys().reply_queue("svc")) == 2
    held = redis_client.lrange(Keys().reply_inflight("svc", "default"), 0, -1)
    assert [Result.from_json(raw).id for raw in held] == ids[2::-1]  # newest at the head
    stop(replies)


def test_prefetch_acknowledges_a_group_when_the_next_is_taken(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """Reading past a group acknowledges all of it; only the new group is in flight."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(5)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5, prefetch=2)
    got = [next(replies).id for _ in range(3)]
    assert got == ids[:3]
    held = redis_client.lrange(Keys().reply_inflight("svc", "default"), 0, -1)
    assert {Result.from_json(raw).id for raw in held} == set(ids[2:4])
    assert [next(replies).id for _ in range(2)] == ids[3:]
    stop(replies)
    assert redis_client.llen(Keys().reply_queue("svc")) == 0


def test_prefetch_consumer_that_stops_gets_its_group_again_in_order(
    client: Client, flow: Flow
) -> None:
    """A consumer stopping mid-group loses nothing: the group comes back, oldest first, then
    the rest of the queue."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(6)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5, consumer="w", prefetch=4)
    assert [next(replies).id for _ in range(2)] == ids[:2]
    stop(replies)  # two of the four taken were handled, none acknowledged
    assert [r.id for r in client.replies("svc", timeout=0.2, consumer="w")] == ids


def test_prefetch_explicit_ack_is_kept(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """`ack` inside a group removes that item at once; the rest of the group comes back."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(3)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5, prefetch=3)
    first = next(replies)
    client.ack("svc", first)
    stop(replies)
    assert redis_client.llen(Keys().reply_inflight("svc", "default")) == 2
    assert [r.id for r in client.replies("svc", timeout=0.2)] == ids[1:]


@pytest.mark.parametrize("bad", [0, -1, 1001, 2.5, True])
def test_prefetch_out_of_range_is_refused(client: Client, bad: object) -> None:
    with pytest.raises(ValueError, match="prefetch must be an integer from 1 to 1000"):
        next(client.replies("svc", timeout=0, prefetch=bad))  # type: ignore[arg-type]


# -- the record of an ended request ---------------------------------------------------------


def test_ended_record_is_its_envelope(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """Once ended, the record is the envelope alone (one string, no hash fields left), kept for
    `retention`; `get`, `wait` and `cancel` read it as they read a live record."""
    ticket = client.submit(params(), key="ended-record")
    rk = Keys().request(ACCOUNT, token_of(ticket.id))
    asm = flow.end(ticket.id)
    assert redis_client.type(rk) == b"string"
    envelope = orjson.loads(redis_client.get(rk))
    assert envelope["id"] == ticket.id and envelope["status"] == "succeeded"
    left_ms = redis_client.pttl(rk)
    assert 0 < client.settings.retention * 1000 - left_ms < 60_000
    state = client.get(ticket.id)
    assert (state.state, state.attempts, state.batch_id) == ("succeeded", 1, BATCH_ID)
    assert state.result is not None and state.result.raw == redis_client.get(rk)
    with pytest.raises(CancelError, match=r"already ended \(succeeded\)"):
        client.cancel(ticket.id)
    # a repeated line for it changes nothing
    assert flow.fanout(asm, [(token_of(ticket.id), "ok", succeeded("again"))]) == [0, 0, 1]
    assert client.wait(ticket.id, timeout=0).raw == state.result.raw


def test_stale_lane_entry_of_an_ended_request_is_dropped(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """A lane entry left for a request that has ended is dropped at the next cut, neither sent
    again nor set aside as foreign data."""
    ended = client.submit(params())
    flow.end(ended.id)
    keys = Keys()
    redis_client.rpush(keys.pending(ACCOUNT, 0), f"{token_of(ended.id)} 100 1")
    redis_client.hincrby(keys.lane_stats(ACCOUNT, 0), "count", 1)
    redis_client.hincrby(keys.lane_stats(ACCOUNT, 0), "bytes", 100)
    fresh = client.submit(params())
    asm = flow.cut()
    assert flow.tokens(asm) == [token_of(fresh.id)]
    assert redis_client.llen(keys.quarantine(ACCOUNT)) == 0
    assert client.get(ended.id).state == "succeeded"
