"""Many concurrent waits in one process against a running daemon, and the connections they take
(bug 4 of issue 17: 150 `AsyncClient.wait()` calls once failed with MaxConnectionsError)."""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aredis

from batchd import AsyncClient, RedisUnavailableError
from batchd.store import connect_async
from tests.e2e.conftest import Stack, SubmitFn, params

#: Clients blocked in Redis once the waits are parked (the hub's one BLMPOP).
BLOCKED = 1


def connections(r: redis.Redis, name: str) -> int:
    return sum(1 for c in r.client_list() if c["name"] == name)


async def parked(r: redis.Redis, n: int) -> None:
    """Return once `n` clients are blocked in Redis (the waits have taken their first look)."""
    async with asyncio.timeout(30):
        while int(r.info("clients")["blocked_clients"]) < n:
            await asyncio.sleep(0.01)


def test_150_concurrent_waits_on_the_default_pool(stack: Stack, submit: SubmitFn) -> None:
    """150 concurrent `AsyncClient.wait()` calls on the default pool of 100 connections all get
    their results, the process holding at most a few dozen connections."""
    stack.daemon(BATCHD_BATCH__MAX_WAIT="3600")
    ids = submit(150, reply_to=None)
    r = stack.client.redis

    async def main() -> tuple[list[str], int]:
        # The default pool (a blocking pool of 100), only named, so CLIENT LIST can count it.
        connection = connect_async(stack.redis.url, client_name="waits-150")
        try:
            async with AsyncClient(settings=stack.client.settings, connection=connection) as c:
                waits = [asyncio.create_task(c.wait(rid, timeout=60)) for rid in ids]
                await parked(r, BLOCKED)
                held = connections(r, "waits-150")
                await c.flush()
                results = await asyncio.gather(*waits)
        finally:
            await connection.aclose()
        return [x.status for x in results], held

    statuses, held = asyncio.run(main())
    assert statuses == ["succeeded"] * 150
    assert held <= 40


def test_a_pool_out_of_connections_is_a_batchd_error(stack: Stack) -> None:
    """A caller's pool with no connection to spare (redis-py's MaxConnectionsError) surfaces as
    RedisUnavailableError, a BatchdError that says what ran out."""
    rid = stack.client.submit(params(1)).id

    async def main() -> list[BaseException | object]:
        tiny = aredis.Redis.from_url(stack.redis.url, max_connections=1)
        try:
            async with AsyncClient(settings=stack.client.settings, connection=tiny) as c:
                return await asyncio.gather(*(c.get(rid) for _ in range(5)),
                                            return_exceptions=True)  # fmt: skip
        finally:
            await tiny.aclose()

    errors = [x for x in asyncio.run(main()) if isinstance(x, BaseException)]
    assert errors
    assert all(isinstance(x, RedisUnavailableError) for x in errors), errors
    assert "max_connections" in str(errors[0])
