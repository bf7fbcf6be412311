"""Replies pushed onto their queue in the fan-out's own call, skipping the outbox: only on a
single server with no replicas to wait for, only onto a queue the account used before, and
never at the cost of a reply (a queue holding foreign data still parks its replies)."""

from __future__ import annotations

from typing import Any

import redis

from batchd import Client
from batchd.store import Durability, Keys, Store, replies
from tests.pipeline import ACCOUNT, Flow, params, succeeded, token_of


def outseq(store: Store) -> int:
    """How many replies the account's outbox has numbered so far."""
    return int(store.client.hget(store.keys.counters(ACCOUNT), "outseq") or 0)


def test_a_known_queue_gets_its_replies_in_the_fanout_call(
    client: Client, flow: Flow, store: Store, redis_kind: str
) -> None:
    """The first reply to a new queue goes through the outbox, which makes the queue known; on
    one server the next ones are pushed by the fan-out itself (the outbox numbers none of them),
    on a cluster they keep going through the outbox. Consumers get all of them either way."""
    first = client.submit(params("1"), reply_to="svc")
    flow.end(first.id)
    assert outseq(store) == 1
    assert replies.direct_queues(store, ACCOUNT) == ([] if redis_kind == "cluster" else ["svc"])
    # a queue unused for longer than QUEUE_SEEN_MS leaves the account's set either way
    store.client.zadd(store.keys.reply_queues(ACCOUNT), {"stale": 1})
    later = [client.submit(params(str(i)), reply_to="svc") for i in range(2, 7)]
    flow.end(*[t.id for t in later])
    assert outseq(store) == (6 if redis_kind == "cluster" else 1)
    assert store.read(replies.queue_names(store.keys, ACCOUNT)) == ["svc"]
    got = {r.id: r for r in client.replies("svc", timeout=2)}
    assert sorted(got) == sorted([first.id, *[t.id for t in later]])
    for t in later:
        assert got[t.id].status == "succeeded"
        assert got[t.id].raw == client.wait(t.id, timeout=1).raw  # the envelope stored


def test_a_known_queue_holding_foreign_data_parks_its_replies(
    client: Client, flow: Flow, store: Store, keys: Keys, redis_client: Any, redis_kind: str
) -> None:
    """A known queue whose key holds a string now: the fan-out does not push onto it (no
    error, nothing half-applied); its reply goes to the outbox, is parked when the queue refuses
    it, and reaches the queue once the key is a list again."""
    flow.end(client.submit(params("1"), reply_to="svc").id)
    assert len(list(client.replies("svc", timeout=1))) == 1
    redis_client.set(keys.reply_queue("svc"), b"not a list")
    ticket = client.submit(params("2"), reply_to="svc")
    asm = flow.cut()
    flow.record(asm)
    assert flow.fanout(asm, [(token_of(ticket.id), "ok", succeeded())]) == [1, 0, 0]
    assert client.get(ticket.id).state == "succeeded"
    assert redis_client.get(keys.reply_queue("svc")) == b"not a list"
    assert redis_client.llen(keys.reply_parked(ACCOUNT)) == 1
    redis_client.delete(keys.reply_queue("svc"))
    replies.drain(store, ACCOUNT, parked=True)
    assert [r.id for r in client.replies("svc", timeout=1)] == [ticket.id]


def test_replicas_to_wait_for_keep_replies_in_the_outbox(
    redis_client: redis.Redis, keys: Keys, client: Client, flow: Flow
) -> None:
    """Where writes are waited for on replicas, no reply leaves with the fan-out's write (a
    failover could take that write back after a consumer read the reply): the drain, which
    waits first, moves them all."""
    flow.end(client.submit(params("1"), reply_to="svc").id)
    waited = Store(redis_client, keys, durability=Durability(replicas=1))
    plain = Store(redis_client, keys)
    assert replies.direct_queues(waited, ACCOUNT) == []
    assert replies.direct_queues(plain, ACCOUNT) == ([] if plain.cluster else ["svc"])
