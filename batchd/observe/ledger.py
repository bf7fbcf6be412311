"""Cost metrics computed at scrape time from the ledger: tokens, requests, cost as billed, the
same tokens at real-time prices and the saving (all time, by account, model and mode; by tag only
for the tags `ledger.metric_tags` lists), models without a price, and spend caps with their holds.

Like the other Redis-backed series these are the same on every replica: aggregate with `max`.
A scrape also folds final day buckets into each account's total (once, whichever replica does
it), so the counters outlive the day buckets' retention.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from batchd.budgets import Budgets, Standing
from batchd.errors import BatchdError
from batchd.logs import get_logger
from batchd.pricing import Prices
from batchd.settings import Settings
from batchd.store import Store
from batchd.store import budgets as budget_store
from batchd.store import ledger as ledger_store
from batchd.store.budgets import Hold
from batchd.store.ledger import Entry, Usage

log = get_logger("batchd.observe")

#: Token kinds as the `kind` label names them, and the Usage attribute of each.
TOKEN_KINDS = ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")


def fold_totals(store: Store, accounts: list[str], now_ms: int) -> dict[str, int | None]:
    """Fold each account's final days into its total; the last day folded, per account."""
    keys = store.keys
    folded = store.read(ledger_store.folded(keys, accounts))
    calls = [
        c
        for a in accounts
        for c in ledger_store.fold(keys, a, ledger_store.days_to_fold(folded[a], now_ms))
    ]
    if calls:
        try:
            store.run_all(calls)
            folded = store.read(ledger_store.folded(keys, accounts))
        except BatchdError as exc:  # a read-only Redis, say: read the days themselves
            log.debug("ledger: days not folded", error=str(exc))
    return folded


class LedgerCollector(Collector):
    """The ledger's counters and the spend caps' gauges, read per scrape."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.accounts = list(settings.accounts)
        self.prices = Prices(settings.prices)
        self.tags = frozenset(settings.ledger.metric_tags)
        self.budgets = Budgets(store, settings, self.prices) if settings.budgets.caps else None

    def tag_label(self, tag: str) -> str:
        return tag if tag in self.tags or not tag else "other"

    def collect(self) -> Iterator[Metric]:
        try:
            now = self.store.time_ms()
            folded = fold_totals(self.store, self.accounts, now)
            entries = self.store.read(
                ledger_store.totals(self.store.keys, self.accounts, folded, now)
            )
            holds = self.store.read(budget_store.holds(self.store.keys, self.accounts))
            standings = self.budgets.standings(now) if self.budgets is not None else []
        except BatchdError as exc:  # batchd_redis_up says so; nothing half-read is exported
            log.debug("metrics: ledger unreadable", error=str(exc))
            return
        yield from self.families(entries, holds, standings)

    def families(
        self, entries: list[Entry], holds: list[Hold], standings: list[Standing]
    ) -> Iterator[Metric]:
        tagged = bool(self.tags)
        labels = ["account", "model", "mode"] + (["tag"] if tagged else [])
        sums: dict[tuple[str, ...], Usage] = {}
        for e in entries:
            key = (e.account, e.model, e.mode) + ((self.tag_label(e.tag),) if tagged else ())
            sums[key] = sums.get(key, Usage()) + e.usage

        requests = CounterMetricFamily(
            "batchd_ledger_requests",
            "Result lines with usage counted in the ledger (every billed attempt)",
            labels=labels,
        )
        tokens = CounterMetricFamily(
            "batchd_ledger_tokens",
            "Tokens counted in the ledger, by kind: input, output, cache_write_5m, "
            "cache_write_1h, cache_read",
            labels=[*labels, "kind"],
        )
        billed = CounterMetricFamily(
            "batchd_cost_usd", "USD as billed (batch usage at the batch discount)", labels=labels
        )
        listed = CounterMetricFamily(
            "batchd_cost_realtime_usd",
            "USD the same tokens cost at real-time (list) prices",
            labels=labels,
        )
        saved = CounterMetricFamily(
            "batchd_cost_saved_usd",
            "USD saved against real-time prices (list price minus billed)",
            labels=labels,
        )
        unpriced: set[str] = set()
        for key, u in sorted(sums.items()):
            values = list(key)
            requests.add_metric(values, u.requests)
            for kind in TOKEN_KINDS:
                tokens.add_metric([*values, kind], getattr(u, kind))
            c = self.prices.cost(key[1], u, key[2])
            if not c.priced:
                unpriced.add(key[1])
            billed.add_metric(values, c.billed)
            listed.add_metric(values, c.list)
            saved.add_metric(values, c.saved)
        yield from (requests, tokens, billed, listed, saved)

        missing = GaugeMetricFamily(
            "batchd_price_missing",
            "1 for a model in the ledger with no price: its cost is left out (add it under "
            "[[prices.models]])",
            labels=["model"],
        )
        for model in sorted(unpriced):
            missing.add_metric([model], 1)
        yield missing

        cap = GaugeMetricFamily(
            "batchd_budget_cap_usd",
            "A spend cap (USD) by scope and period",
            labels=["scope", "period"],
        )
        used = GaugeMetricFamily(
            "batchd_budget_used_usd",
            "Spend counted against a cap: the ledger's this period, plus estimates of batches "
            "in flight",
            labels=["scope", "period"],
        )
        for s in standings:
            cap.add_metric([s.cap.scope, s.period], s.limit)
            used.add_metric([s.cap.scope, s.period], s.used)
        yield cap
        yield used

        held = GaugeMetricFamily(
            "batchd_lane_held",
            "1 while a spend cap holds the lane: its requests stay pending",
            labels=["account", "lane", "scope", "period"],
        )
        for h in holds:
            held.add_metric([h.account, h.lane, h.scope, h.period], 1)
        yield held
