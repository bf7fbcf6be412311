"""Assemblies: a batch in the making, then in flight. Their records, the live index the sweeper
reads, the create lock's intent, the batch index, and the scripts that end their requests."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchd.defaults import (
    DURATION_SAMPLES,
    LEDGER_DAY_KEEP_MS,
    LEDGER_HOUR_KEEP_MS,
    QUEUE_SEEN_MS,
)
from batchd.store.keys import Keys
from batchd.store.records import Assembly, AssemblyRecord, AssemblyState
from batchd.store.requests import finish_keys
from batchd.store.runner import Read
from batchd.store.scripts import Call, call, text


def read(keys: Keys, account: str, asm: str) -> Read[AssemblyRecord | None]:
    return Read(
        [("HGETALL", keys.assembly(account, asm))],
        lambda out: AssemblyRecord.from_hash(account, asm, _mapping(out[0])),
        errors=True,
    )


def read_many(keys: Keys, pairs: Sequence[tuple[str, str]]) -> Read[list[AssemblyRecord]]:
    """The records of (account, assembly) pairs that still exist, in order."""

    def parse(out: list[Any]) -> list[AssemblyRecord]:
        found = []
        for (account, asm), raw in zip(pairs, out, strict=True):
            record = AssemblyRecord.from_hash(account, asm, _mapping(raw))
            if record is not None:
                found.append(record)
        return found

    return Read([("HGETALL", keys.assembly(a, asm)) for a, asm in pairs], parse, errors=True)


def _mapping(raw: Any) -> dict[Any, Any]:
    if isinstance(raw, Exception) or not raw:
        return {}
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def live(keys: Keys, account: str) -> Read[list[str]]:
    """The account's live assemblies (in the making or in flight)."""
    return Read(
        [("ZRANGE", keys.assemblies(account), 0, -1)], lambda out: [text(a) for a in out[0]]
    )


def overdue(keys: Keys, account: str, now_ms: int, limit: int) -> Read[list[tuple[str, int]]]:
    """(assembly, due ms) of live assemblies whose stage is due by now."""

    def parse(out: list[Any]) -> list[tuple[str, int]]:
        raw = out[0]
        if raw and not isinstance(raw[0], list | tuple):
            raw = list(zip(raw[::2], raw[1::2], strict=True))
        return [(text(a), int(float(s))) for a, s in raw]

    return Read(
        [
            (
                "ZRANGEBYSCORE",
                keys.assemblies(account),
                "-inf",
                now_ms,
                "WITHSCORES",
                "LIMIT",
                0,
                limit,
            )
        ],
        parse,
    )


def schedule(keys: Keys, account: str, asm: str, seen_due: int, next_due: int) -> Call[bool]:
    """SCHEDULE: take an overdue assembly (only one sweeper wins) and move its due time on."""
    return call(
        "schedule", [keys.assemblies(account)], [asm, seen_due, next_due], lambda r: bool(int(r))
    )


def set_due(
    keys: Keys, account: str, asm: str, due_ms: int, *, only_if_live: bool = True
) -> Read[None]:
    """When the sweeper should look at this assembly next (run its stage, or check it ran).
    Only for an assembly still in the live index, unless `only_if_live` is off."""
    flag = ("XX",) if only_if_live else ()
    return Read([("ZADD", keys.assemblies(account), *flag, due_ms, asm)], lambda out: None)


def queued(keys: Keys, account: str, asm: str, job_id: str, check_ms: int) -> Read[None]:
    """A stage job was queued: remember its id, and when to check that it ran."""
    return Read(
        [
            ("HSET", keys.assembly(account, asm), Assembly.JOB, job_id),
            ("ZADD", keys.assemblies(account), "XX", check_ms, asm),
        ],
        lambda out: None,
    )


def forget(keys: Keys, account: str, asm: str) -> Read[None]:
    """Drop an assembly that no longer exists (or is in no known state) from the live index."""
    return Read([("ZREM", keys.assemblies(account), asm)], lambda out: None)


def lease_key(keys: Keys, account: str, asm: str) -> str:
    return keys.assembly_lease(account, asm)


def leased(keys: Keys, account: str, asms: Sequence[str]) -> Read[list[bool]]:
    return Read(
        [("EXISTS", keys.assembly_lease(account, a)) for a in asms],
        lambda out: [bool(v) and not isinstance(v, Exception) for v in out],
    )


def entries(keys: Keys, account: str, asm: str, start: int, n: int) -> Read[list[bytes]]:
    """`n` of the assembly's entries (`<token> <size> <enqueued ms>`) from `start`."""
    return Read(
        [("LRANGE", keys.assembly_entries(account, asm), start, start + n - 1)],
        lambda out: list(out[0]),
    )


def seal(keys: Keys, account: str, asm: str) -> Call[int]:
    """SEAL: fix the body's length (returned); 0 when empty (deleted), -1 not assembling."""
    return call(
        "seal",
        [
            keys.assembly(account, asm),
            keys.assembly_entries(account, asm),
            keys.assemblies(account),
        ],
        [asm],
        int,
    )


# -- creating the batch exactly once -----------------------------------------------------------


def take_list_turn(keys: Keys, account: str, interval_ms: int) -> Read[bool]:
    """Whether this replica lists the account's batches now (at most one per interval)."""
    return Read(
        [("SET", keys.list_turn(account), 1, "NX", "PX", interval_ms)], lambda out: bool(out[0])
    )


def next_fence(keys: Keys, account: str) -> Read[int]:
    """A new fencing token for the account's create lock."""
    return Read([("INCR", keys.fence(account))], lambda out: int(out[0]))


def create_lock_key(keys: Keys, account: str) -> str:
    return keys.create_lock(account)


def open_intent(keys: Keys, account: str) -> Read[str]:
    """The assembly whose create may have made a batch nobody recorded yet ('' for none)."""
    return Read([("GET", keys.open_intent(account))], lambda out: text(out[0]))


def intent(keys: Keys, account: str, asm: str, fence: str, seen_open: str) -> Call[int]:
    """INTENT: write the submission intent under the create lock (see intent.lua)."""
    other = keys.assembly(account, seen_open) if seen_open else keys.assembly(account, asm)
    return call(
        "intent",
        [keys.create_lock(account), keys.open_intent(account), keys.assembly(account, asm), other],
        [fence, asm, seen_open],
        int,
    )


def clear_intent(keys: Keys, account: str, asm: str, fence: str) -> Call[int]:
    """CLEAR_INTENT: withdraw an intent whose create certainly made nothing."""
    return call(
        "clear_intent",
        [keys.create_lock(account), keys.assembly(account, asm), keys.open_intent(account)],
        [fence, asm],
        int,
    )


def posting(keys: Keys, account: str, asm: str, fence: str) -> Call[bool]:
    """POSTING: the create's POST is about to start (under the create lock)."""
    return call(
        "posting",
        [keys.create_lock(account), keys.assembly(account, asm)],
        [fence],
        lambda r: bool(int(r)),
    )


def mark_unsure(keys: Keys, account: str, asm: str, since_ms: int) -> Read[None]:
    """Note when a create's outcome was first found unknown (it may yet show in the list)."""
    return Read(
        [("HSETNX", keys.assembly(account, asm), Assembly.UNSURE_SINCE, since_ms)],
        lambda out: None,
    )


@dataclass(frozen=True, slots=True)
class Recorded:
    code: int  # 1 recorded now, 2 already, -1 the assembly holds another batch
    batch_id: str


def record(
    keys: Keys,
    account: str,
    asm: str,
    batch_id: str,
    *,
    first_poll_ms: int,
    retention_ms: int,
    results_url: str | None = None,
) -> Call[Recorded]:
    """RECORD: the created (or adopted) batch id, idempotently."""
    return call(
        "record",
        [
            keys.assembly(account, asm),
            keys.open_intent(account),
            keys.batch(account, batch_id),
            keys.batches(account),
            keys.assemblies(account),
            keys.counters(account),
        ],
        [asm, batch_id, first_poll_ms, retention_ms, results_url or ""],
        lambda reply: Recorded(int(reply[0]), text(reply[1])),
    )


def known_batches(keys: Keys, account: str, batch_ids: Sequence[str]) -> Read[list[bool]]:
    """Whether batchd created or adopted each of these batches (within retention)."""
    return Read(
        [("EXISTS", keys.batch(account, b)) for b in batch_ids],
        lambda out: [bool(v) and not isinstance(v, Exception) for v in out],
    )


def find_batch(keys: Keys, accounts: Sequence[str], batch_id: str) -> Read[tuple[str, str] | None]:
    """(account, assembly) that holds this batch id, if batchd knows it."""
    names = list(accounts)

    def parse(out: list[Any]) -> tuple[str, str] | None:
        for account, asm in zip(names, out, strict=True):
            if asm and not isinstance(asm, Exception):
                return account, text(asm)
        return None

    return Read([("GET", keys.batch(a, batch_id)) for a in names], parse, errors=True)


def recent_batches(keys: Keys, account: str, limit: int = 1000) -> Read[list[str]]:
    """The account's assemblies that made a batch, newest first (within retention)."""
    return Read(
        [("ZREVRANGE", keys.batches(account), 0, limit - 1)],
        lambda out: [text(a) for a in out[0]],
    )


# -- following the batch -----------------------------------------------------------------------


def progress(keys: Keys, account: str, asm: str, polls: int, counts: dict[str, int]) -> Read[None]:
    """A poll's findings: the batch is still processing, with these counts."""
    return Read(
        [("HSET", keys.assembly(account, asm), Assembly.POLLS, polls, *_flat(counts))],
        lambda out: None,
    )


def ended(
    keys: Keys,
    account: str,
    asm: str,
    counts: dict[str, int],
    results_url: str | None,
    ended_ms: int,
    duration_ms: int | None = None,
) -> Read[None]:
    """The batch ended: its results are due for fan-out. `duration_ms`, how long it took from
    its cut, joins the account's batch durations (capped at DURATION_SAMPLES)."""
    fields: list[Any] = [Assembly.STATE, AssemblyState.ENDED.value, Assembly.ENDED, ended_ms]
    if results_url:
        fields += [Assembly.RESULTS_URL, results_url]
    commands: list[tuple[Any, ...]] = [
        ("HSET", keys.assembly(account, asm), *fields, *_flat(counts)),
        ("HDEL", keys.assembly(account, asm), Assembly.NOT_FOUND_SINCE),
    ]
    if duration_ms is not None:
        commands += [
            ("LPUSH", keys.durations(account), max(0, duration_ms)),
            ("LTRIM", keys.durations(account), 0, DURATION_SAMPLES - 1),
        ]
    return Read(commands, lambda out: None)


def not_found_since(keys: Keys, account: str, asm: str, since_ms: int) -> Read[int]:
    """Note the first 404 in a row for this batch; returns when that first one was (ms)."""
    ak = keys.assembly(account, asm)
    return Read(
        [
            ("HSETNX", ak, Assembly.NOT_FOUND_SINCE, since_ms),
            ("HGET", ak, Assembly.NOT_FOUND_SINCE),
        ],
        lambda out: int(text(out[1]) or since_ms),
    )


def found_again(keys: Keys, account: str, asm: str) -> Read[None]:
    return Read([("HDEL", keys.assembly(account, asm), Assembly.NOT_FOUND_SINCE)], lambda out: None)


def deadline_cancel(keys: Keys, account: str, asm: str, at_ms: int) -> Read[bool]:
    """Mark a batch canceled for its earliest deadline (only one replica wins: True for it);
    its canceled lines go round again by their own deadlines, whatever `retry_canceled`."""
    return Read(
        [("HSETNX", keys.assembly(account, asm), Assembly.DEADLINE_CANCEL, at_ms)],
        lambda out: bool(out[0]),
    )


def deadline_cancel_failed(keys: Keys, account: str, asm: str) -> Read[None]:
    """The cancel of a batch for its deadline was not made: unmark it, to be tried again."""
    return Read([("HDEL", keys.assembly(account, asm), Assembly.DEADLINE_CANCEL)], lambda out: None)


def operator_cancel(keys: Keys, account: str, asm: str, on: bool) -> Read[None]:
    """Mark (or unmark, when the cancel failed) a batch canceled by an operator: its canceled
    lines end `canceled` instead of going round again."""
    ak = keys.assembly(account, asm)
    if on:
        return Read([("HSET", ak, Assembly.OPERATOR_CANCEL, "1")], lambda out: None)
    return Read([("HDEL", ak, Assembly.OPERATOR_CANCEL)], lambda out: None)


def _flat(counts: dict[str, int]) -> list[Any]:
    out: list[Any] = []
    for k, v in counts.items():
        out += [k, v]
    return out


# -- ending the requests -----------------------------------------------------------------------


def _lane_keys(keys: Keys, account: str, lane: str) -> list[str]:
    return [keys.pending(account, lane), keys.lane_stats(account, lane), keys.lanes(account)]


@dataclass(frozen=True, slots=True)
class Line:
    """One results line to apply: the request's token, its class, its result, its usage."""

    token: str
    cls: str  # ok | err | retry | canceled | expired
    result: bytes
    usage: str = ""  # model|input|output|cache write 5m|cache write 1h|cache read


@dataclass(frozen=True, slots=True)
class Applied:
    done: int
    requeued: int
    ignored: int
    replies: int
    ends: tuple[tuple[str, float], ...] = ()
    """(status, seconds from submit to end) of each request that ended."""
    escalated: int = 0
    """Requests sent on to the real-time queue (their deadline, or `retry.expired`)."""


def _applied(reply: Any) -> Applied:
    done, requeued, ignored, queued = (int(v) for v in reply[:4])
    if len(reply) < 6:
        return Applied(done, requeued, ignored, queued)
    now, flat = int(reply[4]), reply[5]
    ends = tuple(
        (text(flat[i]), max(0.0, (now - int(flat[i + 1])) / 1000)) for i in range(0, len(flat), 2)
    )
    escalated = int(reply[6]) if len(reply) > 6 else 0
    return Applied(done, requeued, ignored, queued, ends, escalated)


def fanout(
    keys: Keys,
    account: str,
    asm: str,
    batch_id: str,
    lane: str,
    lines: Sequence[Line],
    *,
    retention_ms: int,
    max_attempts: int,
    ledger: tuple[str, str, int, int],
    too_late_ms: int = 0,
    policy: str = "batch",
    queues: Sequence[str] = (),
) -> Call[Applied]:
    """FANOUT: apply result lines of this assembly's batch. `ledger` is (hour bucket key, day
    bucket key, hour bucket expiry ms, day bucket expiry ms). A line going round again whose
    request's deadline is before `too_late_ms` (no new batch can make it) follows `policy`
    (the account's deadline policy: realtime, fail or batch). Replies bound for `queues` are
    pushed onto them in the same call (see `replies.direct_queues` for when that is safe);
    the others go to the account's outbox, and `Applied.replies` counts those."""
    k = [
        *finish_keys(keys, account),
        keys.assembly(account, asm),
        *_lane_keys(keys, account, lane),
        ledger[0],
        ledger[1],
        keys.realtime_queue(account),
        keys.reply_queues(account),
        *[keys.reply_queue(q) for q in queues],
    ]
    a: list[str | bytes | int] = [
        account,
        asm,
        batch_id,
        retention_ms,
        max_attempts,
        lane,
        ledger[2],
        ledger[3],
        too_late_ms,
        policy,
        len(queues),
        QUEUE_SEEN_MS,
        *queues,
    ]
    k += keys.request_key_groups(account, [line.token for line in lines])
    for line in lines:
        a += (line.token, line.cls, line.result, line.usage)
    return call("fanout", k, a, _applied)


def missing(
    keys: Keys,
    account: str,
    asm: str,
    batch_id: str,
    lane: str,
    tokens: Sequence[str],
    result: bytes,
    *,
    retention_ms: int,
    max_attempts: int,
) -> Call[tuple[int, int, int]]:
    """MISSING: requests without a line go round again (or end dead); (done, requeued,
    replies queued)."""
    k = [*finish_keys(keys, account), keys.assembly(account, asm), *_lane_keys(keys, account, lane)]
    for token in tokens:
        k += keys.request_keys(account, token).all()
    a: list[str | bytes | int] = [
        account,
        asm,
        batch_id,
        retention_ms,
        max_attempts,
        lane,
        result,
        *tokens,
    ]
    return call("missing", k, a, lambda reply: (int(reply[0]), int(reply[1]), int(reply[2])))


def fail_all(
    keys: Keys,
    account: str,
    asm: str,
    batch_id: str,
    tokens: Sequence[str],
    status: str,
    result: bytes,
    *,
    retention_ms: int,
) -> Call[tuple[int, int]]:
    """FAIL_ALL: end these requests of the assembly with one status; (done, replies)."""
    k = finish_keys(keys, account)
    for token in tokens:
        k += keys.request_keys(account, token).all()
    a: list[str | bytes | int] = [account, asm, batch_id, retention_ms, status, result, *tokens]
    return call("fail_all", k, a, lambda reply: (int(reply[0]), int(reply[1])))


def unclaim(keys: Keys, account: str, asm: str, lane: str, tokens: Sequence[str]) -> Call[int]:
    """UNCLAIM: requests of a never-sent assembly go back to their lane, attempt refunded."""
    k = [keys.counters(account), *_lane_keys(keys, account, lane), keys.deadlines(account)]
    k += [keys.request(account, t) for t in tokens]
    return call("unclaim", k, [asm, lane, *tokens], int)


def close(
    keys: Keys,
    account: str,
    asm: str,
    *,
    retention_ms: int,
    outcome: str = "",
    batch_id: str = "",
) -> Call[int]:
    """CLOSE: the assembly is done; counts `batches_ended:<outcome>` once."""
    return call(
        "close",
        [
            keys.assembly(account, asm),
            keys.assembly_entries(account, asm),
            keys.assemblies(account),
            keys.counters(account),
            keys.batch(account, batch_id) if batch_id else keys.assembly(account, asm),
            keys.deadline_batches(account),
        ],
        [asm, retention_ms, outcome, batch_id],
        int,
    )


def params_of(keys: Keys, account: str, tokens: Sequence[str]) -> Read[list[bytes | None]]:
    """The stored params of these requests, in order (None where a request has none)."""
    return Read(
        [("MGET", *[keys.params(account, t) for t in tokens])],
        lambda out: [v if isinstance(v, bytes) else None for v in out[0]],
    )


def count_fetch(keys: Keys, account: str, asm: str) -> Read[int]:
    """One more download of the batch's results; how many there have been."""
    return Read(
        [("HINCRBY", keys.assembly(account, asm), Assembly.FETCHES, 1)],
        lambda out: int(out[0]),
    )


def ledger_keys(keys: Keys, account: str, now_ms: int) -> tuple[str, str, int, int]:
    """The ledger's hour and day buckets of `now_ms`, and when each expires."""
    hour, day = now_ms // 3_600_000, now_ms // 86_400_000
    return (
        keys.ledger_hour(account, hour),
        keys.ledger_day(account, day),
        (hour + 1) * 3_600_000 + LEDGER_HOUR_KEEP_MS,
        (day + 1) * 86_400_000 + LEDGER_DAY_KEEP_MS,
    )
