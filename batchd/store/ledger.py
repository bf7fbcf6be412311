"""The token ledger: each account's usage by model, tag, lane and kind, in hour and day buckets.

The fan-out writes the buckets in the same script call as each result (see `fanout.lua`);
`record` adds usage from outside a batch (a real-time call's, whose lane slot is `realtime`).
Reads here plan which buckets cover a time range, so their work is bounded by the retention;
`fold` adds days that can no longer change into an all-time total, which counters read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from batchd.defaults import (
    LEDGER_DAY_KEEP_MS,
    LEDGER_FOLD_AFTER_DAYS,
    LEDGER_FOLD_CHUNK,
    LEDGER_HOUR_KEEP_MS,
    LEDGER_ONCE_MS,
)
from batchd.store.assemblies import ledger_keys
from batchd.store.keys import Keys
from batchd.store.runner import Read
from batchd.store.scripts import Call, call, text

HOUR_MS = 3_600_000
DAY_MS = 86_400_000

#: The lane slot of usage that went through no batch (billed at list prices).
REALTIME_LANE = "realtime"
#: How the tokens were bought: through a batch (at the batch discount) or in real time.
MODES = ("batch", "realtime")
#: The kinds a bucket field ends with, and the Usage attribute each adds to.
KINDS = {
    "n": "requests",
    "in": "input",
    "out": "output",
    "cw5m": "cache_write_5m",
    "cw1h": "cache_write_1h",
    "cr": "cache_read",
}
#: The marker field of the total (not usage).
FOLDED = "@folded"


@dataclass(frozen=True, slots=True)
class Usage:
    """Requests and tokens by kind, as the API's `usage` reports them (input excludes the
    tokens written to or read from the prompt cache)."""

    requests: int = 0
    input: int = 0
    output: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    cache_read: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(Usage)))

    @property
    def tokens(self) -> int:
        """Every token of every kind."""
        return (
            self.input + self.output + self.cache_write_5m + self.cache_write_1h + self.cache_read
        )

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(Usage)}


@dataclass(frozen=True, slots=True)
class Entry:
    """One bucket's usage of one model, tag and lane."""

    account: str
    model: str
    tag: str
    lane: str
    start_ms: int
    """Where the bucket starts (0 for the all-time total)."""
    usage: Usage

    @property
    def mode(self) -> str:
        return "realtime" if self.lane == REALTIME_LANE else "batch"


def _int(value: Any) -> int | None:
    s = text(value)
    return int(s) if s.lstrip("-").isdigit() else None


def _mapping(raw: Any) -> dict[Any, Any]:
    if isinstance(raw, Exception) or not raw:
        return {}
    if isinstance(raw, dict):
        return raw
    return dict(zip(raw[::2], raw[1::2], strict=True))


def parse_bucket(account: str, start_ms: int, raw: Any) -> list[Entry]:
    """A bucket's hash as entries; fields batchd did not write are left out."""
    sums: dict[tuple[str, str, str], dict[str, int]] = {}
    for k, v in _mapping(raw).items():
        parts = text(k).rsplit("|", 3)
        n = _int(v)
        if len(parts) != 4 or parts[3] not in KINDS or n is None:
            continue
        model, tag, lane, kind = parts
        slot = sums.setdefault((model, tag, lane), {})
        slot[KINDS[kind]] = slot.get(KINDS[kind], 0) + n
    return [
        Entry(account, model, tag, lane, start_ms, Usage(**counts))
        for (model, tag, lane), counts in sorted(sums.items())
    ]


# -- which buckets cover a range -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """An hour or a day, by its index since the epoch."""

    hourly: bool
    index: int

    @property
    def start_ms(self) -> int:
        return self.index * (HOUR_MS if self.hourly else DAY_MS)

    def key(self, keys: Keys, account: str) -> str:
        if self.hourly:
            return keys.ledger_hour(account, self.index)
        return keys.ledger_day(account, self.index)


def plan(since_ms: int, until_ms: int, now_ms: int) -> list[Bucket]:
    """The buckets that cover [since, until) with an hour's resolution (`since` is taken back
    to its hour's start, the hour holding `until` counts): day buckets for whole days, hour
    buckets for the partial days at either end. An hour past its bucket's retention counts
    through its day's bucket, when that day starts inside the range: older usage has a day's
    resolution. At most 48 hour buckets and one bucket per retained day, whatever the range."""
    since = max(
        since_ms // HOUR_MS * HOUR_MS, (now_ms - LEDGER_DAY_KEEP_MS) // DAY_MS * DAY_MS - DAY_MS
    )
    until = min(until_ms, now_ms + HOUR_MS)
    if since >= until:
        return []
    out: list[Bucket] = []
    seen_days: set[int] = set()

    def day(d: int) -> None:
        if d not in seen_days:
            seen_days.add(d)
            out.append(Bucket(False, d))

    def hours(start: int, end: int) -> None:
        for h in range(-(-start // HOUR_MS), -(-end // HOUR_MS)):
            if (h + 1) * HOUR_MS + LEDGER_HOUR_KEEP_MS > now_ms:
                out.append(Bucket(True, h))
            elif since <= (h * HOUR_MS) // DAY_MS * DAY_MS < until:
                day(h * HOUR_MS // DAY_MS)

    first_day, end_day = -(-since // DAY_MS), until // DAY_MS
    if first_day < end_day:
        hours(since, first_day * DAY_MS)
        for d in range(first_day, end_day):
            day(d)
        hours(end_day * DAY_MS, until)
    else:
        hours(since, until)
    return out


def read(
    keys: Keys, accounts: Sequence[str], since_ms: int, until_ms: int, now_ms: int
) -> Read[list[Entry]]:
    """Every entry of these accounts' buckets in [since, until) (see `plan`)."""
    buckets = plan(since_ms, until_ms, now_ms)
    pairs = [(a, b) for a in accounts for b in buckets]

    def parse(out: list[Any]) -> list[Entry]:
        found: list[Entry] = []
        for (account, b), raw in zip(pairs, out, strict=True):
            found += parse_bucket(account, b.start_ms, raw)
        return found

    return Read([("HGETALL", b.key(keys, a)) for a, b in pairs], parse, errors=True)


def read_days(keys: Keys, pairs: Sequence[tuple[str, int]]) -> Read[list[list[Entry]]]:
    """The entries of these (account, day) buckets, one list per pair."""

    def parse(out: list[Any]) -> list[list[Entry]]:
        return [
            parse_bucket(account, day * DAY_MS, raw)
            for (account, day), raw in zip(pairs, out, strict=True)
        ]

    return Read([("HGETALL", keys.ledger_day(a, d)) for a, d in pairs], parse, errors=True)


# -- usage from outside a batch ------------------------------------------------------------------


def usage_from_api(u: Any) -> Usage:
    """One call's Usage from the API's `usage` object (a Message's), as the fan-out counts it:
    cache writes split by TTL, anything missing or not a count taken as 0."""
    if not isinstance(u, dict):
        return Usage()

    def n(v: Any) -> int:
        return v if isinstance(v, int) and not isinstance(v, bool) and v > 0 else 0

    created = n(u.get("cache_creation_input_tokens"))
    detail = u.get("cache_creation")
    one_hour = n(detail.get("ephemeral_1h_input_tokens")) if isinstance(detail, dict) else 0
    return Usage(
        1,
        n(u.get("input_tokens")),
        n(u.get("output_tokens")),
        max(0, created - one_hour),
        one_hour,
        n(u.get("cache_read_input_tokens")),
    )


def record(
    keys: Keys,
    account: str,
    model: str,
    usage: Usage,
    now_ms: int,
    *,
    tag: str = "",
    lane: str = REALTIME_LANE,
    once: str | None = None,
) -> Call[bool]:
    """LEDGER_RECORD: add one call's usage to the buckets of `now_ms` (real-time calls: lane
    `realtime`, billed at list prices). With `once` (the call's id, e.g. the Message id) a
    second record of it counts nothing. True when counted."""
    hk, dk, hour_end, day_end = ledger_keys(keys, account, now_ms)
    once_key = hk
    if once is not None:
        once_key = keys.ledger_once(account, hashlib.sha256(once.encode()).hexdigest()[:32])
    prefix = "|".join(p.replace("|", "_") for p in (model or "unknown", tag, lane)) + "|"
    return call(
        "ledger_record",
        [hk, dk, once_key],
        [
            hour_end,
            day_end,
            LEDGER_ONCE_MS if once is not None else 0,
            prefix,
            usage.requests,
            usage.input,
            usage.output,
            usage.cache_write_5m,
            usage.cache_write_1h,
            usage.cache_read,
        ],
        lambda reply: bool(int(reply)),
    )


# -- the all-time total ------------------------------------------------------------------------


def folded(keys: Keys, accounts: Sequence[str]) -> Read[dict[str, int | None]]:
    """The last day folded into each account's total (None: none yet)."""
    names = list(accounts)
    return Read(
        [("HGET", keys.ledger_total(a), FOLDED) for a in names],
        lambda out: {
            a: _int(v) if not isinstance(v, Exception) else None
            for a, v in zip(names, out, strict=True)
        },
        errors=True,
    )


def days_to_fold(last_folded: int | None, now_ms: int) -> list[int]:
    """The days that are final and not in the total yet (none older than the retention)."""
    today = now_ms // DAY_MS
    oldest = today - LEDGER_DAY_KEEP_MS // DAY_MS - 1
    start = max(oldest, (last_folded if last_folded is not None else oldest - 1) + 1)
    return list(range(start, today - LEDGER_FOLD_AFTER_DAYS + 1))


def fold(keys: Keys, account: str, days: Sequence[int]) -> list[Call[int]]:
    """LEDGER_FOLD calls adding these days (oldest first) into the account's total, each day
    once, in chunks of LEDGER_FOLD_CHUNK."""
    calls: list[Call[int]] = []
    for i in range(0, len(days), LEDGER_FOLD_CHUNK):
        chunk = list(days[i : i + LEDGER_FOLD_CHUNK])
        calls.append(
            call(
                "ledger_fold",
                [keys.ledger_total(account), *[keys.ledger_day(account, d) for d in chunk]],
                chunk,
                int,
            )
        )
    return calls


def totals(
    keys: Keys, accounts: Sequence[str], last_folded: dict[str, int | None], now_ms: int
) -> Read[list[Entry]]:
    """Every account's usage of all time: its total, plus the day buckets not folded yet."""
    today = now_ms // DAY_MS
    commands: list[tuple[Any, ...]] = []
    layout: list[tuple[str, int]] = []
    for account in accounts:
        commands.append(("HGETALL", keys.ledger_total(account)))
        layout.append((account, 0))
        after = last_folded.get(account)
        # never folded: every retained day (the collector folds first, so this is rare)
        first = today - LEDGER_DAY_KEEP_MS // DAY_MS - 1 if after is None else after + 1
        for d in range(first, today + 1):
            commands.append(("HGETALL", keys.ledger_day(account, d)))
            layout.append((account, d * DAY_MS))

    def parse(out: list[Any]) -> list[Entry]:
        found: list[Entry] = []
        for (account, start), raw in zip(layout, out, strict=True):
            found += parse_bucket(account, start, raw)
        return found

    return Read(commands, parse, errors=True)


def merge(entries: Iterable[Entry]) -> dict[tuple[str, str, str, str], Usage]:
    """Usage by (account, model, tag, lane), over every bucket given."""
    out: dict[tuple[str, str, str, str], Usage] = {}
    for e in entries:
        k = (e.account, e.model, e.tag, e.lane)
        out[k] = out.get(k, Usage()) + e.usage
    return out
