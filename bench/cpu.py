"""CPU per operation on the hot paths (issue 22, point 3), each beside a baseline doing the
least the same operation needs, in the same run. CPU time is robust to a busy machine where
rates are not: a process descheduled for a while spends no CPU meanwhile.

- a single `submit`: Redis's own time per call (INFO commandstats: EVALSHA's usec over its
  calls), beside one RPUSH of the same bytes;
- `submit_many`: the producer's CPU per item, beside redis-py pipelining RPUSHes of the same
  params (encoded as compact JSON) and rq's `enqueue_many` of them;
- fan-out: Redis's CPU per result (INFO cpu, main process), beside pipelined RPUSHes of the
  same envelopes (each written once); and the fan-out stage's own CPU per result, beside the
  official SDK iterating the same results;
- webhooks: `batchd run --roles webhooks` CPU per delivery (its idle CPU taken off), beside a
  bare aiohttp client posting the same bodies;
- ingress: `batchd run --roles ingress` CPU per HTTP submit (idle taken off), beside a bare
  aiohttp server answering the same POSTs from the same load generator.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anthropic
import redis
from rq import Queue

from batchd import Client, Ticket
from batchd.runtime import Runtime
from batchd.store import Store, new_token
from batchd.store import replies as reply_store
from batchd.store import webhooks as wh
from bench.common import (
    ACCOUNT,
    API_KEY,
    Context,
    Row,
    commandstats,
    compact,
    cpu_seconds,
    daemon_env,
    emulator,
    flush,
    median,
    params,
    read_all,
    redis_cpu,
    redis_server,
    settings,
    store_at,
    tree,
    usec_per_call,
    wait_until,
)
from bench.fanout import QUEUE, batch_id, compact_aof, fan_out, ready_batch, replies_waiting
from bench.submit import CHUNK, job
from bench.webhooks import outbox, received
from bench.webhooks_speed import SECRET, envelope, free_port, wait_port
from tests.support.daemon import DaemonProcess

NAME = "cpu"
#: Seconds a daemon's idle CPU is measured over, to take it off what a load cost.
IDLE_SECONDS = 2.0
INGRESS_CONNECTIONS = 64
INGRESS_WARMUP = 1000

Samples = dict[str, list[float]]


def command_usec(
    before: dict[str, tuple[int, float]], after: dict[str, tuple[int, float]]
) -> tuple[float, int]:
    usec = 0.0
    calls = 0
    for name, (n, us) in after.items():
        if name == "info":
            continue
        n0, us0 = before.get(name, (0, 0.0))
        usec += us - us0
        calls += n - n0
    return usec, calls


# -- submit ------------------------------------------------------------------------------------


def submits(ctx: Context, out: Samples) -> None:
    n, single = ctx.sizes.submit, min(ctx.sizes.cpu_ops, ctx.sizes.submit_single)
    items = [{"params": params(i)} for i in range(n)]
    payloads = [compact(item["params"]) for item in items]
    with redis_server(ctx, NAME + "-submit") as server:
        r = redis.Redis.from_url(server.url)
        client = Client(settings=settings(server.url))
        try:
            client.submit(items[0]["params"])  # the script loaded, the accounts known
            for rep in range(ctx.sizes.reps):
                ctx.say(f"{NAME}: submit, repetition {rep + 1}/{ctx.sizes.reps}")
                flush(r)

                def ours() -> None:
                    for item in items[:single]:
                        client.submit(item["params"])

                def raw() -> None:
                    for payload in payloads[:single]:
                        r.rpush("raw:q", payload)

                before = commandstats(r)
                ours()
                after = commandstats(r)
                out["submit_redis"].append(usec_per_call(before, after, "evalsha")[0])
                _, calls = command_usec(before, after)
                # INFO commandstats counts each redis.call inside a script as a call of its own.
                out["submit_commands"].append(calls / single - 1)
                out["submit_types"].append(usec_per_call(before, after, "type")[1] / single)
                before = commandstats(r)
                raw()
                out["rpush_redis"].append(usec_per_call(before, commandstats(r), "rpush")[0])
                flush(r)
                for name, fn in producer_sides(r, client, items):
                    c0 = time.process_time()
                    fn()
                    out[name].append((time.process_time() - c0) / n * 1e6)
                    flush(r)
        finally:
            client.close()
            r.close()


def producer_sides(
    r: redis.Redis, client: Client, items: list[dict[str, Any]]
) -> Iterator[tuple[str, Callable[[], None]]]:
    """submit_many, and its baselines over the same items: what each costs the producer."""

    def many() -> None:
        out = client.submit_many(items, chunk=CHUNK)
        assert all(isinstance(o, Ticket) for o in out)

    def raw() -> None:
        # The params encoded here too, as submit_many must encode them.
        pipe = r.pipeline(transaction=False)
        for i, item in enumerate(items, 1):
            pipe.rpush("raw:q", compact(item["params"]))
            if i % CHUNK == 0:
                pipe.execute()
        pipe.execute()

    def rq_many() -> None:
        q = Queue("bench", connection=r)
        for start in range(0, len(items), CHUNK):
            q.enqueue_many(
                [
                    Queue.prepare_data(job, args=(it["params"],))
                    for it in items[start : start + CHUNK]
                ]
            )

    yield "many_cpu", many
    yield "raw_cpu", raw
    yield "rq_cpu", rq_many


# -- fan-out -----------------------------------------------------------------------------------


def fanouts(ctx: Context, out: Samples) -> None:
    n = ctx.sizes.batch
    with (
        redis_server(ctx, NAME + "-fanout") as server,
        emulator(ctx, NAME + "-emulator", "--processing-time", "0") as emu,
    ):
        rt = Runtime(settings(server.url, emu.url))
        try:
            for rep in range(ctx.sizes.reps):
                ctx.say(f"{NAME}: fan-out of {n:,} results, repetition {rep + 1}/{ctx.sizes.reps}")
                flush(rt.redis)
                emu.reset()
                asm = ready_batch(rt, n)
                compact_aof(rt.redis)
                before = commandstats(rt.redis)
                cpu0, c0 = redis_cpu(rt.redis), time.process_time()
                fan_out(rt, asm)
                own, spent = time.process_time() - c0, redis_cpu(rt.redis) - cpu0
                usec, calls = usec_per_call(before, commandstats(rt.redis), "evalsha")
                assert replies_waiting(rt) == n
                out["fan_redis"].append(spent / n * 1e6)
                out["fan_redis_usec"].append(usec * calls / n)
                out["fan_python"].append(own / n * 1e6)
                # Baseline: the same envelopes written once each, pipelined in fan-out's chunks.
                envelopes = take_all(rt)
                compact_aof(rt.redis)
                cpu0 = redis_cpu(rt.redis)
                pipe = rt.redis.pipeline(transaction=False)
                for i, env in enumerate(envelopes, 1):
                    pipe.rpush("raw:results", env)
                    if i % 380 == 0:
                        pipe.execute()
                pipe.execute()
                out["rpush_results"].append((redis_cpu(rt.redis) - cpu0) / n * 1e6)
                client = anthropic.Anthropic(base_url=emu.url, api_key=API_KEY, max_retries=0)
                try:
                    client.models.list()
                    c0 = time.process_time()
                    got = sum(1 for _ in client.messages.batches.results(batch_id(rt, asm)))
                    out["sdk_python"].append((time.process_time() - c0) / n * 1e6)
                    assert got == n
                finally:
                    client.close()
        finally:
            rt.close()


def take_all(rt: Runtime) -> list[bytes]:
    """Every envelope on the fan-out's reply queue, taken as a consumer takes them."""
    found: list[bytes] = []
    while got := rt.store.run(reply_store.take(rt.keys, QUEUE, "bench-cpu", 1000, [])):
        found += got
    return found


# -- daemons: webhooks and ingress -------------------------------------------------------------


@contextmanager
def daemon(ctx: Context, tag: str, env: dict[str, str], roles: str) -> Iterator[DaemonProcess]:
    d = DaemonProcess(ctx.scratch(tag), env, ["--roles", roles])
    d.start()
    try:
        yield d
    finally:
        d.stop()


def process_cpu(d: DaemonProcess) -> float:
    assert d.proc is not None
    return sum(cpu_seconds(p) for p in tree(d.proc.pid))


def idle_rate(d: DaemonProcess) -> float:
    """CPU seconds per second the daemon spends doing nothing asked of it."""
    c0, t0 = process_cpu(d), time.monotonic()
    time.sleep(IDLE_SECONDS)
    return (process_cpu(d) - c0) / (time.monotonic() - t0)


def webhooks(ctx: Context, out: Samples) -> None:
    n = ctx.sizes.cpu_ops
    port = free_port()
    receiver = subprocess.Popen([sys.executable, "-m", "bench.webhooks_speed", "--receiver",
                                 str(port)])  # fmt: skip
    url = f"http://127.0.0.1:{port}/hook"
    try:
        wait_port(port, receiver, "the receiver")
        with redis_server(ctx, NAME + "-webhooks") as server:
            store = store_at(server.url)
            env = daemon_env(server.url, "http://127.0.0.1:9", {
                "BATCHD_WEBHOOKS__SECRET": SECRET,
                "BATCHD_WEBHOOKS__ALLOW_NETWORKS": '["127.0.0.1/32"]',
                "BATCHD_HTTP__ENABLED": "false",
            })  # fmt: skip
            try:
                with daemon(ctx, NAME + "-webhooks-daemon", env, "webhooks") as d:
                    time.sleep(3)  # imports and connections settle
                    for rep in range(ctx.sizes.reps):
                        ctx.say(f"{NAME}: {n:,} webhooks, repetition {rep + 1}/{ctx.sizes.reps}")
                        webhook_rep(store, d, url, port, n, out)
            finally:
                store.close()
    finally:
        receiver.terminate()
        receiver.wait(10)


def webhook_rep(store: Store, d: DaemonProcess, url: str, port: int, n: int, out: Samples) -> None:
    """n deliveries written due in an hour, then made due at once; the sender's CPU until the
    receiver has them all, its idle CPU taken off; then the bare client, same bodies."""
    due = store.keys.deliveries_due(ACCOUNT)
    later = store.now_ms() + 3_600_000
    tokens = [new_token() for _ in range(n)]
    bodies = [wh.enqueue(store.keys, ACCOUNT, t, url, envelope(ACCOUNT, t), later) for t in tokens]
    read_all(store, bodies)
    before = received(port)
    idle = idle_rate(d)
    cpu0, rcpu0 = process_cpu(d), redis_cpu(store.client)
    stats0, t0 = commandstats(store.client), time.monotonic()
    deliver(store.client, due, port, before, n)
    seconds = time.monotonic() - t0
    calls = command_usec(stats0, commandstats(store.client))[1]
    out["hook_cpu"].append((process_cpu(d) - cpu0 - idle * seconds) / n * 1e6)
    out["hook_redis"].append((redis_cpu(store.client) - rcpu0) / n * 1e6)
    out["hook_commands"].append(calls / n)
    wait_until(lambda: outbox(store) == 0, 60, "the outbox to settle", 0.05)
    bare = subprocess.run(
        [sys.executable, "-c", "import sys; from bench.webhooks import run_bare; "
         "run_bare(sys.argv[1], int(sys.argv[2]))", url, str(n)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out["hook_bare"].append(json.loads(bare.stdout)["cpu"] * 1e6)


def deliver(r: redis.Redis, due: str, port: int, before: int, n: int) -> None:
    """Make every delivery due at once (score 0) and wait until the receiver has them all."""
    r.zunionstore(due, {due: 0})
    wait_until(lambda: received(port) - before >= n, 600, "every delivery", 0.01)


BARE_SERVER = r"""
import sys
from aiohttp import web
async def submit(request):
    await request.read()
    return web.json_response({"id": "default.0"}, status=202)
app = web.Application()
app.router.add_post("/v1/requests", submit)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def load(url: str, n: int) -> dict[str, Any]:
    """The ingress benchmark's load generator (bench/ingress_speed.py) against `url`."""
    script = str(Path(__file__).resolve().parent / "ingress_speed.py")
    done = subprocess.run(
        [sys.executable, script, "--load", url, "--n", str(n), "--connections",
         str(INGRESS_CONNECTIONS), "--warmup", str(INGRESS_WARMUP)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    found: dict[str, Any] = json.loads(done.stdout)
    return found


def measure_server(pids: Callable[[], list[int]], url: str, n: int) -> float:
    """CPU µs per request of a server's processes under the load generator, idle taken off."""
    c0, t0 = sum(cpu_seconds(p) for p in pids()), time.monotonic()
    time.sleep(IDLE_SECONDS)
    idle = (sum(cpu_seconds(p) for p in pids()) - c0) / (time.monotonic() - t0)
    c0, t0 = sum(cpu_seconds(p) for p in pids()), time.monotonic()
    got = load(url, n)
    spent = sum(cpu_seconds(p) for p in pids()) - c0 - idle * (time.monotonic() - t0)
    ok = sum(v for k, v in got["statuses"].items() if str(k).startswith("2"))
    assert ok == n, got["statuses"]
    return spent / (n + INGRESS_WARMUP) * 1e6


def ingress(ctx: Context, out: Samples) -> None:
    n = ctx.sizes.cpu_ops
    with redis_server(ctx, NAME + "-ingress") as server:
        port = free_port()
        env = daemon_env(server.url, "http://127.0.0.1:9", {
            "BATCHD_INGRESS__ENABLED": "true",
            "BATCHD_INGRESS__PORT": str(port),
            "BATCHD_INGRESS__RATE_LIMIT": "0",
            "BATCHD_HTTP__ENABLED": "false",
        })  # fmt: skip
        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_SERVER, str(bare_port)])
        try:
            with daemon(ctx, NAME + "-ingress-daemon", env, "ingress") as d:
                assert d.proc is not None
                wait_port(port, d.proc, "the ingress")
                wait_port(bare_port, bare, "the bare server")
                time.sleep(2)
                pid = d.proc.pid
                sides: list[tuple[str, Callable[[], list[int]], str]] = [
                    ("ingress", lambda: tree(pid), f"http://127.0.0.1:{port}"),
                    ("ingress_bare", lambda: [bare.pid], f"http://127.0.0.1:{bare_port}"),
                ]
                for rep in range(ctx.sizes.reps):
                    ctx.say(f"{NAME}: {n:,} HTTP submits, repetition {rep + 1}/{ctx.sizes.reps}")
                    for key, pids, url in sides if rep % 2 == 0 else sides[::-1]:
                        out[key].append(measure_server(pids, url, n))
        finally:
            bare.terminate()
            bare.wait(10)


# -- the table -----------------------------------------------------------------------------------


def run(ctx: Context) -> list[Row]:
    out: Samples = {
        k: []
        for k in (
            "submit_redis", "submit_commands", "submit_types", "rpush_redis", "many_cpu",
            "raw_cpu", "rq_cpu",
            "fan_redis", "fan_redis_usec", "fan_python", "rpush_results", "sdk_python",
            "hook_cpu", "hook_redis", "hook_commands", "hook_bare", "ingress", "ingress_bare",
        )
    }  # fmt: skip
    submits(ctx, out)
    fanouts(ctx, out)
    webhooks(ctx, out)
    ingress(ctx, out)
    m = {k: median(v) for k, v in out.items()}
    single = min(ctx.sizes.cpu_ops, ctx.sizes.submit_single)

    def row(what: str, key: str, base: str, base_name: str, target: float | str,
            note: str = "") -> Row:  # fmt: skip
        limit = target if isinstance(target, float) else None
        return Row(NAME, what, m[key], "us", m[base], base_name, m[key] / m[base],
                   f"<= {limit:g} us" if limit else str(target),
                   m[key] <= limit if limit else None, note, out[key], out[base])  # fmt: skip

    return [
        row(f"Redis time per single submit ({single:,} in a loop; EVALSHA's usec per call)",
            "submit_redis", "rpush_redis", "one RPUSH of the same bytes", 40.0,
            f"{m['submit_commands']:.1f} redis.call per submit inside the script, "
            f"{m['submit_types']:.1f} of them TYPE (INFO commandstats)"),
        row(f"producer CPU per submit_many item ({ctx.sizes.submit:,} items)", "many_cpu",
            "raw_cpu", "redis-py pipelining RPUSH, JSON encoding included",
            "report (issue 22: halve it)",
            f"rq enqueue_many: {m['rq_cpu']:.1f} us per job"),
        row(f"Redis CPU per fanned-out result ({ctx.sizes.batch:,} results)", "fan_redis",
            "rpush_results", "RPUSH of each envelope once, pipelined", 20.0,
            f"EVALSHA time {m['fan_redis_usec']:.1f} us per result (INFO commandstats)"),
        row("fan-out stage's own CPU per result", "fan_python", "sdk_python",
            "anthropic SDK iterating the same results", "report"),
        row(f"webhook sender CPU per delivery ({ctx.sizes.cpu_ops:,} deliveries)", "hook_cpu",
            "hook_bare", "bare aiohttp client posting the same bodies", 300.0,
            f"Redis CPU {m['hook_redis']:.0f} us and {m['hook_commands']:.1f} commands (those "
            "inside scripts too) per delivery"),
        row(f"ingress CPU per HTTP submit ({ctx.sizes.cpu_ops:,} over {INGRESS_CONNECTIONS} "
            "connections)", "ingress", "ingress_bare", "bare aiohttp server, same load", 250.0),
    ]  # fmt: skip


if __name__ == "__main__":
    sys.exit("run it with python -m bench --only cpu")
