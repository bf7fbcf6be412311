"""Running the emulator: `serve` on the current event loop, or `start_in_thread` beside other code.

The thread form is what benchmarks and `batchd demo` use; tests use a real subprocess instead.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web
from aiohttp.log import access_logger

from batchd.emulator.app import build_app
from batchd.emulator.config import LISTEN_BACKLOG, EmulatorConfig
from batchd.emulator.state import Emulator

# How long open connections get to finish when the emulator stops.
SHUTDOWN_SECONDS = 2.0
# Request body bytes buffered per connection before reading pauses; a big create reads faster
# with fewer pauses.
READ_BUFFER_BYTES = 4 * 1024 * 1024


async def serve(
    config: EmulatorConfig,
    *,
    stop: asyncio.Event | None = None,
    ready: Callable[[str, Emulator], None] | None = None,
) -> None:
    """Serve until `stop` is set (or the task is cancelled); `ready(url, emulator)` once bound."""
    emulator = Emulator(config)
    runner = web.AppRunner(
        build_app(emulator),
        access_log=access_logger if config.access_log else None,
        shutdown_timeout=SHUTDOWN_SECONDS,
        read_bufsize=READ_BUFFER_BYTES,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=LISTEN_BACKLOG)
        await site.start()
        host, port = runner.addresses[0][:2]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1"
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        if ready is not None:
            ready(url, emulator)
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()


@dataclass
class EmulatorHandle:
    """An emulator serving from a thread of this process. Stop it, or use it as a context."""

    url: str
    api_keys: tuple[str, ...]
    emulator: Emulator = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _stop: asyncio.Event = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    @property
    def api_key(self) -> str:
        return self.api_keys[0]

    def stop(self, timeout: float = 10.0) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def __enter__(self) -> EmulatorHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_in_thread(config: EmulatorConfig, timeout: float = 10.0) -> EmulatorHandle:
    """Start an emulator on its own event loop in a daemon thread; returns once it listens.

    Give `port=0` in the config for a free port; the handle's `url` tells which one.
    The handle's `emulator` state belongs to that thread's loop: read it, do not change it.
    """
    started = threading.Event()
    handles: list[EmulatorHandle] = []
    failures: list[BaseException] = []

    def run() -> None:
        loop = asyncio.new_event_loop()
        stop = asyncio.Event()

        def ready(url: str, emulator: Emulator) -> None:
            thread = threading.current_thread()
            handles.append(EmulatorHandle(url, config.api_keys, emulator, loop, stop, thread))
            started.set()

        try:
            loop.run_until_complete(serve(config, stop=stop, ready=ready))
        except BaseException as exc:
            failures.append(exc)
        finally:
            loop.close()
            started.set()

    thread = threading.Thread(target=run, name="batchd-emulator", daemon=True)
    thread.start()
    if not started.wait(timeout):
        raise RuntimeError("the emulator did not start in time")
    if failures:
        raise RuntimeError("the emulator failed to start") from failures[0]
    return handles[0]
