"""The cluster's state as Redis holds it, read in two round trips: lanes, assemblies, counters.

Redis is the source of truth for everything every replica shares, so /metrics and `batchd status`
both read it from here rather than counting it in one process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from batchd.keys import Keys
from batchd.store import text

TERMINAL_STATUSES = ("succeeded", "errored", "canceled", "expired", "rejected", "dead")
#: How a created batch ended: its results fanned out (completed, or canceled by an operator), or
#: its results could not be had (vanished from the API, archived before fan-out).
BATCH_OUTCOMES = ("completed", "canceled", "vanished", "archived")
ASSEMBLY_STATES = ("assembling", "sealed", "submitting", "submitted", "ended")
#: Assembly states in which its batch exists at the API and is not closed yet.
IN_FLIGHT_STATES = ("submitted", "ended")
REQUEST_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")
#: A `batchd run` whose heartbeat (every 0.5 s) is older than this counts as gone.
PROCESS_ALIVE_MS = 10_000


@dataclass(frozen=True)
class LaneState:
    account: str
    priority: int
    pending: int
    bytes: int
    oldest_age_s: float | None


@dataclass(frozen=True)
class AssemblyState:
    account: str
    assembly: str
    state: str
    batch_id: str | None
    requests: int
    bytes: int
    polls: int
    age_s: float | None
    """Seconds since the batch was created (since the claim, before that)."""
    counts: dict[str, int]
    """The batch's request_counts at its last poll; empty before the first."""

    @property
    def in_flight(self) -> bool:
        return self.state in IN_FLIGHT_STATES

    @property
    def finished(self) -> int:
        """Requests the API reports as done (0 until the batch ends: the API counts at the end)."""
        return sum(self.counts.get(k, 0) for k in REQUEST_COUNTS[1:])


@dataclass(frozen=True)
class ProcessState:
    identity: str
    age_s: float


@dataclass
class Snapshot:
    now_ms: int
    lanes: list[LaneState] = field(default_factory=list)
    assemblies: list[AssemblyState] = field(default_factory=list)
    dead: dict[str, int] = field(default_factory=dict)
    webhooks_queued: dict[str, int] = field(default_factory=dict)
    webhooks_dead: dict[str, int] = field(default_factory=dict)
    paused: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    processes: list[ProcessState] = field(default_factory=list)

    def counter(self, name: str) -> int:
        return self.counters.get(name, 0)


def read(client: redis.Redis, keys: Keys, accounts: Iterable[str]) -> Snapshot:
    """Read the whole picture; raises redis.RedisError when Redis cannot be reached."""
    names = list(accounts)
    pipe = client.pipeline(transaction=False)
    pipe.time()
    pipe.hgetall(keys.counters())
    pipe.zrange(keys.processes(), 0, -1, withscores=True)
    for account in names:
        pipe.smembers(keys.lanes(account))
        pipe.zrange(keys.assemblies(account), 0, -1)
        pipe.zcard(keys.dead(account))
        pipe.zcard(keys.deliveries_due(account))
        pipe.zcard(keys.deliveries_dead(account))
        pipe.get(keys.paused(account))
    first: list[Any] = pipe.execute()
    (sec, usec), counters, procs = first[0], first[1], first[2]
    now = int(sec) * 1000 + int(usec) // 1000
    snap = Snapshot(now_ms=now)
    snap.counters = {text(k): int(v) for k, v in counters.items()}
    for member, score in procs:
        if now - score <= PROCESS_ALIVE_MS:
            snap.processes.append(ProcessState(text(member), max(0.0, (now - score) / 1000)))

    lanes: list[tuple[str, int]] = []
    assemblies: list[tuple[str, str]] = []
    per_account = first[3:]
    for i, account in enumerate(names):
        prios, asms, dead, wh_due, wh_dead, paused = per_account[i * 6 : i * 6 + 6]
        lanes += [(account, int(text(p))) for p in prios if text(p).isdigit()]
        assemblies += [(account, text(a)) for a in asms]
        snap.dead[account] = int(dead)
        snap.webhooks_queued[account] = int(wh_due)
        snap.webhooks_dead[account] = int(wh_dead)
        if paused:
            snap.paused[account] = text(paused)
    lanes.sort(key=lambda lane: (lane[0], -lane[1]))

    pipe = client.pipeline(transaction=False)
    for account, prio in lanes:
        pipe.hmget(keys.lane_stats(account, prio), "count", "bytes")
        pipe.lindex(keys.pending(account, prio), 0)
    for account, asm in assemblies:
        pipe.hgetall(keys.assembly(account, asm))
    second: list[Any] = pipe.execute() if lanes or assemblies else []

    for i, (account, prio) in enumerate(lanes):
        (count, nbytes), head = second[2 * i], second[2 * i + 1]
        snap.lanes.append(
            LaneState(account, prio, int(count or 0), int(nbytes or 0), _age(head, now))
        )
    for (account, asm), raw in zip(assemblies, second[2 * len(lanes) :], strict=True):
        if raw:
            snap.assemblies.append(_assembly(account, asm, raw, now))
    return snap


def _age(head: Any, now_ms: int) -> float | None:
    """Seconds the lane's oldest entry (`<token> <size> <enqueued ms>`) has waited."""
    if not head:
        return None
    parts = text(head).split(" ")
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return max(0.0, (now_ms - int(parts[2])) / 1000)


def _assembly(account: str, asm: str, raw: dict[Any, Any], now_ms: int) -> AssemblyState:
    a = {text(k): text(v) for k, v in raw.items()}

    def num(name: str) -> int:
        value = a.get(name, "")
        return int(value) if value.lstrip("-").isdigit() else 0

    since = num("submitted") or num("created")
    counts = {k: num(k) for k in REQUEST_COUNTS if k in a}
    if a.get("st") == "ended":
        counts["processing"] = 0  # the end's counts are final; a poll's processing is stale
    return AssemblyState(
        account=account,
        assembly=asm,
        state=a.get("st", ""),
        batch_id=a.get("bid") or None,
        requests=num("cnt"),
        bytes=num("clen"),
        polls=num("polls"),
        age_s=max(0.0, (now_ms - since) / 1000) if since else None,
        counts=counts,
    )
