"""Spend caps: a cut takes only what fits, a lane with nothing that fits is held (its requests
pending, none lost), and a higher cap, a new day or a finished batch releases it."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from batchd import budgets
from batchd.budgets import Budgets
from batchd.errors import BudgetExceededError, ConfigError
from batchd.observe.ledger import LedgerCollector
from batchd.pricing import Prices
from batchd.settings import PriceSettings, Settings
from batchd.store import budgets as budget_store
from batchd.store import ledger as ledger_store
from batchd.store import new_token
from batchd.store.ledger import DAY_MS, Usage
from tests.ledger import ACCOUNT, MODEL, Books, params, succeeded, usage
from tests.ledger.conftest import MakeSettings
from tests.pipeline import FRAMING, compact

MAX_TOKENS = 1000
#: What one test request may cost at most, as a cut estimates it.
EACH = Prices(PriceSettings()).estimate(
    MODEL, (len(compact(params(0, max_tokens=MAX_TOKENS))) + FRAMING) // 4, MAX_TOKENS
)


def capped(make_settings: MakeSettings, *caps: dict[str, Any], **options: Any) -> Settings:
    """Settings with these caps (and `budgets` options)."""
    return make_settings(budgets={"caps": list(caps), **options})


def spend(
    books: Books, usd: float, *, account: str = ACCOUNT, tag: str = "", when: int = 0
) -> None:
    """Put `usd` of batch spend in the ledger (output tokens of Sonnet 4.5) at `when` (now)."""
    tokens = math.ceil(usd / (15 / 1_000_000 * 0.5))
    at = when or books.store.now_ms()
    books.store.run(
        ledger_store.record(books.keys, account, MODEL, Usage(1, 0, tokens), at, tag=tag, lane="0")
    )


def pending(books: Books, ids: list[str]) -> int:
    return sum(books.client.get(i).state == "pending" for i in ids)


def holds(books: Books) -> list[budget_store.Hold]:
    return books.store.read(budget_store.holds(books.keys, [ACCOUNT, "team"]))


def test_a_cut_takes_only_what_fits_the_cap(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """Under a cap with room for two requests, the cut takes two and the rest stay pending."""
    books = make_books(capped(make_settings, {"account": ACCOUNT, "daily": 2.5 * EACH}))
    ids = books.submit(5, max_tokens=MAX_TOKENS)
    assert books.tick() == 1
    states = [books.client.get(i).state for i in ids]
    assert states == ["batched"] * 2 + ["pending"] * 3


def test_a_lane_with_nothing_that_fits_is_held(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """No cut, every request pending, and the hold on record with its cap."""
    books = make_books(capped(make_settings, {"account": ACCOUNT, "daily": 0.5 * EACH}))
    ids = books.submit(3, max_tokens=MAX_TOKENS)
    assert books.tick() == 0
    assert pending(books, ids) == 3
    [h] = holds(books)
    assert (h.account, h.lane, h.scope, h.period, h.cap_usd) == (
        ACCOUNT, "0", ACCOUNT, "daily", 0.5 * EACH,
    )  # fmt: skip
    assert h.next_usd == pytest.approx(EACH)


def test_raising_the_cap_releases_the_lane(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """A daemon started with a higher cap cuts the held lane whole: nothing was lost."""
    low = make_books(capped(make_settings, {"account": ACCOUNT, "daily": 0.5 * EACH}))
    ids = low.submit(3, max_tokens=MAX_TOKENS)
    low.tick()
    assert holds(low)
    high = make_books(capped(make_settings, {"account": ACCOUNT, "daily": 100.0}))
    assert high.tick() == 1
    assert {high.client.get(i).state for i in ids} == {"batched"}
    assert holds(high) == []


def test_a_new_day_releases_the_lane(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """Spend of today holds the lane today; tomorrow the daily cap starts from nothing."""
    settings = capped(make_settings, {"account": ACCOUNT, "daily": 1.0})
    books = make_books(settings)
    spend(books, 1.0)
    books.submit(2, max_tokens=MAX_TOKENS)
    assert books.tick() == 0
    caps = Budgets(books.store, settings)
    tomorrow = (books.store.now_ms() // DAY_MS + 1) * DAY_MS + 1
    assert caps.admit(books.rt, ACCOUNT, "0", new_token(), tomorrow) == 2


def test_batches_in_flight_count_against_the_cap(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """What a cut batch may cost counts before its results: the next lane waits for room."""
    books = make_books(capped(make_settings, {"account": ACCOUNT, "daily": 2.5 * EACH}))
    books.submit(2, max_tokens=MAX_TOKENS, priority=1)
    books.submit(2, max_tokens=MAX_TOKENS, priority=0)
    assert books.tick() == 1
    assert [h.lane for h in holds(books)] == ["0"]


def test_a_done_batch_counts_at_its_cost_not_its_estimate(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """Once a batch's results are in, the cap counts what they cost, which frees room."""
    books = make_books(capped(make_settings, {"account": ACCOUNT, "daily": 2.5 * EACH}))
    books.submit(2, max_tokens=MAX_TOKENS, priority=1)
    later = books.submit(2, max_tokens=MAX_TOKENS, priority=0)
    books.tick()
    [asm] = books.store.read(budget_store.reserved(books.keys, [ACCOUNT]))
    books.fan_out(asm.assembly, lambda i: succeeded(usage(10, 5)))
    books.close(asm.assembly)
    assert books.tick() == 1
    assert {books.client.get(i).state for i in later} == {"batched"}
    assert holds(books) == []


def test_a_tag_cap_holds_only_the_lane_holding_that_tag(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """A cap on tag `a` holds the lane with `a`'s requests; the lane of tag `b` is cut."""
    books = make_books(capped(make_settings, {"tag": "a", "daily": 0.5 * EACH}))
    books.submit(2, max_tokens=MAX_TOKENS, tag="a", priority=0)
    books.submit(2, max_tokens=MAX_TOKENS, tag="b", priority=1)
    assert books.tick() == 1
    assert [(h.lane, h.scope) for h in holds(books)] == [("0", "tag:a")]


def test_a_tag_cap_counts_the_tag_in_every_account(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """Spend of tag `t` in one account holds requests of `t` in another."""
    books = make_books(capped(make_settings, {"tag": "t", "daily": 1.0}))
    spend(books, 1.0, account="team", tag="t")
    books.submit(1, max_tokens=MAX_TOKENS, tag="t")
    assert books.tick() == 0
    assert [h.scope for h in holds(books)] == ["tag:t"]


def test_metrics_show_the_hold_and_the_caps_use(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """/metrics: batchd_lane_held for the held lane, the cap and what is used of it."""
    settings = capped(make_settings, {"account": ACCOUNT, "daily": 1.0})
    books = make_books(settings)
    spend(books, 1.0)
    books.submit(1, max_tokens=MAX_TOKENS)
    books.tick()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in LedgerCollector(books.store, settings).collect()
        for s in f.samples
    }
    held = (("account", ACCOUNT), ("lane", "0"), ("period", "daily"), ("scope", ACCOUNT))
    assert samples[("batchd_lane_held", held)] == 1
    scope = (("period", "daily"), ("scope", ACCOUNT))
    assert samples[("batchd_budget_cap_usd", scope)] == 1.0
    assert samples[("batchd_budget_used_usd", scope)] == pytest.approx(1.0, rel=1e-3)


def test_submits_at_a_reached_cap_are_refused_when_set(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """With refuse_submits, a submit to an account at its cap fails, naming the cap; nothing
    is stored."""
    settings = capped(make_settings, {"account": ACCOUNT, "daily": 1.0}, refuse_submits=True)
    books = make_books(settings)
    spend(books, 1.0)
    books.tick()
    with pytest.raises(BudgetExceededError, match=r"daily spend cap of \$1\.00") as raised:
        make_books(settings).client.submit(params())
    assert raised.value.field == "account"
    assert books.rt.redis.keys(books.keys.request(ACCOUNT, "*")) == []


def test_a_capped_tag_refuses_only_its_own_submits(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """At a tag's cap, submits with that tag fail and others are stored."""
    settings = capped(make_settings, {"tag": "a", "daily": 1.0}, refuse_submits=True)
    books = make_books(settings)
    spend(books, 1.0, tag="a")
    books.tick()
    client = make_books(settings).client
    outcomes = client.submit_many([{"params": params(), "tag": "a"}, {"params": params()}])
    assert isinstance(outcomes[0], BudgetExceededError) and outcomes[0].field == "tag"
    assert not isinstance(outcomes[1], Exception)


def test_submits_at_a_cap_are_accepted_by_default(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """Without refuse_submits a capped account still takes requests; they wait."""
    settings = capped(make_settings, {"account": ACCOUNT, "daily": 1.0})
    books = make_books(settings)
    spend(books, 1.0)
    books.tick()
    ticket = make_books(settings).client.submit(params())
    assert books.client.get(ticket).state == "pending"


def test_a_cap_on_an_unknown_account_is_a_configuration_error(
    make_settings: MakeSettings,
) -> None:
    """A cap naming an account that is not configured stops batchd at start."""
    with pytest.raises(ConfigError, match="not configured"):
        capped(make_settings, {"account": "nobody", "daily": 1.0})


def test_a_cap_without_a_limit_is_a_configuration_error(make_settings: MakeSettings) -> None:
    """A cap needs a daily or a monthly limit."""
    with pytest.raises(ConfigError, match="daily or a monthly"):
        capped(make_settings, {"account": ACCOUNT})


def test_status_describes_a_held_lane(
    make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """`status` names the held lane, its cap and what is used of it."""
    books = make_books(capped(make_settings, {"account": ACCOUNT, "daily": 1.0}))
    spend(books, 1.0)
    books.submit(1, max_tokens=MAX_TOKENS)
    books.tick()
    [hold] = budgets.held(books.store, [ACCOUNT, "team"])
    assert budgets.describe(hold).startswith(f"{ACCOUNT}/0 held by the daily cap of {ACCOUNT}")
