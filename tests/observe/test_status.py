"""`batchd status`: lanes, batches in flight with progress, throughput, workers; --watch, --json."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import orjson
import redis

from batchd.defaults import KEEP_MINUTES
from batchd.observe import throughput
from batchd.store import Keys, Store
from batchd.store import assemblies as asm_store
from tests.e2e.conftest import Stack, SubmitFn
from tests.support.daemon import wait_for

MINUTE = 60_000


def batchd(stack: Stack, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchd", *args],
        env={**stack.env(**env), "COLUMNS": "160"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def in_flight(stack: Stack) -> bool:
    status = json.loads(batchd(stack, "status", "--json").stdout)
    return any(a["in_flight"] for a in status["assemblies"])


def test_table_shows_a_batch_in_flight_with_its_progress(stack: Stack, submit: SubmitFn) -> None:
    """A batch being processed is listed with its id, size, a progress bar and the workers."""
    # Long enough to stay in flight while `batchd status` starts on a busy machine.
    stack.emulator.set_profile({"processing_time": [60.0, 60.0]})
    stack.daemon()
    submit(10)
    wait_for(lambda: in_flight(stack), 30, "a batch in flight", step=0.2)
    proc = batchd(stack, "status")
    assert proc.returncode == 0, proc.stderr
    store, keys = stack.client.store, stack.client.keys
    [asm] = store.read(asm_store.recent_batches(keys, "default"))
    record = store.read(asm_store.read(keys, "default", asm))
    assert record is not None and record.batch_id is not None
    out = proc.stdout
    assert record.batch_id in out
    assert "0/10" in out and "─" * 20 in out
    assert "daemons alive 1" in out and "stage workers 2" in out
    for title in ("Lanes", "Batches in flight", "Throughput per minute", "dead letters"):
        assert title in out


def test_json_keeps_its_keys_and_adds_the_rest(stack: Stack, submit: SubmitFn) -> None:
    """--json has the lanes and counters scripts use, plus batches, workers and throughput."""
    stack.daemon()
    submit(4)
    stack.wait_ended(4)
    proc = batchd(stack, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert {"lanes", "assemblies", "dead", "counters", "processes"} <= set(status)
    assert status["counters"]["ended:succeeded"] == 4
    assert status["dead"] == {"default": 0}
    assert status["processes"] == 1
    assert status["workers"]["stage_workers"] == 2
    assert len(status["workers"]["daemons"]) == 1
    assert set(status["workers"]["stage_jobs_queued"]) == {"submit", "poll", "fanout"}
    # A daemon took this minute's snapshot at start (the test may span a minute's turn).
    assert status["throughput"] and status["throughput"][-1]["partial"] is True


def test_deadlines_show_batch_durations_and_what_left_the_batch_route(
    stack: Stack, submit: SubmitFn
) -> None:
    """The deadlines section has each account's policy, observed batch durations (the planned
    one stays the default until enough are seen), and deadlines met and escalated."""
    plans = {"BATCHD_DEADLINES__MIN_SAMPLES": "2"}
    stack.daemon(True, **plans)
    for _ in range(2):  # two batches, one after the other, to be measured
        submit(1)
        stack.wait_ended(stack.ended() + 1)
    rid = stack.client.submit(
        {
            "model": "claude-sonnet-4-5",
            "max_tokens": 8,
            "messages": [{"role": "user", "content": "x"}],
        },
        deadline=time.time() + 5,
    ).id
    assert stack.client.wait(rid, timeout=30).mode == "realtime"
    status = json.loads(batchd(stack, "status", "--json", **plans).stdout)
    [d] = status["deadlines"]
    assert d["policy"] == "realtime"
    assert d["batch_duration"]["samples"] == 2 and d["batch_duration"]["source"] == "observed"
    assert d["counters"]["escalated:realtime"] == 1
    assert d["counters"]["realtime:succeeded"] == d["counters"]["deadlines_met"] == 1
    table = batchd(stack, "status", **plans).stdout
    assert "Deadlines" in table and "realtime" in table


def test_watch_refreshes_until_interrupted(stack: Stack) -> None:
    """--watch prints a fresh view every interval and exits 0 on Ctrl-C."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchd", "status", "--watch", "0.2"],
        env=stack.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    frames = 0
    deadline = time.monotonic() + 30
    while frames < 3 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        frames += line.startswith("Lanes")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert frames == 3
    assert proc.returncode == 0, err


def test_json_watch_prints_one_object_per_line(stack: Stack) -> None:
    """--json --watch follows with one JSON document per line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchd", "status", "--json", "--watch", "0.1"],
        env=stack.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    docs = [json.loads(proc.stdout.readline()) for _ in range(2)]
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=30)
    assert all("lanes" in d and "counters" in d for d in docs)
    assert proc.returncode == 0


def test_throughput_per_minute_from_snapshots(redis_client: redis.Redis) -> None:
    """Consecutive minute snapshots turn into counts per minute; the current one runs to now."""
    store = Store(redis_client, Keys("tp1"))
    counters = store.keys.counters("default")
    t0 = 28_000_000 * MINUTE
    redis_client.hset(counters, mapping={"submitted": 10, "ended:succeeded": 2})
    assert throughput.record(store, ["default"], t0 + 5)
    redis_client.hset(counters, mapping={"submitted": 25, "ended:succeeded": 9, "ended:dead": 1})
    assert throughput.record(store, ["default"], t0 + MINUTE + 7)
    redis_client.hincrby(counters, "submitted", 3)
    now = {"submitted": 28, "ended:succeeded": 9, "ended:dead": 1}
    got = throughput.recent(store, ["default"], t0 + MINUTE + 30_000, now)
    assert [(m.minute, m.partial) for m in got] == [(t0 // MINUTE, False), (t0 // MINUTE + 1, True)]
    assert got[0].counts["submitted"] == 15
    assert got[0].counts["ended"] == 8 and got[0].counts["succeeded"] == 7
    assert got[1].counts["submitted"] == 3 and got[1].counts["ended"] == 0


def test_throughput_adds_up_every_account(redis_client: redis.Redis) -> None:
    """Each account's counters are snapshotted on their own and summed per minute."""
    store = Store(redis_client, Keys("tp4"))
    accounts = ["default", "team-b"]
    t0 = 28_000_300 * MINUTE
    assert throughput.record(store, accounts, t0)
    redis_client.hset(store.keys.counters("default"), "submitted", 4)
    redis_client.hset(store.keys.counters("team-b"), "submitted", 6)
    assert throughput.record(store, accounts, t0 + MINUTE)
    [minute, _] = throughput.recent(store, accounts, t0 + MINUTE + 1, {"submitted": 10})
    assert (minute.minute, minute.partial) == (t0 // MINUTE, False)
    assert minute.counts["submitted"] == 10


def test_first_snapshot_of_a_minute_wins(redis_client: redis.Redis) -> None:
    """Replicas racing for a minute leave one snapshot; one process writes once per minute."""
    store = Store(redis_client, Keys("tp2"))
    counters = store.keys.counters("default")
    t0 = 28_000_100 * MINUTE
    redis_client.hset(counters, "submitted", 1)
    assert throughput.record(store, ["default"], t0)
    assert not throughput.record(store, ["default"], t0 + 10)  # same process, same minute
    throughput._last_minute.clear()  # as if another replica
    redis_client.hset(counters, "submitted", 2)
    assert not throughput.record(store, ["default"], t0 + 20)
    stored = redis_client.hget(store.keys.counters_by_minute("default"), str(t0 // MINUTE))
    assert stored is not None and orjson.loads(stored) == {"submitted": 1}


def test_old_snapshots_are_trimmed(redis_client: redis.Redis) -> None:
    """Only the last KEEP_MINUTES minutes of snapshots stay in Redis."""
    store = Store(redis_client, Keys("tp3"))
    by_minute = store.keys.counters_by_minute("default")
    t0 = 28_000_200 * MINUTE
    old = str(t0 // MINUTE - KEEP_MINUTES - 1)
    redis_client.hset(by_minute, old, b"{}")
    throughput.record(store, ["default"], t0)
    assert redis_client.hkeys(by_minute) == [str(t0 // MINUTE).encode()]
