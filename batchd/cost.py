"""Cost reports: the ledger over a time range, grouped by account, model, tag, lane, mode, day or
hour, each row with its tokens, its cost as billed, the same tokens at real-time prices, and
the saving. `batchd cost`, `GET /v1/cost` and the demo's summary print these.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchd.pricing import Cost, Prices
from batchd.settings import Settings
from batchd.store import Store
from batchd.store import ledger as ledger_store
from batchd.store.ledger import DAY_MS, HOUR_MS, Entry, Usage

#: What a report may be grouped by.
GROUPS = ("account", "model", "tag", "lane", "mode", "day", "hour")
#: A range with no start given covers this much before its end.
DEFAULT_SPAN_MS = 7 * DAY_MS

_RELATIVE = re.compile(r"^(\d+)\s*([mhdw])$")
_UNIT_MS = {"m": 60_000, "h": HOUR_MS, "d": DAY_MS, "w": 7 * DAY_MS}


def parse_time(value: str, now_ms: int) -> int:
    """A time as epoch ms: `now`, a span before now (`30m`, `24h`, `7d`, `2w`), an ISO date
    (`2026-12-01`, midnight UTC) or time (`2026-12-01T10:00`, UTC unless it says otherwise),
    or epoch milliseconds. Raises ValueError naming what it accepts."""
    v = value.strip()
    if v == "now":
        return now_ms
    m = _RELATIVE.match(v)
    if m:
        return now_ms - int(m.group(1)) * _UNIT_MS[m.group(2)]
    if v.isdigit() and len(v) >= 11:
        return int(v)
    try:
        stamp = datetime.datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{value!r} is not a time: give now, 30m, 24h, 7d, 2w, 2026-12-01, "
            "2026-12-01T10:00 (UTC) or epoch milliseconds"
        ) from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return int(stamp.timestamp() * 1000)


def iso_ms(ms: int) -> str:
    stamp = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%SZ")


def _group_value(e: Entry, name: str) -> str:
    if name == "day":
        return iso_ms(e.start_ms // DAY_MS * DAY_MS)[:10]
    if name == "hour":
        return iso_ms(e.start_ms // HOUR_MS * HOUR_MS)[:13] + ":00Z"
    if name == "mode":
        return e.mode
    return str(getattr(e, name))


@dataclass
class Row:
    """Usage and cost of one group (or of everything: `key` empty)."""

    key: dict[str, str]
    usage: Usage = field(default_factory=Usage)
    cost: Cost = field(default_factory=Cost)
    unpriced: set[str] = field(default_factory=set)

    def add(self, e: Entry, prices: Prices) -> None:
        self.usage = self.usage + e.usage
        c = prices.cost(e.model, e.usage, e.mode)
        self.cost = self.cost + c
        if not c.priced:
            self.unpriced.add(e.model)

    def as_dict(self) -> dict[str, Any]:
        u = self.usage
        return {
            **self.key,
            "requests": u.requests,
            "tokens": {
                "input": u.input,
                "output": u.output,
                "cache_write_5m": u.cache_write_5m,
                "cache_write_1h": u.cache_write_1h,
                "cache_read": u.cache_read,
            },
            "cost_usd": round(self.cost.billed, 6),
            "realtime_cost_usd": round(self.cost.list, 6),
            "saved_usd": round(self.cost.saved, 6),
            "priced": not self.unpriced,
            "unpriced_models": sorted(self.unpriced),
        }


@dataclass
class Report:
    """Rows by group, and the total, over [since, until)."""

    since_ms: int
    until_ms: int
    by: tuple[str, ...]
    rows: list[Row]
    total: Row

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": iso_ms(self.since_ms),
            "until": iso_ms(self.until_ms),
            "by": list(self.by),
            "currency": "USD",
            "rows": [r.as_dict() for r in self.rows],
            "total": self.total.as_dict(),
        }


def check_groups(by: Iterable[str]) -> tuple[str, ...]:
    """The group names, checked; raises ValueError for an unknown one."""
    names = tuple(b.strip() for b in by if b.strip())
    bad = [b for b in names if b not in GROUPS]
    if bad:
        raise ValueError(f"cannot group by {', '.join(bad)}: choose from {', '.join(GROUPS)}")
    return names


def build(
    entries: Iterable[Entry], prices: Prices, by: Sequence[str], since_ms: int, until_ms: int
) -> Report:
    """Group entries and price each group."""
    groups = check_groups(by)
    rows: dict[tuple[str, ...], Row] = {}
    total = Row({})
    for e in entries:
        key = tuple(_group_value(e, g) for g in groups)
        row = rows.get(key)
        if row is None:
            row = rows[key] = Row(dict(zip(groups, key, strict=True)))
        row.add(e, prices)
        total.add(e, prices)
    ordered = [rows[k] for k in sorted(rows)]
    return Report(since_ms, until_ms, groups, ordered, total)


def report(
    store: Store,
    settings: Settings,
    *,
    since_ms: int | None = None,
    until_ms: int | None = None,
    by: Sequence[str] = ("account",),
    accounts: Sequence[str] | None = None,
    tag: str | None = None,
    prices: Prices | None = None,
) -> Report:
    """The ledger of these accounts (default: every configured one) in [since, until), by the
    groups given; only one tag's usage when `tag` is given."""
    now = store.time_ms()
    until = now if until_ms is None else until_ms
    since = until - DEFAULT_SPAN_MS if since_ms is None else since_ms
    if since >= until:
        raise ValueError("since must come before until")
    since = since // HOUR_MS * HOUR_MS  # what the ledger's resolution covers
    names = list(accounts) if accounts is not None else list(settings.accounts)
    entries = store.read(ledger_store.read(store.keys, names, since, until, now))
    if tag is not None:
        entries = [e for e in entries if e.tag == tag]
    return build(entries, prices or Prices(settings.prices), by, since, until)
