"""A batch's life: processing, async param validation, counts, expiry, archive, cancel, delete."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest

from tests.support.emulator import EmulatorProcess, batch_requests

RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
COUNT_KEYS = ("processing", "succeeded", "errored", "canceled", "expired")


def create(http: httpx.Client, requests: list[dict[str, Any]]) -> dict[str, Any]:
    response = http.post("/v1/messages/batches", json={"requests": requests})
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def get(http: httpx.Client, batch_id: str) -> dict[str, Any]:
    result: dict[str, Any] = http.get(f"/v1/messages/batches/{batch_id}").raise_for_status().json()
    return result


def results(http: httpx.Client, batch_id: str) -> list[dict[str, Any]]:
    response = http.get(f"/v1/messages/batches/{batch_id}/results")
    response.raise_for_status()
    return [orjson.loads(line) for line in response.content.splitlines()]


def by_custom_id(lines: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {line["custom_id"]: line["result"] for line in lines}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"max_tokens": None}, "max_tokens: Field required"),
        ({"model": None}, "model: Field required"),
        ({"messages": None}, "messages: Field required"),
        ({"stream": True}, "stream:"),
        ({"temperature": 3}, "temperature:"),
        ({"messages": []}, "messages:"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages.0.role:"),
        ({"unknown_field": 1}, "unknown_field: Extra inputs are not permitted"),
    ],
)
def test_invalid_params_end_errored(
    http: httpx.Client, emu: EmulatorProcess, change: dict[str, Any], fragment: str
) -> None:
    """Bad params are accepted at create and end errored with invalid_request_error."""
    requests = batch_requests(3)
    params = requests[1]["params"]
    for key, value in change.items():
        if value is None:
            params.pop(key)
        else:
            params[key] = value
    batch = create(http, requests)
    assert batch["request_counts"]["processing"] == 3
    emu.advance(1)
    assert get(http, batch["id"])["request_counts"]["errored"] == 1
    result = by_custom_id(results(http, batch["id"]))["req-1"]
    assert result["type"] == "errored"
    assert result["error"]["error"]["type"] == "invalid_request_error"
    assert fragment in result["error"]["error"]["message"]
    assert result["error"]["request_id"].startswith("req_")


def test_counts_stay_processing_until_the_end(http: httpx.Client, emu: EmulatorProcess) -> None:
    """All counts but processing are 0 until the whole batch ends, and always sum to its size."""
    emu.set_profile({"processing_time": [10, 100]})
    batch = create(http, batch_requests(50))
    emu.advance(60)
    midway = get(http, batch["id"])
    assert midway["processing_status"] == "in_progress"
    assert midway["request_counts"] == dict.fromkeys(COUNT_KEYS, 0) | {"processing": 50}
    emu.advance(41)
    counts = get(http, batch["id"])["request_counts"]
    assert counts["processing"] == 0 and counts["succeeded"] == 50
    assert sum(counts.values()) == 50


def test_timestamps_are_rfc3339_and_expiry_is_a_day_later(http: httpx.Client) -> None:
    """created_at and expires_at are RFC 3339 and exactly 24 h apart; ids have their prefix."""
    batch = create(http, batch_requests(1))
    assert batch["id"].startswith("msgbatch_")
    assert RFC3339.match(batch["created_at"]) and RFC3339.match(batch["expires_at"])
    created = datetime.fromisoformat(batch["created_at"])
    assert datetime.fromisoformat(batch["expires_at"]) - created == timedelta(hours=24)
    assert batch["ended_at"] is batch["archived_at"] is batch["cancel_initiated_at"] is None


def test_ended_batch_has_ended_at_and_results_url(http: httpx.Client, emu: EmulatorProcess) -> None:
    """Once ended, ended_at is when processing finished and results_url points at results."""
    batch = create(http, batch_requests(2))
    emu.advance(5)
    ended = get(http, batch["id"])
    assert ended["processing_status"] == "ended"
    took = datetime.fromisoformat(ended["ended_at"]) - datetime.fromisoformat(ended["created_at"])
    # Each time is rounded to whole microseconds on its own: the difference may be 1 us off.
    assert abs(took - timedelta(seconds=0.1)) <= timedelta(microseconds=1)
    assert ended["results_url"] == f"{emu.url}/v1/messages/batches/{batch['id']}/results"


def test_unprocessed_requests_expire_after_24_hours(
    http: httpx.Client, emu: EmulatorProcess
) -> None:
    """Requests still processing at expires_at end expired; the batch ends then."""
    emu.set_profile({"processing_time": [3600, 48 * 3600], "seed": 5})
    batch = create(http, batch_requests(40))
    emu.advance(24 * 3600 - 1)
    assert get(http, batch["id"])["processing_status"] == "in_progress"
    emu.advance(1)
    ended = get(http, batch["id"])
    assert ended["ended_at"] == ended["expires_at"]
    counts = ended["request_counts"]
    assert counts["expired"] > 0 and counts["succeeded"] > 0
    assert counts["expired"] + counts["succeeded"] == 40
    kinds = [r["type"] for r in by_custom_id(results(http, batch["id"])).values()]
    assert kinds.count("expired") == counts["expired"]


def test_results_are_archived_after_29_days(http: httpx.Client, emu: EmulatorProcess) -> None:
    """29 days after creation archived_at is set and results are gone (404)."""
    batch = create(http, batch_requests(2))
    emu.advance(29 * 86400 - 10)
    assert get(http, batch["id"])["archived_at"] is None
    assert http.get(f"/v1/messages/batches/{batch['id']}/results").status_code == 200
    emu.advance(10)
    archived = get(http, batch["id"])
    created = datetime.fromisoformat(archived["created_at"])
    assert datetime.fromisoformat(archived["archived_at"]) - created == timedelta(days=29)
    response = http.get(f"/v1/messages/batches/{batch['id']}/results")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_results_before_the_end_are_refused(http: httpx.Client) -> None:
    """Asking for the results of a batch in progress is 400 invalid_request_error."""
    batch = create(http, batch_requests(1))
    response = http.get(f"/v1/messages/batches/{batch['id']}/results")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_results_are_shuffled_once(http: httpx.Client, emu: EmulatorProcess) -> None:
    """Results come in a shuffled order, the same on every download."""
    requests = batch_requests(200)
    batch = create(http, requests)
    emu.advance(1)
    first = [line["custom_id"] for line in results(http, batch["id"])]
    second = [line["custom_id"] for line in results(http, batch["id"])]
    assert first == second
    assert first != [r["custom_id"] for r in requests]
    assert sorted(first) == sorted(r["custom_id"] for r in requests)


def test_results_are_jsonl(http: httpx.Client, emu: EmulatorProcess) -> None:
    """Results are served as application/x-jsonl, one LF-terminated line per request."""
    batch = create(http, batch_requests(3))
    emu.advance(1)
    response = http.get(f"/v1/messages/batches/{batch['id']}/results")
    assert response.headers["content-type"].startswith("application/x-jsonl")
    assert response.content.count(b"\n") == 3 and response.content.endswith(b"\n")
    assert b"\r" not in response.content


def test_succeeded_message_echoes_the_request(http: httpx.Client, emu: EmulatorProcess) -> None:
    """The fake answer names the request's model and echoes its last user message."""
    requests = batch_requests(1, model="claude-opus-4-1")
    requests[0]["params"]["messages"] = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "What is a quaternion?"}]},
    ]
    batch = create(http, requests)
    emu.advance(1)
    message = results(http, batch["id"])[0]["result"]["message"]
    assert message["model"] == "claude-opus-4-1"
    assert "What is a quaternion?" in message["content"][0]["text"]
    assert message["usage"]["input_tokens"] > 0


def test_cancel_keeps_finished_requests(http: httpx.Client, emu: EmulatorProcess) -> None:
    """Requests done before cancel keep their result; the rest end canceled."""
    emu.set_profile({"processing_time": [1, 100], "seed": 9})
    batch = create(http, batch_requests(60))
    emu.advance(50)
    canceling = http.post(f"/v1/messages/batches/{batch['id']}/cancel").json()
    assert canceling["processing_status"] == "canceling"
    assert canceling["request_counts"]["processing"] == 60
    emu.advance(1)
    counts = get(http, batch["id"])["request_counts"]
    assert counts["succeeded"] > 0 and counts["canceled"] > 0
    assert counts["succeeded"] + counts["canceled"] == 60


def test_cancel_twice_is_harmless(http: httpx.Client) -> None:
    """A second cancel while canceling answers the same batch and keeps the first time."""
    batch = create(http, batch_requests(1))
    first = http.post(f"/v1/messages/batches/{batch['id']}/cancel").json()
    second = http.post(f"/v1/messages/batches/{batch['id']}/cancel").json()
    assert second["cancel_initiated_at"] == first["cancel_initiated_at"]


def test_cancel_after_end_is_400(http: httpx.Client, emu: EmulatorProcess) -> None:
    """An ended batch cannot be canceled: 400 invalid_request_error."""
    batch = create(http, batch_requests(1))
    emu.advance(1)
    response = http.post(f"/v1/messages/batches/{batch['id']}/cancel")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_delete_before_end_is_400(http: httpx.Client) -> None:
    """A batch in progress cannot be deleted: 400, and it is still there."""
    batch = create(http, batch_requests(1))
    response = http.delete(f"/v1/messages/batches/{batch['id']}")
    assert response.status_code == 400
    assert get(http, batch["id"])["processing_status"] == "in_progress"


def test_deleted_batch_is_gone(http: httpx.Client, emu: EmulatorProcess) -> None:
    """After delete, retrieve, results and list no longer know the batch."""
    batch = create(http, batch_requests(1))
    emu.advance(1)
    http.delete(f"/v1/messages/batches/{batch['id']}").raise_for_status()
    assert http.get(f"/v1/messages/batches/{batch['id']}").status_code == 404
    assert http.get(f"/v1/messages/batches/{batch['id']}/results").status_code == 404
    assert http.get("/v1/messages/batches").json()["data"] == []


def test_list_limits(http: httpx.Client) -> None:
    """list defaults to 20 per page and refuses a limit outside 1..1000."""
    for i in range(21):
        create(http, batch_requests(1, f"x{i}"))
    page = http.get("/v1/messages/batches").json()
    assert len(page["data"]) == 20 and page["has_more"] is True
    assert page["first_id"] == page["data"][0]["id"]
    assert page["last_id"] == page["data"][-1]["id"]
    for bad in ("0", "1001", "many"):
        assert http.get("/v1/messages/batches", params={"limit": bad}).status_code == 400
    assert len(http.get("/v1/messages/batches", params={"limit": 1000}).json()["data"]) == 21


def test_list_pages_with_after_id(http: httpx.Client) -> None:
    """after_id=last_id gives the next, older page until has_more is false."""
    ids = [create(http, batch_requests(1, f"p{i}"))["id"] for i in range(5)]
    seen: list[str] = []
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = http.get("/v1/messages/batches", params=params).json()
        seen += [b["id"] for b in page["data"]]
        if not page["has_more"]:
            break
        params["after_id"] = page["last_id"]
    assert seen == ids[::-1]


def test_list_before_id_gives_newer_batches(http: httpx.Client) -> None:
    """before_id gives the batches just newer than it, newest first."""
    ids = [create(http, batch_requests(1, f"q{i}"))["id"] for i in range(5)]
    page = http.get("/v1/messages/batches", params={"limit": 2, "before_id": ids[1]}).json()
    assert [b["id"] for b in page["data"]] == [ids[3], ids[2]]
    assert page["has_more"] is True


def test_request_id_header_on_every_answer(http: httpx.Client, emu: EmulatorProcess) -> None:
    """Successes, errors and admin answers all carry a request-id header."""
    answers = [
        http.get("/v1/messages/batches"),
        http.get("/v1/messages/batches/msgbatch_none"),
        http.post("/v1/messages/batches", content=b"nope"),
        httpx.get(emu.url + "/_emulator/health"),
    ]
    for answer in answers:
        assert answer.headers["request-id"].startswith("req_")
    error = answers[1].json()
    assert error["request_id"] == answers[1].headers["request-id"]
