"""Fixtures of the catalogue: a daemon behind an answer-spoiling proxy, and one that is not."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchd import Client, Result, Settings
from batchd.store import Keys, Store
from tests.catalogue.mangler import Mangler
from tests.support.daemon import DaemonProcess, daemon_env
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer
from tests.webhooks.support import SECRET as WEBHOOK_SECRET

PARAMS = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hello"}],
}


@dataclass
class Stack:
    """Redis, the emulator (behind the mangler), one `batchd run`, a producer client."""

    redis: RedisServer
    emulator: EmulatorProcess
    mangler: Mangler
    daemon: DaemonProcess
    client: Client

    @property
    def keys(self) -> Keys:
        return self.client.keys

    @property
    def store(self) -> Store:
        return self.client.store

    def submit(self, n: int, **extra: Any) -> list[str]:
        items = [{"params": {**PARAMS, "metadata": {"user_id": f"u{i}"}}, **extra}
                 for i in range(n)]  # fmt: skip
        ids = []
        for outcome in self.client.submit_many(items):
            assert not isinstance(outcome, Exception), outcome
            ids.append(outcome.id)
        self.client.flush()
        return ids

    def results(self, ids: list[str], timeout: float = 120.0) -> list[Result]:
        try:
            return [self.client.wait(i, timeout=timeout) for i in ids]
        except Exception:
            print(self.daemon.log_text()[-6000:])
            raise

    def audit(self) -> dict[str, Any]:
        return self.emulator.audit()[self.emulator.api_key]

    def assert_unharmed(self) -> None:
        """Every fault rule fired, the daemon still runs, and the API never held a request in
        two live batches."""
        self.mangler.assert_fired()
        assert self.daemon.alive(), self.daemon.log_text()[-4000:]
        assert self.audit()["double_submitted"] == []


@pytest.fixture(scope="module")
def module_stack(
    tmp_path_factory: pytest.TempPathFactory, emulator_server: EmulatorProcess
) -> Iterator[Stack]:
    directory: Path = tmp_path_factory.mktemp("catalogue")
    redis = RedisServer(directory / "redis")
    redis.start()
    mangler = Mangler(emulator_server.url)
    mangler.start()
    env = daemon_env(redis.url, mangler.url, emulator_server.api_key, {
        "BATCHD_HTTP__ENABLED": "false",
        "BATCHD_RETRY__MAX_ATTEMPTS": "3",
        "BATCHD_WEBHOOKS__SECRET": WEBHOOK_SECRET,
        "BATCHD_WEBHOOKS__ALLOW_NETWORKS": '["127.0.0.1/32"]',
        "BATCHD_WEBHOOKS__SCHEDULE": "[0, 0.2, 0.2]",
        "BATCHD_WEBHOOKS__JITTER": "0",
        "BATCHD_WEBHOOKS__TIMEOUT": "1",
        # A batch the API answers 404 for (and its list does not show) is gone after 2 s.
        "BATCHD_POLL__NOT_FOUND_GRACE": "2",
        # Each batch polled on its own: the answers spoiled here are those of retrieve (the
        # listing's own faults are in tests/e2e and the chaos run).
        "BATCHD_POLL__LIST_INTERVAL": "0",
    })  # fmt: skip
    daemon = DaemonProcess(directory / "daemon", env)
    daemon.start()
    client = Client(settings=Settings.load(redis_url=redis.url))
    try:
        yield Stack(redis, emulator_server, mangler, daemon, client)
    finally:
        client.close()
        daemon.kill()
        mangler.stop()
        redis.kill()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.stash[_CALL_FAILED] = report.failed
    return report


_CALL_FAILED = pytest.StashKey[bool]()


@pytest.fixture
def stack(
    module_stack: Stack, emulator: EmulatorProcess, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """The module's stack with no rules, and the emulator reset (nothing in flight is left).

    A test that passed with a fault rule that never fired fails here: its fault proved nothing.
    """
    module_stack.mangler.clear()
    try:
        yield module_stack
        if not request.node.stash.get(_CALL_FAILED, True):
            module_stack.mangler.assert_fired()
    finally:
        module_stack.mangler.clear()
