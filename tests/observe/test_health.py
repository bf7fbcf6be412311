"""The liveness registry: stale loops, dead threads, exited workers and broken checks."""

from __future__ import annotations

import subprocess
import sys
import threading

from batchd.observe.health import Liveness


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_fresh_beats_are_healthy() -> None:
    """Loops that beat within stale_after are fine."""
    clock = Clock()
    live = Liveness(stale_after=90, clock=clock)
    live.beat("aggregator")
    clock.now += 89
    assert live.problems() == []


def test_stale_loop_is_named() -> None:
    """A loop silent for longer than stale_after is reported as hung."""
    clock = Clock()
    live = Liveness(stale_after=90, clock=clock)
    live.beat("aggregator")
    live.beat("sweeper")
    clock.now += 91
    live.beat("sweeper")
    assert live.problems() == ["loop aggregator has not beaten for 91 s"]


def test_dead_thread_is_named() -> None:
    """A watched thread that ended is a problem; a running one is not."""
    live = Liveness()
    done = threading.Thread(target=lambda: None)
    done.start()
    done.join()
    gate = threading.Event()
    running = threading.Thread(target=gate.wait)
    running.start()
    try:
        live.watch_thread("webhooks", done)
        live.watch_thread("aggregator", running)
        assert live.problems() == ["thread webhooks has died"]
    finally:
        gate.set()
        running.join()


def test_exited_process_counts_after_grace() -> None:
    """An exited worker is tolerated while the supervisor may still replace it, then reported."""
    clock = Clock()
    live = Liveness(clock=clock)
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    workers: list[subprocess.Popen[bytes] | None] = [proc]
    live.watch_processes("workers", lambda: workers, grace=30)
    assert live.problems() == []
    clock.now += 31
    assert live.problems() == [f"workers: processes exited and not replaced: [{proc.pid}]"]
    workers[0] = None  # replaced (or not started): no longer counted
    assert live.problems() == []


def test_broken_check_is_a_problem() -> None:
    """A check that raises is reported, not propagated."""
    live = Liveness()

    def broken() -> str | None:
        raise RuntimeError("boom")

    live.add_check("custom", broken)
    assert live.problems() == ["custom: check failed: RuntimeError('boom')"]
    assert not live.healthy()
