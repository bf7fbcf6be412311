"""`batchd dev`: the dev loop. Redis on TCP, the API emulator and `batchd run` with short windows,
and the `export` lines that point a producer at them; Ctrl-C stops all three.

Everything lives under `<data_dir>/dev` (Redis's data, the daemon's log, `env.sh` with the
exports) and starts afresh each time: it is for trying things, not for keeping them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import httpx
import redis

from batchd.embedded import redis_server_binary
from batchd.ingress.auth import new_token, token_sha256
from batchd.options import load_settings

#: The daemon's windows in the dev loop: a lane is cut a second after its first request, and a
#: batch the emulator ends in about a second is seen ended within half a second.
DEV_SETTINGS = {
    "BATCHD_BATCH__MAX_WAIT": "1",
    "BATCHD_POLL__MIN_INTERVAL": "0.5",
    "BATCHD_POLL__MAX_INTERVAL": "1",
    "BATCHD_POLL__LIST_INTERVAL": "0.5",
    "BATCHD_INGRESS__DROP_IN_MAX_WAIT": "0.5",
    "BATCHD_RUN__TICK": "0.2",
    "BATCHD_RUN__GRACE": "5",
    "BATCHD_LOG__FORMAT": "console",
    # A webhook receiver on this machine is what one tries webhooks with in a dev loop.
    "BATCHD_WEBHOOKS__ALLOW_NETWORKS": '["127.0.0.0/8", "::1/128"]',
}
#: Seconds the daemon may take to answer /readyz before the dev loop gives up.
START_TIMEOUT = 60.0


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class DevLoop:
    """The three processes of the dev loop and how they stop."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.env_file = directory / "env.sh"
        self.log_path = directory / "daemon.log"
        self.redis: subprocess.Popen[bytes] | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.emulator: object | None = None
        self.stop = threading.Event()

    def start_redis(self) -> str:
        data = self.directory / "redis"
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        port = free_port()
        self.redis = subprocess.Popen(
            [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
             "--dir", str(data), "--appendonly", "yes", "--save", "",
             "--maxmemory-policy", "noeviction", "--logfile", str(data / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        client = redis.Redis.from_url(url, socket_timeout=1)
        deadline = time.monotonic() + 15
        try:
            while True:
                try:
                    client.ping()
                    return url
                except redis.RedisError as exc:
                    if self.redis.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(
                            f"redis-server did not start; see {data}/redis.log"
                        ) from exc
                    time.sleep(0.05)
        finally:
            client.close()

    def start_daemon(self, env: dict[str, str], ready_url: str) -> None:
        with open(self.log_path, "wb") as log:
            self.daemon = subprocess.Popen(
                [sys.executable, "-m", "batchd", "run"],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2) as http:
            while not self.stop.is_set():
                if self.daemon.poll() is not None:
                    raise RuntimeError(
                        f"batchd run exited with {self.daemon.returncode}; see {self.log_path}"
                    )
                try:
                    if http.get(ready_url).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"batchd run not ready in time; see {self.log_path}")
                self.stop.wait(0.1)

    def close(self) -> None:
        self.env_file.unlink(missing_ok=True)
        if self.daemon is not None and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
                self.daemon.wait()
        stop = getattr(self.emulator, "stop", None)
        if stop is not None:
            stop()
        if self.redis is not None and self.redis.poll() is None:
            self.redis.terminate()
            try:
                self.redis.wait(10)
            except subprocess.TimeoutExpired:
                self.redis.kill()
                self.redis.wait()


def run_dev(args: argparse.Namespace) -> int:
    from batchd.emulator.config import EmulatorConfig
    from batchd.emulator.server import start_in_thread

    settings = load_settings(args)
    directory = Path(args.data_dir or settings.data_dir / "dev").resolve()
    directory.mkdir(parents=True, exist_ok=True)
    loop = DevLoop(directory)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        loop.stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    say = sys.stderr.write
    try:
        redis_url = loop.start_redis()
        emulator = start_in_thread(EmulatorConfig(port=0))
        loop.emulator = emulator
        token = new_token()
        ports = {name: free_port() for name in ("ingress", "console", "http")}
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("BATCHD_")}
        env.update(DEV_SETTINGS)
        env.update(
            {
                "BATCHD_REDIS_URL": redis_url,
                "BATCHD_DATA_DIR": str(directory),
                "BATCHD_API__BASE_URL": emulator.url,
                "BATCHD_ACCOUNTS__DEFAULT__API_KEY": emulator.api_key,
                "BATCHD_INGRESS__ENABLED": "true",
                "BATCHD_INGRESS__PORT": str(ports["ingress"]),
                "BATCHD_INGRESS__TOKENS": json.dumps(
                    [{"name": "dev", "sha256": token_sha256(token), "accounts": ["*"]}]
                ),
                "BATCHD_CONSOLE__ENABLED": "true",
                "BATCHD_CONSOLE__PORT": str(ports["console"]),
                "BATCHD_HTTP__PORT": str(ports["http"]),
            }
        )
        say(f"batchd dev: Redis at {redis_url}, the API emulator at {emulator.url}\n")
        loop.start_daemon(env, f"http://127.0.0.1:{ports['http']}/readyz")
        if loop.stop.is_set():
            return 130
        exports = {
            "BATCHD_REDIS_URL": redis_url,
            "BATCHD_URL": f"http://127.0.0.1:{ports['ingress']}",
            "BATCHD_TOKEN": token,
        }
        lines = [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
        tmp = loop.env_file.with_name("env.sh.tmp")
        tmp.write_text(
            f"# batchd dev (pid {os.getpid()}): a producer's settings, while it runs.\n"
            + "\n".join(lines)
            + "\n",
            encoding="utf-8",
        )
        os.replace(tmp, loop.env_file)
        say(
            f"batchd dev: batchd run (pid {loop.daemon.pid if loop.daemon else '?'}) is ready: "
            f"lanes cut after 1 s; its log in {loop.log_path}\n"
            f"  console  http://127.0.0.1:{ports['console']}/\n"
            f"  metrics  http://127.0.0.1:{ports['http']}/metrics\n"
            f"Point a producer at it (in another terminal: source {_shown(loop.env_file)}):\n"
        )
        print("\n".join(lines), flush=True)
        say("Ctrl-C stops Redis, the emulator and the daemon.\n")
        while not loop.stop.wait(0.5):
            if loop.daemon is not None and loop.daemon.poll() is not None:
                say(
                    f"batchd dev: batchd run exited with {loop.daemon.returncode}; "
                    f"see {loop.log_path}\n"
                )
                return 1
        return 0
    except RuntimeError as exc:
        say(f"batchd dev: {exc}\n")
        return 1
    finally:
        loop.close()
        say("batchd dev: stopped\n")


def _shown(path: Path) -> str:
    """The path relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
