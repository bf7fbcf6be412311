"""The records batchd keeps in Redis, as typed classes with their states as enums.

Each record has one reader here that knows every form it takes: a request is a hash while live
and its result envelope (a string) once ended (hashes with a `res` field, from an earlier layout,
read too); an assembly is a hash; a lane id names a priority, whether it serves drop-in calls,
and the set of betas its batches are created with.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import orjson

from batchd.store.keys import request_id
from batchd.store.scripts import text


class RequestStatus(StrEnum):
    """Where a request is: waiting in a lane, in a batch, on the real-time route (queued or being
    sent, after its deadline made it leave the batch route), or ended (terminal)."""

    PENDING = "pending"
    BATCHED = "batched"
    REALTIME = "realtime"
    SUCCEEDED = "succeeded"
    ERRORED = "errored"
    CANCELED = "canceled"
    EXPIRED = "expired"
    REJECTED = "rejected"
    DEAD = "dead"

    @property
    def terminal(self) -> bool:
        return self not in (RequestStatus.PENDING, RequestStatus.BATCHED, RequestStatus.REALTIME)


TERMINAL = frozenset(s for s in RequestStatus if s.terminal)
LIVE = frozenset(s for s in RequestStatus if not s.terminal)


class AssemblyState(StrEnum):
    """An assembly's life: a batch in the making, then in flight, then closed."""

    ASSEMBLING = "assembling"  # requests being claimed into it
    SEALED = "sealed"  # its body is fixed; its batch is due to be created
    SUBMITTING = "submitting"  # the intent is written: a create may be under way
    SUBMITTED = "submitted"  # the batch exists at the API; polled until it ends
    ENDED = "ended"  # the batch ended; its results are being fanned out
    DONE = "done"  # every request has ended or gone round again

    @property
    def in_flight(self) -> bool:
        """Its batch exists at the API and is not closed yet."""
        return self in (AssemblyState.SUBMITTED, AssemblyState.ENDED)


#: How a created batch ended: its results fanned out (completed, or canceled by an operator), or
#: its results could not be had (vanished from the API, archived before fan-out).
BATCH_OUTCOMES = ("completed", "canceled", "vanished", "archived")
#: The API's request counts of a batch, as kept on its assembly.
REQUEST_COUNTS = ("processing", "succeeded", "errored", "canceled", "expired")


class Field:
    """Field names of a live request record (a hash)."""

    STATUS = "st"
    SIZE = "n"  # framed size in a batch body
    LANE = "pr"  # lane id (a bare priority in records of the first layout)
    ATTEMPTS = "at"
    ASSEMBLY = "a"
    KEY = "k"  # idempotency key, as JSON
    REPLY_TO = "rt"
    CALLBACK = "cb"
    METADATA = "md"  # JSON
    TAG = "tg"
    DEADLINE = "dl"  # ms
    ESTIMATE = "es"  # `<max_tokens> <model>` or `<max_tokens>~<short name>`: a cap's estimate
    SUBMITTED = "ts"  # ms
    ENQUEUED = "eq"  # ms
    LAST_ERROR = "le"  # result JSON
    RESULT = "res"  # envelope, in ended hashes of an earlier layout
    REALTIME_INTENT = "rs"  # the real-time sender's intent id, while a send may be under way
    REALTIME_ATTEMPTS = "ra"  # real-time sends so far


#: The fields `read_request` asks for, in this order.
REQUEST_FIELDS = (
    Field.STATUS,
    Field.ATTEMPTS,
    Field.RESULT,
    Field.ASSEMBLY,
    Field.LANE,
    Field.SIZE,
    Field.KEY,
    Field.REPLY_TO,
    Field.CALLBACK,
    Field.METADATA,
    Field.TAG,
    Field.DEADLINE,
    Field.SUBMITTED,
    Field.ENQUEUED,
    Field.LAST_ERROR,
)


def _int(value: Any) -> int | None:
    s = text(value)
    return int(s) if s.lstrip("-").isdigit() else None


def _json(value: Any) -> Any:
    if value is None:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """A request as Redis holds it, in whichever form."""

    account: str
    token: str
    status: RequestStatus | str
    attempts: int
    assembly: str | None = None
    lane: str | None = None
    size: int | None = None
    key: str | None = None
    reply_to: str | None = None
    callback_url: str | None = None
    metadata: Any = None
    tag: str | None = None
    deadline_ms: int | None = None
    submitted_ms: int | None = None
    enqueued_ms: int | None = None
    last_error: Any = None
    envelope: bytes | None = None
    """The result envelope, once the request has ended."""

    @property
    def id(self) -> str:
        return request_id(self.account, self.token)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class ForeignData(Exception):
    """A key where a request record belongs holds something batchd did not write."""


def parse_request(account: str, token: str, fields: Any, value: Any) -> RequestRecord | None:
    """The record from `HMGET <record> *REQUEST_FIELDS` and `GET <record>`, sent together with
    errors kept in place (exactly one of the two fails when the key exists).

    None when there is no such record; raises the HMGET's error (Redis's WRONGTYPE) for a key
    that is neither a hash nor an envelope: foreign data.
    """
    if isinstance(fields, Exception):
        if not isinstance(value, bytes) or not value.startswith(b'{"id":'):
            raise fields
        return from_envelope(account, token, value)
    f = dict(zip(REQUEST_FIELDS, fields, strict=True))
    if f[Field.STATUS] is None:
        return None
    if f[Field.RESULT]:  # an ended record of the earlier layout: a hash holding its envelope
        return from_envelope(account, token, f[Field.RESULT])
    status_text = text(f[Field.STATUS])
    try:
        status: RequestStatus | str = RequestStatus(status_text)
    except ValueError:
        status = status_text
    key = _json(f[Field.KEY])
    return RequestRecord(
        account=account,
        token=token,
        status=status,
        attempts=_int(f[Field.ATTEMPTS]) or 0,
        assembly=text(f[Field.ASSEMBLY]) or None,
        lane=text(f[Field.LANE]) or None,
        size=_int(f[Field.SIZE]),
        key=key if isinstance(key, str) else None,
        reply_to=text(f[Field.REPLY_TO]) or None,
        callback_url=text(f[Field.CALLBACK]) or None,
        metadata=_json(f[Field.METADATA]),
        tag=text(f[Field.TAG]) or None,
        deadline_ms=_int(f[Field.DEADLINE]),
        submitted_ms=_int(f[Field.SUBMITTED]),
        # written only once it went round again: until then, it entered its lane when submitted
        enqueued_ms=_int(f[Field.ENQUEUED]) or _int(f[Field.SUBMITTED]),
        last_error=_json(f[Field.LAST_ERROR]),
    )


def from_envelope(account: str, token: str, raw: bytes) -> RequestRecord:
    env = orjson.loads(raw)
    return RequestRecord(
        account=account,
        token=token,
        status=RequestStatus(env["status"]),
        attempts=int(env.get("attempts") or 0),
        key=env.get("key"),
        metadata=env.get("metadata"),
        envelope=bytes(raw),
    )


class Assembly:
    """Field names of an assembly record (a hash)."""

    STATE = "st"
    LANE = "pr"
    COUNT = "cnt"
    BYTES = "bytes"
    CONTENT_LENGTH = "clen"
    CREATED = "created"
    SEALED = "sealed"
    INTENT = "intent"
    INTENT_FENCE = "ifence"
    UNSURE_SINCE = "iunsure"
    POSTED = "iposted"  # the create's POST was about to start (ms)
    BATCH_ID = "bid"
    RESULTS_URL = "rurl"
    SUBMITTED = "submitted"
    POLLS = "polls"
    OPERATOR_CANCEL = "opcancel"
    DEADLINE = "dl"  # the earliest deadline of its requests (ms), set at claim
    DEADLINE_CANCEL = "dlcancel"  # ms the planner canceled its batch for that deadline
    CLOSED = "closed"
    NOT_FOUND_SINCE = "nf404"
    ENDED = "ended"
    JOB = "job"  # the id of the rq job last queued for its stage
    FETCHES = "fetches"  # downloads of its results so far


@dataclass(frozen=True)
class AssemblyRecord:
    """An assembly as Redis holds it."""

    account: str
    id: str
    state: AssemblyState | None
    """None for a state batchd does not know (foreign data)."""
    lane: str = "0"
    count: int = 0
    bytes: int = 0
    content_length: int = 0
    created_ms: int | None = None
    sealed_ms: int | None = None
    intent_ms: int | None = None
    intent_fence: str | None = None
    unsure_since_ms: int | None = None
    posted_ms: int | None = None
    batch_id: str | None = None
    results_url: str | None = None
    submitted_ms: int | None = None
    ended_ms: int | None = None
    closed_ms: int | None = None
    polls: int = 0
    operator_canceled: bool = False
    deadline_ms: int | None = None
    """The earliest deadline of its requests, if any has one."""
    deadline_canceled_ms: int | None = None
    """When the planner canceled its batch for that deadline."""
    not_found_since_ms: int | None = None
    job: str | None = None
    fetches: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    """The batch's request_counts at its last poll; empty before the first."""

    @property
    def in_flight(self) -> bool:
        return self.state is not None and self.state.in_flight

    @property
    def finished(self) -> int:
        """Requests the API reports as done (the API counts them at the end)."""
        return sum(self.counts.get(k, 0) for k in REQUEST_COUNTS[1:])

    @classmethod
    def from_hash(cls, account: str, asm: str, raw: dict[Any, Any]) -> AssemblyRecord | None:
        if not raw:
            return None
        a = {text(k): text(v) for k, v in raw.items()}
        try:
            state: AssemblyState | None = AssemblyState(a.get(Assembly.STATE, ""))
        except ValueError:
            state = None

        def num(name: str) -> int | None:
            return _int(a.get(name))

        counts = {k: num(k) or 0 for k in REQUEST_COUNTS if k in a}
        if state in (AssemblyState.ENDED, AssemblyState.DONE) and counts:
            counts["processing"] = 0  # the end's counts are final; a poll's processing is stale
        return cls(
            account=account,
            id=asm,
            state=state,
            lane=a.get(Assembly.LANE) or "0",
            count=num(Assembly.COUNT) or 0,
            bytes=num(Assembly.BYTES) or 0,
            content_length=num(Assembly.CONTENT_LENGTH) or 0,
            created_ms=num(Assembly.CREATED),
            sealed_ms=num(Assembly.SEALED),
            intent_ms=num(Assembly.INTENT),
            intent_fence=a.get(Assembly.INTENT_FENCE) or None,
            unsure_since_ms=num(Assembly.UNSURE_SINCE),
            posted_ms=num(Assembly.POSTED),
            batch_id=a.get(Assembly.BATCH_ID) or None,
            results_url=a.get(Assembly.RESULTS_URL) or None,
            submitted_ms=num(Assembly.SUBMITTED),
            ended_ms=num(Assembly.ENDED),
            closed_ms=num(Assembly.CLOSED),
            polls=num(Assembly.POLLS) or 0,
            operator_canceled=a.get(Assembly.OPERATOR_CANCEL) == "1",
            deadline_ms=num(Assembly.DEADLINE),
            deadline_canceled_ms=num(Assembly.DEADLINE_CANCEL),
            not_found_since_ms=num(Assembly.NOT_FOUND_SINCE),
            job=a.get(Assembly.JOB) or None,
            fetches=num(Assembly.FETCHES) or 0,
            counts=counts,
        )


# -- lanes -----------------------------------------------------------------------------------

_LANE = re.compile(r"^(\d+)(\.i)?(?:\.b([0-9a-f]{10}))?$")


def beta_set_id(betas: tuple[str, ...]) -> str:
    """A short, stable id of a set of betas (order and repeats do not matter)."""
    joined = ",".join(sorted(set(betas)))
    return hashlib.sha1(joined.encode()).hexdigest()[:10]


@dataclass(frozen=True, order=True)
class Lane:
    """A lane within an account: its priority, whether it holds drop-in calls (cut after their
    own, shorter wait), and the betas its batches are created with."""

    priority: int
    interactive: bool = False
    betas: tuple[str, ...] = ()

    @property
    def beta_id(self) -> str:
        return beta_set_id(self.betas) if self.betas else ""

    @property
    def id(self) -> str:
        out = str(self.priority)
        if self.interactive:
            out += ".i"
        if self.betas:
            out += ".b" + self.beta_id
        return out

    def __str__(self) -> str:
        return self.id

    @classmethod
    def of(cls, priority: int, *, interactive: bool = False, betas: Any = ()) -> Lane:
        return cls(priority, interactive, tuple(sorted(set(betas or ()))))


@dataclass(frozen=True, slots=True)
class LaneId:
    """A lane id as stored, taken apart (its betas are looked up by their set id)."""

    priority: int
    interactive: bool
    beta_id: str

    @classmethod
    def parse(cls, lane: str) -> LaneId | None:
        m = _LANE.match(lane)
        if m is None:
            return None
        return cls(int(m.group(1)), bool(m.group(2)), m.group(3) or "")


@dataclass(frozen=True, slots=True)
class LaneStats:
    """A lane's pending requests: how many, their framed bytes, and the oldest one's age."""

    account: str
    lane: str
    count: int
    bytes: int
    oldest_ms: int | None

    @property
    def priority(self) -> int:
        parsed = LaneId.parse(self.lane)
        return parsed.priority if parsed is not None else 0

    @property
    def interactive(self) -> bool:
        parsed = LaneId.parse(self.lane)
        return parsed is not None and parsed.interactive
