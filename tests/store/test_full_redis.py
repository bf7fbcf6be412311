"""A full Redis degrades, it does not deadlock: at `maxmemory` (noeviction) producers get a
clear error, and consumers can still read and acknowledge replies, which frees memory."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from batchd import Client, Settings
from batchd.errors import RedisFullError
from batchd.runtime import Runtime
from batchd.store import counters as counter_store
from tests.pipeline import Flow, params
from tests.support.redis import RedisServer


@pytest.fixture
def small_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


def fill(r: redis.Redis) -> None:
    """Set maxmemory just above what is used now, then write until Redis refuses."""
    used = int(r.info("memory")["used_memory"])
    r.config_set("maxmemory", used + 2_000_000)
    blob = b"x" * 100_000
    i = 0
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        while True:
            r.set(f"filler:{i}", blob)
            i += 1


def test_submit_into_a_full_redis_says_it_is_full(small_redis: RedisServer) -> None:
    """A producer's submit at maxmemory raises RedisFullError saying what to do."""
    r = redis.Redis.from_url(small_redis.url)
    settings = Settings.load(redis_url=small_redis.url)
    with Client(settings=settings) as client:
        rt = Runtime(settings)
        rt.store.read(counter_store.publish_accounts(rt.keys, ["default"]))
        rt.close()
        fill(r)
        with pytest.raises(RedisFullError, match="maxmemory"):
            client.submit(params())
    r.close()


def test_consumer_reads_and_acknowledges_replies_at_maxmemory(small_redis: RedisServer) -> None:
    """Replies already on their queue can be read and acknowledged while Redis is full."""
    r = redis.Redis.from_url(small_redis.url)
    settings = Settings.load(redis_url=small_redis.url)
    rt = Runtime(settings)
    try:
        rt.store.read(counter_store.publish_accounts(rt.keys, ["default"]))
        with Client(settings=settings) as client:
            ids = [client.submit(params(str(i)), reply_to="full").id for i in range(3)]
            Flow(rt).end(*ids)
            fill(r)
            # The fault is really there: Redis refuses writes. A buffer it freed since (a
            # client's, the AOF's) may let a write or two in first.
            with pytest.raises(redis.exceptions.OutOfMemoryError):
                for i in range(100):
                    r.set(f"one-more:{i}", b"x" * 100_000)
            got = []
            with client.replies("full", timeout=1, consumer="c1") as stream:
                for result in stream:
                    got.append(result.id)
            assert sorted(got) == sorted(ids)
            assert r.llen(rt.keys.reply_inflight("full", "c1")) == 0
            assert r.llen(rt.keys.reply_queue("full")) == 0
    finally:
        rt.close()
        r.close()
