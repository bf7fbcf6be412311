"""The rate-limit state the API reports on its answers: `anthropic-ratelimit-*` and retry-after.

Parsed from every answer (successes and errors alike), so status and metrics can show it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from batchd.api.retry import parse_retry_after

PREFIX = "anthropic-ratelimit-"

#: Which limits an operation counts against: the Batches API, the Messages API and token
#: counting have separate limits, so one's headers must not overwrite another's.
SCOPES: dict[str, str] = {
    "create": "batches",
    "retrieve": "batches",
    "list": "batches",
    "cancel": "batches",
    "delete": "batches",
    "results": "batches",
    "messages": "messages",
    "count_tokens": "count_tokens",
    "list_models": "models",
    "retrieve_model": "models",
}

# `anthropic-ratelimit-<window>-<field>`; windows today: requests, tokens, input-tokens,
# output-tokens (and e.g. `unified` on other products), so any window name is accepted.
_HEADER = re.compile(r"anthropic-ratelimit-([a-z0-9-]+?)-(limit|remaining|reset)")


@dataclass(frozen=True, slots=True)
class LimitWindow:
    """One limit: its size, what is left of it, and when it is whole again (None when absent)."""

    limit: int | None = None
    remaining: int | None = None
    reset: datetime | None = None


@dataclass(frozen=True, slots=True)
class RateLimit:
    """What one answer said about the account's limits.

    `windows` is keyed by the header's window name (`requests`, `tokens`, `input-tokens`,
    `output-tokens`, ...); `retry_after` is in seconds (from `retry-after-ms` or `retry-after`);
    `raw` keeps every `anthropic-ratelimit-*` header exactly as sent.
    """

    operation: str
    scope: str
    status: int
    windows: Mapping[str, LimitWindow]
    retry_after: float | None
    raw: Mapping[str, str]
    #: Unix time the answer was received.
    observed_at: float = field(default_factory=time.time)

    @property
    def requests(self) -> LimitWindow | None:
        return self.windows.get("requests")

    @property
    def tokens(self) -> LimitWindow | None:
        return self.windows.get("tokens")

    @property
    def input_tokens(self) -> LimitWindow | None:
        return self.windows.get("input-tokens")

    @property
    def output_tokens(self) -> LimitWindow | None:
        return self.windows.get("output-tokens")

    @classmethod
    def from_headers(
        cls, headers: Mapping[str, str], *, operation: str, status: int
    ) -> RateLimit | None:
        """The rate-limit state in an answer's headers, or None when it carries none.

        Values that do not parse are kept in `raw` but read as None, never as an error: a
        proxy's odd header must not fail the call it came with.
        """
        raw: dict[str, str] = {}
        fields: dict[str, dict[str, str]] = {}
        for name, value in headers.items():
            lowered = name.lower()
            if not lowered.startswith(PREFIX):
                continue
            raw[lowered] = value
            match = _HEADER.fullmatch(lowered)
            if match is not None:
                fields.setdefault(match.group(1), {})[match.group(2)] = value
        retry_after = parse_retry_after(headers)
        if not raw and retry_after is None:
            return None
        windows = {
            window: LimitWindow(
                limit=_count(values.get("limit")),
                remaining=_count(values.get("remaining")),
                reset=_instant(values.get("reset")),
            )
            for window, values in fields.items()
        }
        return cls(
            operation=operation,
            scope=SCOPES.get(operation, operation),
            status=status,
            windows=windows,
            retry_after=retry_after,
            raw=raw,
        )


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = int(value.strip())
    except ValueError:
        return None
    return number if number >= 0 else None


def _instant(value: str | None) -> datetime | None:
    """An RFC 3339 time (what the API sends), or unix seconds (what some gateways send)."""
    if value is None:
        return None
    text = value.strip()
    try:
        if text.isdigit():
            return datetime.fromtimestamp(int(text), UTC)
        when = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        return None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
