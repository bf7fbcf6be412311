"""Resident memory of `batchd run` (main process + its stage workers), idle and busy.

Usage: .venv/bin/python bench/daemon_rss.py [--requests 100000] [--size 1000] [--batch 100000]
Starts its own redis-server and emulator; prints the peak RSS of the daemon's process tree while
idle, then while one lane of `--requests` requests of about `--size` bytes goes through batches
of at most `--batch`. These numbers size the Kubernetes requests and limits (deploy/k8s).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from batchd import Client, Settings
from batchd.store import counters as counter_store
from tests.support.daemon import DaemonProcess, daemon_env, wait_for
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer


def tree(root: int) -> list[int]:
    """`root` and every process descended from it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
            except OSError:
                continue
    found, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        found += frontier
    return found


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler:
    """Samples the tree's total RSS every 0.2 s; keeps the peak."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.peak = 0
        self.peak_by_pid: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            sizes = {pid: rss_bytes(pid) for pid in tree(self.root)}
            total = sum(sizes.values())
            if total > self.peak:
                self.peak, self.peak_by_pid = total, sizes

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def mb(n: int) -> str:
    return f"{n / 1e6:.0f} MB"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=1000, help="approximate bytes per request")
    parser.add_argument("--batch", type=int, default=100_000, help="batch.max_requests")
    parser.add_argument("--idle", type=float, default=15.0, help="seconds of idle sampling")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="batchd-rss-"))
    redis_server = RedisServer(tmp / "redis", appendfsync="everysec")
    redis_server.start()
    emulator = EmulatorProcess(tmp / "emulator", args=["--processing-time", "2:2"])
    emulator.start()
    env = daemon_env(redis_server.url, emulator.url, emulator.api_key,
                     {"BATCHD_BATCH__MAX_REQUESTS": str(args.batch),
                      "BATCHD_BATCH__MAX_WAIT": "2", "BATCHD_LOG__LEVEL": "warning"})  # fmt: skip
    daemon = DaemonProcess(tmp / "daemon", env)
    client = Client(settings=Settings.load(redis_url=redis_server.url))
    try:
        daemon.start()
        assert daemon.proc is not None
        wait_for(lambda: len(tree(daemon.proc.pid)) >= 3, 30, "the workers")  # type: ignore[union-attr]
        time.sleep(3)  # imports settle
        with Sampler(daemon.proc.pid) as idle:
            time.sleep(args.idle)
        print(f"idle: {mb(idle.peak)} total over {len(idle.peak_by_pid)} processes "
              f"({', '.join(mb(v) for v in idle.peak_by_pid.values())})")  # fmt: skip
        text = "x" * max(1, args.size - 120)
        params = {"model": "claude-sonnet-4-5", "max_tokens": 16,
                  "messages": [{"role": "user", "content": text}]}  # fmt: skip
        started = time.monotonic()
        with Sampler(daemon.proc.pid) as busy:
            for start in range(0, args.requests, 5000):
                n = min(5000, args.requests - start)
                client.submit_many([{"params": params} for _ in range(n)])

            def ended() -> bool:
                found = client.store.read(counter_store.read(client.keys, ["default"]))
                done = sum(v for k, v in found["default"].items() if k.startswith("ended:"))
                return done >= int(args.requests)

            wait_for(ended, 1800, "every request to end", step=0.5)
        took = time.monotonic() - started
        print(f"busy: {mb(busy.peak)} peak total over {len(busy.peak_by_pid)} processes "
              f"({', '.join(mb(v) for v in busy.peak_by_pid.values())}); "
              f"{args.requests} requests of ~{args.size} B in {took:.0f} s")  # fmt: skip
    finally:
        client.close()
        daemon.stop()
        emulator.stop()
        redis_server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
