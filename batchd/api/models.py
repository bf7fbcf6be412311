"""The Message Batches API's objects as batchd sees them: batches, counts, list pages, results,
and the answers of the real-time and pass-through calls.

Models accept fields the API may add later, so a new field never breaks polling.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict

from batchd.api.ratelimit import RateLimit
from batchd.api.translate import excerpt
from batchd.errors import APIResponseError

ProcessingStatus = Literal["in_progress", "canceling", "ended"]


class _APIModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class RequestCounts(_APIModel):
    """How many requests of a batch are in each state; all but `processing` are 0 until it ends."""

    processing: int
    succeeded: int
    errored: int
    canceled: int
    expired: int


class MessageBatch(_APIModel):
    """One Message Batch, as returned by create, retrieve, list and cancel."""

    id: str
    type: str = "message_batch"
    processing_status: ProcessingStatus
    request_counts: RequestCounts
    created_at: datetime
    expires_at: datetime | None = None
    ended_at: datetime | None = None
    archived_at: datetime | None = None
    cancel_initiated_at: datetime | None = None
    results_url: str | None = None

    @property
    def total(self) -> int:
        """The batch's size: the five counts always sum to it."""
        c = self.request_counts
        return c.processing + c.succeeded + c.errored + c.canceled + c.expired

    @property
    def ended(self) -> bool:
        return self.processing_status == "ended"


class BatchPage(_APIModel):
    """One page of `list`, newest first; `last_id` is the `after_id` of the next page."""

    data: list[MessageBatch]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None


class DeletedBatch(_APIModel):
    """The answer to delete."""

    id: str
    type: Literal["message_batch_deleted"]


@dataclass(frozen=True, slots=True)
class ResultLine:
    """One line of a batch's results: its `custom_id`, its parsed `result`, and the line's bytes.

    `raw` is the whole line without its line ending, so it can be stored or forwarded unparsed.

    A `damaged` line is one that is in the results but could not be read as it should: not
    valid UTF-8, not strict JSON (a lone `\\ud800` escape), or without a result object. Its
    `custom_id` was still readable, so its request has an answer (possibly a billed one) and
    must not be sent again. `result` is what could be recovered (invalid bytes and lone
    surrogates replaced with U+FFFD), or None when nothing could; `problem` says what was wrong.
    """

    custom_id: str
    result: dict[str, Any] | None
    raw: bytes
    damaged: bool = False
    problem: str | None = None

    @property
    def type(self) -> str:
        """`succeeded`, `errored`, `canceled` or `expired`; empty when no result was recovered."""
        if self.result is None:
            return ""
        return str(self.result.get("type", ""))


@dataclass(frozen=True, slots=True)
class APIResponse:
    """An API answer as it came: its status, the headers worth passing on, the exact body.

    `headers` holds `content-type`, `request-id`, `retry-after`, `retry-after-ms`,
    `x-should-retry` and every `anthropic-*` header (names lowercased), never framing or
    encoding headers; `content` is the body already decoded from any transfer encoding.
    """

    status: int
    headers: Mapping[str, str]
    content: bytes
    request_id: str | None
    rate_limit: RateLimit | None

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def json(self) -> Any:
        """The body parsed; APIResponseError when it is not JSON."""
        try:
            return orjson.loads(self.content)
        except orjson.JSONDecodeError as exc:
            raise APIResponseError(
                f"answer is not JSON: {excerpt(self.content)!r}",
                status=self.status,
                request_id=self.request_id,
            ) from exc


@dataclass(frozen=True, slots=True)
class MessageResponse(APIResponse):
    """A real-time Messages API answer: the raw answer, and `message`, its parsed Message."""

    message: dict[str, Any]

    @property
    def usage(self) -> dict[str, Any]:
        """The Message's `usage` (tokens billed), empty if the answer had none."""
        usage = self.message.get("usage")
        return usage if isinstance(usage, dict) else {}
