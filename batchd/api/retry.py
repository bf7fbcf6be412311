"""When a Message Batches API call is tried again, and how long to wait before it.

Mirrors the official SDK's rules: 408, 409, 429, 5xx and connection errors, `x-should-retry`,
`retry-after`/`retry-after-ms` capped, otherwise exponential backoff with full jitter.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from batchd.settings import ApiSettings

RETRYABLE_STATUSES = frozenset({408, 409, 429})


def parse_retry_after(headers: Mapping[str, str], *, now: datetime | None = None) -> float | None:
    """Seconds the server asks us to wait, from `retry-after-ms` or `retry-after`.

    `retry-after` may be delta-seconds or an HTTP-date; a date in the past means 0. Unparseable,
    negative or non-finite values count as absent.
    """
    ms = headers.get("retry-after-ms")
    if ms is not None:
        value = _finite_float(ms)
        if value is not None and value >= 0:
            return value / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    seconds = _finite_float(raw)
    if seconds is not None:
        return seconds if seconds >= 0 else None
    try:
        when = parsedate_to_datetime(raw.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT; a naive result means no zone was given
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def _finite_float(text: str) -> float | None:
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def should_retry_header(headers: Mapping[str, str] | None) -> bool | None:
    """The server's explicit verdict from `x-should-retry`, or None when it gave none."""
    if headers is None:
        return None
    value = headers.get("x-should-retry", "").strip().lower()
    if value == "true":
        return True
    if value == "false":
        return False
    return None


@dataclass(frozen=True)
class RetryPolicy:
    """How many times, on which failures, and with which waits an API call is retried."""

    max_retries: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 60.0

    @classmethod
    def from_settings(cls, api: ApiSettings) -> RetryPolicy:
        return cls(
            max_retries=api.max_retries,
            backoff_initial=api.backoff_initial,
            backoff_max=api.backoff_max,
            retry_after_max=api.retry_after_max,
        )

    def is_retryable(self, status: int | None, headers: Mapping[str, str] | None = None) -> bool:
        """Whether a failure may be retried; `status` None means no HTTP answer came back."""
        verdict = should_retry_header(headers)
        if verdict is not None:
            return verdict
        if status is None:
            return True
        return status in RETRYABLE_STATUSES or status >= 500

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to sleep before retry number `retry` (0 for the first retry).

        A server-given `retry_after` wins, capped at `retry_after_max`; otherwise full jitter:
        uniform in [0, min(backoff_max, backoff_initial * 2**retry)].
        """
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.retry_after_max)
        return random.uniform(0.0, self.backoff_cap(retry))

    def backoff_cap(self, retry: int) -> float:
        """The upper bound of the jittered wait before retry number `retry`."""
        # min() before the power keeps huge retry numbers from overflowing a float.
        exponent = min(retry, 64)
        return min(self.backoff_max, self.backoff_initial * (2.0**exponent))
