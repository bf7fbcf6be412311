"""How long the overview takes with 100 lanes and 1,000 batches in flight, in Chromium."""

from __future__ import annotations

import time

from playwright.sync_api import Browser

from batchd.store import Store
from tests.console.conftest import Console, StartConsole, loaded, new_page
from tests.console.seed import seed

#: Seconds the overview may take, from navigation to its data drawn, at this size.
OVERVIEW_BUDGET = 5.0


def test_overview_with_100_lanes_and_1000_batches_loads_quickly(
    browser: Browser, start_console: StartConsole
) -> None:
    """The overview draws 100 lanes' and 1,000 batches' facts within OVERVIEW_BUDGET seconds,
    and its numbers are Redis's."""
    console: Console = start_console(BATCHD_RUN__ROLES='["console"]')
    store: Store = console.stack.client.store
    seeded = seed(store, lanes=100, batches=1000, per_batch=5, left=3)
    api = console.api("/api/overview")
    assert api["totals"]["batches_in_flight"] == 1000
    assert api["totals"]["lanes"] == 100
    assert api["totals"]["pending"] == sum(seeded.pending.values())
    timings = []
    page = new_page(browser, console.url, console.errors)
    try:
        for _ in range(3):
            page.goto("about:blank")
            started = time.perf_counter()
            page.goto(console.url + "/#/")
            loaded(page, "overview")
            timings.append(time.perf_counter() - started)
        started = time.perf_counter()
        console.api("/api/overview")
        api_s = time.perf_counter() - started
        nav = page.evaluate(
            "() => { const n = performance.getEntriesByType('navigation')[0];"
            " return {dom: n.domContentLoadedEventEnd, load: n.loadEventEnd}; }"
        )
        tiles = page.locator('[data-tile="in_flight"] .n').inner_text()
        assert tiles == "1,000"
        assert (
            page.locator('[data-tile="pending"] .n').inner_text()
            == f"{sum(seeded.pending.values()):,}"
        )
    finally:
        page.context.close()
    print(
        f"\noverview with 100 lanes, 1000 batches in flight: first load {timings[0]:.3f} s, "
        f"then {timings[1]:.3f} s, {timings[2]:.3f} s (DOMContentLoaded {nav['dom']:.0f} ms); "
        f"GET /api/overview alone {api_s:.3f} s"
    )
    assert min(timings) < OVERVIEW_BUDGET, timings
    assert console.errors == []
