"""Redis Cluster beside one Redis (issue 15): submit and fan-out on a 3-master cluster and on a
standalone server, in one run, the same work on each, taking turns.

The cluster is the test suite's (`tests.support.cluster`): three masters formed by hand, AOF with
`appendfsync always` on each like the standalone server, no replicas (the standalone server has
none either). An account's keys share one hash slot, so one account's work lands on one master:
the cluster's cost here is its client's routing, not a share of the load. rq's queues, which rq
cannot keep on a cluster, live on the standalone server (`redis.rq_url`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import redis

from batchd import Client, Ticket
from batchd.runtime import Runtime
from bench.common import (
    RQ_URLS,
    Context,
    Row,
    emulator,
    flush,
    median,
    params,
    redis_server,
    settings,
    wait_until,
)
from bench.fanout import fan_out, ready_batch, replies_waiting
from tests.support.cluster import Node, RedisCluster

NAME = "cluster"


def flush_cluster(cluster: RedisCluster) -> None:
    """Empty every master and let it compact its AOF (as `flush` does for one server)."""
    for node in cluster.masters():
        node.call("FLUSHALL")
        try:
            node.call("BGREWRITEAOF")
        except redis.ResponseError:
            pass  # a rewrite already running (Redis's own): waited for below
    for node in cluster.masters():
        wait_until(lambda: not rewriting(node), 60, "the AOF rewrite", 0.05)  # noqa: B023


def rewriting(node: Node) -> bool:
    info = node.admin().info("persistence")
    return bool(info.get("aof_rewrite_in_progress") or info.get("aof_rewrite_scheduled"))


def submit_rate(url: str, items: list[dict[str, Any]], single: int) -> tuple[float, float]:
    """(submit_many requests/s over every item, single submits/s over the first `single`)."""
    client = Client(settings=settings(url))
    try:
        client.submit(items[0]["params"])  # connect and load the script before timing
        t0 = time.perf_counter()
        out = client.submit_many(items)
        many = len(items) / (time.perf_counter() - t0)
        assert all(isinstance(o, Ticket) for o in out), "a benchmark submit failed"
        t0 = time.perf_counter()
        for item in items[:single]:
            client.submit(item["params"])
        one = single / (time.perf_counter() - t0)
        return many, one
    finally:
        client.close()


def fanout_rate(url: str, emu_url: str, n: int) -> float:
    """A fresh batch of n requests made ready (untimed), then its fan-out, results/s."""
    rt = Runtime(settings(url, emu_url))
    try:
        asm = ready_batch(rt, n)
        t0 = time.perf_counter()
        fan_out(rt, asm)
        rate = n / (time.perf_counter() - t0)
        assert replies_waiting(rt) == n
        return rate
    finally:
        rt.close()


def run(ctx: Context) -> list[Row]:
    n, single, batch, reps = (
        ctx.sizes.submit,
        ctx.sizes.submit_single,
        ctx.sizes.batch,
        ctx.sizes.reps,
    )
    items = [{"params": params(i)} for i in range(n)]
    rates: dict[str, list[float]] = {
        k: [] for k in ("many", "many_c", "one", "one_c", "fan", "fan_c")
    }
    cluster = RedisCluster(ctx.scratch(NAME + "-nodes"), masters=3, replicas=0)
    with (
        redis_server(ctx, NAME) as server,
        emulator(ctx, NAME + "-emulator", "--processing-time", "0") as emu,
    ):
        cluster.start()
        RQ_URLS[cluster.url] = server.url
        ctx.say(f"{NAME}: 3 masters ready in {cluster.ready_seconds or 0:.1f} s")
        standalone = Client(settings=settings(server.url))
        try:

            def on_standalone() -> None:
                flush(standalone.redis)
                many, one = submit_rate(server.url, items, single)
                rates["many"].append(many)
                rates["one"].append(one)
                flush(standalone.redis)
                emu.reset()
                rates["fan"].append(fanout_rate(server.url, emu.url, batch))

            def on_cluster() -> None:
                flush_cluster(cluster)
                many, one = submit_rate(cluster.url, items, single)
                rates["many_c"].append(many)
                rates["one_c"].append(one)
                flush_cluster(cluster)
                flush(standalone.redis)  # rq's queues
                emu.reset()
                rates["fan_c"].append(fanout_rate(cluster.url, emu.url, batch))

            for rep in range(reps):
                ctx.say(f"{NAME}: repetition {rep + 1}/{reps}")
                order: list[Callable[[], None]] = [on_standalone, on_cluster]
                for step in order if rep % 2 == 0 else order[::-1]:
                    step()
        finally:
            standalone.close()
            cluster.kill()
    note = "one account: its keys share a hash slot, so one master serves it; no replicas"
    rows: list[Row] = []
    for key, what, unit in (
        ("many", f"submit_many, {n:,} x 2,500 B", "req/s"),
        ("one", f"submit, {single:,} single round trips", "req/s"),
        ("fan", f"fan-out of a {batch:,}-request batch to a reply queue", "results/s"),
    ):
        on_c, alone = median(rates[key + "_c"]), median(rates[key])
        rows.append(
            Row(NAME, f"{what}, on a 3-master cluster", on_c, unit, alone, "standalone Redis",
                on_c / alone, "report", None, note, rates[key + "_c"], rates[key])
        )  # fmt: skip
    return rows
