"""Webhooks: deliveries per second from one `batchd run` to a local receiver answering at once,
against a bare aiohttp client posting the same bodies to the same receiver.

Deliveries are written into the outbox as the fan-out writes them, then all made due at once;
the time runs from that moment until the receiver has counted every one.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from batchd.store import Store, new_token, webhook_id
from batchd.store import counters as counter_store
from batchd.store import webhooks as wh
from bench.common import (
    ACCOUNT,
    Context,
    Row,
    cpu_seconds,
    daemon_env,
    median,
    read_all,
    redis_server,
    store_at,
    tree,
    wait_until,
)
from bench.webhooks_speed import SECRET, envelope, free_port, wait_port
from tests.support.daemon import DaemonProcess

NAME = "webhooks"
#: Connections of the bare client: the sender's default per-host limit.
BARE_CONNECTIONS = 32


def received(port: int) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as resp:
        return int(json.load(resp)["received"])


async def bare_client(url: str, bodies: list[bytes], connections: int) -> float:
    """POST every body (with the headers a delivery carries) over `connections` connections."""
    import aiohttp

    headers = {
        "content-type": "application/json",
        "webhook-id": webhook_id(new_token()),
        "webhook-timestamp": str(int(time.time())),
        "webhook-signature": "v1,bench",
    }
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as session:
        todo = iter(bodies)

        async def worker() -> None:
            for body in todo:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - started


def outbox(store: Store) -> int:
    """Deliveries still queued in the benchmark account's outbox."""
    return store.read(wh.counts(store.keys, [ACCOUNT]))[ACCOUNT][0]


def run_bare(url: str, n: int) -> None:
    """In its own process (as the daemon is): time the bare client, print deliveries/s and
    its CPU seconds per delivery (the bodies made beforehand, not counted)."""
    bodies = [envelope(ACCOUNT, new_token()) for _ in range(n)]
    c0 = os.times()
    seconds = asyncio.run(bare_client(url, bodies, BARE_CONNECTIONS))
    c1 = os.times()
    cpu = c1.user + c1.system - c0.user - c0.system
    print(json.dumps({"rate": n / seconds, "cpu": cpu / n}))


def run(ctx: Context) -> list[Row]:
    n, reps = ctx.sizes.webhooks, ctx.sizes.reps
    rates: dict[str, list[float]] = {"batchd": [], "bare": []}
    cpu_per: list[float] = []
    workdir = ctx.scratch(NAME)
    procs: list[subprocess.Popen[bytes]] = []
    with redis_server(ctx, NAME + "-redis") as server:
        port = free_port()
        procs.append(subprocess.Popen([sys.executable, "-m", "bench.webhooks_speed",
                                       "--receiver", str(port)]))  # fmt: skip
        wait_port(port, procs[-1], "receiver")
        url = f"http://127.0.0.1:{port}/hook"
        env = daemon_env(server.url, "http://127.0.0.1:9", {
            "BATCHD_WEBHOOKS__SECRET": SECRET,
            "BATCHD_WEBHOOKS__ALLOW_NETWORKS": '["127.0.0.1/32"]',
        })  # fmt: skip
        daemon = DaemonProcess(Path(workdir) / "daemon", env)
        store = store_at(server.url)
        r = store.client
        keys = store.keys
        due = keys.deliveries_due(ACCOUNT)
        try:
            daemon.start()
            assert daemon.proc is not None
            wait_until(lambda: store.read(counter_store.alive(keys, store.now_ms())), 30,
                       "batchd run to start", 0.1)  # fmt: skip

            def ours() -> None:
                # Due in an hour while they are written, then all due at once (score 0).
                later = store.now_ms() + 3_600_000
                tokens = [new_token() for _ in range(n)]
                read_all(store, [wh.enqueue(keys, ACCOUNT, t, url, envelope(ACCOUNT, t), later)
                                 for t in tokens])  # fmt: skip
                before = received(port)
                pids = tree(daemon.proc.pid)  # type: ignore[union-attr]
                cpu0 = sum(cpu_seconds(p) for p in pids)
                t0 = time.perf_counter()
                r.zunionstore(due, {due: 0})
                wait_until(lambda: received(port) - before >= n, 600, "every delivery", 0.01)
                seconds = time.perf_counter() - t0
                cpu_per.append((sum(cpu_seconds(p) for p in pids) - cpu0) / n * 1e6)
                rates["batchd"].append(n / seconds)
                wait_until(lambda: outbox(store) == 0, 60, "the outbox to settle", 0.05)

            def bare() -> None:
                out = subprocess.run(
                    [sys.executable, "-c", "import sys; from bench.webhooks import run_bare; "
                     "run_bare(sys.argv[1], int(sys.argv[2]))", url, str(n)],
                    capture_output=True, text=True, check=True,
                )  # fmt: skip
                rates["bare"].append(json.loads(out.stdout)["rate"])

            for rep in range(reps):
                ctx.say(f"webhooks: repetition {rep + 1}/{reps}")
                for step in (ours, bare) if rep % 2 == 0 else (bare, ours):
                    step()
        finally:
            store.close()
            daemon.stop()
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    ours_rate, bare_rate = median(rates["batchd"]), median(rates["bare"])
    return [
        Row(NAME, f"{n:,} signed deliveries from one `batchd run`", ours_rate, "/s", bare_rate,
            f"bare aiohttp client, {BARE_CONNECTIONS} connections", ours_rate / bare_rate,
            ">= 2,000/s", ours_rate >= 2000,
            f"batchd run CPU {median(cpu_per):.0f} us per delivery", rates["batchd"],
            rates["bare"]),
    ]  # fmt: skip
