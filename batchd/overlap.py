"""Overlap a stage's Redis round trips with the work around them, one helper thread each:
read the next piece of a batch body while this one is sent; apply fan-out chunks in order while
the next lines are parsed. Errors cross to the caller; order and atomicity are unchanged.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, cast

_T = TypeVar("_T")
_END = object()
#: How often a helper blocked on a full or empty queue checks whether it should stop.
_POLL = 0.1


class ReadAhead(Generic[_T]):
    """Iterate `items` in a thread, `depth` items ahead of the reader, inside a `with` block.

    What the thread raises is raised to the reader at that point of the sequence. Leaving the
    block early stops the thread (it finishes the item in hand, then drops the rest).
    """

    def __init__(self, items: Iterator[_T], depth: int = 1) -> None:
        self._items = items
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="read-ahead", daemon=True)

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for item in self._items:
                if not self._put(item):
                    return
        except BaseException as exc:  # handed to the reader, raised there
            self._put(exc)
            return
        self._put(_END)

    def __enter__(self) -> Iterator[_T]:
        self._thread.start()
        return self._read()

    def _read(self) -> Iterator[_T]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield cast(_T, item)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class WriteBehind(Generic[_T]):
    """Hand items to `apply`, called in `workers` threads, at most `depth` items behind.

    With one worker, items are applied in the order given; with more, several are applied at
    once, in any order (so Redis has the next one while a worker sends or packs another).
    `put` returns at once unless `depth` items are waiting. An exception raised by `apply`
    stops the workers and is raised by the next `put`, or on leaving the `with` block. Leaving
    the block waits until every item put has been applied (or one failed).
    """

    def __init__(self, apply: Callable[[_T], None], depth: int = 2, workers: int = 1) -> None:
        self._apply = apply
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, name="write-behind", daemon=True)
            for _ in range(workers)
        ]

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _END or self._error is not None:
                return
            try:
                self._apply(cast(_T, item))
            except BaseException as exc:  # raised to the caller by put or on exit
                self._error = exc
                return

    def _alive(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def put(self, item: _T) -> None:
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._queue.put(item, timeout=_POLL)
                return
            except queue.Full:
                continue

    def __enter__(self) -> WriteBehind[_T]:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        ends = len(self._threads)
        while ends and self._alive():
            try:
                self._queue.put(_END, timeout=_POLL)
                ends -= 1
            except queue.Full:
                continue
        for t in self._threads:
            t.join()
        if self._error is not None and exc is None:
            raise self._error
