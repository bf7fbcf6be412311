"""Lanes (account x lane id): their counters, the flush and pause marks, and the claim of a
lane's head into an assembly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchd.store.keys import Keys, is_token
from batchd.store.records import LaneStats
from batchd.store.requests import finish_keys
from batchd.store.runner import Read
from batchd.store.scripts import Call, call, text


def lane_ids(keys: Keys, account: str) -> Read[list[str]]:
    """The account's lanes that have (or had) pending requests."""
    return Read([("SMEMBERS", keys.lanes(account))], lambda out: sorted(text(m) for m in out[0]))


def _entry_age(head: Any) -> int | None:
    """The enqueue time (ms) of a pending entry `<token> <size> <enqueued ms>`; 0 (due at once)
    for an entry batchd did not write, so a cut sets it aside."""
    if not head:
        return None
    parts = _words(head)
    return int(parts[2]) if len(parts) == 3 and parts[2].isdigit() else 0


@dataclass(frozen=True, slots=True)
class Counted:
    """A lane's stats, and whether its counters were spoiled (not numbers)."""

    stats: LaneStats
    spoiled: bool


def stats(keys: Keys, account: str, lanes: Sequence[str]) -> Read[list[Counted]]:
    """Each lane's count, bytes and oldest entry, in one round trip."""
    commands: list[tuple[Any, ...]] = []
    for lane in lanes:
        commands += [
            ("HMGET", keys.lane_stats(account, lane), "count", "bytes"),
            ("LINDEX", keys.pending(account, lane), 0),
        ]

    def parse(out: list[Any]) -> list[Counted]:
        found: list[Counted] = []
        for i, lane in enumerate(lanes):
            counters, head = out[2 * i], out[2 * i + 1]
            if isinstance(head, Exception):
                head = None
            values = (
                [text(counters[0] or b"0"), text(counters[1] or b"0")]
                if not isinstance(counters, Exception)
                else ["x", "x"]
            )
            spoiled = not all(v.lstrip("-").isdigit() for v in values)
            count, nbytes = (0, 0) if spoiled else (int(values[0]), int(values[1]))
            found.append(
                Counted(LaneStats(account, lane, count, nbytes, _entry_age(head)), spoiled)
            )
        return found

    return Read(commands, parse, errors=True)


def reset_stats(keys: Keys, account: str, lane: str) -> Read[int]:
    """Counters spoiled by a foreign writer start again from the list itself (bytes unknown)."""
    q, qs = keys.pending(account, lane), keys.lane_stats(account, lane)
    return Read(
        [("DEL", qs), ("LLEN", q)],
        lambda out: int(out[1]) if not isinstance(out[1], Exception) else 0,
        errors=True,
    )


def set_stats(keys: Keys, account: str, lane: str, count: int, nbytes: int) -> Read[None]:
    return Read(
        [("HSET", keys.lane_stats(account, lane), "count", count, "bytes", nbytes)],
        lambda out: None,
    )


def lock_key(keys: Keys, account: str, lane: str) -> str:
    """The lease that lets one replica at a time cut this lane."""
    return keys.lane_lock(account, lane)


def take_flushes(keys: Keys, account: str) -> Read[set[str]]:
    """The cut requests waiting for this account (lane ids, priorities, or `*`), taken."""
    return Read(
        [("SPOP", keys.flush(account), 1000)],
        lambda out: {text(m) for m in (out[0] or []) if not isinstance(out[0], Exception)},
    )


def request_flush(keys: Keys, account: str, what: str) -> Read[None]:
    """Ask the aggregator to cut a lane (id), every lane of a priority, or `*` now."""
    return Read([("SADD", keys.flush(account), what)], lambda out: None)


def betas_of(keys: Keys, account: str, beta_id: str) -> Read[tuple[str, ...]]:
    """The betas a lane's beta-set id stands for."""
    return Read(
        [("HGET", keys.lane_betas(account), beta_id)],
        lambda out: tuple(b for b in text(out[0]).split(",") if b),
    )


def pause(keys: Keys, account: str, why: str, ms: int) -> Read[None]:
    """Mark the account paused (its key was refused) for `ms`; its requests are kept."""
    return Read([("SET", keys.paused(account), why, "PX", ms)], lambda out: None)


def paused_ms(keys: Keys, account: str) -> Read[int]:
    """How long the account stays paused (ms); 0 when it is not."""
    return Read([("PTTL", keys.paused(account))], lambda out: max(0, int(out[0] or 0)))


def paused_reasons(keys: Keys, accounts: Sequence[str]) -> Read[dict[str, str]]:
    names = list(accounts)
    return Read(
        [("GET", keys.paused(a)) for a in names],
        lambda out: {a: text(v) for a, v in zip(names, out, strict=True) if v},
    )


def resume(keys: Keys, account: str) -> Read[bool]:
    return Read([("DEL", keys.paused(account))], lambda out: bool(out[0]))


def quarantined(keys: Keys, account: str) -> Read[list[bytes]]:
    return Read([("LRANGE", keys.quarantine(account), 0, -1)], lambda out: list(out[0]))


# -- claim -------------------------------------------------------------------------------------


def head(keys: Keys, account: str, lane: str, n: int) -> Read[list[bytes]]:
    """The first `n` pending entries of a lane, as CLAIM is to be told them."""
    return Read([("LRANGE", keys.pending(account, lane), 0, n - 1)], lambda out: list(out[0]))


def head_range(keys: Keys, account: str, lane: str, start: int, n: int) -> Read[list[bytes]]:
    """`n` pending entries of a lane from position `start` (0: the head)."""
    return Read(
        [("LRANGE", keys.pending(account, lane), start, start + n - 1)], lambda out: list(out[0])
    )


@dataclass(frozen=True, slots=True)
class Claimed:
    """CLAIM's answer."""

    code: int  # 0 more may fit, 1 full, 2 lane empty, -1 not assembling, -2 head moved
    count: int
    bytes: int
    replies: int = 0

    FULL = 1
    EMPTY = 2
    NOT_ASSEMBLING = -1
    MOVED = -2


def _claimed(reply: Any) -> Claimed:
    return Claimed(*(int(v) for v in reply))


def _words(entry: Any) -> list[str]:
    """A pending entry's space-separated fields; bytes that are not UTF-8 (never batchd's)
    stay unreadable rather than stop the lane."""
    raw = entry if isinstance(entry, bytes) else text(entry).encode()
    return raw.decode("utf-8", "replace").split(" ")


def _entry_token(entry: bytes) -> str:
    token = _words(entry)[0]
    return token if is_token(token) else "_"


def claim(
    keys: Keys,
    account: str,
    lane: str,
    asm: str,
    entries: Sequence[bytes],
    *,
    max_count: int,
    max_bytes: int,
    lease_ms: int,
    retention_ms: int,
) -> Call[Claimed]:
    """CLAIM: move these head entries of the lane into assembly `asm` (as many as fit)."""
    k = [
        *finish_keys(keys, account),
        keys.assembly(account, asm),
        keys.assembly_entries(account, asm),
        keys.pending(account, lane),
        keys.lane_stats(account, lane),
        keys.assemblies(account),
        keys.quarantine(account),
        keys.deadline_batches(account),
    ]
    for e in entries:
        k += keys.request_keys(account, _entry_token(e)).all()
    a: list[str | bytes | int] = [
        account,
        lane,
        asm,
        max_count,
        max_bytes,
        lease_ms,
        retention_ms,
        *entries,
    ]
    return call("claim", k, a, _claimed)
