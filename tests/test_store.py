"""Start-up checks of the Redis batchd uses: each way it can lose requests is named."""

from __future__ import annotations

from pathlib import Path

import redis

from batchd.store import durability_warnings
from tests.support.redis import RedisServer


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
