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

from batchd.emulator.catalog import find_model
from batchd.emulator.config import (
    DOCUMENTED_RESULTS_PATH,
    OPAQUE_RESULTS_PATH,
    EmulatorConfig,
    workspace_id_for,
)
from batchd.emulator.faults import (
    DRAW_API_ERROR,
    DRAW_EXPIRED,
    DRAW_OVERLOADED,
    DRAW_SUCCEEDED,
    FaultInjector,
    FaultProfile,
)
from batchd.emulator.limits import Buckets, Limits, exceeded_message
from batchd.emulator.messages import ParsedBatch
from batchd.emulator.usage import CacheUse, PromptCache

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
        cache: PromptCache | None = None,
        betas: tuple[str, ...] = (),
    ) -> None:
        self.id = batch_id
        # The `anthropic-beta` names the batch was created with (the admin readout shows them).
        self.betas = betas
        self.sequence = sequence
        self.created = created
        # Real (monotonic) time of creation: list lag and transient 404s run on real time.
        self.real_created = time.monotonic()
        self.cache = cache if cache is not None else PromptCache()
        self.cache_uses: dict[int, CacheUse] = {}
        # Opaque token of the download path `results_url` may name instead of the documented one.
        self.download_token = secrets.token_urlsafe(18)
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
        self.kept_ids: list[str] = []
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
        # When list first shows it (real time): the list lag in force at its creation.
        self.listed_from = self.real_created + profile.list_lag
        # Transient 404s: drawn on a stream of their own, so other draws stay as they were.
        flaky = random.Random(seed + ":404").random() < profile.transient_404_rate
        self.flaky_phases = frozenset(profile.transient_404_phases) if flaky else frozenset()
        self.flaky_seconds = profile.transient_404_seconds
        # Real time each later 404 window opened (mid-life, results), once it has.
        self.midlife_404_at: float | None = None
        self.results_404_at: float | None = None

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
        self._settle_cache(final)
        counts = {name: 0 for name in ("processing", *OUTCOME_NAMES)}
        for code, name in enumerate(OUTCOME_NAMES):
            counts[name] = final.count(code)
        self.counts = counts
        return counts

    def done_at(self, i: int) -> float:
        """When request `i` finished processing (or would have)."""
        durations = self.durations
        return self.created + (durations[i] if durations is not None else self.fixed_duration)

    def _settle_cache(self, final: bytearray) -> None:
        """Split the input tokens of succeeded requests with cache breakpoints, in done order."""
        assert self.requests is not None
        prompts = self.requests.prompts
        for i in sorted(prompts, key=self.done_at):
            if final[i] != SUCCEEDED:
                continue
            entry = find_model(self.requests.models[i])
            minimum = entry.min_cache_tokens if entry is not None else 1024
            self.cache_uses[i] = self.cache.use(prompts[i], minimum, self.done_at(i))

    def queued(self, now: float) -> int:
        """Requests of this batch still in the processing queue (not yet processed)."""
        if self.ended(now):
            return 0
        if self.durations is None and self.draws is None:
            return self.size if now < self.created + self.fixed_duration else 0
        draws = self.draws
        return sum(
            1
            for i in range(self.size)
            if (draws is not None and draws[i] == DRAW_EXPIRED) or self.done_at(i) > now
        )

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

    def results_path(self, opaque: bool) -> str:
        if opaque:
            return OPAQUE_RESULTS_PATH.format(token=self.download_token)
        return DOCUMENTED_RESULTS_PATH.format(batch_id=self.id)

    def to_json(
        self, now: float, base_url: str, *, offset: float = 0.0, opaque: bool = False
    ) -> dict[str, Any]:
        """The MessageBatch object; every time shifted by `offset` (the server's clock skew)."""
        ended = self.ended(now)
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.status(now),
            "request_counts": self.request_counts(now),
            "created_at": rfc3339(self.created + offset),
            "expires_at": rfc3339(self.expires + offset),
            "ended_at": rfc3339(self.end_time + offset) if ended else None,
            "archived_at": rfc3339(self.archived_at() + offset) if self.archived(now) else None,
            "cancel_initiated_at": (
                rfc3339(self.cancel_initiated + offset)
                if self.cancel_initiated is not None
                else None
            ),
            "results_url": base_url + self.results_path(opaque) if ended else None,
        }

    def transient_404(self, phase: str, now: float, real: float) -> bool:
        """Whether a call in `phase` (retrieve or results) hits one of this batch's 404 windows.

        `create`: the first seconds after creation. `midlife`: seconds from the first retrieve
        after half its processing time. `results`: seconds from the first results download.
        """
        phases = self.flaky_phases
        if not phases:
            return False
        window = self.flaky_seconds
        if phase == "retrieve":
            if "create" in phases and real - self.real_created < window:
                return True
            if "midlife" in phases and not self.ended(now):
                if self.midlife_404_at is None:
                    if now - self.created < (self.end_time - self.created) / 2:
                        return False
                    self.midlife_404_at = real
                return real - self.midlife_404_at < window
            return False
        if phase == "results" and "results" in phases:
            if self.results_404_at is None:
                self.results_404_at = real
            return real - self.results_404_at < window
        return False

    def release(self) -> None:
        """Drop the per-request data of a deleted batch; the audit keeps its timeline, and
        which custom_ids succeeded (the strings are the audit's own already)."""
        if self.requests is not None:
            self.kept_ids = self.requests.custom_ids
        self.requests = None
        self.durations = None
        self.draws = None
        self.order = None
        self.cache_uses = {}
        self.long_lines = frozenset()

    def succeeded_ids(self) -> list[str]:
        """custom_ids of the requests that succeeded (finalized batches only)."""
        ids = self.requests.custom_ids if self.requests is not None else self.kept_ids
        final = self.final
        if final is None:
            return []
        return [cid for cid, code in zip(ids, final, strict=True) if code == SUCCEEDED]


@dataclass
class Audit:
    """What a chaos checker needs to know about one workspace, whatever batchd says."""

    batches_created: int = 0
    requests: int = 0
    billed: int = 0
    realtime_billed: int = 0
    transient_404s: int = 0


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
        self.buckets = Buckets()
        self.cache = PromptCache()
        # batchd-custom-id of each billed real-time call -> how many times it was billed.
        self.realtime_ids: dict[str, int] = {}
        # Results downloads by the path template they came through.
        self.downloads: dict[str, int] = {}
        # Opaque download token -> batch id.
        self.tokens: dict[str, str] = {}

    def processing(self, now: float) -> int:
        """Batch requests in the processing queue: not yet processed, whatever their batch."""
        return sum(b.queued(now) for b in self.batches.values())

    def bill_realtime(self, custom_id: str | None) -> None:
        self.audit.realtime_billed += 1
        if custom_id:
            self.realtime_ids[custom_id] = self.realtime_ids.get(custom_id, 0) + 1

    def billed_both_routes(self) -> list[str]:
        """custom_ids billed in real time that also succeeded in an ended batch."""
        both: list[str] = []
        for custom_id in self.realtime_ids:
            held = self.holders.get(custom_id)
            if held is None:
                continue
            for batch in held if isinstance(held, list) else [held]:
                if batch.id in self.billed_batches and custom_id in batch.succeeded_ids():
                    both.append(custom_id)
                    break
        return both

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
            "realtime_billed": self.audit.realtime_billed,
            "billed_both_routes": self.billed_both_routes(),
            "realtime_double_billed": [k for k, n in self.realtime_ids.items() if n > 1],
            "transient_404s": self.audit.transient_404s,
            "results_downloads": dict(self.downloads),
        }


class Emulator:
    """All state of one emulator process; used only from its event loop."""

    def __init__(self, config: EmulatorConfig) -> None:
        self.config = config
        self.clock = Clock(config.clock_scale)
        self.injector = FaultInjector(config.profile)
        self._limits = Limits.of(config.profile)
        self.workspaces = {key: Workspace(key) for key in config.api_keys}
        self.sequence = 0

    @property
    def profile(self) -> FaultProfile:
        return self.injector.profile

    @property
    def limits(self) -> Limits:
        return self._limits

    def set_profile(self, profile: FaultProfile) -> None:
        self.injector = FaultInjector(profile)
        self._limits = Limits.of(profile)

    def reset(self) -> None:
        """Forget every batch and audit record; back to the startup profile and clock scale."""
        self.workspaces = {key: Workspace(key) for key in self.config.api_keys}
        self.set_profile(self.config.profile)
        self.clock.set_scale(self.config.clock_scale)
        self.sequence = 0

    def now(self) -> float:
        return self.clock.now()

    def create(
        self, workspace: Workspace, parsed: ParsedBatch, betas: tuple[str, ...] = ()
    ) -> Batch:
        now = self.now()
        cap = self.limits.processing_cap
        if cap is not None:
            processing = workspace.processing(now)
            if processing + len(parsed) > cap:
                raise ApiFailure(
                    429,
                    "rate_limit_error",
                    exceeded_message(
                        self.config.organization_id,
                        f"{cap:,} batch requests in the processing queue"
                        f" ({processing:,} queued, {len(parsed):,} in this batch)",
                    ),
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
            cache=workspace.cache,
            betas=betas,
        )
        workspace.record(batch, now)
        workspace.batches[batch.id] = batch
        workspace.tokens[batch.download_token] = batch.id
        return batch

    def retrieve(self, workspace: Workspace, batch_id: str, phase: str = "retrieve") -> Batch:
        """`get` as retrieve and results see it: a flaky batch may answer 404 for a while."""
        batch = self.get(workspace, batch_id)
        if phase == "results" and not batch.ended(self.now()):
            return batch
        if batch.transient_404(phase, self.now(), time.monotonic()):
            workspace.audit.transient_404s += 1
            raise _not_found(batch_id)
        return batch

    def get(self, workspace: Workspace, batch_id: str) -> Batch:
        batch = workspace.batches.get(batch_id)
        if batch is None:
            raise _not_found(batch_id)
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
        """One page of the workspace's batches, newest first, and whether more lie beyond.

        A batch younger than the `list_lag` at its creation (real seconds) is not listed yet;
        a cursor naming one still pages from where it stands.
        """
        newest_first = list(reversed(workspace.batches.values()))
        real = time.monotonic()

        def shown(batches: list[Batch]) -> list[Batch]:
            return [b for b in batches if real >= b.listed_from]

        if after_id is not None:
            start = self._position(newest_first, after_id, "after_id") + 1
            older = shown(newest_first[start:])
            return older[:limit], len(older) > limit
        if before_id is not None:
            end = self._position(newest_first, before_id, "before_id")
            newer = shown(newest_first[:end])
            return newer[max(0, len(newer) - limit) :], len(newer) > limit
        visible = shown(newest_first)
        return visible[:limit], len(visible) > limit

    @staticmethod
    def _position(batches: list[Batch], batch_id: str, name: str) -> int:
        for i, batch in enumerate(batches):
            if batch.id == batch_id:
                return i
        raise ApiFailure(
            400, "invalid_request_error", f"{name}: no message batch {batch_id} in this workspace"
        )

    def batches(self) -> dict[str, Any]:
        """Every batch each workspace holds, oldest first: its id, size and the betas it was
        created with (what a test checks batchd's lanes against)."""
        return {
            "workspaces": [
                {
                    "workspace_id": ws.id,
                    "key_hint": ws.key_hint,
                    "batches": [
                        {"id": b.id, "requests": b.size, "betas": list(b.betas)}
                        for b in ws.batches.values()
                    ],
                }
                for ws in self.workspaces.values()
            ]
        }

    def audit(self) -> dict[str, Any]:
        now = self.now()
        workspaces = [ws.audit_json(now) for ws in self.workspaces.values()]
        return {
            "now": rfc3339(now),
            "workspaces": workspaces,
            "totals": {
                key: sum(w[key] for w in workspaces)
                for key in ("batches_created", "requests", "billed", "realtime_billed")
            }
            | {
                key: sum(len(w[key]) for w in workspaces)
                for key in ("double_submitted", "billed_both_routes", "realtime_double_billed")
            },
        }


def _not_found(batch_id: str) -> ApiFailure:
    return ApiFailure(404, "not_found_error", f"Message batch {batch_id} not found.")
