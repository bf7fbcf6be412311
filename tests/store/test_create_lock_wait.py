"""Creates of one account go one at a time, under its create lock. A submit stage that finds
the lock taken waits for it a little (a create takes a fraction of a second) instead of leaving
and coming back a second or two later; held longer than that, it leaves the worker to others."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from batchd import Client, aggregate, stages
from batchd.runtime import Runtime, lease
from batchd.stages import submit
from batchd.store import assemblies as asm_store
from tests.store import ACCOUNT, emulated, params
from tests.support.emulator import EmulatorProcess


@pytest.fixture
def runtime(redis_url: str, emulator: EmulatorProcess) -> Iterator[Runtime]:
    rt = Runtime(emulated(redis_url, emulator))
    try:
        yield rt
    finally:
        rt.close()


def sealed(rt: Runtime) -> str:
    """An assembly of three requests, cut and ready for its submit stage."""
    with Client(settings=rt.settings) as client:
        client.submit_many([{"params": params(n)} for n in range(3)])
    asm = aggregate.cut(rt, ACCOUNT, "0", "test")
    assert asm is not None
    return asm


def hold_create_lock(rt: Runtime, seconds: float) -> threading.Thread:
    """Hold the account's create lock for `seconds` from another thread, as another worker's
    create would; returns once the lock is held."""
    held = threading.Event()

    def hold() -> None:
        with lease(rt, asm_store.create_lock_key(rt.keys, ACCOUNT)) as lock:
            assert lock is not None
            held.set()
            time.sleep(seconds)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    return thread


def test_a_create_waits_for_the_lock_a_short_create_holds(runtime: Runtime) -> None:
    """The lock is busy for 0.4 s: the stage waits for it and creates the batch in this very
    run, instead of leaving with "waiting for the create lock"."""
    asm = sealed(runtime)
    holder = hold_create_lock(runtime, 0.4)
    t0 = time.monotonic()
    outcome = stages.run(runtime, ACCOUNT, asm)
    waited = time.monotonic() - t0
    holder.join()
    assert outcome == "submitted"
    assert waited >= 0.3  # it did wait for the holder
    record = runtime.store.read(asm_store.read(runtime.keys, ACCOUNT, asm))
    assert record is not None and record.batch_id


def test_a_create_held_up_longer_leaves_the_worker_and_comes_back(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held past CREATE_LOCK_WAIT, the stage leaves (its next try is due within seconds)."""
    monkeypatch.setattr(submit, "CREATE_LOCK_WAIT", 0.2)
    asm = sealed(runtime)
    holder = hold_create_lock(runtime, 1.5)
    try:
        t0 = time.monotonic()
        assert stages.run(runtime, ACCOUNT, asm) == "waiting for the create lock"
        assert time.monotonic() - t0 < 1.2
    finally:
        holder.join()
    record = runtime.store.read(asm_store.read(runtime.keys, ACCOUNT, asm))
    assert record is not None and not record.batch_id
    assert stages.run(runtime, ACCOUNT, asm) == "submitted"
