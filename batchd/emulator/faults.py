"""The emulator's fault profile: which calls fail, how results break, how requests end.

A profile comes from flags, a JSON or TOML file, or `POST /_emulator/profile`; draws are seeded.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchd.errors import ConfigError

# Operations the call faults can name: the six batch endpoints, then the other routes.
BATCH_OPERATIONS = ("create", "retrieve", "list", "cancel", "delete", "results")
OPERATIONS = (*BATCH_OPERATIONS, "messages", "count_tokens", "models")
# Moments of a batch's life a transient 404 may hit (see `transient_404_*`).
TRANSIENT_404_PHASES = ("create", "midlife", "results")
# Usage tiers with published Message Batches limits (see `limits.BATCH_TIERS`).
TIERS = (1, 2, 3, 4)

# Result codes drawn when a batch is created, before any cancel or expiry is known.
DRAW_SUCCEEDED = 0
DRAW_API_ERROR = 1
DRAW_OVERLOADED = 2
DRAW_EXPIRED = 3


@dataclass(frozen=True)
class FaultProfile:
    """Timings and fault rates; every rate is a fraction of calls (or requests) in [0, 1].

    Times named `*_time` are on the emulator clock (scaled); `slow_seconds`, `retry_after`,
    `transient_404_seconds`, `list_lag` and `realtime_latency` are real seconds, since they
    are what a client waits for. `clock_offset` shifts every time the emulator reports.
    """

    seed: int | None = None
    processing_time: tuple[float, float] = (1.0, 1.0)
    cancel_time: float = 1.0
    http_429_rate: float = 0.0
    http_500_rate: float = 0.0
    http_529_rate: float = 0.0
    retry_after: float = 1.0
    slow_rate: float = 0.0
    slow_seconds: float = 2.0
    fault_operations: tuple[str, ...] = OPERATIONS
    create_lost_response_rate: float = 0.0
    create_lost_response_status: int = 0
    results_reset_rate: float = 0.0
    results_reset_after: float = 0.5
    results_reset_mode: str = "close"
    results_crlf: bool = False
    results_split_crlf: bool = False
    results_long_line_rate: float = 0.0
    results_long_line_bytes: int = 70_000
    result_api_error_rate: float = 0.0
    result_overloaded_rate: float = 0.0
    result_expired_rate: float = 0.0
    # Explicit limits; each overrides the `tier`'s number (None: the tier's, or none).
    max_processing_requests: int | None = None
    requests_per_minute: int | None = None
    # A usage tier (1-4): the published batch RPM and processing-queue cap, real-time limits.
    tier: int | None = None
    # Fraction of batches whose retrieve (and results) answer 404 for a while, then recover.
    transient_404_rate: float = 0.0
    # Real seconds each such 404 window lasts.
    transient_404_seconds: float = 2.0
    # When: right after create, once in mid-life, and/or to results right after the end.
    transient_404_phases: tuple[str, ...] = TRANSIENT_404_PHASES
    # Real seconds a new batch is absent from list after its create.
    list_lag: float = 0.0
    # Seconds added to every time the emulator reports (created_at, ...); may be negative.
    clock_offset: float = 0.0
    # Real seconds a real-time `POST /v1/messages` takes, as (min, max).
    realtime_latency: tuple[float, float] = (0.0, 0.0)
    # Fraction of real-time calls billed and then answered with a reset connection: the caller
    # cannot know whether it was billed.
    realtime_lost_response_rate: float = 0.0
    # results_url names an opaque download path instead of `/v1/messages/batches/{id}/results`.
    opaque_results_url: bool = False

    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], base: FaultProfile | None = None
    ) -> FaultProfile:
        """A profile from JSON-like data; keys not given keep their value in `base`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown fault profile keys: {', '.join(unknown)}", unknown)
        values: dict[str, Any] = {}
        problems: list[str] = []
        for name, raw in data.items():
            try:
                values[name] = _coerce(name, raw)
            except (TypeError, ValueError) as exc:
                problems.append(f"{name}: {exc}")
        profile = dataclasses.replace(base or cls(), **values)
        problems.extend(profile.problems())
        if problems:
            raise ConfigError("invalid fault profile: " + "; ".join(problems), problems)
        return profile

    def problems(self) -> list[str]:
        found = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_rate") and not 0.0 <= value <= 1.0:
                found.append(f"{f.name}: must be within [0, 1]")
        if self.http_429_rate + self.http_500_rate + self.http_529_rate > 1.0:
            found.append("http_429_rate + http_500_rate + http_529_rate must not exceed 1")
        draws = self.result_api_error_rate + self.result_overloaded_rate + self.result_expired_rate
        if draws > 1.0:
            found.append("result_*_rate together must not exceed 1")
        low, high = self.processing_time
        if not 0.0 <= low <= high:
            found.append("processing_time: need 0 <= MIN <= MAX")
        if self.cancel_time < 0 or self.slow_seconds < 0 or self.retry_after < 0:
            found.append("cancel_time, slow_seconds and retry_after must not be negative")
        if not 0.0 <= self.results_reset_after <= 1.0:
            found.append("results_reset_after: must be within [0, 1]")
        if self.results_reset_mode not in ("close", "rst"):
            found.append("results_reset_mode: 'close' or 'rst'")
        if bad := sorted(set(self.fault_operations) - set(OPERATIONS)):
            found.append(f"fault_operations: unknown {', '.join(bad)}")
        if bad := sorted(set(self.transient_404_phases) - set(TRANSIENT_404_PHASES)):
            found.append(f"transient_404_phases: unknown {', '.join(bad)}")
        if self.transient_404_seconds < 0 or self.list_lag < 0:
            found.append("transient_404_seconds and list_lag must not be negative")
        low, high = self.realtime_latency
        if not 0.0 <= low <= high:
            found.append("realtime_latency: need 0 <= MIN <= MAX")
        if self.tier is not None and self.tier not in TIERS:
            found.append(f"tier: one of {', '.join(map(str, TIERS))}")
        for name in ("requests_per_minute", "max_processing_requests"):
            value = getattr(self, name)
            if value is not None and value < 1:
                found.append(f"{name}: must be at least 1")
        if self.create_lost_response_status not in (0, 500, 502, 503, 504, 529):
            found.append("create_lost_response_status: 0 (reset) or one of 500, 502-504, 529")
        return found

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["processing_time"] = list(self.processing_time)
        out["fault_operations"] = list(self.fault_operations)
        out["transient_404_phases"] = list(self.transient_404_phases)
        out["realtime_latency"] = list(self.realtime_latency)
        return out


def _coerce(name: str, raw: Any) -> Any:
    """One profile value from JSON/TOML/flag form to the dataclass field's type."""
    if name in ("processing_time", "realtime_latency"):
        return parse_processing_time(raw)
    if name in ("fault_operations", "transient_404_phases"):
        if isinstance(raw, str):
            raw = [part for part in raw.split(",") if part]
        if not isinstance(raw, list | tuple) or not all(isinstance(x, str) for x in raw):
            raise TypeError("a list of names")
        return tuple(raw)
    if name in ("results_crlf", "results_split_crlf", "opaque_results_url"):
        if not isinstance(raw, bool):
            raise TypeError("true or false")
        return raw
    if name == "results_reset_mode":
        if not isinstance(raw, str):
            raise TypeError("a string")
        return raw
    if name in ("seed", "max_processing_requests", "requests_per_minute", "tier"):
        if raw is None:
            return None
        return _integer(raw)
    if name in ("create_lost_response_status", "results_long_line_bytes"):
        return _integer(raw)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise TypeError("a number")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("a finite number")
    return value


def _integer(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise TypeError("an integer")
    return raw


def parse_processing_time(raw: Any) -> tuple[float, float]:
    """`5`, `"5"`, `"1:10"` or `[1, 10]` as (min, max) emulated seconds."""
    if isinstance(raw, str):
        parts = raw.split(":")
        if len(parts) > 2:
            raise ValueError("SECONDS or MIN:MAX")
        raw = [float(p) for p in parts]
    if isinstance(raw, bool):
        raise TypeError("a number or [MIN, MAX]")
    if isinstance(raw, int | float):
        return (float(raw), float(raw))
    if isinstance(raw, list | tuple) and len(raw) in (1, 2):
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in raw):
            raise TypeError("a number or [MIN, MAX]")
        return (float(raw[0]), float(raw[-1]))
    raise TypeError("a number or [MIN, MAX]")


def load_profile(path: Path, base: FaultProfile | None = None) -> FaultProfile:
    """A profile from a `.json` or `.toml` file (TOML for anything not ending in .json)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read fault profile {path}: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"fault profile {path} is not valid: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"fault profile {path} must hold an object")
    return FaultProfile.from_mapping(data, base)


class FaultInjector:
    """Seeded draws against the current profile; one random stream for HTTP-level faults."""

    def __init__(self, profile: FaultProfile) -> None:
        self.profile = profile
        self.seed = profile.seed if profile.seed is not None else random.randrange(2**63)
        self.rng = random.Random(self.seed)

    def applies(self, operation: str) -> bool:
        return operation in self.profile.fault_operations

    def slow(self, operation: str) -> float:
        """Real seconds to stall this call (0 for no stall)."""
        p = self.profile
        if p.slow_rate and self.applies(operation) and self.rng.random() < p.slow_rate:
            return p.slow_seconds
        return 0.0

    def status(self, operation: str) -> int:
        """An HTTP error status to answer this call with instead of serving it, or 0."""
        p = self.profile
        total = p.http_429_rate + p.http_500_rate + p.http_529_rate
        if not total or not self.applies(operation):
            return 0
        r = self.rng.random()
        if r < p.http_429_rate:
            return 429
        if r < p.http_429_rate + p.http_500_rate:
            return 500
        if r < total:
            return 529
        return 0

    def lose_create_response(self) -> bool:
        p = self.profile
        rate = p.create_lost_response_rate
        return bool(rate) and self.applies("create") and self.rng.random() < rate

    def reset_results(self) -> bool:
        rate = self.profile.results_reset_rate
        return bool(rate) and self.applies("results") and self.rng.random() < rate

    def lose_realtime_response(self) -> bool:
        rate = self.profile.realtime_lost_response_rate
        return bool(rate) and self.applies("messages") and self.rng.random() < rate

    def realtime_latency(self) -> float:
        """Real seconds to hold one real-time call before answering it."""
        low, high = self.profile.realtime_latency
        return low if low == high else self.rng.uniform(low, high)

    def batch_seed(self, sequence: int) -> str:
        """The seed of one batch's own draws, so they do not depend on HTTP traffic."""
        return f"{self.seed}:{sequence}"
