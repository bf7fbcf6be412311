"""Each button does what it says, in Chromium against a real daemon: a requeued dead request
reaches a result, a purge forgets, a retried webhook arrives, a resumed account's requests go
out; and a viewer has no button, nor a way round it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from batchd.observe import snapshot
from tests.console.conftest import (
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    Console,
    StartConsole,
    loaded,
    new_page,
    token_env,
)
from tests.console.scenes import make_dead, pause
from tests.e2e.conftest import Stack, SubmitFn, params
from tests.support.daemon import wait_for
from tests.webhooks.support import Receiver, Reply


def dead_ids(stack: Stack) -> set[str]:
    return {x.id for x in stack.client.dead(limit=1000)}


def confirm(page: Page) -> None:
    page.locator("#confirm-ok").click()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


def test_requeue_one_dead_letter_and_it_succeeds(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """The row's Requeue sends that request round again: it ends succeeded; the others stay."""
    console = start_console(BATCHD_RETRY__MAX_ATTEMPTS="1")
    stack = console.stack
    first, *others = make_dead(stack, submit, 3)
    page = new_page(browser, console.url + "/#/dead", console.errors)
    loaded(page, "dead")
    page.locator(f'tr[data-id="{first}"] [data-action="requeue"]').click()
    expect(page.locator("#flash")).to_contain_text(f"{first}: requeued")
    assert stack.client.wait(first, timeout=60).status == "succeeded"
    assert dead_ids(stack) == set(others)
    expect(page.locator(f'tr[data-id="{first}"]')).to_have_count(0)
    page.context.close()
    assert console.errors == []


def test_requeue_all_matching_a_filter(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """Filtered by error type, "Requeue all matching" sends every such dead letter round again,
    each to a result, once confirmed."""
    console = start_console(BATCHD_RETRY__MAX_ATTEMPTS="1")
    stack = console.stack
    dead = make_dead(stack, submit, 3)
    page = new_page(browser, console.url + "/#/dead", console.errors)
    loaded(page, "dead")
    page.locator('#dead-types [data-type="api_error"]').click()
    expect(page.locator("#dead-requeue-all")).to_have_text("Requeue all matching")
    page.locator("#dead-requeue-all").click()
    expect(page.locator("#confirm-text")).to_contain_text("whose last error is api_error")
    confirm(page)
    expect(page.locator("#flash")).to_contain_text("Requeued 3")
    for rid in dead:
        assert stack.client.wait(rid, timeout=60).status == "succeeded"
    assert dead_ids(stack) == set()
    page.context.close()
    assert console.errors == []


def test_purge_selected_then_all(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """Purge selected forgets the ticked dead letters only; Purge all, once confirmed, the rest.
    Their results stay readable."""
    console = start_console(BATCHD_RETRY__MAX_ATTEMPTS="1")
    stack = console.stack
    a, b, c = make_dead(stack, submit, 3)
    page = new_page(browser, console.url + "/#/dead", console.errors)
    loaded(page, "dead")
    page.locator(f'tr[data-id="{a}"] input[type=checkbox]').check()
    page.locator(f'tr[data-id="{b}"] input[type=checkbox]').check()
    page.locator("#dead-purge-selected").click()
    confirm(page)
    expect(page.locator("#flash")).to_contain_text("Purged 2")
    assert dead_ids(stack) == {c}
    page.locator("#dead-purge-all").click()
    page.locator("#confirm-cancel").click()
    assert dead_ids(stack) == {c}
    page.locator("#dead-purge-all").click()
    confirm(page)
    expect(page.locator("#dead-empty")).to_be_visible()
    assert dead_ids(stack) == set()
    assert stack.client.get(a).state == "dead"
    page.context.close()
    assert console.errors == []


def test_requeue_from_the_request_page(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """A dead request's own page requeues it; the page then follows it to succeeded."""
    console = start_console(BATCHD_RETRY__MAX_ATTEMPTS="1")
    stack = console.stack
    [rid] = make_dead(stack, submit, 1)
    page = new_page(browser, console.url + f"/#/request/{rid}", console.errors)
    loaded(page, "request")
    expect(page.locator("#req-status")).to_have_text("dead")
    page.locator("#req-requeue").click()
    expect(page.locator("#req-status")).to_have_text("succeeded", timeout=60_000)
    page.context.close()
    assert console.errors == []


def test_retried_webhook_arrives(
    browser: Browser, start_console: StartConsole, receiver: Receiver
) -> None:
    """A delivery that gave up (its receiver answered 500) is sent again by Retry and arrives."""
    console = start_console(
        BATCHD_WEBHOOKS__SCHEDULE="[0]",
        BATCHD_WEBHOOKS__ALLOW_NETWORKS='["127.0.0.1/32"]',
    )
    stack = console.stack
    receiver.reply = lambda r: Reply(status=500)
    ticket = stack.client.submit(params(1), callback_url=receiver.url())
    stack.client.wait(ticket.id, timeout=60)
    accounts = list(stack.client.settings.accounts)

    def gave_up() -> int:
        return snapshot.read(stack.client.store, accounts).webhooks_dead.get("default", 0)

    wait_for(gave_up, 30, "the delivery to give up")
    assert len(receiver.requests) == 1
    receiver.reply = lambda r: Reply(status=200)
    page = new_page(browser, console.url + "/#/webhooks", console.errors)
    loaded(page, "webhooks")
    page.locator(f'tr[data-id="{ticket.id}"] [data-action="retry"]').click()
    expect(page.locator("#flash")).to_contain_text(f"{ticket.id}: was dead")
    got = receiver.wait_for(2, timeout=30)
    assert got[1].headers["webhook-id"] == got[0].headers["webhook-id"]
    assert b'"id":"' + ticket.id.encode() in got[1].body
    expect(page.locator("#webhooks-empty")).to_be_visible(timeout=20_000)
    page.context.close()
    assert console.errors == []


def test_resume_sends_a_paused_accounts_requests(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """While paused, requests wait in their lane; Resume (confirmed) lets them go: they end."""
    console = start_console()
    stack = console.stack
    pause(stack.client.store)
    ids = submit(3)
    page = new_page(browser, console.url + "/#/paused", console.errors)
    loaded(page, "paused")
    assert {stack.client.get(i).state for i in ids} == {"pending"}
    page.locator('tr[data-account="default"] [data-action="resume"]').click()
    confirm(page)
    expect(page.locator("#paused-none")).to_be_visible()
    for rid in ids:
        assert stack.client.wait(rid, timeout=60).status == "succeeded"
    page.context.close()
    assert console.errors == []


def test_viewer_has_no_button_and_cannot_act(
    browser: Browser, start_console: StartConsole, submit: SubmitFn
) -> None:
    """A viewer sees dead letters, deliveries and pauses without a button, and a request made
    from the page itself (with its CSRF token) is refused: nothing changes."""
    tokens = token_env(viewer_vic=VIEWER_TOKEN, operator_olga=OPERATOR_TOKEN)
    console: Console = start_console(BATCHD_CONSOLE__TOKENS=tokens, BATCHD_RETRY__MAX_ATTEMPTS="1")
    stack = console.stack
    dead = make_dead(stack, submit, 2)
    pause(stack.client.store)
    page = new_page(browser, console.url, console.errors)
    loaded(page, "login")
    page.fill("#token", VIEWER_TOKEN)
    page.locator("#login button").click()
    loaded(page, "overview")
    page.evaluate("() => { location.hash = '#/dead' }")
    loaded(page, "dead")
    expect(page.locator(f'tr[data-id="{dead[0]}"]')).to_be_visible()
    expect(page.locator("[data-action], #dead-requeue-all, #dead-purge-all")).to_have_count(0)
    page.evaluate("() => { location.hash = '#/paused' }")
    loaded(page, "paused")
    expect(page.locator('[data-action="resume"]')).to_have_count(0)
    status = page.evaluate(
        """async () => {
            const s = await (await fetch('/api/session')).json();
            const r = await fetch('/api/dead/requeue', {method: 'POST',
                headers: {'Content-Type': 'application/json', 'X-Batchd-CSRF': s.csrf},
                body: JSON.stringify({all: true})});
            return r.status;
        }"""
    )
    assert status == 403
    assert dead_ids(stack) == set(dead)
    assert stack.client.get(dead[0]).state == "dead"
    page.context.close()
    assert console.errors == [x for x in console.errors if "403" in x]
