"""Idempotency over HTTP: the Idempotency-Key header and the body's `key`, as in `Client`."""

from __future__ import annotations

from batchd import Client, Settings
from tests.ingress.conftest import Ingress, params
from tests.ingress.test_routes import assert_error


def test_header_key_repeated_returns_the_first_request(held: Ingress) -> None:
    """The same Idempotency-Key and body again answer the first id, duplicate, queuing nothing."""
    http = held.http()
    before = held.counter("submitted")
    first = http.post(
        "/v1/requests", json={"params": params(1)}, headers={"Idempotency-Key": "h-1"}
    )
    again = http.post(
        "/v1/requests", json={"params": params(1)}, headers={"Idempotency-Key": "h-1"}
    )
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"]
    assert (first.json()["duplicate"], again.json()["duplicate"]) == (False, True)
    assert again.json()["key"] == "h-1"
    assert held.counter("submitted") == before + 1


def test_header_key_reused_with_another_body_is_a_conflict(held: Ingress) -> None:
    """The same Idempotency-Key with other params is 409 naming the key, the first request and
    what differs; not retryable; nothing queued."""
    http = held.http()
    headers = {"Idempotency-Key": "h-conflict"}
    first = http.post("/v1/requests", json={"params": params(1)}, headers=headers).json()
    before = held.counter("submitted")
    again = http.post("/v1/requests", json={"params": params(2)}, headers=headers)
    body = assert_error(again, 409, "conflict_error", "key")
    message = body["error"]["message"]
    assert "'h-conflict'" in message and first["id"] in message and "params" in message
    assert again.headers["x-should-retry"] == "false"
    assert held.counter("submitted") == before


def test_body_key_reused_with_another_priority_names_priority(held: Ingress) -> None:
    """A key reused with the same params but another priority is a conflict naming priority."""
    http = held.http()
    http.post("/v1/requests", json={"params": params(), "key": "k-prio"})
    again = http.post("/v1/requests", json={"params": params(), "key": "k-prio", "priority": 3})
    body = assert_error(again, 409, "conflict_error", "key")
    assert "priority" in body["error"]["message"]
    assert "params" not in body["error"]["message"]


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
    """Two items with one key and one body in a single call: the second is the first's
    duplicate."""
    items = [{"params": params(1), "key": "twin"}, {"params": params(1), "key": "twin"}]
    out = held.http().post("/v1/requests/bulk", json=items).json()["data"]
    assert out[0]["id"] == out[1]["id"]
    assert (out[0]["duplicate"], out[1]["duplicate"]) == (False, True)


def test_same_key_with_two_bodies_in_one_bulk_refuses_the_second(held: Ingress) -> None:
    """Two items with one key and different params: the second item gets conflict_error; the
    first is queued."""
    items = [{"params": params(1), "key": "twin-2"}, {"params": params(2), "key": "twin-2"}]
    answer = held.http().post("/v1/requests/bulk", json=items).json()
    first, second = answer["data"]
    assert first["duplicate"] is False and "error" not in first
    assert second["error"]["type"] == "conflict_error"
    assert second["error"]["field"] == "key"
    assert first["id"] in second["error"]["message"] and "params" in second["error"]["message"]
    assert (answer["accepted"], answer["refused"]) == (1, 1)


def test_bulk_repeated_with_the_same_header_and_other_items_conflicts(held: Ingress) -> None:
    """A bulk call repeated under its Idempotency-Key with an item changed refuses that item."""
    http = held.http()
    headers = {"Idempotency-Key": "bulk-changed"}
    items = [{"params": params(i)} for i in range(2)]
    http.post("/v1/requests/bulk", json=items, headers=headers)
    changed = [items[0], {"params": params(7)}]
    again = http.post("/v1/requests/bulk", json=changed, headers=headers).json()["data"]
    assert again[0]["duplicate"] is True
    assert again[1]["error"]["type"] == "conflict_error"
    assert "bulk-changed#1" in again[1]["error"]["message"]
