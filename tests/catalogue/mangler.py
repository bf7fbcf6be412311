"""A reverse proxy in front of the emulator that spoils chosen answers, as a broken edge would.

Each rule matches one operation (create, retrieve, list, results, cancel) and answers in its place
a given number of times: before the request reaches the API, or after, replacing its answer. Each
rule counts the answers it spoiled, so a test can prove its fault happened (`assert_fired`).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp import web

Transform = Callable[[bytes], bytes]

_BATCH = re.compile(r"^/v1/messages/batches/[^/]+$")
_RESULTS = re.compile(r"^/v1/messages/batches/[^/]+/results$")
_CANCEL = re.compile(r"^/v1/messages/batches/[^/]+/cancel$")

#: Every operation a rule may name.
OPERATIONS = frozenset({"create", "list", "retrieve", "results", "cancel", "other"})


def operation(method: str, path: str) -> str:
    if path == "/v1/messages/batches":
        return "create" if method == "POST" else "list"
    if _RESULTS.match(path):
        return "results"
    if _CANCEL.match(path):
        return "cancel"
    if _BATCH.match(path):
        return "retrieve"
    return "other"


@dataclass
class Answer:
    """What to send instead of (or after) the API's answer."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    forward_first: bool = False  # let the API act on the request, then answer this instead
    forward_after: float | None = None  # answer at once; the API gets the request this late


@dataclass(eq=False)
class Rule:
    operation: str
    answer: Answer | None = None
    transform: Transform | None = None  # rewrite the API's answer body (results: whole stream)
    times: int = 1
    hits: int = 0  # answers this rule spoiled so far (a transform counts only bodies it rewrote)


class Mangler:
    """Forwards to `upstream` on its own loop in a thread; rules apply in the order added."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.rules: list[Rule] = []
        self.seen: list[str] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._late: set[asyncio.Future[None]] = set()
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, rule: Rule) -> Rule:
        """Apply `rule` from now on; a misspelt operation is refused, since it would never fire."""
        if rule.operation not in OPERATIONS:
            raise ValueError(
                f"no operation {rule.operation!r}; a rule names one of {sorted(OPERATIONS)}"
            )
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Drop every rule, and forget which operations came through."""
        with self._lock:
            self.rules.clear()
            self.seen.clear()

    def unfired(self) -> list[Rule]:
        """The rules that have spoiled nothing yet."""
        with self._lock:
            return [r for r in self.rules if r.hits == 0]

    def assert_fired(self) -> None:
        """Fail unless every rule spoiled at least one answer: a fault that never happened
        proves nothing about how batchd meets it."""
        unfired = self.unfired()
        assert not unfired, "fault rules that never fired: " + ", ".join(
            f"{r.operation} (seen: {sorted(set(self.seen))})" for r in unfired
        )

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=300 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def stop(self) -> None:
        async def cleanup() -> None:
            await asyncio.gather(*self._late, return_exceptions=True)
            if self._runner is not None:
                await self._runner.cleanup()
            if self._session is not None:
                await self._session.close()

        asyncio.run_coroutine_threadsafe(cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _take(self, op: str) -> Rule | None:
        with self._lock:
            self.seen.append(op)
            for rule in self.rules:
                if rule.operation == op and rule.hits < rule.times:
                    rule.hits += 1
                    return rule
        return None

    def _give_back(self, rule: Rule) -> None:
        """A taken rule that spoiled nothing after all: it stays due for a later answer."""
        with self._lock:
            rule.hits -= 1

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        op = operation(request.method, request.path)
        rule = self._take(op)
        body = await request.read()
        if rule is not None and rule.answer is not None and rule.answer.forward_after is not None:
            late = self._forward_later(request.method, request.path_qs, dict(request.headers),
                                       body, rule.answer.forward_after)  # fmt: skip
            self._late.add(asyncio.ensure_future(late))
            return _reply(rule.answer)
        if rule is not None and rule.answer is not None and not rule.answer.forward_first:
            return _reply(rule.answer)
        status, headers, data = await self._forward(request, body)
        if rule is not None and rule.answer is not None:
            return _reply(rule.answer)
        if rule is not None and rule.transform is not None:
            if status == 200:
                data = rule.transform(data)
            else:
                self._give_back(rule)
        return web.Response(
            status=status,
            body=data,
            headers={k: v for k, v in headers.items() if k.lower() in ("content-type", "request-id",
                                                                       "retry-after")},
        )  # fmt: skip

    async def _forward(
        self, request: web.Request, body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        return await self._send(request.method, request.path_qs, dict(request.headers), body)

    async def _forward_later(
        self, method: str, path: str, headers: dict[str, str], body: bytes, delay: float
    ) -> None:
        await asyncio.sleep(delay)
        await self._send(method, path, headers, body)

    async def _send(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None
        # Host goes through, as a reverse proxy passes it on: the API names its results_url on
        # the host it was asked by, so the download comes back through this proxy too.
        kept = {k: v for k, v in headers.items()
                if k.lower() in ("x-api-key", "anthropic-version", "content-type",
                                 "anthropic-beta", "host")}  # fmt: skip
        async with self._session.request(
            method, self.upstream + path, data=body or None, headers=kept
        ) as resp:
            return resp.status, dict(resp.headers), await resp.read()


def _reply(answer: Answer) -> web.Response:
    return web.Response(
        status=answer.status, body=answer.body, headers={"content-type": answer.content_type}
    )


def html_page(status: int) -> Answer:
    return Answer(
        status=status,
        body=b"<html><head><title>502 Bad Gateway</title></head><body><center><h1>"
        + str(status).encode()
        + b" Bad Gateway</h1></center><hr><center>nginx</center></body></html>",
        content_type="text/html",
    )
