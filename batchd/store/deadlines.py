"""Deadlines: the planner's set of pending requests that have one, the batches holding such
requests, each account's observed batch durations, and ESCALATE for those no batch can make.

SUBMIT, CLAIM, the scripts that end requests and those that put them back in a lane keep the
set (see `common.lua`), each in the same call as the state change, and only for requests that
have a deadline: a request without one costs nothing here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchd.store.keys import Keys, is_token
from batchd.store.requests import finish_keys
from batchd.store.runner import Read
from batchd.store.scripts import Call, call, text

#: What the account's deadline policy does with a request no batch can finish in time.
POLICIES = ("realtime", "batch", "fail")
#: Why a deadline was missed, as envelopes say and `deadlines_missed:<reason>` counts: a result
#: after it, no batch could make it (policy fail), a real-time call that ended without one, or
#: the terminal status it ended with otherwise.
MISS_REASONS = (
    "late",
    "unreachable",
    "realtime_errored",
    "realtime_unanswered",
    "realtime_unreadable",
    "realtime_unsent",
    "realtime_rejected",
    "errored",
    "canceled",
    "expired",
    "dead",
    "rejected",
)


@dataclass(frozen=True, slots=True)
class Due:
    """A pending request with a deadline, as the planner's set holds it."""

    member: str
    """`<token> <lane>`: the set's member, which ESCALATE is given back."""
    token: str
    lane: str
    deadline_ms: int


def _scored(raw: Any) -> list[tuple[str, int]]:
    if raw and not isinstance(raw[0], list | tuple):
        raw = list(zip(raw[::2], raw[1::2], strict=True))
    return [(text(m), int(float(s))) for m, s in raw or ()]


def _due(raw: Any) -> list[Due]:
    found: list[Due] = []
    for member, score in _scored(raw):
        token, _, lane = member.partition(" ")
        found.append(Due(member, token if is_token(token) else "", lane, score))
    return found


def due(keys: Keys, account: str, until_ms: int, limit: int) -> Read[list[Due]]:
    """Pending requests whose deadline is before `until_ms`, the nearest first."""
    return Read(
        [
            (
                "ZRANGEBYSCORE",
                keys.deadlines(account),
                "-inf",
                until_ms,
                "WITHSCORES",
                "LIMIT",
                0,
                limit,
            )
        ],
        lambda out: _due(out[0]),
    )


def batches_due(keys: Keys, account: str, until_ms: int, limit: int) -> Read[list[tuple[str, int]]]:
    """(assembly, earliest deadline ms) of live assemblies whose earliest deadline is before
    `until_ms`, the earliest first."""
    return Read(
        [
            (
                "ZRANGEBYSCORE",
                keys.deadline_batches(account),
                "-inf",
                until_ms,
                "WITHSCORES",
                "LIMIT",
                0,
                limit,
            )
        ],
        lambda out: _scored(out[0]),
    )


def forget_batch(keys: Keys, account: str, asm: str) -> Read[None]:
    """The planner is done with this assembly's deadline (its batch was canceled for it, or it
    no longer exists)."""
    return Read([("ZREM", keys.deadline_batches(account), asm)], lambda out: None)


def canceled(keys: Keys, account: str, asm: str) -> Read[None]:
    """The planner canceled this assembly's batch for its deadline: counted, and done with."""
    return Read(
        [
            ("HINCRBY", keys.counters(account), "batches_canceled:deadline", 1),
            ("ZREM", keys.deadline_batches(account), asm),
        ],
        lambda out: None,
    )


def durations(keys: Keys, accounts: Sequence[str]) -> Read[dict[str, list[int]]]:
    """Each account's observed batch durations (ms, from cut to end), newest first."""
    names = list(accounts)

    def parse(out: list[Any]) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for account, raw in zip(names, out, strict=True):
            if isinstance(raw, Exception):
                raw = []
            found[account] = [int(text(v)) for v in raw if text(v).isdigit()]
        return found

    return Read([("LRANGE", keys.durations(a), 0, -1) for a in names], parse, errors=True)


@dataclass(frozen=True, slots=True)
class Backlog:
    """An account's requests on the deadline paths: pending with a deadline, queued for the
    real-time route, and being sent there now."""

    pending: int = 0
    realtime_queued: int = 0
    realtime_sending: int = 0


def backlog(keys: Keys, accounts: Sequence[str]) -> Read[dict[str, Backlog]]:
    names = list(accounts)
    commands: list[tuple[Any, ...]] = []
    for a in names:
        commands += [
            ("ZCARD", keys.deadlines(a)),
            ("ZCARD", keys.realtime_queue(a)),
            ("ZCARD", keys.realtime_sending(a)),
        ]

    def parse(out: list[Any]) -> dict[str, Backlog]:
        def n(v: Any) -> int:
            return int(v) if isinstance(v, int) else 0

        return {
            a: Backlog(n(out[3 * i]), n(out[3 * i + 1]), n(out[3 * i + 2]))
            for i, a in enumerate(names)
        }

    return Read(commands, parse, errors=True)


@dataclass(frozen=True, slots=True)
class Escalated:
    """ESCALATE's answer."""

    escalated: int
    stale: int
    replies: int


def escalate(
    keys: Keys, account: str, policy: str, members: Sequence[Due], *, retention_ms: int
) -> Call[Escalated]:
    """ESCALATE: these pending requests cannot make their deadline by batch; `policy` says
    what becomes of them (see escalate.lua)."""
    if policy not in POLICIES:
        raise ValueError(f"deadline policy {policy!r}: one of {', '.join(POLICIES)}")
    k = [*finish_keys(keys, account), keys.realtime_queue(account)]
    for d in members:
        k += keys.request_keys(account, d.token or "_").all()
    a: list[str | bytes | int] = [account, policy, retention_ms, *(d.member for d in members)]
    return call(
        "escalate", k, a, lambda reply: Escalated(int(reply[0]), int(reply[1]), int(reply[2]))
    )
