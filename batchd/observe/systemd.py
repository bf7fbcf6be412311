"""systemd's notify protocol: READY=1, STOPPING=1, WATCHDOG=1, each one datagram to $NOTIFY_SOCKET.

`Notifier.from_environment()` reads (and removes, so worker processes do not inherit them) the
variables systemd sets; without NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import math
import os
import socket
import threading
import time
from collections.abc import Callable, MutableMapping

from batchd.logs import get_logger

log = get_logger("batchd.observe")

#: How often the watchdog thread looks at the loops; a ping is sent at most every half interval.
WATCHDOG_CHECK = 1.0


def socket_address(value: str) -> str | bytes:
    """The AF_UNIX address in NOTIFY_SOCKET: a path, or `@name` in the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def send(address: str | bytes, message: str) -> bool:
    """One datagram; False (logged) when it cannot be sent. Never raises."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.warning("sd_notify failed", message=message.split("\n", 1)[0], error=str(exc))
        return False


class Notifier:
    """Talks to systemd for one service process; safe to use when not run by systemd."""

    def __init__(self, address: str | bytes | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        #: Seconds between watchdog pings: half of WatchdogSec, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()

    @classmethod
    def from_environment(cls, env: MutableMapping[str, str] | None = None) -> Notifier:
        env = os.environ if env is None else env
        raw = env.pop("NOTIFY_SOCKET", "")
        usec_text = env.pop("WATCHDOG_USEC", "")
        pid_text = env.pop("WATCHDOG_PID", "")
        usec = int(usec_text) if usec_text.isdigit() and int(usec_text) > 0 else None
        if pid_text.isdigit() and int(pid_text) != os.getpid():
            usec = None  # the watchdog is meant for another process
        return cls(socket_address(raw) if raw else None, usec)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, message: str) -> bool:
        if self.address is None:
            return False
        return send(self.address, message)

    def ready(self, status: str = "") -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def stopping(self) -> bool:
        return self.notify("STOPPING=1\nSTATUS=stopping")

    def start_watchdog(
        self, stop: threading.Event, problems: Callable[[], list[str]]
    ) -> threading.Thread | None:
        """From a thread: WATCHDOG=1 every half interval while `problems()` finds none, then
        STOPPING=1 as soon as `stop` is set. Pings go on while the daemon drains, so a grace
        period longer than WatchdogSec is not cut short; the thread ends with the process."""
        if self.address is None:
            return None
        self._thread = threading.Thread(
            target=self._watch, args=(stop, problems), name="sd-notify", daemon=True
        )
        self._thread.start()
        return self._thread

    def _watch(self, stop: threading.Event, problems: Callable[[], list[str]]) -> None:
        interval = self.watchdog_interval
        tick = None if interval is None else min(WATCHDOG_CHECK, interval / 2)
        last_ping = -math.inf
        reported: list[str] = []
        while not stop.wait(tick):
            assert interval is not None  # without a watchdog, the wait only ends at the stop
            found = problems()
            if found:
                if found != reported:
                    log.error("unhealthy: systemd watchdog pings withheld", problems=found)
                reported = found
                continue
            reported = []
            if time.monotonic() - last_ping >= interval:
                self.notify("WATCHDOG=1")
                last_ping = time.monotonic()
        self.stopping()
        while interval is not None and not self._closed.wait(tick):
            if time.monotonic() - last_ping >= interval:
                self.notify("WATCHDOG=1")
                last_ping = time.monotonic()

    def close(self) -> None:
        """End the watchdog thread (the daemon leaves it to end with the process)."""
        self._closed.set()
        if self._thread is not None:
            self._thread.join(5)
