"""The price table: dated and sourced defaults, lookup by model id, costs, savings, and a clear
warning (not a crash) for a model it has no price for."""

from __future__ import annotations

import datetime
import inspect
import re

import pytest
from structlog.testing import capture_logs

from batchd import pricing
from batchd.emulator.catalog import MODELS
from batchd.errors import ConfigError
from batchd.pricing import (
    DEFAULT_PRICES,
    PRICES_AS_OF,
    PRICES_SOURCE,
    SHORT_NAMES,
    Prices,
    short_name,
)
from batchd.settings import PriceSettings, Settings
from batchd.store.budgets import parse_estimate
from batchd.store.ledger import Usage
from batchd.validate import estimate_basis

#: Current models deliberately without a default price (none on Anthropic's pages as read).
UNPRICED_ON_PURPOSE = {"claude-fable-5-2", "claude-mythos-5-2", "claude-mythos-preview"}


@pytest.fixture
def prices() -> Prices:
    return Prices(PriceSettings())


def test_defaults_are_dated_and_sourced() -> None:
    """The table says where its prices come from and on what date; each row names its source."""
    assert datetime.date.fromisoformat(PRICES_AS_OF) <= datetime.date.today()
    assert PRICES_SOURCE.startswith("https://platform.claude.com/docs/")
    source = inspect.getsource(pricing)
    rows = re.findall(r'^\s*_p\("([^"]+)".*#\s*\(([pmx])\)', source, re.MULTILINE)
    assert sorted(m for m, _ in rows) == sorted(p.model for p in DEFAULT_PRICES)
    assert "PRICES_AS_OF" in source and "(p) are from" in source


def test_every_current_model_has_a_default_price(prices: Prices) -> None:
    """Each model the API lists (the emulator's catalogue) is priced, but those left out on
    purpose for want of a published price."""
    missing = {m.id for m in MODELS if prices.find(m.id) is None}
    assert missing <= UNPRICED_ON_PURPOSE
    for m in MODELS:
        for alias in m.aliases:
            assert prices.find(alias) is not None or m.id in UNPRICED_ON_PURPOSE, alias


def test_a_dated_snapshot_takes_its_models_price(prices: Prices) -> None:
    """`claude-sonnet-4-5-20250929` is priced as `claude-sonnet-4-5`."""
    assert prices.find("claude-sonnet-4-5-20250929") == prices.find("claude-sonnet-4-5")
    assert prices.find("claude-opus-4-20250514") == prices.find("claude-opus-4")


def test_a_new_version_does_not_take_an_older_ones_price(prices: Prices) -> None:
    """`claude-opus-4-9` is not priced as Opus 4 just because its id starts the same."""
    assert prices.find("claude-opus-4-9") is None


def test_batch_cost_is_the_list_price_less_the_discount(prices: Prices) -> None:
    """A million input and a million output tokens of Sonnet 4.5: $18 list, $9 billed."""
    c = prices.cost("claude-sonnet-4-5", Usage(1, 1_000_000, 1_000_000), "batch")
    assert (c.billed, c.list, c.saved, c.priced) == (9.0, 18.0, 9.0, True)


def test_cache_tokens_are_priced_by_kind(prices: Prices) -> None:
    """Cache writes (5 m, 1 h) and reads each take their own rate."""
    c = prices.cost("claude-sonnet-4-5", Usage(1, 0, 0, 1_000_000, 1_000_000, 1_000_000))
    assert c.list == pytest.approx(3.75 + 6 + 0.30)


def test_realtime_usage_saves_nothing(prices: Prices) -> None:
    """Tokens bought in real time are billed at list prices."""
    c = prices.cost("claude-haiku-4-5", Usage(1, 1_000_000, 0), "realtime")
    assert (c.billed, c.saved) == (1.0, 0.0)


def test_an_unknown_model_is_warned_about_once_and_left_unpriced(prices: Prices) -> None:
    """No crash: the cost is unpriced, and one warning names the model."""
    with capture_logs() as logs:
        first = prices.cost("claude-unheard-of-9", Usage(1, 10, 10))
        prices.cost("claude-unheard-of-9", Usage(1, 10, 10))
    assert (first.priced, first.billed, first.list) == (False, 0.0, 0.0)
    warned = [e for e in logs if e.get("model") == "claude-unheard-of-9"]
    assert len(warned) == 1 and warned[0]["log_level"] == "warning"
    assert "claude-unheard-of-9" in pricing.unpriced_warned()


def test_a_cap_counts_an_unknown_model_at_the_highest_rates(prices: Prices) -> None:
    """Spend caps never count unpriced tokens as free."""
    top = prices.ceiling
    assert prices.spend("claude-unheard-of-8", Usage(1, 1_000_000, 0)) == top.input * 0.5


def row(model: str, i: float, o: float, w5: float, w1: float, r: float) -> dict[str, object]:
    return {"model": model, "input": i, "output": o, "cache_write_5m": w5,
            "cache_write_1h": w1, "cache_read": r}  # fmt: skip


def test_settings_add_and_replace_prices() -> None:
    """`prices.models` adds a model and replaces a built-in row."""
    s = PriceSettings.model_validate(
        {
            "models": [
                row("claude-fable-5-2", 8, 40, 10, 16, 0.2),
                row("claude-sonnet-4-5", *[1] * 5),
            ]
        }
    )
    p = Prices(s)
    assert p.cost("claude-fable-5-2", Usage(1, 1_000_000, 0)).list == 8
    assert p.cost("claude-sonnet-4-5", Usage(1, 1_000_000, 0)).list == 1


def test_a_model_priced_twice_in_the_settings_is_refused() -> None:
    """Two rows for one model are a configuration error, not a silent choice."""
    twice = [row("m", *[1] * 5), row("m", *[1] * 5)]
    with pytest.raises(ConfigError, match="repeated"):
        Settings.load(prices={"models": twice})


def test_each_built_in_model_has_a_short_name_of_its_own(prices: Prices) -> None:
    """A pending request's record names a built-in priced model by `~` and four letters; each
    stands for one model, and the table in force prices it as that model."""
    assert set(SHORT_NAMES) == {p.model for p in DEFAULT_PRICES}
    assert len(set(SHORT_NAMES.values())) == len(SHORT_NAMES)
    for model, short in SHORT_NAMES.items():
        assert re.fullmatch(r"~[a-z2-7]{4}", short), short
        assert short == short_name(model)
        assert prices.find(short) == prices.find(model) is not None


def test_a_short_name_takes_the_settings_price_of_its_model() -> None:
    """A built-in row replaced in the settings prices the model's short name too."""
    p = Prices(PriceSettings.model_validate({"models": [row("claude-sonnet-4-5", *[1] * 5)]}))
    assert p.cost(SHORT_NAMES["claude-sonnet-4-5"], Usage(1, 1_000_000, 0)).list == 1


def test_an_unknown_short_name_is_estimated_at_the_highest_rates(prices: Prices) -> None:
    """A short name no model of the table has (a producer of another version) costs a cap's
    estimate what an unknown model does: the highest rates."""
    unknown = next(f"~{c}aaa" for c in "abcdefgh" if f"~{c}aaa" not in SHORT_NAMES.values())
    assert prices.find(unknown) is None
    assert prices.estimate(unknown, 1000, 100) == prices.estimate("claude-zzz", 1000, 100) > 0


def test_the_estimate_basis_is_short_for_a_built_in_model_only() -> None:
    """The record keeps `<max_tokens>~<short>` for a built-in model, the name in full for any
    other (a dated snapshot, an unknown model), and never a name that reads as a short one."""
    assert estimate_basis({"model": "claude-sonnet-4-5", "max_tokens": 64000}) == (
        "64000" + SHORT_NAMES["claude-sonnet-4-5"]
    )
    dated = "claude-sonnet-4-5-20250929"
    assert estimate_basis({"model": dated, "max_tokens": 5}) == f"5 {dated}"
    assert estimate_basis({"model": "~fsbu", "max_tokens": 5}) == "5 _fsbu"
    assert parse_estimate("64000~fsbu") == (64000, "~fsbu")
    assert parse_estimate(f"5 {dated}") == (5, dated)
    assert parse_estimate("") == (None, "")
    assert parse_estimate("many claude-x") == (None, "")
