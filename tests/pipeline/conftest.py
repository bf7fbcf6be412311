"""Fixtures for the pipeline tests: settings, clients and runtimes on the test's private Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchd import Client, Settings
from batchd.runtime import Runtime
from batchd.store import Keys, Store, connect
from tests.pipeline import Flow
from tests.support.cluster import (
    RedisCluster,
    one_command_table,
    redis_cluster_session,
    shared_redis_cluster,
)
from tests.support.redis import RedisServer

MakeSettings = Callable[..., Settings]

__all__ = ["redis_cluster_session", "shared_redis_cluster"]


@pytest.fixture(scope="session", autouse=True)
def _quick_cluster_clients() -> Iterator[None]:
    """Cluster clients share one COMMAND table: ~3 clients per test, 40 ms each, saved."""
    with one_command_table():
        yield


@pytest.fixture(params=["standalone", "cluster"])
def redis_kind(request: pytest.FixtureRequest) -> str:
    """Every pipeline test runs on one Redis server and on a Redis Cluster of three masters."""
    return str(request.param)


@pytest.fixture
def redis_url(redis_kind: str, redis_server: RedisServer, request: pytest.FixtureRequest) -> str:
    """The data Redis: the test's own server, or the session's cluster (flushed)."""
    if redis_kind == "cluster":
        cluster: RedisCluster = request.getfixturevalue("shared_redis_cluster")
        return cluster.url
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[Any]:
    """A client of the data Redis (a cluster client on a cluster)."""
    client = connect(redis_url)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def make_settings(redis_url: str, redis_server: RedisServer) -> MakeSettings:
    """Settings on the test's Redis, with any section overridden: `make_settings(batch={...})`.
    On a cluster, rq's queues live on the test's own standalone server (rq has no Cluster
    support)."""

    def make(**overrides: Any) -> Settings:
        if redis_url.startswith("redis+cluster"):
            overrides.setdefault("redis", {"rq_url": redis_server.url})
        return Settings.load(redis_url=redis_url, **overrides)

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings(batch={"max_wait": 60.0})


@pytest.fixture
def keys(settings: Settings) -> Keys:
    """The key names of the test's settings: tests that look into Redis build names with it."""
    return Keys(settings.prefix)


@pytest.fixture
def store(redis_client: Any, keys: Keys) -> Store:
    """The store on the test's Redis, to read and write batchd's data as batchd does."""
    return Store(redis_client, keys)


@pytest.fixture
def make_client(settings: Settings) -> Iterator[Callable[..., Client]]:
    """Clients closed at teardown; `make_client(other_settings)` for a differently set one."""
    made: list[Client] = []

    def make(s: Settings | None = None) -> Client:
        c = Client(settings=s or settings)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()


@pytest.fixture
def client(make_client: Callable[..., Client]) -> Client:
    return make_client()


@pytest.fixture
def make_runtime(settings: Settings) -> Iterator[Callable[..., Runtime]]:
    made: list[Runtime] = []

    def make(s: Settings | None = None) -> Runtime:
        rt = Runtime(s or settings)
        made.append(rt)
        return rt

    try:
        yield make
    finally:
        for rt in made:
            rt.close()


@pytest.fixture
def runtime(make_runtime: Callable[..., Runtime]) -> Runtime:
    return make_runtime()


@pytest.fixture
def flow(runtime: Runtime) -> Flow:
    return Flow(runtime)
