"""One unresolved create per account (found by the chaos run): while a create's outcome is
unknown, no other create of the account may start, so the batch the list then shows can only
be that one's. Pinned here at the level of the Lua scripts, on a real Redis."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchd import Settings
from batchd.runtime import Runtime

ACCOUNT = "default"
FENCE = "7"


@pytest.fixture
def rt(redis_url: str) -> Iterator[Runtime]:
    runtime = Runtime(Settings.load(redis_url=redis_url))
    runtime.redis.set(runtime.keys.create_lock(ACCOUNT), FENCE)
    try:
        yield runtime
    finally:
        runtime.close()


def intent(rt: Runtime, asm: str, fence: str = FENCE) -> int:
    return int(rt.scripts.intent(args=[rt.keys.tag(ACCOUNT), fence, asm]))


def record(rt: Runtime, asm: str, batch_id: str) -> None:
    rt.scripts.record(args=[rt.keys.tag(ACCOUNT), rt.keys.prefix, ACCOUNT, asm, batch_id, 1000])


def test_a_second_create_waits_while_the_first_is_unresolved(rt: Runtime) -> None:
    """A's intent stands without a batch id: B's intent is refused with -1, A's own is not."""
    assert intent(rt, "A") > 0
    assert intent(rt, "B") == -1
    assert intent(rt, "A") > 0


def test_recording_the_batch_lets_the_next_create_start(rt: Runtime) -> None:
    """Once A's batch id is recorded, B may write its intent."""
    intent(rt, "A")
    record(rt, "A", "msgbatch_A")
    assert rt.redis.get(rt.keys.open_intent(ACCOUNT)) is None
    assert intent(rt, "B") > 0


def test_withdrawing_the_intent_lets_the_next_create_start(rt: Runtime) -> None:
    """A create that certainly made nothing withdraws its intent; B may go."""
    intent(rt, "A")
    assert int(rt.scripts.clear_intent(args=[rt.keys.tag(ACCOUNT), FENCE, "A"])) == 1
    assert intent(rt, "B") > 0


def test_a_pointer_to_a_resolved_assembly_does_not_block(rt: Runtime) -> None:
    """The open-intent key naming an assembly without an intent (a crash between steps, an
    expired assembly) blocks nothing."""
    rt.redis.set(rt.keys.open_intent(ACCOUNT), "gone")
    assert intent(rt, "B") > 0


def test_no_intent_without_the_create_lock(rt: Runtime) -> None:
    """A fence that does not hold the create lock writes nothing and opens nothing."""
    assert intent(rt, "A", fence="6") == 0
    assert rt.redis.get(rt.keys.open_intent(ACCOUNT)) is None
