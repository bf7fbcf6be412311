"""Noticing that a batch ended (issue 22, point 2): the delay from a batch's end to batchd
noticing it, over many batches ending at random instants, and the Batches API calls batchd
makes per batch and per minute with 1, 10 and 100 batches in flight.

The emulator gives each batch (one request each) a processing time drawn uniformly from
PROCESSING, so batches end at instants unrelated to batchd's listing and polling cadence; its
`ended_at` is the end, and the assembly's `ended` time in Redis is when batchd noticed it. batchd
runs with its default poll settings (listing every `poll.list_interval`, 3 s). API calls are
counted from the emulator's access log; calls per minute over the span in which every batch of
the level is in flight (created, its end not yet noticed). The baseline is the same level of 10
batches with listing off (`poll.list_interval = 0`: each batch polled on its own, batchd's
earlier way and its fallback now).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from batchd import Client, Ticket
from batchd.store import AssemblyState, Store
from batchd.store import assemblies as asm_store
from bench.common import (
    ACCOUNT,
    Context,
    Row,
    daemon_env,
    emulator,
    ended,
    median,
    params,
    percentile,
    redis_server,
    settings,
    store_at,
)
from bench.stack import CallLog, assemblies, emulated_batches, epoch, ms, start_daemon

NAME = "detection"
#: Processing time of each batch, seconds: uniform between these, both later by a fifth of a
#: second per batch of the level (creating 100 batches takes a while; all must be in flight).
PROCESSING = (20.0, 35.0)
#: Batches in flight at once of the level compared with listing off.
BASELINE_LEVEL = 10
#: Seconds between two looks at how many batches are in flight.
SAMPLE = 0.25
DETECT_P90_TARGET = 5.0
CALLS_TARGET = 30.0
POLLING = ("list", "retrieve")


@dataclass
class Level:
    """One run: `k` batches in flight, listing on or off."""

    k: int
    listing: bool
    delays: list[float] = field(default_factory=list)  # seconds, one per batch
    calls: dict[str, int] = field(default_factory=dict)  # over the whole run, by kind
    reached: int = 0  # most batches in flight at once
    per_minute: float = 0.0  # list + retrieve calls per minute while `reached` were in flight
    span: float = 0.0  # seconds of that span


def in_flight(store: Store) -> int:
    """Batches created and not yet noticed as ended."""
    asms = store.read(asm_store.live(store.keys, ACCOUNT))
    records = store.read(asm_store.read_many(store.keys, [(ACCOUNT, a) for a in asms]))
    return sum(1 for a in records if a.state is AssemblyState.SUBMITTED)


def one_level(ctx: Context, k: int, listing: bool, rep: int) -> Level:
    tag = f"{NAME}-{k}-{'list' if listing else 'poll'}-{rep}"
    low, high = (t + k / 5 for t in PROCESSING)
    with (
        redis_server(ctx, tag) as server,
        emulator(ctx, tag + "-emulator", "--processing-time", f"{low:g}:{high:g}",
                 "--access-log") as emu,
    ):  # fmt: skip
        store = store_at(server.url)
        extra = {"BATCHD_BATCH__MAX_REQUESTS": "1"}
        if not listing:
            extra["BATCHD_POLL__LIST_INTERVAL"] = "0"
        env = daemon_env(server.url, emu.url, extra, fast=False)
        client = Client(settings=settings(server.url, emu.url))
        daemon = start_daemon(ctx.scratch(tag + "-daemon"), env, store)
        log = CallLog(Path(emu.directory or ".") / "emulator.log")
        level = Level(k, listing)
        try:
            out = client.submit_many([{"params": params(i, 300)} for i in range(k)])
            assert all(isinstance(o, Ticket) for o in out)
            samples: list[tuple[float, int, int]] = []  # (time, in flight, polling calls)
            deadline = time.monotonic() + high + 300
            while ended(store) < k:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{ended(store)} of {k} batches ended")
                calls = log.read()
                samples.append(
                    (time.time(), in_flight(store), sum(calls.get(c, 0) for c in POLLING))
                )
                time.sleep(SAMPLE)
            level.calls = log.read()
            level.reached, level.per_minute, level.span = steady_rate(samples)
            api = emulated_batches(emu.url)
            for a in assemblies(store):
                level.delays.append(ms(a.ended_ms) - epoch(api[a.batch_id or ""].ended_at))
            assert len(level.delays) == k, f"{len(level.delays)} of {k} batches"
            return level
        finally:
            client.close()
            daemon.stop()
            store.close()


def steady_rate(samples: list[tuple[float, int, int]]) -> tuple[int, float, float]:
    """(most in flight at once, polling calls per minute while that many were, over how many
    seconds): the first run of samples at the most."""
    most = max(n for _, n, _ in samples)
    span = [s for s in samples if s[1] == most]
    first = samples.index(span[0])
    run = [span[0]]
    for s in samples[first + 1 :]:
        if s[1] != most:
            break
        run.append(s)
    seconds = run[-1][0] - run[0][0]
    rate = (run[-1][2] - run[0][2]) / seconds * 60 if seconds > 0 else float("nan")
    return most, rate, seconds


def run(ctx: Context) -> list[Row]:
    levels: list[Level] = []
    base: list[Level] = []
    for rep in range(ctx.sizes.slow_reps):
        for k in ctx.sizes.in_flight:
            ctx.say(f"{NAME}: {k} batches in flight (repetition {rep + 1})")
            levels.append(one_level(ctx, k, True, rep))
        ctx.say(f"{NAME}: {BASELINE_LEVEL} batches, listing off (repetition {rep + 1})")
        base.append(one_level(ctx, BASELINE_LEVEL, False, rep))
    delays = [d for lv in levels for d in lv.delays]
    polled = [d for lv in base for d in lv.delays]
    rows: list[Row] = []
    for q, label in ((50, "p50"), (90, "p90"), (100, "max")):
        ours, polls = percentile(delays, q), percentile(polled, q)
        target = f"<= {DETECT_P90_TARGET:g} s" if q == 90 else ""
        rows.append(
            Row(NAME, f"end of a batch to batchd noticing it, {label} over {len(delays)} batches",
                ours, "s", polls, f"each batch polled on its own (list off), {len(polled)} "
                "batches", ours / polls if polls else None, target,
                ours <= DETECT_P90_TARGET if q == 90 else None,
                "ends uniform over 15 s from 20 s (more with more batches) after creation; "
                "default poll settings" if q == 50 else "", delays, polled)
        )  # fmt: skip
    for k in ctx.sizes.in_flight:
        mine = [lv for lv in levels if lv.k == k]
        rate = median([lv.per_minute for lv in mine])
        kinds: dict[str, float] = {}
        for lv in mine:
            for kind, count in lv.calls.items():
                kinds[kind] = kinds.get(kind, 0.0) + count / k / len(mine)
        per_batch = sum(kinds.values())
        theirs = [lv for lv in base if lv.k == k]
        base_rate = median([lv.per_minute for lv in theirs]) if theirs else None
        reached = min(lv.reached for lv in mine)
        note = (f"over {median([lv.span for lv in mine]):.0f} s with {reached} in flight"
                + ("" if reached == k else f" (of {k} asked: creating them took longer than the "
                   "first to end)"))  # fmt: skip
        rows.append(
            Row(NAME, f"Batches API polling calls per minute, {k} batch(es) in flight", rate,
                "calls/min", base_rate, "list off" if theirs else "",
                rate / base_rate if base_rate else None, f"<= {CALLS_TARGET:g}",
                rate <= CALLS_TARGET, note, [lv.per_minute for lv in mine],
                [lv.per_minute for lv in theirs])
        )  # fmt: skip
        base_calls = (
            sum(sum(lv.calls.values()) / k for lv in theirs) / len(theirs) if theirs else None
        )
        rows.append(
            Row(NAME, f"Batches API calls per batch over its life, {k} in flight", per_batch,
                "calls", base_calls, "list off" if theirs else "",
                per_batch / base_calls if base_calls else None, "report", None,
                ", ".join(f"{kind} {v:.1f}" for kind, v in sorted(kinds.items())))
        )  # fmt: skip
    return rows
