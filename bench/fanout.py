"""Fan-out: a big batch's results delivered to reply queues, against the official SDK merely
iterating the same results (`client.messages.batches.results`) from the same emulator.

Every repetition starts from an empty Redis and a fresh batch (submitted, claimed, created and
polled to its end by batchd's own stages, untimed), so each fans out the same work from scratch.
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx
import redis

from batchd import stages
from batchd.runtime import Runtime
from batchd.store import AssemblyState
from batchd.store import assemblies as asm_store
from batchd.store import replies as reply_store
from bench.common import (
    ACCOUNT,
    API_KEY,
    Context,
    Row,
    emulator,
    flush,
    median,
    redis_server,
    settings,
    wait_until,
)
from bench.upload import prepare

NAME = "fanout"
QUEUE = "bench-replies"


def ready_batch(rt: Runtime, n: int, reply_to: str | None = QUEUE, size: int = 2500) -> str:
    """Submit n requests, claim them into one assembly and run batchd's submit and poll stages
    on it until its batch has ended: what is left is its fan-out. Returns the assembly id."""
    asm, _ = prepare(rt.settings.redis_url or "", n, size=size, reply_to=reply_to)
    create_and_end(rt, asm)
    record = rt.store.read(asm_store.read(rt.keys, ACCOUNT, asm))
    assert record is not None and record.count == n, record
    return asm


def create_and_end(rt: Runtime, asm: str) -> None:
    """Run the submit stage on a sealed assembly, then its poll stage until the batch ended
    (the emulator ends it at once): its fan-out is due."""
    outcome = stages.run(rt, ACCOUNT, asm)
    assert outcome == "submitted", f"submit stage: {outcome}"
    wait_until(lambda: stages.run(rt, ACCOUNT, asm) == "ended", 120, "the batch to end", 0.1)
    record = rt.store.read(asm_store.read(rt.keys, ACCOUNT, asm))
    assert record is not None and record.state is AssemblyState.ENDED, record


def batch_id(rt: Runtime, asm: str) -> str:
    record = rt.store.read(asm_store.read(rt.keys, ACCOUNT, asm))
    assert record is not None and record.batch_id
    return record.batch_id


def fan_out(rt: Runtime, asm: str) -> None:
    """The fan-out stage, as a stage worker runs it."""
    outcome = stages.run(rt, ACCOUNT, asm)
    assert outcome == "done", f"fan-out stage: {outcome}"


def compact_aof(r: Any) -> None:
    """Rewrite the AOF now and wait: its automatic rewrite (at twice the size) then falls at the
    same point of every repetition, as it would in a steady state."""
    try:
        r.bgrewriteaof()
    except redis.ResponseError:
        pass  # one already running (Redis's own, at twice the size): wait for it
    wait_until(
        lambda: (
            not r.info("persistence").get("aof_rewrite_in_progress")
            and not r.info("persistence").get("aof_rewrite_scheduled")
        ),
        120,
        "the AOF rewrite",
        0.05,
    )


def sdk_iterate(url: str, batch: str) -> int:
    client = anthropic.Anthropic(base_url=url, api_key=API_KEY, max_retries=0)
    try:
        return sum(1 for _ in client.messages.batches.results(batch))
    finally:
        client.close()


def raw_lines(url: str, batch: str) -> int:
    """The emulator's own pace: lines of the results stream, counted and not parsed."""
    headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    n = 0
    with (
        httpx.Client(timeout=600) as http,
        http.stream("GET", f"{url}/v1/messages/batches/{batch}/results", headers=headers) as r,
    ):
        for chunk in r.iter_raw():
            n += chunk.count(b"\n")
    return n


def replies_waiting(rt: Runtime) -> int:
    return rt.store.read(reply_store.depth(rt.keys, [QUEUE]))[QUEUE]


def repetition(
    rt: Runtime, emu_url: str, n: int, rep: int, rates: dict[str, list[float]], rewrites: list[int]
) -> None:
    """One repetition: a fresh batch, fanned out by batchd and iterated by the SDK."""
    flush(rt.redis)
    httpx.post(emu_url + "/_emulator/reset").raise_for_status()
    asm = ready_batch(rt, n)
    bid = batch_id(rt, asm)
    compact_aof(rt.redis)

    def sdk() -> None:
        t0 = time.perf_counter()
        got = sdk_iterate(emu_url, bid)
        rates["sdk"].append(got / (time.perf_counter() - t0))
        assert got == n, got

    def ours() -> None:
        before = rt.redis.info("persistence")["aof_rewrites"]
        t0 = time.perf_counter()
        fan_out(rt, asm)
        rates["batchd"].append(n / (time.perf_counter() - t0))
        info = rt.redis.info("persistence")
        rewrites.append(info["aof_rewrites"] - before + int(bool(info["aof_rewrite_in_progress"])))
        assert replies_waiting(rt) == n, f"{replies_waiting(rt)} replies of {n}"

    def raw() -> None:
        t0 = time.perf_counter()
        got = raw_lines(emu_url, bid)
        rates["raw"].append(got / (time.perf_counter() - t0))

    for step in (sdk, ours, raw) if rep % 2 == 0 else (ours, sdk, raw):
        step()


def run(ctx: Context) -> list[Row]:
    n, reps = ctx.sizes.batch, ctx.sizes.reps
    rates: dict[str, list[float]] = {"sdk": [], "batchd": [], "raw": []}
    rewrites: list[int] = []  # AOF rewrites Redis started while a fan-out ran
    with (
        redis_server(ctx, NAME) as server,
        emulator(ctx, NAME + "-emulator", "--processing-time", "0") as emu,
    ):
        rt = Runtime(settings(server.url, emu.url))
        try:
            for rep in range(reps):
                ctx.say(f"fanout: repetition {rep + 1}/{reps}: a batch of {n:,} requests")
                repetition(rt, emu.url, n, rep, rates, rewrites)
        finally:
            rt.close()
    ours_rate, sdk_rate, raw_rate = (median(rates[k]) for k in ("batchd", "sdk", "raw"))
    rows: list[Row] = [
        Row(NAME, f"results of a {n:,}-request batch to reply queues", ours_rate, "results/s",
            sdk_rate, "anthropic SDK iterating the results", ours_rate / sdk_rate, ">= 1.5",
            ours_rate / sdk_rate >= 1.5, f"the emulator streams {raw_rate:,.0f} lines/s "
            f"unparsed; AOF rewrites during the fan-outs: {rewrites}", rates["batchd"],
            rates["sdk"]),
        Row(NAME, "fan-out rate on this machine", ours_rate, "results/s", None, "", None,
            ">= 20,000/s", ours_rate >= 20_000),
    ]  # fmt: skip
    return rows
