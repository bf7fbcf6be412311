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
from batchd.pricing import DEFAULT_PRICES, PRICES_AS_OF, PRICES_SOURCE, Prices
from batchd.settings import PriceSettings, Settings
from batchd.store.ledger import Usage

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
