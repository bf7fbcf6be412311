"""ReadAhead and WriteBehind: order, errors crossing threads, and stopping early."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest

from batchd.overlap import ReadAhead, WriteBehind


def test_read_ahead_yields_every_item_in_order() -> None:
    """The reader sees the source's items, all of them, in order."""
    with ReadAhead(iter(range(100)), depth=3) as items:
        assert list(items) == list(range(100))


def test_read_ahead_raises_the_sources_error_where_it_happened() -> None:
    """An error in the source reaches the reader after the items before it."""

    def source() -> Iterator[int]:
        yield 1
        yield 2
        raise ValueError("broken")

    seen: list[int] = []
    with pytest.raises(ValueError, match="broken"), ReadAhead(source()) as items:
        for item in items:
            seen.append(item)
    assert seen == [1, 2]


def test_read_ahead_stops_its_thread_when_left_early() -> None:
    """Leaving the block after one item of an endless source ends the helper thread."""
    reader = ReadAhead(itertools.count())
    with reader as items:
        assert next(items) == 0
    assert not reader._thread.is_alive()


def test_write_behind_applies_in_order_with_one_worker() -> None:
    """One worker applies the items in the order they were put."""
    applied: list[int] = []
    with WriteBehind(applied.append) as writer:
        for i in range(50):
            writer.put(i)
    assert applied == list(range(50))


def test_write_behind_with_two_workers_applies_each_item_once() -> None:
    """Two workers together apply every item exactly once."""
    applied: list[int] = []
    lock = threading.Lock()

    def apply(item: int) -> None:
        with lock:
            applied.append(item)

    with WriteBehind(apply, depth=4, workers=2) as writer:
        for i in range(200):
            writer.put(i)
    assert sorted(applied) == list(range(200))


def test_write_behind_raises_the_apply_error() -> None:
    """An error in apply is raised to the caller, by a later put or on leaving the block."""

    def apply(item: int) -> None:
        if item == 3:
            raise RuntimeError("lost")

    with pytest.raises(RuntimeError, match="lost"), WriteBehind(apply) as writer:
        for i in range(1000):
            writer.put(i)


def test_write_behind_keeps_the_callers_own_error() -> None:
    """When the caller's block fails, that error propagates and the items put are applied."""
    applied: list[int] = []
    with pytest.raises(KeyError), WriteBehind(applied.append) as writer:
        writer.put(1)
        raise KeyError("caller")
    assert applied == [1]
