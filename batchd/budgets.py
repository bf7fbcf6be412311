"""Spend caps: what each capped scope has used today and this month, and how much of a lane fits.

Used = the ledger at the prices billed (a model without a price at the table's highest rates)
plus the estimates of batches cut under a cap whose results are not in yet. Before a lane is cut
its head is priced request by request (input tokens from the stored size, output at most
`max_tokens`); the cut takes only what fits, and a lane whose next request fits no more is held:
its requests stay pending until a higher cap, a new UTC day or month, or cheaper results than
estimated make room. Holds are recorded for `status` and /metrics.
"""

from __future__ import annotations

import datetime
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from batchd.defaults import (
    BUDGET_CLOSED_MS,
    BUDGET_HOLD_MS,
    BUDGET_RESERVE_GRACE_MS,
    ESTIMATE_BYTES_PER_TOKEN,
    ESTIMATE_CHUNK,
    ESTIMATE_UNKNOWN_MAX_TOKENS,
    LEDGER_FOLD_AFTER_DAYS,
)
from batchd.logs import get_logger
from batchd.pricing import Prices
from batchd.runtime import Runtime, lease
from batchd.settings import BudgetCap, Settings
from batchd.store import Store
from batchd.store import budgets as budget_store
from batchd.store import lanes as lane_store
from batchd.store import ledger as ledger_store
from batchd.store.budgets import EVERY_REQUEST, Basis, Hold
from batchd.store.keys import is_token
from batchd.store.ledger import DAY_MS
from batchd.store.records import AssemblyState
from batchd.validate import BODY_ENVELOPE

log = get_logger("batchd.budgets")

PERIODS = ("daily", "monthly")


def applies(cap: BudgetCap, account: str, tag: str) -> bool:
    """Whether spend of this account and tag counts against the cap."""
    return cap.account in (None, account) and cap.tag in (None, tag)


def month_start_day(day: int) -> int:
    """The first day (since the epoch) of the UTC month holding `day`."""
    d = datetime.date(1970, 1, 1) + datetime.timedelta(days=day)
    return (d.replace(day=1) - datetime.date(1970, 1, 1)).days


def period_end_iso(period: str, now_ms: int) -> str:
    """When a cap's period ends (UTC), as an ISO date: the next day, or the next month's first."""
    d = datetime.date(1970, 1, 1) + datetime.timedelta(days=now_ms // DAY_MS)
    if period == "daily":
        return (d + datetime.timedelta(days=1)).isoformat()
    return (d.replace(day=28) + datetime.timedelta(days=4)).replace(day=1).isoformat()


@dataclass
class Standing:
    """One cap in one period: its limit, what the ledger says was spent, and what batches in
    flight may still add."""

    cap: BudgetCap
    period: str
    limit: float
    spent: float = 0.0
    reserved: float = 0.0

    @property
    def used(self) -> float:
        return self.spent + self.reserved

    @property
    def left(self) -> float:
        return self.limit - self.used

    @property
    def reached(self) -> bool:
        return self.used >= self.limit

    def describe(self, now_ms: int) -> str:
        """Why submits are refused, for the producer's error."""
        return (
            f"budget: {self.cap.scope} reached its {self.period} spend cap of "
            f"${self.limit:.2f} (used ${self.used:.2f}, batches in flight included); it frees "
            f"on {period_end_iso(self.period, now_ms)} (UTC) or when the cap is raised"
        )


@dataclass
class Fit:
    """How many of a lane's head requests fit every cap, what they may cost, and the cap the
    next one would pass (None when the head fits whole)."""

    count: int = 0
    usd: float = 0.0
    tags: dict[str, float] = field(default_factory=dict)
    blocked: Standing | None = None
    next_usd: float = 0.0


def _entry(raw: bytes) -> tuple[str, int] | None:
    """(token, framed size) of a pending entry batchd wrote; None for any other."""
    parts = raw.decode("utf-8", "replace").split(" ")
    if len(parts) != 3 or not is_token(parts[0]) or not parts[1].isdigit():
        return None
    return parts[0], int(parts[1])


class Budgets:
    """The caps of the settings, read against the ledger (past days' spend cached: they are
    final)."""

    def __init__(self, store: Store, settings: Settings, prices: Prices | None = None) -> None:
        self.store = store
        self.keys = store.keys
        self.settings = settings
        self.caps = list(settings.budgets.caps)
        self.prices = prices or Prices(settings.prices)
        self._final: dict[tuple[str, int], dict[str, float]] = {}
        self._lock = threading.Lock()

    @property
    def active(self) -> bool:
        return bool(self.caps)

    def covers(self, account: str) -> bool:
        """Whether any cap counts this account's spend."""
        return any(c.account in (None, account) for c in self.caps)

    def _accounts(self) -> list[str]:
        if any(c.account is None for c in self.caps):
            return list(self.settings.accounts)
        return sorted({c.account for c in self.caps if c.account})

    def _spend_by_tag(self, entries: Sequence[ledger_store.Entry]) -> dict[str, float]:
        out: dict[str, float] = {}
        for e in entries:
            out[e.tag] = out.get(e.tag, 0.0) + self.prices.spend(e.model, e.usage, e.mode)
        return out

    def _days(
        self, accounts: Sequence[str], first: int, today: int
    ) -> dict[tuple[str, int], dict[str, float]]:
        """Spend by tag of each (account, day) from `first` to today."""
        final_before = today - LEDGER_FOLD_AFTER_DAYS + 1
        out: dict[tuple[str, int], dict[str, float]] = {}
        wanted: list[tuple[str, int]] = []
        with self._lock:
            for a in accounts:
                for d in range(first, today + 1):
                    cached = self._final.get((a, d)) if d < final_before else None
                    if cached is None:
                        wanted.append((a, d))
                    else:
                        out[(a, d)] = cached
        if wanted:
            read = self.store.read(ledger_store.read_days(self.keys, wanted))
            with self._lock:
                for (a, d), entries in zip(wanted, read, strict=True):
                    out[(a, d)] = self._spend_by_tag(entries)
                    if d < final_before:
                        self._final[(a, d)] = out[(a, d)]
        return out

    def standings(self, now_ms: int, *, prune: bool = False) -> list[Standing]:
        """Every cap's position in each period it limits. With `prune`, estimates whose batch
        is done (its results are in the ledger now) or never came to be are dropped."""
        if not self.caps:
            return []
        accounts = self._accounts()
        today = now_ms // DAY_MS
        first = month_start_day(today)
        days = self._days(accounts, first, today)
        live = self._reserved(accounts, now_ms, prune)
        out: list[Standing] = []
        for cap in self.caps:
            for period, limit in (("daily", cap.daily), ("monthly", cap.monthly)):
                if limit is None:
                    continue
                s = Standing(cap, period, limit)
                since = today if period == "daily" else first
                for (a, d), by_tag in days.items():
                    if d < since or cap.account not in (None, a):
                        continue
                    s.spent += sum(v for t, v in by_tag.items() if cap.tag in (None, t))
                for r in live:
                    if cap.account not in (None, r.account):
                        continue
                    s.reserved += r.usd if cap.tag is None else r.tags.get(cap.tag, 0.0)
                out.append(s)
        return out

    def _reserved(
        self, accounts: Sequence[str], now_ms: int, prune: bool
    ) -> list[budget_store.Reserved]:
        found = self.store.read(budget_store.reserved(self.keys, accounts))
        if not found:
            return []
        states = self.store.read(
            budget_store.assembly_states(self.keys, [(r.account, r.assembly) for r in found])
        )
        live: list[budget_store.Reserved] = []
        gone: dict[str, list[str]] = {}
        for r, state in zip(found, states, strict=True):
            finished = state == AssemblyState.DONE.value
            never = state is None and now_ms - r.at_ms > BUDGET_RESERVE_GRACE_MS
            if finished or never:
                gone.setdefault(r.account, []).append(r.assembly)
            else:
                live.append(r)
        if prune:
            for account, asms in gone.items():
                self.store.read(budget_store.forget(self.keys, account, asms))
        return live

    # -- a lane's cut --------------------------------------------------------------------------

    def price(self, size: int, basis: Basis) -> float:
        """At most what one batched request costs: input from its stored size, output at most
        its max_tokens."""
        out = basis.max_tokens if basis.max_tokens is not None else ESTIMATE_UNKNOWN_MAX_TOKENS
        return self.prices.estimate(basis.model, size // ESTIMATE_BYTES_PER_TOKEN, out)

    def fit(self, account: str, lane: str, standings: Sequence[Standing]) -> Fit:
        """How much of the lane's head a cut may take without passing a cap (the cut's own
        count and byte limits applied as CLAIM applies them)."""
        b = self.settings.batch
        mine = [s for s in standings if s.cap.account in (None, account)]
        left = {id(s): s.left for s in mine}
        fit = Fit()
        nbytes, start = 0, 0
        while fit.count < b.max_requests:
            raw = self.store.read(
                lane_store.head_range(self.keys, account, lane, start, ESTIMATE_CHUNK)
            )
            if not raw:
                return fit
            entries = [_entry(e) for e in raw]
            tokens = [e[0] for e in entries if e is not None]
            read = self.store.read(budget_store.bases(self.keys, account, tokens))
            found = iter(read)
            for e in entries:
                basis = next(found) if e is not None else None
                if e is None or basis is None:
                    continue  # never sent: the claim sets it aside or drops it
                size = e[1]
                if fit.count >= b.max_requests or (
                    fit.count > 0 and BODY_ENVELOPE + nbytes + size + fit.count > b.max_bytes
                ):
                    return fit
                usd = self.price(size, basis)
                caps = [s for s in mine if applies(s.cap, account, basis.tag)]
                over = next((s for s in caps if usd > left[id(s)]), None)
                if over is not None:
                    fit.blocked, fit.next_usd = over, usd
                    return fit
                for s in caps:
                    left[id(s)] -= usd
                fit.count += 1
                fit.usd += usd
                fit.tags[basis.tag] = fit.tags.get(basis.tag, 0.0) + usd
                nbytes += size
            start += len(raw)
        return fit

    def admit(self, rt: Runtime, account: str, lane: str, asm: str, now_ms: int) -> int | None:
        """How many requests the lane's next cut (into `asm`) may take: its estimate is
        reserved first. 0 when a cap holds the lane (recorded as a hold); None when another
        replica is checking the caps right now (try on the next tick)."""
        with lease(rt, budget_store.lock_key(self.keys)) as held:
            if held is None:
                return None
            standings = self.standings(now_ms, prune=True)
            fit = self.fit(account, lane, standings)
            if fit.count == 0 and fit.blocked is not None:
                self._hold(account, lane, fit.blocked, fit.next_usd, now_ms)
                return 0
            self.store.read(budget_store.unhold(self.keys, account, [lane]))
            if fit.count == 0:
                # nothing in the head will be sent (stale or foreign entries): let the claim
                # clear it away
                return self.settings.batch.max_requests
            self.store.read(
                budget_store.reserve(self.keys, account, asm, fit.usd, fit.tags, now_ms)
            )
            return fit.count

    def _hold(self, account: str, lane: str, s: Standing, next_usd: float, now_ms: int) -> None:
        found = self.store.read(budget_store.holds(self.keys, [account]))
        before = next((h for h in found if h.lane == lane), None)
        if before is None:
            log.warning(
                "lane held at a spend cap: its requests stay pending",
                lane=f"{account}/{lane}",
                scope=s.cap.scope,
                period=s.period,
                cap_usd=round(s.limit, 2),
                used_usd=round(s.used, 4),
                next_usd=round(next_usd, 6),
            )
        h = Hold(account, lane, s.cap.scope, s.period, s.limit, s.used, next_usd,
                 before.since_ms if before is not None else now_ms)  # fmt: skip
        self.store.read(budget_store.hold(self.keys, h, BUDGET_HOLD_MS))

    def held_lanes(self, account: str) -> set[str]:
        return {h.lane for h in self.store.read(budget_store.holds(self.keys, [account]))}

    def release(self, account: str, lane: str) -> None:
        """The lane is no longer due (emptied, say): it is no longer held."""
        self.store.read(budget_store.unhold(self.keys, account, [lane]))

    # -- refused submits ---------------------------------------------------------------------

    def publish_refusals(self, now_ms: int) -> dict[str, dict[str, str]]:
        """Mark the scopes whose cap is reached as refusing submits (`budgets.refuse_submits`);
        the producers read the marks. Returns them by account."""
        closed: dict[str, dict[str, str]] = {a: {} for a in self.settings.accounts}
        for s in self.standings(now_ms):
            if not s.reached:
                continue
            for account in closed:
                if s.cap.account not in (None, account):
                    continue
                scope = EVERY_REQUEST if s.cap.tag is None else f"tag:{s.cap.tag}"
                closed[account].setdefault(scope, s.describe(now_ms))
        for account, scopes in closed.items():
            self.store.read(budget_store.set_closed(self.keys, account, scopes, BUDGET_CLOSED_MS))
        return closed


# -- for `batchd status` -------------------------------------------------------------------------


def held(store: Store, accounts: Sequence[str]) -> list[dict[str, Any]]:
    """The lanes spend caps hold now, as `status --json` shows them."""
    return [h.as_dict() for h in store.read(budget_store.holds(store.keys, accounts))]


def describe(hold: Mapping[str, Any]) -> str:
    """One held lane as `status` prints it."""
    return (
        f"{hold['account']}/{hold['lane']} held by the {hold['period']} cap of {hold['scope']}: "
        f"${hold['used_usd']:.2f} of ${hold['cap_usd']:.2f} used, the next request may cost "
        f"${hold['next_usd']:.4f}"
    )
