"""Fixtures of the Redis Cluster scenarios: a real cluster, rq's own Redis, the emulator and
`batchd run` daemons, all real processes."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchd import Client, Settings
from batchd.errors import RedisUnavailableError, StoreError
from batchd.store import counters as counter_store
from batchd.store import replies as reply_store
from tests.e2e.conftest import params, unexpected_errors
from tests.support.cluster import (
    RedisCluster,
    redis_cluster,
    redis_cluster_factory,
    redis_cluster_session,
    shared_redis_cluster,
    slot_of,
    tag_for_slot,
)
from tests.support.daemon import DaemonProcess, daemon_env, wait_for
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer

__all__ = [
    "redis_cluster",
    "redis_cluster_factory",
    "redis_cluster_session",
    "shared_redis_cluster",
]

#: Two accounts and a reply queue whose hash tags land on three different shards of a cluster
#: whose slots are split evenly in three (checked by the test that relies on it).
ACCOUNTS = ("default", "other")
QUEUE = "results"


@dataclass
class ClusterStack:
    """A Redis Cluster (rq on a standalone Redis beside it), the emulator, daemons and a producer,
    torn down together."""

    tmp: Path
    cluster: RedisCluster
    rq: RedisServer
    emulator: EmulatorProcess
    daemons: list[DaemonProcess] = field(default_factory=list)
    _client: Client | None = None

    @property
    def accounts(self) -> dict[str, str]:
        """Account name -> its API key at the emulator."""
        return dict(zip(ACCOUNTS, self.emulator.api_keys, strict=True))

    def settings(self) -> Settings:
        return Settings.load(
            redis_url=self.cluster.url,
            redis={"rq_url": self.rq.url},
            accounts={name: {"api_key": key} for name, key in self.accounts.items()},
        )

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(settings=self.settings())
        return self._client

    def env(self, **extra: str) -> dict[str, str]:
        keys = {f"BATCHD_ACCOUNTS__{name.upper()}__API_KEY": k for name, k in self.accounts.items()}
        return daemon_env(
            self.cluster.url,
            self.emulator.url,
            self.emulator.api_key,
            {"BATCHD_REDIS__RQ_URL": self.rq.url, **keys, **extra},
        )

    def daemon(self, start: bool = True, **extra: str) -> DaemonProcess:
        d = DaemonProcess(self.tmp / f"daemon{len(self.daemons)}", self.env(**extra))
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def submit(self, n: int, *, account: str = "default", reply_to: str = QUEUE) -> list[str]:
        """Submit n sample requests; their ids."""
        items = [{"params": params(i), "account": account, "reply_to": reply_to} for i in range(n)]
        ids: list[str] = []
        for outcome in self.client.submit_many(items):
            assert not isinstance(outcome, Exception), outcome
            ids.append(outcome.id)
        return ids

    def counters(self) -> dict[str, int]:
        store = self.client.store
        return counter_store.total(store.read(counter_store.read(store.keys, list(ACCOUNTS))))

    def ended(self) -> int:
        return sum(v for k, v in self.counters().items() if k.startswith("ended:"))

    def outbox_empty(self) -> bool:
        store = self.client.store
        backlog = store.read(reply_store.backlog(store.keys, list(ACCOUNTS)))
        return all(waiting == 0 and parked == 0 for waiting, parked in backlog.values())

    def wait_ended(self, n: int, timeout: float = 90.0) -> None:
        """Until n requests ended and every reply left the outboxes for its queue."""
        try:
            wait_for(lambda: self.ended() >= n, timeout, f"{n} requests to end", step=0.1)
            wait_for(self.outbox_empty, timeout, "the reply outboxes to drain", step=0.05)
        except AssertionError:
            logs = "\n".join(d.log_text()[-4000:] for d in self.daemons)
            raise AssertionError(f"only {self.ended()} of {n} ended; logs:\n{logs}") from None

    def reply_ids(self, queue: str = QUEUE) -> list[str]:
        raw = self.client.redis.lrange(self.client.keys.reply_queue(queue), 0, -1)
        return [str(orjson.loads(r)["id"]) for r in raw]

    def audit(self, account: str = "default") -> dict[str, Any]:
        return self.emulator.audit()[self.accounts[account]]

    def slot(self, account: str) -> int:
        """The hash slot of every key of this account."""
        return slot_of(self.client.keys.counters(account))

    def close(self) -> None:
        for d in self.daemons:
            d.kill()
        if self._client is not None:
            self._client.close()


class Producer:
    """Submits `batches` groups of `size` requests from a thread of its own, on its own client,
    riding out the cluster's refusals while slots move or masters fail over (it tries again,
    under the same idempotency keys)."""

    def __init__(self, stack: ClusterStack, *, batches: int, size: int, pause: float = 0.05):
        self.stack = stack
        self.batches = batches
        self.size = size
        self.pause = pause
        self.ids: list[str] = []
        self.retries = 0
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(120)
        assert not self._thread.is_alive(), "the producer did not finish"
        if self.error is not None:
            raise self.error

    def _run(self) -> None:
        try:
            with Client(settings=self.stack.settings()) as client:
                for b in range(self.batches):
                    for i in range(self.size):
                        self.ids.append(self._submit(client, f"p{b}-{i}", b * self.size + i))
                    time.sleep(self.pause)
        except BaseException as exc:
            self.error = exc

    def _submit(self, client: Client, key: str, n: int) -> str:
        while True:
            try:
                return client.submit(params(n), key=key, reply_to=QUEUE).id
            except (RedisUnavailableError, StoreError):
                self.retries += 1
                time.sleep(0.1)


def replicated(cluster: RedisCluster, slot: int, timeout_ms: int = 5000) -> bool:
    """Whether every write the master of `slot` has taken so far reached its replica (a write of
    our own in that slot, then WAIT: replication keeps the master's order)."""
    node = cluster.owner(slot)
    node.call("SET", f"{{{tag_for_slot(slot)}}}:probe", "1")
    return int(node.call("WAIT", 1, timeout_ms)) >= 1


def assert_exactly_once(stack: ClusterStack, ids: list[str], account: str = "default") -> None:
    """Every request on the reply queue once and succeeded; the API billed each once, in no two
    live batches, and holds no batch batchd did not record."""
    replies = stack.reply_ids()
    assert len(replies) == len(set(replies)), "the reply queue holds a duplicate"
    assert set(ids) <= set(replies), "a request is missing from its reply queue"
    assert {stack.client.get(i).state for i in ids} == {"succeeded"}
    audit = stack.audit(account)
    assert audit["double_submitted"] == [], "a request was in two live batches"
    assert audit["billed"] == len(ids), "a request was billed twice"
    created = counter_store.total(
        stack.client.store.read(counter_store.read(stack.client.keys, [account]))
    ).get("batches_created", 0)
    assert audit["batches_created"] == created, "the API holds a batch batchd never recorded"


def _stack(
    tmp_path: Path,
    cluster: RedisCluster,
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    request: pytest.FixtureRequest,
) -> Iterator[ClusterStack]:
    s = ClusterStack(tmp_path, cluster, redis_server, emulator)
    try:
        yield s
    finally:
        s.close()
    if "tolerates_tracebacks" not in request.keywords:
        errors = unexpected_errors(s.daemons)
        assert not errors, "a daemon raised where nothing expected it:\n" + "\n".join(errors)


@pytest.fixture
def stack(
    tmp_path: Path,
    shared_redis_cluster: RedisCluster,
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    request: pytest.FixtureRequest,
) -> Iterator[ClusterStack]:
    """Daemons on the session's cluster (flushed), for scenarios that do not disturb it."""
    yield from _stack(tmp_path, shared_redis_cluster, redis_server, emulator, request)


@pytest.fixture
def own_stack(
    tmp_path: Path,
    redis_cluster: RedisCluster,
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    request: pytest.FixtureRequest,
) -> Iterator[ClusterStack]:
    """Daemons on a private cluster, for scenarios that kill masters or move slots."""
    yield from _stack(tmp_path, redis_cluster, redis_server, emulator, request)
