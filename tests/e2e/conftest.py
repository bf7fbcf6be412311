"""Fixtures of the end-to-end tests: Redis, the emulator and `batchd run`, all real processes."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchd import Client, Settings
from batchd.store import counters as counter_store
from batchd.store import replies as reply_store
from tests.support.daemon import DaemonProcess, daemon_env, wait_for
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer

PARAMS = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Say hello"}],
}


def params(i: int, **extra: Any) -> dict[str, Any]:
    return {**PARAMS, "messages": [{"role": "user", "content": f"Say hello #{i}"}], **extra}


@dataclass
class Stack:
    """Redis + emulator + daemons + a producer client, torn down together."""

    tmp: Path
    redis: RedisServer
    emulator: EmulatorProcess
    client: Client
    daemons: list[DaemonProcess] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        return daemon_env(self.redis.url, self.emulator.url, self.emulator.api_key, extra)

    def daemon(self, start: bool = True, **extra: str) -> DaemonProcess:
        d = DaemonProcess(self.tmp / f"daemon{len(self.daemons)}", self.env(**extra))
        self.daemons.append(d)
        if start:
            d.start()
        return d

    def counters(self) -> dict[str, int]:
        accounts = list(self.client.settings.accounts)
        return counter_store.total(
            self.client.store.read(counter_store.read(self.client.keys, accounts))
        )

    def outbox_empty(self) -> bool:
        accounts = list(self.client.settings.accounts)
        backlog = self.client.store.read(reply_store.backlog(self.client.keys, accounts))
        return all(waiting == 0 for waiting, _ in backlog.values())

    def ended(self) -> int:
        return sum(v for k, v in self.counters().items() if k.startswith("ended:"))

    def wait_ended(self, n: int, timeout: float = 120.0) -> None:
        def done() -> bool:
            return self.ended() >= n

        try:
            wait_for(done, timeout, f"{n} requests to end", step=0.1)
            # Ended requests reach their reply queues through the account's outbox, moved by
            # the step that ended them right after: wait for it to be empty too.
            wait_for(self.outbox_empty, timeout, "the reply outbox to drain", step=0.05)
        except AssertionError:
            logs = "\n".join(d.log_text()[-4000:] for d in self.daemons)
            raise AssertionError(f"only {self.ended()} of {n} ended; logs:\n{logs}") from None

    def reply_and_ack(self, queue: str) -> Any:
        """The next envelope on a reply queue, as a dict."""
        for result in self.client.replies(queue, timeout=10):
            self.client.ack(result)
            return result.to_dict()
        raise AssertionError(f"nothing on reply queue {queue}")

    def reply_ids(self, queue: str) -> list[str]:
        raw = self.client.redis.lrange(self.client.keys.reply_queue(queue), 0, -1)
        return [orjson.loads(r)["id"] for r in raw]


#: What a daemon's log holds only when code raised where nothing expected it to.
UNEXPECTED = ("Traceback (most recent call last)", "loop step failed")


def unexpected_errors(daemons: list[DaemonProcess]) -> list[str]:
    """Lines of the daemons' logs showing an exception no code path handled."""
    found: list[str] = []
    for d in daemons:
        for line in d.log_text().splitlines():
            if any(mark in line for mark in UNEXPECTED):
                found.append(line[:300])
    return found


@pytest.fixture
def stack(
    tmp_path: Path,
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    client = Client(settings=Settings.load(redis_url=redis_server.url))
    s = Stack(tmp_path, redis_server, emulator, client)
    try:
        yield s
    finally:
        for d in s.daemons:
            d.kill()
        client.close()
    # A daemon that recovered from its own bug still has the bug: no test passes over one.
    if "tolerates_tracebacks" not in request.keywords:
        errors = unexpected_errors(s.daemons)
        assert not errors, "a daemon raised where nothing expected it:\n" + "\n".join(errors)


SubmitFn = Callable[..., list[str]]


@pytest.fixture
def submit(stack: Stack) -> SubmitFn:
    """Submit n sample requests; returns their ids."""

    def go(n: int, *, reply_to: str | None = "results", **extra: Any) -> list[str]:
        items = [{"params": params(i, **extra), "reply_to": reply_to} for i in range(n)]
        ids = []
        for outcome in stack.client.submit_many(items):
            assert not isinstance(outcome, Exception), outcome
            ids.append(outcome.id)
        return ids

    return go
