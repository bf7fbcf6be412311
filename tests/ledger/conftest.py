"""Fixtures of the ledger tests: settings, a producer and a runtime on the test's own Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchd import Client, Settings
from batchd.runtime import Runtime
from tests.e2e.conftest import stack
from tests.ledger import Books
from tests.support.redis import RedisServer

__all__ = ["stack"]

MakeSettings = Callable[..., Settings]


@pytest.fixture
def make_settings(redis_server: RedisServer) -> MakeSettings:
    """Settings on the test's Redis with sections overridden: `make_settings(budgets={...})`."""

    def make(**overrides: Any) -> Settings:
        overrides.setdefault("accounts", {"default": {}, "team": {}})
        return Settings.load(redis_url=redis_server.url, **overrides)

    return make


@pytest.fixture
def settings(make_settings: MakeSettings) -> Settings:
    return make_settings()


@pytest.fixture
def make_books(settings: Settings) -> Iterator[Callable[..., Books]]:
    """Books on a runtime and a client of the given settings (default: the test's), closed at
    teardown."""
    made: list[tuple[Runtime, Client]] = []

    def make(s: Settings | None = None) -> Books:
        rt, client = Runtime(s or settings), Client(settings=s or settings)
        made.append((rt, client))
        return Books(rt, client)

    try:
        yield make
    finally:
        for rt, client in made:
            client.close()
            rt.close()


@pytest.fixture
def books(make_books: Callable[..., Books]) -> Books:
    return make_books()
