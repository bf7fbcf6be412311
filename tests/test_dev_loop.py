"""`batchd dev`: Redis on TCP, the emulator and a daemon with short windows, the exports that point
a producer at them, a first result in seconds, and Ctrl-C stopping all of it."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from batchd.client import Client
from batchd.settings import Settings
from tests.support.daemon import wait_for

_EXPORT = re.compile(r"^export (BATCHD_[A-Z_]+)=(\S+)$")
_DAEMON_PID = re.compile(r"batchd run \(pid (\d+)\)")


@dataclass
class Dev:
    proc: subprocess.Popen[str]
    exports: dict[str, str]
    stderr: Path
    directory: Path

    @property
    def daemon_pid(self) -> int:
        found = _DAEMON_PID.search(self.stderr.read_text())
        assert found, self.stderr.read_text()
        return int(found.group(1))


def _port_open(url: str) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) counts as gone.
    status = Path(f"/proc/{pid}/stat")
    return status.exists() and status.read_text().split()[2] != "Z"


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    """`batchd dev` running in its own process group, its export lines read."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    stderr = tmp_path / "dev.err"
    directory = tmp_path / "dev"
    with open(stderr, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchd", "dev", "--data-dir", str(directory)],
            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=err, text=True,
            start_new_session=True,
        )  # fmt: skip
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        for line in proc.stdout or ():
            lines.put(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    exports: dict[str, str] = {}
    deadline = time.monotonic() + 90
    while len(exports) < 3 and time.monotonic() < deadline and proc.poll() is None:
        try:
            match = _EXPORT.match(lines.get(timeout=0.2).strip())
        except queue.Empty:
            continue
        if match:
            exports[match.group(1)] = match.group(2)
    try:
        assert len(exports) == 3, f"exports {exports}; stderr:\n{stderr.read_text()}"
        yield Dev(proc, exports, stderr, directory)
    finally:
        if proc.poll() is None:  # Ctrl-C, which stops what the dev loop started
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        reader.join(5)
        proc.stdout.close()


def test_dev_prints_the_exports_of_redis_ingress_and_token(dev: Dev) -> None:
    """The exports name a TCP Redis, the ingress URL and a token the ingress accepts."""
    assert dev.exports["BATCHD_REDIS_URL"].startswith("redis://127.0.0.1:")
    assert _port_open(dev.exports["BATCHD_REDIS_URL"])
    answer = httpx.get(
        dev.exports["BATCHD_URL"] + "/v1/requests?key=nothing",
        headers={"Authorization": f"Bearer {dev.exports['BATCHD_TOKEN']}"},
    )
    assert answer.status_code == 200, answer.text
    env_file = (dev.directory / "env.sh").read_text()
    for name, value in dev.exports.items():
        assert f"export {name}={value}" in env_file


def test_dev_gives_a_first_result_within_seconds(
    dev: Dev, capfd: pytest.CaptureFixture[str]
) -> None:
    """A request submitted to the dev loop has its result in seconds, not minutes.

    With the default windows a lane is cut only 60 s after its first request, so a result within
    45 s shows the dev loop's short windows at work. On a quiet machine it takes about 4 s; the
    margin is for a loaded one, where the daemon's worker processes can take many seconds to
    start after /readyz answers (their import, not the windows)."""
    settings = Settings(redis_url=dev.exports["BATCHD_REDIS_URL"])
    with Client(settings=settings) as client:
        started = time.monotonic()
        ticket = client.submit(
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 64,
                "messages": [{"role": "user", "content": "Hello"}],
            }
        )
        result = ticket.wait(timeout=50)
        elapsed = time.monotonic() - started
    assert result.status == "succeeded"
    assert elapsed < 45, f"first result after {elapsed:.1f} s"
    # The daemon announced itself before /readyz answered, so the producer was not told otherwise.
    assert "no batchd daemon is alive" not in capfd.readouterr().err


def test_ctrl_c_stops_redis_emulator_and_daemon(dev: Dev) -> None:
    """SIGINT to the dev loop's process group (Ctrl-C) stops all three and removes env.sh."""
    daemon_pid = dev.daemon_pid
    os.killpg(dev.proc.pid, signal.SIGINT)
    assert dev.proc.wait(60) == 0, dev.stderr.read_text()
    assert not _port_open(dev.exports["BATCHD_REDIS_URL"]), "Redis still listens"
    assert not _port_open(dev.exports["BATCHD_URL"]), "the ingress still listens"
    wait_for(lambda: not _alive(daemon_pid), 10, "the daemon to exit")
    assert not (dev.directory / "env.sh").exists()
    assert "stopped" in dev.stderr.read_text()
