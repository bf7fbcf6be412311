"""Submit: `submit_many` and `submit` against raw redis-py RPUSH of the same bytes, and rq.

The raw baselines push each request's compact JSON to a list, pipelined in the same chunks
(`submit_many`) or one round trip each (`submit`); rq enqueues the same params as jobs.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Callable
from typing import Any

import redis
from rq import Queue

from batchd import Client, Ticket
from bench.common import Context, Row, compact, flush, median, params, redis_server, settings
from tests.support.redis import redis_server_binary

#: Items per pipeline (and per submit_many chunk): the client's default chunk.
CHUNK = 1000
#: Items each side submits before the other takes its turn.
SLICE = 5000
SINGLE_SLICE = 250
NAME = "submit"


def job(params: dict[str, Any]) -> None:
    """What the rq jobs would run; never called here."""


def raw_pipelined(r: redis.Redis, payloads: list[bytes]) -> None:
    pipe = r.pipeline(transaction=False)
    for i, payload in enumerate(payloads, 1):
        pipe.rpush("raw:q", payload)
        if i % CHUNK == 0:
            pipe.execute()
    pipe.execute()


def raw_single(r: redis.Redis, payloads: list[bytes]) -> None:
    for payload in payloads:
        r.rpush("raw:q", payload)


def batchd_many(client: Client, items: list[dict[str, Any]]) -> None:
    out = client.submit_many(items, chunk=CHUNK)
    assert all(isinstance(o, Ticket) for o in out), "a benchmark submit failed"


def batchd_single(client: Client, items: list[dict[str, Any]]) -> None:
    for item in items:
        client.submit(item["params"])


def rq_many(r: redis.Redis, items: list[dict[str, Any]]) -> None:
    q = Queue("bench", connection=r)
    for start in range(0, len(items), CHUNK):
        datas = [
            Queue.prepare_data(job, args=(item["params"],)) for item in items[start : start + CHUNK]
        ]
        q.enqueue_many(datas)


Side = Callable[[int, int], None]


def interleaved(sides: dict[str, tuple[int, Side]], step: int, rep: int) -> dict[str, float]:
    """Run every side over the same slices of `step` items, taking turns slice by slice (the
    first to go alternating), so a busy spell of the machine falls on all of them; rates/s."""
    spent = dict.fromkeys(sides, 0.0)
    longest = max(count for count, _ in sides.values())
    names = list(sides)
    for k, start in enumerate(range(0, longest, step)):
        order = names if (k + rep) % 2 == 0 else names[::-1]
        for name in order:
            count, fn = sides[name]
            if start < count:
                t0 = time.perf_counter()
                fn(start, min(start + step, count))
                spent[name] += time.perf_counter() - t0
    return {name: sides[name][0] / spent[name] for name in names}


def redis_benchmark(port: int, n: int, size: int) -> float:
    """Redis's own pipelined RPUSH rate for `size`-byte values (redis-benchmark, -P CHUNK)."""
    tool = redis_server_binary().replace("redis-server", "redis-benchmark")
    cmd = [tool, "-p", str(port), "-t", "rpush", "-n", str(n), "-P", str(CHUNK)]
    cmd += ["-d", str(size), "-c", "1", "-q"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired):
        return 0.0
    found = re.findall(r"RPUSH: ([\d.]+) requests per second", out)
    return float(found[-1]) if found else 0.0


def run(ctx: Context) -> list[Row]:
    n, single, reps = ctx.sizes.submit, ctx.sizes.submit_single, ctx.sizes.reps
    items = [{"params": params(i)} for i in range(n)]
    payloads = [compact(item["params"]) for item in items]
    size = len(payloads[0])
    rates: dict[str, list[float]] = {k: [] for k in ("raw", "many", "rq", "raw1", "one")}
    with redis_server(ctx, NAME) as server:
        r = redis.Redis.from_url(server.url)
        client = Client(settings=settings(server.url))
        try:
            for rep in range(reps):
                ctx.say(f"submit: repetition {rep + 1}/{reps}")
                flush(r)
                found = interleaved(
                    {
                        "raw": (n, lambda a, b: raw_pipelined(r, payloads[a:b])),
                        "many": (n, lambda a, b: batchd_many(client, items[a:b])),
                        "rq": (ctx.sizes.rq, lambda a, b: rq_many(r, items[a:b])),
                    },
                    SLICE,
                    rep,
                )
                flush(r)
                found |= interleaved(
                    {
                        "raw1": (single, lambda a, b: raw_single(r, payloads[a:b])),
                        "one": (single, lambda a, b: batchd_single(client, items[a:b])),
                    },
                    SINGLE_SLICE,
                    rep,
                )
                for key, rate in found.items():
                    rates[key].append(rate)
            flush(r)
            limit = redis_benchmark(server.port, max(n, 100_000), size)
        finally:
            client.close()
            r.close()
    redis_alone = (
        f"Redis alone (redis-benchmark -P {CHUNK}): {limit:,.0f} RPUSH/s"
        if limit
        else "redis-benchmark not found"
    )
    raw, many = median(rates["raw"]), median(rates["many"])
    raw1, one = median(rates["raw1"]), median(rates["one"])
    rq_rate = median(rates["rq"])
    return [
        Row(NAME, f"submit_many, {n:,} x {size:,} B", many, "req/s", raw,
            "redis-py pipelined RPUSH", many / raw, ">= 0.5", many / raw >= 0.5,
            redis_alone, rates["many"], rates["raw"]),
        Row(NAME, f"submit, {single:,} single round trips", one, "req/s", raw1,
            "redis-py RPUSH, one round trip each", one / raw1, ">= 0.6", one / raw1 >= 0.6,
            "", rates["one"], rates["raw1"]),
        Row(NAME, f"submit_many vs rq enqueue_many, {ctx.sizes.rq:,} jobs", many, "req/s",
            rq_rate, "rq Queue.enqueue_many", many / rq_rate, "report", None, "",
            rates["many"], rates["rq"]),
    ]  # fmt: skip
