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
from batchd.store import publish_accounts

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
}


@pytest.fixture
def settings(redis_url: str) -> Settings:
    # A small batch, so "too large for a batch" needs only a few kilobytes.
    return Settings.load(redis_url=redis_url, batch={"max_bytes": 4096})


@pytest.fixture
def client(settings: Settings, redis_client: redis.Redis) -> Iterator[Client]:
    c = Client(settings=settings)
    # As a running daemon does: producers then refuse accounts it does not serve.
    publish_accounts(redis_client, c.keys, settings)
    try:
        yield c
    finally:
        c.close()


def stored(r: redis.Redis) -> list[bytes]:
    """Every key but the published accounts (the only one written before the case)."""
    keys: list[bytes] = r.keys("*")  # type: ignore[assignment]
    return sorted(k for k in keys if not k.endswith(b":accounts"))


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
    assert field.split(".")[0] in str(caught.value)
    assert stored(redis_client) == []


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
