"""Recovery (issue 21, point 5): `kill -9` of the whole `batchd run` at each step boundary, a
restart at once (as a supervisor does), and the time from the kill to the last result, beside
the same run without a crash.

batchd runs with its default settings (leases, stale checks, poll and list intervals, create
settle), but for batches of RECOVERY_BATCH requests; the emulator takes 1 s per batch. The crash
points are batchd's own (`batchd.runtime.crash_point`, as tests/e2e/test_crash.py uses them):
after a lane's claim, after the submission intent, after the create's answer, in the middle of
a fan-out. The baseline is the run without a crash, from the moment its first batch passed the
same step (Redis's record of it) to its last result. Every request must still end once, billed
once: the emulator's audit says so.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from batchd import Client, Ticket
from batchd.store import AssemblyRecord
from bench.common import (
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
from bench.stack import (
    Consumer,
    assemblies,
    emulated_batches,
    epoch,
    ms,
    start_daemon,
    wait_for_daemon,
)

NAME = "recovery"
QUEUE = "bench-recovery"
#: Requests per batch (`batch.max_requests`); the run has Sizes.recovery requests in all.
RECOVERY_BATCH = 1000
#: The emulator's processing time per batch, seconds.
PROCESSING = 1.0
POINTS = ("after_claim", "after_intent", "after_create", "mid_fanout")
#: Seconds within which every stage must resume after the kill (issue 21, point 5).
TARGET = 10.0


@dataclass
class Outcome:
    total: float  # first submit to last result
    after: dict[str, float]  # from the kill, or else the first batch passing each step, to the
    #                          last result
    resumed: float  # kill to the interrupted stage done again (0 without a crash)
    billed: int
    doubled: int
    restart: float  # kill to the restarted daemon's first heartbeat


def step_time(a: AssemblyRecord, point: str, created: dict[str, float] | None = None) -> float:
    """When an assembly passed a step, by Redis's record of it (epoch seconds). The intent's
    time is dropped once the batch is recorded: the emulator's `created_at` of the batch stands
    for it (the POST follows the intent at once)."""
    if point == "after_intent":
        assert created is not None and a.batch_id is not None
        return created[a.batch_id]
    at = {
        "after_claim": a.created_ms,
        "after_create": a.submitted_ms,
        "mid_fanout": a.ended_ms,
    }[point]
    return ms(at)


def done_time(a: AssemblyRecord, point: str) -> float:
    """When the stage a crash at `point` interrupted was done: the batch recorded, or the
    fan-out finished."""
    return ms(a.closed_ms if point == "mid_fanout" else a.submitted_ms)


def one_run(ctx: Context, point: str | None, rep: int) -> Outcome:
    n = ctx.sizes.recovery
    tag = f"{NAME}-{point or 'none'}-{rep}"
    with (
        redis_server(ctx, tag) as server,
        emulator(ctx, tag + "-emulator", "--processing-time", str(PROCESSING)) as emu,
    ):
        store = store_at(server.url)
        marker = ctx.scratch(tag + "-marker") / "crashed"
        extra = {"BATCHD_BATCH__MAX_REQUESTS": str(RECOVERY_BATCH)}
        if point is not None:
            extra |= {"BATCHD_CRASH_AT": point, "BATCHD_CRASH_MARKER": str(marker)}
        env = daemon_env(server.url, emu.url, extra, fast=False)
        client = Client(settings=settings(server.url, emu.url))
        consumer = Consumer(server.url, "queue", QUEUE, n, 100)
        daemon = start_daemon(ctx.scratch(tag + "-daemon"), env, store)
        try:
            started = time.time()
            out = client.submit_many(
                [{"params": params(i, 1000), "reply_to": QUEUE} for i in range(n)]
            )
            assert all(isinstance(o, Ticket) for o in out)
            killed = restart = 0.0
            if point is not None:
                wait_until(marker.exists, 300, f"the crash at {point}", 0.01)
                killed = float(marker.read_text().split()[2])
                daemon.wait_exit(30)
                daemon.start()
                wait_for_daemon(daemon, store)
                restart = time.time() - killed
            got = consumer.result()
            assert got.got == n, got
            audit = emu.audit()[emu.api_key]
            records = assemblies(store)
            billed, doubled = audit["billed"], len(audit["double_submitted"])
            if point is None:
                first = min(records, key=lambda a: step_time(a, "after_claim"))
                created = {k: epoch(b.created_at) for k, b in emulated_batches(emu.url).items()}
                since = {p: got.last - step_time(first, p, created) for p in POINTS}
                return Outcome(got.last - started, since, 0.0, billed, doubled, 0.0)
            # The assemblies claimed before the kill: one of them held the interrupted stage.
            hit = [a for a in records if step_time(a, "after_claim") <= killed]
            resumed = max(done_time(a, point) for a in hit) - killed if hit else 0.0
            since = {point: got.last - killed}
            return Outcome(got.last - started, since, resumed, billed, doubled, restart)
        finally:
            consumer.close()
            client.close()
            daemon.stop()
            store.close()


def run(ctx: Context) -> list[Row]:
    n = ctx.sizes.recovery
    plain: list[Outcome] = []
    crashed: dict[str, list[Outcome]] = {p: [] for p in POINTS}
    for rep in range(ctx.sizes.slow_reps):
        ctx.say(f"{NAME}: {n:,} requests without a crash (repetition {rep + 1})")
        plain.append(one_run(ctx, None, rep))
        for point in POINTS:
            ctx.say(f"{NAME}: kill -9 at {point} (repetition {rep + 1})")
            crashed[point].append(one_run(ctx, point, rep))
    total = median([o.total for o in plain])
    rows = [
        Row(NAME, f"{n:,} requests in batches of {RECOVERY_BATCH:,}, no crash: first submit to "
            "last result", total, "s", note=f"default settings; the emulator takes "
            f"{PROCESSING:g} s per batch", samples=[o.total for o in plain]),
    ]  # fmt: skip
    for point in POINTS:
        runs = crashed[point]
        after = [o.after[point] for o in runs]
        base = [o.after[point] for o in plain]
        whole = median([o.total for o in runs])
        extra = whole - total
        billed = [o.billed for o in runs]
        doubled = sum(o.doubled for o in runs)
        once = all(b == n for b in billed) and doubled == 0
        rows.append(
            Row(
                NAME,
                f"kill -9 at {point}, restart at once: kill to last result",
                median(after),
                "s",
                median(base),
                "no crash: that step to last result",
                median(after) / median(base),
                f"crash adds <= {TARGET:g} s",
                extra <= TARGET and once,
                f"whole run {whole:.1f} s against {total:.1f} s ({extra:+.1f} s); the interrupted "
                f"stage done again {median([o.resumed for o in runs]):.1f} s after the kill; "
                f"restarted daemon up after {median([o.restart for o in runs]):.1f} s; billed "
                f"{billed} of {n:,}" + ("" if once else f"; {doubled} in two live batches"),
                after,
                base,
            )
        )
    return rows
