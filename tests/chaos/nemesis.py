"""The nemesis: injects faults at random moments drawn from a seed, and heals them again.

Every kind of fault comes up at least once (in a seeded order) before kinds repeat at random;
timed faults (a pause, a delay, an API profile) heal themselves after a seeded duration.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from batchd.emulator.config import EXPIRY_SECONDS
from tests.chaos.cluster import Cluster
from tests.chaos.sharded import ShardedCluster

#: Every fault the nemesis knows, with what it does.
KINDS: dict[str, str] = {
    "replica_kill": "kill -9 of a replica, a new one started",
    "replica_pause": "SIGSTOP of a replica past its lease, then SIGCONT (a zombie)",
    "redis_restart": "Redis restarted cleanly (SHUTDOWN)",
    "redis_crash": "Redis killed -9 and restarted (appendfsync always)",
    "redis_drop": "every batchd-Redis connection dropped",
    "redis_delay": "batchd-Redis traffic delayed",
    "redis_partition": "batchd cut off from Redis for a while",
    "api_drop": "every batchd-API connection dropped",
    "api_delay": "batchd-API traffic delayed",
    "api_partition": "batchd cut off from the API for a while",
    "api_429": "API answers 429 with retry-after",
    "api_500": "API answers 500",
    "api_529": "API answers 529 overloaded",
    "api_slow": "API answers slowly",
    "results_cut": "results streams cut mid-way",
    "create_lost": "batch created but its answer lost",
    "errored_results": "requests end errored (api_error, overloaded_error)",
    "expired_results": "requests end expired",
    "queue_full": "the API's processing queue is full",
    "transient_404": "retrieve and results answer 404 for a while on some batches",
    "list_lag": "new batches absent from the API's list for a while",
    "clock_offset": "the API's clock runs ahead of or behind batchd's",
    "tier_limits": "the API's rate limits of a usage tier (requests per minute, queue cap)",
}

#: The faults of a run on a Redis Cluster: Redis's own faults are the cluster's (no proxy stands
#: on the road to it), the rest as on one Redis.
CLUSTER_KINDS: dict[str, str] = {
    "master_kill": "a master killed -9, its replica promoted, the old one back as a replica",
    "slot_migration": "the account's or a reply queue's slot moved live to another master",
    "client_kill": "every client connection to every node dropped (CLIENT KILL)",
    "rq_crash": "rq's Redis killed -9 and restarted (appendfsync always)",
    **{
        kind: text
        for kind, text in KINDS.items()
        if not kind.startswith("redis_")  # one Redis, restarted or reached through a proxy
    },
}

#: Emulator profile keys of each API fault kind.
PROFILES: dict[str, Callable[[random.Random], dict[str, Any]]] = {
    "api_429": lambda r: {"http_429_rate": 0.3, "retry_after": 1.0},
    "api_500": lambda r: {"http_500_rate": 0.3},
    "api_529": lambda r: {"http_529_rate": 0.3},
    "api_slow": lambda r: {"slow_rate": 0.4, "slow_seconds": round(r.uniform(0.5, 1.5), 2)},
    "results_cut": lambda r: {
        "results_reset_rate": 0.7,
        "results_reset_after": round(r.uniform(0.2, 0.8), 2),
        "results_reset_mode": r.choice(["close", "rst"]),
    },
    "create_lost": lambda r: {
        "create_lost_response_rate": 0.5,
        "create_lost_response_status": r.choice([0, 500, 529]),
    },
    "errored_results": lambda r: {"result_api_error_rate": 0.15, "result_overloaded_rate": 0.1},
    "expired_results": lambda r: {"result_expired_rate": 0.25},
    "queue_full": lambda r: {"max_processing_requests": 50, "retry_after": 1.0},
    "transient_404": lambda r: {
        "transient_404_rate": 0.5,
        "transient_404_seconds": round(r.uniform(1.0, 4.0), 2),
    },
    "list_lag": lambda r: {"list_lag": round(r.uniform(0.5, 2.5), 2)},
    "clock_offset": lambda r: {"clock_offset": round(r.uniform(-120.0, 120.0), 1)},
    "tier_limits": lambda r: {"tier": r.choice([1, 2])},
}


@dataclass
class Injected:
    at: float
    kind: str
    detail: str


@dataclass
class Nemesis:
    """Runs in its own thread; `stop_when` says when the load is over and it may stop."""

    cluster: Cluster
    seed: int
    gap: tuple[float, float] = (2.0, 5.0)
    #: Multiplies every fault's duration (the reduced run uses shorter ones).
    pace: float = 1.0
    kinds: tuple[str, ...] = tuple(KINDS)
    log: list[Injected] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.started = time.monotonic()
        self._heals: list[tuple[float, int, str, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._profiles: dict[str, dict[str, Any]] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._load_done = threading.Event()
        self._thread = threading.Thread(target=self._main, name="nemesis", daemon=True)
        self._healer = threading.Thread(target=self._heal_loop, name="healer", daemon=True)

    # -- control --------------------------------------------------------------------------
    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()
        self._healer.start()

    def load_done(self) -> None:
        self._load_done.set()

    def covered(self) -> bool:
        return set(self.counts()) >= set(self.kinds)

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def stop_and_heal(self) -> None:
        """Stop injecting, and heal every fault still active, right now."""
        self._stop.set()
        self._thread.join(120)
        with self._lock:
            heals, self._heals = self._heals, []
        for _, _, _, heal in sorted(heals):
            self._safely(heal, "heal")
        self._healer.join(5)
        self._profiles.clear()
        self._safely(lambda: self.cluster.emulator_profile({}), "reset profile")
        for proxy in (self.cluster.redis_proxy, self.cluster.api_proxy):
            if proxy is not None:
                self._safely(proxy.heal, "heal proxy")
        self.cluster.ensure_replicas()

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(i.kind for i in self.log)

    # -- the loop -------------------------------------------------------------------------
    def _main(self) -> None:
        order = list(self.kinds)
        self.rng.shuffle(order)
        while not self._stop.is_set():
            if self._load_done.is_set() and self.covered():
                return
            kind = order.pop(0) if order else self.rng.choice(self.kinds)
            self._safely(functools.partial(self.inject, kind), kind)
            self._stop.wait(self.rng.uniform(*self.gap))

    def _heal_loop(self) -> None:
        while not self._stop.is_set():
            due = None
            with self._lock:
                if self._heals and self._heals[0][0] <= time.monotonic():
                    due = heapq.heappop(self._heals)
            if due is None:
                self._stop.wait(0.05)
                continue
            self._safely(due[3], f"heal {due[2]}")

    def _after(self, seconds: float, kind: str, heal: Callable[[], None]) -> None:
        with self._lock:
            heapq.heappush(self._heals, (time.monotonic() + seconds, next(self._seq), kind, heal))

    def _record(self, kind: str, detail: str) -> None:
        with self._lock:
            self.log.append(Injected(round(time.monotonic() - self.started, 2), kind, detail))

    def _safely(self, action: Callable[[], object], what: str) -> None:
        try:
            action()
        except Exception as exc:  # the run goes on; the report lists what the nemesis hit
            self.errors.append(f"{what}: {type(exc).__name__}: {exc}")

    def _duration(self, low: float, high: float) -> float:
        return round(self.rng.uniform(low, high) * self.pace, 2)

    # -- the faults -----------------------------------------------------------------------
    def inject(self, kind: str) -> None:
        c = self.cluster
        r = self.rng
        if kind == "replica_kill":
            i = r.randrange(len(c.replicas))
            old = c.kill_replica(i)
            self._record(kind, f"replica {i} ({old.directory.name}) killed")
        elif kind == "replica_pause":
            i = r.randrange(len(c.replicas))
            # Past the lease, so its leases run out and others take its work over.
            seconds = round(c.lease + r.uniform(1.0, 3.0), 2)
            if c.pause_replica(i):
                self._after(seconds, kind, lambda: c.resume_replica(i))
                self._record(kind, f"replica {i} stopped for {seconds} s")
        elif kind == "redis_restart":
            client = redis.Redis.from_url(c.redis.url)
            try:
                client.shutdown(nosave=False)
            except redis.ConnectionError:
                pass  # SHUTDOWN closes the connection as its answer
            finally:
                client.close()
            assert c.redis.proc is not None
            c.redis.proc.wait(30)
            c.redis.start()
            self._record(kind, "SHUTDOWN, started again")
        elif kind == "redis_crash":
            c.redis.restart(crash=True)
            self._record(kind, "kill -9, started again")
        elif kind == "master_kill":
            assert isinstance(c, ShardedCluster)
            self._record(kind, c.kill_master(r.randrange(c.data.shards)))
        elif kind == "slot_migration":
            assert isinstance(c, ShardedCluster)
            self._record(kind, c.migrate(r))
        elif kind == "client_kill":
            assert isinstance(c, ShardedCluster)
            self._record(kind, f"{c.drop_connections()} connections dropped")
        elif kind == "rq_crash":
            c.redis.restart(crash=True)
            self._record(kind, "rq's Redis: kill -9, started again")
        elif kind in ("redis_drop", "api_drop"):
            proxy = c.redis_proxy if kind == "redis_drop" else c.api_proxy
            assert proxy is not None
            self._record(kind, f"{proxy.drop()} connections dropped")
        elif kind in ("redis_delay", "api_delay"):
            proxy = c.redis_proxy if kind == "redis_delay" else c.api_proxy
            assert proxy is not None
            delay = round(r.uniform(0.02, 0.3), 3)
            seconds = self._duration(2.0, 6.0)
            proxy.delay(delay)
            self._after(seconds, kind, proxy.heal)
            self._record(kind, f"{delay * 1000:.0f} ms per read for {seconds} s")
        elif kind in ("redis_partition", "api_partition"):
            proxy = c.redis_proxy if kind == "redis_partition" else c.api_proxy
            assert proxy is not None
            seconds = self._duration(1.0, 4.0)
            proxy.partition()
            self._after(seconds, kind, proxy.heal)
            self._record(kind, f"{seconds} s")
        elif kind in PROFILES:
            changes = PROFILES[kind](r)
            seconds = self._duration(3.0, 8.0)
            with self._lock:
                self._profiles[kind] = changes
                merged = self._merged()
            c.emulator_profile(merged)
            self._after(seconds, kind, lambda: self._end_profile(kind))
            self._record(kind, f"{changes} for {seconds} s")
        else:
            raise ValueError(f"unknown fault kind {kind}")

    def _merged(self) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        for changes in self._profiles.values():
            merged.update(changes)
        return merged

    def _end_profile(self, kind: str) -> None:
        with self._lock:
            self._profiles.pop(kind, None)
            merged = self._merged()
        self.cluster.emulator_profile(merged)
        if kind == "expired_results":
            # A request expires only when its batch reaches its 24 h limit, which keeps the
            # batch open that long: let that day pass on the emulator's clock.
            self.cluster.emulator.advance(EXPIRY_SECONDS + 1)
