"""Reading a create body into compact per-request records, and the ids of what they answer.

A 100,000-request body is parsed once and reduced to a custom_id, model, reply and token count
per request, plus the rarer answers (tools, thinking, early stops) and cache breakpoints;
results lines (a deterministic Message, or an error) are encoded from those records.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson

from batchd.emulator.generate import Answer, answer, reply_text
from batchd.emulator.usage import PromptSize, measure
from batchd.emulator.validate import (
    BETA_PARAMS_FIELDS,
    PARAMS_FIELDS,
    Invalid,
    batch_params_error,
)

CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID = re.compile(CUSTOM_ID_PATTERN)


class InvalidBody(ValueError):
    """The create body is refused as a whole (400 invalid_request_error)."""


@dataclass
class ParsedBatch:
    """What the emulator keeps of a create body: a few small values per request."""

    custom_ids: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    input_tokens: array[int] = field(default_factory=lambda: array("L"))
    # Index of each request whose params fail validation -> the error of its result line.
    invalid: dict[int, Invalid] = field(default_factory=dict)
    # Index -> the answer, for requests not answered with plain end_turn text.
    answers: dict[int, Answer] = field(default_factory=dict)
    # Index -> prompt size, for requests with a cache breakpoint.
    prompts: dict[int, PromptSize] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.custom_ids)


def parse_create_body(body: bytes | bytearray, max_requests: int, *, beta: bool) -> ParsedBatch:
    """Validate the envelope of a create body now; params only later, into `invalid`.

    Raises InvalidBody with a message naming the offending index, like the API's.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"Request body is not valid JSON: {exc}") from None
    if isinstance(body, bytearray):
        # The parsed tree holds all that is needed now; give the body's memory back at once.
        body.clear()
    if not isinstance(data, dict):
        raise InvalidBody("body: Input should be a valid dictionary")
    for key in data:
        if key != "requests":
            raise InvalidBody(f"{key}: Extra inputs are not permitted")
    requests = data.get("requests")
    if requests is None:
        raise InvalidBody("requests: Field required")
    if not isinstance(requests, list):
        raise InvalidBody("requests: Input should be a valid list")
    if not requests:
        raise InvalidBody("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > max_requests:
        raise InvalidBody(
            f"requests: List should have at most {max_requests} items after validation,"
            f" not {len(requests)}"
        )
    allowed = BETA_PARAMS_FIELDS if beta else PARAMS_FIELDS
    parsed = ParsedBatch()
    seen: set[str] = set()
    models: dict[str, str] = {}
    for i, item in enumerate(requests):
        where = f"requests.{i}"
        if not isinstance(item, dict):
            raise InvalidBody(f"{where}: Input should be a valid dictionary")
        for key in item:
            if key not in ("custom_id", "params"):
                raise InvalidBody(f"{where}.{key}: Extra inputs are not permitted")
        custom_id = item.get("custom_id")
        if custom_id is None:
            raise InvalidBody(f"{where}.custom_id: Field required")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise InvalidBody(
                f"{where}.custom_id: String should match pattern '{CUSTOM_ID_PATTERN}'"
            )
        if custom_id in seen:
            raise InvalidBody(
                f"{where}.custom_id: Duplicate custom_id '{custom_id}';"
                " custom_id must be unique within a message batch"
            )
        seen.add(custom_id)
        params = item.get("params")
        if params is None:
            raise InvalidBody(f"{where}.params: Field required")
        if not isinstance(params, dict):
            raise InvalidBody(f"{where}.params: Input should be a valid dictionary")
        error = batch_params_error(params, allowed)
        if error is not None:
            parsed.invalid[i] = error
        model = params.get("model")
        model = model if isinstance(model, str) and model else "unknown-model"
        parsed.custom_ids.append(custom_id)
        # Most requests share a model: keep one string object per distinct name.
        parsed.models.append(models.setdefault(model, model))
        reply = reply_text(params)
        size = measure(params)
        parsed.replies.append(reply)
        parsed.input_tokens.append(size.tokens)
        if error is None:
            special = answer(params, reply)
            if special is not None:
                parsed.answers[i] = special
            if size.breakpoint is not None:
                parsed.prompts[i] = size
    return parsed


def parse_and_release(body: bytearray, max_requests: int, *, beta: bool) -> ParsedBatch:
    """`parse_create_body`, then hand the freed parse memory back to the operating system.

    Without the trim, glibc keeps the heap the parsed tree used, and a 250 MB create would
    leave the process that much bigger for good.
    """
    try:
        return parse_create_body(body, max_requests, beta=beta)
    finally:
        _trim_heap()


def _trim_heap() -> None:
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()


def message_id(batch_id: str, custom_id: str) -> str:
    digest = hashlib.blake2b(f"{batch_id}/{custom_id}".encode(), digest_size=12).hexdigest()
    return "msg_" + digest


def request_id_for(batch_id: str, custom_id: str) -> str:
    digest = hashlib.blake2b(f"{custom_id}@{batch_id}".encode(), digest_size=12).hexdigest()
    return "req_" + digest


def error_body(error_type: str, message: str, request_id: str | None) -> dict[str, Any]:
    """The API's error envelope, as in an HTTP error body or an `errored` result."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }
