"""Requests: submit, cancel, read, wait marks, idempotency look-ups and dead letters.

Each function builds one script `Call` or one pipelined `Read`; `Store.run`/`Store.read` (or
their asyncio twins) send it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from batchd.store.keys import Keys, key_digest, new_token, request_id, split_request_id
from batchd.store.records import REQUEST_FIELDS, Field, Lane, RequestRecord, parse_request
from batchd.store.runner import Read, checked
from batchd.store.scripts import Call, call, text

#: Separator of the extra record fields in SUBMIT's arguments: JSON, URLs and names never hold it.
_SEP = "\x1f"


@dataclass(frozen=True, slots=True)
class NewRequest:
    """A validated request, encoded as it will be stored."""

    account: str
    lane: Lane
    params: bytes
    size: int  # framed size in a batch body
    key: str | None = None
    key_json: str = ""
    body_digest: str = ""  # of what a repeated key must match
    reply_to: str = ""
    callback_url: str = ""
    metadata: str = ""  # JSON
    tag: str = ""
    deadline_ms: int | None = None
    estimate: str = ""  # for spend caps (see budgets.parse_estimate)

    @property
    def key_digest(self) -> str:
        return key_digest(self.key) if self.key is not None else ""


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """What SUBMIT did with one request: stored, or found its key used before."""

    id: str
    stored: bool
    conflict: bool = False  # the key was used before with another body
    first_digest: str = ""  # that body's digest, when it conflicts


def _extras(r: NewRequest) -> str:
    parts: list[str] = []
    for name, value in (
        (Field.KEY, r.key_json),
        (Field.REPLY_TO, r.reply_to),
        (Field.CALLBACK, r.callback_url),
        (Field.METADATA, r.metadata),
        (Field.TAG, r.tag),
        (Field.DEADLINE, "" if r.deadline_ms is None else str(r.deadline_ms)),
        (Field.ESTIMATE, r.estimate),
        ("@bd", r.body_digest if r.key is not None else ""),
    ):
        if value:
            parts += (name, _SEP, value, _SEP)
    return "".join(parts)


def _submit_reply(reply: Any) -> list[SubmitOutcome]:
    out: list[SubmitOutcome] = []
    for i in range(0, len(reply), 2):
        code = int(reply[i])
        if code < 0:
            rid, _, digest = text(reply[i + 1]).partition(" ")
            out.append(SubmitOutcome(rid, False, True, digest))
        else:
            out.append(SubmitOutcome(text(reply[i + 1]), code == 1))
    return out


def submit(
    keys: Keys, account: str, requests: Sequence[NewRequest], idempotency_ms: int
) -> Call[list[SubmitOutcome]]:
    """SUBMIT: store these requests of one account atomically; one outcome each, in order."""
    lanes: dict[Lane, int] = {}
    for r in requests:
        lanes.setdefault(r.lane, len(lanes) + 1)
    k: list[str] = [
        keys.counters(account),
        keys.lanes(account),
        keys.lane_betas(account),
        keys.deadlines(account),
    ]
    a: list[str | bytes | int] = [account, idempotency_ms, len(lanes)]
    for lane in lanes:
        k += (keys.pending(account, lane.id), keys.lane_stats(account, lane.id))
        a += (lane.id, lane.beta_id, ",".join(lane.betas))
    for r in requests:
        token = new_token()
        digest = r.key_digest
        k += (
            keys.request(account, token),
            keys.params(account, token),
            keys.idempotency(account, digest or "-"),
        )
        a += (lanes[r.lane], r.size, r.params, _extras(r))
    return call("submit", k, a, _submit_reply)


def finish_keys(keys: Keys, account: str) -> list[str]:
    """The account keys a script that ends requests declares first (see common.lua)."""
    return [
        keys.counters(account),
        keys.reply_outbox(account),
        keys.deliveries_due(account),
        keys.dead(account),
        keys.deadlines(account),
    ]


@dataclass(frozen=True, slots=True)
class Canceled:
    """CANCEL's answer: the envelope when it ended the request, else the state it found."""

    envelope: bytes | None
    state: str
    replies: int = 0


def _cancel_reply(reply: Any) -> Canceled:
    if int(reply[0]) == 1:
        return Canceled(bytes(reply[1]), "canceled", int(reply[2]))
    return Canceled(None, text(reply[1]))


def cancel(keys: Keys, account: str, token: str, retention_ms: int) -> Call[Canceled]:
    """CANCEL: end a pending request `canceled`."""
    return call(
        "cancel",
        [*finish_keys(keys, account), *keys.request_keys(account, token).all()],
        [account, token, retention_ms],
        _cancel_reply,
    )


def read(keys: Keys, account: str, token: str) -> Read[RequestRecord | None]:
    """The request's record in either form (raises on foreign data under its key)."""
    rk = keys.request(account, token)
    return Read(
        [("HMGET", rk, *REQUEST_FIELDS), ("GET", rk)],
        lambda out: parse_request(account, token, out[0], out[1]),
        errors=True,
    )


def read_many(keys: Keys, ids: Sequence[str]) -> Read[list[RequestRecord | None]]:
    """Several requests' records (by id) in one round trip; None for an unknown or foreign one."""
    pairs = [split_request_id(rid) for rid in ids]
    commands: list[tuple[Any, ...]] = []
    for account, token in pairs:
        rk = keys.request(account, token)
        commands += [("HMGET", rk, *REQUEST_FIELDS), ("GET", rk)]

    def parse(out: list[Any]) -> list[RequestRecord | None]:
        found: list[RequestRecord | None] = []
        for i, (account, token) in enumerate(pairs):
            try:
                found.append(parse_request(account, token, out[2 * i], out[2 * i + 1]))
            except Exception:
                found.append(None)
        return found

    return Read(commands, parse, errors=True)


def mark_and_read(
    keys: Keys, account: str, token: str, waiter_ms: int
) -> Read[RequestRecord | None]:
    """Mark the request as waited for, then read it, in one round trip: its end, if it comes
    after the read, sees the mark and wakes the waiter's done list."""
    rk = keys.request(account, token)

    def parse(out: list[Any]) -> RequestRecord | None:
        checked(out[0])
        return parse_request(account, token, out[1], out[2])

    return Read(
        [
            ("SET", keys.waiter(account, token), 1, "PX", waiter_ms),
            ("HMGET", rk, *REQUEST_FIELDS),
            ("GET", rk),
        ],
        parse,
        errors=True,
    )


def unmark(keys: Keys, account: str, token: str) -> Read[None]:
    return Read([("DEL", keys.waiter(account, token))], lambda out: None)


def done_list(keys: Keys, account: str, token: str) -> str:
    """The list a `wait` caller blocks on (BLMOVE onto itself: it wakes every waiter)."""
    return keys.done(account, token)


def find_by_key(keys: Keys, account: str, key: str) -> Read[str | None]:
    """The id of the request first submitted under this idempotency key, if remembered."""

    def parse(out: list[Any]) -> str | None:
        value = out[0]
        if value is None or isinstance(value, Exception):
            return None
        return text(value).split(" ", 1)[0] or None

    return Read([("GET", keys.idempotency(account, key_digest(key)))], parse, errors=True)


# -- dead letters ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A request that ended `dead`, as listed for operators."""

    id: str
    died_ms: int
    lane: str | None
    attempts: int
    envelope: bytes | None
    requeueable: bool

    @property
    def account(self) -> str:
        return self.id.partition(".")[0]

    @property
    def error(self) -> tuple[str, str]:
        """(type, message) of the last failure: the API's error type (`overloaded_error`,
        batchd's `missing_result`), or the result's own type (`expired`, `canceled`)."""
        try:
            result = orjson.loads(self.envelope or b"{}").get("result")
        except (orjson.JSONDecodeError, AttributeError):
            return "unknown", "the stored result cannot be read"
        if not isinstance(result, dict):
            return "unknown", ""
        err = result.get("error")
        if isinstance(err, dict) and isinstance(err.get("error"), dict):
            err = err["error"]
        if isinstance(err, dict):
            return str(err.get("type") or "unknown"), str(err.get("message") or "")
        return str(result.get("type") or "unknown"), ""

    @property
    def error_type(self) -> str:
        return self.error[0]


def list_dead(
    keys: Keys, account: str, *, offset: int = 0, limit: int = 100
) -> Read[list[tuple[str, int]]]:
    """(request id, ms it died) of an account's dead letters, most recent first."""
    return Read(
        [("ZREVRANGE", keys.dead(account), offset, offset + limit - 1, "WITHSCORES")],
        lambda out: [(text(m), int(float(s))) for m, s in _pairs(out[0])],
    )


def _pairs(flat: Any) -> list[tuple[Any, Any]]:
    if isinstance(flat, Exception):
        raise flat
    if flat and isinstance(flat[0], list | tuple):
        return [(p[0], p[1]) for p in flat]
    return list(zip(flat[::2], flat[1::2], strict=True))


def dead_count(keys: Keys, account: str) -> Read[int]:
    return Read([("ZCARD", keys.dead(account))], lambda out: int(out[0] or 0))


def read_letters(keys: Keys, entries: Sequence[tuple[str, int]]) -> Read[list[DeadLetter]]:
    """The dead letters of these (id, died ms) entries: envelope, lane, whether requeueable."""
    commands: list[tuple[Any, ...]] = []
    for rid, _ in entries:
        account, token = split_request_id(rid)
        commands += [
            ("GET", keys.request(account, token)),
            ("HMGET", keys.letter(account, token), Field.LANE, Field.ATTEMPTS),
            ("EXISTS", keys.params(account, token)),
        ]

    def parse(out: list[Any]) -> list[DeadLetter]:
        letters: list[DeadLetter] = []
        for i, (rid, died) in enumerate(entries):
            env, x, has_params = out[3 * i], out[3 * i + 1], out[3 * i + 2]
            env = env if isinstance(env, bytes) else None
            lane = text(x[0]) or None if isinstance(x, list) else None
            attempts = int(text(x[1]) or 0) if isinstance(x, list) and text(x[1]).isdigit() else 0
            letters.append(
                DeadLetter(rid, died, lane, attempts, env, bool(lane) and has_params == 1)
            )
        return letters

    return Read(commands, parse)


def letter_lane(keys: Keys, account: str, token: str) -> Read[str | None]:
    return Read(
        [("HGET", keys.letter(account, token), Field.LANE)], lambda out: text(out[0]) or None
    )


def requeue_dead(keys: Keys, account: str, token: str, lane: str) -> Call[int]:
    """REQUEUE_DEAD: send a dead request round again (1), or say why not (0, -1, -2)."""
    return call(
        "requeue_dead",
        [
            keys.counters(account),
            keys.dead(account),
            keys.request(account, token),
            keys.params(account, token),
            keys.letter(account, token),
            keys.done(account, token),
            keys.pending(account, lane),
            keys.lane_stats(account, lane),
            keys.lanes(account),
        ],
        [account, token, lane],
        int,
    )


def purge_dead(keys: Keys, account: str, token: str) -> Call[int]:
    """PURGE_DEAD: forget a dead letter (its result stays readable until retention ends)."""
    return call(
        "purge_dead",
        [
            keys.counters(account),
            keys.dead(account),
            keys.params(account, token),
            keys.letter(account, token),
        ],
        [request_id(account, token)],
        int,
    )


# -- drop-in attempts --------------------------------------------------------------------------


def _attempt_key(keys: Keys, account: str, caller: str, digest: str) -> str:
    return keys.idempotency(account, key_digest(f"attempt\x1f{caller}\x1f{digest}"))


def remember_attempt(
    keys: Keys, account: str, caller: str, digest: str, rid: str, ttl_ms: int
) -> Read[None]:
    """Note that `caller`'s request with this body digest is `rid`, so a retry of the same HTTP
    call (an SDK's own) re-attaches to it instead of queuing a second, billed one."""
    return Read(
        [("SET", _attempt_key(keys, account, caller, digest), rid, "PX", ttl_ms)], lambda out: None
    )


def find_attempt(keys: Keys, account: str, caller: str, digest: str) -> Read[str | None]:
    """The request an earlier attempt of this call made, if remembered."""
    return Read(
        [("GET", _attempt_key(keys, account, caller, digest))],
        lambda out: text(out[0]) or None if not isinstance(out[0], Exception) else None,
        errors=True,
    )


# -- blocking on request ends ------------------------------------------------------------------


def block_on_end(keys: Keys, account: str, token: str, timeout: float) -> tuple[Any, ...]:
    """The blocking command a `wait` caller sends: BLMOVE of the request's done list onto
    itself, which wakes every waiter and consumes nothing."""
    dk = keys.done(account, token)
    return ("BLMOVE", dk, dk, "LEFT", "LEFT", timeout)


def block_on_any(done_lists: Sequence[str], timeout: float) -> tuple[Any, ...]:
    """One blocking command over many done lists (of one account: one hash slot): BLMPOP."""
    return ("BLMPOP", timeout, len(done_lists), *done_lists, "LEFT")


def woke(reply: Any) -> tuple[str, list[Any]] | None:
    """(done list, its elements) of a BLMPOP that returned; None when it timed out."""
    if not reply:
        return None
    key = reply[0]
    return (key.decode() if isinstance(key, bytes) else str(key)), list(reply[1])


def put_back(done_list: str, elements: Sequence[Any]) -> Read[None]:
    """What BLMPOP took goes back, so other waiters of the same request see it too."""
    return Read([("RPUSH", done_list, *elements)], lambda out: None)


def nonempty(done_lists: Sequence[str]) -> Read[list[str]]:
    """Which of these done lists hold an element (their requests ended)."""
    names = list(done_lists)
    return Read(
        [("LLEN", d) for d in names],
        lambda out: [d for d, n in zip(names, out, strict=True) if isinstance(n, int) and n > 0],
        errors=True,
    )
