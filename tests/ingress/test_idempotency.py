"""Idempotency over HTTP: the Idempotency-Key header and the body's `key`, as in `Client`."""

from __future__ import annotations

from batchd import Client, Settings
from tests.ingress.conftest import Ingress, params
from tests.ingress.test_routes import assert_error


def test_header_key_repeated_returns_the_first_request(held: Ingress) -> None:
    """The same Idempotency-Key again answers the first id, duplicate, and queues nothing."""
    http = held.http()
    before = held.counter("submitted")
    first = http.post(
        "/v1/requests", json={"params": params(1)}, headers={"Idempotency-Key": "h-1"}
    )
    again = http.post(
        "/v1/requests", json={"params": params(2)}, headers={"Idempotency-Key": "h-1"}
    )
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert again.json()["key"] == "h-1"
    assert held.counter("submitted") == before + 1


def test_body_key_repeated_returns_the_first_request(held: Ingress) -> None:
    """The same `key` in the body again answers the first id and its current status."""
    http = held.http()
    first = http.post("/v1/requests", json={"params": params(), "key": "b-1"}).json()
    http.delete(f"/v1/requests/{first['id']}")
    again = http.post("/v1/requests", json={"params": params(), "key": "b-1"}).json()
    assert again["id"] == first["id"]
    assert again["duplicate"] is True
    assert again["status"] == "canceled"


def test_header_and_body_key_are_the_same_key(held: Ingress) -> None:
    """A key sent in the header is found by the body's key, and the reverse."""
    http = held.http()
    first = http.post("/v1/requests", json={"params": params()}, headers={"Idempotency-Key": "hb"})
    again = http.post("/v1/requests", json={"params": params(), "key": "hb"})
    assert again.json()["id"] == first.json()["id"]


def test_http_and_python_client_share_keys(held: Ingress) -> None:
    """A key used by the Python client is honoured over HTTP (one key space)."""
    with Client(settings=Settings.load(redis_url=held.redis_url, prefix=held.prefix)) as client:
        ticket = client.submit(params(), key="shared-1")
    body = held.http().post("/v1/requests", json={"params": params(), "key": "shared-1"}).json()
    assert body["id"] == ticket.id
    assert body["duplicate"] is True


def test_header_and_body_key_that_differ_are_refused(held: Ingress) -> None:
    """Two different keys on one request get 400 naming `key`; nothing is queued."""
    before = held.counter("submitted")
    response = held.http().post(
        "/v1/requests", json={"params": params(), "key": "a"}, headers={"Idempotency-Key": "b"}
    )
    assert_error(response, 400, "invalid_request_error", "key")
    assert held.counter("submitted") == before


def test_bulk_repeated_with_the_same_header_queues_nothing_new(held: Ingress) -> None:
    """With Idempotency-Key on a bulk call, repeating the whole call returns the same ids."""
    http = held.http()
    items = [{"params": params(i)} for i in range(3)] + [{"params": params(9), "key": "own"}]
    headers = {"Idempotency-Key": "bulk-7"}
    first = http.post("/v1/requests/bulk", json=items, headers=headers).json()["data"]
    again = http.post("/v1/requests/bulk", json=items, headers=headers).json()["data"]
    assert [o["id"] for o in again] == [o["id"] for o in first]
    assert all(o["duplicate"] for o in again)
    assert [o["key"] for o in first] == ["bulk-7#0", "bulk-7#1", "bulk-7#2", "own"]


def test_same_key_twice_in_one_bulk_queues_once(held: Ingress) -> None:
    """Two items with one key in a single call: the second is the first's duplicate."""
    items = [{"params": params(1), "key": "twin"}, {"params": params(2), "key": "twin"}]
    out = held.http().post("/v1/requests/bulk", json=items).json()["data"]
    assert out[0]["id"] == out[1]["id"]
    assert (out[0]["duplicate"], out[1]["duplicate"]) == (False, True)
