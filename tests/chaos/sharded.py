"""The system under fire on a Redis Cluster: three masters with a replica each, rq on a Redis of
its own, the emulator, batchd replicas, the API's proxy and a webhook receiver.

A cluster client follows each node's own address, so no proxy stands on the road to Redis: the
nemesis kills masters (their replicas take over), moves slots live and drops every connection.
Producers and consumers WAIT for a replica before a submit or an ack counts (`wait_submits`), so
what they were told survives a failover.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from batchd import Settings
from batchd.store import Keys
from tests.chaos.cluster import API_KEY, Cluster, replica_settings
from tests.chaos.proxy import ProxyProcess
from tests.support.cluster import RedisCluster, slot_of
from tests.support.daemon import daemon_env
from tests.support.redis import RedisServer

#: Moving a slot: keys per MIGRATE (an account's slot holds tens of thousands by the end).
MIGRATE_BATCH = 500
#: Every node: writes need a replica at most 10 s behind.
MIN_REPLICAS = ("--min-replicas-to-write", "1", "--min-replicas-max-lag", "10")


class ShardedCluster(Cluster):
    """`Cluster` with its data on a Redis Cluster and rq's queues on a standalone Redis."""

    def __init__(self, directory: Path, *, queues: int, **options: Any) -> None:
        super().__init__(directory, **options)
        #: Replicas started in the place of ones that exited on their own.
        self.restarted = 0
        self._to_move: list[str] = []
        # As a deployment that must not lose acknowledged writes runs it: a master refuses
        # writes while no replica follows it (a killed master restarting with its old slots,
        # say, until it learns it was replaced), so no write lands where a failover drops it.
        self.data = RedisCluster(directory / "redis-cluster", extra=MIN_REPLICAS)
        # `self.redis` stays the standalone server: here it holds rq's queues only.
        self.redis = RedisServer(directory / "rq", appendfsync="always")
        keys = Keys(Settings.model_fields["prefix"].default)
        #: The slots the nemesis moves: the account's, and each reply queue's.
        self.slots = {"account default": slot_of(keys.counters("default"))} | {
            f"queue chaos-{i}": slot_of(keys.reply_queue(f"chaos-{i}")) for i in range(queues)
        }

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.data.start()
        self.redis.start()
        self.emulator.start()
        self.receiver.start()
        api_port = int(self.emulator.url.rsplit(":", 1)[1])
        self.api_proxy = ProxyProcess(api_port, "api")
        self.api_proxy.start()
        for _ in range(self.size):
            self.replicas.append(self._spawn())

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.data.kill()

    @property
    def redis_url(self) -> str:
        return self.data.url

    def settings(self) -> Settings:
        return Settings.load(
            redis_url=self.data.url, redis={"rq_url": self.redis.url, "wait_submits": True}
        )

    def env(self) -> dict[str, str]:
        assert self.api_proxy is not None
        return daemon_env(
            self.data.url,
            f"http://127.0.0.1:{self.api_proxy.port}",
            API_KEY,
            replica_settings(self.lease, self.max_requests)
            | {"BATCHD_REDIS__RQ_URL": self.redis.url}
            | self.extra_env,
        )

    def restart_exited(self) -> int:
        """Start a replica in the place of each that exited on its own, as systemd's
        `Restart=always` would: one that starts while a master is down exits at once."""
        with self._lock:
            exited = [i for i, d in enumerate(self.replicas) if not d.alive()]
            for i in exited:
                self.retired.append(self.replicas[i])
                self.replicas[i] = self._spawn()
            self.restarted += len(exited)
        return len(exited)

    def ensure_replicas(self) -> int:
        replaced = super().ensure_replicas()
        with self._lock:
            self.restarted += replaced
        return replaced

    # -- faults ---------------------------------------------------------------------------
    def kill_master(self, shard: int) -> str:
        """kill -9 of a shard's master; its replica takes over and the old master comes back
        as the new one's replica (so the shard can fail over again)."""
        node = self.data.kill_master(shard)
        took = self.data.wait_failover()
        self.data.restart_node(node)
        return f"shard {shard}: master :{node.port} killed, replica promoted in {took:.1f} s"

    def migrate(self, rng: random.Random) -> str:
        """Move a slot to another master, live: the account's first (all of its keys, tens of
        thousands, while its writes wait), then each reply queue's in a seeded order, again."""
        if not self._to_move:
            queues = sorted(n for n in self.slots if n.startswith("queue"))
            rng.shuffle(queues)
            self._to_move = ["account default", *queues]
        name = self._to_move.pop(0)
        slot = self.slots[name]
        source = self.data.owner(slot)
        target = rng.choice([m for m in self.data.masters() if m is not source])
        m = self.data.migrate_slot(slot, target, batch=MIGRATE_BATCH)
        return (
            f"{name} (slot {slot}, {m.keys} keys) moved :{m.source} -> :{m.target} "
            f"in {m.seconds:.1f} s"
        )

    def drop_connections(self) -> int:
        """CLIENT KILL of every client connection to every node (replication links stay)."""
        killed = 0
        for node in self.data.nodes:
            if node.alive() and not node.stalled:
                killed += int(node.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
        return killed
