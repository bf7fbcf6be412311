"""Results in hands (issue 22, point 2): from the end of a batch to the first and the last of
its results in a consumer's hands, on each channel: a reply queue read with prefetch 1 and with
prefetch 100, `Client.wait` from 1,000 threads, and webhooks to a local receiver.

One `batchd run` with its default settings (listing every 3 s) and one emulator (2 s of
processing) serve every channel in turn; each channel gets its own batch of Sizes.delivery
requests, cut at once (`Client.flush`). The end of the batch is the emulator's `ended_at`; the
consumers note when each result reached them. The baseline is a consumer that knows the batch
ended and downloads its results itself: the official SDK iterating the same batch's results,
from the start of its download to its first and its last line.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

import anthropic

from batchd import Client, Ticket
from bench.common import (
    API_KEY,
    Context,
    Row,
    daemon_env,
    emulator,
    median,
    params,
    redis_server,
    settings,
    store_at,
    wait_until,
)
from bench.stack import Consumer, assemblies, emulated_batches, epoch, ms, start_daemon
from bench.webhooks_speed import SECRET, free_port, wait_port

NAME = "delivery"
PROCESSING = 2.0
WAITERS = 1000
#: Channels, in the order they run: (name, what the rows call it).
CHANNELS = (
    ("prefetch1", "reply queue, prefetch 1"),
    ("prefetch100", "reply queue, prefetch 100"),
    ("wait", f"Client.wait, {WAITERS:,} threads"),
    ("webhook", "webhooks"),
)


@dataclass
class Seen:
    """One channel's run: seconds from the batch's end to the first and the last result, and
    (the baseline) from the SDK's download start to its first and last line."""

    first: float
    last: float
    noticed: float  # end to batchd noticing it
    fanout: float  # noticed to the fan-out done
    sdk_first: float
    sdk_last: float


def receiver(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/count", timeout=5) as resp:
        found: dict[str, Any] = json.load(resp)
        return found


def sdk_download(url: str, batch_id: str) -> tuple[float, float]:
    """(first line, last line) seconds after the SDK's results download starts."""
    client = anthropic.Anthropic(base_url=url, api_key=API_KEY, max_retries=0)
    try:
        client.models.list()  # connected before the clock starts
        t0 = time.perf_counter()
        first = 0.0
        for _ in client.messages.batches.results(batch_id):
            first = first or time.perf_counter() - t0
        return first, time.perf_counter() - t0
    finally:
        client.close()


def one_channel(
    channel: str, client: Client, redis_url: str, emu_url: str, hook_port: int, n: int
) -> Seen:
    items: list[dict[str, Any]] = [{"params": params(i, 1000)} for i in range(n)]
    consumer: Consumer | None = None
    if channel.startswith("prefetch"):
        queue = f"bench-{channel}"
        consumer = Consumer(redis_url, "queue", queue, n, int(channel.removeprefix("prefetch")))
        for item in items:
            item["reply_to"] = queue
    elif channel == "webhook":
        urllib.request.urlopen(
            urllib.request.Request(f"http://127.0.0.1:{hook_port}/reset", method="POST"), timeout=5
        ).close()
        for item in items:
            item["callback_url"] = f"http://127.0.0.1:{hook_port}/hook"
    try:
        out = client.submit_many(items)
        tickets = [o for o in out if isinstance(o, Ticket)]
        assert len(tickets) == n, "a benchmark submit failed"
        if channel == "wait":
            consumer = Consumer(redis_url, "wait", "", n, WAITERS, [t.id for t in tickets])
        client.flush()
        if consumer is not None:
            got = consumer.result()
            assert got.got == n, got
            first, last = got.first, got.last
        else:
            wait_until(lambda: receiver(hook_port)["received"] >= n, 900, "every webhook", 0.05)
            found = receiver(hook_port)
            first, last = found["first"], found["last"]
    finally:
        if consumer is not None:
            consumer.close()
    store = store_at(redis_url)
    try:
        a = assemblies(store)[-1]
    finally:
        store.close()
    assert a.count == n and a.batch_id is not None, a
    end = epoch(emulated_batches(emu_url)[a.batch_id].ended_at)
    sdk_first, sdk_last = sdk_download(emu_url, a.batch_id)
    return Seen(first - end, last - end, ms(a.ended_ms) - end, ms(a.closed_ms) - ms(a.ended_ms),
                sdk_first, sdk_last)  # fmt: skip


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.delivery
    seen: dict[str, list[Seen]] = {c: [] for c, _ in CHANNELS}
    with (
        redis_server(ctx, NAME) as server,
        emulator(ctx, NAME + "-emulator", "--processing-time", str(PROCESSING)) as emu,
    ):
        hook_port = free_port()
        hooks = subprocess.Popen([sys.executable, "-m", "bench.webhooks_speed", "--receiver",
                                  str(hook_port)])  # fmt: skip
        store = store_at(server.url)
        client = Client(settings=settings(server.url, emu.url))
        env = daemon_env(server.url, emu.url, {
            "BATCHD_BATCH__MAX_REQUESTS": str(n),
            "BATCHD_WEBHOOKS__SECRET": SECRET,
            "BATCHD_WEBHOOKS__ALLOW_NETWORKS": '["127.0.0.1/32"]',
        }, fast=False)  # fmt: skip
        try:
            wait_port(hook_port, hooks, "the webhook receiver")
            daemon = start_daemon(ctx.scratch(NAME + "-daemon"), env, store)
            try:
                for rep in range(ctx.sizes.slow_reps):
                    for channel, what in CHANNELS:
                        ctx.say(f"{NAME}: {n:,} results by {what} (repetition {rep + 1})")
                        seen[channel].append(
                            one_channel(channel, client, server.url, emu.url, hook_port, n)
                        )
            finally:
                daemon.stop()
        finally:
            client.close()
            store.close()
            hooks.terminate()
            hooks.wait(10)
    rows: list[Row] = []
    for channel, what in CHANNELS:
        runs = seen[channel]
        noticed = median([s.noticed for s in runs])
        fanout = median([s.fanout for s in runs])
        for end in ("first", "last"):
            ours = [getattr(s, end) for s in runs]
            sdk = [getattr(s, "sdk_" + end) for s in runs]
            # The first line of a download comes at once: a ratio to it says nothing.
            ratio = median(ours) / median(sdk) if end == "last" else None
            rows.append(
                Row(NAME, f"end of a {n:,}-request batch to the {end} result in hands: {what}",
                    median(ours), "s", median(sdk), f"SDK download, its {end} line", ratio,
                    "report", None,
                    f"noticed {noticed:.2f} s after the end; fan-out took {fanout:.2f} s"
                    if end == "first" else "", ours, sdk)
            )  # fmt: skip
    return rows
