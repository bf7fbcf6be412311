"""What keeps a busy, slow or hostile client from exhausting the ingress.

A body size cap and deadline, a token bucket per producer token (429 with Retry-After), a bound
on connections held for a result, and a listener that closes connections beyond a cap at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from aiohttp import web

from batchd.ingress.errors import IngressError, error_body
from batchd.logs import get_logger

log = get_logger("batchd.ingress")

#: Seconds a client is told to wait when every held-connection slot is taken.
HELD_RETRY_AFTER = 1
#: Pending connections the kernel queues before the ingress accepts them.
LISTEN_BACKLOG = 2048
#: Connections refused past max_connections between two log lines about it.
REFUSALS_PER_LOG = 1000


def retry_headers(seconds: float) -> dict[str, str]:
    """Retry-After in whole seconds (at least 1) and, for Anthropic SDKs, in milliseconds."""
    return {
        "Retry-After": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


class RateLimiter:
    """One token bucket per caller: `rate` requests a second, `burst` at once; rate 0 is off."""

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._clock = clock
        # name -> (tokens, time of last refill); one entry per configured token at most.
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, name: str) -> None:
        """Take one token from `name`'s bucket, or raise 429 saying when one will be there."""
        if self.rate <= 0:
            return
        now = self._clock()
        tokens, last = self._buckets.get(name, (self.burst, now))
        tokens = min(self.burst, tokens + (now - last) * self.rate)
        if tokens < 1.0:
            self._buckets[name] = (tokens, now)
            wait = (1.0 - tokens) / self.rate
            raise IngressError(
                429,
                f"rate limit of {self.rate:g} requests per second exceeded for {name!r}; "
                f"retry in {wait:.3f} s",
                headers=retry_headers(wait),
            )
        self._buckets[name] = (tokens - 1.0, now)


class HeldSlots:
    """A bound on connections held open waiting for a result (long-polls, drop-in calls)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    @contextmanager
    def hold(self) -> Iterator[None]:
        if self.held >= self.limit:
            raise IngressError(
                429,
                f"all {self.limit} held-connection slots are in use; retry shortly",
                headers=retry_headers(HELD_RETRY_AFTER),
            )
        self.held += 1
        try:
            yield
        finally:
            self.held -= 1


async def read_body(request: web.Request, cap: int, timeout: float) -> bytes:
    """The request body, or 413 past `cap` bytes, or 408 when it takes over `timeout` s."""
    length = request.content_length
    if length is not None and length > cap:
        raise IngressError(413, f"the request body is {length} bytes; the limit is {cap}")
    content = request.content
    if content.is_eof():  # the whole body came with the headers: no deadline to keep
        data = content.read_nowait()
        if len(data) > cap:
            raise IngressError(413, f"the request body is over the limit of {cap} bytes")
        return data
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            async for chunk in content.iter_any():
                size += len(chunk)
                if size > cap:
                    raise IngressError(413, f"the request body is over the limit of {cap} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise IngressError(408, f"the request body did not arrive within {timeout:g} s") from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_REFUSAL_BODY = error_body(
    "overloaded_error", "too many open connections to the batchd ingress; retry shortly", ""
)
_REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
    b"Retry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s"
    % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)


class _Refuse(asyncio.Protocol):
    """Answers 503 and hangs up: what a connection past the cap gets, without a handler."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.WriteTransport)
        transport.write(_REFUSAL)
        transport.close()


class CappedSite(web.BaseSite):
    """A TCP listener for an AppRunner that serves at most `max_connections` connections."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, max_connections: int
    ) -> None:
        super().__init__(runner, backlog=LISTEN_BACKLOG)
        self._host = host
        self._port = port
        self._max = max_connections
        self.refused = 0

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    @property
    def bound(self) -> tuple[str, int]:
        """The address actually bound (the port, when 0 was asked for)."""
        assert self._server is not None
        sockets: Any = getattr(self._server, "sockets", ())
        host, port = sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None

        def protocol() -> asyncio.BaseProtocol:
            if len(server.connections) >= self._max:
                self.refused += 1
                if self.refused % REFUSALS_PER_LOG == 1:
                    log.warning(
                        "ingress.connections_refused",
                        max_connections=self._max,
                        refused_so_far=self.refused,
                    )
                return _Refuse()
            return server()

        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            protocol, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
