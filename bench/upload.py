"""Batch build and upload: one big batch streamed from Redis to the emulator by `body_chunks`.

A child process (the builder) times the stream against merely reading the same params from
Redis, and reports its peak resident memory above its idle size while streaming.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx

from batchd import Client, Ticket, aggregate
from batchd.defaults import ENTRY_CHUNK
from batchd.runtime import Runtime, lease
from batchd.stages.submit import body_chunks
from batchd.store import AssemblyRecord, new_token
from batchd.store import assemblies as asm_store
from bench.common import (
    ACCOUNT,
    Context,
    Row,
    emulator,
    median,
    params,
    redis_server,
    rss_bytes,
    settings,
)

NAME = "upload"
MB = 1024 * 1024


def submit_all(redis_url: str, n: int, size: int = 2500, reply_to: str | None = None) -> None:
    """Submit `n` requests of `size`-byte params (untimed set-up)."""
    client = Client(settings=settings(redis_url))
    try:
        for start in range(0, n, 10_000):
            items = [
                {"params": params(i, size), "reply_to": reply_to}
                for i in range(start, min(n, start + 10_000))
            ]
            out = client.submit_many(items)
            assert all(isinstance(o, Ticket) for o in out), "a benchmark submit failed"
    finally:
        client.close()


def claim_all(redis_url: str, n: int) -> tuple[str, int]:
    """Claim the first `n` pending requests of lane 0 into one assembly, as the aggregator
    does; returns (assembly, body length)."""
    rt = Runtime(settings(redis_url, batch={"max_requests": n}))
    try:
        asm = new_token()
        count, clen = aggregate.claim(rt, ACCOUNT, "0", asm)
        assert count == n, f"claimed {count} of {n}"
        return asm, clen
    finally:
        rt.close()


def prepare(
    redis_url: str, n: int, size: int = 2500, reply_to: str | None = None
) -> tuple[str, int]:
    """Submit `n` requests and claim them into one assembly; returns (assembly, body length)."""
    submit_all(redis_url, n, size, reply_to)
    return claim_all(redis_url, n)


def peak_rss() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def reset_peak() -> None:
    """Make VmHWM start again from the current RSS (Linux clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def assembly(rt: Runtime, asm: str) -> AssemblyRecord:
    found = rt.store.read(asm_store.read(rt.keys, ACCOUNT, asm))
    assert found is not None, f"no assembly {asm}"
    return found


def read_params(rt: Runtime, asm: str) -> int:
    """The baseline: read the assembly's entries and their params from Redis, nothing else."""
    total = start = 0
    while True:
        entries = rt.store.read(asm_store.entries(rt.keys, ACCOUNT, asm, start, ENTRY_CHUNK))
        if not entries:
            return total
        start += len(entries)
        tokens = [e.split(b" ", 1)[0].decode() for e in entries]
        found = rt.store.read(asm_store.params_of(rt.keys, ACCOUNT, tokens))
        total += sum(len(p or b"") for p in found)


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """The builder process: idle RSS, then per repetition the read baseline and the upload."""
    s = settings(spec["redis_url"], spec["api_url"])
    rt = Runtime(s)
    api = rt.api(ACCOUNT)
    api.list(limit=1)  # open the connection before measuring idle
    asm, clen = spec["asm"], spec["clen"]
    reset_peak()
    idle = rss_bytes(os.getpid())
    out: dict[str, list[float]] = {"read": [], "stream": [], "create": [], "peak": []}
    for rep in range(spec["reps"]):

        def read() -> None:
            t0 = time.perf_counter()
            read_params(rt, asm)
            out["read"].append(time.perf_counter() - t0)

        def upload() -> None:
            marks: dict[str, float] = {}

            def timed(chunks: Iterator[bytes]) -> Iterator[bytes]:
                yield from chunks
                # httpx has written every earlier chunk to the socket before asking for more.
                marks["streamed"] = time.perf_counter()

            record = assembly(rt, asm)
            reset_peak()
            t0 = time.perf_counter()
            with lease(rt, asm_store.create_lock_key(rt.keys, ACCOUNT)) as held:
                assert held is not None
                batch = api.create(timed(body_chunks(rt, record, held)), clen)
            out["create"].append(time.perf_counter() - t0)
            out["stream"].append(marks["streamed"] - t0)
            out["peak"].append(peak_rss() - idle)
            assert batch.total == spec["n"], batch.total
            httpx.post(spec["api_url"] + "/_emulator/reset").raise_for_status()

        for step in (read, upload) if rep % 2 == 0 else (upload, read):
            step()
    rt.close()
    return {"idle": idle, **out}


def run(ctx: Context) -> list[Row]:
    n, reps = ctx.sizes.batch, ctx.sizes.reps
    with redis_server(ctx, NAME) as server, emulator(ctx, NAME + "-emulator") as emu:
        ctx.say(f"upload: submitting and claiming {n:,} requests")
        asm, clen = prepare(server.url, n)
        spec = {"redis_url": server.url, "api_url": emu.url, "asm": asm, "clen": clen,
                "reps": reps, "n": n}  # fmt: skip
        ctx.say(f"upload: {clen / 1e6:.0f} MB body, {reps} repetitions in a builder process")
        proc = subprocess.run(
            [sys.executable, "-m", "bench.upload", json.dumps(spec)],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"builder failed:\n{proc.stderr[-3000:]}")
        got = json.loads(proc.stdout.strip().splitlines()[-1])
    read, stream = median(got["read"]), median(got["stream"])
    create, peak = median(got["create"]), max(got["peak"]) / MB
    mb = clen / 1e6
    return [
        Row(NAME, f"stream a {n:,}-request, {mb:.0f} MB body to the emulator", stream, "s",
            read, "reading those params from Redis", stream / read, "<= 2.0",
            stream / read <= 2.0, f"{mb / stream:.0f} MB/s; create answered after "
            f"{create:.1f} s, emulator parse included", got["stream"], got["read"]),
        Row(NAME, "builder peak RSS above idle while streaming", peak, "MB",
            got["idle"] / MB, "idle RSS of the builder", None, "<= 150 MB", peak <= 150,
            "", [p / MB for p in got["peak"]]),
    ]  # fmt: skip


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
