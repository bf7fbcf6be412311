"""Splits a batch's results stream into JSONL lines and parses each into a ResultLine.

The decoder is pure and incremental; a line that cannot be parsed still gives its custom_id.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from typing import Any

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


#: The API's rule for a custom_id; a recovered one must follow it to be trusted.
CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_CUSTOM_ID_KEY = b'"custom_id"'
_STRUCTURE = re.compile(rb'[{}\[\]"]')
# The rest of a JSON string after its opening quote (escapes skipped), up to its closing quote.
_STRING_REST = re.compile(rb'[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_ID_VALUE = re.compile(rb'\s*:\s*"([a-zA-Z0-9_-]{1,64})"')
_SURROGATE = re.compile("[\ud800-\udfff]")


def decode_json_line(line: bytes) -> tuple[Any, str | None]:
    """The JSON value of a line, and None; or, for a line orjson refuses, the value read leniently
    and what was wrong.

    Lenient reading replaces invalid UTF-8 bytes and lone surrogate escapes with U+FFFD (so the
    value can be encoded again) and accepts NaN and Infinity. Raises ValueError when even that
    cannot read the line as one JSON value.
    """
    try:
        return orjson.loads(line), None
    except orjson.JSONDecodeError as exc:
        problem = f"not valid JSON ({exc})"
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        text = line.decode("utf-8", "replace")
        problem = "not valid UTF-8 (invalid bytes replaced with U+FFFD)"
    try:
        value = _scrub(json.loads(text))
    except RecursionError as exc:
        raise ValueError("nested too deeply to read leniently") from exc
    # json.JSONDecodeError is a ValueError: it propagates as the "cannot be read" answer.
    return value, problem


def _scrub(value: Any) -> Any:
    """A copy of leniently read JSON with every lone surrogate replaced by U+FFFD."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {_SURROGATE.sub("\ufffd", k): _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def find_custom_id(line: bytes) -> str | None:
    """The custom_id of a line that is not valid JSON, read from its raw bytes, or None.

    Only a `"custom_id": "<id>"` member of the outermost object counts (a tool input deeper in
    the line may have a key of that name; an escaped one inside a string is skipped with the
    string), and only an id the API could have accepted. Two different ones make it unreadable.
    Works on broken UTF-8, since JSON's structural characters are ASCII.
    """
    depth = 0
    pos = 0
    found: str | None = None
    while (match := _STRUCTURE.search(line, pos)) is not None:
        char = match.group()
        if char == b'"':
            rest = _STRING_REST.match(line, match.end())
            if rest is None:
                break  # the line ends inside a string
            pos = rest.end()
            if depth == 1 and line[match.start() : pos] == _CUSTOM_ID_KEY:
                value = _ID_VALUE.match(line, pos)
                if value is not None:
                    custom_id = value.group(1).decode("ascii")
                    if found is not None and found != custom_id:
                        return None
                    found = custom_id
                    pos = value.end()
            continue
        depth += 1 if char in b"{[" else -1
        pos = match.end()
    return found


def read_result_line(line: bytes, lineno: int) -> ResultLine:
    """A results line as a ResultLine, recovering what it can from a damaged one.

    A good line gives a normal ResultLine. A line that is not strict JSON, not valid UTF-8, or
    has no result object, but whose custom_id can be read, gives a `damaged` ResultLine (with
    the result recovered where possible). Raises APIResponseError only for a line whose
    custom_id cannot be read: nothing can be done with it but report it.
    """
    try:
        value, problem = decode_json_line(line)
    except ValueError as exc:
        custom_id = find_custom_id(line)
        if custom_id is None:
            raise APIResponseError(
                f"results line {lineno} is not valid JSON and has no readable custom_id ({exc}):"
                f" {excerpt(line, limit=80)!r}"
            ) from exc
        return ResultLine(
            custom_id=custom_id,
            result=None,
            raw=line,
            damaged=True,
            problem=f"not JSON, custom_id read from the raw line ({exc})",
        )
    return result_from_value(value, line, lineno, problem)


def result_from_value(value: Any, line: bytes, lineno: int, problem: str | None) -> ResultLine:
    """A ResultLine from a line's JSON value; `problem` says it had to be read leniently."""
    if problem is None:
        try:
            return result_from_object(value, line, lineno)
        except APIResponseError as exc:
            custom_id = value.get("custom_id") if isinstance(value, dict) else None
            if not isinstance(custom_id, str) or not custom_id:
                raise
            return ResultLine(
                custom_id=custom_id, result=None, raw=line, damaged=True, problem=str(exc)
            )
    if not isinstance(value, dict):
        raise APIResponseError(f"results line {lineno} is not a JSON object ({problem})")
    custom_id = value.get("custom_id")
    if not isinstance(custom_id, str) or not CUSTOM_ID.fullmatch(custom_id):
        raise APIResponseError(f"results line {lineno} has no readable custom_id ({problem})")
    result = value.get("result")
    if not isinstance(result, dict):
        result = None
        problem = f"{problem}; no result object"
    return ResultLine(custom_id=custom_id, result=result, raw=line, damaged=True, problem=problem)
