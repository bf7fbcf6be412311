"""Submit: one atomic round trip that stores a request in its lane, or a refusal storing nothing."""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType
from typing import Any

import pytest
import redis

from batchd import (
    Client,
    InvalidRequestError,
    RequestNotFoundError,
    RequestTooLargeError,
    Settings,
    SubmitError,
    SubmitItem,
    Ticket,
)
from batchd.errors import IdempotencyConflictError
from batchd.store import Keys, Store
from batchd.store import counters as counter_store
from batchd.store import lanes as lane_store
from batchd.store import requests as req_store
from batchd.store.keys import key_digest
from batchd.store.records import Field, RequestRecord, RequestStatus
from batchd.store.scripts import text
from tests.pipeline import (
    ACCOUNT,
    Flow,
    compact,
    framed,
    lane,
    lane_stats,
    params,
    pending,
    token_of,
)
from tests.support.introspect import command_calls, dbsize

MakeClient = Callable[..., Client]
#: A beta the API knows (`api.known_betas`), for requests whose batch needs one.
BETA = "pdfs-2024-09-25"


def record(store: Store, rid: str) -> RequestRecord:
    """A request's record, as the store reads it."""
    found = store.read(req_store.read(store.keys, ACCOUNT, token_of(rid)))
    assert found is not None, f"no record for {rid}"
    return found


def publish(store: Store, settings: Settings) -> None:
    """Publish the daemon's accounts, as `batchd run` does at start."""
    store.read(counter_store.publish_accounts(store.keys, list(settings.accounts)))


#: What the SUBMIT script runs inside Redis; anything else would be another round trip.
SUBMIT_SCRIPT_COMMANDS = {
    "get",
    "time",
    "hset",
    "hmget",
    "rpush",
    "hincrby",
    "sadd",
    "set",
    "exists",
}


def deep(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


# -- storing --------------------------------------------------------------------------------


def test_submit_returns_a_ticket_with_the_request_id(client: Client) -> None:
    """A submit returns a Ticket naming the account and a 26-character token."""
    ticket = client.submit(params(), key="order-1")
    assert isinstance(ticket, Ticket)
    assert ticket.id.startswith("default.")
    assert len(token_of(ticket.id)) == 26
    assert ticket.key == "order-1"
    assert ticket.duplicate is False


def test_submit_stores_the_record_and_a_pending_entry(
    client: Client, store: Store, redis_client: redis.Redis, keys: Keys
) -> None:
    """The record holds options and state, the request's params key the encoded params; the
    lane holds its entry."""
    p = params("héllo ☃")
    ticket = client.submit(
        p, key="k1", reply_to="svc.replies", priority=3, metadata={"user": "ü", "n": 1}
    )
    token = token_of(ticket.id)
    rec = record(store, ticket.id)
    assert redis_client.get(keys.params(ACCOUNT, token)) == compact(p)
    assert rec.size == framed(p)
    assert rec.status is RequestStatus.PENDING
    assert rec.lane == "3"
    assert rec.attempts == 0
    assert rec.key == "k1"
    assert rec.reply_to == "svc.replies"
    assert redis_client.hget(keys.request(ACCOUNT, token), Field.METADATA) == compact(
        {"user": "ü", "n": 1}
    )
    [entry] = redis_client.lrange(keys.pending(ACCOUNT, "3"), 0, -1)
    assert text(entry) == f"{token} {framed(p)} {rec.enqueued_ms}"
    assert redis_client.sismember(keys.lanes(ACCOUNT), "3")


def test_new_request_is_pending(client: Client) -> None:
    """`get` of a request just submitted says pending, no attempts, no batch, no result."""
    ticket = client.submit(params())
    state = client.get(ticket.id)
    assert (state.state, state.attempts, state.batch_id, state.result) == ("pending", 0, None, None)
    assert state.terminal is False


def test_lane_stats_count_requests_and_their_framed_bytes(client: Client, store: Store) -> None:
    """Lane bytes are the compact UTF-8 JSON of each request's params plus 52 bytes of framing."""
    bodies = [params("a"), params("ü" * 50), params("😀", temperature=0.5, system="be brief")]
    for p in bodies:
        client.submit(p)
    expected = sum(len(compact(p)) + 52 for p in bodies)
    assert lane_stats(store) == (3, expected)


def test_lanes_are_kept_apart_by_priority(client: Client, store: Store) -> None:
    """Each priority has its own pending list and stats."""
    a = client.submit(params(), priority=0)
    b = client.submit(params(), priority=9)
    assert pending(store, lane(0)) == [token_of(a.id)]
    assert pending(store, lane(9)) == [token_of(b.id)]
    assert lane_stats(store, lane(9)) == (1, framed(params()))


def test_betas_put_the_request_in_its_own_lane(client: Client, store: Store, keys: Keys) -> None:
    """A request with betas waits in a lane of its own (its batch is created with them),
    apart from plain requests of the same priority; the lane's beta set is remembered."""
    plain = client.submit(params())
    beta = client.submit(params(), betas=[BETA])
    beta_lane = lane(0, betas=[BETA])
    assert beta_lane != lane(0)
    assert pending(store, lane(0)) == [token_of(plain.id)]
    assert pending(store, beta_lane) == [token_of(beta.id)]
    assert record(store, beta.id).lane == beta_lane
    assert store.read(lane_store.lane_ids(keys, ACCOUNT)) == sorted([lane(0), beta_lane])
    beta_id = beta_lane.rsplit(".b", 1)[1]
    assert store.read(lane_store.betas_of(keys, ACCOUNT, beta_id)) == (BETA,)


def test_the_same_betas_in_any_order_share_a_lane(client: Client, store: Store) -> None:
    """Betas are a set: order and repeats do not make another lane."""
    other = "context-1m-2025-08-07"
    a = client.submit(params("a"), betas=[BETA, other])
    b = client.submit(params("b"), betas=[other, BETA, other])
    assert pending(store, lane(0, betas=[BETA, other])) == [token_of(a.id), token_of(b.id)]


def test_submit_is_one_round_trip(client: Client, redis_client: redis.Redis) -> None:
    """Once the script is loaded, a submit is one EVALSHA and nothing else from the client."""
    client.submit(params())
    before = command_calls(redis_client)
    client.submit(params(), key="one-trip", reply_to="q", metadata={"a": 1})
    after = command_calls(redis_client)
    changed = {k: n - before.get(k, 0) for k, n in after.items() if n != before.get(k, 0)}
    assert changed.pop("evalsha") == 1
    changed.pop("info", None)
    # A replica acknowledges its offset to the master every second: server traffic, not ours.
    changed.pop("replconf", None)
    assert set(changed) <= SUBMIT_SCRIPT_COMMANDS


def test_pending_entries_keep_submit_order(client: Client, store: Store) -> None:
    """The lane is first in, first out."""
    ids = [client.submit(params(str(i))).id for i in range(5)]
    assert pending(store) == [token_of(i) for i in ids]


# -- idempotency ----------------------------------------------------------------------------


def test_same_key_and_request_return_the_first_ticket_as_duplicate(client: Client) -> None:
    """The same request again under its key gets the first request's id with duplicate=True."""
    first = client.submit(params("one"), key="order-42", metadata={"n": 1})
    again = client.submit(params("one"), key="order-42", metadata={"n": 1})
    assert again == Ticket(id=first.id, key="order-42", duplicate=True)


def test_same_key_enqueues_nothing(client: Client, store: Store, redis_client: redis.Redis) -> None:
    """A repeated key adds no record, no entry and no bytes."""
    client.submit(params("one"), key="order-42")
    size = dbsize(redis_client)
    stats = lane_stats(store)
    client.submit(params("one"), key="order-42")
    assert dbsize(redis_client) == size
    assert lane_stats(store) == stats
    assert len(pending(store)) == 1


def test_same_key_with_another_request_is_a_conflict(client: Client) -> None:
    """A key used before for another request raises IdempotencyConflictError, a SubmitError
    naming the key, the first request and what differs."""
    first = client.submit(params("one"), key="order-42")
    with pytest.raises(IdempotencyConflictError) as info:
        client.submit(params("two"), key="order-42")
    err = info.value
    assert isinstance(err, SubmitError)
    assert (err.field, err.request_id, err.differs) == ("key", first.id, ["params"])
    assert first.id in str(err) and "params" in str(err)


@pytest.mark.parametrize(
    ("change", "differs"),
    [
        ({"reply_to": "other-queue"}, ["reply_to"]),
        ({"callback_url": "https://hooks.example.com/other"}, ["callback_url"]),
        ({"metadata": {"n": 2}}, ["metadata"]),
        ({"priority": 4}, ["priority"]),
        ({"tag": "other-tag"}, ["tag"]),
        ({"betas": [BETA]}, ["betas"]),
        ({"params": params("two"), "metadata": {"n": 2}}, ["params", "metadata"]),
    ],
    ids=["reply-to", "callback", "metadata", "priority", "tag", "betas", "params-and-metadata"],
)
def test_conflict_names_each_field_that_differs(
    client: Client, change: dict[str, Any], differs: list[str]
) -> None:
    """`differs` names exactly the fields of the second request that are not the first's."""
    first: dict[str, Any] = {"params": params(), "metadata": {"n": 1}}
    client.submit(**first, key="k")
    with pytest.raises(IdempotencyConflictError) as info:
        client.submit(**{**first, **change}, key="k")
    assert info.value.differs == differs
    for name in differs:
        assert name in str(info.value)


def test_conflict_stores_nothing(client: Client, store: Store, redis_client: redis.Redis) -> None:
    """A conflicting submit leaves Redis as it was: the first request keeps its key."""
    first = client.submit(params("one"), key="order-42")
    size = dbsize(redis_client)
    stats = lane_stats(store)
    with pytest.raises(IdempotencyConflictError):
        client.submit(params("two, longer"), key="order-42")
    assert dbsize(redis_client) == size
    assert lane_stats(store) == stats
    assert pending(store) == [token_of(first.id)]
    assert client.submit(params("one"), key="order-42").id == first.id


def test_keys_are_per_account(
    make_client: MakeClient, make_settings: Callable[..., Settings]
) -> None:
    """The same key under another account is another request."""
    s = make_settings(accounts={"default": {}, "other": {}})
    c = make_client(s)
    a = c.submit(params(), key="k")
    b = c.submit(params(), key="k", account="other")
    assert not b.duplicate
    assert a.id != b.id
    assert b.id.startswith("other.")


@pytest.mark.parametrize(
    "key",
    [
        "naïve ключ 鍵 😀",
        "with spaces and\ttabs\nand newlines",
        'quotes " and \\ backslashes / slashes',
        "nul \x00 and del \x7f",
        "x" * 256,
        "é" * 256,
        "{braces}",
    ],
    ids=["unicode", "whitespace", "json-escapes", "control", "256-ascii", "256-unicode", "braces"],
)
def test_arbitrary_keys_deduplicate(client: Client, key: str) -> None:
    """Any string of up to 256 characters works as an idempotency key."""
    first = client.submit(params(), key=key)
    again = client.submit(params(), key=key)
    assert again.duplicate and again.id == first.id
    assert not client.submit(params(), key=key + "!" if len(key) < 256 else key[:-1]).duplicate


@pytest.mark.parametrize(
    "key",
    ["naïve ключ 鍵 😀", 'nul \x00 \u2028 \\ "', "é" * 256],
    ids=["unicode", "escapes", "256-unicode"],
)
def test_key_round_trips_and_is_remembered_from_first_use(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys, key: str
) -> None:
    """The envelope carries the key unchanged; the key is remembered `submit.idempotency_ttl`
    from its first use, whenever the request ends."""
    ticket = client.submit(params(), key=key)
    kk = keys.idempotency(ACCOUNT, key_digest(key))
    ttl_ms = int(client.settings.submit.idempotency_ttl * 1000)
    assert ttl_ms - 60_000 < redis_client.pttl(kk) <= ttl_ms
    flow.end(ticket.id)
    assert client.wait(ticket.id, timeout=5).key == key
    assert ttl_ms - 60_000 < redis_client.pttl(kk) <= ttl_ms


def test_find_returns_the_request_submitted_under_a_key(client: Client, flow: Flow) -> None:
    """`find(key)` names the request first submitted under that key, and its state."""
    ticket = client.submit(params(), key="order-7")
    client.submit(params(), key="order-8")
    assert (client.find("order-7").id, client.find("order-7").state) == (ticket.id, "pending")
    flow.end(ticket.id)
    found = client.find("order-7")
    assert found.state == "succeeded"
    assert found.result is not None and found.result.key == "order-7"


def test_find_of_an_unknown_key_raises_not_found(client: Client) -> None:
    """A key nobody used raises RequestNotFoundError naming it."""
    client.submit(params(), key="used")
    with pytest.raises(RequestNotFoundError, match="never-used"):
        client.find("never-used")


def test_key_over_the_limit_is_refused(client: Client, redis_client: redis.Redis) -> None:
    """A key of 257 characters is refused, naming the field."""
    with pytest.raises(InvalidRequestError) as info:
        client.submit(params(), key="k" * 257)
    assert info.value.field == "key"
    assert dbsize(redis_client) == 0


@pytest.mark.parametrize(
    "name", ["svc/replies:v1@host-a_b.c", "r" * 200, "1"], ids=["punctuation", "200", "one"]
)
def test_reply_to_names_work(client: Client, flow: Flow, name: str) -> None:
    """Reply queue names of letters, digits and _.:/@- up to 200 characters get their results."""
    ticket = client.submit(params(), reply_to=name)
    flow.end(ticket.id)
    got = next(client.replies(name, timeout=5))
    assert got.id == ticket.id


# -- refusals -------------------------------------------------------------------------------

BASE = params()


def without(field: str) -> dict[str, Any]:
    return {k: v for k, v in BASE.items() if k != field}


REFUSALS: list[Any] = [
    pytest.param({"params": []}, "params", id="params-list"),
    pytest.param({"params": "hello"}, "params", id="params-str"),
    pytest.param({"params": None}, "params", id="params-none"),
    pytest.param({"params": without("model")}, "params.model", id="no-model"),
    pytest.param({"params": {**BASE, "model": ""}}, "params.model", id="empty-model"),
    pytest.param({"params": {**BASE, "model": 5}}, "params.model", id="model-int"),
    pytest.param({"params": without("max_tokens")}, "params.max_tokens", id="no-max-tokens"),
    pytest.param({"params": {**BASE, "max_tokens": 0}}, "params.max_tokens", id="max-tokens-0"),
    pytest.param({"params": {**BASE, "max_tokens": -1}}, "params.max_tokens", id="max-tokens-neg"),
    pytest.param(
        {"params": {**BASE, "max_tokens": True}}, "params.max_tokens", id="max-tokens-bool"
    ),
    pytest.param(
        {"params": {**BASE, "max_tokens": 5.0}}, "params.max_tokens", id="max-tokens-float"
    ),
    pytest.param({"params": {**BASE, "max_tokens": "5"}}, "params.max_tokens", id="max-tokens-str"),
    pytest.param({"params": without("messages")}, "params.messages", id="no-messages"),
    pytest.param({"params": {**BASE, "messages": []}}, "params.messages", id="empty-messages"),
    pytest.param({"params": {**BASE, "messages": "hi"}}, "params.messages", id="messages-str"),
    pytest.param({"params": {**BASE, "stream": True}}, "params.stream", id="stream"),
    pytest.param({"params": {**BASE, "temperature": float("nan")}}, "params", id="nan"),
    pytest.param({"params": {**BASE, "temperature": float("inf")}}, "params", id="infinity"),
    pytest.param({"params": params("lone \ud800 surrogate")}, "params", id="lone-surrogate"),
    pytest.param({"params": {**BASE, "system": object()}}, "params", id="non-json-object"),
    pytest.param({"params": {**BASE, "system": {1, 2}}}, "params", id="set"),
    pytest.param({"params": {**BASE, 7: "x"}}, "params", id="non-str-key"),
    pytest.param({"params": params(deep(10_000))}, "params", id="deep-nesting"),  # type: ignore[arg-type]
    pytest.param({"metadata": ["a"]}, "metadata", id="metadata-list"),
    pytest.param({"metadata": "a"}, "metadata", id="metadata-str"),
    pytest.param({"metadata": {"a": "x" * 4096}}, "metadata", id="metadata-too-large"),
    pytest.param({"metadata": {"a": float("nan")}}, "metadata", id="metadata-nan"),
    pytest.param({"reply_to": ""}, "reply_to", id="reply-to-empty"),
    pytest.param({"reply_to": "has space"}, "reply_to", id="reply-to-space"),
    pytest.param({"reply_to": "ünïcode"}, "reply_to", id="reply-to-unicode"),
    pytest.param({"reply_to": "{tag}"}, "reply_to", id="reply-to-braces"),
    pytest.param({"reply_to": "r" * 201}, "reply_to", id="reply-to-201"),
    pytest.param({"reply_to": 5}, "reply_to", id="reply-to-int"),
    pytest.param(
        {"reply_to": "replies\n"},
        "reply_to",
        id="reply-to-trailing-newline",
    ),
    pytest.param({"priority": -1}, "priority", id="priority-negative"),
    pytest.param({"priority": 10}, "priority", id="priority-too-high"),
    pytest.param({"priority": True}, "priority", id="priority-bool"),
    pytest.param({"priority": "1"}, "priority", id="priority-str"),
    pytest.param({"priority": 1.0}, "priority", id="priority-float"),
    pytest.param({"account": "bad name"}, "account", id="account-space"),
    pytest.param({"account": ""}, "account", id="account-empty"),
    pytest.param({"account": "a" * 33}, "account", id="account-33"),
    pytest.param(
        {"account": "default\n"},
        "account",
        id="account-trailing-newline",
    ),
    pytest.param({"key": ""}, "key", id="key-empty"),
    pytest.param({"key": 5}, "key", id="key-int"),
    pytest.param({"key": "bad \ud800"}, "key", id="key-lone-surrogate"),
    pytest.param({"callback_url": "ftp://example.com/hook"}, "callback_url", id="cb-ftp"),
    pytest.param({"callback_url": "http://"}, "callback_url", id="cb-no-host"),
    pytest.param({"callback_url": "https:///path"}, "callback_url", id="cb-empty-host"),
    pytest.param({"callback_url": "example.com/hook"}, "callback_url", id="cb-no-scheme"),
    pytest.param({"callback_url": "https://u:p@example.com/"}, "callback_url", id="cb-userinfo"),
    pytest.param({"callback_url": "https://exa mple.com/"}, "callback_url", id="cb-space"),
    pytest.param({"callback_url": "https://example.com:0/"}, "callback_url", id="cb-port-0"),
    pytest.param(
        {"callback_url": "https://example.com/" + "a" * 2048}, "callback_url", id="cb-too-long"
    ),
    pytest.param({"callback_url": 5}, "callback_url", id="cb-int"),
    pytest.param({"tag": "has space"}, "tag", id="tag-space"),
    pytest.param({"tag": "t" * 65}, "tag", id="tag-65"),
    pytest.param({"betas": ["no-such-beta-2099-01-01"]}, "betas", id="beta-unknown"),
    pytest.param({"betas": [5]}, "betas", id="beta-int"),
]


@pytest.mark.parametrize(("kwargs", "field"), REFUSALS)
def test_invalid_submit_is_refused_storing_nothing(
    client: Client, redis_client: redis.Redis, kwargs: dict[str, Any], field: str
) -> None:
    """An invalid field raises InvalidRequestError naming it, and Redis is left as it was."""
    kwargs = {"params": BASE, **kwargs}
    p = kwargs.pop("params")
    with pytest.raises(InvalidRequestError) as info:
        client.submit(p, **kwargs)
    assert info.value.field == field
    assert dbsize(redis_client) == 0


def test_request_larger_than_a_batch_is_refused(
    make_client: MakeClient, make_settings: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Params that cannot fit in a batch of max_bytes raise RequestTooLargeError; nothing stored."""
    c = make_client(make_settings(batch={"max_bytes": 1024}))
    with pytest.raises(RequestTooLargeError) as info:
        c.submit(params("x" * 1024))
    assert info.value.field == "params"
    assert isinstance(info.value, SubmitError)
    assert dbsize(redis_client) == 0


def test_request_exactly_filling_a_batch_is_accepted(
    make_client: MakeClient, make_settings: Callable[..., Settings], store: Store
) -> None:
    """A request whose one-request body is exactly max_bytes fits; one byte more does not."""
    c = make_client(make_settings(batch={"max_bytes": 1024}))
    room = 1024 - len('{"requests":[]}') - framed(params(""))
    c.submit(params("y" * room))
    assert lane_stats(store) == (1, 1024 - len('{"requests":[]}'))
    with pytest.raises(RequestTooLargeError):
        c.submit(params("y" * (room + 1)))


def test_unknown_account_is_refused_once_accounts_are_published(
    make_client: MakeClient, settings: Settings, store: Store, redis_client: redis.Redis
) -> None:
    """When the daemon has published its accounts, a producer refuses any other account."""
    publish(store, settings)
    size = dbsize(redis_client)
    c = make_client()
    with pytest.raises(InvalidRequestError) as info:
        c.submit(params(), account="elsewhere")
    assert info.value.field == "account"
    assert "elsewhere" in str(info.value)
    assert dbsize(redis_client) == size


def test_account_removed_from_the_daemon_is_refused(
    make_client: MakeClient, make_settings: Callable[..., Settings], store: Store
) -> None:
    """After the daemon republishes without an account, producers refuse that account."""
    publish(store, make_settings(accounts={"default": {}, "old": {}}))
    publish(store, make_settings())
    with pytest.raises(InvalidRequestError):
        make_client().submit(params(), account="old")


def test_published_account_is_accepted(
    make_client: MakeClient, settings: Settings, store: Store
) -> None:
    """A configured account is accepted once the accounts are published."""
    publish(store, settings)
    assert make_client().submit(params(), account="default").id.startswith("default.")


def test_params_and_metadata_may_be_any_mapping(
    client: Client, redis_client: redis.Redis, keys: Keys
) -> None:
    """A read-only mapping is accepted for params and metadata and stored as a JSON object."""
    ticket = client.submit(MappingProxyType(params()), metadata=MappingProxyType({"a": 1}))
    token = token_of(ticket.id)
    assert redis_client.get(keys.params(ACCOUNT, token)) == compact(params())
    assert redis_client.hget(keys.request(ACCOUNT, token), Field.METADATA) == b'{"a":1}'


def test_valid_callback_url_is_stored(client: Client, store: Store) -> None:
    """An https callback URL is accepted and kept on the record."""
    ticket = client.submit(params(), callback_url="https://hooks.example.com/batchd?x=1")
    assert record(store, ticket.id).callback_url == "https://hooks.example.com/batchd?x=1"


def test_tag_is_kept_on_the_record(client: Client, store: Store) -> None:
    """A request's tag (its group in the cost ledger) is kept on its record."""
    ticket = client.submit(params(), tag="team-a/nightly")
    assert record(store, ticket.id).tag == "team-a/nightly"


# -- submit_many ----------------------------------------------------------------------------


def test_submit_many_reports_each_outcome_in_order(client: Client, store: Store) -> None:
    """Good and bad items mixed: tickets and SubmitErrors in item order; the good ones stored."""
    outcomes = client.submit_many(
        [
            {"params": params("a")},
            {"params": params(), "priority": 99},
            SubmitItem(params("b"), key="kb"),
            {"params": {"model": "m"}},
            {"params": params("c"), "reply_to": "bad name"},
            {"params": params("d"), "metadata": {"n": 4}},
        ]
    )
    assert [type(o).__name__ for o in outcomes] == [
        "Ticket",
        "InvalidRequestError",
        "Ticket",
        "InvalidRequestError",
        "InvalidRequestError",
        "Ticket",
    ]
    assert [o.field for o in outcomes if isinstance(o, SubmitError)] == [
        "priority",
        "params.max_tokens",
        "reply_to",
    ]
    tickets = [o for o in outcomes if isinstance(o, Ticket)]
    assert pending(store) == [token_of(t.id) for t in tickets]
    assert tickets[1].key == "kb"
    assert all(client.get(t.id).state == "pending" for t in tickets)


def test_submit_many_refuses_malformed_items(client: Client, redis_client: redis.Redis) -> None:
    """Items that are not SubmitItems or mappings, or carry unknown fields, fail in their place."""
    items: list[Any] = [42, {"params": params(), "colour": "red"}, {"key": "k"}]
    outcomes = client.submit_many(items)
    assert all(isinstance(o, InvalidRequestError) for o in outcomes)
    assert [o.field for o in outcomes if isinstance(o, SubmitError)] == ["item", "item", "params"]
    assert dbsize(redis_client) == 0


def test_submit_many_sends_in_chunks(client: Client, store: Store) -> None:
    """2,500 items go in several chunks, every one stored, in order."""
    outcomes = client.submit_many(({"params": params(str(i))} for i in range(2_500)), chunk=1_000)
    assert all(isinstance(o, Ticket) and not o.duplicate for o in outcomes)
    tokens = [token_of(o.id) for o in outcomes if isinstance(o, Ticket)]
    assert len(set(tokens)) == 2_500
    assert pending(store) == tokens
    assert lane_stats(store) == (2_500, sum(framed(params(str(i))) for i in range(2_500)))


def test_submit_many_deduplicates_keys_within_one_call(client: Client, store: Store) -> None:
    """An item repeating an earlier item of the same call, key and all, is a duplicate of it."""
    outcomes = client.submit_many(
        [
            {"params": params("a"), "key": "same"},
            {"params": params("b"), "key": "other"},
            {"params": params("a"), "key": "same"},
        ]
    )
    first, other, again = outcomes
    assert isinstance(first, Ticket) and isinstance(other, Ticket) and isinstance(again, Ticket)
    assert again == Ticket(id=first.id, key="same", duplicate=True)
    assert len(pending(store)) == 2


def test_submit_many_reports_a_conflict_in_its_place(client: Client, store: Store) -> None:
    """An item reusing a key of the same call for another request gets its
    IdempotencyConflictError in its place; the other items are stored."""
    first, clash, last = client.submit_many(
        [
            {"params": params("a"), "key": "same"},
            {"params": params("b"), "key": "same"},
            {"params": params("c")},
        ]
    )
    assert isinstance(first, Ticket) and isinstance(last, Ticket)
    assert isinstance(clash, IdempotencyConflictError)
    assert (clash.request_id, clash.differs) == (first.id, ["params"])
    assert pending(store) == [token_of(first.id), token_of(last.id)]


def test_submit_many_sees_keys_from_earlier_submits(client: Client) -> None:
    """A key submitted earlier makes the submit_many item a duplicate."""
    first = client.submit(params(), key="earlier")
    [again] = client.submit_many([{"params": params(), "key": "earlier"}])
    assert again == Ticket(id=first.id, key="earlier", duplicate=True)


def test_submit_many_tickets_are_handles(client: Client, flow: Flow) -> None:
    """A ticket from submit_many is bound to its client like one from submit."""
    [ticket] = client.submit_many([{"params": params()}])
    assert isinstance(ticket, Ticket)
    assert ticket.get().state == "pending"
    flow.end(ticket.id)
    assert ticket.wait(timeout=5).status == "succeeded"
