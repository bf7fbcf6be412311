"""The Message Batches API's objects as batchd sees them: batches, counts, list pages, results.

Models accept fields the API may add later, so a new field never breaks polling.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

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
