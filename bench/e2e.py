"""End to end: requests from `submit_many` to the last reply read, the emulator finishing at once;
wall time and CPU seconds per 1,000 requests of every process, and how both scale with the
number of requests (1k, 10k, 100k) and of `batchd run` replicas (1 and 3).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from batchd import Client, Ticket
from bench.common import (
    Context,
    Row,
    cpu_seconds,
    daemon_env,
    emulator,
    median,
    params,
    redis_server,
    settings,
    tree,
    wait_until,
)
from bench.stack import listening
from tests.support.daemon import DaemonProcess

NAME = "e2e"
QUEUE = "bench-e2e"
#: Replies the consumer takes per round trip (`Client.replies(prefetch=...)`).
PREFETCH = 100
#: Settings of the daemons: a lane is cut after a second, polls start at 0.1 s.
DAEMON_ENV = {
    "BATCHD_BATCH__MAX_WAIT": "1",
    "BATCHD_LOG__LEVEL": "warning",
}

# The consumer process: reads the reply queue until n replies came, acknowledging each.
CONSUMER = """
import json, os, sys, time
from batchd import Client, Settings
url, queue, n, PREFETCH = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = Client(settings=Settings.load(redis_url=url))
t0 = os.times()
print("ready", flush=True)
got = 0
with client.replies(queue, timeout=600, prefetch=PREFETCH) as stream:
    for result in stream:
        got += 1
        if got == n:
            break  # leaving the loop acknowledges what was read
last = time.time()
t = os.times()
client.close()
cpu = t.user + t.system - t0.user - t0.system
print(json.dumps({"got": got, "last": last, "cpu": cpu}), flush=True)
"""


@dataclass
class Run:
    """One end-to-end run: wall seconds and CPU seconds per process."""

    n: int
    wall: float
    cpu: dict[str, float] = field(default_factory=dict)

    def per_k(self, what: str) -> float:
        return (self.wall if what == "wall" else self.cpu[what]) / self.n * 1000


def self_cpu() -> float:
    t = os.times()
    return t.user + t.system


def one_run(
    ctx: Context,
    n: int,
    replicas: int = 1,
    max_requests: int | None = None,
    watch: Callable[[str], AbstractContextManager[object]] | None = None,
) -> Run:
    """Fresh Redis, emulator and daemons; submit n, read n replies; measure. `watch(redis
    url)`, if given, is entered as the first submit starts and left after the last reply."""
    tag = f"{NAME}-{n}-{replicas}"
    extra = dict(DAEMON_ENV)
    if max_requests:
        extra["BATCHD_BATCH__MAX_REQUESTS"] = str(max_requests)
    with (
        redis_server(ctx, tag) as server,
        emulator(ctx, tag + "-emulator", "--processing-time", "0") as emu,
    ):
        env = daemon_env(server.url, emu.url, extra)
        daemons = [DaemonProcess(ctx.scratch(f"{tag}-d{i}"), env) for i in range(replicas)]
        client = Client(settings=settings(server.url, emu.url))
        consumer = subprocess.Popen(
            [sys.executable, "-c", CONSUMER, server.url, QUEUE, str(n), str(PREFETCH)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            for d in daemons:
                d.start()
            wait_until(lambda: client.daemons_alive() >= replicas, 60, "the daemons")
            # Their stage workers listen on their queues too before the clock starts.
            wait_until(lambda: all(listening(d.proc.pid, client.store) >= 2 for d in daemons
                                   if d.proc), 120, "the stage workers", 0.05)  # fmt: skip
            assert consumer.stdout is not None
            assert consumer.stdout.readline().strip() == "ready"
            pids = {
                "batchd": [p for d in daemons if d.proc for p in tree(d.proc.pid)],
                "redis": [server.proc.pid] if server.proc else [],
                "emulator": [emu.proc.pid] if emu.proc else [],
            }
            before = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
            with watch(server.url) if watch is not None else nullcontext():
                producer0 = self_cpu()
                started = time.time()
                for start in range(0, n, 10_000):
                    items = [
                        {"params": params(i), "reply_to": QUEUE}
                        for i in range(start, min(n, start + 10_000))
                    ]
                    out = client.submit_many(items)
                    assert all(isinstance(o, Ticket) for o in out)
                producer = self_cpu() - producer0
                line = consumer.stdout.readline()
            after = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
            got = json.loads(line)
            assert got["got"] == n, got
            run = Run(n, got["last"] - started)
            run.cpu = {k: after[k] - before[k] for k in pids}
            run.cpu["producer"] = producer
            run.cpu["consumer"] = got["cpu"]
            consumer.wait(30)
            return run
        finally:
            if consumer.poll() is None:
                consumer.kill()
                consumer.wait()
            if consumer.stdout is not None:
                consumer.stdout.close()
            client.close()
            for d in daemons:
                d.stop()


PROCESSES = ("batchd", "redis", "emulator", "producer", "consumer")


def run(ctx: Context) -> list[Row]:
    sizes, reps = ctx.sizes, ctx.sizes.reps
    by_n: dict[int, list[Run]] = {}
    for n in sorted(set(sizes.scaling) | {sizes.e2e}):
        # The biggest size is the end-to-end measure: all repetitions; the others fewer.
        times = reps if n == sizes.e2e else max(1, reps - 1)
        for rep in range(times):
            ctx.say(f"e2e: {n:,} requests, repetition {rep + 1}/{times}")
            by_n.setdefault(n, []).append(one_run(ctx, n))
    main = by_n[sizes.e2e]
    rows: list[Row] = []
    wall = median([r.wall for r in main])
    rows.append(
        Row(
            NAME,
            f"{sizes.e2e:,} requests, submit to last reply, 1 replica",
            wall,
            "s",
            note=f"{sizes.e2e / wall:,.0f} requests/s; consumer reads with prefetch={PREFETCH}",
            samples=[r.wall for r in main],
        )
    )
    for what in PROCESSES:
        per = median([r.per_k(what) for r in main])
        rows.append(Row(NAME, f"CPU s per 1,000 requests: {what}", per, "s",
                        samples=[r.per_k(what) for r in main]))  # fmt: skip
    # Scaling with the number of requests: t ~ n^b, b from the smallest to the biggest size.
    ns = sorted(by_n)
    for n in ns:
        per = median([r.per_k("wall") for r in by_n[n]])
        rows.append(Row(NAME, f"scaling: wall s per 1,000 requests at {n:,}", per, "s",
                        samples=[r.per_k("wall") for r in by_n[n]]))  # fmt: skip
    small, big = ns[0], ns[-1]
    t_small = median([r.wall for r in by_n[small]])
    t_big = median([r.wall for r in by_n[big]])
    exponent = math.log(t_big / t_small) / math.log(big / small)
    rows.append(
        Row(
            NAME,
            f"scaling exponent b (t ~ n^b), {small:,} to {big:,} requests",
            exponent,
            "",
            target="<= 1.0 (linear or better)",
            met=exponent <= 1.0,
        )
    )
    # Replicas: the same load, batches of replicas_batch so several can be in flight at once.
    n, batch = sizes.replicas_requests, sizes.replicas_batch
    walls: dict[int, list[float]] = {1: [], 3: []}
    for rep in range(max(1, reps - 1)):
        for replicas in (1, 3) if rep % 2 == 0 else (3, 1):
            ctx.say(f"e2e: {n:,} requests, batches of {batch:,}, {replicas} replica(s)")
            walls[replicas].append(one_run(ctx, n, replicas, batch).wall)
    one, three = median(walls[1]), median(walls[3])
    rows.append(Row(NAME, f"replicas: 3 vs 1, {n:,} requests in batches of {batch:,}", three,
                    "s", one, "1 replica", three / one, "report", None,
                    f"{os.cpu_count()} CPUs shared by every process", walls[3]))  # fmt: skip
    return rows
