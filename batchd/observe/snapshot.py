"""The state of every replica's shared work as Redis holds it, read in a few round trips: lanes,
assemblies, counters, dead letters, outboxes, processes.

Redis is the source of truth for everything every replica shares, so /metrics and `batchd status`
both read it from here rather than counting it in one process.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from batchd.store import AssemblyRecord, Store
from batchd.store import assemblies as asm_store
from batchd.store import counters as counter_store
from batchd.store import lanes as lane_store
from batchd.store import replies as reply_store
from batchd.store import requests as req_store
from batchd.store import webhooks as wh_store
from batchd.store.records import (
    BATCH_OUTCOMES,
    REQUEST_COUNTS,
    AssemblyState,
    LaneId,
    RequestStatus,
)

TERMINAL_STATUSES = tuple(s.value for s in RequestStatus if s.terminal)
ASSEMBLY_STATES = tuple(s.value for s in AssemblyState if s is not AssemblyState.DONE)
IN_FLIGHT_STATES = tuple(s.value for s in AssemblyState if s.in_flight)

__all__ = [
    "ASSEMBLY_STATES",
    "BATCH_OUTCOMES",
    "IN_FLIGHT_STATES",
    "REQUEST_COUNTS",
    "TERMINAL_STATUSES",
    "AssemblyState",
    "LaneState",
    "ProcessState",
    "Snapshot",
    "read",
]


@dataclass(frozen=True)
class LaneState:
    account: str
    lane: str
    pending: int
    bytes: int
    oldest_age_s: float | None

    @property
    def priority(self) -> int:
        parsed = LaneId.parse(self.lane)
        return parsed.priority if parsed is not None else 0


@dataclass(frozen=True)
class AssemblyView:
    """An assembly as status and metrics show it."""

    record: AssemblyRecord
    age_s: float | None
    """Seconds since the batch was created (since the claim, before that)."""

    @property
    def account(self) -> str:
        return self.record.account

    @property
    def assembly(self) -> str:
        return self.record.id

    @property
    def state(self) -> str:
        return self.record.state.value if self.record.state is not None else "unknown"

    @property
    def batch_id(self) -> str | None:
        return self.record.batch_id

    @property
    def requests(self) -> int:
        return self.record.count

    @property
    def bytes(self) -> int:
        return self.record.content_length or self.record.bytes

    @property
    def polls(self) -> int:
        return self.record.polls

    @property
    def counts(self) -> dict[str, int]:
        return self.record.counts

    @property
    def in_flight(self) -> bool:
        return self.record.in_flight

    @property
    def finished(self) -> int:
        return self.record.finished


@dataclass(frozen=True)
class ProcessState:
    identity: str
    age_s: float


@dataclass
class Snapshot:
    now_ms: int
    lanes: list[LaneState] = field(default_factory=list)
    assemblies: list[AssemblyView] = field(default_factory=list)
    dead: dict[str, int] = field(default_factory=dict)
    webhooks_queued: dict[str, int] = field(default_factory=dict)
    webhooks_dead: dict[str, int] = field(default_factory=dict)
    replies_waiting: dict[str, int] = field(default_factory=dict)
    """Per account: replies ended but not on their reply queue yet (outbox)."""
    replies_parked: dict[str, int] = field(default_factory=dict)
    """Per account: replies whose queue refused them (a key of another type), retried."""
    reply_queues: dict[str, int] = field(default_factory=dict)
    """Per reply queue results went to lately: replies waiting on it for a consumer (its lag)."""
    paused: dict[str, str] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    by_account: dict[str, dict[str, int]] = field(default_factory=dict)
    processes: list[ProcessState] = field(default_factory=list)

    def counter(self, name: str) -> int:
        return self.counters.get(name, 0)

    def account_counter(self, account: str, name: str) -> int:
        return self.by_account.get(account, {}).get(name, 0)


def read(store: Store, accounts: Iterable[str]) -> Snapshot:
    """Read the whole picture; raises a BatchdError when Redis cannot be read."""
    names = list(accounts)
    keys = store.keys
    now = store.time_ms()
    snap = Snapshot(now_ms=now)
    snap.by_account = store.read(counter_store.read(keys, names))
    snap.counters = counter_store.total(snap.by_account)
    snap.processes = [ProcessState(i, age) for i, age in store.read(counter_store.alive(keys, now))]
    snap.paused = store.read(lane_store.paused_reasons(keys, names))
    for account, (queued, dead) in store.read(wh_store.counts(keys, names)).items():
        snap.webhooks_queued[account] = queued
        snap.webhooks_dead[account] = dead
    for account, (waiting, parked) in store.read(reply_store.backlog(keys, names)).items():
        snap.replies_waiting[account] = waiting
        snap.replies_parked[account] = parked
    pairs: list[tuple[str, str]] = []
    queues: set[str] = set()
    for account in names:
        named: list[str] = store.read(reply_store.queue_names(keys, account))
        queues.update(named)
        snap.dead[account] = store.read(req_store.dead_count(keys, account))
        lanes = store.read(lane_store.lane_ids(keys, account))
        lanes.sort(key=lambda ln: (-(LaneId.parse(ln) or LaneId(0, False, "")).priority, ln))
        for counted in store.read(lane_store.stats(keys, account, lanes)):
            s = counted.stats
            age = None if s.oldest_ms is None else max(0.0, (now - s.oldest_ms) / 1000)
            snap.lanes.append(LaneState(account, s.lane, s.count, s.bytes, age))
        pairs += [(account, a) for a in store.read(asm_store.live(keys, account))]
    if queues:
        snap.reply_queues = store.read(reply_store.depth(keys, sorted(queues)))
    for record in store.read(asm_store.read_many(keys, pairs)) if pairs else []:
        since = record.submitted_ms or record.created_ms
        age = max(0.0, (now - since) / 1000) if since else None
        snap.assemblies.append(AssemblyView(record, age))
    return snap
