"""`make soak DURATION=...`: a steady load for a while, memory sampled, growth judged.

Replicas, Redis and the emulator run as in the chaos run but with no faults; every few seconds
the resident memory of each process (and Redis's own count) is sampled. The report fits a line
to the second half of each series and says whether anything keeps growing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from tests.chaos.checker import Checker
from tests.chaos.cluster import Cluster
from tests.chaos.producers import Load, Readers, Shares, Webhooks

#: Processes of the test itself, shown but not judged: the emulator keeps every batch (it is
#: the API, which keeps them for 29 days) and the checker keeps a record of every request.
TEST_SIDE = frozenset({"emulator (test double)", "harness (test side)"})
#: A series grows when its fitted rise over the second half is above both of these.
GROWTH_MB = 5.0
GROWTH_SHARE = 0.05


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            return [int(x) for x in fh.read().split()]
    except OSError:
        return []


@dataclass
class Series:
    name: str
    unit: str = "MB"
    points: list[tuple[float, float]] = field(default_factory=list)

    def add(self, t: float, value: float | None) -> None:
        if value is not None:
            self.points.append((t, value))

    def slope_per_minute(self) -> float:
        """Least-squares slope over the second half of the samples, per minute."""
        half = self.points[len(self.points) // 2 :]
        if len(half) < 3:
            return 0.0
        n = len(half)
        mt = sum(t for t, _ in half) / n
        mv = sum(v for _, v in half) / n
        var = sum((t - mt) ** 2 for t, _ in half)
        if var == 0:
            return 0.0
        return sum((t - mt) * (v - mv) for t, v in half) / var * 60

    def verdict(self) -> str:
        if len(self.points) < 6:
            return "too few samples"
        half = self.points[len(self.points) // 2 :]
        span = (half[-1][0] - half[0][0]) / 60
        rise = self.slope_per_minute() * span
        mean = sum(v for _, v in half) / len(half)
        limit = GROWTH_MB if self.unit == "MB" else 0.0
        if rise > limit and rise > GROWTH_SHARE * mean:
            return "GROWS"
        return "flat"

    def row(self) -> str:
        values = [v for _, v in self.points] or [0.0]
        return (f"{self.name:<28} {values[0]:>9.1f} {min(values):>9.1f} {max(values):>9.1f} "
                f"{values[-1]:>9.1f} {self.slope_per_minute():>+11.2f}  {self.unit:<5} "
                f"{self.verdict()}")  # fmt: skip


class Sampler:
    """Samples every `period` seconds in a thread until stopped."""

    def __init__(self, cluster: Cluster, period: float) -> None:
        self.cluster = cluster
        self.period = period
        self.series: dict[str, Series] = {}
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._redis = redis.Redis.from_url(cluster.redis_url)

    def _get(self, name: str, unit: str = "MB") -> Series:
        if name not in self.series:
            self.series[name] = Series(name, unit)
        return self.series[name]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._redis.close()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.sample()

    def sample(self) -> None:
        t = time.monotonic() - self.started
        c = self.cluster
        for i, d in enumerate(c.replicas):
            if d.proc is None:
                continue
            self._get(f"replica{i} main").add(t, rss_mb(d.proc.pid))
            for j, child in enumerate(sorted(children(d.proc.pid))):
                self._get(f"replica{i} worker{j}").add(t, rss_mb(child))
        if c.redis.proc is not None:
            self._get("redis-server rss").add(t, rss_mb(c.redis.proc.pid))
        try:
            info = self._redis.info("memory")
            self._get("redis used_memory").add(t, info["used_memory"] / 2**20)
            self._get("redis keys", "keys").add(t, float(self._redis.dbsize()))
        except redis.RedisError:
            pass
        if c.emulator.proc is not None:
            self._get("emulator (test double)").add(t, rss_mb(c.emulator.proc.pid))
        # The checker keeps a record of every request on purpose: it grows with the load.
        self._get("harness (test side)").add(t, rss_mb(os.getpid()))

    def table(self) -> str:
        head = (f"{'process':<28} {'first':>9} {'min':>9} {'max':>9} {'last':>9} "
                f"{'per min':>11}  {'unit':<5} verdict")  # fmt: skip
        return "\n".join([head, "-" * len(head), *(s.row() for s in self.series.values())])


def soak(duration: float, rate: float, replicas: int, period: float, keep: Path | None) -> int:
    directory = keep or Path(tempfile.mkdtemp(prefix="batchd-soak-"))
    # Results leave Redis after a minute, so a steady state exists within a short soak.
    cluster = Cluster(directory, seed=11, replicas=replicas, lease=5.0, max_requests=500,
                      extra_env={"BATCHD_RETENTION": "60"})  # fmt: skip
    checker = Checker()
    readers: Readers | None = None
    sampler: Sampler | None = None
    started = time.monotonic()
    try:
        cluster.start()
        hooks = Webhooks(cluster.receiver, checker, seed=11, fail_share=0.0)
        readers = Readers(cluster.settings(), checker, queues=4, waiters=2)
        readers.start()
        total = int(rate * duration)
        load = Load(cluster.settings(), checker, 11, total, rate, 2, Shares(), hooks.url,
                    readers.pending.put)  # fmt: skip
        sampler = Sampler(cluster, period)
        sampler.start()
        load.start()
        last = 0.0
        while load.running():
            time.sleep(0.5)
            elapsed = time.monotonic() - started
            if elapsed - last >= 10:
                last = elapsed
                seen = checker.seen_count()
                line = f"[{elapsed:6.0f}s] {load.submitted}/{total} submitted, {seen} results seen"
                print(line, file=sys.stderr, flush=True)
        load.join()
        all_seen = checker.wait_all_seen(timeout=120)
        sampler.sample()
        sampler.stop()
        print(
            f"soak: {duration:.0f} s of steady load at {rate:g}/s, {replicas} replicas, "
            f"memory sampled every {period:g} s; growth judged on the second half"
        )
        print(f"requests {load.submitted} acknowledged, "
              f"{checker.seen_count()} results seen by producers"
              f"{'' if all_seen else ' (SOME MISSING)'}")  # fmt: skip
        print(sampler.table())
        grows = [s.name for s in sampler.series.values()
                 if s.verdict() == "GROWS" and s.name not in TEST_SIDE]  # fmt: skip
        print("verdict:", "nothing of batchd's grows without bound" if not grows
              else f"growing: {', '.join(grows)}")  # fmt: skip
        return 0 if all_seen and not grows else 1
    finally:
        if sampler is not None:
            sampler.stop()
        if readers is not None:
            readers.close()
        cluster.close()
        if keep is None:
            shutil.rmtree(directory, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.chaos.soak", description=__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=80.0, help="submits per second")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--period", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--dir", type=Path, help="keep data and logs here")
    args = parser.parse_args(argv)
    return soak(args.duration, args.rate, args.replicas, args.period, args.dir)


if __name__ == "__main__":
    sys.exit(main())
