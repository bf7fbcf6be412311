"""`batchd run` as a real child process for end-to-end tests: started, stopped, killed -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

# Quick timings so a whole batch cycle takes a second or two against the emulator.
FAST_ENV = {
    "BATCHD_BATCH__MAX_WAIT": "0.3",
    "BATCHD_POLL__MIN_INTERVAL": "0.1",
    "BATCHD_POLL__MAX_INTERVAL": "0.4",
    "BATCHD_RUN__TICK": "0.1",
    "BATCHD_RUN__LEASE": "3",
    "BATCHD_RUN__CREATE_SETTLE": "1",
    "BATCHD_RUN__STALE_AFTER": "2",
    "BATCHD_RUN__WORKERS": "2",
    "BATCHD_RUN__GRACE": "10",
    "BATCHD_API__BACKOFF_INITIAL": "0.05",
    "BATCHD_API__BACKOFF_MAX": "0.2",
    "BATCHD_API__RETRY_AFTER_MAX": "0.5",
    "BATCHD_LOG__FORMAT": "json",
    "BATCHD_LOG__LEVEL": "info",
    # Port 0: each daemon's /metrics, /healthz, /readyz on a free port, so daemons run side by side.
    "BATCHD_HTTP__PORT": "0",
}


def daemon_env(
    redis_url: str, api_url: str, api_key: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    env.update(FAST_ENV)
    env.update(
        {
            "BATCHD_REDIS_URL": redis_url,
            "BATCHD_API__BASE_URL": api_url,
            "BATCHD_ACCOUNTS__DEFAULT__API_KEY": api_key,
        }
    )
    env.update(extra or {})
    return env


class DaemonProcess:
    """One `batchd run` in its own process group, logging JSON lines to a file."""

    def __init__(self, directory: Path, env: Mapping[str, str], args: list[str] | None = None):
        self.directory = directory
        self.env = dict(env)
        self.args = args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.directory / "daemon.log"

    def start(self, **extra_env: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        env = {**self.env, **extra_env}
        self.starts += 1
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "batchd", "run", *self.args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout: float) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM to the daemon, as systemd does; SIGKILL to the group if it lingers."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode

    def kill(self) -> None:
        """kill -9 of the whole daemon: main process and its workers."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def wait_for(
    condition: Callable[[], object], timeout: float, message: str = "condition", step: float = 0.05
) -> object:
    """Poll `condition` until truthy; raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message}")
        time.sleep(step)
