"""How a request ends and how its producer hears of it: get, tickets, wait and wait_many, cancel,
the envelope, retries and dead letters, replies."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import anthropic
import orjson
import pytest
import redis

from batchd import (
    BatchdError,
    CancelError,
    Client,
    RequestNotFoundError,
    Result,
    Settings,
    Ticket,
    WaitTimeoutError,
    aggregate,
)
from batchd.client import default_consumer
from batchd.errors import AckError
from batchd.runtime import Runtime
from batchd.store import Keys, Store, connect
from batchd.store import requests as req_store
from batchd.store import webhooks as wh_store
from batchd.store.records import Field
from tests.pipeline import (
    ACCOUNT,
    BATCH_ID,
    Crash,
    Flow,
    errored,
    lane,
    lane_stats,
    params,
    pending,
    stop,
    succeeded,
    token_of,
    wait_for,
)
from tests.support.introspect import blocked_clients, clients_named

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
    "mode",
]
UNKNOWN = "default.01ARZ3NDEKTSV4RRFFQ69G5FAV"
MALFORMED = [
    "nope",
    "default.",
    ".01ARZ3NDEKTSV4RRFFQ69G5FAV",
    "default.short",
    "default." + "U" * 26,
]


def blocked(r: Any) -> int:
    return blocked_clients(r)


def in_flight(r: redis.Redis, keys: Keys, name: str, consumer: str | None = None) -> list[str]:
    """Ids of the replies a consumer (by default this process's) holds unacknowledged."""
    raw = r.lrange(keys.reply_inflight(name, consumer or default_consumer()), 0, -1)
    return [Result.from_json(e).id for e in raw]


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


# -- ticket handles -------------------------------------------------------------------------


def test_ticket_is_a_handle_on_its_request(client: Client, flow: Flow) -> None:
    """`ticket.get()` and `ticket.wait()` are the client's get and wait of that request."""
    ticket = client.submit(params())
    assert ticket.get() == client.get(ticket.id)
    assert ticket.get().state == "pending"
    flow.end(ticket.id)
    assert ticket.wait(timeout=5).raw == client.wait(ticket.id, timeout=0).raw
    assert ticket.get().state == "succeeded"


def test_ticket_cancel_cancels_its_request(client: Client) -> None:
    """`ticket.cancel()` ends the pending request `canceled`, as `client.cancel` does."""
    ticket = client.submit(params())
    assert ticket.cancel().status == "canceled"
    assert client.get(ticket.id).state == "canceled"


def test_duplicate_ticket_is_a_handle_on_the_first_request(client: Client, flow: Flow) -> None:
    """The ticket of a repeated key waits for the first request's result."""
    first = client.submit(params(), key="again")
    again = client.submit(params(), key="again")
    flow.end(first.id)
    assert again.duplicate
    assert again.wait(timeout=5).id == first.id


def test_every_call_takes_a_ticket_or_an_id(client: Client, flow: Flow) -> None:
    """get, wait, wait_many, as_completed and cancel take a ticket or its id alike."""
    done, live = client.submit(params("done")), client.submit(params("live"), priority=1)
    assert client.get(done) == client.get(done.id)
    flow.end(done.id)
    assert client.wait(done, timeout=0) == client.wait(done.id, timeout=0)
    assert client.wait_many([done], timeout=0) == client.wait_many([done.id], timeout=0)
    assert list(client.as_completed([done], timeout=0)) == [client.wait(done.id, timeout=0)]
    assert client.cancel(live).status == "canceled"
    with pytest.raises(CancelError, match="already ended"):
        client.cancel(live.id)


def test_unbound_ticket_says_what_to_call_instead() -> None:
    """A Ticket made by hand has no client: its handle methods say to call the client."""
    with pytest.raises(RuntimeError, match=r"client\.wait"):
        Ticket(id=UNKNOWN).wait()


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
    connection = connect(redis_url, socket_timeout=0.3)
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


# -- waiting for many -----------------------------------------------------------------------


def test_wait_many_returns_every_result_in_the_order_given(client: Client, flow: Flow) -> None:
    """Results come back in the order the requests were named, not the order they ended."""
    tickets = [client.submit(params(str(i))) for i in range(3)]
    flow.end(*[t.id for t in reversed(tickets)])
    got = client.wait_many([tickets[1], tickets[2].id, tickets[0]], timeout=5)
    assert [r.id for r in got] == [tickets[1].id, tickets[2].id, tickets[0].id]


def test_wait_many_blocks_on_one_connection(
    settings: Settings, flow: Flow, redis_url: str, redis_client: redis.Redis
) -> None:
    """Waiting for 200 requests that end in four rounds holds one connection, not one each."""
    connection = connect(redis_url, client_name="wait-many")
    try:
        client = Client(settings=settings, connection=connection)
        tickets = [client.submit(params(str(i))) for i in range(200)]
        asm = flow.cut()
        flow.record(asm)
        got: list[list[Result]] = []
        waiter = threading.Thread(target=lambda: got.append(client.wait_many(tickets, 30)))
        waiter.start()
        for part in range(4):
            wait_for(lambda: blocked(redis_client) == 1, 20, "the waiter to block")
            lines = [(token_of(t.id), "ok", succeeded()) for t in tickets[part * 50 :][:50]]
            assert flow.fanout(asm, lines) == [50, 0, 0]
        waiter.join(30)
        named = clients_named(redis_client, "wait-many")
    finally:
        connection.close()
    assert [[r.id for r in results] for results in got] == [[t.id for t in tickets]]
    assert max(named) == 1  # one connection (per node of a cluster), not one per request


def test_as_completed_yields_each_result_as_it_ends(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """Results come as their requests end: one ended before the call first, the other once the
    fan-out ends it while the caller blocks."""
    first, second = client.submit(params("1")), client.submit(params("2"))
    asm = flow.cut()
    flow.record(asm)
    flow.fanout(asm, [(token_of(second.id), "ok", succeeded())])

    def end_first() -> None:
        wait_for(lambda: blocked(redis_client) == 1, 20, "the caller to block")
        flow.fanout(asm, [(token_of(first.id), "ok", succeeded())])

    results = client.as_completed([first, second], timeout=20)
    assert next(results).id == second.id
    ender = threading.Thread(target=end_first)
    ender.start()
    assert next(results).id == first.id
    ender.join(20)
    assert list(results) == []


def test_as_completed_times_out_naming_what_is_left(client: Client, flow: Flow) -> None:
    """At the deadline, after yielding what ended, WaitTimeoutError says how many are left."""
    done, left = client.submit(params("done")), client.submit(params("left"), priority=1)
    flow.end(done.id)
    seen: list[str] = []
    with pytest.raises(WaitTimeoutError, match="1 requests still unfinished"):
        for result in client.as_completed([left, done], timeout=0.3):
            seen.append(result.id)
    assert seen == [done.id]


def test_wait_many_of_an_unknown_id_raises_not_found(client: Client) -> None:
    """One id nobody submitted makes wait_many raise RequestNotFoundError at once."""
    ticket = client.submit(params())
    with pytest.raises(RequestNotFoundError):
        client.wait_many([ticket, UNKNOWN], timeout=5)


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


def test_canceled_request_is_never_batched(client: Client, flow: Flow, store: Store) -> None:
    """The next cut of its lane drops a canceled request's entry and its bytes: the batch holds
    the others, and the lane's count and bytes come back to zero."""
    keep = client.submit(params("stay"), priority=2)
    ticket = client.submit(params("go, with more text"), priority=2)
    client.cancel(ticket.id)
    asm = flow.cut(priority=lane(2))
    assert flow.tokens(asm) == [token_of(keep.id)]
    assert flow.assembly(asm).content_length == len(flow.body(asm))
    assert lane_stats(store, lane(2)) == (0, 0)
    assert client.get(ticket.id).state == "canceled"


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
    """The envelope's keys are the eleven documented ones, in order (a request without a
    deadline has no deadline fields)."""
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
        "mode": "batch",
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
    assert result.message_dict is not None
    assert result.message_dict["content"][0]["text"] == 'héllo 😀 "q" \n'


def test_envelope_times_are_the_records_times(
    client: Client, flow: Flow, store: Store, redis_client: redis.Redis, keys: Keys
) -> None:
    """submitted_at and ended_at are the record's millisecond times, in UTC: the submit time
    it was stored with, and the end its expiry (`retention` later) was set from."""
    ticket = client.submit(params())
    rk = keys.request(ACCOUNT, token_of(ticket.id))
    live = store.read(req_store.read(keys, ACCOUNT, token_of(ticket.id)))
    assert live is not None and live.submitted_ms is not None
    flow.end(ticket.id)
    result = client.wait(ticket.id, timeout=0)
    assert redis_client.get(rk) == result.raw  # an ended request's record is its envelope
    te = redis_client.pexpiretime(rk) - int(client.settings.retention * 1000)
    assert result.submitted_at == datetime.fromtimestamp(live.submitted_ms / 1000, tz=UTC)
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
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys, when: str
) -> None:
    """Leap days, year ends and century rules come out as Python's own calendar says."""
    ticket = client.submit(params())
    moment = datetime.fromisoformat(when).replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    redis_client.hset(keys.request(ACCOUNT, token_of(ticket.id)), Field.SUBMITTED, ms)
    flow.end(ticket.id)
    raw = client.wait(ticket.id, timeout=0).raw
    assert orjson.loads(raw)["submitted_at"] == when + "Z"


def test_webhook_outbox_gets_the_same_envelope(
    client: Client, flow: Flow, store: Store, redis_client: redis.Redis, keys: Keys
) -> None:
    """A request with a callback URL ends with a delivery queued whose body is the envelope."""
    ticket = client.submit(params(), callback_url="https://hooks.example.com/in")
    flow.end(ticket.id)
    token = token_of(ticket.id)
    d = store.read(wh_store.read_delivery(keys, ACCOUNT, token))
    assert d is not None
    assert (d.url, d.webhook_id, d.request_id, d.state, d.attempts) == (
        "https://hooks.example.com/in",
        f"msg_{token}",
        ticket.id,
        "pending",
        0,
    )
    lease = wh_store.Lease(ACCOUNT, token, d.url, d.webhook_id, d.request_id, 0, "test")
    [delivery] = store.read(wh_store.bodies(keys, [lease]))
    assert delivery.body == client.wait(ticket.id, timeout=0).raw
    assert redis_client.zscore(keys.deliveries_due(ACCOUNT), token) is not None


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


def test_result_gives_its_text_and_typed_message(client: Client, flow: Flow) -> None:
    """A succeeded Result's `text` joins its text blocks; `message` is the SDK's typed Message
    (the dict as sent stays in `message_dict`)."""
    ticket = client.submit(params())
    flow.end(ticket.id, result=succeeded("Hello there"))
    result = client.wait(ticket, timeout=0)
    assert result.text == "Hello there"
    assert isinstance(result.message, anthropic.types.Message)
    assert [b.type for b in result.message.content] == ["text"]
    assert result.message.usage.output_tokens == 1
    assert result.message_dict == orjson.loads(succeeded("Hello there"))["message"]


def test_failed_result_has_no_text_or_message(client: Client, flow: Flow) -> None:
    """An errored Result has empty `text`, no `message`, and its `error`."""
    ticket = client.submit(params())
    flow.end(ticket.id, cls="err", result=errored("invalid_request_error", "bad"))
    result = client.wait(ticket, timeout=0)
    assert (result.text, result.message, result.message_dict) == ("", None, None)
    assert result.error == {"type": "invalid_request_error", "message": "bad"}


# -- retries and the dead letter ------------------------------------------------------------


def test_retry_puts_the_request_back_at_the_tail(
    client: Client, flow: Flow, store: Store, keys: Keys
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
    assert pending(store) == [token_of(newer.id), token_of(ticket.id)]
    live = store.read(req_store.read(keys, ACCOUNT, token_of(ticket.id)))
    assert live is not None
    assert live.last_error == orjson.loads(errored("overloaded_error"))


def test_retried_request_counts_in_its_lane_again(client: Client, flow: Flow, store: Store) -> None:
    """After a cut and a retry the lane counts the request and its bytes once more."""
    ticket = client.submit(params())
    stats = lane_stats(store)
    asm = flow.cut()
    assert lane_stats(store) == (0, 0)
    flow.fanout(asm, [(token_of(ticket.id), "retry", errored("api_error"))])
    assert lane_stats(store) == stats


def test_retries_end_dead_past_max_attempts(
    make_client: Callable[..., Client],
    make_runtime: Callable[..., Runtime],
    make_settings: Callable[..., Settings],
    store: Store,
    redis_client: redis.Redis,
    keys: Keys,
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
    assert redis_client.zscore(keys.dead(ACCOUNT), ticket.id) is not None
    assert lane_stats(store) == (0, 0)


def test_missing_line_requeues_the_request(client: Client, flow: Flow, store: Store) -> None:
    """A request with no line in its batch's results goes back to pending."""
    a = client.submit(params("a"))
    b = client.submit(params("b"))
    asm = flow.cut()
    flow.fanout(asm, [(token_of(a.id), "ok", succeeded())])
    assert flow.missing(asm, flow.tokens(asm)) == [0, 1]
    assert client.get(a.id).state == "succeeded"
    state = client.get(b.id)
    assert (state.state, state.attempts) == ("pending", 1)
    assert lane_stats(store)[0] == 1


def test_missing_applied_twice_requeues_once(client: Client, flow: Flow, store: Store) -> None:
    """Sweeping the same assembly twice puts its unanswered request back only once."""
    ticket = client.submit(params())
    asm = flow.cut()
    assert flow.missing(asm, flow.tokens(asm)) == [0, 1]
    assert flow.missing(asm, flow.tokens(asm)) == [0, 0]
    assert lane_stats(store)[0] == 1
    assert pending(store) == [token_of(ticket.id)]
    assert client.get(ticket.id).attempts == 1


def test_retried_request_can_be_canceled(client: Client, flow: Flow, store: Store) -> None:
    """Back in its lane after a retry, a request can be canceled again, attempts kept; the next
    cut sends nothing and leaves the lane empty."""
    ticket = client.submit(params())
    asm = flow.cut()
    flow.fanout(asm, [(token_of(ticket.id), "retry", errored("api_error"))])
    result = client.cancel(ticket.id)
    assert (result.status, result.attempts) == ("canceled", 1)
    assert aggregate.cut(flow.rt, ACCOUNT, lane(0), "test") is None
    assert lane_stats(store) == (0, 0)


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


# -- dead letters ---------------------------------------------------------------------------


@pytest.fixture
def one_try(
    make_client: Callable[..., Client],
    make_runtime: Callable[..., Runtime],
    make_settings: Callable[..., Settings],
) -> tuple[Client, Flow]:
    """A client and a flow whose requests end `dead` at their first retryable failure."""
    s = make_settings(retry={"max_attempts": 1})
    return make_client(s), Flow(make_runtime(s))


def kill(flow: Flow, *rids: str) -> None:
    """End these requests `dead`: a retryable failure at their last attempt."""
    flow.end(*rids, cls="retry", result=errored("overloaded_error", "busy"))


def test_dead_lists_the_dead_letters_most_recent_first(one_try: tuple[Client, Flow]) -> None:
    """`dead()` lists the requests that ended dead, most recent first, each with its lane,
    attempts, result, and whether it can be sent again."""
    client, flow = one_try
    first = client.submit(params("1"))
    kill(flow, first.id)
    second = client.submit(params("2"))
    kill(flow, second.id)
    letters = client.dead()
    assert [d.id for d in letters] == [second.id, first.id]
    letter = letters[1]
    assert (letter.lane, letter.attempts, letter.requeueable) == (lane(0), 1, True)
    assert letter.envelope == client.wait(first, timeout=0).raw
    assert client.wait(first, timeout=0).status == "dead"


def test_requeued_dead_request_reaches_a_result_again(one_try: tuple[Client, Flow]) -> None:
    """`requeue_dead` sends a dead request round again from its first attempt: it leaves the
    dead letters, waits in its lane, and ends with a new result."""
    client, flow = one_try
    ticket = client.submit(params())
    kill(flow, ticket.id)
    assert client.requeue_dead([ticket]) == {ticket.id: "requeued"}
    state = client.get(ticket)
    assert (state.state, state.attempts, state.result) == ("pending", 0, None)
    assert client.dead() == []
    flow.end(ticket.id)
    result = client.wait(ticket, timeout=5)
    assert (result.status, result.attempts) == ("succeeded", 1)


def test_requeued_dead_request_replies_again(one_try: tuple[Client, Flow]) -> None:
    """A requeued request's reply queue gets its `dead` result, then its new one."""
    client, flow = one_try
    ticket = client.submit(params(), reply_to="svc")
    kill(flow, ticket.id)
    client.requeue_dead([ticket.id])
    flow.end(ticket.id)
    got = [(r.id, r.status) for r in client.replies("svc", timeout=0.2)]
    assert got == [(ticket.id, "dead"), (ticket.id, "succeeded")]


def test_requeue_of_a_request_that_is_not_dead_says_so(one_try: tuple[Client, Flow]) -> None:
    """A pending or succeeded request is `not dead`, and left as it is."""
    client, flow = one_try
    live = client.submit(params("live"), priority=1)
    done = client.submit(params("done"))
    flow.end(done.id)
    assert client.requeue_dead([live, done.id]) == {live.id: "not dead", done.id: "not dead"}
    assert (client.get(live).state, client.get(done).state) == ("pending", "succeeded")


def test_dead_request_without_its_params_cannot_be_requeued(
    one_try: tuple[Client, Flow], redis_client: redis.Redis, keys: Keys
) -> None:
    """Once its params are gone (past retention), a dead letter says it cannot be sent again,
    and `requeue_dead` answers `params gone`, leaving it dead."""
    client, flow = one_try
    ticket = client.submit(params())
    kill(flow, ticket.id)
    redis_client.delete(keys.params(ACCOUNT, token_of(ticket.id)))  # as their expiry does
    [letter] = client.dead()
    assert not letter.requeueable
    assert client.requeue_dead([ticket]) == {ticket.id: "params gone"}
    assert client.get(ticket).state == "dead"


def test_purge_dead_forgets_the_letter_and_keeps_the_result(
    one_try: tuple[Client, Flow], redis_client: redis.Redis, keys: Keys
) -> None:
    """`purge_dead` drops the dead letter and its params; the `dead` result stays readable,
    and the request can no longer be requeued."""
    client, flow = one_try
    ticket = client.submit(params())
    kill(flow, ticket.id)
    assert client.purge_dead([ticket]) == 1
    assert client.dead() == []
    token = token_of(ticket.id)
    assert redis_client.exists(keys.letter(ACCOUNT, token), keys.params(ACCOUNT, token)) == 0
    assert client.get(ticket).state == "dead"
    assert client.requeue_dead([ticket.id]) == {ticket.id: "not dead"}
    assert client.purge_dead([ticket.id]) == 0


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


def test_breaking_out_of_the_loop_acknowledges_what_was_yielded(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """A `break` leaves nothing in flight: the item handled is not delivered again, the next
    one is."""
    first = client.submit(params("1"), reply_to="svc")
    second = client.submit(params("2"), reply_to="svc")
    flow.end(first.id, second.id)
    for result in client.replies("svc", timeout=5):
        assert result.id == first.id
        break
    assert in_flight(redis_client, keys, "svc") == []
    assert [r.id for r in client.replies("svc", timeout=0.2)] == [second.id]


def test_leaving_a_with_block_acknowledges_what_was_yielded(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """Inside `with client.replies(...)`, leaving the block normally acknowledges the items
    handled."""
    first = client.submit(params("1"), reply_to="svc")
    second = client.submit(params("2"), reply_to="svc")
    flow.end(first.id, second.id)
    with client.replies("svc", timeout=5) as stream:
        assert next(stream).id == first.id
    assert in_flight(redis_client, keys, "svc") == []
    assert [r.id for r in client.replies("svc", timeout=0.2)] == [second.id]


def test_exception_inside_with_leaves_the_item_to_be_delivered_again(
    client: Client, flow: Flow
) -> None:
    """A consumer whose handler fails inside `with client.replies(...)` leaves that item
    unacknowledged: its next `replies` call gets it again, then the rest."""
    first = client.submit(params("1"), reply_to="svc")
    second = client.submit(params("2"), reply_to="svc")
    flow.end(first.id, second.id)
    with pytest.raises(Crash), client.replies("svc", timeout=5, consumer="worker-1") as stream:
        for result in stream:
            assert result.id == first.id
            raise Crash
    again = client.replies("svc", timeout=5, consumer="worker-1")
    assert [next(again).id, next(again).id] == [first.id, second.id]
    stop(again)


def test_unacknowledged_reply_stays_with_its_consumer(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """While unacknowledged, the item sits in that consumer's in-flight list, not the queue."""
    ticket = client.submit(params(), reply_to="svc")
    flow.end(ticket.id)
    replies = client.replies("svc", timeout=5, consumer="c1")
    got = next(replies)
    assert redis_client.llen(keys.reply_queue("svc")) == 0
    assert redis_client.lrange(keys.reply_inflight("svc", "c1"), 0, -1) == [got.raw]
    stop(replies)


def test_reading_the_next_reply_acknowledges_the_previous(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """Asking for the next item removes the previous one from the in-flight list."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(2)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5)
    next(replies)
    second = next(replies)
    assert in_flight(redis_client, keys, "svc") == [second.id]
    stop(replies)


def test_default_consumer_is_unique_per_process(client: Client, flow: Flow, redis_url: str) -> None:
    """Two processes reading one queue under the default consumer name have names of their
    own: the other process neither shares nor takes back what this one holds."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(2)]
    flow.end(*ids)
    mine = client.replies("svc", timeout=5)
    assert next(mine).id == ids[0]
    code = (
        "import json, sys\n"
        "from batchd import Client\n"
        "from batchd.client import default_consumer\n"
        "with Client(sys.argv[1]) as c:\n"
        "    read = [r.id for r in c.replies('svc', timeout=0.5)]\n"
        "print('OUT', json.dumps([default_consumer(), read]))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, redis_url],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("OUT ")]
    name, read = orjson.loads(line.removeprefix("OUT "))
    stop(mine)
    assert name != default_consumer() == default_consumer()
    assert read == [ids[1]]


def test_ack_removes_the_item(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """`ack` removes an item from its reader's in-flight list at once."""
    first = client.submit(params("1"), reply_to="svc")
    second = client.submit(params("2"), reply_to="svc")
    flow.end(first.id, second.id)
    for result in client.replies("svc", timeout=5):
        client.ack(result)
        assert in_flight(redis_client, keys, "svc") == []
        break
    assert [r.id for r in client.replies("svc", timeout=0.2)] == [second.id]


def test_ack_under_a_consumer_holding_nothing_raises(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """`ack` naming a consumer that never read the queue raises AckError naming it; the reply
    stays with the consumer that holds it."""
    ticket = client.submit(params(), reply_to="svc")
    flow.end(ticket.id)
    replies = client.replies("svc", timeout=5, consumer="c1")
    got = next(replies)
    with pytest.raises(AckError, match="c2"):
        client.ack(got, consumer="c2")
    assert in_flight(redis_client, keys, "svc", "c1") == [ticket.id]
    stop(replies)


def test_second_ack_of_a_reply_raises(client: Client, flow: Flow) -> None:
    """Acknowledging a reply twice raises AckError: its consumer no longer holds it."""
    ticket = client.submit(params(), reply_to="svc")
    flow.end(ticket.id)
    replies = client.replies("svc", timeout=5)
    got = next(replies)
    client.ack(got)
    with pytest.raises(AckError, match="holds no unacknowledged reply"):
        client.ack(got)
    stop(replies)


def test_ack_of_a_result_not_read_from_a_queue_raises(client: Client, flow: Flow) -> None:
    """A result from `wait` was never a reply: acknowledging it raises AckError."""
    ticket = client.submit(params(), reply_to="svc")
    flow.end(ticket.id)
    with pytest.raises(AckError, match="not read from a reply queue"):
        client.ack(client.wait(ticket, timeout=0))


def test_fanout_applied_twice_replies_once(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """Repeating the same fan-out lines is ignored: the reply queue holds the result once, and
    a waiter is woken once."""
    ticket = client.submit(params(), reply_to="svc")
    redis_client.set(keys.waiter(ACCOUNT, token_of(ticket.id)), 1)
    asm = flow.cut()
    flow.record(asm)
    line = (token_of(ticket.id), "ok", succeeded())
    assert flow.fanout(asm, [line]) == [1, 0, 0]
    assert flow.fanout(asm, [line]) == [0, 0, 1]
    assert redis_client.llen(keys.reply_queue("svc")) == 1
    assert redis_client.llen(keys.done(ACCOUNT, token_of(ticket.id))) == 1


def test_consumers_do_not_take_each_others_items(client: Client, flow: Flow) -> None:
    """An item in flight with one consumer is not handed to a consumer of another name."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(2)]
    flow.end(*ids)
    a = client.replies("svc", timeout=5, consumer="a")
    assert next(a).id == ids[0]
    assert [r.id for r in client.replies("svc", timeout=0.2, consumer="b")] == [ids[1]]
    stop(a)


def test_redelivered_items_keep_oldest_first_order(client: Client, flow: Flow) -> None:
    """Items two readers of one consumer name hold unacknowledged come back oldest first to
    the next reader of that name."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(4)]
    flow.end(*ids)
    # Two readers sharing the consumer name (two threads left on the default) each hold one.
    g1 = client.replies("svc", timeout=5)
    g2 = client.replies("svc", timeout=5)
    assert next(g1).id == ids[0]
    assert next(g2).id == ids[0]  # starting g2 handed ids[0] back, and g2 took it
    assert next(g1).id == ids[1]
    assert next(g2).id == ids[2]
    # Both stall (a crash) with ids[1] and ids[2] in flight: a new reader takes them back.
    assert [r.id for r in client.replies("svc", timeout=0.2)] == ids[1:]
    stop(g1)
    stop(g2)


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
        except BatchdError:
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
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """With prefetch=3, the first read moves the three oldest replies in flight at once."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(5)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5, prefetch=3)
    assert next(replies).id == ids[0]
    assert redis_client.llen(keys.reply_queue("svc")) == 2
    assert in_flight(redis_client, keys, "svc") == ids[2::-1]  # newest at the head
    stop(replies)


def test_prefetch_acknowledges_a_group_when_the_next_is_taken(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """Reading past a group acknowledges all of it; only the new group is in flight."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(5)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5, prefetch=2)
    got = [next(replies).id for _ in range(3)]
    assert got == ids[:3]
    assert set(in_flight(redis_client, keys, "svc")) == set(ids[2:4])
    assert [next(replies).id for _ in range(2)] == ids[3:]
    stop(replies)
    assert redis_client.llen(keys.reply_queue("svc")) == 0
    assert in_flight(redis_client, keys, "svc") == []


def test_prefetch_consumer_that_stops_gets_the_rest_of_its_group_again(
    client: Client, flow: Flow
) -> None:
    """A consumer stopping mid-group loses nothing: what it was handed is acknowledged, the
    group's other items come back, oldest first, then the rest of the queue."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(6)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5, consumer="w", prefetch=4)
    assert [next(replies).id for _ in range(2)] == ids[:2]
    stop(replies)
    assert [r.id for r in client.replies("svc", timeout=0.2, consumer="w")] == ids[2:]


def test_prefetch_consumer_failing_mid_group_gets_that_item_again(
    client: Client, flow: Flow
) -> None:
    """A handler failing on the second item of a group: the first is acknowledged, the failed
    one and the rest of the group come back in order."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(6)]
    flow.end(*ids)
    with pytest.raises(Crash), client.replies("svc", timeout=5, consumer="w", prefetch=4) as s:
        assert next(s).id == ids[0]
        assert next(s).id == ids[1]
        raise Crash
    assert [r.id for r in client.replies("svc", timeout=0.2, consumer="w")] == ids[1:]


def test_prefetch_explicit_ack_is_kept(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """`ack` inside a group removes that item at once; the group's unread items come back."""
    ids = [client.submit(params(str(i)), reply_to="svc").id for i in range(3)]
    flow.end(*ids)
    replies = client.replies("svc", timeout=5, prefetch=3)
    first = next(replies)
    client.ack(first)
    assert set(in_flight(redis_client, keys, "svc")) == set(ids[1:])
    stop(replies)
    assert [r.id for r in client.replies("svc", timeout=0.2)] == ids[1:]


@pytest.mark.parametrize("bad", [0, -1, 1001, 2.5, True])
def test_prefetch_out_of_range_is_refused(client: Client, bad: object) -> None:
    """prefetch outside 1..1000 (or not an integer) raises ValueError saying so."""
    with pytest.raises(ValueError, match="prefetch must be an integer from 1 to 1000"):
        client.replies("svc", timeout=0, prefetch=bad)  # type: ignore[arg-type]


# -- the record of an ended request ---------------------------------------------------------


def test_ended_record_is_its_envelope(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """Once ended, the record is the envelope alone (one string, no hash fields left), kept for
    `retention`; `get`, `wait` and `cancel` read it as they read a live record."""
    ticket = client.submit(params(), key="ended-record")
    rk = keys.request(ACCOUNT, token_of(ticket.id))
    asm = flow.end(ticket.id)
    assert redis_client.type(rk) == b"string"
    raw = redis_client.get(rk)
    assert isinstance(raw, bytes)
    envelope = orjson.loads(raw)
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
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """A lane entry left for a request that has ended is dropped at the next cut, neither sent
    again nor set aside as foreign data."""
    ended = client.submit(params())
    flow.end(ended.id)
    redis_client.rpush(keys.pending(ACCOUNT, lane(0)), f"{token_of(ended.id)} 100 1")
    redis_client.hincrby(keys.lane_stats(ACCOUNT, lane(0)), "count", 1)
    redis_client.hincrby(keys.lane_stats(ACCOUNT, lane(0)), "bytes", 100)
    fresh = client.submit(params())
    asm = flow.cut()
    assert flow.tokens(asm) == [token_of(fresh.id)]
    assert redis_client.llen(keys.quarantine(ACCOUNT)) == 0
    assert client.get(ended.id).state == "succeeded"
