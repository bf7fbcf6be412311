"""Every body the emulator answers validates against the stored OpenAPI document's schemas."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from jsonschema import Draft202012Validator

from tests.emulator.conftest import api_headers
from tests.support.emulator import EmulatorProcess, OpenAPISchemas, batch_requests

MIXED_PROFILE = {
    "processing_time": [1, 100_000],
    "result_api_error_rate": 0.1,
    "result_overloaded_rate": 0.1,
    "result_expired_rate": 0.1,
}


def mixed_batch(http: httpx.Client, emu: EmulatorProcess, beta: bool = False) -> str:
    """An ended batch whose results hold all four result types."""
    emu.set_profile(MIXED_PROFILE | {"seed": 3})
    requests = batch_requests(60)
    requests[0]["params"].pop("max_tokens")
    params = {"beta": "true"} if beta else {}
    batch = http.post("/v1/messages/batches", json={"requests": requests}, params=params).json()
    emu.advance(50_000)
    http.post(f"/v1/messages/batches/{batch['id']}/cancel", params=params).raise_for_status()
    emu.advance(90_000)
    return str(batch["id"])


def results_lines(http: httpx.Client, batch_id: str, **params: str) -> list[dict[str, Any]]:
    response = http.get(f"/v1/messages/batches/{batch_id}/results", params=params)
    response.raise_for_status()
    return [orjson.loads(line) for line in response.content.splitlines()]


def test_create_and_retrieve_are_message_batches(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """create, retrieve (in progress and ended) and cancel answer valid MessageBatch objects."""
    created = http.post("/v1/messages/batches", json={"requests": batch_requests(2)}).json()
    schemas.validate("MessageBatch", created)
    batch_id = created["id"]
    schemas.validate("MessageBatch", http.get(f"/v1/messages/batches/{batch_id}").json())
    schemas.validate("MessageBatch", http.post(f"/v1/messages/batches/{batch_id}/cancel").json())
    emu.advance(1)
    schemas.validate("MessageBatch", http.get(f"/v1/messages/batches/{batch_id}").json())


def test_archived_batch_is_a_message_batch(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """An archived batch, with every timestamp set, is a valid MessageBatch."""
    created = http.post("/v1/messages/batches", json={"requests": batch_requests(2)}).json()
    http.post(f"/v1/messages/batches/{created['id']}/cancel")
    emu.advance(30 * 86400)
    batch = http.get(f"/v1/messages/batches/{created['id']}").json()
    assert all(batch[k] for k in ("archived_at", "ended_at", "cancel_initiated_at"))
    schemas.validate("MessageBatch", batch)


def test_list_is_a_list_response(http: httpx.Client, schemas: OpenAPISchemas) -> None:
    """list answers a valid ListResponse_MessageBatch_, empty or not."""
    schemas.validate("ListResponse_MessageBatch_", http.get("/v1/messages/batches").json())
    for i in range(3):
        http.post("/v1/messages/batches", json={"requests": batch_requests(1, f"l{i}")})
    page = http.get("/v1/messages/batches", params={"limit": 2}).json()
    schemas.validate("ListResponse_MessageBatch_", page)


def test_delete_is_a_delete_response(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """delete answers a valid DeleteMessageBatchResponse."""
    created = http.post("/v1/messages/batches", json={"requests": batch_requests(1)}).json()
    emu.advance(1)
    deleted = http.delete(f"/v1/messages/batches/{created['id']}").json()
    schemas.validate("DeleteMessageBatchResponse", deleted)


def test_every_result_line_is_an_individual_response(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """Each line (succeeded, errored, canceled, expired) is a MessageBatchIndividualResponse."""
    lines = results_lines(http, mixed_batch(http, emu))
    assert {line["result"]["type"] for line in lines} == {
        "succeeded",
        "errored",
        "canceled",
        "expired",
    }
    for line in lines:
        schemas.validate("MessageBatchIndividualResponse", line)
        if line["result"]["type"] == "succeeded":
            schemas.validate("Message", line["result"]["message"])


def test_beta_result_lines_are_beta_responses(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """In the beta form each line is a BetaMessageBatchIndividualResponse."""
    lines = results_lines(http, mixed_batch(http, emu, beta=True), beta="true")
    for line in lines:
        schemas.validate("BetaMessageBatchIndividualResponse", line)


@pytest.mark.parametrize(
    ("profile", "status"),
    [({"http_429_rate": 1.0}, 429), ({"http_500_rate": 1.0}, 500), ({"http_529_rate": 1.0}, 529)],
)
def test_injected_errors_are_error_responses(
    http: httpx.Client,
    emu: EmulatorProcess,
    schemas: OpenAPISchemas,
    profile: dict[str, float],
    status: int,
) -> None:
    """Injected 429, 500 and 529 bodies are valid ErrorResponse objects."""
    emu.set_profile(profile)
    response = http.get("/v1/messages/batches")
    assert response.status_code == status
    schemas.validate("ErrorResponse", response.json())


def test_api_errors_are_error_responses(
    emu: EmulatorProcess, http: httpx.Client, schemas: OpenAPISchemas
) -> None:
    """401, 400 and 404 bodies are valid ErrorResponse objects."""
    answers = [
        httpx.get(emu.url + "/v1/messages/batches", headers={"anthropic-version": "2023-06-01"}),
        http.post("/v1/messages/batches", content=b"{not json"),
        http.get("/v1/messages/batches/msgbatch_missing"),
        http.get("/v1/nowhere"),
    ]
    assert [a.status_code for a in answers] == [401, 400, 404, 404]
    for answer in answers:
        schemas.validate("ErrorResponse", answer.json())


def test_too_large_has_the_error_envelope(
    small_emulator: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """The 413 body is the ErrorResponse envelope with type request_too_large.

    The spec's error union lists no request_too_large member, so the envelope is checked
    with the union widened to that one type.
    """
    body = orjson.dumps({"requests": batch_requests(1, system="x" * 5000)})
    with httpx.Client(base_url=small_emulator.url) as client:
        response = client.post(
            "/v1/messages/batches", content=body, headers=api_headers(small_emulator.api_key)
        )
    assert response.status_code == 413
    schema = schemas.schema("ErrorResponse")
    schema["properties"]["error"] = {
        "type": "object",
        "required": ["type", "message"],
        "properties": {"type": {"const": "request_too_large"}, "message": {"type": "string"}},
    }
    Draft202012Validator(schema).validate(response.json())
