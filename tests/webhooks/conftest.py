"""Fixtures for the webhook tests: the store, a loopback receiver and a sender factory, each
cleaned up."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from batchd.settings import Settings
from batchd.store import Store
from batchd.webhooks.sender import WebhookSender
from tests.webhooks.support import KEYS, Receiver, RunningSender


@pytest.fixture
def store(redis_client: redis.Redis) -> Store:
    """The outbox's Redis as batchd's store layer reads and writes it."""
    return Store(redis_client, KEYS)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_sender() -> Iterator[Callable[..., RunningSender]]:
    running: list[RunningSender] = []

    def start(settings: Settings, **options: Any) -> RunningSender:
        assert settings.redis_url is not None
        sender = RunningSender(WebhookSender(settings, settings.redis_url, **options)).start()
        running.append(sender)
        return sender

    try:
        yield start
    finally:
        for sender in running:
            sender.stop()
