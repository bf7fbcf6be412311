"""A batch's results file: one JSONL line per request, in its shuffled order, made per chunk.

Lines are encoded as they are written, so a 100,000-line download never exists as one string.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson

from batchd.emulator.faults import DRAW_OVERLOADED
from batchd.emulator.generate import fake_message, output_tokens
from batchd.emulator.messages import error_body, message_id, request_id_for
from batchd.emulator.state import CANCELED, ERRORED, EXPIRED, SUCCEEDED, Batch

_CANCELED = {"type": "canceled"}
_EXPIRED = {"type": "expired"}


class _Lines:
    """Encodes result lines of one batch from data captured when its download began.

    Holding the data here keeps a download whole even if the batch is deleted meanwhile.
    """

    def __init__(self, batch: Batch, *, beta: bool) -> None:
        assert batch.requests is not None and batch.final is not None
        self.batch_id = batch.id
        self.requests = batch.requests
        self.final = batch.final
        self.draws = batch.draws
        self.long_lines = batch.long_lines
        self.long_line_bytes = batch.long_line_bytes
        self.cache_uses = batch.cache_uses
        self.beta = beta
        self.template = _succeeded_template(beta)

    def succeeded(self, custom_id: str, model: str, text: str, input_tokens: int) -> bytes:
        """A succeeded line from its template: the same JSON as dumping the whole dict, faster."""
        parts = self.template
        return b"".join(
            (
                parts[0],
                orjson.dumps(custom_id),
                parts[1],
                orjson.dumps(message_id(self.batch_id, custom_id)),
                parts[2],
                orjson.dumps(model),
                parts[3],
                orjson.dumps(text),
                parts[4],
                str(input_tokens).encode(),
                parts[5],
                str(output_tokens(text)).encode(),
                parts[6],
            )
        )

    def line(self, i: int) -> bytes:
        """The JSON of request `i`'s result, without its line ending."""
        requests = self.requests
        custom_id = requests.custom_ids[i]
        code = self.final[i]
        result: dict[str, Any]
        if code == SUCCEEDED:
            text = requests.replies[i]
            if i in self.long_lines:
                # Longer than the 64 KiB a naive line scanner holds.
                text = (text + " ") * (self.long_line_bytes // (len(text) + 1) + 1)
            special = requests.answers.get(i)
            cache = self.cache_uses.get(i)
            if special is None and cache is None:
                return self.succeeded(custom_id, requests.models[i], text, requests.input_tokens[i])
            message = fake_message(
                message_id=message_id(self.batch_id, custom_id),
                model=requests.models[i],
                text=text,
                input_tokens=requests.input_tokens[i],
                beta=self.beta,
                result=special if i not in self.long_lines else None,
                cache=cache,
            )
            result = {"type": "succeeded", "message": message}
            return orjson.dumps({"custom_id": custom_id, "result": result})
        if code == ERRORED:
            invalid = requests.invalid.get(i)
            if invalid is not None:
                kind, why = invalid.error_type, invalid.message
            elif self.draws is not None and self.draws[i] == DRAW_OVERLOADED:
                kind, why = "overloaded_error", "Overloaded"
            else:
                kind, why = "api_error", "Internal server error"
            result = {
                "type": "errored",
                "error": error_body(kind, why, request_id_for(self.batch_id, custom_id)),
            }
        elif code == CANCELED:
            result = _CANCELED
        else:
            assert code == EXPIRED
            result = _EXPIRED
        return orjson.dumps({"custom_id": custom_id, "result": result})


_SLOTS = ("custom_id", "message_id", "model", "text", "input_tokens", "output_tokens")


def _succeeded_template(beta: bool) -> tuple[bytes, ...]:
    """The JSON of a succeeded line cut around its six variable values."""
    marks = {slot: f"\x01{slot}\x01" for slot in _SLOTS}
    message = fake_message(
        message_id=marks["message_id"],
        model=marks["model"],
        text=marks["text"],
        input_tokens=0,
        beta=beta,
    )
    message["usage"]["input_tokens"] = marks["input_tokens"]
    message["usage"]["output_tokens"] = marks["output_tokens"]
    line = orjson.dumps(
        {"custom_id": marks["custom_id"], "result": {"type": "succeeded", "message": message}}
    )
    parts = []
    for slot in _SLOTS:
        before, found, line = line.partition(orjson.dumps(marks[slot]))
        assert found, slot
        parts.append(before)
    parts.append(line)
    return tuple(parts)


def result_chunks(
    batch: Batch,
    *,
    beta: bool,
    newline: bytes = b"\n",
    chunk_bytes: int = 256 * 1024,
    stop_after: int | None = None,
) -> Iterator[bytes]:
    """The results file in pieces of about `chunk_bytes`; `stop_after` lines, if given.

    With `stop_after`, the last piece also holds the first half of the next line, so a reader
    sees the stream break inside a line, as a reset connection leaves it.
    """
    batch.finalize()
    order = batch.result_order()
    lines = _Lines(batch, beta=beta)
    count = len(order) if stop_after is None else min(stop_after, len(order))
    parts: list[bytes] = []
    size = 0
    for position in range(count):
        line = lines.line(order[position])
        parts.append(line)
        parts.append(newline)
        size += len(line) + len(newline)
        if size >= chunk_bytes:
            yield b"".join(parts)
            parts, size = [], 0
    if stop_after is not None and count < len(order):
        line = lines.line(order[count])
        parts.append(line[: len(line) // 2])
    if parts:
        yield b"".join(parts)
