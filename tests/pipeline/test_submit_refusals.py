"""A submit that a foreign value in one of batchd's keys refuses stores nothing, whichever key it
is and whenever in the call it refuses: SUBMIT writes the shared keys a foreign value could
refuse one after another and undoes them when a later one refuses (a counter that is not a
number used to fail the call after the requests were written). Each case here spoils one key,
and compares every key the account has, content and all, before and after."""

from __future__ import annotations

import time
from typing import Any

import pytest
import redis

from batchd import Client
from batchd.errors import StoreError
from batchd.store import Keys, Lane
from tests.pipeline import ACCOUNT, params

BETA = "context-1m-2025-08-07"
#: A lane nobody used yet (so SADD adds it, and the undo must take it out again).
PRIORITY = 7


def content(r: redis.Redis, key: bytes) -> tuple[str, Any]:
    kind = r.type(key)
    name = kind.decode() if isinstance(kind, bytes) else str(kind)
    if name == "hash":
        return name, sorted(r.hgetall(key).items())
    if name == "list":
        return name, r.lrange(key, 0, -1)
    if name == "set":
        return name, sorted(r.smembers(key))
    if name == "zset":
        return name, r.zrange(key, 0, -1, withscores=True)
    if name == "string":
        return name, r.get(key)
    return name, None


def everything(r: redis.Redis, keys: Keys) -> dict[bytes, tuple[str, Any]]:
    """Every key of the account (on a cluster: of every master), with its content."""
    found: dict[bytes, tuple[str, Any]] = {}
    for key in r.scan_iter(match=keys.tag(ACCOUNT) + "*", count=1000):
        found[key] = content(r, key)
    return found


def items() -> list[dict[str, Any]]:
    """Three requests of a fresh lane with a beta: one keyed, one with a deadline."""
    common: dict[str, Any] = {"priority": PRIORITY, "betas": [BETA]}
    return [
        {"params": params("a"), **common},
        {"params": params("b"), "key": "refused-key", **common},
        {"params": params("c"), "deadline": time.time() + 86_400, **common},
    ]


def spoil_counters_field(r: redis.Redis, keys: Keys) -> str:
    r.hset(keys.counters(ACCOUNT), "submitted", "many")
    return keys.counters(ACCOUNT)


def replace(kind: str) -> Any:
    """Spoil the key `name(keys)` by putting a value of another type there."""

    def spoil(r: redis.Redis, keys: Keys) -> str:
        key = {
            "counters": keys.counters(ACCOUNT),
            "deadlines": keys.deadlines(ACCOUNT),
            "betas": keys.lane_betas(ACCOUNT),
            "lanes": keys.lanes(ACCOUNT),
            "pending": keys.pending(ACCOUNT, Lane.of(PRIORITY, betas=[BETA]).id),
            "lane counters": keys.lane_stats(ACCOUNT, Lane.of(PRIORITY, betas=[BETA]).id),
        }[kind]
        r.delete(key)
        r.set(key, b"foreign")
        return key

    return spoil


@pytest.mark.parametrize(
    ("spoil", "said"),
    [
        (replace("lane counters"), "holds a string, not a hash"),
        (replace("lanes"), "holds a string, not a set"),
        (replace("pending"), "holds a string, not a list"),
        (replace("betas"), "holds a string, not a hash"),
        (replace("deadlines"), "holds a string, not a zset"),
        (replace("counters"), "holds a string, not a hash"),
        (spoil_counters_field, "not an integer"),
    ],
    ids=[
        "lane-counters",
        "lane-set",
        "lane-list",
        "betas",
        "deadlines",
        "counters",
        "submitted-not-a-number",
    ],
)
def test_a_refused_submit_stores_nothing(
    client: Client, redis_client: redis.Redis, keys: Keys, spoil: Any, said: str
) -> None:
    client.submit(params("before"))  # the account's keys exist, as on any working day
    key = spoil(redis_client, keys)
    before = everything(redis_client, keys)
    with pytest.raises(StoreError, match="nothing was stored") as caught:
        client.submit_many(items())
    assert key in str(caught.value) and said in str(caught.value)
    assert everything(redis_client, keys) == before
    redis_client.delete(key)
    stored = client.submit_many(items())
    assert [type(t).__name__ for t in stored] == ["Ticket"] * 3  # and once mended, it stores


def test_lane_counters_that_are_not_numbers_refuse_the_submit(
    client: Client, redis_client: redis.Redis, keys: Keys
) -> None:
    """Lane counters spoiled with words: a submit to that lane stores nothing (the aggregator
    rebuilds such counters from the list)."""
    stats = keys.lane_stats(ACCOUNT, Lane.of(PRIORITY, betas=[BETA]).id)
    client.submit_many(items()[:1])
    redis_client.hset(stats, "count", "lots")
    before = everything(redis_client, keys)
    with pytest.raises(StoreError, match="not integers; nothing was stored"):
        client.submit_many(items())
    assert everything(redis_client, keys) == before
