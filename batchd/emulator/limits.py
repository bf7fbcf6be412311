"""Rate limits as the API publishes them per usage tier, and the token buckets that enforce them.

The Message Batches API has its own limits per workspace: requests per minute over all its
endpoints and a cap on batch requests in the processing queue. The real-time routes have theirs.
Limits refill continuously (a token bucket), as the API's do.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from batchd.emulator.faults import FaultProfile

# Message Batches API per tier: (requests per minute, batch requests in the processing queue).
BATCH_TIERS: dict[int, tuple[int, int]] = {
    1: (50, 100_000),
    2: (1_000, 200_000),
    3: (2_000, 300_000),
    4: (4_000, 500_000),
}
# Messages API per tier (Claude Sonnet/Opus 4.x row): (RPM, input tokens/min, output tokens/min).
REALTIME_TIERS: dict[int, tuple[int, int, int]] = {
    1: (50, 30_000, 8_000),
    2: (1_000, 450_000, 90_000),
    3: (2_000, 800_000, 160_000),
    4: (4_000, 2_000_000, 400_000),
}
# Token counting requests per minute per tier.
COUNT_TOKENS_TIERS: dict[int, int] = {1: 100, 2: 2_000, 3: 4_000, 4: 8_000}
# What the rate-limit headers report where no limit is enforced (no tier, no override).
NOMINAL_LIMIT = 1_000_000
RATE_LIMIT_DOCS = "https://docs.anthropic.com/en/api/rate-limits"


@dataclass(frozen=True)
class Limits:
    """The limits in force for one profile; None where nothing is enforced."""

    batch_rpm: int | None
    processing_cap: int | None
    realtime_rpm: int | None
    input_tpm: int | None
    output_tpm: int | None
    count_rpm: int | None

    @classmethod
    def of(cls, profile: FaultProfile) -> Limits:
        tier = profile.tier
        batch = BATCH_TIERS.get(tier) if tier is not None else None
        realtime = REALTIME_TIERS.get(tier) if tier is not None else None
        return cls(
            batch_rpm=profile.requests_per_minute or (batch[0] if batch else None),
            processing_cap=profile.max_processing_requests or (batch[1] if batch else None),
            realtime_rpm=realtime[0] if realtime else None,
            input_tpm=realtime[1] if realtime else None,
            output_tpm=realtime[2] if realtime else None,
            count_rpm=COUNT_TOKENS_TIERS.get(tier) if tier is not None else None,
        )


class Bucket:
    """A token bucket of `limit` per minute, refilled continuously; real (monotonic) time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.level = float(limit)
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.level = min(float(self.limit), self.level + (now - self.stamp) * self.limit / 60.0)
        self.stamp = now

    def take(self, amount: float = 1.0) -> float:
        """Take `amount`; 0 if it was there, else the seconds until it will be (nothing taken)."""
        self._refill()
        if self.level >= amount:
            self.level -= amount
            return 0.0
        return (amount - self.level) * 60.0 / self.limit

    def remaining(self) -> int:
        self._refill()
        return int(self.level)

    def seconds_to_full(self) -> float:
        self._refill()
        return (self.limit - self.level) * 60.0 / self.limit


class Buckets:
    """A workspace's buckets, one per (kind, limit), made when a limit first applies."""

    def __init__(self) -> None:
        self._buckets: dict[str, Bucket] = {}

    def get(self, kind: str, limit: int) -> Bucket:
        bucket = self._buckets.get(kind)
        if bucket is None or bucket.limit != limit:
            bucket = self._buckets[kind] = Bucket(limit)
        return bucket


def exceeded_message(organization_id: str, what: str) -> str:
    """The API's 429 message for a limit of `what` (e.g. "50 requests per minute")."""
    return (
        f"This request would exceed the rate limit for your organization ({organization_id})"
        f" of {what}. For details, refer to: {RATE_LIMIT_DOCS}. You can see the response"
        " headers for current usage. Please reduce the prompt length or the maximum tokens"
        " requested, or try again later. You may also contact sales at"
        " https://www.anthropic.com/contact-sales to discuss your options for a rate limit"
        " increase."
    )
