"""A request without a deadline costs the hot paths nothing for deadlines: read from what a real
server executed (MONITOR), SUBMIT, CLAIM and FANOUT of such requests run no command on the
planner's keys; with a deadline, exactly the writes that keep the planner's set."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from batchd import Client, Settings, aggregate, stages
from batchd.runtime import Runtime
from batchd.store import AssemblyState, Keys
from batchd.store import assemblies as asm_store
from batchd.store.scripts import SCRIPTS
from tests.store import ACCOUNT, emulated, params
from tests.support.emulator import EmulatorProcess
from tests.support.keycheck import KeyReport, record_script_keys

NAMED = {s.sha: name for name, s in SCRIPTS.items()}


@pytest.fixture
def settings(redis_url: str, emulator: EmulatorProcess) -> Settings:
    return emulated(redis_url, emulator)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as c:
        yield c


def batch_of(client: Client, rt: Runtime, deadline: float | None) -> None:
    """Ten requests through submit, cut, create, poll and fan-out, as the stages run them."""
    client.submit_many([{"params": params(n), "deadline": deadline} for n in range(10)])
    asm = aggregate.cut(rt, ACCOUNT, "0", "test")
    assert asm is not None
    stop = time.monotonic() + 30
    while True:
        a = rt.store.read(asm_store.read(rt.keys, ACCOUNT, asm))
        assert a is not None
        if a.state is AssemblyState.DONE:
            return
        assert time.monotonic() < stop, f"assembly stuck in {a.state}"
        stages.run(rt, ACCOUNT, asm)
        time.sleep(0.02)


def planner_commands(report: KeyReport, keys: Keys, script: str) -> list[str]:
    """The commands `script` ran on the planner's keys (its set of deadlines, its batches)."""
    mine = {keys.deadlines(ACCOUNT).encode(), keys.deadline_batches(ACCOUNT).encode()}
    return [
        str(e.command)
        for call in report.calls
        if call.script == script
        for e in call.executed
        if mine & set(e.keys)
    ]


def test_requests_without_a_deadline_touch_no_planner_key(
    client: Client, runtime: Runtime, redis_client: redis.Redis
) -> None:
    """SUBMIT, CLAIM and FANOUT of requests without a deadline run no command on the planner's
    keys, which they only declare."""
    report = record_script_keys(redis_client, lambda: batch_of(client, runtime, None), names=NAMED)
    for script in ("submit", "claim", "fanout"):
        assert report.scripts() >= {script}
        assert planner_commands(report, runtime.keys, script) == [], script


def test_requests_with_a_deadline_cost_one_write_per_call(
    client: Client, runtime: Runtime, redis_client: redis.Redis
) -> None:
    """With deadlines, SUBMIT adds them to the planner's set in one ZADD (no TYPE check first:
    a foreign value there refuses the ZADD, and the call undoes what it wrote), and CLAIM takes
    them out in one ZREM and notes the batch's earliest deadline; FANOUT of batched requests
    writes nothing there."""
    report = record_script_keys(
        redis_client, lambda: batch_of(client, runtime, time.time() + 86_400), names=NAMED
    )
    submit = [c.split(" ", 1)[0].lower() for c in planner_commands(report, runtime.keys, "submit")]
    claim = [c.split(" ", 1)[0].lower() for c in planner_commands(report, runtime.keys, "claim")]
    fanout = [c.split(" ", 1)[0].lower() for c in planner_commands(report, runtime.keys, "fanout")]
    assert submit == ["zadd"]
    assert claim == ["zrem", "zadd"]
    assert fanout == []
