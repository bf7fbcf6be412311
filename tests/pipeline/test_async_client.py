"""AsyncClient, the asyncio twin of Client: the same behaviour, awaited."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

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
    Settings,
    SubmitError,
    SubmitItem,
    Ticket,
    WaitTimeoutError,
)
from batchd.keys import Keys
from batchd.store import publish_accounts, text
from tests.pipeline import ACCOUNT, BATCH_ID, Flow, astop, compact, framed, params, token_of

T = TypeVar("T")
UNKNOWN = "default.01ARZ3NDEKTSV4RRFFQ69G5FAV"


def run(settings: Settings, body: Callable[[AsyncClient], Awaitable[T]]) -> T:
    """Run `body` with an AsyncClient on its own event loop, closing the client after."""

    async def main() -> T:
        async with AsyncClient(settings=settings) as client:
            return await body(client)

    return asyncio.run(main())


async def blocked_waiters(client: AsyncClient, n: int, timeout: float = 20.0) -> None:
    """Return once `n` clients are blocked in Redis."""
    async with asyncio.timeout(timeout):
        while int((await client.redis.info("clients"))["blocked_clients"]) < n:
            await asyncio.sleep(0.005)


def lane_stats(r: redis.Redis, priority: int = 0) -> tuple[int, int]:
    count, nbytes = r.hmget(Keys().lane_stats(ACCOUNT, priority), "count", "bytes")
    return int(count or 0), int(nbytes or 0)


def pending(r: redis.Redis, priority: int = 0) -> list[str]:
    return [text(e).split(" ")[0] for e in r.lrange(Keys().pending(ACCOUNT, priority), 0, -1)]


# -- submit ---------------------------------------------------------------------------------


def test_submit_stores_a_pending_request(settings: Settings, redis_client: redis.Redis) -> None:
    """An awaited submit returns a Ticket and stores the request in its lane."""
    p = params("héllo")

    async def body(c: AsyncClient) -> tuple[Ticket, str]:
        ticket = await c.submit(p, key="a1", priority=2)
        return ticket, (await c.get(ticket.id)).state

    ticket, state = run(settings, body)
    assert ticket.key == "a1" and not ticket.duplicate
    assert state == "pending"
    assert redis_client.hget(Keys().params(ACCOUNT), token_of(ticket.id)) == compact(p)
    assert pending(redis_client, 2) == [token_of(ticket.id)]
    assert lane_stats(redis_client, 2) == (1, framed(p))


def test_submit_same_key_is_a_duplicate(settings: Settings, redis_client: redis.Redis) -> None:
    """A repeated key returns the first ticket with duplicate=True and enqueues nothing."""

    async def body(c: AsyncClient) -> tuple[Ticket, Ticket]:
        return await c.submit(params("1"), key="k ü"), await c.submit(params("2"), key="k ü")

    first, again = run(settings, body)
    assert again == Ticket(id=first.id, key="k ü", duplicate=True)
    assert lane_stats(redis_client)[0] == 1


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"params": {"model": "m", "max_tokens": 1}}, "params.messages"),
        ({"params": params(), "reply_to": "bad name"}, "reply_to"),
        ({"params": params(), "priority": 10}, "priority"),
        ({"params": params(), "metadata": [1]}, "metadata"),
        ({"params": params(), "callback_url": "ftp://example.com/"}, "callback_url"),
        ({"params": params(temperature=float("nan"))}, "params"),
    ],
    ids=["no-messages", "reply-to", "priority", "metadata", "callback", "nan"],
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
    assert redis_client.dbsize() == 0


def test_too_large_submit_is_refused(
    make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Params larger than a batch raise RequestTooLargeError."""

    async def body(c: AsyncClient) -> None:
        await c.submit(params("x" * 2000))

    with pytest.raises(RequestTooLargeError):
        run(make_settings(batch={"max_bytes": 1024}), body)
    assert redis_client.dbsize() == 0


def test_unknown_account_is_refused_once_published(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """With the daemon's accounts published, another account is refused."""
    publish_accounts(redis_client, Keys(), settings)

    async def body(c: AsyncClient) -> None:
        await c.submit(params(), account="elsewhere")

    with pytest.raises(InvalidRequestError) as info:
        run(settings, body)
    assert info.value.field == "account"


# -- submit_many ----------------------------------------------------------------------------


def test_submit_many_reports_each_outcome_in_order(
    settings: Settings, redis_client: redis.Redis
) -> None:
    """Good and bad items mixed: outcomes in order, errors naming fields, good ones stored."""
    items: list[Any] = [
        {"params": params("a")},
        {"params": params(), "priority": -1},
        SubmitItem(params("b")),
        7,
        {"params": params("c"), "key": "dup"},
        {"params": params("d"), "key": "dup"},
    ]

    async def body(c: AsyncClient) -> list[Ticket | SubmitError]:
        return await c.submit_many(items)

    out = run(settings, body)
    assert [o.field for o in out if isinstance(o, SubmitError)] == ["priority", "item"]
    a, b, c, d = (o for o in out if isinstance(o, Ticket))
    assert d == Ticket(id=c.id, key="dup", duplicate=True)
    assert pending(redis_client) == [token_of(t.id) for t in (a, b, c)]


def test_submit_many_sends_in_chunks(settings: Settings, redis_client: redis.Redis) -> None:
    """2,500 items in chunks of 1,000: all stored, in order."""

    async def body(c: AsyncClient) -> list[Ticket | SubmitError]:
        return await c.submit_many(({"params": params(str(i))} for i in range(2_500)), chunk=1_000)

    out = run(settings, body)
    tokens = [token_of(o.id) for o in out if isinstance(o, Ticket)]
    assert len(tokens) == 2_500
    assert pending(redis_client) == tokens


# -- get and wait ---------------------------------------------------------------------------


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


def test_several_async_waiters_all_wake(settings: Settings, flow: Flow) -> None:
    """Every task waiting on one request wakes when it ends."""

    async def body(c: AsyncClient) -> list[str]:
        ticket = await c.submit(params())
        waiters = [asyncio.create_task(c.wait(ticket.id, timeout=20)) for _ in range(4)]
        await blocked_waiters(c, 4)
        await asyncio.to_thread(flow.end, ticket.id)
        return [r.status for r in await asyncio.gather(*waiters)]

    assert run(settings, body) == ["succeeded"] * 4


def test_wait_times_out(settings: Settings) -> None:
    """A request still pending at the deadline raises WaitTimeoutError."""

    async def body(c: AsyncClient) -> None:
        ticket = await c.submit(params())
        await c.wait(ticket.id, timeout=0.2)

    with pytest.raises(WaitTimeoutError, match="pending"):
        run(settings, body)


# -- cancel ---------------------------------------------------------------------------------


def test_cancel_of_a_pending_request(settings: Settings, redis_client: redis.Redis) -> None:
    """Cancel ends a pending request `canceled`, empties its lane and wakes its waiter."""

    async def body(c: AsyncClient) -> tuple[str, str]:
        ticket = await c.submit(params(), reply_to="svc")
        waiter = asyncio.create_task(c.wait(ticket.id, timeout=20))
        await blocked_waiters(c, 1)
        canceled = await c.cancel(ticket.id)
        assert (await waiter).raw == canceled.raw
        return canceled.status, (await c.get(ticket.id)).state

    assert run(settings, body) == ("canceled", "canceled")
    assert lane_stats(redis_client) == (0, 0)
    assert redis_client.llen(Keys().reply_queue("svc")) == 1


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


def test_unacknowledged_reply_is_delivered_again(settings: Settings, flow: Flow) -> None:
    """An item read but not acknowledged comes back on the next `replies` of that consumer."""

    async def body(c: AsyncClient) -> tuple[list[str], list[str]]:
        ids = [(await c.submit(params(str(i)), reply_to="svc")).id for i in range(2)]
        flow.end(*ids)
        replies = c.replies("svc", timeout=5, consumer="w1")
        await anext(replies)
        await astop(replies)  # the consumer stops while handling it
        again = [r.id async for r in c.replies("svc", timeout=0.2, consumer="w1")]
        return ids, again

    ids, again = run(settings, body)
    assert again == ids


def test_ack_removes_the_item(settings: Settings, flow: Flow, redis_client: redis.Redis) -> None:
    """An acknowledged item is not delivered again."""

    async def body(c: AsyncClient) -> tuple[list[str], list[str]]:
        ids = [(await c.submit(params(str(i)), reply_to="svc")).id for i in range(2)]
        flow.end(*ids)
        replies = c.replies("svc", timeout=5)
        first = await anext(replies)
        await c.ack("svc", first)
        await astop(replies)
        again = [r.id async for r in c.replies("svc", timeout=0.2)]
        return ids, again

    ids, again = run(settings, body)
    assert again == ids[1:]
    assert redis_client.llen(Keys().reply_inflight("svc", "default")) == 0


def test_flush_marks_the_lane(settings: Settings, redis_client: redis.Redis) -> None:
    """An awaited flush asks the aggregator to cut the account's lanes."""

    async def body(c: AsyncClient) -> None:
        await c.flush(priority=3)
        await c.flush()

    run(settings, body)
    assert redis_client.smembers(Keys().flush(ACCOUNT)) == {b"3", b"*"}


def test_async_client_is_a_twin_of_client() -> None:
    """Every public method of Client has an AsyncClient namesake (close is aclose)."""

    def public(cls: type) -> set[str]:
        return {n for n in dir(cls) if not n.startswith("_")}

    assert public(Client) - {"close"} <= public(AsyncClient)


def test_prefetch_reads_groups_and_loses_nothing_when_stopped(
    settings: Settings, flow: Flow
) -> None:
    """The asyncio twin's prefetch: groups in order; a consumer stopping mid-group gets the
    group back, and the queue's other items after it."""

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
    assert again == ids[3:]  # the first group was acknowledged when the second was taken
