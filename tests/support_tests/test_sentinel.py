"""The Sentinel fixture: a master, a replica and three sentinels that fail over for real."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
import redis

from tests.support.sentinel import RedisSentinel


def test_url_names_every_sentinel_and_the_service(redis_sentinel: RedisSentinel) -> None:
    """The URL is batchd's redis+sentinel://host:port,.../<service> form."""
    ports = ",".join(f"127.0.0.1:{s.port}" for s in redis_sentinel.sentinels)
    assert redis_sentinel.url == f"redis+sentinel://{ports}/primary"
    assert len(redis_sentinel.sentinels) == 3


def test_failover_switches_the_master(redis_sentinel: RedisSentinel) -> None:
    """kill -9 of the master: every sentinel names the replica, which has the replicated write."""
    client = redis_sentinel.client()
    client.set("k", "v")
    assert client.wait(1, 2000) == 1
    old, replica = redis_sentinel.master(), redis_sentinel.replicas()[0]
    assert redis_sentinel.kill_master() is old and old.proc is not None
    assert old.proc.poll() is not None
    seconds = redis_sentinel.wait_failover()
    assert redis_sentinel.master() is replica
    assert client.get("k") == b"v"
    client.set("after", 1)
    assert 0 < seconds < 15


def test_stalled_replica_makes_wait_return_zero(redis_sentinel: RedisSentinel) -> None:
    """With the replica SIGSTOPped, WAIT 1 100 returns 0 after 100 ms; after SIGCONT, 1."""
    client = redis_sentinel.client()
    client.set("k", 1)
    assert client.wait(1, 2000) == 1
    redis_sentinel.stall_replica()
    client.set("k", 2)
    began = time.monotonic()
    assert client.wait(1, 100) == 0
    assert time.monotonic() - began >= 0.1
    redis_sentinel.resume_replica()
    assert client.wait(1, 5000) == 1


def test_min_replicas_to_write_refuses_writes_without_a_replica(
    redis_sentinel_factory: Callable[..., RedisSentinel],
) -> None:
    """With min-replicas-to-write 1, the master refuses writes once its replica is gone."""
    setup = redis_sentinel_factory(min_replicas_to_write=1)
    client = setup.client()
    client.set("k", 1)
    setup.replicas()[0].kill()
    deadline = time.monotonic() + 10
    with pytest.raises(redis.ResponseError, match="NOREPLICAS"):
        while time.monotonic() < deadline:
            client.set("k", 2)
            time.sleep(0.05)
