"""Foreign or corrupted data in batchd's own Redis keys, met by a running daemon.

A spoiled pending entry is set aside (quarantined and counted), a spoiled record ends
`rejected`, a key of the wrong type refuses what would touch it with a clear error; the other
requests of the lane, the batch and the account go on unharmed.
"""

from __future__ import annotations

import orjson
import pytest
import redis

from batchd import Result
from batchd.keys import new_token, split_request_id
from batchd.store import text
from tests.catalogue.conftest import PARAMS, Stack
from tests.support.daemon import wait_for
from tests.support.submit_state import submit_state

ACCOUNT = "default"


def record_key(stack: Stack, rid: str) -> str:
    return stack.client.keys.request(*split_request_id(rid))


def counter(stack: Stack, name: str) -> int:
    return int(stack.client.redis.hget(stack.client.keys.counters(), name) or 0)


def pending_lane(stack: Stack, n: int, priority: int = 0, **extra: object) -> list[str]:
    """n requests left pending: the daemon cuts nothing until `flush`."""
    items = [{"params": PARAMS, "priority": priority, **extra} for _ in range(n)]
    ids = [t.id for t in stack.client.submit_many(items)]  # type: ignore[union-attr]
    return ids


def finish_all(stack: Stack, ids: list[str]) -> dict[str, Result]:
    stack.client.flush()
    return {i: r for i, r in zip(ids, stack.results(ids), strict=True)}


# -- pending entries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [b"garbage-without-spaces", b"01ABCDEF not-a-size 123", b"", b"\xff\xfe \x00 1", b"a b c d"],
    ids=["no spaces", "size not a number", "empty", "binary", "four fields"],
)
def test_foreign_pending_entry_is_quarantined(stack: Stack, entry: bytes) -> None:
    """An entry batchd never wrote is set aside and counted; the lane's requests all succeed."""
    before = counter(stack, "quarantined")
    q = stack.client.keys.pending(ACCOUNT, 0)
    first = stack.submit(1)
    stack.client.redis.rpush(q, entry)
    rest = stack.submit(2)
    results = stack.results(first + rest)
    assert {r.status for r in results} == {"succeeded"}
    quarantine = stack.client.redis.lrange(stack.client.keys.quarantine(ACCOUNT), 0, -1)
    assert entry in quarantine
    assert counter(stack, "quarantined") == before + 1
    stack.assert_unharmed()


def test_entry_whose_record_vanished_is_dropped(stack: Stack) -> None:
    """An entry whose record no longer exists is dropped as stale; its neighbours succeed."""
    ghost = f"{new_token()} 120 {int(stack.client.redis.time()[0]) * 1000}"
    stack.client.redis.rpush(stack.client.keys.pending(ACCOUNT, 0), ghost)
    results = stack.results(stack.submit(2))
    assert {r.status for r in results} == {"succeeded"}
    stack.assert_unharmed()


# -- request records -----------------------------------------------------------------------------


def spoil_and_run(stack: Stack, spoil: dict[str, bytes | None]) -> tuple[Result, list[Result]]:
    """Three requests in one lane, the middle one's record spoiled before the cut."""
    stack.client.redis.set(stack.client.keys.paused(ACCOUNT), "held by the test", px=60_000)
    try:
        ids = pending_lane(stack, 3, reply_to="spoiled")
        rk = record_key(stack, ids[1])
        for name, value in spoil.items():
            if value is None:
                stack.client.redis.hdel(rk, name)
            else:
                stack.client.redis.hset(rk, name, value)
    finally:
        stack.client.redis.delete(stack.client.keys.paused(ACCOUNT))
    results = finish_all(stack, ids)
    victim = results.pop(ids[1])
    return victim, list(results.values())


@pytest.mark.parametrize(
    ("spoil", "field"),
    [
        ({"at": b"many"}, "at"),
        ({"ts": b"yesterday"}, "ts"),
        ({"md": b"{not json"}, "md"),
        ({"k": b"not json either"}, "k"),
        ({"k": b'{"a": 1}'}, "k"),
        ({"n": b"12"}, "n"),
        ({"pr": None}, "pr"),
    ],
    ids=["attempts not a number", "submitted time not a number", "metadata not JSON",
         "key not JSON", "key not a string", "size not its entry's", "priority missing"],
)  # fmt: skip
def test_record_with_a_spoiled_field_ends_rejected(
    stack: Stack, spoil: dict[str, bytes | None], field: str
) -> None:
    """The request ends `rejected` naming the field, with a valid envelope; the others succeed."""
    victim, others = spoil_and_run(stack, spoil)
    assert victim.status == "rejected"
    assert victim.error is not None and f"field {field}" in victim.error["message"]
    assert orjson.loads(victim.raw)["id"] == victim.id
    assert {r.status for r in others} == {"succeeded"}
    # The reply queue got every one of them, each a readable envelope.
    got = {r.id for r in stack.client.replies("spoiled", timeout=1)}
    assert got == {victim.id} | {r.id for r in others}
    stack.assert_unharmed()


def test_record_without_params_ends_rejected(stack: Stack) -> None:
    """A record whose params vanished cannot be sent: rejected; the batch goes without it."""
    stack.client.redis.set(stack.client.keys.paused(ACCOUNT), "held by the test", px=60_000)
    try:
        ids = pending_lane(stack, 3)
        account, token = split_request_id(ids[1])
        stack.client.redis.hdel(stack.client.keys.params(account), token)
        stack.client.redis.hdel(record_key(stack, ids[1]), "p")
    finally:
        stack.client.redis.delete(stack.client.keys.paused(ACCOUNT))
    results = finish_all(stack, ids)
    assert results.pop(ids[1]).status == "rejected"
    assert {r.status for r in results.values()} == {"succeeded"}
    stack.assert_unharmed()


def test_record_replaced_by_a_string_is_quarantined(stack: Stack) -> None:
    """A record key holding a string: its entry is set aside, `get` says WRONGTYPE plainly."""
    stack.client.redis.set(stack.client.keys.paused(ACCOUNT), "held by the test", px=60_000)
    try:
        ids = pending_lane(stack, 3)
        rk = record_key(stack, ids[1])
        stack.client.redis.delete(rk)
        stack.client.redis.set(rk, "someone else's value")
    finally:
        stack.client.redis.delete(stack.client.keys.paused(ACCOUNT))
    stack.client.flush()
    others = stack.results([ids[0], ids[2]])
    assert {r.status for r in others} == {"succeeded"}
    wait_for(lambda: stack.client.redis.llen(stack.client.keys.quarantine(ACCOUNT)), 10,
             "the entry to be quarantined")  # fmt: skip
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        stack.client.get(ids[1])
    stack.client.redis.delete(rk)
    stack.assert_unharmed()


def test_record_spoiled_while_in_a_batch_ends_rejected(stack: Stack) -> None:
    """A record whose lane field is lost while batched cannot go round again: rejected."""
    stack.emulator.set_profile({"processing_time": [1.5, 1.5], "result_api_error_rate": 1.0})
    ids = stack.submit(2)
    # Created (its id recorded) under the failing profile, before the profile is reset.
    wait_for(lambda: all(stack.client.get(i).batch_id for i in ids), 20, "the batch")
    stack.client.redis.hdel(record_key(stack, ids[0]), "pr")
    stack.emulator.set_profile({})
    victim, other = stack.results(ids)
    assert victim.status == "rejected" and victim.error is not None
    assert "field pr" in victim.error["message"]
    assert other.status == "succeeded" and other.attempts == 2
    stack.assert_unharmed()


# -- keys of the wrong type ----------------------------------------------------------------------


def test_pending_list_of_the_wrong_type(stack: Stack) -> None:
    """A string where a lane's list belongs: submits there fail plainly storing nothing; the
    aggregator skips that lane and keeps cutting the others."""
    keys = stack.client.keys
    stack.client.redis.set(keys.pending(ACCOUNT, 3), "not a list")
    stack.client.redis.sadd(keys.lanes(ACCOUNT), 3)
    before = submit_state(stack.client.redis, keys, ACCOUNT)
    with pytest.raises(redis.ResponseError, match="not a list"):
        stack.client.submit(PARAMS, priority=3, key="wrong-type-lane")
    assert submit_state(stack.client.redis, keys, ACCOUNT) == before
    results = stack.results(stack.submit(2))
    assert {r.status for r in results} == {"succeeded"}
    stack.client.redis.delete(keys.pending(ACCOUNT, 3))
    assert "lane cannot be cut" in stack.daemon.log_text()
    stack.assert_unharmed()


def test_idempotency_key_of_the_wrong_type(stack: Stack) -> None:
    """A hash where an idempotency key's string belongs: that submit fails, storing nothing."""
    from batchd.validate import key_digest

    kk = stack.client.keys.idempotency(ACCOUNT, key_digest("spoiled-key"))
    stack.client.redis.hset(kk, "foreign", "1")
    before = submit_state(stack.client.redis, stack.client.keys, ACCOUNT)
    with pytest.raises(redis.ResponseError, match="not a string"):
        stack.client.submit(PARAMS, key="spoiled-key")
    assert submit_state(stack.client.redis, stack.client.keys, ACCOUNT) == before
    stack.client.redis.delete(kk)


def test_reply_queue_of_the_wrong_type(stack: Stack) -> None:
    """A string under a reply queue's name: that reply is dropped and counted, its result kept
    for `wait`; the other requests of the batch end and reply normally."""
    stack.client.redis.set(stack.client.keys.reply_queue("taken"), "someone else's")
    before = counter(stack, "replies_undeliverable")
    blocked = stack.submit(1, reply_to="taken")
    fine = stack.submit(2, reply_to="fine")
    results = stack.results(blocked + fine)
    assert {r.status for r in results} == {"succeeded"}
    assert counter(stack, "replies_undeliverable") == before + 1
    assert sorted(r.id for r in stack.client.replies("fine", timeout=1)) == sorted(fine)
    stack.client.redis.delete(stack.client.keys.reply_queue("taken"))
    stack.assert_unharmed()


def test_lane_counters_that_are_not_numbers(stack: Stack) -> None:
    """Lane counters spoiled: reset from the list, and the lane is cut as before."""
    stack.client.redis.set(stack.client.keys.paused(ACCOUNT), "held by the test", px=60_000)
    try:
        ids = pending_lane(stack, 2)
        stack.client.redis.hset(stack.client.keys.lane_stats(ACCOUNT, 0), "count", "lots")
    finally:
        stack.client.redis.delete(stack.client.keys.paused(ACCOUNT))
    results = finish_all(stack, ids)
    assert {r.status for r in results.values()} == {"succeeded"}
    assert text(stack.client.redis.hget(stack.client.keys.lane_stats(ACCOUNT, 0), "count")) == "0"
    stack.assert_unharmed()


@pytest.mark.parametrize(
    ("key", "member"),
    [("lanes", "not-a-priority"), ("flush", "garbage"), ("assemblies", "ghost-assembly")],
)
def test_foreign_members_of_the_indexes_are_ignored(stack: Stack, key: str, member: str) -> None:
    """Members batchd never wrote in its sets and indexes are skipped; requests go on."""
    keys = stack.client.keys
    r = stack.client.redis
    if key == "lanes":
        r.sadd(keys.lanes(ACCOUNT), member)
    elif key == "flush":
        r.sadd(keys.flush(ACCOUNT), member)
    else:
        r.zadd(keys.assemblies(ACCOUNT), {member: 0})
    results = stack.results(stack.submit(2))
    assert {x.status for x in results} == {"succeeded"}
    if key == "assemblies":
        wait_for(lambda: r.zscore(keys.assemblies(ACCOUNT), member) is None, 20,
                 "the sweeper to drop the ghost")  # fmt: skip
    r.srem(keys.lanes(ACCOUNT), member)
    stack.assert_unharmed()
