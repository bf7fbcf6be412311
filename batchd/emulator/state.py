"""The emulated world: a scalable clock, workspaces (one per API key), batches and the audit.

Batch progress is computed from the clock when asked, never by timers: a batch's end time is
known at creation (or at cancel), and its outcome is fixed once that time has passed.
"""

from __future__ import annotations

import random
import secrets
import string
import time
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from batchd.emulator.config import EmulatorConfig, workspace_id_for
from batchd.emulator.faults import (
    DRAW_API_ERROR,
    DRAW_EXPIRED,
    DRAW_OVERLOADED,
    DRAW_SUCCEEDED,
    FaultInjector,
    FaultProfile,
)
from batchd.emulator.messages import ParsedBatch

# Final outcome of one request, fixed when its batch ends.
SUCCEEDED = 0
ERRORED = 1
CANCELED = 2
EXPIRED = 3
OUTCOME_NAMES = ("succeeded", "errored", "canceled", "expired")

_ALPHABET = string.ascii_letters + string.digits
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def rfc3339(t: float) -> str:
    """Emulated epoch seconds as the API writes times: UTC, microseconds, `Z`."""
    # Whole microseconds first: float sums like created + 0.1 must not lose one to truncation.
    stamp = _EPOCH + timedelta(microseconds=round(t * 1_000_000))
    return stamp.isoformat(timespec="microseconds").replace("+00:00", "Z")


def random_id(prefix: str, length: int = 24) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


class ApiFailure(Exception):
    """An answer the API gives as an HTTP error: status, error type, message."""

    def __init__(
        self, status: int, error_type: str, message: str, *, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.error_type = error_type
        self.message = message
        self.retry_after = retry_after


class Clock:
    """Emulated time: runs `scale` times as fast as real time and can jump forward.

    Scale 0 stops it, so only `advance` moves it: handy for tests that step through a lifecycle.
    """

    def __init__(self, scale: float = 1.0, start: float | None = None) -> None:
        if scale < 0:
            raise ValueError("clock scale must not be negative")
        self._scale = scale
        self._real = time.monotonic()
        self._emulated = time.time() if start is None else start

    @property
    def scale(self) -> float:
        return self._scale

    def now(self) -> float:
        return self._emulated + (time.monotonic() - self._real) * self._scale

    def set_scale(self, scale: float) -> None:
        if scale < 0:
            raise ValueError("clock scale must not be negative")
        # Rebase so emulated time is continuous across the change.
        self._emulated = self.now()
        self._real = time.monotonic()
        self._scale = scale

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._emulated += seconds


class Batch:
    """One message batch: its requests, its fixed timeline and, once ended, its outcomes."""

    def __init__(
        self,
        *,
        batch_id: str,
        sequence: int,
        created: float,
        parsed: ParsedBatch,
        profile: FaultProfile,
        seed: str,
        expiry: float,
        retention: float,
    ) -> None:
        self.id = batch_id
        self.sequence = sequence
        self.created = created
        self.expires = created + expiry
        self.retention = retention
        self.size = len(parsed)
        self.requests: ParsedBatch | None = parsed
        self.seed = seed
        self.cancel_initiated: float | None = None
        self.final: bytearray | None = None
        self.counts: dict[str, int] | None = None
        self.order: array[int] | None = None
        self.deleted = False
        rng = random.Random(seed)
        low, high = profile.processing_time
        # Per-request processing time; None when all take the same time.
        self.durations: array[float] | None = None
        self.fixed_duration = low
        if low == high:
            longest = low
        else:
            self.durations = array("d", (rng.uniform(low, high) for _ in range(self.size)))
            longest = max(self.durations)
        self.draws: bytearray | None = None
        api, over, exp = (
            profile.result_api_error_rate,
            profile.result_overloaded_rate,
            profile.result_expired_rate,
        )
        if api or over or exp:
            self.draws = bytearray(self.size)
            for i in range(self.size):
                r = rng.random()
                if r < api:
                    self.draws[i] = DRAW_API_ERROR
                elif r < api + over:
                    self.draws[i] = DRAW_OVERLOADED
                elif r < api + over + exp:
                    self.draws[i] = DRAW_EXPIRED
        self.long_lines: frozenset[int] = frozenset()
        if profile.results_long_line_rate:
            rate = profile.results_long_line_rate
            self.long_lines = frozenset(i for i in range(self.size) if rng.random() < rate)
        self.long_line_bytes = profile.results_long_line_bytes
        self.end_time = min(created + longest, self.expires)
        if self.draws is not None and DRAW_EXPIRED in self.draws:
            # A request that never gets processed keeps its batch open until expiry.
            self.end_time = self.expires

    def ended(self, now: float) -> bool:
        return now >= self.end_time

    def status(self, now: float) -> str:
        if now >= self.end_time:
            return "ended"
        return "canceling" if self.cancel_initiated is not None else "in_progress"

    def archived_at(self) -> float:
        return max(self.created + self.retention, self.end_time)

    def archived(self, now: float) -> bool:
        return self.ended(now) and now >= self.archived_at()

    def cancel(self, now: float, cancel_time: float) -> None:
        self.cancel_initiated = now
        self.end_time = min(self.end_time, now + cancel_time)

    def finalize(self) -> dict[str, int]:
        """Fix every request's outcome (once) and return the final request_counts."""
        if self.counts is not None:
            return self.counts
        assert self.requests is not None
        invalid = self.requests.invalid
        final = bytearray(self.size)
        cancel = self.cancel_initiated
        draws = self.draws
        durations = self.durations
        for i in range(self.size):
            done = self.created + (durations[i] if durations is not None else self.fixed_duration)
            draw = draws[i] if draws is not None else DRAW_SUCCEEDED
            if cancel is not None and done > cancel:
                final[i] = CANCELED
            elif draw == DRAW_EXPIRED or done > self.expires:
                final[i] = EXPIRED
            elif i in invalid or draw in (DRAW_API_ERROR, DRAW_OVERLOADED):
                final[i] = ERRORED
        self.final = final
        counts = {name: 0 for name in ("processing", *OUTCOME_NAMES)}
        for code, name in enumerate(OUTCOME_NAMES):
            counts[name] = final.count(code)
        self.counts = counts
        return counts

    def request_counts(self, now: float) -> dict[str, int]:
        if self.ended(now):
            return self.finalize()
        return {"processing": self.size, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}

    def result_order(self) -> array[int]:
        """The order results are written in: shuffled once, the same on every download."""
        if self.order is None:
            indices = list(range(self.size))
            random.Random(self.seed + ":order").shuffle(indices)
            self.order = array("L", indices)
        return self.order

    def to_json(self, now: float, base_url: str) -> dict[str, Any]:
        ended = self.ended(now)
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status(now),
            "request_counts": self.request_counts(now),
            "created_at": rfc3339(self.created),
            "expires_at": rfc3339(self.expires),
            "ended_at": rfc3339(self.end_time) if ended else None,
            "archived_at": rfc3339(self.archived_at()) if self.archived(now) else None,
            "cancel_initiated_at": (
                rfc3339(self.cancel_initiated) if self.cancel_initiated is not None else None
            ),
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }

    def release(self) -> None:
        """Drop the per-request data of a deleted batch; the audit keeps only its timeline."""
        self.requests = None
        self.durations = None
        self.draws = None
        self.final = None
        self.order = None
        self.long_lines = frozenset()


@dataclass
class Audit:
    """What a chaos checker needs to know about one workspace, whatever batchd says."""

    batches_created: int = 0
    requests: int = 0
    billed: int = 0


class Workspace:
    """The batches one API key sees, newest last, and the audit of everything it submitted."""

    def __init__(self, api_key: str) -> None:
        self.id = workspace_id_for(api_key)
        self.key_hint = api_key[-4:]
        self.batches: dict[str, Batch] = {}
        self.audit = Audit()
        # custom_id -> every batch that held it (a bare Batch while there is only one).
        self.holders: dict[str, Batch | list[Batch]] = {}
        self.double_submitted: dict[str, None] = {}
        self.in_several: set[str] = set()
        self.billed_batches: set[str] = set()
        self.minute_start = time.monotonic()
        self.minute_calls = 0

    def processing(self, now: float) -> int:
        return sum(b.size for b in self.batches.values() if not b.ended(now))

    def record(self, batch: Batch, now: float) -> None:
        """Index the new batch's custom_ids; note those still live in another batch."""
        assert batch.requests is not None
        self.audit.batches_created += 1
        self.audit.requests += batch.size
        holders = self.holders
        for custom_id in batch.requests.custom_ids:
            held = holders.get(custom_id)
            if held is None:
                holders[custom_id] = batch
                continue
            others = held if isinstance(held, list) else [held]
            self.in_several.add(custom_id)
            if any(other.end_time > now for other in others):
                self.double_submitted[custom_id] = None
            holders[custom_id] = [*others, batch]

    def settle(self, now: float) -> None:
        """Finalize every batch that has ended, so `billed` counts their successes."""
        for batch in self.batches.values():
            self.bill(batch, now)

    def bill(self, batch: Batch, now: float) -> None:
        if batch.id not in self.billed_batches and batch.ended(now) and not batch.deleted:
            self.audit.billed += batch.finalize()["succeeded"]
            self.billed_batches.add(batch.id)

    def audit_json(self, now: float) -> dict[str, Any]:
        self.settle(now)
        return {
            "workspace_id": self.id,
            "key_hint": self.key_hint,
            "batches_created": self.audit.batches_created,
            "requests": self.audit.requests,
            "billed": self.audit.billed,
            "processing": self.processing(now),
            "double_submitted": list(self.double_submitted),
            "custom_ids_in_several_batches": len(self.in_several),
            # distinct custom_ids ever sent: `requests` minus this is how many were sent again
            "custom_ids": len(self.holders),
        }


class Emulator:
    """All state of one emulator process; used only from its event loop."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock(config.clock_scale)
        self.injector = FaultInjector(config.profile)
        self.workspaces = {key: Workspace(key) for key in config.api_keys}
        self.sequence = 0

    @property
    def profile(self) -> FaultProfile:
        return self.injector.profile

    def set_profile(self, profile: FaultProfile) -> None:
        self.injector = FaultInjector(profile)

    def reset(self) -> None:
        """Forget every batch and audit record; back to the startup profile and clock scale."""
        self.workspaces = {key: Workspace(key) for key in self.config.api_keys}
        self.injector = FaultInjector(self.config.profile)
        self.clock.set_scale(self.config.clock_scale)
        self.sequence = 0

    def now(self) -> float:
        return self.clock.now()

    def create(self, workspace: Workspace, parsed: ParsedBatch) -> Batch:
        now = self.now()
        cap = self.profile.max_processing_requests
        if cap is not None:
            processing = workspace.processing(now)
            if processing + len(parsed) > cap:
                raise ApiFailure(
                    429,
                    "rate_limit_error",
                    f"Number of requests processing ({processing}) plus this batch"
                    f" ({len(parsed)}) would exceed your limit of {cap} requests processing.",
                    retry_after=self.profile.retry_after,
                )
        self.sequence += 1
        batch = Batch(
            batch_id=random_id("msgbatch_"),
            sequence=self.sequence,
            created=now,
            parsed=parsed,
            profile=self.profile,
            seed=self.injector.batch_seed(self.sequence),
            expiry=self.config.expiry_seconds,
            retention=self.config.retention_seconds,
        )
        workspace.record(batch, now)
        workspace.batches[batch.id] = batch
        return batch

    def get(self, workspace: Workspace, batch_id: str) -> Batch:
        batch = workspace.batches.get(batch_id)
        if batch is None:
            raise ApiFailure(404, "not_found_error", f"Message batch {batch_id} not found.")
        workspace.bill(batch, self.now())
        return batch

    def cancel(self, workspace: Workspace, batch_id: str) -> Batch:
        batch = self.get(workspace, batch_id)
        now = self.now()
        if batch.ended(now):
            raise ApiFailure(
                400,
                "invalid_request_error",
                f"Message batch {batch_id} has already ended and can no longer be canceled.",
            )
        if batch.cancel_initiated is None:
            batch.cancel(now, self.profile.cancel_time)
        return batch

    def delete(self, workspace: Workspace, batch_id: str) -> None:
        batch = self.get(workspace, batch_id)
        if not batch.ended(self.now()):
            raise ApiFailure(
                400,
                "invalid_request_error",
                f"Message batch {batch_id} cannot be deleted while it is"
                f" {batch.status(self.now())}; cancel it and wait for it to end first.",
            )
        del workspace.batches[batch_id]
        batch.deleted = True
        batch.release()

    def page(
        self, workspace: Workspace, *, limit: int, before_id: str | None, after_id: str | None
    ) -> tuple[list[Batch], bool]:
        """One page of the workspace's batches, newest first, and whether more lie beyond."""
        newest_first = list(reversed(workspace.batches.values()))
        if after_id is not None:
            start = self._position(newest_first, after_id, "after_id") + 1
            page = newest_first[start : start + limit]
            return page, start + limit < len(newest_first)
        if before_id is not None:
            end = self._position(newest_first, before_id, "before_id")
            start = max(0, end - limit)
            return newest_first[start:end], start > 0
        return newest_first[:limit], limit < len(newest_first)

    @staticmethod
    def _position(batches: list[Batch], batch_id: str, name: str) -> int:
        for i, batch in enumerate(batches):
            if batch.id == batch_id:
                return i
        raise ApiFailure(
            400, "invalid_request_error", f"{name}: no message batch {batch_id} in this workspace"
        )

    def audit(self) -> dict[str, Any]:
        now = self.now()
        workspaces = [ws.audit_json(now) for ws in self.workspaces.values()]
        return {
            "now": rfc3339(now),
            "workspaces": workspaces,
            "totals": {
                key: sum(w[key] for w in workspaces)
                for key in ("batches_created", "requests", "billed")
            }
            | {"double_submitted": sum(len(w["double_submitted"]) for w in workspaces)},
        }
