"""A Sentinel failover during batch creation: a submission intent the replica never confirmed is
not acted on, so the batch is created, and paid, once."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from batchd import Client, Settings
from batchd.store import counters as counter_store
from tests.e2e.conftest import params, unexpected_errors
from tests.support.daemon import DaemonProcess, daemon_env, wait_for
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer
from tests.support.sentinel import RedisSentinel, redis_sentinel, redis_sentinel_factory

__all__ = ["redis_sentinel", "redis_sentinel_factory"]

HOLDING = "submission intent not on the replicas yet; holding"


def replicated(server: RedisServer) -> bool:
    """Whether every write the master took so far reached its replica (our write, then WAIT)."""
    with redis.Redis(port=server.port, socket_timeout=10) as node:
        node.set("probe", "1")
        return int(node.execute_command("WAIT", 1, 5000)) >= 1


@pytest.fixture
def daemon(
    tmp_path: Path,
    redis_sentinel: RedisSentinel,
    redis_server: RedisServer,
    emulator: EmulatorProcess,
) -> Iterator[DaemonProcess]:
    """`batchd run` on the Sentinel-watched master (rq on a Redis of its own), cutting only
    when told to, waiting half a second per WAIT."""
    env = daemon_env(
        redis_sentinel.url,
        emulator.url,
        emulator.api_key,
        {
            "BATCHD_REDIS__RQ_URL": redis_server.url,
            "BATCHD_REDIS__WAIT_TIMEOUT": "0.5",
            "BATCHD_BATCH__MAX_WAIT": "3600",
        },
    )
    d = DaemonProcess(tmp_path / "daemon", env)
    d.start()
    try:
        yield d
    finally:
        d.kill()
    errors = unexpected_errors([d])
    assert not errors, "a daemon raised where nothing expected it:\n" + "\n".join(errors)


def test_stalled_replica_during_batch_creation_then_failover_pays_one_batch(
    daemon: DaemonProcess,
    redis_sentinel: RedisSentinel,
    redis_server: RedisServer,
    emulator: EmulatorProcess,
) -> None:
    """A stalled replica holds the intent, no POST; after the failover one batch is paid."""
    settings = Settings.load(redis_url=redis_sentinel.url, redis={"rq_url": redis_server.url})
    with Client(settings=settings) as client:
        ids = [client.submit(params(i), reply_to="out").id for i in range(50)]
        assert replicated(redis_sentinel.master())
        redis_sentinel.stall_replica()
        client.flush()
        wait_for(lambda: HOLDING in daemon.log_text(), 30, "the intent to be held")
        assert emulator.audit()[emulator.api_key]["batches_created"] == 0
        old = redis_sentinel.kill_master()
        redis_sentinel.resume_replica()
        redis_sentinel.wait_failover()
        redis_sentinel.restart(old)  # back as the new master's replica, so WAIT can succeed
        results = [client.wait(rid, timeout=90) for rid in ids]
        counted = counter_store.total(
            client.store.read(counter_store.read(client.keys, ["default"]))
        )
    assert {r.status for r in results} == {"succeeded"}
    audit = emulator.audit()[emulator.api_key]
    assert audit["batches_created"] == 1
    assert audit["billed"] == 50
    assert audit["double_submitted"] == []
    assert counted["batches_created"] == 1
