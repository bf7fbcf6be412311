"""batchd through Redis Sentinel: `redis+sentinel://host:port/service` finds the master."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from batchd import Client, Settings
from batchd.aggregate import lane_stats
from batchd.errors import ConfigError
from batchd.runtime import Runtime
from batchd.store import Keys, Lane, Store, connect, parse_url
from batchd.store import counters as counter_store
from tests.support.redis import RedisServer, free_port, redis_server_binary


@pytest.fixture
def sentinel(redis_server: RedisServer, tmp_path: Path) -> Iterator[str]:
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor primary 127.0.0.1 {redis_server.port} 1\n"
    )
    proc = subprocess.Popen(
        [redis_server_binary(), str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    probe = redis.Redis(port=port, socket_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if probe.execute_command("SENTINEL", "get-master-addr-by-name", "primary"):  # type: ignore[no-untyped-call]
                    break
            except redis.RedisError:
                pass
            assert time.monotonic() < deadline, "sentinel did not come up"
            time.sleep(0.05)
        yield f"redis+sentinel://127.0.0.1:{port}/primary/0"
    finally:
        probe.close()
        proc.kill()
        proc.wait()


def test_client_and_runtime_work_through_sentinel(sentinel: str, redis_url: str) -> None:
    """A submit through Sentinel lands in the master, where the aggregator sees it."""
    settings = Settings.load(redis_url=sentinel)
    with Client(settings=settings) as client:
        ticket = client.submit(
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
            }
        )
        assert client.get(ticket.id).state == "pending"
    rt = Runtime(settings)
    try:
        assert lane_stats(rt, "default", Lane.of(0).id).count == 1
    finally:
        rt.close()
    direct = Store(connect(redis_url), Keys(settings.prefix))
    try:
        counted = direct.read(counter_store.read(direct.keys, ["default"]))
        assert counted["default"]["submitted"] == 1
    finally:
        direct.close()


def test_sentinel_url_parts() -> None:
    """Several sentinels, credentials and a database number are read from the URL."""
    parsed = parse_url("redis+sentinel://u:p%40ss@a:1,b:2,c/svc/3")
    assert parsed.sentinel and not parsed.cluster
    assert parsed.nodes == [("a", 1), ("b", 2), ("c", 26379)]
    assert parsed.service == "svc"
    assert parsed.options == {"db": 3, "username": "u", "password": "p@ss"}


def test_sentinel_url_without_service_is_refused() -> None:
    """A sentinel URL must name the monitored service."""
    with pytest.raises(ConfigError, match="service name"):
        parse_url("redis+sentinel://127.0.0.1:26379")
