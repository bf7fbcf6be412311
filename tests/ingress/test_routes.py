"""Every route of the ingress and its errors, from a plain HTTP client against `batchd run`."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import orjson
import pytest

from batchd.store import Keys, Store, split_request_id
from batchd.store import requests as req_store
from tests.ingress.conftest import Ingress, params
from tests.support.daemon import wait_for


def assert_error(
    response: httpx.Response, status: int, etype: str, field: str | None = None
) -> dict[str, Any]:
    """The answer is the one error shape, with this status, type and (if given) field."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == etype
    assert body["error"]["message"]
    assert body["request_id"] == response.headers["request-id"]
    if field is not None:
        assert body["error"]["field"] == field
    return body


# -- POST /v1/requests -----------------------------------------------------------------------------


def test_submit_answers_202_with_the_request_id(held: Ingress) -> None:
    """A valid request is queued: 202 with its id, status pending, key and account."""
    response = held.http().post("/v1/requests", json={"params": params(), "metadata": {"n": 1}})
    assert response.status_code == 202
    body = response.json()
    assert body["id"].startswith("default.")
    assert body == {"id": body["id"], "status": "pending", "key": None, "account": "default",
                    "duplicate": False}  # fmt: skip
    assert response.headers["request-id"].startswith("req_")


def test_submitted_request_runs_and_its_result_is_fetched(full: Ingress) -> None:
    """A request submitted over HTTP goes through a batch; GET ?wait returns its envelope."""
    http = full.http()
    rid = http.post("/v1/requests", json={"params": params(), "metadata": {"ticket": 7}}).json()[
        "id"
    ]
    # Each GET holds up to ingress.max_poll_wait; a busy machine may need more than one.
    deadline = time.monotonic() + 120
    state = http.get(f"/v1/requests/{rid}", params={"wait": 30}, timeout=60).json()
    while state["status"] in ("pending", "batched") and time.monotonic() < deadline:
        state = http.get(f"/v1/requests/{rid}", params={"wait": 30}, timeout=60).json()
    assert state["status"] == "succeeded"
    assert state["attempts"] == 1
    assert state["batch_id"].startswith("msgbatch_")
    envelope = state["result"]
    assert envelope["id"] == rid
    assert envelope["metadata"] == {"ticket": 7}
    assert envelope["result"]["type"] == "succeeded"
    assert envelope["result"]["message"]["type"] == "message"


def test_submit_names_the_invalid_field_and_stores_nothing(held: Ingress) -> None:
    """A request the Python client would refuse gets 400 naming the same field; nothing stored."""
    before = held.counter("submitted")
    bad = {**params(), "max_tokens": 0}
    response = held.http().post("/v1/requests", json={"params": bad})
    body = assert_error(response, 400, "invalid_request_error", "params.max_tokens")
    assert "max_tokens" in body["error"]["message"]
    assert held.counter("submitted") == before


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"params": params(), "colour": "red"}, "colour"),
        ({"reply_to": "q"}, "params"),
        ({"params": params(), "priority": 99}, "priority"),
        ({"params": params(), "reply_to": "no spaces"}, "reply_to"),
        ({"params": params(), "metadata": [1]}, "metadata"),
        ({"params": params(), "account": "nobody"}, "account"),
        ({"params": params(), "callback_url": "ftp://example.com/x"}, "callback_url"),
        ({"params": {**params(), "stream": True}}, "params.stream"),
        ({"params": params(), "tag": "no spaces"}, "tag"),
        ({"params": params(), "betas": ["no-such-beta-2099-01-01"]}, "betas"),
        ({"params": params(), "deadline": "tomorrow"}, "deadline"),
        ({"params": params(), "deadline": "2030-01-02T09:00:00"}, "deadline"),
    ],
)
def test_submit_refuses_each_bad_field(held: Ingress, payload: dict[str, Any], field: str) -> None:
    """Unknown fields, a missing params and each bad value get 400 naming the field."""
    assert_error(
        held.http().post("/v1/requests", json=payload), 400, "invalid_request_error", field
    )


BETA_ITEM = {"params": params(), "tag": "team-a", "betas": ["token-efficient-tools-2025-02-19"]}


def test_submit_with_tag_and_betas_is_queued(held: Ingress) -> None:
    """`tag` and known `betas` are accepted: 202, pending."""
    response = held.http().post("/v1/requests", json=BETA_ITEM)
    assert response.status_code == 202, response.text
    assert response.json()["status"] == "pending"


def test_submit_with_a_deadline_keeps_it(held: Ingress) -> None:
    """`deadline` as an ISO 8601 time or epoch seconds: 202, the deadline kept in epoch ms."""
    http = held.http()
    for given in ("2030-01-02T09:00:00Z", 1893574800):
        response = http.post("/v1/requests", json={"params": params(), "deadline": given})
        assert response.status_code == 202, response.text
        account, token = split_request_id(response.json()["id"])
        client = held.redis()
        try:
            record = Store(client, Keys(held.prefix)).read(
                req_store.read(Keys(held.prefix), account, token)
            )
        finally:
            client.close()
        assert record is not None and record.deadline_ms == 1893574800000


def test_submit_of_a_key_again_without_its_betas_is_a_conflict(held: Ingress) -> None:
    """The same key and params without the betas the key was first used with: 409 naming betas."""
    http = held.http()
    assert http.post("/v1/requests", json={**BETA_ITEM, "key": "tb-1"}).status_code == 202
    again = http.post("/v1/requests", json={**BETA_ITEM, "key": "tb-1", "betas": None})
    body = assert_error(again, 409, "conflict_error", "key")
    assert "betas" in body["error"]["message"]


def test_submit_with_an_unknown_beta_gets_the_apis_message(held: Ingress) -> None:
    """An unknown beta is refused naming `betas`, in the API's own words for the header."""
    response = held.http().post(
        "/v1/requests", json={"params": params(), "betas": ["no-such-beta-2099-01-01"]}
    )
    body = assert_error(response, 400, "invalid_request_error", "betas")
    assert body["error"]["message"].startswith(
        "Unexpected value(s) `no-such-beta-2099-01-01` for the `anthropic-beta` header."
    )


def test_submit_refuses_a_body_that_is_not_a_json_object(held: Ingress) -> None:
    """Malformed JSON and a non-object body get 400 about the body."""
    http = held.http()
    assert_error(http.post("/v1/requests", content=b"{nope"), 400, "invalid_request_error", "body")
    assert_error(http.post("/v1/requests", json=[1, 2]), 400, "invalid_request_error", "body")


def test_submit_too_large_for_a_batch_is_413(held: Ingress) -> None:
    """A request whose encoded size cannot fit in a batch gets 413 naming params."""
    big = params(0, system="x" * 5000)  # the held daemon's batches hold 4096 bytes
    response = held.http().post("/v1/requests", json={"params": big})
    assert_error(response, 413, "request_too_large", "params")


# -- POST /v1/requests/bulk ------------------------------------------------------------------------


def test_bulk_array_gives_one_outcome_per_item_and_keeps_the_good_ones(held: Ingress) -> None:
    """A JSON array: good items are queued, each bad one gets its own error in its place."""
    items = [{"params": params(1)}, {"params": {"model": "m"}}, 7, {"params": params(2)}]
    response = held.http().post("/v1/requests/bulk", json=items)
    assert response.status_code == 200
    body = response.json()
    assert (body["accepted"], body["refused"]) == (2, 2)
    out = body["data"]
    assert [o["index"] for o in out] == [0, 1, 2, 3]
    assert out[0]["status"] == "pending" and out[3]["status"] == "pending"
    assert out[1]["error"]["field"] == "params.max_tokens"
    assert out[2]["error"]["field"] == "item"
    client = held.http()
    for o in (out[0], out[3]):
        assert client.get(f"/v1/requests/{o['id']}").json()["status"] == "pending"


def test_bulk_jsonl_survives_a_line_that_is_not_json(held: Ingress) -> None:
    """JSONL: a line that does not parse is refused; the lines around it are queued."""
    lines = [orjson.dumps({"params": params(1)}), b"{broken", orjson.dumps({"params": params(2)})]
    response = held.http().post(
        "/v1/requests/bulk",
        content=b"\n".join(lines) + b"\n",
        headers={"Content-Type": "application/x-ndjson"},
    )
    body = response.json()
    assert (body["accepted"], body["refused"]) == (2, 1)
    assert "line 2" in body["data"][1]["error"]["message"]


def test_bulk_needs_an_array(held: Ingress) -> None:
    """A JSON body that is not an array gets 400."""
    response = held.http().post("/v1/requests/bulk", json={"params": params()})
    assert_error(response, 400, "invalid_request_error", "body")


def test_bulk_over_the_item_cap_is_413(held: Ingress) -> None:
    """More items than ingress.max_bulk_items get 413 and nothing is queued."""
    before = held.counter("submitted")
    response = held.http().post("/v1/requests/bulk", json=[{"params": params(i)} for i in range(6)])
    assert_error(response, 413, "request_too_large")
    assert held.counter("submitted") == before


def test_bulk_item_for_a_forbidden_account_is_refused_alone(held: Ingress) -> None:
    """An item naming an account the token may not use gets permission_error; others go in."""
    items = [{"params": params(), "account": "default"}, {"params": params()}]
    body = held.http("other").post("/v1/requests/bulk", json=items).json()
    assert body["data"][0]["error"]["type"] == "permission_error"
    assert body["data"][1]["account"] == "other"
    assert body["accepted"] == 1


# -- GET /v1/requests/{id} -------------------------------------------------------------------------


def submit(ing: Ingress, **fields: Any) -> str:
    response = ing.http().post("/v1/requests", json={"params": params(), **fields})
    assert response.status_code == 202, response.text
    rid: str = response.json()["id"]
    return rid


def test_get_pending_request_has_no_result(held: Ingress) -> None:
    """A queued request reads pending, attempts 0, no batch and no result."""
    rid = submit(held)
    assert held.http().get(f"/v1/requests/{rid}").json() == {
        "id": rid, "status": "pending", "attempts": 0, "batch_id": None, "result": None,
    }  # fmt: skip


def test_long_poll_returns_the_state_when_the_wait_ends(held: Ingress) -> None:
    """?wait on a request that stays pending answers pending after about that long."""
    rid = submit(held)
    started = time.monotonic()
    response = held.http().get(f"/v1/requests/{rid}", params={"wait": 0.5})
    assert response.json()["status"] == "pending"
    assert 0.45 <= time.monotonic() - started < 3


def test_long_poll_is_cut_to_max_poll_wait(held: Ingress) -> None:
    """A wait longer than ingress.max_poll_wait (2 s here) ends at that limit."""
    rid = submit(held)
    started = time.monotonic()
    held.http().get(f"/v1/requests/{rid}", params={"wait": 600})
    assert 1.9 <= time.monotonic() - started < 5


def test_long_poll_wakes_as_soon_as_the_request_ends(held: Ingress) -> None:
    """A long-poll returns the terminal state at once when the request ends (no polling)."""
    rid = submit(held)
    got: dict[str, Any] = {}

    def poll() -> None:
        started = time.monotonic()
        got["state"] = held.http().get(f"/v1/requests/{rid}", params={"wait": 30}).json()
        got["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=poll)
    thread.start()
    held.wait_held(rid)  # the poll waits for the request to end
    assert held.http().delete(f"/v1/requests/{rid}").status_code == 200
    thread.join(10)
    assert got["state"]["status"] == "canceled"
    assert got["seconds"] < 10


@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "inf"])
def test_long_poll_refuses_a_bad_wait(held: Ingress, wait: str) -> None:
    """?wait must be a finite number of seconds >= 0."""
    rid = submit(held)
    response = held.http().get(f"/v1/requests/{rid}", params={"wait": wait})
    assert_error(response, 400, "invalid_request_error", "wait")


@pytest.mark.parametrize("rid", ["default.01J0000000000000000000000A", "not-an-id", "x.y"])
def test_get_unknown_request_is_404(held: Ingress, rid: str) -> None:
    """An id that is unknown, or not a batchd id at all, gets 404."""
    assert_error(held.http().get(f"/v1/requests/{rid}"), 404, "not_found_error")


# -- DELETE /v1/requests/{id} ----------------------------------------------------------------------


def test_cancel_pending_request_ends_it_canceled(held: Ingress) -> None:
    """DELETE on a pending request answers its canceled envelope; GET agrees."""
    rid = submit(held, metadata={"a": 1})
    response = held.http().delete(f"/v1/requests/{rid}")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "canceled"
    assert body["result"]["result"] == {"type": "canceled"}
    assert body["result"]["metadata"] == {"a": 1}
    assert held.http().get(f"/v1/requests/{rid}").json()["status"] == "canceled"


def test_cancel_twice_is_409(held: Ingress) -> None:
    """A request that already ended cannot be canceled again: 409 conflict_error."""
    rid = submit(held)
    held.http().delete(f"/v1/requests/{rid}")
    body = assert_error(held.http().delete(f"/v1/requests/{rid}"), 409, "conflict_error")
    assert "already ended" in body["error"]["message"]


def test_cancel_unknown_request_is_404(held: Ingress) -> None:
    """DELETE of an unknown id gets 404."""
    response = held.http().delete("/v1/requests/default.01J0000000000000000000000A")
    assert_error(response, 404, "not_found_error")


# -- batches ---------------------------------------------------------------------------------------


@pytest.fixture
def slow_batches(full: Ingress) -> Any:
    """The emulator keeps batches in progress for 60 s while the test runs."""
    full.emulator.patch_profile({"processing_time": [60, 60]})
    try:
        yield
    finally:
        full.emulator.set_profile({})


def batched(ing: Ingress, **fields: Any) -> str:
    """A request submitted and then seen in a batch sent to the API."""
    rid = submit(ing, **fields)
    http = ing.http()

    def in_batch() -> bool:
        state = http.get(f"/v1/requests/{rid}").json()
        return state["status"] == "batched" and state["batch_id"] is not None

    wait_for(in_batch, 30, "the request to be in a created batch")
    return rid


def test_batches_in_flight_are_listed_and_shown(full: Ingress, slow_batches: None) -> None:
    """GET /v1/batches lists the batch in flight; GET by either id shows it."""
    rid = batched(full)
    http = full.http()
    bid = http.get(f"/v1/requests/{rid}").json()["batch_id"]
    listed = http.get("/v1/batches").json()
    [entry] = [b for b in listed["data"] if b["batch_id"] == bid]
    assert entry["account"] == "default"
    assert entry["requests"] >= 1
    assert entry["state"] in ("submitted", "polling")
    assert listed["count"] == len(listed["data"])
    # The batch is live: a poll may land between two reads (polls, request_counts), so the two
    # routes are read until no poll came between them.
    wait_for(
        lambda: (
            http.get(f"/v1/batches/{bid}").json() == http.get(f"/v1/batches/{entry['id']}").json()
        ),
        10,
        "the batch's two ids to show the same batch",
    )
    assert http.get(f"/v1/batches/{bid}").json()["id"] == entry["id"]


def test_cancel_of_a_batched_request_is_409(full: Ingress, slow_batches: None) -> None:
    """A request already in a batch cannot be withdrawn: 409 says it ends with its batch."""
    rid = batched(full)
    body = assert_error(full.http().delete(f"/v1/requests/{rid}"), 409, "conflict_error")
    assert "already in a batch" in body["error"]["message"]


def test_batches_of_other_accounts_are_hidden_and_forbidden(
    full: Ingress, slow_batches: None
) -> None:
    """A token for one account lists only its batches; another's batch gets 403."""
    rid = batched(full)
    bid = full.http().get(f"/v1/requests/{rid}").json()["batch_id"]
    narrow = full.http("other")
    assert all(b["account"] == "other" for b in narrow.get("/v1/batches").json()["data"])
    assert_error(narrow.get(f"/v1/batches/{bid}"), 403, "permission_error")
    assert_error(narrow.get("/v1/batches", params={"account": "default"}), 403, "permission_error")


def test_batches_filter_by_an_unknown_account_is_400(full: Ingress) -> None:
    """?account must name a configured account."""
    response = full.http().get("/v1/batches", params={"account": "nobody"})
    assert_error(response, 400, "invalid_request_error", "account")


@pytest.mark.parametrize("bid", ["msgbatch_unknown", "default.01J0000000000000000000000A", "zz"])
def test_unknown_batch_is_404(full: Ingress, bid: str) -> None:
    """A batch id batchd never made gets 404."""
    assert_error(full.http().get(f"/v1/batches/{bid}"), 404, "not_found_error")


# -- everything else -------------------------------------------------------------------------------


def test_unknown_route_is_404_in_the_error_shape(held: Ingress) -> None:
    """A path the ingress does not serve gets 404 not_found_error."""
    assert_error(held.http().get("/v1/nothing-here"), 404, "not_found_error")


def test_wrong_method_is_405_in_the_error_shape(held: Ingress) -> None:
    """A method a route does not take gets 405 with the API's error shape."""
    assert_error(held.http().put("/v1/requests"), 405, "invalid_request_error")


def test_openapi_document_is_public(held: Ingress) -> None:
    """/openapi.json needs no token and describes every route."""
    doc = held.http(token=None).get("/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/v1/requests", "/v1/requests/bulk", "/v1/requests/{id}", "/v1/batches",
        "/v1/batches/{id}", "/v1/messages", "/v1/messages/count_tokens", "/v1/models",
        "/v1/models/{id}", "/openapi.json", "/v1/dead", "/v1/dead/requeue", "/v1/dead/purge",
        "/v1/cost",
    }  # fmt: skip
