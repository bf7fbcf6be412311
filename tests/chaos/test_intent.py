"""One unresolved create per account (found by the chaos run): while a create's outcome is
unknown, no other create of the account may start, so the batch the list then shows can only
be that one's. Pinned here at the level of the Lua scripts, on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchd import Settings
from batchd.runtime import Runtime
from batchd.store import assemblies as asm_store
from batchd.store import locks

ACCOUNT = "default"
FENCE = "7"


@pytest.fixture
def rt(redis_url: str) -> Iterator[Runtime]:
    runtime = Runtime(Settings.load(redis_url=redis_url))
    key = asm_store.create_lock_key(runtime.keys, ACCOUNT)
    assert runtime.store.read(locks.acquire(key, FENCE, 60_000))
    try:
        yield runtime
    finally:
        runtime.close()


def intent(rt: Runtime, asm: str, fence: str = FENCE) -> int:
    seen = rt.store.read(asm_store.open_intent(rt.keys, ACCOUNT))
    return rt.store.run(asm_store.intent(rt.keys, ACCOUNT, asm, fence, seen))


def record(rt: Runtime, asm: str, batch_id: str) -> None:
    rt.store.run(
        asm_store.record(rt.keys, ACCOUNT, asm, batch_id, first_poll_ms=1000, retention_ms=60_000)
    )


def open_intent(rt: Runtime) -> str:
    return rt.store.read(asm_store.open_intent(rt.keys, ACCOUNT))


def test_a_second_create_waits_while_the_first_is_unresolved(rt: Runtime) -> None:
    """A's intent stands without a batch id: B's intent is refused with -1, A's own is not."""
    assert intent(rt, "A") > 0
    assert intent(rt, "B") == -1
    assert intent(rt, "A") > 0


def test_recording_the_batch_lets_the_next_create_start(rt: Runtime) -> None:
    """Once A's batch id is recorded, B may write its intent."""
    intent(rt, "A")
    record(rt, "A", "msgbatch_A")
    assert open_intent(rt) == ""
    assert intent(rt, "B") > 0


def test_withdrawing_the_intent_lets_the_next_create_start(rt: Runtime) -> None:
    """A create that certainly made nothing withdraws its intent; B may go."""
    intent(rt, "A")
    assert rt.store.run(asm_store.clear_intent(rt.keys, ACCOUNT, "A", FENCE)) == 1
    assert intent(rt, "B") > 0


def test_a_pointer_to_a_resolved_assembly_does_not_block(rt: Runtime) -> None:
    """The open-intent key naming an assembly without an intent (a crash between steps, an
    expired assembly) blocks nothing."""
    rt.redis.set(rt.keys.open_intent(ACCOUNT), "gone")
    assert intent(rt, "B") > 0


def test_a_pointer_that_moved_since_it_was_read_is_read_again(rt: Runtime) -> None:
    """INTENT refuses (-2) when the open intent is not the one its caller saw."""
    rt.redis.set(rt.keys.open_intent(ACCOUNT), "other")
    assert rt.store.run(asm_store.intent(rt.keys, ACCOUNT, "B", FENCE, "")) == -2


def test_no_intent_without_the_create_lock(rt: Runtime) -> None:
    """A fence that does not hold the create lock writes nothing and opens nothing."""
    assert intent(rt, "A", fence="6") == 0
    assert open_intent(rt) == ""
