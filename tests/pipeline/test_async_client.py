"""AsyncClient, the asyncio twin of Client: the same behaviour, awaited."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any, TypeVar, cast

import anthropic
import orjson
import pytest
import redis

from batchd import (
    AsyncClient,
    CancelError,
    Client,
    InvalidRequestError,
    RequestNotFoundError,
    RequestTooLargeError,
    Result,
    Settings,
    SubmitError,
    SubmitItem,
    Ticket,
    WaitTimeoutError,
    aggregate,
    defaults,
)
from batchd.client import AsyncTicket, default_consumer
from batchd.errors import AckError, IdempotencyConflictError
from batchd.runtime import Runtime
from batchd.store import Keys, Store, connect_async
from batchd.store import counters as counter_store
from batchd.store import lanes as lane_store
from tests.pipeline import (
    ACCOUNT,
    BATCH_ID,
    Flow,
    astop,
    compact,
    errored,
    framed,
    lane,
    lane_stats,
    params,
    pending,
    succeeded,
    token_of,
)
from tests.support.introspect import ablocked_clients, clients_named, dbsize

T = TypeVar("T")
UNKNOWN = "default.01ARZ3NDEKTSV4RRFFQ69G5FAV"
#: A beta the API knows (`api.known_betas`).
BETA = "pdfs-2024-09-25"


def run(settings: Settings, body: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Run `body` with an AsyncClient on its own event loop, closing the client after."""

    async def main() -> T:
        async with AsyncClient(settings=settings) as client:
            return await body(client)

    return asyncio.run(main())


async def blocked_waiters(client: AsyncClient, n: int, timeout: float = 20.0) -> None:
    """Return once `n` clients are blocked in Redis."""
    async with asyncio.timeout(timeout):
        while await ablocked_clients(client.redis) < n:
            await asyncio.sleep(0.005)


def in_flight(r: redis.Redis, keys: Keys, name: str, consumer: str | None = None) -> list[str]:
    """Ids of the replies a consumer (by default this process's) holds unacknowledged."""
    raw = r.lrange(keys.reply_inflight(name, consumer or default_consumer()), 0, -1)
    return [Result.from_json(e).id for e in raw]


# -- submit ---------------------------------------------------------------------------------


def test_submit_stores_a_pending_request(
    settings: Settings, store: Store, redis_client: redis.Redis, keys: Keys
) -> None:
    """An awaited submit returns a Ticket and stores the request in its lane."""
    p = params("héllo")

    async def body(c: AsyncClient) -> tuple[Ticket, str]:
        ticket = await c.submit(p, key="a1", priority=2)
        return ticket, (await c.get(ticket.id)).state

    ticket, state = run(settings, body)
    assert ticket.key == "a1" and not ticket.duplicate
    assert state == "pending"
    assert redis_client.get(keys.params(ACCOUNT, token_of(ticket.id))) == compact(p)
    assert pending(store, lane(2)) == [token_of(ticket.id)]
    assert lane_stats(store, lane(2)) == (1, framed(p))


def test_submit_same_key_is_a_duplicate(settings: Settings, store: Store) -> None:
    """The same request again under its key returns the first ticket with duplicate=True and
    enqueues nothing."""

    async def body(c: AsyncClient) -> tuple[Ticket, Ticket]:
        return await c.submit(params("1"), key="k ü"), await c.submit(params("1"), key="k ü")

    first, again = run(settings, body)
    assert again == AsyncTicket(id=first.id, key="k ü", duplicate=True)
    assert lane_stats(store)[0] == 1


def test_submit_same_key_with_another_request_is_a_conflict(
    settings: Settings, store: Store
) -> None:
    """A key reused for another request raises IdempotencyConflictError naming the first
    request and what differs; nothing is stored."""

    async def body(c: AsyncClient) -> tuple[Ticket, IdempotencyConflictError]:
        first = await c.submit(params("1"), key="k", reply_to="a")
        try:
            await c.submit(params("2"), key="k", reply_to="b")
        except IdempotencyConflictError as exc:
            return first, exc
        raise AssertionError("no conflict")

    first, err = run(settings, body)
    assert (err.field, err.request_id, err.differs) == ("key", first.id, ["params", "reply_to"])
    assert pending(store) == [token_of(first.id)]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"params": {"model": "m", "max_tokens": 1}}, "params.messages"),
        ({"params": params(), "reply_to": "bad name"}, "reply_to"),
        ({"params": params(), "priority": 10}, "priority"),
        ({"params": params(), "metadata": [1]}, "metadata"),
        ({"params": params(), "callback_url": "ftp://example.com/"}, "callback_url"),
        ({"params": params(temperature=float("nan"))}, "params"),
        ({"params": params(), "betas": ["no-such-beta-2099-01-01"]}, "betas"),
    ],
    ids=["no-messages", "reply-to", "priority", "metadata", "callback", "nan", "beta"],
)
def test_invalid_submit_stores_nothing(
    settings: Settings, redis_client: redis.Redis, kwargs: dict[str, Any], field: str
) -> None:
    """A refused submit raises InvalidRequestError naming the field; Redis stays empty."""
    kwargs = dict(kwargs)
    p = kwargs.pop("params")

    async def body(c: AsyncClient) -> None:
        await c.submit(p, **kwargs)

    with pytest.raises(InvalidRequestError) as info:
        run(settings, body)
    assert info.value.field == field
    assert dbsize(redis_client) == 0


def test_too_large_submit_is_refused(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Params larger than a batch raise RequestTooLargeError."""

    async def body(c: AsyncClient) -> None:
        await c.submit(params("x" * 2000))

    with pytest.raises(RequestTooLargeError):
        run(make_settings(batch={"max_bytes": 1024}), body)
    assert dbsize(redis_client) == 0


def test_unknown_account_is_refused_once_published(settings: Settings, store: Store) -> None:
    """With the daemon's accounts published, another account is refused."""
    store.read(counter_store.publish_accounts(store.keys, list(settings.accounts)))

    async def body(c: AsyncClient) -> None:
        await c.submit(params(), account="elsewhere")

    with pytest.raises(InvalidRequestError) as info:
        run(settings, body)
    assert info.value.field == "account"


def test_betas_put_the_request_in_its_own_lane(settings: Settings, store: Store) -> None:
    """A request with betas waits in a lane of its own, apart from plain ones."""

    async def body(c: AsyncClient) -> tuple[Ticket, Ticket]:
        return await c.submit(params()), await c.submit(params(), betas=[BETA])

    plain, beta = run(settings, body)
    assert pending(store, lane(0)) == [token_of(plain.id)]
    assert pending(store, lane(0, betas=[BETA])) == [token_of(beta.id)]


# -- submit_many ----------------------------------------------------------------------------


def test_submit_many_reports_each_outcome_in_order(settings: Settings, store: Store) -> None:
    """Good and bad items mixed: outcomes in order, errors naming fields, good ones stored; a
    repeated item is a duplicate, a reused key for another request a conflict."""
    items: list[Any] = [
        {"params": params("a")},
        {"params": params(), "priority": -1},
        SubmitItem(params("b")),
        7,
        {"params": params("c"), "key": "dup"},
        {"params": params("c"), "key": "dup"},
        {"params": params("d"), "key": "dup"},
    ]

    async def body(c: AsyncClient) -> list[Ticket | SubmitError]:
        return await c.submit_many(items)

    out = run(settings, body)
    assert [o.field for o in out if isinstance(o, SubmitError)] == ["priority", "item", "key"]
    assert isinstance(out[-1], IdempotencyConflictError)
    a, b, c, d = (o for o in out if isinstance(o, Ticket))
    assert d == AsyncTicket(id=c.id, key="dup", duplicate=True)
    assert all(isinstance(t, AsyncTicket) for t in (a, b, c, d))
    assert pending(store) == [token_of(t.id) for t in (a, b, c)]


def test_submit_many_sends_in_chunks(settings: Settings, store: Store) -> None:
    """2,500 items in chunks: all stored, in order."""

    async def body(c: AsyncClient) -> list[Ticket | SubmitError]:
        return await c.submit_many(({"params": params(str(i))} for i in range(2_500)), chunk=1_000)

    out = run(settings, body)
    tokens = [token_of(o.id) for o in out if isinstance(o, Ticket)]
    assert len(tokens) == 2_500
    assert pending(store) == tokens


# -- tickets, get and find ------------------------------------------------------------------


def test_ticket_is_an_awaitable_handle(settings: Settings, flow: Flow) -> None:
    """An AsyncTicket's get, wait and cancel are the client's, awaited."""

    async def body(c: AsyncClient) -> None:
        done = await c.submit(params("done"))
        live = await c.submit(params("live"), priority=1)
        assert isinstance(done, AsyncTicket)
        assert (await done.get()).state == "pending"
        flow.end(done.id)
        assert (await done.wait(timeout=5)).raw == (await c.wait(done.id, timeout=0)).raw
        assert (await live.cancel()).status == "canceled"
        assert (await live.get()).state == "canceled"

    run(settings, body)


def test_every_call_takes_a_ticket_or_an_id(settings: Settings, flow: Flow) -> None:
    """get, wait, wait_many, as_completed and cancel take a ticket or its id alike."""

    async def body(c: AsyncClient) -> None:
        done = await c.submit(params("done"))
        live = await c.submit(params("live"), priority=1)
        assert await c.get(done) == await c.get(done.id)
        flow.end(done.id)
        result = await c.wait(done.id, timeout=0)
        assert await c.wait(done, timeout=0) == result
        assert await c.wait_many([done], timeout=0) == [result]
        assert [r async for r in c.as_completed([done], timeout=0)] == [result]
        assert (await c.cancel(live)).status == "canceled"
        with pytest.raises(CancelError, match="already ended"):
            await c.cancel(live.id)

    run(settings, body)


def test_get_and_wait_for_unknown_or_malformed_ids(settings: Settings) -> None:
    """get, wait and cancel raise RequestNotFoundError for unknown and malformed ids."""

    async def body(c: AsyncClient) -> list[str]:
        raised = []
        for rid in (UNKNOWN, "not-an-id"):
            for call in (c.get(rid), c.wait(rid, timeout=5), c.cancel(rid)):
                try:
                    await call
                except RequestNotFoundError:
                    raised.append(rid)
        return raised

    assert run(settings, body) == [UNKNOWN] * 3 + ["not-an-id"] * 3


def test_find_returns_the_request_submitted_under_a_key(settings: Settings) -> None:
    """`find(key)` names the request first submitted under it; an unused key raises."""

    async def body(c: AsyncClient) -> None:
        ticket = await c.submit(params(), key="order-7")
        assert (await c.find("order-7")).id == ticket.id
        with pytest.raises(RequestNotFoundError, match="never-used"):
            await c.find("never-used")

    run(settings, body)


# -- wait -----------------------------------------------------------------------------------


def test_wait_returns_at_once_for_an_ended_request(settings: Settings, flow: Flow) -> None:
    """A result stored before the call comes back even with a zero timeout; `get` agrees."""

    async def body(c: AsyncClient) -> None:
        ticket = await c.submit(params(), metadata={"x": 1})
        flow.end(ticket.id)
        result = await c.wait(ticket.id, timeout=0)
        state = await c.get(ticket.id)
        assert (result.status, result.batch_id, result.metadata) == (
            "succeeded",
            BATCH_ID,
            {"x": 1},
        )
        assert state.result is not None and state.result.raw == result.raw
        assert list(orjson.loads(result.raw))[:4] == ["id", "key", "account", "status"]

    run(settings, body)


def test_wait_is_woken_by_another_task(settings: Settings, flow: Flow) -> None:
    """A task blocked in `wait` wakes when another task ends the request."""

    async def body(c: AsyncClient) -> str:
        ticket = await c.submit(params())
        waiter = asyncio.create_task(c.wait(ticket.id, timeout=20))
        await blocked_waiters(c, 1)
        assert not waiter.done()
        await asyncio.to_thread(flow.end, ticket.id)
        return (await waiter).status

    assert run(settings, body) == "succeeded"


def test_several_async_waiters_all_wake_from_one_blocked_connection(
    settings: Settings, flow: Flow
) -> None:
    """Every task waiting on one request wakes when it ends; they block on one connection."""

    async def body(c: AsyncClient) -> list[str]:
        ticket = await c.submit(params())
        waiters = [asyncio.create_task(c.wait(ticket.id, timeout=20)) for _ in range(4)]
        await blocked_waiters(c, 1)
        assert await ablocked_clients(c.redis) == 1
        await asyncio.to_thread(flow.end, ticket.id)
        return [r.status for r in await asyncio.gather(*waiters)]

    assert run(settings, body) == ["succeeded"] * 4


def test_hundreds_of_concurrent_waits_use_a_few_connections(
    settings: Settings, flow: Flow, redis_url: str, redis_client: redis.Redis
) -> None:
    """200 concurrent waits (more than the connection pool holds) all get their results, on a
    few connections: none fails for want of one."""

    async def main() -> tuple[list[str], list[str], int]:
        connection = connect_async(redis_url, client_name="many-waits")
        try:
            async with AsyncClient(settings=settings, connection=connection) as c:
                tickets = await c.submit_many({"params": params(str(i))} for i in range(200))
                ids = [t.id for t in tickets if isinstance(t, Ticket)]
                waits = [asyncio.create_task(c.wait(rid, timeout=30)) for rid in ids]
                await blocked_waiters(c, 1)
                await asyncio.to_thread(flow.end, *ids)
                results = await asyncio.gather(*waits)
                named = clients_named(redis_client, "many-waits")
                return ids, [r.id for r in results if r.succeeded], max(named)
        finally:
            await connection.aclose()

    ids, succeeded_ids, connections = asyncio.run(main())
    assert len(ids) == 200
    assert succeeded_ids == ids
    # the first looks at once, plus a few: the hub's blocking one, the test's `info` (on the
    # busiest node of a cluster: the account's)
    assert connections <= defaults.WAIT_FIRST_LOOKS + 4


def test_wait_times_out(settings: Settings) -> None:
    """A request still pending at the deadline raises WaitTimeoutError."""

    async def body(c: AsyncClient) -> None:
        ticket = await c.submit(params())
        await c.wait(ticket.id, timeout=0.2)

    with pytest.raises(WaitTimeoutError, match="pending"):
        run(settings, body)


def test_wait_many_returns_every_result_in_the_order_given(settings: Settings, flow: Flow) -> None:
    """Results come back in the order the requests were named."""

    async def body(c: AsyncClient) -> tuple[list[str], list[str]]:
        tickets = [await c.submit(params(str(i))) for i in range(3)]
        flow.end(*[t.id for t in reversed(tickets)])
        order: list[Ticket | str] = [tickets[1], tickets[2].id, tickets[0]]
        got = await c.wait_many(order, timeout=5)
        return [t if isinstance(t, str) else t.id for t in order], [r.id for r in got]

    order, got = run(settings, body)
    assert got == order


def test_as_completed_yields_each_result_as_it_ends(settings: Settings, flow: Flow) -> None:
    """One request ended before the call comes first; the other once the fan-out ends it."""

    async def body(c: AsyncClient) -> None:
        first, second = await c.submit(params("1")), await c.submit(params("2"))
        asm = flow.cut()
        flow.record(asm)
        flow.fanout(asm, [(token_of(second.id), "ok", succeeded())])
        results = c.as_completed([first, second], timeout=20)
        assert (await anext(results)).id == second.id

        async def end_first() -> None:
            await blocked_waiters(c, 1)
            await asyncio.to_thread(flow.fanout, asm, [(token_of(first.id), "ok", succeeded())])

        ender = asyncio.create_task(end_first())
        assert (await anext(results)).id == first.id
        await ender
        assert [r async for r in results] == []

    run(settings, body)


def test_as_completed_times_out_naming_what_is_left(settings: Settings, flow: Flow) -> None:
    """At the deadline, after yielding what ended, WaitTimeoutError says how many are left."""

    async def body(c: AsyncClient) -> tuple[str, list[str]]:
        done = await c.submit(params("done"))
        left = await c.submit(params("left"), priority=1)
        flow.end(done.id)
        seen: list[str] = []
        with pytest.raises(WaitTimeoutError, match="1 requests still unfinished"):
            async for result in c.as_completed([left, done], timeout=0.3):
                seen.append(result.id)
        return done.id, seen

    done, seen = run(settings, body)
    assert seen == [done]


def test_result_gives_its_text_and_typed_message(settings: Settings, flow: Flow) -> None:
    """An awaited result's `text` and typed `message`, as from the sync client."""

    async def body(c: AsyncClient) -> Result:
        ticket = await c.submit(params())
        flow.end(ticket.id, result=succeeded("Hello there"))
        return await c.wait(ticket, timeout=0)

    result = run(settings, body)
    assert result.text == "Hello there"
    assert isinstance(result.message, anthropic.types.Message)


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_of_a_pending_request(settings: Settings, flow: Flow, store: Store) -> None:
    """Cancel ends a pending request `canceled` and wakes its waiter; the next cut of its lane
    drops it."""

    async def body(c: AsyncClient) -> tuple[str, str]:
        ticket = await c.submit(params())
        waiter = asyncio.create_task(c.wait(ticket.id, timeout=20))
        await blocked_waiters(c, 1)
        canceled = await c.cancel(ticket.id)
        assert (await waiter).raw == canceled.raw
        return canceled.status, (await c.get(ticket.id)).state

    assert run(settings, body) == ("canceled", "canceled")
    assert aggregate.cut(flow.rt, ACCOUNT, lane(0), "test") is None
    assert lane_stats(store) == (0, 0)


def test_cancel_feeds_the_reply_queue(
    settings: Settings, redis_client: redis.Redis, keys: Keys
) -> None:
    """The canceled envelope reaches the request's reply queue, as with the sync client."""

    async def body(c: AsyncClient) -> None:
        ticket = await c.submit(params(), reply_to="svc")
        await c.cancel(ticket.id)

    run(settings, body)
    assert redis_client.llen(keys.reply_queue("svc")) == 1


def test_cancel_of_a_batched_request_is_refused(settings: Settings, flow: Flow) -> None:
    """A request already claimed into a batch cannot be withdrawn."""

    async def body(c: AsyncClient) -> None:
        ticket = await c.submit(params())
        flow.cut()
        await c.cancel(ticket.id)

    with pytest.raises(CancelError, match="cannot be withdrawn"):
        run(settings, body)


def test_cancel_twice_is_refused(settings: Settings) -> None:
    """The second cancel raises CancelError."""

    async def body(c: AsyncClient) -> None:
        ticket = await c.submit(params())
        await c.cancel(ticket.id)
        await c.cancel(ticket.id)

    with pytest.raises(CancelError, match="already ended"):
        run(settings, body)


# -- dead letters ---------------------------------------------------------------------------


@pytest.fixture
def one_try(
    make_settings: Callable[..., Settings], make_runtime: Callable[..., Runtime]
) -> tuple[Settings, Flow]:
    """Settings and a flow under which a request ends `dead` at its first retryable failure."""
    s = make_settings(retry={"max_attempts": 1})
    return s, Flow(make_runtime(s))


def kill(flow: Flow, rid: str) -> None:
    """End a request `dead`: a retryable failure at its last attempt."""
    flow.end(rid, cls="retry", result=errored("overloaded_error", "busy"))


def test_dead_then_requeue_reaches_a_result_again(one_try: tuple[Settings, Flow]) -> None:
    """An awaited `dead()` lists the dead request; `requeue_dead` sends it round again, and it
    ends with a new result."""
    s, flow = one_try

    async def body(c: AsyncClient) -> None:
        ticket = await c.submit(params())
        kill(flow, ticket.id)
        [letter] = await c.dead()
        assert (letter.id, letter.lane, letter.requeueable) == (ticket.id, lane(0), True)
        assert await c.requeue_dead([ticket]) == {ticket.id: "requeued"}
        assert await c.dead() == []
        flow.end(ticket.id)
        result = await c.wait(ticket, timeout=5)
        assert (result.status, result.attempts) == ("succeeded", 1)

    run(s, body)


def test_purge_dead_forgets_the_letter_and_keeps_the_result(
    one_try: tuple[Settings, Flow],
) -> None:
    """An awaited `purge_dead` drops the letter; the `dead` result stays readable."""
    s, flow = one_try

    async def body(c: AsyncClient) -> None:
        ticket = await c.submit(params())
        kill(flow, ticket.id)
        assert await c.purge_dead([ticket.id]) == 1
        assert await c.dead() == []
        assert (await c.get(ticket)).state == "dead"
        assert await c.requeue_dead([ticket]) == {ticket.id: "not dead"}

    run(s, body)


# -- replies --------------------------------------------------------------------------------


def test_replies_come_oldest_first(settings: Settings, flow: Flow) -> None:
    """Items are read in the order the requests ended."""

    async def body(c: AsyncClient) -> tuple[list[str], list[str]]:
        ids = [(await c.submit(params(str(i)), reply_to="svc")).id for i in range(3)]
        flow.end(*ids)
        got = [r.id async for r in c.replies("svc", timeout=0.2)]
        return ids, got

    ids, got = run(settings, body)
    assert got == ids


def test_replies_with_zero_timeout_drain_and_end(settings: Settings, flow: Flow) -> None:
    """timeout=0 hands out what is queued and ends without blocking."""

    async def body(c: AsyncClient) -> tuple[str, list[str]]:
        ticket = await c.submit(params(), reply_to="svc")
        flow.end(ticket.id)
        async with asyncio.timeout(5):
            return ticket.id, [r.id async for r in c.replies("svc", timeout=0)]

    rid, got = run(settings, body)
    assert got == [rid]


def test_replies_are_held_under_this_processs_consumer_name(
    settings: Settings, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """Without a consumer name, an item read is in flight under this process's default one."""

    async def body(c: AsyncClient) -> tuple[str, list[str]]:
        ticket = await c.submit(params(), reply_to="svc")
        flow.end(ticket.id)
        replies = c.replies("svc", timeout=5)
        await anext(replies)
        held = in_flight(redis_client, keys, "svc", default_consumer())
        await astop(replies)
        return ticket.id, held

    rid, held = run(settings, body)
    assert held == [rid]


def test_leaving_a_closed_loop_acknowledges_what_was_yielded(
    settings: Settings, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """A `break` out of `async for` inside `aclosing(...)` acknowledges the item handled by
    the time the block is left: the next reader gets the next item."""

    async def body(c: AsyncClient) -> tuple[list[str], list[str], list[str]]:
        ids = [(await c.submit(params(str(i)), reply_to="svc")).id for i in range(2)]
        flow.end(*ids)
        stream = cast(AsyncGenerator[Result, None], c.replies("svc", timeout=5))
        async with contextlib.aclosing(stream):
            async for result in stream:
                assert result.id == ids[0]
                break
        held = in_flight(redis_client, keys, "svc")
        return ids, held, [r.id async for r in c.replies("svc", timeout=0.2)]

    ids, held, again = run(settings, body)
    assert held == []
    assert again == ids[1:]


def test_breaking_out_of_the_loop_acknowledges_what_was_yielded(
    settings: Settings, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """A bare `break` out of `async for` acknowledges the item handled once asyncio finalizes
    the generator (at once, in a task of its own)."""

    async def body(c: AsyncClient) -> tuple[list[str], list[str]]:
        ids = [(await c.submit(params(str(i)), reply_to="svc")).id for i in range(2)]
        flow.end(*ids)
        async for result in c.replies("svc", timeout=5):
            assert result.id == ids[0]
            break
        async with asyncio.timeout(10):  # no event marks the finalizer's ack: look for it
            while in_flight(redis_client, keys, "svc"):
                await asyncio.sleep(0.005)
        return ids, [r.id async for r in c.replies("svc", timeout=0.2)]

    ids, again = run(settings, body)
    assert again == ids[1:]


def test_unacknowledged_reply_is_delivered_again(settings: Settings, flow: Flow) -> None:
    """An item a consumer holds unacknowledged (it stalled, or crashed) comes back on the next
    `replies` of that consumer name, oldest first."""

    async def body(c: AsyncClient) -> tuple[list[str], list[str]]:
        ids = [(await c.submit(params(str(i)), reply_to="svc")).id for i in range(2)]
        flow.end(*ids)
        stalled = c.replies("svc", timeout=5, consumer="w1")
        await anext(stalled)
        again = [r.id async for r in c.replies("svc", timeout=0.2, consumer="w1")]
        await astop(stalled)
        return ids, again

    ids, again = run(settings, body)
    assert again == ids


def test_ack_removes_the_item(
    settings: Settings, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """An acknowledged item leaves the in-flight list at once and is not delivered again."""

    async def body(c: AsyncClient) -> tuple[list[str], list[str], list[str]]:
        ids = [(await c.submit(params(str(i)), reply_to="svc")).id for i in range(2)]
        flow.end(*ids)
        replies = c.replies("svc", timeout=5, prefetch=2)
        first = await anext(replies)
        await c.ack(first)
        held = in_flight(redis_client, keys, "svc")
        await astop(replies)
        again = [r.id async for r in c.replies("svc", timeout=0.2)]
        return ids, held, again

    ids, held, again = run(settings, body)
    assert held == ids[1:]
    assert again == ids[1:]


def test_ack_under_a_consumer_holding_nothing_raises(
    settings: Settings, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """An awaited `ack` naming a consumer that never read the queue raises AckError; a second
    ack by the reader raises too."""

    async def body(c: AsyncClient) -> str:
        ticket = await c.submit(params(), reply_to="svc")
        flow.end(ticket.id)
        replies = c.replies("svc", timeout=5, consumer="c1")
        got = await anext(replies)
        with pytest.raises(AckError, match="c2"):
            await c.ack(got, consumer="c2")
        assert in_flight(redis_client, keys, "svc", "c1") == [ticket.id]
        await c.ack(got)
        with pytest.raises(AckError, match="holds no unacknowledged reply"):
            await c.ack(got)
        await astop(replies)
        return ticket.id

    run(settings, body)


def test_flush_marks_the_lane(settings: Settings, store: Store) -> None:
    """An awaited flush asks the aggregator to cut a priority's lanes, or all of them."""

    async def body(c: AsyncClient) -> None:
        await c.flush(priority=3)
        await c.flush()

    run(settings, body)
    assert store.read(lane_store.take_flushes(store.keys, ACCOUNT)) == {"p3", "*"}


def test_async_client_is_a_twin_of_client() -> None:
    """Every public method of Client has an AsyncClient namesake (close is aclose)."""

    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    assert public(Client) - {"close"} <= public(AsyncClient)


def test_prefetch_reads_groups_and_loses_nothing_when_stopped(
    settings: Settings, flow: Flow
) -> None:
    """Prefetched groups come in order; stopping mid-group acknowledges what was handed out, and
    the rest of the group comes back, then the queue's other items."""

    async def body(c: AsyncClient) -> tuple[list[str], list[str], list[str]]:
        ids = [(await c.submit(params(str(i)), reply_to="svc")).id for i in range(7)]
        flow.end(*ids)
        replies = c.replies("svc", timeout=5, consumer="w", prefetch=3)
        first = [(await anext(replies)).id for _ in range(4)]  # one group and one more
        await astop(replies)
        again = [r.id async for r in c.replies("svc", timeout=0.2, consumer="w", prefetch=3)]
        return ids, first, again

    ids, first, again = run(settings, body)
    assert first == ids[:4]
    assert again == ids[4:]
