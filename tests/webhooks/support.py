"""Test helpers for webhooks: a real HTTP receiver on loopback, the sender in a thread, polling.

The receiver runs aiohttp on its own loop in a thread and answers with whatever `reply` says.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import redis
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from batchd.keys import Keys, new_token, request_id
from batchd.settings import Settings
from batchd.webhooks.outbox import enqueue_delivery
from batchd.webhooks.sender import WebhookSender

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_c2VjcmV0LW9mLWxhc3QteWVhcg=="
KEYS = Keys("batchd")

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


def enqueue(client: redis.Redis, url: str, account: str = "default") -> str:
    """Put one delivery to `url` in the outbox; its token."""
    token = new_token()
    enqueue_delivery(client, KEYS, account, token, url, envelope(account, token))
    return token


def record(client: redis.Redis, token: str, account: str = "default") -> dict[str, str]:
    raw: dict[bytes, bytes] = client.hgetall(KEYS.delivery(account, token))  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in raw.items() if k != b"body"}


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


def wait_state(
    client: redis.Redis, token: str, state: str, timeout: float = 10.0
) -> dict[str, str]:
    return wait_until(
        lambda: (r := record(client, token)).get("state") == state and r,
        timeout,
        f"delivery {token} to be {state}",
    )


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
