"""Overhead (issue 21, point 8): the same workload through batchd and through a plain script
around the official `anthropic` SDK's batches API, side by side on the same emulator.

The workload: 5,000 requests of 1 KB, batches of 1,000, the emulator taking 1 s per batch. The
plain script creates the five batches, polls each every SDK_POLL seconds and iterates each one's
results once it ended; it has no durability, no retries and pays twice after a crash. batchd runs
with its default settings (but for batches of 1,000): a producer's `submit_many`, one `batchd
run`, one consumer reading the reply queue with prefetch 100.

Wall time runs from the first API call (the script) or the first submit (batchd) to the last
result in hand. CPU is every process of each side from then on, imports and start-up left out:
the script; batchd run (main process and stage workers), Redis, the producer and the consumer.
The emulator serves both and is counted for neither. Where batchd's extra time goes is read from
its own records (Redis's times of each batch) beside the emulator's.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass, field

from batchd import Client, Ticket
from bench.common import (
    API_KEY,
    Context,
    Row,
    cpu_seconds,
    daemon_env,
    emulator,
    median,
    params,
    redis_server,
    settings,
    store_at,
    tree,
)
from bench.stack import Consumer, assemblies, emulated_batches, epoch, ms, start_daemon

NAME = "overhead"
QUEUE = "bench-overhead"
REQUESTS = 5_000
SIZE = 1_000
BATCH = 1_000
PROCESSING = 1.0
#: Seconds between two polls of a batch by the plain script.
SDK_POLL = 1.0
WALL_TARGET = 1.25
CPU_TARGET = 1.5

SCRIPT = r"""
import json, os, sys, time
import anthropic
from bench.common import params
url, key = sys.argv[1:3]
n, size, batch = map(int, sys.argv[3:6])
poll = float(sys.argv[6])
requests = [{"custom_id": f"r{i}", "params": params(i, size)} for i in range(n)]
client = anthropic.Anthropic(base_url=url, api_key=key)
client.models.list()  # connect before the clock starts
t0, c0 = time.time(), os.times()
pending, got = [], 0
for i in range(0, n, batch):
    pending.append(client.messages.batches.create(requests=requests[i:i + batch]).id)
while pending:
    for bid in list(pending):
        if client.messages.batches.retrieve(bid).processing_status == "ended":
            for line in client.messages.batches.results(bid):
                got += 1
            pending.remove(bid)
    if pending:
        time.sleep(poll)
t1, c1 = time.time(), os.times()
print(json.dumps({"wall": t1 - t0, "cpu": c1.user + c1.system - c0.user - c0.system, "got": got}))
"""


@dataclass
class Side:
    wall: float
    cpu: float
    parts: dict[str, float] = field(default_factory=dict)  # CPU seconds by process
    timeline: dict[str, float] = field(default_factory=dict)  # seconds, see `timeline`


def sdk_script(emu_url: str) -> Side:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, emu_url, API_KEY, str(REQUESTS), str(SIZE), str(BATCH),
         str(SDK_POLL)],
        capture_output=True, text=True, check=False, timeout=600,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"the SDK script failed:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["got"] == REQUESTS, got
    return Side(got["wall"], got["cpu"])


def timeline(url: str, emu_url: str, started: float, last: float) -> dict[str, float]:
    """Where batchd's wall time went, from Redis's and the emulator's records of each batch:
    to the first create, between creates, the emulator's processing, the end noticed, the
    fan-out, the last reply read."""
    store = store_at(url)
    try:
        records = assemblies(store)
    finally:
        store.close()
    api = emulated_batches(emu_url)
    created = sorted(epoch(api[a.batch_id or ""].created_at) for a in records)
    ended = {a.id: epoch(api[a.batch_id or ""].ended_at) for a in records}
    noticed = [ms(a.ended_ms) - ended[a.id] for a in records]
    fanout = [ms(a.closed_ms) - ms(a.ended_ms) for a in records]
    return {
        "to first create": created[0] - started,
        "first to last create": created[-1] - created[0],
        "end noticed after": median(noticed),
        "fan-out": median(fanout),
        "last fan-out to last reply": last - max(ms(a.closed_ms) for a in records),
        "first cut after": min(ms(a.created_ms) for a in records) - started,
    }


def batchd_run(ctx: Context, rep: int) -> Side:
    tag = f"{NAME}-{rep}"
    items = [{"params": params(i, SIZE), "reply_to": QUEUE} for i in range(REQUESTS)]
    with (
        redis_server(ctx, tag) as server,
        emulator(ctx, tag + "-emulator", "--processing-time", str(PROCESSING)) as emu,
    ):
        store = store_at(server.url)
        env = daemon_env(server.url, emu.url, {"BATCHD_BATCH__MAX_REQUESTS": str(BATCH)},
                         fast=False)  # fmt: skip
        client = Client(settings=settings(server.url, emu.url))
        consumer = Consumer(server.url, "queue", QUEUE, REQUESTS, 100)
        daemon = start_daemon(ctx.scratch(tag + "-daemon"), env, store)
        try:
            client.daemons_alive()  # the producer's own look-ups happen before the clock
            assert daemon.proc is not None and server.proc is not None
            pids = {"batchd run": tree(daemon.proc.pid), "redis": [server.proc.pid]}
            before = {k: sum(cpu_seconds(p) for p in v) for k, v in pids.items()}
            c0 = time.process_time()
            started = time.time()
            out = client.submit_many(items)
            producer = time.process_time() - c0
            assert all(isinstance(o, Ticket) for o in out)
            got = consumer.result()
            assert got.got == REQUESTS
            parts = {k: sum(cpu_seconds(p) for p in v) - before[k] for k, v in pids.items()}
            parts |= {"producer": producer, "consumer": got.cpu}
            wall = got.last - started
            return Side(wall, sum(parts.values()), parts,
                        timeline(server.url, emu.url, started, got.last))  # fmt: skip
        finally:
            consumer.close()
            client.close()
            daemon.stop()
            store.close()


def run(ctx: Context) -> list[Row]:
    ours: list[Side] = []
    sdk: list[Side] = []
    with emulator(ctx, NAME + "-sdk-emulator", "--processing-time", str(PROCESSING)) as emu:
        for rep in range(ctx.sizes.slow_reps):
            ctx.say(f"{NAME}: repetition {rep + 1}: {REQUESTS:,} requests through each side")
            for side in ("sdk", "batchd") if rep % 2 == 0 else ("batchd", "sdk"):
                if side == "sdk":
                    emu.reset()
                    sdk.append(sdk_script(emu.url))
                else:
                    ours.append(batchd_run(ctx, rep))
    wall, sdk_wall = median([s.wall for s in ours]), median([s.wall for s in sdk])
    cpu, sdk_cpu = median([s.cpu for s in ours]), median([s.cpu for s in sdk])
    parts = {k: median([s.parts[k] for s in ours]) for k in ours[0].parts}
    times = {k: median([s.timeline[k] for s in ours]) for k in ours[0].timeline}
    load = (f"{REQUESTS:,} requests of {SIZE:,} B, batches of {BATCH:,}, {PROCESSING:g} s "
            "processing")  # fmt: skip
    return [
        Row(NAME, f"wall time, {load}", wall, "s", sdk_wall,
            f"plain anthropic SDK script (polls every {SDK_POLL:g} s)", wall / sdk_wall,
            f"<= {WALL_TARGET:g}x", wall / sdk_wall <= WALL_TARGET,
            "batchd's time: " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()),
            [s.wall for s in ours], [s.wall for s in sdk]),
        Row(NAME, f"CPU seconds, {load}", cpu, "s", sdk_cpu, "the same script", cpu / sdk_cpu,
            f"<= {CPU_TARGET:g}x", cpu / sdk_cpu <= CPU_TARGET,
            "batchd's CPU: " + ", ".join(f"{k} {v:.2f} s" for k, v in parts.items()),
            [s.cpu for s in ours], [s.cpu for s in sdk]),
    ]  # fmt: skip
