"""systemd's notify protocol: datagrams on a socket the test listens on, from a real daemon too."""

from __future__ import annotations

import itertools
import os
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchd.observe.systemd import Notifier, send
from tests.e2e.conftest import Stack
from tests.observe.conftest import ops_port, probe
from tests.support.notify import NotifySocket


@pytest.fixture
def listener() -> Iterator[tuple[NotifySocket, str]]:
    """A notify socket at a short path (AF_UNIX paths are limited to 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="sd-")
    path = os.path.join(directory, "notify")
    sock = NotifySocket(path)
    try:
        yield sock, path
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


def test_send_reaches_a_path_socket(listener: tuple[NotifySocket, str]) -> None:
    """One datagram carries the message to the socket named by a path."""
    sock, path = listener
    assert send(path, "READY=1")
    msg = sock.receive(5)
    assert msg is not None and msg[0] == "READY=1" and msg[1] == os.getpid()


def test_send_reaches_an_abstract_socket() -> None:
    """`@name` means the abstract namespace: a leading NUL byte, no file."""
    name = f"batchd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = NotifySocket(b"\0" + name.encode())
    try:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name})
        assert notifier.notify("STATUS=hello")
        msg = sock.receive(5)
        assert msg is not None and msg[0] == "STATUS=hello"
    finally:
        sock.close()


def test_send_without_listener_is_harmless(tmp_path: Path) -> None:
    """A socket that is gone makes send return False; it never raises."""
    assert send(str(tmp_path / "nobody"), "READY=1") is False
    assert Notifier(None).ready() is False


def test_environment_is_taken_once() -> None:
    """The variables are removed, so worker processes do not inherit them; a WATCHDOG_PID
    naming another process leaves the watchdog off."""
    env = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = Notifier.from_environment(env)
    assert env == {}
    assert notifier.address == "/run/x" and notifier.watchdog_interval == 2.0
    other = Notifier.from_environment({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "4000000",
                                       "WATCHDOG_PID": "1"})  # fmt: skip
    assert other.watchdog_interval is None


def test_watchdog_withheld_while_unhealthy(listener: tuple[NotifySocket, str]) -> None:
    """No WATCHDOG=1 while a problem is reported; pings resume once it clears; then STOPPING=1."""
    sock, path = listener
    problems = ["loop aggregator has not beaten for 95 s"]
    stop = threading.Event()
    notifier = Notifier(path, watchdog_usec=200_000)  # a ping every 0.1 s when healthy
    notifier.start_watchdog(stop, lambda: list(problems))
    try:
        assert sock.receive(0.6) is None  # six intervals without a ping
        problems.clear()
        first = sock.receive(5)
        assert first is not None and first[0] == "WATCHDOG=1"
        second = sock.receive(5)
        assert second is not None and second[2] - first[2] >= 0.09
        stop.set()
        assert sock.until("STOPPING=1", 5)[-1][0].startswith("STOPPING=1")
    finally:
        stop.set()
        notifier.close()


def test_daemon_speaks_the_protocol(stack: Stack) -> None:
    """`batchd run`: READY=1 once its endpoints answer, WATCHDOG=1 every half interval, and
    STOPPING=1 on SIGTERM; every message from the main process (NotifyAccess=main)."""
    name = f"batchd-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = NotifySocket(b"\0" + name.encode())
    try:
        daemon = stack.daemon(NOTIFY_SOCKET="@" + name, WATCHDOG_USEC="1000000")
        ready = sock.until("READY=1", 30)[-1]
        assert daemon.proc is not None
        assert ready[1] == daemon.proc.pid
        assert "STATUS=serving" in ready[0] and "endpoints on 127.0.0.1:" in ready[0]
        assert probe(ops_port(daemon), "/readyz")[0] == 200
        pings = [sock.until("WATCHDOG=1", 5)[-1] for _ in range(3)]
        assert {p[1] for p in pings} == {daemon.proc.pid}
        gaps = [b[2] - a[2] for a, b in itertools.pairwise(pings)]
        assert all(0.4 <= g <= 1.0 for g in gaps), gaps
        daemon.proc.send_signal(signal.SIGTERM)
        stopping = sock.until("STOPPING=1", 10)[-1]
        assert stopping[1] == daemon.proc.pid
        assert daemon.wait_exit(30) == 0
    finally:
        sock.close()
