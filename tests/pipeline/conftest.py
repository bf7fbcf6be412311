"""Fixtures for the pipeline tests: settings, clients and runtimes on the test's private Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from batchd import Client, Settings
from batchd.runtime import Runtime
from batchd.store import Keys, Store
from tests.pipeline import Flow

MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(redis_url: str) -> MakeSettings:
    """Settings on the test's Redis, with any section overridden: `make_settings(batch={...})`."""

    def make(**overrides: Any) -> Settings:
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
def store(redis_client: redis.Redis, keys: Keys) -> Store:
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
