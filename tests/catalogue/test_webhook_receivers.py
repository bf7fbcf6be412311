"""Webhook receivers that misbehave, met by a running daemon: each gets a clear outcome in the
outbox, and deliveries to a well-behaved receiver arrive meanwhile, undelayed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest
from aiohttp import web
from standardwebhooks import Webhook

from batchd.store import split_request_id
from batchd.webhooks.outbox import read_delivery
from tests.catalogue.conftest import Stack
from tests.support.daemon import wait_for
from tests.support.redis import free_port
from tests.webhooks.support import SECRET


class Receivers:
    """One aiohttp server on loopback whose paths each misbehave their own way."""

    def __init__(self) -> None:
        self.hits: dict[str, int] = {}
        self.ok: list[tuple[float, bytes, dict[str, str]]] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.port = 0

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        app = web.Application(client_max_size=1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2,
                                     handler_cancellation=True)  # fmt: skip
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        async def cleanup() -> None:
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        body = await request.read()
        self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/ok":
            self.ok.append((time.monotonic(), body, dict(request.headers)))
            return web.Response(status=204)
        if path == "/slow":
            await asyncio.sleep(5)
            return web.Response(status=200)
        if path == "/huge":
            return web.Response(status=200, body=b"x" * (20 * 1024 * 1024))
        if path == "/huge-error":
            return web.Response(status=500, body=b"<html>" + b"y" * (20 * 1024 * 1024))
        if path == "/redirect":
            return web.Response(status=302, headers={"Location": self.url("/redirected")})
        if path == "/reset":
            assert request.transport is not None
            request.transport.abort()
            return web.Response(status=200)
        if path == "/endless":
            response = web.StreamResponse(status=200)
            await response.prepare(request)
            while True:
                await response.write(b"z" * 65536)
        if path == "/gone":
            return web.Response(status=410)
        if path == "/retry-after-junk":
            return web.Response(status=503, headers={"Retry-After": "whenever you like"})
        return web.Response(status=404)


@pytest.fixture(scope="module")
def receivers() -> Iterator[Receivers]:
    r = Receivers()
    r.start()
    try:
        yield r
    finally:
        r.stop()


def delivery_state(stack: Stack, rid: str) -> tuple[str, str]:
    """The request's webhook delivery: its state and last error ('' before the first)."""
    record = read_delivery(stack.store, *split_request_id(rid))
    return (record.state, record.last_error) if record is not None else ("", "")


# path: (final state of its delivery, words its last_error holds)
CASES: dict[str, tuple[str, str]] = {
    "/slow": ("dead", "no complete answer"),
    "/huge": ("delivered", ""),
    "/huge-error": ("dead", "HTTP 500"),
    "/redirect": ("dead", "not followed"),
    "/reset": ("dead", ""),
    "/endless": ("delivered", ""),
    "/gone": ("gone", ""),
    "/retry-after-junk": ("dead", "HTTP 503"),
    "refused": ("dead", "connection failed"),
}


@pytest.mark.parametrize("path", list(CASES), ids=[p.strip("/") for p in CASES])
def test_misbehaving_receiver_gets_a_clear_outcome(
    stack: Stack, receivers: Receivers, path: str
) -> None:
    """The bad receiver's delivery ends as expected; a good receiver's arrive in time, signed."""
    state, words = CASES[path]
    url = f"http://127.0.0.1:{free_port()}/hook" if path == "refused" else receivers.url(path)
    before = len(receivers.ok)
    [bad] = stack.submit(1, callback_url=url)
    good = stack.submit(2, callback_url=receivers.url("/ok"))
    results = stack.results([bad, *good])
    assert {r.status for r in results} == {"succeeded"}
    started = time.monotonic()
    wait_for(lambda: len(receivers.ok) >= before + 2, 10, "the good receiver's deliveries")
    # Not held up behind the bad receiver's attempts (each may take the whole 1 s deadline).
    assert time.monotonic() - started < 5
    for _, body, headers in receivers.ok[before:]:
        Webhook(SECRET).verify(body, headers)
    wait_for(lambda: delivery_state(stack, bad)[0] == state, 20, f"the delivery to end {state}")
    assert words in delivery_state(stack, bad)[1]
    if path == "/redirect":
        assert receivers.hits.get("/redirected", 0) == 0
    stack.assert_unharmed()
