"""Redis latency under batchd's heaviest loads (issue 12, point 4): no call may block Redis for
everyone with work that grows with the data.

Two measures during each load: Redis's own worst single-command time (SLOWLOG, which times the
command's execution alone; LATENCY's events, fsync and fork included, are in the notes), and the
worst round trip a lone `submit` from another process sees (`bench.probe`, one every 5 ms). The
loads: the end-to-end run (daemon, producer, consumer), a claim of a whole lane into one batch,
and the fan-out of one batch's results. The probe's baseline is the same probe against the same
Redis with nothing else running, just before each load: the machine's own noise floor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis

from batchd.runtime import Runtime
from batchd.store.scripts import SCRIPTS, _load
from bench.common import (
    Context,
    Row,
    emulator,
    flush,
    median,
    percentile,
    redis_server,
    settings,
)
from bench.e2e import one_run
from bench.fanout import QUEUE, compact_aof, create_and_end, fan_out, replies_waiting
from bench.probe import Probe
from bench.upload import claim_all, submit_all

NAME = "redis_latency"
#: Commands slower than this (µs) are kept in the SLOWLOG; the worst is what is reported.
SLOWLOG_US = 100
SLOWLOG_LEN = 100_000
#: Seconds the probe runs against an idle Redis for its baseline.
IDLE_SECONDS = 2.0
TARGET_MS = 10.0
_SCRIPT_OF = {s.sha: name for name, s in SCRIPTS.items()}
#: The benchmark's own commands to Redis, which are no part of the load.
_ADMIN = frozenset({"SLOWLOG", "LATENCY", "CONFIG", "INFO", "BGREWRITEAOF", "FLUSHALL"})


@dataclass
class Watch:
    """What one load did to Redis: its worst commands, its latency events, the probe's series."""

    load: str
    seconds: float = 0.0
    worst_ms: float = 0.0
    worst_what: str = ""
    by_command: dict[str, list[float]] = field(default_factory=dict)  # ms of each slow call
    events: dict[str, int] = field(default_factory=dict)  # LATENCY: worst ms per event
    probe: list[float] = field(default_factory=list)  # ms
    idle: list[float] = field(default_factory=list)  # ms, the probe alone just before


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def command_name(entry: dict[str, Any]) -> str:
    """A SLOWLOG entry's command, a script call named by its script."""
    words = _text(entry.get("command", "")).split()
    if not words:
        return "?"
    name = words[0].upper()
    if name == "EVALSHA" and len(words) > 1:
        return f"EVALSHA {script_name(words[1].lower())}"
    return name


def script_name(sha: str) -> str:
    """The name of the script with this SHA-1: one this process loaded, or else one of the
    scripts as they are on disk now (a daemon started later loads what it finds then)."""
    if sha not in _SCRIPT_OF:
        for name in SCRIPTS:
            try:
                _SCRIPT_OF.setdefault(_load(name).sha, name)
            except OSError:
                continue
    return _SCRIPT_OF.get(sha, sha[:8])


def prepare_server(r: redis.Redis) -> None:
    r.config_set("slowlog-log-slower-than", SLOWLOG_US)
    r.config_set("slowlog-max-len", SLOWLOG_LEN)
    r.config_set("latency-monitor-threshold", 1)


def reset(r: redis.Redis) -> None:
    r.slowlog_reset()
    r.execute_command("LATENCY", "RESET")  # type: ignore[no-untyped-call]


def read(r: redis.Redis, w: Watch) -> None:
    """The SLOWLOG and LATENCY since `reset`, into `w`."""
    for entry in r.slowlog_get(SLOWLOG_LEN):
        ms = int(entry["duration"]) / 1000
        name = command_name(entry)
        if name in _ADMIN:
            continue
        w.by_command.setdefault(name, []).append(ms)
        if ms > w.worst_ms:
            w.worst_ms, w.worst_what = ms, name
    for event in r.execute_command("LATENCY", "LATEST"):  # type: ignore[no-untyped-call]
        w.events[_text(event[0])] = int(event[3])


@contextmanager
def watching(url: str, load: str, probe: Probe | None, found: list[Watch]) -> Iterator[None]:
    """Reset Redis's slow log and latency events, run the probe, and collect all three once the
    block is done. Without a probe, one is started here for the block (and closed after)."""
    own = probe is None
    p = Probe(url) if probe is None else probe
    r = redis.Redis.from_url(url)
    w = Watch(load)
    try:
        prepare_server(r)
        p.go()
        time.sleep(IDLE_SECONDS)
        w.idle = p.stop()
        reset(r)
        p.go()
        t0 = time.perf_counter()
        try:
            yield
        finally:
            w.seconds = time.perf_counter() - t0
            w.probe = p.stop()
            read(r, w)
            found.append(w)
    finally:
        r.close()
        if own:
            p.close()


def claim_and_fanout(ctx: Context, found: list[Watch]) -> None:
    """Per repetition: submit a batch's worth (unwatched), claim it (watched), create and poll
    its batch (unwatched), fan it out (watched)."""
    n = ctx.sizes.batch
    with (
        redis_server(ctx, NAME) as server,
        emulator(ctx, NAME + "-emulator", "--processing-time", "0") as emu,
        Probe(server.url) as probe,
    ):
        rt = Runtime(settings(server.url, emu.url))
        try:
            for rep in range(ctx.sizes.slow_reps):
                flush(rt.redis)
                emu.reset()
                ctx.say(f"{NAME}: submitting {n:,} requests (repetition {rep + 1})")
                submit_all(server.url, n, reply_to=QUEUE)
                compact_aof(rt.redis)
                ctx.say(f"{NAME}: claiming {n:,} requests into one batch")
                with watching(server.url, "claim", probe, found):
                    asm, _ = claim_all(server.url, n)
                create_and_end(rt, asm)
                compact_aof(rt.redis)
                ctx.say(f"{NAME}: fanning out {n:,} results")
                with watching(server.url, "fanout", probe, found):
                    fan_out(rt, asm)
                assert replies_waiting(rt) == n
        finally:
            rt.close()


def plain_worst(w: Watch) -> float:
    """The worst time of a command that is not a script (SET, HSET, ...: constant work): how
    long Redis was held up by more than its own work (preempted on a busy machine, a fork)."""
    times = [max(v) for k, v in w.by_command.items() if not k.startswith("EVALSHA")]
    return max(times, default=SLOWLOG_US / 1000)


def row(load: str, what: str, watches: list[Watch]) -> list[Row]:
    """The worst command and the probe's worst round trip during one load, over repetitions."""
    mine = [w for w in watches if w.load == load]
    worst = [w.worst_ms for w in mine]
    plain = [plain_worst(w) for w in mine]
    probe_max = [max(w.probe) for w in mine]
    idle_max = [max(w.idle) for w in mine]
    last = max(mine, key=lambda w: w.worst_ms)
    top = sorted(last.by_command.items(), key=lambda kv: -max(kv[1]))[:3]
    slowest = ", ".join(
        f"{k} {max(v):.1f} ms (median {percentile(v, 50):.1f} ms of {len(v)} over {SLOWLOG_US} us)"
        for k, v in top
    )
    events = ", ".join(f"{k} {v} ms" for k, v in sorted(last.events.items())) or "none >= 1 ms"
    command = Row(
        NAME,
        f"worst single command during {what} (SLOWLOG)",
        median(worst),
        "ms",
        median(plain),
        "worst non-script command in the same load",
        median(worst) / median(plain) if median(plain) else None,
        f"<= {TARGET_MS:g} ms",
        median(worst) <= TARGET_MS,
        f"slowest: {slowest or 'none'}; LATENCY events (worst): {events}; load took "
        f"{median([w.seconds for w in mine]):.1f} s",
        worst,
        plain,
    )
    series = [x for w in mine for x in w.probe]
    quiet = [x for w in mine for x in w.idle]
    probe = Row(
        NAME,
        f"worst round trip of a lone submit from another client during {what}",
        median(probe_max),
        "ms",
        median(idle_max),
        "the same probe, Redis idle",
        median(probe_max) / median(idle_max),
        f"<= {TARGET_MS:g} ms",
        median(probe_max) <= TARGET_MS,
        f"{len(series):,} probe submits, one per 5 ms: p99 {percentile(series, 99):.1f} ms, "
        f"p50 {percentile(series, 50):.2f} ms (idle: p99 {percentile(quiet, 99):.1f} ms)",
        probe_max,
        idle_max,
    )
    return [command, probe]


def run(ctx: Context) -> list[Row]:
    found: list[Watch] = []
    n_e2e, n = ctx.sizes.e2e, ctx.sizes.batch
    for rep in range(ctx.sizes.slow_reps):
        ctx.say(f"{NAME}: end to end, {n_e2e:,} requests (repetition {rep + 1})")
        one_run(
            ctx,
            n_e2e,
            watch=lambda url: watching(url, "e2e", None, found),
        )
    claim_and_fanout(ctx, found)
    rows: list[Row] = []
    rows += row("e2e", f"the end-to-end run of {n_e2e:,} requests", found)
    rows += row("claim", f"a claim of {n:,} requests into one batch", found)
    rows += row("fanout", f"the fan-out of {n:,} results", found)
    return rows
