"""Fan-out: a big batch's results delivered to reply queues, against the official SDK merely
iterating the same results (`client.messages.batches.results`) from the same emulator.

Between repetitions the same requests are put back in flight (bench-only bookkeeping, untimed),
so every repetition fans out the same batch from scratch.
"""

from __future__ import annotations

import time
from typing import Any

import anthropic
import httpx

from batchd import stages
from batchd.runtime import Runtime, install, lease
from bench.common import (
    ACCOUNT,
    API_KEY,
    Context,
    Row,
    emulator,
    median,
    redis_server,
    settings,
    wait_until,
)
from bench.upload import prepare

NAME = "fanout"
QUEUE = "bench-replies"


def create_batch(rt: Runtime, asm: str, clen: int, n: int) -> str:
    """Upload the assembly as a batch, record it and poll it to its end (untimed set-up)."""
    with lease(rt, rt.keys.create_lock(ACCOUNT)) as held:
        assert held is not None
        batch = rt.api(ACCOUNT).create(stages.body_chunks(rt, ACCOUNT, asm, held), clen)
    stages.record(rt, ACCOUNT, asm, batch)
    wait_until(lambda: rt.api(ACCOUNT).retrieve(batch.id).ended, 120, "the batch to end", 0.2)
    assert stages.poll(rt, ACCOUNT, asm, rt.assembly(ACCOUNT, asm)) == "ended"
    assert batch.total == n
    return batch.id


def snapshot(rt: Runtime, entries: list[bytes]) -> dict[str, dict[bytes, bytes]]:
    """Every request record of the assembly as it is before its fan-out (batched)."""
    pipe = rt.redis.pipeline(transaction=False)
    keys = [rt.keys.request(ACCOUNT, e.split(b" ", 1)[0].decode()) for e in entries]
    for rk in keys:
        pipe.hgetall(rk)
    return dict(zip(keys, pipe.execute(), strict=True))


def rearm(
    rt: Runtime,
    asm: str,
    entries: list[bytes],
    state: dict[str, str],
    params: dict[bytes, bytes],
    records: dict[str, dict[bytes, bytes]],
) -> None:
    """Put every request of the assembly back in flight, as before its fan-out, and let Redis
    compact its AOF so each repetition starts from the same state."""
    r, keys = rt.redis, rt.keys
    pipe = r.pipeline(transaction=False)
    for i in range(0, len(entries), 1000):
        tokens = [e.split(b" ", 1)[0] for e in entries[i : i + 1000]]
        pipe.hset(keys.params(ACCOUNT), mapping={t: params[t] for t in tokens})
    pipe.delete(keys.reply_queue(QUEUE), keys.counters(), keys.assembly_entries(ACCOUNT, asm))
    for i in range(0, len(entries), 1000):
        pipe.rpush(keys.assembly_entries(ACCOUNT, asm), *entries[i : i + 1000])
    pipe.hset(keys.assembly(ACCOUNT, asm), mapping=state)
    pipe.persist(keys.assembly(ACCOUNT, asm))
    pipe.execute()
    for i, (rk, record) in enumerate(records.items()):
        token = rk.rsplit(":", 1)[1]
        pipe.delete(rk, keys.done(ACCOUNT, token))
        pipe.hset(rk, mapping=record)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    compact_aof(r)


def compact_aof(r: Any) -> None:
    """Rewrite the AOF now and wait: its automatic rewrite (at twice the size) then falls at the
    same point of every repetition, as it would in a steady state."""
    r.bgrewriteaof()
    wait_until(
        lambda: (
            not r.info("persistence").get("aof_rewrite_in_progress")
            and not r.info("persistence").get("aof_rewrite_scheduled")
        ),
        120,
        "the AOF rewrite",
        0.05,
    )


def sdk_iterate(url: str, batch_id: str) -> int:
    client = anthropic.Anthropic(base_url=url, api_key=API_KEY, max_retries=0)
    try:
        return sum(1 for _ in client.messages.batches.results(batch_id))
    finally:
        client.close()


def raw_lines(url: str, batch_id: str) -> int:
    """The emulator's own pace: lines of the results stream, counted and not parsed."""
    headers = {"x-api-key": API_KEY, "anthropic-version": "2023-06-01"}
    n = 0
    with (
        httpx.Client(timeout=600) as http,
        http.stream("GET", f"{url}/v1/messages/batches/{batch_id}/results", headers=headers) as r,
    ):
        for chunk in r.iter_raw():
            n += chunk.count(b"\n")
    return n


def run(ctx: Context) -> list[Row]:
    n, reps = ctx.sizes.batch, ctx.sizes.reps
    rates: dict[str, list[float]] = {"sdk": [], "batchd": [], "raw": []}
    rewrites: list[int] = []  # AOF rewrites Redis started while a fan-out ran
    with (
        redis_server(ctx, NAME) as server,
        emulator(ctx, NAME + "-emulator", "--processing-time", "0") as emu,
    ):
        ctx.say(f"fanout: preparing a batch of {n:,} requests")
        asm, clen = prepare(server.url, n, reply_to=QUEUE)
        rt = install(Runtime(settings(server.url, emu.url)))
        try:
            batch_id = create_batch(rt, asm, clen, n)
            entries = rt.redis.lrange(rt.keys.assembly_entries(ACCOUNT, asm), 0, -1)
            state = rt.assembly(ACCOUNT, asm)
            stored = rt.redis.hgetall(rt.keys.params(ACCOUNT))
            records = snapshot(rt, entries)
            compact_aof(rt.redis)

            def sdk() -> None:
                t0 = time.perf_counter()
                got = sdk_iterate(emu.url, batch_id)
                rates["sdk"].append(got / (time.perf_counter() - t0))
                assert got == n, got

            def ours() -> None:
                before = rt.redis.info("persistence")["aof_rewrites"]
                t0 = time.perf_counter()
                assert stages.run_stage("fanout", ACCOUNT, asm) == "done"
                rates["batchd"].append(n / (time.perf_counter() - t0))
                info = rt.redis.info("persistence")
                rewrites.append(
                    info["aof_rewrites"] - before + int(bool(info["aof_rewrite_in_progress"]))
                )
                replies = rt.redis.llen(rt.keys.reply_queue(QUEUE))
                assert replies == n, f"{replies} replies of {n}"
                rearm(rt, asm, entries, state, stored, records)

            def raw() -> None:
                t0 = time.perf_counter()
                got = raw_lines(emu.url, batch_id)
                rates["raw"].append(got / (time.perf_counter() - t0))

            for rep in range(reps):
                ctx.say(f"fanout: repetition {rep + 1}/{reps}")
                for step in (sdk, ours, raw) if rep % 2 == 0 else (ours, sdk, raw):
                    step()
        finally:
            rt.close()
    ours_rate, sdk_rate, raw_rate = (median(rates[k]) for k in ("batchd", "sdk", "raw"))
    rows: list[Any] = [
        Row(NAME, f"results of a {n:,}-request batch to reply queues", ours_rate, "results/s",
            sdk_rate, "anthropic SDK iterating the results", ours_rate / sdk_rate, ">= 1.5",
            ours_rate / sdk_rate >= 1.5, f"the emulator streams {raw_rate:,.0f} lines/s "
            f"unparsed; AOF rewrites during the fan-outs: {rewrites}", rates["batchd"],
            rates["sdk"]),
        Row(NAME, "fan-out rate on this machine", ours_rate, "results/s", None, "", None,
            ">= 20,000/s", ours_rate >= 20_000),
    ]  # fmt: skip
    return rows
