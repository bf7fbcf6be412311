"""What every benchmark shares: the run's sizes, result rows, process measurements, sample data.

Each benchmark module has `run(ctx) -> list[Row]`; it starts its own Redis (and emulator) with the
test-suite helpers, measures batchd and a baseline side by side, and reports medians.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import redis

from batchd import Settings
from batchd.store import Keys, Read, Store, connect
from batchd.store import counters as counter_store
from tests.support.daemon import FAST_ENV
from tests.support.daemon import daemon_env as _test_daemon_env
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer

#: The account every benchmark uses, and its emulator key.
ACCOUNT = "default"
API_KEY = "sk-ant-emulator-bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _text_pool(size: int = 1 << 20, seed: int = 6) -> str:
    """Prose-like text: words of a 600-word vocabulary (Zipf-weighted, as in real text) with
    punctuation. A repeated sentence would compress far better than prompts do, and Redis
    compresses its AOF snapshots, which changes how often it rewrites them."""
    rng = random.Random(seed)
    letters = "etaoinshrdlcumwfgypbvkjxqz"
    weights = [26 - i for i in range(26)]
    vocabulary = [
        "".join(rng.choices(letters, weights, k=rng.choice((2, 3, 3, 4, 4, 5, 6, 7, 8, 9))))
        for _ in range(600)
    ]
    rank = [1 / (i + 1) for i in range(len(vocabulary))]
    words: list[str] = []
    length = 0
    while length < size:
        word = rng.choices(vocabulary, rank)[0]
        if rng.random() < 0.08:
            word += rng.choice((",", ".", ";", "?"))
        words.append(word)
        length += len(word) + 1
    return " ".join(words)


_POOL = _text_pool()


@dataclass(frozen=True)
class Sizes:
    """How big each benchmark runs: quick (a few minutes) or full (the issue's sizes)."""

    mode: str
    reps: int
    submit: int  # submit_many requests
    submit_single: int  # single submits in a loop
    rq: int  # rq enqueue_many jobs
    batch: int  # requests in the built, uploaded and fanned-out batch
    webhooks: int  # deliveries
    e2e: int  # requests end to end
    scaling: tuple[int, ...]  # end-to-end sizes
    replicas_requests: int  # requests of the 1-vs-3 replicas run
    replicas_batch: int  # batch.max_requests in that run
    memory: int  # pending requests per size in the Redis memory measure
    slow_reps: int  # repetitions of the benchmarks that wait on batchd's real timings
    delivery: int  # requests in the batch each result channel receives
    recovery: int  # requests of each crash run (batches of RECOVERY_BATCH)
    in_flight: tuple[int, ...]  # batches in flight at once, for detection and API calls
    cpu_ops: int  # operations per CPU-per-operation measure


QUICK = Sizes("quick", 3, 20_000, 2_000, 20_000, 20_000, 5_000, 10_000, (1_000, 10_000), 10_000,
              2_000, 10_000, 1, 5_000, 2_000, (1, 10, 100), 5_000)  # fmt: skip
FULL = Sizes("full", 3, 100_000, 10_000, 100_000, 100_000, 20_000, 100_000,
             (1_000, 10_000, 100_000), 100_000, 10_000, 20_000, 3, 10_000, 5_000, (1, 10, 100),
             20_000)  # fmt: skip


@dataclass
class Row:
    """One measured figure, its baseline from the same run, and the target it must show."""

    bench: str
    measure: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    note: str = ""
    samples: list[float] = field(default_factory=list)
    baseline_samples: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Context:
    """What a benchmark gets: sizes, a scratch directory, and a way to say what it is doing."""

    sizes: Sizes
    workdir: Path
    verbose: bool = True

    def say(self, text: str) -> None:
        if self.verbose:
            print(f"  {text}", file=sys.stderr, flush=True)

    def scratch(self, name: str) -> Path:
        path = self.workdir / name
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path


def median(values: list[float]) -> float:
    return float(statistics.median(values))


def at_least(value: float, floor: float) -> bool:
    return value >= floor


# -- sample data -------------------------------------------------------------------------------


def compact(value: Any) -> bytes:
    """The bytes batchd stores for a JSON value (compact, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def params(i: int, size: int = 2500) -> dict[str, Any]:
    """A Messages request whose compact JSON is exactly `size` bytes (for size >= 120)."""
    doc: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": ""}],
    }
    room = size - len(compact(doc))
    head = f"Ticket {i}: "
    # Each request its own stretch of the pool (pool length and stride share no factor).
    start = (i * 7919) % (len(_POOL) - room)
    body = _POOL[start : start + max(0, room - len(head))]
    doc["messages"][0]["content"] = (head + body)[:room]
    return doc


# -- processes ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc/<pid>/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident memory of a live process, bytes."""
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE
    except OSError:
        return 0


def pss_bytes(pid: int) -> int:
    """Proportional set size of a live process: shared pages counted once across processes."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def tree(root: int) -> list[int]:
    """`root` and every live process descended from it."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
        except OSError:
            continue
    found = [root]
    frontier = [root]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        found += frontier
    return found


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat, every CPU)."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu() -> float:
    """CPU seconds of this process and every process it started (live or waited for)."""
    with open("/proc/self/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    mine = sum(int(x) for x in f[11:15]) / CLK_TCK  # utime stime cutime cstime
    return mine + sum(cpu_seconds(p) for p in tree(os.getpid())[1:])


class Contention:
    """How much of the machine other processes used while a benchmark ran (0 to 1)."""

    def __init__(self) -> None:
        self.wall = time.monotonic()
        self.busy = machine_busy()
        self.own = own_cpu()

    def share(self) -> float:
        wall = time.monotonic() - self.wall
        other = (machine_busy() - self.busy) - (own_cpu() - self.own)
        return max(0.0, other / (wall * (os.cpu_count() or 1))) if wall > 0 else 0.0


def redis_version() -> str:
    from tests.support.redis import redis_server_binary

    out = subprocess.run([redis_server_binary(), "--version"], capture_output=True, text=True)
    return out.stdout.split("v=", 1)[-1].split()[0] if "v=" in out.stdout else out.stdout.strip()


@contextmanager
def redis_server(ctx: Context, name: str) -> Iterator[RedisServer]:
    """A private redis-server as batchd wants it for every guarantee to hold (`appendonly yes`,
    `appendfsync always`, `noeviction`), killed afterwards. Every write round trip then waits
    for a disk flush, for batchd and for the baselines alike."""
    server = RedisServer(ctx.scratch(name) / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@contextmanager
def emulator(ctx: Context, name: str, *args: str) -> Iterator[EmulatorProcess]:
    """`batchd emulator` in its own process, one workspace, the given flags."""
    emu = EmulatorProcess(ctx.scratch(name), api_keys=(API_KEY,), args=list(args))
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


#: The rq Redis of each cluster a benchmark started (rq needs a standalone server): a cluster URL
#: alone is no valid configuration.
RQ_URLS: dict[str, str] = {}


def settings(redis_url: str, api_url: str = "http://127.0.0.1:9", **overrides: Any) -> Settings:
    """Settings for an in-process Client/Runtime against the benchmark's Redis and emulator."""
    sections: dict[str, Any] = {"api": {"base_url": api_url}}
    if redis_url in RQ_URLS:
        sections["redis"] = {"rq_url": RQ_URLS[redis_url]}
    sections.update(overrides)
    return Settings.load(redis_url=redis_url, accounts={ACCOUNT: {"api_key": API_KEY}}, **sections)


def flush(client: redis.Redis) -> None:
    """Empty Redis and let it compact its AOF, so one repetition does not weigh on the next."""
    client.flushall()
    try:
        client.bgrewriteaof()
    except redis.ResponseError:
        pass  # a rewrite already running
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            return
        time.sleep(0.05)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    out = fn()
    return time.perf_counter() - started, out


def wait_until(check: Callable[[], object], timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0 to 100) of `values`, linearly interpolated."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def store_at(url: str) -> Store:
    """A Store on the benchmark's Redis (or cluster), under batchd's default prefix."""
    return Store(connect(url), Keys())


def counters(store: Store) -> dict[str, int]:
    """The benchmark account's counters (submitted, ended:<status>, batches_created, ...)."""
    return store.read(counter_store.read(store.keys, [ACCOUNT]))[ACCOUNT]


def ended(store: Store) -> int:
    """Requests of the benchmark account that have ended, in any status."""
    return sum(v for k, v in counters(store).items() if k.startswith("ended:"))


def daemon_env(
    redis_url: str, api_url: str, extra: dict[str, str] | None = None, *, fast: bool = True
) -> dict[str, str]:
    """The environment of a `batchd run` for a benchmark. `fast`: the test suite's short
    timings (polls from 0.1 s, 3 s leases); otherwise batchd's own defaults, as shipped."""
    env = _test_daemon_env(redis_url, api_url, API_KEY)
    if not fast:
        for name in FAST_ENV:
            if name not in ("BATCHD_LOG__FORMAT", "BATCHD_HTTP__PORT"):
                env.pop(name, None)
    env["BATCHD_LOG__LEVEL"] = "warning"
    env.update(extra or {})
    return env


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds redis-server has used (INFO cpu: main thread and children, user + sys)."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def commandstats(client: redis.Redis) -> dict[str, tuple[int, float]]:
    """INFO commandstats: command name -> (calls, usec)."""
    out: dict[str, tuple[int, float]] = {}
    for name, stats in client.info("commandstats").items():
        if isinstance(stats, dict):
            out[name.removeprefix("cmdstat_")] = (int(stats["calls"]), float(stats["usec"]))
    return out


def usec_per_call(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]], command: str
) -> tuple[float, int]:
    """Redis's own microseconds per call of `command` between two INFO commandstats, and how
    many calls there were."""
    calls = after.get(command, (0, 0.0))[0] - before.get(command, (0, 0.0))[0]
    usec = after.get(command, (0, 0.0))[1] - before.get(command, (0, 0.0))[1]
    return (usec / calls if calls else 0.0), calls


def read_all(store: Store, reads: list[Read[Any]], chunk: int = 1000) -> None:
    """Send many store reads (writes too: Read is any pipelined command group) in pipelines of
    about `chunk` reads, their replies checked and dropped."""
    for i in range(0, len(reads), chunk):
        part = reads[i : i + chunk]
        store.read(Read([c for r in part for c in r.commands], lambda out: None))
