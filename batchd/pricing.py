"""Prices: what the ledger's tokens cost as billed (batch at its discount), what the same tokens
would have cost in real time, and the saving. Built-in list prices below; `prices` settings amend.

A model without a price is warned about once per process, left out of costs (reports flag it),
and counted at the table's highest rates by spend caps, so a cap still holds.
"""

from __future__ import annotations

import base64
import hashlib
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from batchd.logs import get_logger
from batchd.settings import ModelPrice, PriceSettings
from batchd.store.ledger import Usage

log = get_logger("batchd.pricing")

#: Where the built-in prices were read, and when. Rows marked (p) are from the "Model pricing"
#: table of Anthropic's pricing page; (m) from the "Pricing" box of the model's overview page
#: (https://platform.claude.com/docs/en/models/<model>/overview); (x) input and output from
#: those pages, cache rates from the pricing page's prompt-caching multipliers (5-minute write
#: 1.25x, 1-hour write 2x, cache hit 0.1x the input price). The batch discount (50% on every
#: token kind, with the caching multipliers stacking on it) is the pricing page's "Batch
#: processing" section.
PRICES_SOURCE = "https://platform.claude.com/docs/en/about-claude/pricing"
PRICES_AS_OF = "2026-12-02"


def _p(model: str, i: float, w5: float, w1: float, r: float, o: float) -> ModelPrice:
    return ModelPrice(
        model=model, input=i, cache_write_5m=w5, cache_write_1h=w1, cache_read=r, output=o
    )


#: List prices, USD per million tokens: input, 5-minute cache write, 1-hour cache write, cache
#: hit, output (the pricing page's column order). Left out on purpose, for want of a price on
#: Anthropic's pages as read on PRICES_AS_OF: claude-fable-5-2, claude-mythos-5-2 (third-party
#: trackers quote $8 / $40 since 2026-11-09) and claude-mythos-preview; add them under
#: [[prices.models]] once confirmed. Not modelled (the ledger sums tokens, not requests): the
#: higher rate of a long prompt (Haiku 5.5 above 100k prompt tokens; Sonnet 4 and 4.5 above
#: 200k input tokens with the 1M-context beta) and the US-only inference multiplier.
DEFAULT_PRICES: tuple[ModelPrice, ...] = (
    _p("claude-fable-5-1", 10, 12.50, 20, 0.25, 50),  # (p)
    _p("claude-mythos-5-1", 10, 12.50, 20, 0.25, 50),  # (p)
    _p("claude-fable-5", 10, 12.50, 20, 1, 50),  # (p)
    _p("claude-mythos-5", 10, 12.50, 20, 1, 50),  # (p)
    _p("claude-opus-5-5", 4, 5, 8, 0.20, 20),  # (m)
    _p("claude-opus-5", 5, 6.25, 10, 0.50, 25),  # (p)
    _p("claude-opus-4-8", 5, 6.25, 10, 0.50, 25),  # (p)
    _p("claude-opus-4-7", 5, 6.25, 10, 0.50, 25),  # (p)
    _p("claude-opus-4-6", 5, 6.25, 10, 0.50, 25),  # (p)
    _p("claude-opus-4-5", 5, 6.25, 10, 0.50, 25),  # (p)
    _p("claude-opus-4-1", 15, 18.75, 30, 1.50, 75),  # (p)
    _p("claude-opus-4", 15, 18.75, 30, 1.50, 75),  # (p)
    _p("claude-opus-4-0", 15, 18.75, 30, 1.50, 75),  # (p) the alias of claude-opus-4
    _p("claude-4-opus", 15, 18.75, 30, 1.50, 75),  # (p) an older name of claude-opus-4
    # Sonnet 5.5's overview page gives a $0.20 cache hit; trackers report a cut to $0.10 on
    # 2026-10-07 that the page did not show: override it here if the invoices say so.
    _p("claude-sonnet-5-5", 2, 2.50, 4, 0.20, 10),  # (m)
    _p("claude-sonnet-5", 2, 2.50, 4, 0.20, 10),  # (m)
    _p("claude-sonnet-4-6", 3, 3.75, 6, 0.30, 15),  # (x)
    _p("claude-sonnet-4-5", 3, 3.75, 6, 0.30, 15),  # (x)
    _p("claude-sonnet-4", 3, 3.75, 6, 0.30, 15),  # (p)
    _p("claude-sonnet-4-0", 3, 3.75, 6, 0.30, 15),  # (p) the alias of claude-sonnet-4
    _p("claude-4-sonnet", 3, 3.75, 6, 0.30, 15),  # (p) an older name of claude-sonnet-4
    _p("claude-3-7-sonnet", 3, 3.75, 6, 0.30, 15),  # (p)
    _p("claude-3-5-sonnet", 3, 3.75, 6, 0.30, 15),  # (p)
    _p("claude-haiku-5-5", 0.10, 0.125, 0.20, 0.01, 0.50),  # (x) prompts up to 100k tokens
    _p("claude-haiku-4-5", 1, 1.25, 2, 0.10, 5),  # (x)
    _p("claude-3-5-haiku", 0.80, 1, 1.6, 0.08, 4),  # (p)
    _p("claude-3-haiku", 0.25, 0.30, 0.50, 0.03, 1.25),  # (p)
)


def short_name(model: str) -> str:
    """`~` and four letters standing for a model name on a pending request's record, where the
    estimate a spend cap starts from would otherwise spell the whole name out (16 bytes of Redis
    per request, for a small one). A hash of the name: the same in every version and process."""
    digest = hashlib.blake2b(model.encode(), digest_size=5).digest()
    return "~" + base64.b32encode(digest).decode()[:4].lower()


def _short_names(models: Iterable[str]) -> dict[str, str]:
    """Short name -> model, for the names whose short name no other of them shares."""
    seen: dict[str, list[str]] = {}
    for model in models:
        seen.setdefault(short_name(model), []).append(model)
    return {short: names[0] for short, names in seen.items() if len(names) == 1}


#: The built-in priced models a producer may write by their short names. A name added under
#: [[prices.models]] is written in full, since a producer need not share the daemon's settings.
SHORT_NAMES: dict[str, str] = {
    model: short for short, model in _short_names(p.model for p in DEFAULT_PRICES).items()
}

#: What may follow a priced id in a model name: a snapshot date (`-20250929`, Vertex's
#: `@20250929`) or `-latest`. Nothing else, so `claude-opus-4-9` never takes Opus 4's price.
_SNAPSHOT = re.compile(r"^(?:[-@]\d{8}|-latest)$")

_warned: set[str] = set()
_warned_lock = threading.Lock()


def unpriced_warned() -> frozenset[str]:
    """The models this process has warned about (had no price for)."""
    with _warned_lock:
        return frozenset(_warned)


def _warn_once(model: str) -> None:
    with _warned_lock:
        if model in _warned:
            return
        _warned.add(model)
    log.warning(
        "no price for this model: its tokens are counted but left out of costs and savings; "
        "add it under [[prices.models]]",
        model=model,
    )


@dataclass(frozen=True, slots=True)
class Cost:
    """USD as billed, the same tokens at real-time (list) prices, and whether a price was known
    (when not, both are 0 and the tokens stand unpriced)."""

    billed: float = 0.0
    list: float = 0.0
    priced: bool = True

    @property
    def saved(self) -> float:
        return self.list - self.billed

    def __add__(self, other: Cost) -> Cost:
        priced = self.priced and other.priced
        return Cost(self.billed + other.billed, self.list + other.list, priced)


def list_price(p: ModelPrice, u: Usage) -> float:
    """USD of this usage at the model's list (real-time) prices."""
    return (
        u.input * p.input
        + u.output * p.output
        + u.cache_write_5m * p.cache_write_5m
        + u.cache_write_1h * p.cache_write_1h
        + u.cache_read * p.cache_read
    ) / 1_000_000


class Prices:
    """The price table in force: the built-in rows, then the settings' (which win)."""

    def __init__(self, settings: PriceSettings) -> None:
        self.discount = settings.batch_discount
        self.table: dict[str, ModelPrice] = {p.model: p for p in DEFAULT_PRICES}
        self.table.update({p.model: p for p in settings.models})
        self._found: dict[str, ModelPrice | None] = {}
        self._short = _short_names(self.table)
        self.ceiling = ModelPrice(
            model="*",
            **{
                name: max(getattr(p, name) for p in self.table.values())
                for name in ("input", "output", "cache_write_5m", "cache_write_1h", "cache_read")
            },
        )

    def find(self, model: str) -> ModelPrice | None:
        """The model's row: its own, else the longest id it is a dated snapshot of."""
        if model in self._found:
            return self._found[model]
        if model.startswith("~"):  # a short name (see `short_name`)
            found = self.table.get(self._short.get(model, ""))
            self._found[model] = found
            return found
        found = self.table.get(model)
        if found is None:
            best = ""
            for key in self.table:
                if len(key) > len(best) and model.startswith(key):
                    if _SNAPSHOT.match(model[len(key) :]):
                        best = key
            found = self.table.get(best) if best else None
        self._found[model] = found
        return found

    def billed(self, list_usd: float, mode: str) -> float:
        """What the API bills for usage whose list price is `list_usd`, by how it was bought."""
        return list_usd * (1 - self.discount) if mode == "batch" else list_usd

    def cost(self, model: str, usage: Usage, mode: str = "batch") -> Cost:
        """The usage's cost; unpriced (zeros, `priced` False, warned once) for an unknown model
        that used any tokens."""
        p = self.find(model)
        if p is None:
            if usage.tokens == 0:
                return Cost()
            _warn_once(model)
            return Cost(priced=False)
        full = list_price(p, usage)
        return Cost(self.billed(full, mode), full)

    def spend(self, model: str, usage: Usage, mode: str = "batch") -> float:
        """USD billed as a spend cap counts it: an unknown model at the highest rates."""
        p = self.find(model)
        if p is None:
            if usage.tokens:
                _warn_once(model)
            p = self.ceiling
        return self.billed(list_price(p, usage), mode)

    def estimate(self, model: str, input_tokens: int, output_tokens: int) -> float:
        """USD a batched request may cost at most (an unknown model at the highest rates)."""
        return self.spend(model, Usage(1, input_tokens, output_tokens), "batch")
