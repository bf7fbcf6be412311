"""The real-time route's data: each account's queue of requests bound for the Messages API, the
set of those whose send intent is written (held by a sender's lease), the shared per-minute
window of what was sent, the API's hold after a 429, and the two scripts that move them.

A request is on this route only after it left the batch route unbilled (from `pending`, or its
batch line came back canceled, expired or errored retryably), so it is never in a live batch
and here at once. Its send intent reaches the replicas before the call is made; a call whose
answer was lost is never made again (it may have been billed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchd.store.assemblies import ledger_keys
from batchd.store.keys import Keys
from batchd.store.requests import finish_keys
from batchd.store.runner import Read
from batchd.store.scripts import Call, call, text

#: What became of a real-time send (each counted as `realtime:<outcome>`): answered (succeeded,
#: errored), no answer after it left (unanswered: never resent), a 2xx that could not be read
#: (unreadable), never left (unsent), to be made again after an error answer (retried), handed
#: back unsent (released: its intent not durable; capped: a spend cap), params gone (rejected).
OUTCOMES = (
    "succeeded",
    "errored",
    "unanswered",
    "unreadable",
    "unsent",
    "retried",
    "released",
    "capped",
    "rejected",
)

#: How long a minute's window of real-time sends is kept (ms): past its minute it is read no more.
WINDOW_KEEP_MS = 120_000


@dataclass(frozen=True, slots=True)
class Outlook:
    """What a sender needs to know before it claims: the due tokens, how long the API asked it
    to hold (ms, 0 when not), and what this minute's window has used."""

    due: list[str]
    hold_ms: int
    requests: int
    tokens: int


def outlook(keys: Keys, account: str, now_ms: int, limit: int) -> Read[Outlook]:
    """One round trip: up to `limit` due tokens, the hold, this minute's window."""
    minute = now_ms // 60_000

    def parse(out: list[Any]) -> Outlook:
        used = out[2] if isinstance(out[2], list) else [None, None]
        return Outlook(
            [text(t) for t in out[0]],
            max(0, int(out[1] or 0)),
            int(text(used[0]) or 0),
            int(text(used[1]) or 0),
        )

    return Read(
        [
            ("ZRANGEBYSCORE", keys.realtime_queue(account), "-inf", now_ms, "LIMIT", 0, limit),
            ("PTTL", keys.realtime_hold(account)),
            ("HMGET", keys.realtime_window(account, minute), "requests", "tokens"),
        ],
        parse,
    )


def count_sent(keys: Keys, account: str, now_ms: int, requests: int, tokens: int) -> Read[None]:
    """Add what was just claimed for sending to this minute's shared window."""
    wk = keys.realtime_window(account, now_ms // 60_000)
    return Read(
        [
            ("HINCRBY", wk, "requests", requests),
            ("HINCRBY", wk, "tokens", tokens),
            ("PEXPIRE", wk, WINDOW_KEEP_MS),
        ],
        lambda out: None,
    )


def hold(keys: Keys, account: str, ms: int) -> Read[None]:
    """The API asked the account's real-time calls to wait `ms` (a 429's retry-after)."""
    return Read([("SET", keys.realtime_hold(account), 1, "PX", max(1, ms))], lambda out: None)


def expired(keys: Keys, account: str, now_ms: int, limit: int) -> Read[list[str]]:
    """Tokens whose sender's lease ran out by `now_ms` (a crash, a stall): to reconcile."""
    return Read(
        [("ZRANGEBYSCORE", keys.realtime_sending(account), "-inf", now_ms, "LIMIT", 0, limit)],
        lambda out: [text(t) for t in out[0]],
    )


def renew(keys: Keys, account: str, tokens: Sequence[str], until_ms: int) -> Read[None]:
    """Extend the sender's lease on these tokens (only those still held: XX adds none back)."""
    if not tokens:
        return Read([], lambda out: None)
    pairs: list[Any] = []
    for t in tokens:
        pairs += [until_ms, t]
    return Read([("ZADD", keys.realtime_sending(account), "XX", *pairs)], lambda out: None)


@dataclass(frozen=True, slots=True)
class Job:
    """A request RT_CLAIM took: its intent is written, the call may be made."""

    account: str
    token: str
    params: bytes | None
    lane: str
    tag: str
    estimate: str
    """`<max_tokens> <model>` or `<max_tokens>~<short name>` from its record ('' in records
    older than it; see `budgets.parse_estimate`)."""
    attempts: int
    """Real-time sends counting this one."""
    betas: tuple[str, ...]


def claim(
    keys: Keys, account: str, tokens: Sequence[str], intent: str, lease_ms: int
) -> Call[list[Job]]:
    """RT_CLAIM: take these due tokens and write their send intent (run it durably)."""
    k = [
        keys.realtime_queue(account),
        keys.realtime_sending(account),
        keys.lane_betas(account),
    ]
    for t in tokens:
        k += [keys.request(account, t), keys.params(account, t)]

    def parse(reply: Any) -> list[Job]:
        jobs: list[Job] = []
        for i in range(0, len(reply), 7):
            params = reply[i + 1]
            jobs.append(
                Job(
                    account,
                    text(reply[i]),
                    bytes(params) if isinstance(params, bytes) else None,
                    text(reply[i + 2]),
                    text(reply[i + 3]),
                    text(reply[i + 4]),
                    int(reply[i + 5]),
                    tuple(b for b in text(reply[i + 6]).split(",") if b),
                )
            )
        return jobs

    return call("rt_claim", k, [intent, lease_ms, *tokens], parse)


@dataclass(frozen=True, slots=True)
class Settle:
    """One request's settlement in RT_SETTLE (see rt_settle.lua for the modes)."""

    token: str
    mode: str  # end | retry | release | expire
    intent: str = ""
    status: str = ""
    """The terminal status (end, expire)."""
    due_ms: int = 0
    """When it is due again (retry, release)."""
    result: bytes = b""
    usage: str = ""
    outcome: str = ""


def settle(
    keys: Keys, account: str, items: Sequence[Settle], *, retention_ms: int, now_ms: int
) -> Call[tuple[int, int]]:
    """RT_SETTLE: (settled, replies queued)."""
    hk, dk, hour_end, day_end = ledger_keys(keys, account, now_ms)
    k = [
        *finish_keys(keys, account),
        keys.realtime_queue(account),
        keys.realtime_sending(account),
        hk,
        dk,
    ]
    a: list[str | bytes | int] = [account, retention_ms, hour_end, day_end]
    for s in items:
        k += keys.request_keys(account, s.token).all()
        arg: str | int = s.due_ms if s.mode in ("retry", "release") else s.status
        a += [s.token, s.mode, s.intent, arg, s.result, s.usage, s.outcome]
    return call("rt_settle", k, a, lambda reply: (int(reply[0]), int(reply[1])))
