"""Rate-limit headers: parsed into RateLimit, kept per scope, given to on_rate_limit, always."""

from __future__ import annotations

from datetime import UTC, datetime

from batchd.api import LimitWindow, RateLimit

HEADERS = {
    "anthropic-ratelimit-requests-limit": "1000",
    "anthropic-ratelimit-requests-remaining": "999",
    "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
    "anthropic-ratelimit-tokens-limit": "96000",
    "anthropic-ratelimit-tokens-remaining": "95000",
    "anthropic-ratelimit-tokens-reset": "2025-08-21T12:41:00Z",
    "anthropic-ratelimit-input-tokens-limit": "80000",
    "anthropic-ratelimit-input-tokens-remaining": "79000",
    "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:59Z",
    "anthropic-ratelimit-output-tokens-limit": "16000",
    "anthropic-ratelimit-output-tokens-remaining": "15000",
    "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:41:00Z",
}


def test_every_documented_window_is_parsed() -> None:
    """requests, tokens, input and output tokens: limit, remaining and reset as typed values."""
    limits = RateLimit.from_headers(HEADERS, operation="messages", status=200)
    assert limits is not None
    assert limits.scope == "messages"
    assert limits.requests == LimitWindow(1000, 999, datetime(2025, 8, 21, 12, 40, 59, tzinfo=UTC))
    assert limits.tokens == LimitWindow(96000, 95000, datetime(2025, 8, 21, 12, 41, tzinfo=UTC))
    assert limits.input_tokens is not None and limits.input_tokens.remaining == 79000
    assert limits.output_tokens is not None and limits.output_tokens.limit == 16000
    assert limits.retry_after is None
    assert dict(limits.raw) == HEADERS


def test_retry_after_alone_is_a_rate_limit() -> None:
    """A 429 with only retry-after still reports when to come back."""
    limits = RateLimit.from_headers({"retry-after": "7"}, operation="list", status=429)
    assert limits is not None
    assert limits.retry_after == 7.0
    assert limits.scope == "batches"
    assert limits.windows == {}


def test_retry_after_ms_wins_over_retry_after() -> None:
    """retry-after-ms is the finer of the two and is preferred."""
    limits = RateLimit.from_headers(
        {"retry-after": "7", "retry-after-ms": "1500"}, operation="create", status=429
    )
    assert limits is not None and limits.retry_after == 1.5


def test_no_headers_no_rate_limit() -> None:
    """An answer without any of these headers reports nothing."""
    assert RateLimit.from_headers({"request-id": "r"}, operation="list", status=200) is None


def test_unparsable_values_read_as_none_but_stay_raw() -> None:
    """A proxy's odd values never fail the call: they read as None and stay in raw."""
    odd = {
        "anthropic-ratelimit-requests-limit": "lots",
        "anthropic-ratelimit-requests-remaining": "-3",
        "anthropic-ratelimit-requests-reset": "soon",
        "anthropic-ratelimit-unified-reset": "1755780059",
    }
    limits = RateLimit.from_headers(odd, operation="list", status=200)
    assert limits is not None
    assert limits.requests == LimitWindow(None, None, None)
    unified = limits.windows["unified"]
    assert unified.reset == datetime.fromtimestamp(1755780059, UTC)
    assert dict(limits.raw) == odd
