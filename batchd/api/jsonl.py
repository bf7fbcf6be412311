"""Splits a batch's results stream into JSONL lines and parses each into a ResultLine.

The decoder is pure and incremental: fed network chunks of any size, it returns whole lines.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import orjson

from batchd.api.models import ResultLine
from batchd.api.translate import excerpt
from batchd.errors import APIResponseError


class LineDecoder:
    """Incremental JSONL splitter: `feed` chunks, get back `(line_number, line)` pairs.

    Lines end at `\\n`; one `\\r` before it is dropped, even when the `\\r` closed one chunk and
    the `\\n` opened the next. Blank lines are skipped (but counted, so numbers match the file).
    Line length is unbounded: a partial line is kept as a list of pieces and joined once.
    """

    __slots__ = ("_pending", "lineno")

    def __init__(self) -> None:
        self._pending: list[bytes] = []
        #: Physical lines completed so far, blank ones included.
        self.lineno = 0

    @property
    def has_partial(self) -> bool:
        """Whether bytes of an unterminated line are waiting."""
        return bool(self._pending)

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """Take the next chunk; return the lines it completed, in order."""
        parts = chunk.split(b"\n")
        # The last piece has no newline after it (yet): it is the start of the next line.
        tail = parts.pop()
        if not parts:
            if tail:
                self._pending.append(tail)
            return []
        if self._pending:
            self._pending.append(parts[0])
            parts[0] = b"".join(self._pending)
            self._pending = []
        if tail:
            self._pending.append(tail)
        out: list[tuple[int, bytes]] = []
        n = self.lineno
        for part in parts:
            n += 1
            if part.endswith(b"\r"):
                part = part[:-1]
            if part and not part.isspace():
                out.append((n, part))
        self.lineno = n
        return out

    def flush(self) -> tuple[int, bytes] | None:
        """At end of stream: the unterminated last line, if there is a non-blank one."""
        if not self._pending:
            return None
        line = b"".join(self._pending)
        self._pending = []
        self.lineno += 1
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line or line.isspace():
            return None
        return (self.lineno, line)


def iter_lines(chunks: Iterable[bytes]) -> Iterator[tuple[int, bytes]]:
    """Every non-blank line of a whole stream, the unterminated last one included."""
    decoder = LineDecoder()
    for chunk in chunks:
        yield from decoder.feed(chunk)
    last = decoder.flush()
    if last is not None:
        yield last


def parse_result_line(line: bytes, lineno: int) -> ResultLine:
    """Parse one results line; anything but `{"custom_id": str, "result": {...}}` is an error."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise APIResponseError(
            f"results line {lineno} is not valid JSON ({exc}): {excerpt(line, limit=80)!r}"
        ) from exc
    return result_from_object(obj, line, lineno)


def result_from_object(obj: object, line: bytes, lineno: int) -> ResultLine:
    """Check the shape of an already-parsed results line."""
    if not isinstance(obj, dict):
        raise APIResponseError(f"results line {lineno} is not a JSON object")
    custom_id = obj.get("custom_id")
    result = obj.get("result")
    if not isinstance(custom_id, str) or not custom_id:
        raise APIResponseError(f"results line {lineno} has no custom_id string")
    if not isinstance(result, dict):
        raise APIResponseError(f"results line {lineno} ({custom_id}) has no result object")
    return ResultLine(custom_id=custom_id, result=result, raw=line)
