"""Delivery end to end: signed POSTs to a real receiver, and each way an attempt can end."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, MutableMapping
from email.utils import formatdate
from typing import Any

import pytest
import redis
from standardwebhooks import Webhook
from structlog.testing import capture_logs

from batchd.settings import AccountSettings
from batchd.store import Store, webhook_id
from batchd.webhooks import verify_webhook
from batchd.webhooks.sender import WebhookSender
from tests.support.redis import RedisServer
from tests.webhooks.support import (
    KEYS,
    OLD_SECRET,
    SECRET,
    LoopbackResolver,
    Receiver,
    Reply,
    RunningSender,
    enqueue,
    make_settings,
    wait_attempts,
    wait_state,
    wait_until,
)

StartSender = Callable[..., RunningSender]


def test_delivery_is_signed_for_an_independent_verifier(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """A delivery carries Standard Webhooks headers that the standardwebhooks package accepts."""
    start_sender(make_settings(redis_url))
    before = store.time_ms() // 1000
    token = enqueue(store, receiver.url())
    [got] = receiver.wait_for(1)
    after = store.time_ms() // 1000
    assert got.headers["webhook-id"] == webhook_id(token)
    assert got.headers["Content-Type"] == "application/json"
    assert before - 1 <= int(got.headers["webhook-timestamp"]) <= after  # Redis's clock
    envelope = Webhook(SECRET).verify(got.body, got.headers)
    assert envelope["id"] == f"default.{token}"
    wait_state(store, token, "delivered")


def test_delivery_passes_verify_webhook(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """batchd's own receiver helper accepts a delivery and returns its envelope."""
    start_sender(make_settings(redis_url))
    token = enqueue(store, receiver.url())
    [got] = receiver.wait_for(1)
    envelope = verify_webhook(got.body, got.headers, SECRET)
    assert envelope["id"] == f"default.{token}"
    assert envelope["status"] == "succeeded"


def test_rotation_sends_both_signatures_each_verifiable(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """While previous_until is ahead, the new and the old secret both sign the delivery."""
    settings = make_settings(
        redis_url, previous_secret=OLD_SECRET, previous_until=time.time() + 3600
    )
    start_sender(settings)
    enqueue(store, receiver.url())
    [got] = receiver.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    Webhook(SECRET).verify(got.body, got.headers)
    Webhook(OLD_SECRET).verify(got.body, got.headers)


def test_rotation_over_drops_the_old_signature(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """Once previous_until has passed, only the new secret signs."""
    settings = make_settings(redis_url, previous_secret=OLD_SECRET, previous_until=time.time() - 1)
    start_sender(settings)
    enqueue(store, receiver.url())
    [got] = receiver.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 1
    Webhook(SECRET).verify(got.body, got.headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(OLD_SECRET).verify(got.body, got.headers)


def test_endpoint_secret_wins_by_longest_prefix(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """The endpoint with the longest matching url_prefix signs instead of the default secret."""
    settings = make_settings(
        redis_url,
        endpoints=[
            {"url_prefix": receiver.url("/"), "secret": OLD_SECRET},
            {"url_prefix": receiver.url("/special/"), "secret": "whsec_c3BlY2lhbA=="},
        ],
    )
    start_sender(settings)
    enqueue(store, receiver.url("/special/hook"))
    [got] = receiver.wait_for(1)
    verify_webhook(got.body, got.headers, "whsec_c3BlY2lhbA==")
    with pytest.raises(Exception, match="no valid signature"):
        verify_webhook(got.body, got.headers, [SECRET, OLD_SECRET])


def test_no_secret_sends_unsigned(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """Without any secret a delivery still goes out, with no webhook-signature header."""
    start_sender(make_settings(redis_url, secret=None))
    token = enqueue(store, receiver.url())
    [got] = receiver.wait_for(1)
    assert "webhook-signature" not in {k.lower() for k in got.headers}
    assert got.headers["webhook-id"] == webhook_id(token)
    wait_state(store, token, "delivered")


def test_delivered_record_expires_after_retention(
    redis_url: str,
    store: Store,
    redis_client: redis.Redis,
    receiver: Receiver,
    start_sender: StartSender,
) -> None:
    """A delivered record leaves the due set and keeps only for `retention` seconds."""
    start_sender(make_settings(redis_url))
    token = enqueue(store, receiver.url())
    rec = wait_state(store, token, "delivered")
    assert rec.attempts == 1 and rec.last_status == 200
    assert redis_client.zscore(KEYS.deliveries_due("default"), token) is None
    ttl = redis_client.ttl(KEYS.delivery("default", token))
    assert 7 * 86400 - 60 < ttl <= 7 * 86400


def test_server_error_then_success_retries(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """A 500 is retried on the schedule; the next 2xx delivers, with the same webhook-id."""
    answers = iter([Reply(500, body=b"oops"), Reply(204)])
    receiver.reply = lambda r: next(answers)
    start_sender(make_settings(redis_url))
    token = enqueue(store, receiver.url())
    first, second = receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == webhook_id(token)
    rec = wait_state(store, token, "delivered")
    assert rec.attempts == 2 and rec.last_status == 204


def test_timeout_counts_as_failure_and_retries(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """An answer slower than the whole-attempt deadline fails the attempt; the retry delivers."""
    answers = iter([Reply(200, delay=5.0), Reply(200)])
    receiver.reply = lambda r: next(answers)
    start_sender(make_settings(redis_url, timeout=0.3))
    token = enqueue(store, receiver.url())
    started = time.monotonic()
    receiver.wait_for(2)
    assert time.monotonic() - started < 3.0
    rec = wait_state(store, token, "delivered")
    assert rec.attempts == 2


def test_redirect_is_not_followed(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """A 3xx answer is a failed attempt: the Location is never requested."""
    receiver.reply = lambda r: Reply(302, headers={"Location": receiver.url("/elsewhere")})
    start_sender(make_settings(redis_url))
    token = enqueue(store, receiver.url())
    rec = wait_state(store, token, "dead")
    assert rec.last_status == 302 and "not followed" in rec.last_error
    assert {r.path for r in receiver.requests} == {"/hook"}
    assert len(receiver.requests) == 3


def test_gone_stops_the_endpoint(
    redis_url: str,
    store: Store,
    redis_client: redis.Redis,
    receiver: Receiver,
    start_sender: StartSender,
) -> None:
    """A 410 ends the delivery as gone and stops later deliveries to that URL unsent."""
    receiver.reply = lambda r: Reply(410)
    start_sender(make_settings(redis_url, schedule=[0, 30, 30]))
    first = enqueue(store, receiver.url())
    rec = wait_state(store, first, "gone")
    assert rec.attempts == 1 and rec.last_status == 410
    assert redis_client.hexists(KEYS.endpoints_gone("default"), receiver.url())
    second = enqueue(store, receiver.url())
    wait_state(store, second, "gone")
    assert len(receiver.requests) == 1
    dead = redis_client.zrange(KEYS.deliveries_dead("default"), 0, -1)
    assert set(dead) == {first.encode(), second.encode()}


def test_too_many_requests_honours_retry_after_seconds(
    redis_url: str,
    store: Store,
    redis_client: redis.Redis,
    receiver: Receiver,
    start_sender: StartSender,
) -> None:
    """A 429 with Retry-After: 30 makes the next attempt due 30 s later, not on the schedule."""
    receiver.reply = lambda r: Reply(429, headers={"Retry-After": "30"})
    start_sender(make_settings(redis_url))
    token = enqueue(store, receiver.url())
    rec = wait_attempts(store, token, 1)
    due = redis_client.zscore(KEYS.deliveries_due("default"), token)
    assert due is not None and rec.last_ms is not None
    assert abs(due - (rec.last_ms + 30_000)) < 50
    assert rec.state == "pending" and rec.last_status == 429


def test_unavailable_honours_retry_after_date(
    redis_url: str,
    store: Store,
    redis_client: redis.Redis,
    receiver: Receiver,
    start_sender: StartSender,
) -> None:
    """A 503 with an HTTP-date Retry-After makes the next attempt due at that date."""
    when = time.time() + 45
    receiver.reply = lambda r: Reply(503, headers={"Retry-After": formatdate(when, usegmt=True)})
    start_sender(make_settings(redis_url))
    token = enqueue(store, receiver.url())
    wait_attempts(store, token, 1)
    due = redis_client.zscore(KEYS.deliveries_due("default"), token)
    assert due is not None
    assert abs(due / 1000 - int(when)) < 1.5


def test_retry_after_is_capped(
    redis_url: str,
    store: Store,
    redis_client: redis.Redis,
    receiver: Receiver,
    start_sender: StartSender,
) -> None:
    """An absurd Retry-After is cut to the schedule's longest delay (at least a minute)."""
    receiver.reply = lambda r: Reply(429, headers={"Retry-After": "99999999"})
    start_sender(make_settings(redis_url, schedule=[0, 5, 120]))
    token = enqueue(store, receiver.url())
    rec = wait_attempts(store, token, 1)
    due = redis_client.zscore(KEYS.deliveries_due("default"), token)
    assert due is not None and rec.last_ms is not None
    assert abs(due - (rec.last_ms + 120_000)) < 50


def test_dead_letter_after_the_schedule(
    redis_url: str,
    store: Store,
    redis_client: redis.Redis,
    receiver: Receiver,
    start_sender: StartSender,
) -> None:
    """After the last scheduled attempt fails, the delivery is dead, listed and expiring."""
    receiver.reply = lambda r: Reply(500)
    start_sender(make_settings(redis_url))
    token = enqueue(store, receiver.url())
    rec = wait_state(store, token, "dead")
    assert rec.attempts == 3 and rec.last_status == 500
    assert len(receiver.requests) == 3
    assert redis_client.zscore(KEYS.deliveries_dead("default"), token) is not None
    assert redis_client.zscore(KEYS.deliveries_due("default"), token) is None
    assert redis_client.ttl(KEYS.delivery("default", token)) > 0


def test_huge_answer_is_read_only_up_to_the_limit(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """A 50 MB error page is cut at max_response_bytes and the attempt still ends promptly."""
    page = b"x" * (50 * 1024 * 1024)
    receiver.reply = lambda r: Reply(500, body=page)
    start_sender(make_settings(redis_url, max_response_bytes=1024, schedule=[0]))
    token = enqueue(store, receiver.url())
    rec = wait_state(store, token, "dead")
    assert rec.last_error.startswith("HTTP 500: xxx")
    assert len(rec.last_error) < 300


def test_loopback_is_refused_unless_allowed(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """Without an allowlist entry, 127.0.0.1 is a blocked address: dead at once, never reached."""
    start_sender(make_settings(redis_url, allow_networks=[]))
    token = enqueue(store, receiver.url())
    rec = wait_state(store, token, "dead")
    assert rec.attempts == 1
    assert rec.last_error.startswith("blocked address 127.0.0.1: loopback")
    assert receiver.requests == []


def test_loopback_refusal_names_the_settings_that_allow_it(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """A delivery refused for its loopback address says which settings would let it through."""
    start_sender(make_settings(redis_url, allow_networks=[]))
    token = enqueue(store, receiver.url())
    rec = wait_state(store, token, "dead")
    assert "webhooks.allow_hosts" in rec.last_error
    assert "webhooks.allow_networks" in rec.last_error
    assert receiver.requests == []


def test_allow_hosts_lets_a_named_host_through(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """A host named in allow_hosts is reached even though its address is internal."""
    start_sender(make_settings(redis_url, allow_networks=[], allow_hosts=["127.0.0.1"]))
    token = enqueue(store, receiver.url())
    wait_state(store, token, "delivered")


def test_on_result_hook_sees_each_outcome(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """The metrics hook is called once per attempt with its outcome and duration."""
    seen: list[tuple[str, float]] = []
    answers = iter([Reply(500), Reply(200)])
    receiver.reply = lambda r: next(answers)
    start_sender(make_settings(redis_url), on_result=lambda o, s: seen.append((o, s)))
    token = enqueue(store, receiver.url())
    wait_state(store, token, "delivered")
    wait_until(lambda: len(seen) == 2)
    assert [o for o, _ in seen] == ["retry", "delivered"]
    assert all(s >= 0 for _, s in seen)


def test_many_deliveries_run_in_parallel(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """Forty deliveries to a receiver taking 0.25 s each finish far faster than one by one."""
    receiver.reply = lambda r: Reply(200, delay=0.25)
    start_sender(make_settings(redis_url, concurrency=64, per_host=64))
    started = time.monotonic()
    tokens = [enqueue(store, receiver.url()) for _ in range(40)]
    receiver.wait_for(40)
    for token in tokens:
        wait_state(store, token, "delivered")
    elapsed = time.monotonic() - started
    assert elapsed < 40 * 0.25 / 2  # one by one: 10 s; in parallel: about 0.3 s
    assert receiver.max_active >= 10


def test_every_account_is_served(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """Deliveries in each configured account's outbox are sent."""
    settings = make_settings(redis_url)
    settings.accounts = {"default": AccountSettings(), "team-b": AccountSettings()}
    start_sender(settings)
    token = enqueue(store, receiver.url(), account="team-b")
    [got] = receiver.wait_for(1)
    assert verify_webhook(got.body, got.headers, SECRET)["id"] == f"team-b.{token}"


def test_unsigned_sender_warns_once_at_start(redis_url: str) -> None:
    """With no secret configured the sender logs one warning when it starts."""
    sender = WebhookSender(make_settings(redis_url, secret=None), redis_url)

    async def main() -> list[MutableMapping[str, Any]]:
        with capture_logs() as logs:
            stop = asyncio.Event()
            task = asyncio.create_task(sender.run(stop))
            deadline = time.monotonic() + 10
            while not any(e["event"] == "webhooks.started" for e in logs):
                assert time.monotonic() < deadline, "sender did not start"
                await asyncio.sleep(0.01)
            stop.set()
            await task
        return logs

    logs = asyncio.run(main())
    warnings = [e for e in logs if e["event"] == "webhooks.unsigned"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"


def test_slow_host_backlog_does_not_starve_other_hosts(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """Deliveries queued behind a slow host's backlog still go out at once to a fast host."""
    receiver.reply = lambda r: Reply(200, delay=2.0 if r.path == "/slow" else 0.0)
    settings = make_settings(redis_url, concurrency=8, per_host=2, timeout=5.0)
    slow_url = f"http://slow.example:{receiver.port}/slow"
    fast_url = f"http://fast.example:{receiver.port}/fast"
    for _ in range(40):
        enqueue(store, slow_url)
    fast = [enqueue(store, fast_url) for _ in range(5)]
    start_sender(settings, resolver=LoopbackResolver())
    started = time.monotonic()
    for token in fast:
        wait_state(store, token, "delivered")
    # Behind the slow backlog (40 deliveries of 2 s, two at a time) they would wait 40 s; the
    # bound leaves a loaded machine room to start the sender.
    assert time.monotonic() - started < 10


def test_sender_outlives_a_redis_restart(
    redis_server: RedisServer,
    store: Store,
    receiver: Receiver,
    start_sender: StartSender,
) -> None:
    """When Redis goes away and comes back, the sender carries on with new deliveries."""
    start_sender(make_settings(redis_server.url))
    first = enqueue(store, receiver.url())
    wait_state(store, first, "delivered")
    redis_server.restart(crash=True)
    second = enqueue(store, receiver.url())
    wait_state(store, second, "delivered", timeout=15)
