"""Webhook times are Redis's: a sender on a host whose clock is off still signs and schedules by
Redis's clock. The sender runs in a process of its own with its clock set back by libfaketime."""

from __future__ import annotations

from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path

import pytest
import redis
from standardwebhooks import Webhook

from batchd.store import Store
from tests.webhooks.support import (
    KEYS,
    SECRET,
    Receiver,
    Reply,
    clock_offset_env,
    enqueue,
    sender_clock,
    spawn_sender,
    wait_attempts,
)

#: The sender host's clock minus Redis's, seconds.
SKEW = -7200


@pytest.fixture
def skewed_sender(redis_url: str, store: Store, tmp_path: Path) -> Iterator[Path]:
    """A sender process whose clock is two hours behind Redis's (checked); yields its log."""
    log = tmp_path / "sender.log"
    proc = spawn_sender(redis_url, log, lease=5.0, env=clock_offset_env(SKEW))
    try:
        offset = sender_clock(log) - store.time_ms() / 1000
        assert abs(offset - SKEW) < 5, f"the sender's clock is {offset:.0f} s off, not {SKEW}"
        yield log
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, log.read_text()


def test_timestamp_is_redis_time(store: Store, receiver: Receiver, skewed_sender: Path) -> None:
    """webhook-timestamp agrees with Redis's TIME within a second, so a receiver on a true clock
    accepts it, however far the sender's own clock is off."""
    before = store.time_ms() // 1000
    enqueue(store, receiver.url())
    [got] = receiver.wait_for(1, timeout=20)
    after = store.time_ms() // 1000
    assert before - 1 <= int(got.headers["webhook-timestamp"]) <= after
    Webhook(SECRET).verify(got.body, got.headers)  # its tolerance is five minutes


def test_retry_is_due_by_redis_time(
    store: Store, redis_client: redis.Redis, receiver: Receiver, skewed_sender: Path
) -> None:
    """A retry's attempt time and next time are Redis's, next = attempt + the delay asked."""
    receiver.reply = lambda r: Reply(429, headers={"Retry-After": "30"})
    before = store.time_ms()
    token = enqueue(store, receiver.url())
    rec = wait_attempts(store, token, 1, timeout=20)
    after = store.time_ms()
    assert rec.last_ms is not None and before <= rec.last_ms <= after
    assert rec.next_ms == rec.last_ms + 30_000
    assert redis_client.zscore(KEYS.deliveries_due("default"), token) == rec.next_ms


def test_retry_after_date_is_read_by_redis_time(
    store: Store, redis_client: redis.Redis, receiver: Receiver, skewed_sender: Path
) -> None:
    """A Retry-After HTTP date is turned into a delay against Redis's clock, not the sender's."""
    when = store.time_ms() / 1000 + 45
    receiver.reply = lambda r: Reply(503, headers={"Retry-After": formatdate(when, usegmt=True)})
    token = enqueue(store, receiver.url())
    wait_attempts(store, token, 1, timeout=20)
    due = redis_client.zscore(KEYS.deliveries_due("default"), token)
    assert due is not None
    assert abs(due / 1000 - int(when)) < 1.5
