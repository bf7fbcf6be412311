"""At a phone's width (375 px) every page stays usable: nothing runs off the side of the page
(wide tables scroll in their own box), and the navigation and the buttons can be reached."""

from __future__ import annotations

from playwright.sync_api import Browser, expect

from tests.console.conftest import NARROW, StartConsole, loaded, new_page, shoot, visit
from tests.console.scenes import make_dead, pause
from tests.e2e.conftest import SubmitFn


def test_every_page_fits_a_narrow_screen(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """No page is wider than a 375 px viewport; each page's data and its actions are there."""
    console = start_console(BATCHD_RETRY__MAX_ATTEMPTS="1")
    stack = console.stack
    dead = make_dead(stack, submit, 2)
    long = [{"role": "user", "content": "hello " * 40}]
    ok = stack.client.submit({"model": "claude-sonnet-4-5", "max_tokens": 64, "messages": long})
    result = stack.client.wait(ok.id, timeout=60)
    pause(stack.client.store)
    page = new_page(browser, console.url, console.errors, viewport=NARROW)
    loaded(page, "overview")
    routes = [
        ("", "overview"),
        ("lanes", "lanes"),
        ("batches?state=all", "batches"),
        (f"batch/{result.batch_id}", "batch"),
        ("requests", "requests"),
        (f"request/{ok.id}", "request"),
        (f"request/{dead[0]}", "request"),
        ("dead", "dead"),
        ("webhooks", "webhooks"),
        ("paused", "paused"),
        ("daemons", "daemons"),
    ]
    for route, name in routes:
        visit(page, route, name)
        wide = page.evaluate(
            "() => [document.documentElement.scrollWidth, document.body.scrollWidth,"
            " window.innerWidth]"
        )
        assert max(wide[:2]) <= wide[2], (route, wide)
        if name == "overview":
            shoot(page, "overview-narrow")
        if name == "dead":
            expect(page.locator("#dead-requeue-all")).to_be_in_viewport()
            shoot(page, "dead-narrow")
    nav = page.locator('nav [data-page="daemons"]')
    expect(nav).to_be_in_viewport()
    page.context.close()
    assert console.errors == []
