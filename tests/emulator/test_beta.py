"""The older beta form (`?beta=true`, anthropic-beta header) behaves as the GA endpoints do."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.emulator.conftest import api_headers
from tests.support.emulator import EmulatorProcess, OpenAPISchemas, batch_requests

BETA = {"beta": "true"}


@pytest.fixture
def beta(emu: EmulatorProcess) -> Iterator[httpx.Client]:
    """A client calling the way the Go and Ruby SDK files of the project's origin call."""
    headers = api_headers(emu.api_key) | {"anthropic-beta": "message-batches-2024-09-24"}
    with httpx.Client(base_url=emu.url, headers=headers, params=BETA) as client:
        yield client


def test_beta_lifecycle(beta: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas) -> None:
    """Create, retrieve, list, cancel and delete work in the beta form with Beta schemas."""
    created = beta.post("/v1/messages/batches", json={"requests": batch_requests(2)}).json()
    schemas.validate("BetaMessageBatch", created)
    batch_id = created["id"]
    schemas.validate("BetaMessageBatch", beta.get(f"/v1/messages/batches/{batch_id}").json())
    listed = beta.get("/v1/messages/batches").json()
    schemas.validate("BetaListResponse_MessageBatch_", listed)
    assert [b["id"] for b in listed["data"]] == [batch_id]
    canceled = beta.post(f"/v1/messages/batches/{batch_id}/cancel").json()
    assert canceled["processing_status"] == "canceling"
    emu.advance(1)
    deleted = beta.delete(f"/v1/messages/batches/{batch_id}").json()
    schemas.validate("BetaDeleteMessageBatchResponse", deleted)


def test_beta_results_with_binary_accept(
    beta: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """Results asked for with `Accept: application/binary` are the same JSONL."""
    created = beta.post("/v1/messages/batches", json={"requests": batch_requests(4)}).json()
    emu.advance(1)
    response = beta.get(
        f"/v1/messages/batches/{created['id']}/results",
        headers={"accept": "application/binary"},
    )
    assert response.status_code == 200
    lines = [orjson.loads(line) for line in response.content.splitlines()]
    assert len(lines) == 4
    for line in lines:
        schemas.validate("BetaMessageBatchIndividualResponse", line)


def test_beta_errors_are_beta_error_responses(beta: httpx.Client, schemas: OpenAPISchemas) -> None:
    """Errors in the beta form are valid BetaErrorResponse bodies."""
    response = beta.get("/v1/messages/batches/msgbatch_missing")
    assert response.status_code == 404
    schemas.validate("BetaErrorResponse", response.json())


def test_beta_and_ga_see_the_same_batches(beta: httpx.Client, http: httpx.Client) -> None:
    """A batch made in the beta form is visible to the GA endpoints and back."""
    batch_id = beta.post("/v1/messages/batches", json={"requests": batch_requests(1)}).json()["id"]
    assert http.get(f"/v1/messages/batches/{batch_id}").status_code == 200


def test_each_batch_keeps_the_betas_it_was_created_with(emu: EmulatorProcess) -> None:
    """The admin readout lists every batch with the anthropic-beta names of its create call."""
    headers = api_headers(emu.api_key)
    betas = "token-efficient-tools-2025-02-19,interleaved-thinking-2025-05-14"
    with httpx.Client(base_url=emu.url, headers=headers) as http:
        plain = http.post("/v1/messages/batches", json={"requests": batch_requests(1)}).json()
        beta = http.post(
            "/v1/messages/batches",
            json={"requests": batch_requests(2)},
            headers={"anthropic-beta": betas},
        ).json()
    assert emu.batches()[emu.api_key] == [
        {"id": plain["id"], "requests": 1, "betas": []},
        {"id": beta["id"], "requests": 2, "betas": betas.split(",")},
    ]
