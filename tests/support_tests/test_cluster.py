"""The Redis Cluster fixture: it forms, routes, fails over, migrates and stalls for real."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import pytest
import redis

from tests.support.cluster import RedisCluster, slot_of, tag_for_slot


def test_cluster_forms_with_every_slot_served(shared_redis_cluster: RedisCluster) -> None:
    """Every node reports cluster_state:ok, 16384 slots assigned and six known nodes."""
    cluster = shared_redis_cluster
    assert len(cluster.nodes) == 6
    for node in cluster.nodes:
        info = dict(
            line.split(":", 1) for line in node.text("CLUSTER", "INFO").splitlines() if ":" in line
        )
        assert info["cluster_state"] == "ok"
        assert info["cluster_slots_assigned"] == "16384"
        assert info["cluster_known_nodes"] == "6"
    for master in cluster.masters():
        assert master.admin().info("replication")["connected_slaves"] == 1
    assert cluster.ready_seconds is not None and cluster.ready_seconds < 10


def test_write_lands_on_the_node_that_owns_its_slot(shared_redis_cluster: RedisCluster) -> None:
    """A key written through the cluster client is on its slot's master and nowhere else."""
    cluster = shared_redis_cluster
    client = cluster.client()
    for shard, (lo, _) in enumerate(cluster.slot_ranges()):
        key = f"{{{tag_for_slot(lo)}}}:k"
        client.set(key, shard)
        owner = cluster.node_for_key(key)
        assert owner is cluster.master(shard)
        assert owner.call("GET", key) == str(shard).encode()
        for other in cluster.masters():
            if other is not owner:
                with pytest.raises(redis.exceptions.MovedError):
                    other.call("GET", key)


def test_async_client_reaches_every_shard(shared_redis_cluster: RedisCluster) -> None:
    """The asyncio cluster client writes to and reads from every shard."""
    cluster = shared_redis_cluster
    keys = [f"{{{tag_for_slot(lo)}}}:k" for lo, _ in cluster.slot_ranges()]

    async def roundtrip() -> list[bytes | str | None]:
        client = cluster.async_client()
        try:
            for key in keys:
                await client.set(key, key)
            return [await client.get(key) for key in keys]
        finally:
            await client.aclose()

    assert asyncio.run(roundtrip()) == [key.encode() for key in keys]
    assert {cluster.node_for_key(key).shard for key in keys} == {0, 1, 2}


def test_url_and_startup_nodes_name_every_master(shared_redis_cluster: RedisCluster) -> None:
    """The redis+cluster:// URL lists the masters' host:port, the same as startup_nodes."""
    cluster = shared_redis_cluster
    scheme, _, rest = cluster.url.partition("://")
    assert scheme == "redis+cluster"
    assert rest.split(",") == [f"{h}:{p}" for h, p in cluster.startup_nodes]
    assert [p for _, p in cluster.startup_nodes] == cluster.master_ports()


def test_reset_empties_masters_and_replicas(shared_redis_cluster: RedisCluster) -> None:
    """reset() flushes every node and keeps the cluster when nothing disturbed it."""
    cluster = shared_redis_cluster
    client = cluster.client()
    for lo, _ in cluster.slot_ranges():
        client.set(f"{{{tag_for_slot(lo)}}}:k", 1)
    assert cluster.reset()
    assert [node.call("DBSIZE") for node in cluster.nodes] == [0] * 6


def test_stalled_replica_makes_wait_time_out(shared_redis_cluster: RedisCluster) -> None:
    """With its replica SIGSTOPped, WAIT 1 100 on the master returns 0; after SIGCONT, 1."""
    cluster = shared_redis_cluster
    master = cluster.master(0)
    key = f"{{{tag_for_slot(0)}}}:k"
    assert master.call("SET", key, 1) and master.call("WAIT", 1, 2000) == 1
    stalled = cluster.stall_replica(0)
    assert stalled.shard == 0 and stalled is not master
    began = time.monotonic()
    assert master.call("SET", key, 2)
    assert master.call("WAIT", 1, 100) == 0
    assert time.monotonic() - began >= 0.1
    cluster.resume_replica(0)
    assert master.call("WAIT", 1, 5000) == 1


def test_failover_promotes_a_replica_that_has_the_writes(
    redis_cluster: RedisCluster,
) -> None:
    """kill -9 of a master: its replica takes over its slots and serves every replicated write."""
    cluster = redis_cluster
    client = cluster.client()
    tag = tag_for_slot(cluster.slot_ranges()[1][0])
    for i in range(200):
        client.set(f"{{{tag}}}:{i}", i)
    old = cluster.master(1)
    assert old.call("WAIT", 1, 2000) == 1
    killed = cluster.kill_master(1)
    assert killed is old and not old.alive()
    seconds = cluster.wait_failover()
    new = cluster.master(1)
    assert new is not old and new.shard == 1
    assert cluster.node_for_key(f"{{{tag}}}:0") is new
    fresh = cluster.client()
    assert [int(fresh.get(f"{{{tag}}}:{i}") or -1) for i in range(200)] == list(range(200))
    assert 0 < seconds < 15
    assert not cluster.reset(), "a cluster that lost a node must not be handed out again"


def test_killed_master_rejoins_as_a_replica(redis_cluster: RedisCluster) -> None:
    """After a failover, restarting the old master makes it a synced replica of its successor."""
    cluster = redis_cluster
    old = cluster.kill_master(2)
    cluster.wait_failover()
    cluster.restart_node(old)
    new = cluster.master(2)
    assert new is not old
    info = old.admin().info("replication")
    assert info["role"] == "slave" and info["master_port"] == new.port
    assert info["master_link_status"] == "up"
    assert cluster.problem() is None


def test_crashed_master_keeps_its_writes_with_appendfsync_always(
    redis_cluster_factory: Callable[..., RedisCluster],
) -> None:
    """Without replicas, kill -9 and restart of a master loses no acknowledged write (AOF)."""
    cluster = redis_cluster_factory(masters=3, replicas=0, appendfsync="always")
    client = cluster.client()
    tag = tag_for_slot(0)
    for i in range(100):
        client.set(f"{{{tag}}}:{i}", i)
    node = cluster.master(0)
    node.server.kill()
    assert not node.alive()
    cluster.restart_node(node)
    assert node.call("DBSIZE") == 100
    assert [int(node.call("GET", f"{{{tag}}}:{i}")) for i in range(100)] == list(range(100))


def test_slot_migration_under_concurrent_writes_loses_nothing(
    redis_cluster: RedisCluster,
) -> None:
    """A slot moves live while a writer keeps writing to it; every acknowledged write is kept."""
    cluster = redis_cluster
    slot = cluster.slot_ranges()[0][0] + 7
    tag = tag_for_slot(slot)
    assert slot_of(f"{{{tag}}}:x") == slot
    client = cluster.client()
    for i in range(2000):
        client.set(f"{{{tag}}}:pre{i}", i)
    source, target = cluster.owner(slot), cluster.master(2)

    migrating = threading.Event()
    stop = threading.Event()
    written: list[int] = []
    during: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        writes = cluster.client()
        try:
            n = 0
            while not stop.is_set():
                writes.set(f"{{{tag}}}:w{n}", n)
                writes.incr(f"{{{tag}}}:counter")
                writes.set(f"{{{tag}}}:pre{n % 2000}", -n)
                written.append(n)
                if migrating.is_set():
                    during.append(n)
                n += 1
        except BaseException as exc:
            errors.append(exc)

    def between_batches(moved: int) -> None:
        migrating.set()
        time.sleep(0.005)  # room for the writer between two MIGRATEs

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        migration = cluster.migrate_slot(slot, 2, batch=50, between_batches=between_batches)
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    assert migration.source == source.port and migration.target == target.port
    assert migration.batches >= 40, "the slot held enough keys to take many batches"
    assert during, "writes happened while the slot was moving"
    assert cluster.owner(slot) is target
    assert source.call("CLUSTER", "COUNTKEYSINSLOT", slot) == 0
    reader = cluster.client()
    assert int(reader.get(f"{{{tag}}}:counter") or 0) == len(written)
    assert all(reader.get(f"{{{tag}}}:w{n}") == str(n).encode() for n in written)
    last = {n % 2000: -n for n in written}
    for i in range(2000):
        assert int(reader.get(f"{{{tag}}}:pre{i}") or 0) == last.get(i, i)
