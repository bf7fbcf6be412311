"""Foreign or corrupted data in batchd's own Redis keys, met by a running daemon.

A spoiled pending entry is set aside (quarantined and counted), a spoiled record ends
`rejected`, a key of the wrong type refuses what would touch it with a clear error and stores
nothing; the other requests of the lane, the batch and the account go on unharmed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest

from batchd import Result
from batchd.errors import StoreError
from batchd.store import Lane, new_token, split_request_id
from batchd.store import counters as counter_store
from batchd.store import lanes as lane_store
from batchd.store import replies as reply_store
from batchd.store.keys import key_digest
from batchd.store.records import Field
from tests.catalogue.conftest import PARAMS, Stack
from tests.support.daemon import wait_for
from tests.support.submit_state import key_state, submit_state

ACCOUNT = "default"
#: The lane of a plain request of priority 0, where `Stack.submit` puts its requests.
PLAIN = Lane.of(0).id
#: A lane no other test uses, for keys spoiled with another type.
SPOILED_PRIORITY = 3
SPOILED = Lane.of(SPOILED_PRIORITY).id
#: A priority no test here submits to but the one that spoils its lane's counters first.
UNUSED_PRIORITY = 5


def record_key(stack: Stack, rid: str) -> str:
    return stack.keys.request(*split_request_id(rid))


def counter(stack: Stack, name: str) -> int:
    return stack.store.read(counter_store.read(stack.keys, [ACCOUNT]))[ACCOUNT].get(name, 0)


@contextmanager
def paused(stack: Stack) -> Iterator[None]:
    """The account paused, as when its API key is refused: nothing is cut meanwhile."""
    stack.store.read(lane_store.pause(stack.keys, ACCOUNT, "held by the test", 60_000))
    try:
        yield
    finally:
        stack.store.read(lane_store.resume(stack.keys, ACCOUNT))


def pending_lane(stack: Stack, n: int, **extra: object) -> list[str]:
    """n requests in the plain lane (call inside `paused`, so none is cut yet)."""
    outcomes = stack.client.submit_many([{"params": PARAMS, **extra} for _ in range(n)])
    ids = []
    for outcome in outcomes:
        assert not isinstance(outcome, Exception), outcome
        ids.append(outcome.id)
    return ids


def finish_all(stack: Stack, ids: list[str]) -> dict[str, Result]:
    stack.client.flush()
    return dict(zip(ids, stack.results(ids), strict=True))


# -- pending entries -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [b"garbage-without-spaces", b"01ABCDEF not-a-size 123", b"", b"\xff\xfe \x00 1", b"a b c d"],
    ids=["no spaces", "size not a number", "empty", "binary", "four fields"],
)
def test_foreign_pending_entry_is_quarantined(stack: Stack, entry: bytes) -> None:
    """An entry batchd never wrote is set aside and counted; the lane's requests all succeed."""
    before = counter(stack, "quarantined")
    first = stack.submit(1)
    stack.client.redis.rpush(stack.keys.pending(ACCOUNT, PLAIN), entry)
    rest = stack.submit(2)
    results = stack.results(first + rest)
    assert {r.status for r in results} == {"succeeded"}
    assert entry in stack.store.read(lane_store.quarantined(stack.keys, ACCOUNT))
    assert counter(stack, "quarantined") == before + 1
    stack.assert_unharmed()


def test_entry_whose_record_vanished_is_dropped(stack: Stack) -> None:
    """An entry whose record no longer exists is dropped as stale; its neighbours succeed."""
    before = counter(stack, "quarantined")
    ghost = f"{new_token()} 120 {stack.store.time_ms()}"
    stack.client.redis.rpush(stack.keys.pending(ACCOUNT, PLAIN), ghost)
    results = stack.results(stack.submit(2))
    assert {r.status for r in results} == {"succeeded"}
    assert stack.client.redis.lpos(stack.keys.pending(ACCOUNT, PLAIN), ghost) is None
    assert counter(stack, "quarantined") == before
    stack.assert_unharmed()


# -- request records -----------------------------------------------------------------------------


def spoil_and_run(
    stack: Stack, spoil: dict[str, bytes | None], queue: str
) -> tuple[Result, list[Result]]:
    """Three requests in one lane replying to `queue`, the middle one's record spoiled before
    the cut."""
    with paused(stack):
        ids = pending_lane(stack, 3, reply_to=queue)
        rk = record_key(stack, ids[1])
        for name, value in spoil.items():
            if value is None:
                stack.client.redis.hdel(rk, name)
            else:
                stack.client.redis.hset(rk, name, value)
    results = finish_all(stack, ids)
    victim = results.pop(ids[1])
    return victim, list(results.values())


SPOILED_FIELDS: dict[str, tuple[dict[str, bytes | None], str]] = {
    "attempts not a number": ({Field.ATTEMPTS: b"many"}, Field.ATTEMPTS),
    "submitted time not a number": ({Field.SUBMITTED: b"yesterday"}, Field.SUBMITTED),
    "metadata not JSON": ({Field.METADATA: b"{not json"}, Field.METADATA),
    "key not JSON": ({Field.KEY: b"not json either"}, Field.KEY),
    "key not a string": ({Field.KEY: b'{"a": 1}'}, Field.KEY),
    "size not its entry's": ({Field.SIZE: b"12"}, Field.SIZE),
    "lane missing": ({Field.LANE: None}, Field.LANE),
    "lane not its entry's": ({Field.LANE: Lane.of(7).id.encode()}, Field.LANE),
}


@pytest.mark.parametrize("case", list(SPOILED_FIELDS), ids=list(SPOILED_FIELDS))
def test_record_with_a_spoiled_field_ends_rejected(stack: Stack, case: str) -> None:
    """The request ends `rejected` naming the field, replying as usual; its lane-mates succeed."""
    spoil, field = SPOILED_FIELDS[case]
    queue = f"spoiled.{new_token()}"
    victim, others = spoil_and_run(stack, spoil, queue)
    assert victim.status == "rejected"
    assert victim.error is not None and f"field {field}" in victim.error["message"]
    assert orjson.loads(victim.raw)["id"] == victim.id
    assert {r.status for r in others} == {"succeeded"}
    got = {r.id for r in stack.client.replies(queue, timeout=1)}
    assert got == {victim.id} | {r.id for r in others}
    stack.assert_unharmed()


@pytest.mark.parametrize("spoil", ["deleted", "a hash", "another size"])
def test_record_whose_params_are_spoiled_ends_rejected(stack: Stack, spoil: str) -> None:
    """Params gone, of another type or of another size: that request is rejected, others sent."""
    r = stack.client.redis
    with paused(stack):
        ids = pending_lane(stack, 3)
        pk = stack.keys.params(*split_request_id(ids[1]))
        if spoil == "deleted":
            r.delete(pk)
        elif spoil == "a hash":
            r.delete(pk)
            r.hset(pk, "foreign", "1")
        else:
            r.set(pk, b"{}")
    results = finish_all(stack, ids)
    victim = results.pop(ids[1])
    assert victim.status == "rejected"
    assert {x.status for x in results.values()} == {"succeeded"}
    assert {x.attempts for x in results.values()} == {1}
    stack.assert_unharmed()


@pytest.mark.parametrize("kind", ["string", "list"])
def test_record_replaced_by_another_type_is_quarantined(stack: Stack, kind: str) -> None:
    """A record of another type: its entry is quarantined, the foreign value left untouched."""
    r = stack.client.redis
    before = counter(stack, "quarantined")
    with paused(stack):
        ids = pending_lane(stack, 3)
        rk = record_key(stack, ids[1])
        r.delete(rk)
        if kind == "string":
            r.set(rk, "someone else's value")
        else:
            r.rpush(rk, "someone", "else's")
    stack.client.flush()
    others = stack.results([ids[0], ids[2]])
    assert {x.status for x in others} == {"succeeded"}
    wait_for(lambda: counter(stack, "quarantined") == before + 1, 10, "the entry's quarantine")
    assert key_state(r, rk)[0] == kind, "batchd overwrote data it did not write"
    r.delete(rk)
    stack.assert_unharmed()


def test_producer_calls_on_a_record_of_another_type_raise_store_error(stack: Stack) -> None:
    """`get`, `wait` and `cancel` of a request whose record is a string raise StoreError at once."""
    r = stack.client.redis
    with paused(stack):
        [rid] = pending_lane(stack, 1)
        rk = record_key(stack, rid)
        record = r.hgetall(rk)
        r.delete(rk)
        r.set(rk, "someone else's value")
        try:
            with pytest.raises(StoreError, match="WRONGTYPE"):
                stack.client.get(rid)
            with pytest.raises(StoreError, match="WRONGTYPE"):
                stack.client.wait(rid, timeout=5)
            with pytest.raises(StoreError, match="WRONGTYPE"):
                stack.client.cancel(rid)
            assert key_state(r, rk) == ("string", b"someone else's value")
        finally:
            r.delete(rk)
            r.hset(rk, mapping=record)
            stack.client.cancel(rid)
    stack.assert_unharmed()


def test_record_spoiled_while_in_a_batch_ends_rejected(stack: Stack) -> None:
    """A record whose lane field is lost while batched cannot go round again: rejected."""
    stack.emulator.set_profile({"processing_time": [1.5, 1.5], "result_api_error_rate": 1.0})
    ids = stack.submit(2)
    # Created (its id recorded) under the failing profile, before the profile is reset.
    wait_for(lambda: all(stack.client.get(i).batch_id for i in ids), 20, "the batch")
    stack.client.redis.hdel(record_key(stack, ids[0]), Field.LANE)
    stack.emulator.set_profile({})
    victim, other = stack.results(ids)
    assert victim.status == "rejected" and victim.error is not None
    assert f"field {Field.LANE}" in victim.error["message"]
    assert other.status == "succeeded" and other.attempts == 2
    stack.assert_unharmed()


# -- keys of the wrong type ----------------------------------------------------------------------


def test_submit_to_a_lane_whose_list_is_another_type_stores_nothing(stack: Stack) -> None:
    """A string as a lane's pending list: a submit there raises StoreError and stores nothing."""
    q = stack.keys.pending(ACCOUNT, SPOILED)
    stack.client.redis.set(q, "not a list")
    try:
        before = submit_state(stack.client.redis, stack.keys, ACCOUNT)
        with pytest.raises(StoreError, match=r"not a list\b.*nothing was stored") as caught:
            stack.client.submit(PARAMS, priority=SPOILED_PRIORITY, key="wrong-type-lane")
        assert q in str(caught.value)
        assert submit_state(stack.client.redis, stack.keys, ACCOUNT) == before
    finally:
        stack.client.redis.delete(q)
    stack.assert_unharmed()


def test_lane_whose_list_is_another_type_is_skipped_and_the_others_are_cut(stack: Stack) -> None:
    """A due lane whose list is a string is reported and skipped; the other lanes are cut."""
    r = stack.client.redis
    q, qs = stack.keys.pending(ACCOUNT, SPOILED), stack.keys.lane_stats(ACCOUNT, SPOILED)
    r.set(q, "not a list")
    r.hset(qs, mapping={"count": 1, "bytes": 100})
    r.sadd(stack.keys.lanes(ACCOUNT), SPOILED)
    try:
        seen = stack.daemon.log_text().count("lane cannot be cut")
        results = stack.results(stack.submit(2))
        assert {x.status for x in results} == {"succeeded"}
        wait_for(lambda: stack.daemon.log_text().count("lane cannot be cut") > seen, 10,
                 "the aggregator to report the spoiled lane")  # fmt: skip
        assert key_state(r, q) == ("string", b"not a list")
    finally:
        r.delete(q, qs)
    stack.assert_unharmed()


def test_submit_to_a_lane_whose_counters_are_another_type_stores_nothing(stack: Stack) -> None:
    """A string where a lane's counters belong: a submit there fails plainly, storing nothing."""
    # A lane no request has used: the aggregator does not know it, so it cannot rebuild the
    # counters before the submit finds them spoiled (and the failed submit leaves it unknown).
    priority = UNUSED_PRIORITY
    lane = Lane.of(priority).id
    assert lane.encode() not in stack.client.redis.smembers(stack.keys.lanes(ACCOUNT))
    qs = stack.keys.lane_stats(ACCOUNT, lane)
    stack.client.redis.set(qs, "not a hash")
    try:
        before = submit_state(stack.client.redis, stack.keys, ACCOUNT)
        with pytest.raises(StoreError, match=r"not a hash\b.*nothing was stored"):
            stack.client.submit(PARAMS, priority=priority)
        assert submit_state(stack.client.redis, stack.keys, ACCOUNT) == before
        assert key_state(stack.client.redis, qs) == ("string", b"not a hash")
    finally:
        stack.client.redis.delete(qs)
    stack.assert_unharmed()


def test_lane_counters_that_are_not_numbers_are_reset(stack: Stack) -> None:
    """Lane counters spoiled with words: reset from the list, and the lane is cut as before."""
    with paused(stack):
        ids = pending_lane(stack, 2)
        stack.client.redis.hset(stack.keys.lane_stats(ACCOUNT, PLAIN), "count", "lots")
    results = finish_all(stack, ids)
    assert {r.status for r in results.values()} == {"succeeded"}
    assert stack.client.redis.hget(stack.keys.lane_stats(ACCOUNT, PLAIN), "count") == b"0"
    assert "lane counters were not numbers; reset" in stack.daemon.log_text()
    stack.assert_unharmed()


def test_lane_counters_of_another_type_are_rebuilt(stack: Stack) -> None:
    """Lane counters replaced by a string: rebuilt from the list, and the lane is cut."""
    qs = stack.keys.lane_stats(ACCOUNT, PLAIN)
    with paused(stack):
        ids = pending_lane(stack, 2)
        stack.client.redis.delete(qs)
        stack.client.redis.set(qs, "not a hash")
    results = finish_all(stack, ids)
    assert {r.status for r in results.values()} == {"succeeded"}
    assert key_state(stack.client.redis, qs)[0] == "hash"
    stack.assert_unharmed()


def test_submit_with_a_lane_set_of_another_type_stores_nothing(stack: Stack) -> None:
    """A string as the lane set: every submit raises StoreError naming it and stores nothing."""
    lanes = stack.keys.lanes(ACCOUNT)
    saved = stack.client.redis.smembers(lanes)
    stack.client.redis.delete(lanes)
    stack.client.redis.set(lanes, "not a set")
    try:
        before = submit_state(stack.client.redis, stack.keys, ACCOUNT)
        with pytest.raises(StoreError, match=r"not a set\b.*nothing was stored") as caught:
            stack.client.submit(PARAMS)
        assert lanes in str(caught.value)
        assert submit_state(stack.client.redis, stack.keys, ACCOUNT) == before
    finally:
        stack.client.redis.delete(lanes)
        if saved:
            stack.client.redis.sadd(lanes, *saved)
    stack.assert_unharmed()


def test_lane_set_of_another_type_stops_the_cuts_not_the_daemon(stack: Stack) -> None:
    """A string as the lane set halts cuts, not the daemon; once removed, requests are cut."""
    r = stack.client.redis
    lanes = stack.keys.lanes(ACCOUNT)
    with paused(stack):
        ids = pending_lane(stack, 2)
        saved = r.smembers(lanes)
        r.delete(lanes)
        r.set(lanes, "not a set")
    seen = stack.daemon.log_text().count("WRONGTYPE")
    try:
        stack.client.flush()
        wait_for(lambda: stack.daemon.log_text().count("WRONGTYPE") > seen, 10,
                 "the aggregator to report the lane set")  # fmt: skip
        assert stack.daemon.alive()
        assert {stack.client.get(i).state for i in ids} == {"pending"}
    finally:
        r.delete(lanes)
        r.sadd(lanes, *saved)
    results = finish_all(stack, ids)
    assert {x.status for x in results.values()} == {"succeeded"}
    stack.assert_unharmed()


def test_idempotency_key_of_another_type_stores_nothing(stack: Stack) -> None:
    """A hash as an idempotency key: that submit raises StoreError naming it, storing nothing."""
    kk = stack.keys.idempotency(ACCOUNT, key_digest("spoiled-key"))
    stack.client.redis.hset(kk, "foreign", "1")
    try:
        before = submit_state(stack.client.redis, stack.keys, ACCOUNT)
        with pytest.raises(StoreError, match=r"not a string\b.*nothing was stored") as caught:
            stack.client.submit(PARAMS, key="spoiled-key")
        assert kk in str(caught.value)
        assert submit_state(stack.client.redis, stack.keys, ACCOUNT) == before
        assert key_state(stack.client.redis, kk) == ("hash", {b"foreign": b"1"})
    finally:
        stack.client.redis.delete(kk)
    stack.assert_unharmed()


def test_reply_queue_of_another_type_parks_its_reply(stack: Stack) -> None:
    """A reply queue key of another type: its reply is parked, not lost; the others are sent."""
    r = stack.client.redis
    taken = f"taken.{new_token()}"
    fine = f"fine.{new_token()}"
    r.set(stack.keys.reply_queue(taken), "someone else's")
    blocked = stack.submit(1, reply_to=taken)
    others = stack.submit(2, reply_to=fine)
    results = stack.results(blocked + others)
    assert {x.status for x in results} == {"succeeded"}
    assert sorted(x.id for x in stack.client.replies(fine, timeout=1)) == sorted(others)
    _, token = split_request_id(blocked[0])
    parked = r.lrange(stack.keys.reply_parked(ACCOUNT), 0, -1)
    assert [e for e in parked if e.split(b" ")[1:] == [token.encode(), taken.encode()]]
    assert key_state(r, stack.keys.reply_queue(taken)) == ("string", b"someone else's")
    r.delete(stack.keys.reply_queue(taken))
    # Parked replies are retried only now and then: drain them now rather than wait.
    reply_store.drain(stack.store, ACCOUNT, parked=True)
    assert [x.id for x in stack.client.replies(taken, timeout=1)] == blocked
    stack.assert_unharmed()


# -- foreign members of batchd's sets and indexes -------------------------------------------------


@pytest.mark.parametrize(
    ("index", "member"),
    [("lanes", "not-a-lane"), ("flush", "garbage"), ("assemblies", "ghost-assembly")],
)
def test_foreign_members_of_the_indexes_are_ignored(stack: Stack, index: str, member: str) -> None:
    """Members batchd never wrote in its sets and indexes are skipped; requests go on."""
    keys = stack.keys
    r = stack.client.redis
    if index == "lanes":
        r.sadd(keys.lanes(ACCOUNT), member)
    elif index == "flush":
        r.sadd(keys.flush(ACCOUNT), member)
    else:
        r.zadd(keys.assemblies(ACCOUNT), {member: 0})
    results = stack.results(stack.submit(2))
    assert {x.status for x in results} == {"succeeded"}
    if index == "assemblies":
        wait_for(lambda: r.zscore(keys.assemblies(ACCOUNT), member) is None, 20,
                 "the sweeper to drop the ghost")  # fmt: skip
    r.srem(keys.lanes(ACCOUNT), member)
    stack.assert_unharmed()
