"""ResultsStream: the lines of one results download, and the counts that say whether it is whole.

A generator (so `for`, `next` and `close` work as before) that also reports what it delivered.
"""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType

from batchd.api.models import ResultLine


class ResultsStream(Generator[ResultLine, None, None]):
    """Iterate for the ResultLines; read the counters during or after, to judge completeness.

    `delivered` lines were handed over (`damaged` of them flagged), `skipped` were dropped by
    `skip`, `repeated` were dropped as already delivered (a re-read after a break),
    `unreadable` had no readable custom_id (each reported once to `on_bad_line`, even when a
    re-read meets it again). `lines` is the number of distinct lines the stream read.

    `ended_cleanly` turns true only when a download reached the end of its body as HTTP framed
    it (content-length or final chunk; a body framed only by the connection's close cannot
    tell), with no line cut off, and every line was handed over. A download that ends cleanly but
    early is not an error here: compare `lines` with the batch's size (`expected`, when the
    stream knows it; see `short`) and fetch again if it is short. A download that breaks raises
    ResultsStreamError(delivered=n) instead.
    """

    def __init__(self, *, expected: int | None = None) -> None:
        #: The number of lines the results should have (the batch's size), when known.
        self.expected = expected
        self.delivered = 0
        self.damaged = 0
        self.skipped = 0
        self.repeated = 0
        self.unreadable = 0
        #: HTTP downloads made: 1, plus one per resume after a break.
        self.downloads = 0
        self.ended_cleanly = False
        self._lines: Generator[ResultLine, None, None] | None = None

    def attach(self, lines: Generator[ResultLine, None, None]) -> None:
        """Give the stream the generator that produces its lines (done once, by the client)."""
        if self._lines is not None:
            raise RuntimeError("a ResultsStream reads one download")
        self._lines = lines

    @property
    def lines(self) -> int:
        """Distinct lines read: delivered, skipped by count, or unreadable."""
        return self.delivered + self.skipped + self.unreadable

    @property
    def short(self) -> bool:
        """Whether the download ended cleanly with fewer lines than `expected`."""
        return self.ended_cleanly and self.expected is not None and self.lines < self.expected

    @property
    def complete(self) -> bool:
        """Whether the download ended cleanly and is not short (as far as the stream knows)."""
        return self.ended_cleanly and not self.short

    def send(self, value: None) -> ResultLine:
        if self._lines is None:
            raise StopIteration
        return self._lines.send(value)

    def throw(
        self,
        typ: type[BaseException] | BaseException,
        val: object = None,
        tb: TracebackType | None = None,
    ) -> ResultLine:
        if isinstance(typ, BaseException):
            exc = typ
        elif isinstance(val, typ):
            exc = val
        else:
            exc = typ() if val is None else typ(val)
        if tb is not None:
            exc = exc.with_traceback(tb)
        if self._lines is None:
            raise exc
        return self._lines.throw(exc)

    def close(self) -> None:
        """Stop reading and release the connection at once."""
        if self._lines is not None:
            self._lines.close()

    def __repr__(self) -> str:
        return (
            f"ResultsStream(delivered={self.delivered}, damaged={self.damaged},"
            f" skipped={self.skipped}, repeated={self.repeated}, unreadable={self.unreadable},"
            f" expected={self.expected}, ended_cleanly={self.ended_cleanly})"
        )
