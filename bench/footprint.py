"""Footprint: idle RSS of `batchd run`; Redis memory per pending request against the request's
own size; API calls over the life of a batch that takes 10 minutes (emulated clock, polls scaled
the same, so the count is what a real 10-minute batch costs).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import redis

from batchd import Client, Ticket
from batchd.settings import PollSettings, RunSettings
from bench.common import (
    Context,
    Row,
    daemon_env,
    emulator,
    flush,
    params,
    pss_bytes,
    redis_server,
    rss_bytes,
    settings,
    tree,
    wait_until,
)
from tests.support.daemon import DaemonProcess

NAME = "footprint"
MB = 1024 * 1024
#: Params sizes whose Redis footprint is measured, bytes of compact JSON.
SIZES = (300, 2500, 10_000)
#: Emulated seconds per real second for the 10-minute batch (the daemon's loop period is
#: scaled too, so listing every `poll.list_interval` keeps its emulated pace).
CLOCK_SCALE = 20.0
BATCH_SECONDS = 600.0
_CALL = re.compile(r'\\"(GET|POST|DELETE) /v1/messages/batches([^ ?]*)')


def idle_memory(ctx: Context, redis_url: str) -> tuple[int, int, int]:
    """An idle `batchd run` over a few seconds: RSS of its main process, and the PSS (shared
    pages counted once) of its whole process tree; also how many processes."""
    env = daemon_env(redis_url, "http://127.0.0.1:9")
    daemon = DaemonProcess(ctx.scratch("idle-daemon"), env)
    daemon.start()
    try:
        assert daemon.proc is not None
        root = daemon.proc.pid
        wait_until(lambda: len(tree(root)) >= 3, 60, "the stage workers", 0.1)
        time.sleep(3)  # imports and connections settle
        main = total = count = 0
        for _ in range(25):
            pids = tree(root)
            main = max(main, rss_bytes(root))
            total = max(total, sum(pss_bytes(p) for p in pids))
            count = max(count, len(pids))
            time.sleep(0.2)
        return main, total, count
    finally:
        daemon.stop()


def memory_per_request(r: redis.Redis, url: str, size: int, n: int) -> float:
    """Bytes of Redis memory (INFO used_memory) per pending request of `size`-byte params."""
    flush(r)
    client = Client(settings=settings(url))
    try:
        client.submit(params(0, size))  # lane keys, counters and scripts exist before measuring
        time.sleep(0.1)
        before = int(r.info("memory")["used_memory"])
        for start in range(1, n + 1, 10_000):
            out = client.submit_many(
                [{"params": params(i, size)} for i in range(start, min(n + 1, start + 10_000))]
            )
            assert all(isinstance(o, Ticket) for o in out)
        after = int(r.info("memory")["used_memory"])
    finally:
        client.close()
    return (after - before) / n


def api_calls(ctx: Context) -> dict[str, int]:
    """API calls, by kind, over the life of one batch taking BATCH_SECONDS of emulated time."""
    p = PollSettings()
    scale = 1 / CLOCK_SCALE
    with (
        redis_server(ctx, "calls-redis") as server,
        emulator(ctx, "calls-emulator", "--clock-scale", str(CLOCK_SCALE), "--processing-time",
                 str(BATCH_SECONDS), "--access-log") as emu,
    ):  # fmt: skip
        env = daemon_env(server.url, emu.url, {
            "BATCHD_BATCH__MAX_WAIT": "3600",
            "BATCHD_POLL__MIN_INTERVAL": str(p.min_interval * scale),
            "BATCHD_POLL__MAX_INTERVAL": str(p.max_interval * scale),
            "BATCHD_POLL__FACTOR": str(p.factor),
            "BATCHD_POLL__JITTER": str(p.jitter),
            "BATCHD_POLL__LIST_INTERVAL": str(p.list_interval * scale),
            "BATCHD_RUN__TICK": str(RunSettings().tick * scale),
        })  # fmt: skip
        daemon = DaemonProcess(ctx.scratch("calls-daemon"), env)
        client = Client(settings=settings(server.url, emu.url))
        daemon.start()
        try:
            ids = [t.id for t in client.submit_many([{"params": params(i)} for i in range(100)])
                   if isinstance(t, Ticket)]  # fmt: skip
            client.flush()
            for rid in ids:
                assert client.wait(rid, timeout=BATCH_SECONDS / CLOCK_SCALE * 3).status == (
                    "succeeded"
                )
        finally:
            client.close()
            daemon.stop()
        log = Path(emu.directory or ".") / "emulator.log"
        calls: dict[str, int] = {}
        for kind, rest in _CALL.findall(log.read_text()):
            name = {"POST": "create" if not rest else "cancel", "DELETE": "delete"}.get(kind)
            if name is None:
                name = "list" if not rest else ("results" if rest.endswith("results") else "poll")
            calls[name] = calls.get(name, 0) + 1
        return calls


def run(ctx: Context) -> list[Row]:
    rows: list[Row] = []
    n = ctx.sizes.memory
    with redis_server(ctx, NAME) as server:
        ctx.say("footprint: idle memory of batchd run")
        main, total, count = idle_memory(ctx, server.url)
        rows.append(Row(NAME, f"idle memory of `batchd run`, {count} processes (PSS)",
                        total / MB, "MB", note=f"main process RSS {main / MB:.0f} MB; "
                        "2 stage workers and their rq scheduler"))  # fmt: skip
        r = redis.Redis.from_url(server.url)
        try:
            for size in SIZES:
                ctx.say(f"footprint: Redis memory of {n:,} pending requests of {size:,} B")
                per = memory_per_request(r, server.url, size, n)
                allowed = 1.3 * size + 300
                rows.append(Row(NAME, f"Redis memory per pending request, {size:,} B params",
                                per, "B", size, "the params", per / size,
                                f"<= 1.3x + 300 B ({allowed:,.0f} B)", per <= allowed))  # fmt: skip
        finally:
            r.close()
    ctx.say("footprint: API calls of a 10-minute batch")
    calls = api_calls(ctx)
    rows.append(Row(NAME, "API calls over the life of a batch taking 10 minutes",
                    float(sum(calls.values())), "calls", note=", ".join(
                        f"{k} {v}" for k, v in sorted(calls.items())) + "; default poll "
                    f"settings, emulated clock x{CLOCK_SCALE:g}"))  # fmt: skip
    return rows
