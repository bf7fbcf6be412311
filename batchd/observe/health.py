"""Liveness of one `batchd run` process: its loops beat, its threads and workers are alive.

The daemon registers what it runs; /healthz and the systemd watchdog ask `problems()`. Redis is
not part of it: a daemon waiting for Redis is alive, only not ready.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

#: Seconds a loop may go without completing an iteration before it counts as hung. A step can
#: block on Redis for a whole socket timeout (store.SOCKET_TIMEOUT, 30 s) and then back off, so
#: this is three times that.
STALE_AFTER = 90.0

#: Seconds a watched child process may stay exited before it counts: the daemon's supervisor
#: restarts a dead worker within a few seconds (daemon.WORKER_RESTART_DELAY), and a worker that
#: dies because Redis went away is replaced again and again without any harm to the process.
PROCESS_GRACE = 30.0

Check = Callable[[], str | None]


class _Exitable(Protocol):
    pid: int

    def poll(self) -> int | None: ...


class Liveness:
    """A registry of what must stay alive: beating loops, threads, and custom checks."""

    def __init__(
        self, stale_after: float = STALE_AFTER, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.stale_after = stale_after
        self._clock = clock
        self._lock = threading.Lock()
        self._beats: dict[str, float] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._checks: dict[str, Check] = {}

    def beat(self, name: str) -> None:
        """Loop `name` completed an iteration (its first beat registers it)."""
        with self._lock:
            self._beats[name] = self._clock()

    def watch_thread(self, name: str, thread: threading.Thread) -> None:
        """`thread` must stay alive for as long as the process runs."""
        with self._lock:
            self._threads[name] = thread

    def watch_processes(
        self,
        name: str,
        processes: Callable[[], Sequence[_Exitable | None]],
        grace: float = PROCESS_GRACE,
    ) -> None:
        """Child processes that must be running; one exited for over `grace` s is a problem."""
        exited_since: dict[int, float] = {}
        lock = threading.Lock()

        def check() -> str | None:
            now = self._clock()
            exited = {p.pid for p in processes() if p is not None and p.poll() is not None}
            with lock:
                for pid in set(exited_since) - exited:
                    del exited_since[pid]  # replaced by the supervisor
                for pid in exited:
                    exited_since.setdefault(pid, now)
                stuck = sorted(pid for pid, t in exited_since.items() if now - t > grace)
            return f"processes exited and not replaced: {stuck}" if stuck else None

        self.add_check(name, check)

    def add_check(self, name: str, check: Check) -> None:
        """`check()` returns a problem, or None when all is well."""
        with self._lock:
            self._checks[name] = check

    def problems(self) -> list[str]:
        """What is wrong now; empty when every loop, thread and check is fine."""
        now = self._clock()
        with self._lock:
            beats = dict(self._beats)
            threads = dict(self._threads)
            checks = dict(self._checks)
        found: list[str] = []
        for name, last in sorted(beats.items()):
            if now - last > self.stale_after:
                found.append(f"loop {name} has not beaten for {now - last:.0f} s")
        for name, thread in sorted(threads.items()):
            if not thread.is_alive():
                found.append(f"thread {name} has died")
        for name, check in sorted(checks.items()):
            try:
                problem = check()
            except Exception as exc:  # a broken check is itself a problem worth seeing
                problem = f"check failed: {exc!r}"
            if problem:
                found.append(f"{name}: {problem}")
        return found

    def healthy(self) -> bool:
        return not self.problems()
