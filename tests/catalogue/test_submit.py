"""Bad submits through `Client.submit` and `Client.submit_many`: a clear error, nothing stored.

Each case runs through both entry points; in `submit_many` the good neighbours of a bad item
are stored all the same.
"""

from __future__ import annotations

import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from batchd import Client, RequestTooLargeError, Settings, SubmitError, Ticket
from batchd.errors import IdempotencyConflictError
from batchd.store import counters as counter_store
from tests.support.submit_state import submit_state

GOOD = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hello"}],
}


def good(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value]
    return value


class NotJson:
    """An object json cannot encode."""


# name: (keyword arguments of submit, the field the error names, the error class)
CASES: dict[str, tuple[dict[str, Any], str, type[SubmitError]]] = {
    "params is a list": ({"params": [GOOD]}, "params", SubmitError),
    "params is a string": ({"params": '{"model": "x"}'}, "params", SubmitError),
    "params is None": ({"params": None}, "params", SubmitError),
    "model missing": ({"params": {"max_tokens": 1, "messages": [{}]}}, "params.model", SubmitError),
    "model is a number": ({"params": good(model=3)}, "params.model", SubmitError),
    "model empty": ({"params": good(model="")}, "params.model", SubmitError),
    "max_tokens missing": (
        {"params": {"model": "m", "messages": [{"role": "user", "content": "x"}]}},
        "params.max_tokens",
        SubmitError,
    ),
    "max_tokens zero": ({"params": good(max_tokens=0)}, "params.max_tokens", SubmitError),
    "max_tokens a bool": ({"params": good(max_tokens=True)}, "params.max_tokens", SubmitError),
    "max_tokens a float": ({"params": good(max_tokens=1.5)}, "params.max_tokens", SubmitError),
    "max_tokens a string": ({"params": good(max_tokens="64")}, "params.max_tokens", SubmitError),
    "messages empty": ({"params": good(messages=[])}, "params.messages", SubmitError),
    "messages a string": ({"params": good(messages="hi")}, "params.messages", SubmitError),
    "stream true": ({"params": good(stream=True)}, "params.stream", SubmitError),
    "params key not a string": ({"params": {**GOOD, 7: "x"}}, "params", SubmitError),
    "params too large for a batch": (
        {"params": good(system="x" * 5000)},
        "params",
        RequestTooLargeError,
    ),
    "nesting deeper than the encoder goes": (
        {"params": good(metadata=nested(100_000))},
        "params",
        SubmitError,
    ),
    "lone surrogate in content": (
        {"params": good(messages=[{"role": "user", "content": "bad \ud800 text"}])},
        "params",
        SubmitError,
    ),
    "invalid UTF-8 bytes in content": (
        {"params": good(messages=[{"role": "user", "content": b"\xff\xfe"}])},
        "params",
        SubmitError,
    ),
    "NaN": ({"params": good(temperature=float("nan"))}, "params", SubmitError),
    "Infinity": ({"params": good(temperature=float("inf"))}, "params", SubmitError),
    "a set in params": ({"params": good(stop_sequences={"a", "b"})}, "params", SubmitError),
    "a datetime in params": (
        {"params": good(system=datetime.datetime(2025, 1, 1))},
        "params",
        SubmitError,
    ),
    "an arbitrary object in params": ({"params": good(system=NotJson())}, "params", SubmitError),
    "a UUID in metadata": (
        {"params": GOOD, "metadata": {"id": uuid.UUID(int=1)}},
        "metadata",
        SubmitError,
    ),
    "metadata oversize": (
        {"params": GOOD, "metadata": {"blob": "x" * 5000}},
        "metadata",
        SubmitError,
    ),
    "metadata a list": ({"params": GOOD, "metadata": [1, 2]}, "metadata", SubmitError),
    "metadata with NaN": (
        {"params": GOOD, "metadata": {"score": float("nan")}},
        "metadata",
        SubmitError,
    ),
    "reply_to empty": ({"params": GOOD, "reply_to": ""}, "reply_to", SubmitError),
    "reply_to with spaces and braces": (
        {"params": GOOD, "reply_to": "my queue}"},
        "reply_to",
        SubmitError,
    ),
    "reply_to too long": ({"params": GOOD, "reply_to": "q" * 201}, "reply_to", SubmitError),
    "reply_to a number": ({"params": GOOD, "reply_to": 42}, "reply_to", SubmitError),
    "callback_url ftp": (
        {"params": GOOD, "callback_url": "ftp://example.com/hook"},
        "callback_url",
        SubmitError,
    ),
    "callback_url without a host": (
        {"params": GOOD, "callback_url": "https:///hook"},
        "callback_url",
        SubmitError,
    ),
    "callback_url with a password": (
        {"params": GOOD, "callback_url": "https://user:pw@example.com/hook"},
        "callback_url",
        SubmitError,
    ),
    "callback_url with a newline": (
        {"params": GOOD, "callback_url": "https://example.com/\nhook"},
        "callback_url",
        SubmitError,
    ),
    "callback_url with a bad port": (
        {"params": GOOD, "callback_url": "https://example.com:99999/hook"},
        "callback_url",
        SubmitError,
    ),
    "callback_url too long": (
        {"params": GOOD, "callback_url": "https://example.com/" + "a" * 3000},
        "callback_url",
        SubmitError,
    ),
    "callback_url not a string": (
        {"params": GOOD, "callback_url": b"https://example.com"},
        "callback_url",
        SubmitError,
    ),
    "huge idempotency key": ({"params": GOOD, "key": "k" * 100_000}, "key", SubmitError),
    "empty idempotency key": ({"params": GOOD, "key": ""}, "key", SubmitError),
    "idempotency key a number": ({"params": GOOD, "key": 12345}, "key", SubmitError),
    "idempotency key with a lone surrogate": (
        {"params": GOOD, "key": "k\udc80"},
        "key",
        SubmitError,
    ),
    "account name with a space": (
        {"params": GOOD, "account": "my account"},
        "account",
        SubmitError,
    ),
    "account the daemon does not serve": (
        {"params": GOOD, "account": "elsewhere"},
        "account",
        SubmitError,
    ),
    "priority out of range": ({"params": GOOD, "priority": 99}, "priority", SubmitError),
    "priority negative": ({"params": GOOD, "priority": -1}, "priority", SubmitError),
    "priority a bool": ({"params": GOOD, "priority": True}, "priority", SubmitError),
    "priority a string": ({"params": GOOD, "priority": "1"}, "priority", SubmitError),
    "tag with a space": ({"params": GOOD, "tag": "my tag"}, "tag", SubmitError),
    "tag too long": ({"params": GOOD, "tag": "t" * 65}, "tag", SubmitError),
    "tag empty": ({"params": GOOD, "tag": ""}, "tag", SubmitError),
    "tag a number": ({"params": GOOD, "tag": 7}, "tag", SubmitError),
    "betas not a list": ({"params": GOOD, "betas": 7}, "betas", SubmitError),
    "betas a set": ({"params": GOOD, "betas": {"a", "b"}}, "betas", SubmitError),
    "beta not a string": ({"params": GOOD, "betas": [b"x"]}, "betas", SubmitError),
    "beta with capitals and a space": (
        {"params": GOOD, "betas": ["Bad Beta"]},
        "betas",
        SubmitError,
    ),
    "beta the API does not know": (
        {"params": GOOD, "betas": ["no-such-beta-2099-01-01"]},
        "betas",
        SubmitError,
    ),
}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    # A small batch, so "too large for a batch" needs only a few kilobytes.
    return Settings.load(redis_url=redis_url, batch={"max_bytes": 4096})


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    c = Client(settings=settings)
    # As a running daemon does: producers then refuse accounts it does not serve.
    c.store.read(counter_store.publish_accounts(c.keys, list(settings.accounts)))
    try:
        yield c
    finally:
        c.close()


def stored(client: Client, r: redis.Redis) -> list[bytes]:
    """Every key but the published accounts (the only one written before the case)."""
    keys: list[bytes] = r.keys("*")  # type: ignore[assignment]
    return sorted(k for k in keys if k != client.keys.accounts().encode())


def names(message: str, field: str) -> bool:
    """Whether an error message names the field: a beta the API would refuse is refused in the
    API's own words, which name the `anthropic-beta` header the betas are sent in."""
    top = field.split(".")[0]
    return top in message or (top == "betas" and "`anthropic-beta` header" in message)


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_submit_refuses_naming_the_field(
    case: str, client: Client, redis_client: redis.Redis
) -> None:
    """submit raises the documented error naming the bad field, and stores nothing."""
    given, field, error = CASES[case]
    kwargs = dict(given)
    params = kwargs.pop("params")
    with pytest.raises(error) as caught:
        client.submit(params, **kwargs)
    assert caught.value.field == field, str(caught.value)
    assert names(str(caught.value), field), str(caught.value)
    assert stored(client, redis_client) == []


@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_submit_many_refuses_the_item_and_stores_its_neighbours(
    case: str, client: Client, redis_client: redis.Redis
) -> None:
    """In submit_many the bad item gets its error in place; the items around it are stored."""
    kwargs, field, error = CASES[case]
    outcomes = client.submit_many([{"params": GOOD}, dict(kwargs), {"params": GOOD}])
    first, bad, last = outcomes
    assert isinstance(bad, error) and bad.field == field
    assert isinstance(first, Ticket) and isinstance(last, Ticket)
    assert client.get(first.id).state == client.get(last.id).state == "pending"


MALFORMED_ITEMS: dict[str, tuple[Any, str]] = {
    "item is a number": (42, "item"),
    "item is a string": ("params", "item"),
    "item with an unknown field": ({"params": GOOD, "callback": "x"}, "item"),
    "item without params": ({"reply_to": "q"}, "params"),
}


@pytest.mark.parametrize("case", list(MALFORMED_ITEMS), ids=list(MALFORMED_ITEMS))
def test_submit_many_refuses_a_malformed_item(
    case: str, client: Client, redis_client: redis.Redis
) -> None:
    """An item that is not a submit at all is refused in place; the others are stored."""
    item, field = MALFORMED_ITEMS[case]
    first, bad = client.submit_many([{"params": GOOD}, item])
    assert isinstance(bad, SubmitError) and bad.field == field
    assert isinstance(first, Ticket)
    assert client.get(first.id).state == "pending"


def test_reused_key_with_another_body_is_refused_naming_what_differs(
    client: Client, redis_client: redis.Redis
) -> None:
    """A key reused with other params and metadata: a conflict naming both; nothing stored."""
    first = client.submit(GOOD, key="reused")
    before = submit_state(redis_client, client.keys, client.settings.default_account)
    with pytest.raises(IdempotencyConflictError) as caught:
        client.submit(good(max_tokens=32), key="reused", metadata={"run": 2})
    assert caught.value.field == "key"
    assert caught.value.request_id == first.id
    assert caught.value.differs == ["params", "metadata"]
    assert first.id in str(caught.value) and "params and metadata" in str(caught.value)
    assert submit_state(redis_client, client.keys, client.settings.default_account) == before


def test_submit_many_refuses_a_reused_key_in_place(client: Client) -> None:
    """submit_many: a key reused with another body conflicts in place; the same body duplicates."""
    first = client.submit(GOOD, key="reused")
    same, other, fresh = client.submit_many(
        [{"params": GOOD, "key": "reused"}, {"params": good(max_tokens=32), "key": "reused"},
         {"params": GOOD}]
    )  # fmt: skip
    assert isinstance(same, Ticket) and same.duplicate and same.id == first.id
    assert isinstance(other, IdempotencyConflictError) and other.differs == ["params"]
    assert isinstance(fresh, Ticket) and not fresh.duplicate
    assert client.get(fresh.id).state == "pending"
