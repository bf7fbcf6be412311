"""The store's door to Redis: start-up checks naming each way a Redis can lose requests, Redis
failures as batchd's own errors, and Redis's clock."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from batchd.errors import RedisFullError, RedisUnavailableError
from batchd.store import Keys, Read, Store, connect, durability_warnings
from tests.support.redis import RedisServer, free_port

KEYS = Keys("batchd")


def test_safe_redis_gets_no_warning(redis_client: redis.Redis) -> None:
    """AOF on with noeviction (the fixture's settings) raises nothing."""
    assert durability_warnings(redis_client) == []


def test_each_unsafe_setting_is_named(tmp_path: Path) -> None:
    """AOF off and an evicting policy each produce a warning naming the setting."""
    server = RedisServer(tmp_path / "r", extra=["--appendonly", "no", "--maxmemory-policy",
                                                 "allkeys-lru"])  # fmt: skip
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        problems = durability_warnings(client)
    finally:
        client.close()
        server.kill()
    assert any("appendonly" in p for p in problems)
    assert any("maxmemory-policy is allkeys-lru" in p for p in problems)


def test_appendfsync_no_is_named(tmp_path: Path) -> None:
    """appendfsync no can lose tens of seconds of submits and is called out."""
    server = RedisServer(tmp_path / "r", appendfsync="no")
    server.start()
    client = redis.Redis.from_url(server.url)
    try:
        problems = durability_warnings(client)
    finally:
        client.close()
        server.kill()
    assert any("appendfsync is no" in p for p in problems)


def test_unreachable_redis_is_redis_unavailable() -> None:
    """A Redis nobody listens for fails as RedisUnavailableError, pointing at redis_url."""
    store = Store(connect(f"redis://127.0.0.1:{free_port()}/0", socket_timeout=2), KEYS)
    try:
        with pytest.raises(RedisUnavailableError, match="redis_url"):
            store.time_ms()
    finally:
        store.close()


def test_full_redis_is_redis_full(tmp_path: Path) -> None:
    """A write refused at maxmemory fails as RedisFullError; reading still works."""
    server = RedisServer(tmp_path / "r", extra=["--maxmemory", "4mb"])
    server.start()
    store = Store(connect(server.url), KEYS)
    key = KEYS.params("default", "filler")
    chunk = b"x" * (1024 * 1024)
    try:
        with pytest.raises(RedisFullError, match="Redis is full") as caught:
            for _ in range(16):
                store.read(Read([("APPEND", key, chunk)], lambda out: None))
        assert isinstance(caught.value.__cause__, redis.RedisError)
        assert store.read(Read([("STRLEN", key)], lambda out: int(out[0]))) > 0
    finally:
        store.close()
        server.kill()


def test_clock_skew_of_one_host_is_small(redis_client: redis.Redis) -> None:
    """Redis on this host keeps this host's time: the measured skew is well under a second."""
    store = Store(redis_client, KEYS)
    assert abs(store.clock_skew_ms()) < 500
    assert abs(store.now_ms() - store.time_ms()) < 500
