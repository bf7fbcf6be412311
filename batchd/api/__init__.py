"""The Anthropic API client batchd's stages call: the Message Batches operations, a results
stream that survives broken connections and damaged lines, and real-time and pass-through calls.
"""

from __future__ import annotations

from batchd.api.client import BatchesClient
from batchd.api.headers import beta_header, normalize_betas
from batchd.api.jsonl import (
    LineDecoder,
    find_custom_id,
    iter_lines,
    parse_result_line,
    read_result_line,
)
from batchd.api.models import (
    APIResponse,
    BatchPage,
    MessageBatch,
    MessageResponse,
    RequestCounts,
    ResultLine,
)
from batchd.api.ratelimit import LimitWindow, RateLimit
from batchd.api.retry import RetryPolicy, parse_retry_after
from batchd.api.stream import ResultsStream

__all__ = [
    "APIResponse",
    "BatchPage",
    "BatchesClient",
    "LimitWindow",
    "LineDecoder",
    "MessageBatch",
    "MessageResponse",
    "RateLimit",
    "RequestCounts",
    "ResultLine",
    "ResultsStream",
    "RetryPolicy",
    "beta_header",
    "find_custom_id",
    "iter_lines",
    "normalize_betas",
    "parse_result_line",
    "parse_retry_after",
    "read_result_line",
]
