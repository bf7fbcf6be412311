"""RetryPolicy: which failures are retried, retry-after parsing and capping, backoff bounds."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from batchd.api import RetryPolicy, parse_retry_after
from batchd.settings import ApiSettings

NOW = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after": "7"}, 7.0),
        ({"retry-after": " 1.5 "}, 1.5),
        ({"retry-after": "0"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "9"}, 9.0),
        ({"retry-after": format_datetime(NOW + timedelta(seconds=30), usegmt=True)}, 30.0),
        ({"retry-after": format_datetime(NOW - timedelta(seconds=30), usegmt=True)}, 0.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:00"}, 0.0),
        ({"retry-after": "-3"}, None),
        ({"retry-after": "nan"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after": ""}, None),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    """Seconds, milliseconds and HTTP-dates are understood; junk counts as absent."""
    assert parse_retry_after(headers, now=NOW) == expected


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529, 599])
def test_retryable_statuses(status: int) -> None:
    """408, 409, 429 and every 5xx are retried."""
    assert RetryPolicy().is_retryable(status)


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422, 302])
def test_final_statuses(status: int) -> None:
    """Other statuses are final."""
    assert not RetryPolicy().is_retryable(status)


def test_connection_errors_are_retryable() -> None:
    """No HTTP answer at all is worth another try."""
    assert RetryPolicy().is_retryable(None)


@pytest.mark.parametrize(
    ("status", "header", "expected"),
    [(400, "true", True), (500, "false", False), (429, "FALSE", False), (500, "maybe", True)],
)
def test_x_should_retry_overrides_the_status(status: int, header: str, expected: bool) -> None:
    """The server's `x-should-retry` verdict wins over the status rule."""
    assert RetryPolicy().is_retryable(status, {"x-should-retry": header}) is expected


def test_retry_after_is_honoured_and_capped() -> None:
    """A server-given wait is used as is, up to retry_after_max, and never negative."""
    policy = RetryPolicy(retry_after_max=60.0)
    assert policy.delay(0, 12.5) == 12.5
    assert policy.delay(3, 600.0) == 60.0
    assert policy.delay(0, 0.0) == 0.0
    assert policy.delay(0, -1.0) == 0.0


def test_backoff_caps_double_up_to_the_maximum() -> None:
    """The jitter window starts at backoff_initial and doubles up to backoff_max."""
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=8.0)
    assert [policy.backoff_cap(n) for n in range(7)] == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert policy.backoff_cap(10_000) == 8.0


@pytest.mark.parametrize("retry", [0, 1, 2, 5, 40])
def test_full_jitter_stays_within_bounds_and_spreads(retry: int) -> None:
    """Each wait is uniform in [0, cap]: in bounds, and not all the same."""
    policy = RetryPolicy(backoff_initial=0.5, backoff_max=8.0)
    cap = policy.backoff_cap(retry)
    waits = [policy.delay(retry) for _ in range(2000)]
    assert all(0.0 <= w <= cap for w in waits)
    assert max(waits) > cap * 0.9
    assert min(waits) < cap * 0.1


def test_from_settings_copies_every_field() -> None:
    """The policy takes its numbers from ApiSettings."""
    api = ApiSettings(max_retries=7, backoff_initial=0.1, backoff_max=3.0, retry_after_max=20.0)
    assert RetryPolicy.from_settings(api) == RetryPolicy(7, 0.1, 3.0, 20.0)


def test_defaults_match_the_sdk() -> None:
    """The defaults are the official SDK's: 4 retries, 0.5 s doubling to 8 s, 60 s cap."""
    assert RetryPolicy() == RetryPolicy.from_settings(ApiSettings())
    assert RetryPolicy() == RetryPolicy(4, 0.5, 8.0, 60.0)
