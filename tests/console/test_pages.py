"""Each page of the console, in Chromium, shows the facts Redis holds, and keeps up with them
without a reload. Each test saves its page's screenshot for the docs (docs/console/)."""

from __future__ import annotations

from playwright.sync_api import Browser, Page, expect

from batchd.observe import snapshot
from batchd.store import counters as counter_store
from tests.console.conftest import (
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    Console,
    StartConsole,
    loaded,
    new_page,
    shoot,
    token_env,
    visit,
)
from tests.console.scenes import PAUSE_REASON, make_dead, pause, throughput_history
from tests.console.seed import submit_to_lanes
from tests.e2e.conftest import Stack, SubmitFn, params
from tests.support.daemon import wait_for


def facts(stack: Stack) -> snapshot.Snapshot:
    return snapshot.read(stack.client.store, list(stack.client.settings.accounts))


def test_overview_shows_totals_alerts_and_charts(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """Tiles give Redis's counts, the alerts name what is wrong now (dead letters growing, a
    paused account), and the charts draw throughput, backlog, batches and cost."""
    console = start_console(BATCHD_RETRY__MAX_ATTEMPTS="1")
    stack = console.stack
    make_dead(stack, submit, 3)
    submit(8)
    stack.wait_ended(11)
    throughput_history(stack.client.store)
    pause(stack.client.store)
    page = new_page(browser, console.url, console.errors)
    loaded(page, "overview")
    snap = facts(stack)
    tile = page.locator('[data-tile="dead"] .n')
    expect(tile).to_have_text(str(sum(snap.dead.values())))
    expect(page.locator('[data-tile="daemons"] .n')).to_have_text(str(len(snap.processes)))
    expect(page.locator('[data-tile="paused"] .n')).to_have_text("1")
    expect(page.locator('.alert[data-kind="dead_growing"]')).to_contain_text("3 in the last")
    expect(page.locator('.alert[data-kind="paused"]')).to_contain_text("Account default")
    for chart in ("throughput", "backlog", "batches", "cost"):
        expect(page.locator(f'[data-chart="{chart}"]')).to_be_visible()
    expect(page.locator('[data-chart="throughput"] polyline')).to_have_count(2)
    expect(page.locator("#open-notice")).to_contain_text("Open console")
    # The cost panel reads the ledger: what the emulator's usage cost, and saved.
    expect(page.locator('[data-chart="cost"]')).to_contain_text("saved")
    shoot(page, "overview", full=True)
    page.context.close()
    assert console.errors == []


def test_lanes_page_lists_each_lane_and_the_late_ones(
    browser: Browser, start_console: StartConsole
) -> None:
    """Every lane with its pending count, and a lane waiting past its window is marked (and an
    alert on the overview)."""
    console = start_console(BATCHD_RUN__ROLES='["console"]')
    store = console.stack.client.store
    lanes = submit_to_lanes(store, 6, 4)
    submit_to_lanes(store, 2, 5)  # lanes 0 and 1: 9 waiting
    page = new_page(browser, console.url + "/#/lanes", console.errors)
    loaded(page, "lanes")
    for lane in lanes:
        want = "9" if lane in ("0", "1") else "4"
        expect(page.locator(f'tr[data-lane="default/{lane}"] td').nth(4)).to_have_text(want)
    expect(page.locator('tr[data-lane="default/5"]')).to_contain_text(
        "older than its window", timeout=20_000
    )
    shoot(page, "lanes")
    visit(page, "", "overview")
    expect(page.locator('.alert[data-kind="lane_late"]').first).to_be_visible()
    expect(page.locator('.alert[data-kind="no_workers"]')).to_be_visible()
    page.context.close()
    assert console.errors == []


def test_batches_list_and_batch_page(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """Batches in flight are listed with their progress; a batch's page gives its counts, its
    timeline and its requests."""
    console = start_console()
    stack = console.stack
    stack.emulator.set_profile({"processing_time": [120.0, 120.0]})
    ids = submit(5) + [
        stack.client.submit(params(9, max_tokens=32), priority=3).id for _ in range(1)
    ]

    def in_flight() -> list[snapshot.AssemblyView]:
        found = [a for a in facts(stack).assemblies if a.in_flight and a.polls > 0]
        return found if len(found) == 2 else []

    flying = wait_for(in_flight, 60, "two batches in flight, polled")
    assert isinstance(flying, list)
    page = new_page(browser, console.url + "/#/batches", console.errors)
    loaded(page, "batches")
    for a in flying:
        row = page.locator(f'tr[data-id="default.{a.assembly}"]')
        expect(row).to_contain_text(a.batch_id or "")
        expect(row).to_contain_text("submitted")
        expect(row.locator(".progress")).to_contain_text(f"0/{a.requests}")
    shoot(page, "batches")
    big = max(flying, key=lambda a: a.requests)
    page.locator(f'a[data-batch="default.{big.assembly}"]').first.click()
    loaded(page, "batch")
    expect(page.locator("#batch-id")).to_have_text(f"default.{big.assembly}")
    expect(page.locator("#timeline")).to_contain_text("submitted")
    expect(page.locator("#batch-counts")).to_contain_text(f"processing {big.requests}")
    members = stack.client.batch_requests(big.record)
    assert sorted(members) == sorted(ids[:5])
    for rid in members:
        expect(page.locator(f'tr[data-id="{rid}"]')).to_contain_text("batched")
    shoot(page, "batch")
    page.context.close()
    assert console.errors == []


def test_request_found_by_id_key_and_batch(browser: Browser, start_console: StartConsole) -> None:
    """The search finds a request by its id and by its idempotency key, and its batch by the
    API's batch id; the request page shows its envelope, batch and attempts."""
    console = start_console()
    stack = console.stack
    ticket = stack.client.submit(params(1), key="order-4711", metadata={"order": 4711}, tag="shop")
    result = stack.client.wait(ticket.id, timeout=60)
    page = new_page(browser, console.url, console.errors)
    loaded(page, "overview")
    for query in (ticket.id, "order-4711"):
        page.fill("#search-q", query)
        page.press("#search-q", "Enter")
        expect(page.locator("#req-status")).to_have_text("succeeded")
        expect(page.locator("h1")).to_contain_text(ticket.id)
        visit(page, "", "overview")
    visit(page, f"request/{ticket.id}", "request")
    body = page.locator("#view")
    expect(body).to_contain_text("order-4711")
    expect(body).to_contain_text('"order":4711')
    expect(body).to_contain_text(result.batch_id or "?")
    expect(body).to_contain_text(result.text or "?")
    shoot(page, "request")
    visit(page, "requests", "requests")
    page.fill("#find-q", result.batch_id or "")
    page.locator("#find button").click()
    loaded(page, "batch")
    expect(page.locator("h1")).to_contain_text(result.batch_id or "?")
    page.context.close()
    assert console.errors == []


def test_dead_letters_page_lists_them_by_error(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """Each dead letter with its error type and message; the error types to filter by."""
    console = start_console(BATCHD_RETRY__MAX_ATTEMPTS="1")
    dead = make_dead(console.stack, submit, 4)
    page = new_page(browser, console.url + "/#/dead", console.errors)
    loaded(page, "dead")
    for rid in dead:
        row = page.locator(f'tr[data-id="{rid}"]')
        expect(row).to_contain_text("api_error")
    expect(page.locator('#dead-types [data-type="api_error"]')).to_have_text("api_error 4")
    shoot(page, "dead")
    page.context.close()
    assert console.errors == []


def test_webhooks_page_lists_deliveries_that_gave_up(
    browser: Browser, start_console: StartConsole
) -> None:
    """A delivery refused at every attempt is listed with its URL, state and attempts."""
    console = start_console(BATCHD_WEBHOOKS__SCHEDULE="[0]")
    stack = console.stack
    ticket = stack.client.submit(params(1), callback_url="http://127.0.0.1:9/hook")
    stack.client.wait(ticket.id, timeout=60)
    wait_for(lambda: facts(stack).webhooks_dead.get("default"), 30, "the delivery to go dead")
    page = new_page(browser, console.url + "/#/webhooks", console.errors)
    loaded(page, "webhooks")
    row = page.locator(f'tr[data-id="{ticket.id}"]')
    expect(row).to_contain_text("http://127.0.0.1:9/hook")
    expect(row).to_contain_text("dead")
    shoot(page, "webhooks")
    page.context.close()
    assert console.errors == []


def test_paused_page_and_daemons_page(browser: Browser, start_console: StartConsole) -> None:
    """The paused account with its reason; the daemons alive and their stage workers."""
    console = start_console()
    stack = console.stack
    pause(stack.client.store)
    page = new_page(browser, console.url + "/#/paused", console.errors)
    loaded(page, "paused")
    expect(page.locator('tr[data-account="default"]')).to_contain_text(PAUSE_REASON)
    shoot(page, "paused")
    visit(page, "daemons", "daemons")
    store = stack.client.store
    alive = store.read(counter_store.alive(store.keys, store.now_ms()))
    assert alive
    for identity, _ in alive:
        expect(page.locator(f'tr[data-identity="{identity}"]')).to_be_visible()
    # The stage workers register once their processes have started: slow on a busy machine.
    expect(page.locator("tr[data-worker]")).to_have_count(2, timeout=60_000)
    shoot(page, "daemons")
    page.context.close()
    assert console.errors == []


def test_pages_follow_redis_without_a_reload(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """An open page redraws as Redis changes: the same document sees the dead letters come."""
    console = start_console(BATCHD_RETRY__MAX_ATTEMPTS="1")
    page = new_page(browser, console.url + "/#/dead", console.errors)
    loaded(page, "dead")
    expect(page.locator("#dead-empty")).to_be_visible()
    page.evaluate("() => { window.sameDocument = true }")
    dead = make_dead(console.stack, submit, 2)
    for rid in dead:
        expect(page.locator(f'tr[data-id="{rid}"]')).to_be_visible(timeout=15_000)
    assert page.evaluate("() => window.sameDocument") is True
    page.context.close()
    assert console.errors == []


def test_with_tokens_the_page_asks_to_sign_in(
    browser: Browser, start_console: StartConsole
) -> None:
    """Tokens configured: the page shows only a sign-in form; a viewer's token signs in to a
    read-only console, an operator's to one that acts."""
    tokens = token_env(viewer_vic=VIEWER_TOKEN, operator_olga=OPERATOR_TOKEN)
    console = start_console(BATCHD_CONSOLE__TOKENS=tokens)
    page: Page = new_page(browser, console.url, console.errors)
    loaded(page, "login")
    expect(page.locator("#login")).to_be_visible()
    expect(page.locator("#open-notice")).to_have_count(0)
    shoot(page, "login")
    page.fill("#token", "bct_not-a-token")
    page.locator("#login button").click()
    expect(page.locator("#login-msg")).to_contain_text("not a console token")
    page.fill("#token", VIEWER_TOKEN)
    page.locator("#login button").click()
    loaded(page, "overview")
    expect(page.locator("#who-name")).to_have_text("viewer_vic · viewer")
    expect(page.locator("#viewer-notice")).to_contain_text("Read-only")
    page.locator("#logout").click()
    loaded(page, "login")
    page.fill("#token", OPERATOR_TOKEN)
    page.locator("#login button").click()
    loaded(page, "overview")
    expect(page.locator("#who-name")).to_have_text("operator_olga · operator")
    expect(page.locator("#viewer-notice")).to_have_count(0)
    page.context.close()
    assert console.errors == []


def test_unknown_things_say_so(browser: Browser, console: Console) -> None:
    """A request or batch batchd does not know gets a page saying so, not a broken one."""
    page = new_page(
        browser, console.url + "/#/request/default.01ZZZZZZZZZZZZZZZZZZZZZZZZ", console.errors
    )
    expect(page.locator("#view")).to_contain_text("no request")
    page.evaluate("() => { location.hash = '#/batch/msgbatch_nope' }")
    expect(page.locator("#view")).to_contain_text("knows no batch")
    page.context.close()
