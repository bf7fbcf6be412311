"""A submit whose reply was lost is sent again by the Redis client (redis-py retries a command
on a dropped connection): the same call run twice stores its requests once."""

from __future__ import annotations

import redis

from batchd import Settings
from batchd.store import Keys, Lane, Store
from batchd.store import requests as req_store
from batchd.validate import prepare
from tests.pipeline import params


def test_the_same_submit_call_run_twice_stores_once(redis_url: str) -> None:
    """Both runs answer stored with the same ids; one record, one lane entry, one count."""
    settings = Settings.load(redis_url=redis_url)
    r = redis.Redis.from_url(redis_url)
    store = Store(r, Keys(settings.prefix))
    items = [prepare(settings, params(str(i))) for i in range(3)]
    call = req_store.submit(store.keys, "default", items, 60_000)
    first = store.run(call)
    again = store.run(call)  # what a client retrying the lost reply sends: the very same call
    assert [o.id for o in first] == [o.id for o in again]
    assert all(o.stored for o in first) and all(o.stored for o in again)
    lane = Lane.of(0).id
    assert r.llen(store.keys.pending("default", lane)) == 3
    assert r.hget(store.keys.counters("default"), "submitted") == b"3"
    assert r.hget(store.keys.lane_stats("default", lane), "count") == b"3"
    r.close()


def test_a_keyed_submit_run_twice_is_not_a_duplicate(redis_url: str) -> None:
    """A retried call with an idempotency key answers stored, not `duplicate`: it is the same
    request, not a second one under the same key."""
    settings = Settings.load(redis_url=redis_url)
    r = redis.Redis.from_url(redis_url)
    store = Store(r, Keys(settings.prefix))
    item = prepare(settings, params(), key="order-7")
    call = req_store.submit(store.keys, "default", [item], 60_000)
    [first] = store.run(call)
    [again] = store.run(call)
    assert first.stored and again.stored and first.id == again.id
    r.close()
