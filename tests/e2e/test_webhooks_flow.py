"""A request with a callback_url: its result arrives as a signed webhook, through the daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from standardwebhooks import Webhook

from batchd import InvalidRequestError
from tests.e2e.conftest import Stack, params
from tests.support.daemon import wait_for
from tests.support.submit_state import submit_state
from tests.webhooks.support import SECRET, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()


def test_result_arrives_as_signed_webhook(stack: Stack, receiver: Receiver) -> None:
    """The result envelope is POSTed, signed, and also kept for wait and the reply queue."""
    stack.daemon(
        BATCHD_WEBHOOKS__SECRET=SECRET,
        BATCHD_WEBHOOKS__ALLOW_NETWORKS='["127.0.0.1/32"]',
    )
    ticket = stack.client.submit(params(1), callback_url=receiver.url(), reply_to="both")
    [got] = receiver.wait_for(1, timeout=60)
    payload = Webhook(SECRET).verify(got.body, got.headers)
    assert payload["id"] == ticket.id
    assert payload["status"] == "succeeded"
    assert got.headers["webhook-id"].startswith("msg_")
    assert stack.client.wait(ticket.id, timeout=10).raw == got.body
    assert json.loads(got.body) == stack.reply_and_ack("both")


def test_callback_url_checked_at_submit(stack: Stack) -> None:
    """A callback URL that is not http(s) with a host is refused at submit, nothing stored."""
    account = stack.client.settings.default_account
    before = submit_state(stack.client.redis, stack.client.keys, account)
    with pytest.raises(InvalidRequestError) as err:
        stack.client.submit(params(1), callback_url="ftp://example.com/x")
    assert err.value.field == "callback_url"
    assert submit_state(stack.client.redis, stack.client.keys, account) == before


def test_loopback_callback_refused_at_delivery_without_allowlist(
    stack: Stack, receiver: Receiver
) -> None:
    """Delivery to a loopback address is refused unless allowlisted; the result is kept."""
    stack.daemon(BATCHD_WEBHOOKS__SCHEDULE="[0]")
    ticket = stack.client.submit(params(1), callback_url=receiver.url())
    result = stack.client.wait(ticket.id, timeout=60)
    assert result.status == "succeeded"
    dead_key = stack.client.keys.deliveries_dead("default")
    wait_for(lambda: stack.client.redis.zcard(dead_key), 30, "the delivery to go dead")
    assert receiver.requests == []
    assert stack.client.get(ticket.id).state == "succeeded"
