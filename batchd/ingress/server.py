"""Running the ingress: its own listener and asyncio loop in a thread of `batchd run`.

`run(daemon, stop)` is what the daemon calls for the `ingress` role; `serve` is the same on the
current loop, for benchmarks and tests that want it in-process.
"""

from __future__ import annotations

import asyncio
import resource
import threading
from collections.abc import Callable
from typing import Any

from aiohttp import web

from batchd.client import AsyncClient
from batchd.ingress.app import Coalescer, Ingress
from batchd.ingress.auth import Authenticator, is_loopback
from batchd.ingress.limits import CappedSite, HeldSlots, RateLimiter
from batchd.ingress.openapi import document
from batchd.ingress.routes import build_app
from batchd.logs import get_logger
from batchd.settings import Settings
from batchd.store import connect_async

log = get_logger("batchd.ingress")

#: Seconds between looks at the daemon's stop event.
STOP_POLL = 0.1
#: Seconds answers in progress get to finish when the ingress stops.
SHUTDOWN_SECONDS = 5.0
#: The name the ingress's Redis connections carry (CLIENT LIST shows who holds what).
REDIS_CLIENT_NAME = "batchd-ingress"
#: File descriptors the rest of the daemon needs besides the ingress's client connections.
FD_HEADROOM = 256


def listen_host(settings: Settings) -> str:
    """Where to bind: the configured host, or loopback when no token guards the ingress."""
    host = settings.ingress.host
    if settings.ingress.tokens or is_loopback(host):
        return host
    return "::1" if ":" in host else "127.0.0.1"


def warn_open_files(max_connections: int) -> None:
    """Say so when the process may not open max_connections sockets (its open-files limit)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and max_connections + FD_HEADROOM > soft:
        log.warning(
            "ingress.open_files_limit",
            max_connections=max_connections,
            open_files_limit=soft,
            detail="connections past the open-files limit wait in the listen queue; raise "
            "the limit (LimitNOFILE=, ulimit -n) or lower ingress.max_connections",
        )


def make_ingress(settings: Settings) -> Ingress:
    if not settings.redis_url:
        raise ValueError("the ingress needs a Redis URL")
    connection = connect_async(settings.redis_url, client_name=REDIS_CLIENT_NAME)
    client = AsyncClient(settings=settings, connection=connection)
    cfg = settings.ingress
    return Ingress(
        settings=settings,
        client=client,
        auth=Authenticator(settings),
        limiter=RateLimiter(cfg.rate_limit, cfg.rate_burst),
        held=HeldSlots(cfg.max_held),
        openapi=document(settings),
        coalescer=Coalescer(client),
    )


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    ready: Callable[[str], Any] | None = None,
) -> None:
    """Serve until `stop` is set; `ready(url)` once listening. Listen failures are logged."""
    cfg = settings.ingress
    host = listen_host(settings)
    ctx = make_ingress(settings)
    runner = web.AppRunner(
        build_app(ctx),
        access_log=None,
        handler_cancellation=True,
        keepalive_timeout=cfg.idle_timeout,
        shutdown_timeout=SHUTDOWN_SECONDS,
    )
    await runner.setup()
    try:
        site = CappedSite(runner, host, cfg.port, max_connections=cfg.max_connections)
        try:
            await site.start()
        except OSError as exc:
            log.error(
                "ingress.listen_failed", host=host, port=cfg.port, error=exc.strerror or str(exc)
            )
            return
        warn_open_files(cfg.max_connections)
        bound_host, port = site.bound
        url = (
            f"http://[{bound_host}]:{port}" if ":" in bound_host else f"http://{bound_host}:{port}"
        )
        if cfg.tokens:
            log.info("ingress.listening", url=url, tokens=len(cfg.tokens))
        else:
            log.warning(
                "ingress.listening",
                url=url,
                tokens=0,
                detail="no ingress.tokens configured: every caller is accepted without a token, "
                "so the ingress listens on loopback only"
                + (f" (not {cfg.host})" if host != cfg.host else ""),
            )
        if ready is not None:
            ready(url)
        await stop.wait()
    finally:
        # Held calls answer at once (state now, or the drop-in's "fetch it later").
        ctx.stopping.set()
        await runner.cleanup()
        await ctx.client.redis.aclose()
        log.info("ingress.stopped")


def run(daemon: Any, stop: threading.Event) -> None:
    """The daemon's entry point: serve on a loop of this thread until `stop` is set."""
    asyncio.run(_serve_until(daemon.settings, stop))


async def _serve_until(settings: Settings, stop: threading.Event) -> None:
    stopping = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            await asyncio.sleep(STOP_POLL)
        stopping.set()

    watcher = asyncio.create_task(watch())
    try:
        await serve(settings, stopping)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
