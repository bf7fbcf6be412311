"""Test helpers for webhooks: a real HTTP receiver on loopback, the sender in a thread or in a
process of its own (optionally on a clock set off from Redis's), and polling the outbox.

The receiver runs aiohttp on its own loop in a thread and answers with whatever `reply` says.
"""

from __future__ import annotations

import asyncio
import glob
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from batchd.settings import Settings
from batchd.store import Keys, Store, new_token, request_id
from batchd.webhooks.outbox import DeliveryRecord, enqueue_delivery, read_delivery
from batchd.webhooks.sender import WebhookSender

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_c2VjcmV0LW9mLWxhc3QteWVhcg=="
KEYS = Keys("batchd")
ROOT = Path(__file__).resolve().parents[2]

T = TypeVar("T")


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0


class Receiver:
    """An HTTP server on 127.0.0.1 that records every request and answers per `reply`."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self.reply: Callable[[Received], Reply] = lambda r: Reply()
        self.active = 0
        self.max_active = 0
        self._cond = threading.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(
            app, shutdown_timeout=0.2, handler_cancellation=True, access_log=None
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        received = Received(request.path, dict(request.headers), await request.read(), time.time())
        with self._cond:
            self.requests.append(received)
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            self._cond.notify_all()
        try:
            reply = self.reply(received)
            if reply.delay:
                await asyncio.sleep(reply.delay)
            return web.Response(status=reply.status, headers=reply.headers, body=reply.body)
        finally:
            with self._cond:
                self.active -= 1

    def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first `count` requests, once they have arrived; AssertionError on the deadline."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < count:
                left = deadline - time.monotonic()
                assert left > 0, f"receiver got {len(self.requests)} of {count} requests"
                self._cond.wait(left)
            return list(self.requests[:count])

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class RunningSender:
    """A WebhookSender on its own loop in a thread, the way the daemon runs it."""

    def __init__(self, sender: WebhookSender) -> None:
        self.sender = sender
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.sender.run_in_thread(self.stop_event)
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def start(self) -> RunningSender:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "sender did not stop"
        error, self.error = self.error, None
        if error is not None:
            raise error


def make_settings(redis_url: str, **webhooks: Any) -> Settings:
    """Settings for tests: signed, loopback allowed, a short schedule without jitter."""
    options: dict[str, Any] = {
        "secret": SECRET,
        "allow_networks": ["127.0.0.1/32"],
        "schedule": [0, 0.05, 0.05],
        "jitter": 0,
        "timeout": 2.0,
    }
    options.update(webhooks)
    return Settings(redis_url=redis_url, webhooks=options)


def envelope(account: str, token: str, status: str = "succeeded") -> bytes:
    doc = {
        "id": request_id(account, token),
        "key": None,
        "account": account,
        "status": status,
        "result": {"type": status, "message": {"content": [{"type": "text", "text": "hi"}]}},
        "batch_id": "msgbatch_01",
        "attempts": 1,
        "metadata": {"n": 1},
        "submitted_at": "2025-01-01T00:00:00.000Z",
        "ended_at": "2025-01-01T00:01:00.000Z",
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def enqueue(store: Store, url: str, account: str = "default") -> str:
    """Put one delivery to `url` in the outbox, as the fan-out does; its token."""
    token = new_token()
    enqueue_delivery(store, account, token, url, envelope(account, token))
    return token


def record(store: Store, token: str, account: str = "default") -> DeliveryRecord | None:
    """The delivery as stored (None once its record is gone)."""
    return read_delivery(store, account, token)


def wait_until(
    check: Callable[[], T | Literal[False] | None], timeout: float = 10.0, what: str = "condition"
) -> T:
    """Poll `check` until it returns something truthy, and return that; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def wait_record(
    store: Store,
    token: str,
    check: Callable[[DeliveryRecord], bool],
    timeout: float = 10.0,
    what: str = "its record to change",
) -> DeliveryRecord:
    """The delivery's record once `check` holds for it."""

    def found() -> DeliveryRecord | None:
        rec = record(store, token)
        return rec if rec is not None and check(rec) else None

    return wait_until(found, timeout, f"delivery {token}: {what}")


def wait_state(store: Store, token: str, state: str, timeout: float = 10.0) -> DeliveryRecord:
    return wait_record(store, token, lambda r: r.state == state, timeout, f"to be {state}")


def wait_attempts(store: Store, token: str, n: int, timeout: float = 10.0) -> DeliveryRecord:
    return wait_record(store, token, lambda r: r.attempts == n, timeout, f"{n} attempts")


class LoopbackResolver(AbstractResolver):
    """Resolves every host name to 127.0.0.1, so tests can use several names for one receiver."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            {
                "hostname": host,
                "host": "127.0.0.1",
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


# -- a sender in a process of its own, maybe on a wrong clock ------------------------------------

LIBFAKETIME_PATHS = (
    "/usr/lib/*/faketime/libfaketime.so.1",
    "/usr/lib/faketime/libfaketime.so.1",
    "/usr/local/lib/faketime/libfaketime.so.1",
    "/opt/homebrew/lib/faketime/libfaketime.1.dylib",
)


def libfaketime() -> str:
    """The libfaketime library (Debian: `apt-get install faketime`); skips the test without it.

    It sets batchd's process clock off from Redis's. (Redis itself cannot run under it: Debian's
    redis-server uses jemalloc, which deadlocks with libfaketime, wolfcw/libfaketime#130.)
    """
    for pattern in LIBFAKETIME_PATHS:
        found = sorted(glob.glob(pattern))
        if found:
            return found[0]
    why = "libfaketime is not installed (apt-get install faketime): it sets a clock offset"
    if os.environ.get("CI"):
        pytest.fail(f"{why}; the clock-offset tests must run under CI (.ci/run installs it)")
    pytest.skip(why)


def clock_offset_env(offset_s: int) -> dict[str, str]:
    """Environment that runs a process with its wall clock `offset_s` seconds off the host's
    (monotonic clocks left true, so timeouts and sleeps behave)."""
    return {
        "LD_PRELOAD": libfaketime(),
        "FAKETIME": f"{offset_s:+d}",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        "DONT_FAKE_MONOTONIC": "1",  # the same, as libfaketime before 0.9.8 spells it
    }


def spawn_sender(
    redis_url: str, log: Path, lease: float = 1.0, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`tests.webhooks.sender_process` as a child process logging to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.webhooks.sender_process", redis_url, str(lease)],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def sender_clock(log: Path, timeout: float = 10.0) -> float:
    """The wall clock a sender process read as it started (its `clock` line)."""

    def find() -> float | None:
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("clock "):
                return float(line.split()[1])
        return None

    return wait_until(find, timeout, "the sender process to report its clock")
