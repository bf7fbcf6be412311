"""Request headers as strict as the API's, and the headers every answer carries."""

from __future__ import annotations

from datetime import datetime

import anthropic
import httpx
import pytest
from anthropic._constants import ANTHROPIC_API_VERSION

from tests.emulator.conftest import api_headers
from tests.support.emulator import EmulatorProcess, OpenAPISchemas, batch_requests

BATCHES = "/v1/messages/batches"
SDK_VERSION = "2026-10-21"


def test_the_sdk_sends_a_version_the_emulator_accepts(sdk: anthropic.Anthropic) -> None:
    """The installed SDK sends anthropic-version 2026-10-21, and it is accepted."""
    assert ANTHROPIC_API_VERSION == SDK_VERSION
    assert sdk.messages.batches.list().data == []


@pytest.mark.parametrize("version", ["2023-06-01", "2023-01-01", SDK_VERSION])
def test_known_versions_are_accepted(emu: EmulatorProcess, version: str) -> None:
    """Each version the API knows is accepted."""
    headers = api_headers(emu.api_key) | {"anthropic-version": version}
    assert httpx.get(emu.url + BATCHES, headers=headers).status_code == 200


@pytest.mark.parametrize("version", ["2023-10-01", "2024-10-22", "latest"])
def test_unknown_version_is_refused_in_the_apis_words(
    emu: EmulatorProcess, schemas: OpenAPISchemas, version: str
) -> None:
    """A version the API does not know is 400: anthropic-version: "..." is not a valid version."""
    headers = api_headers(emu.api_key) | {"anthropic-version": version}
    response = httpx.get(emu.url + BATCHES, headers=headers)
    assert response.status_code == 400
    schemas.validate("ErrorResponse", response.json())
    message = response.json()["error"]["message"]
    assert message == f'anthropic-version: "{version}" is not a valid version'


def test_repeated_version_header_is_refused(emu: EmulatorProcess) -> None:
    """A version header sent twice is read as both values joined, and refused."""
    headers = [
        ("x-api-key", emu.api_key),
        ("anthropic-version", "2023-06-01"),
        ("anthropic-version", "2023-06-01"),
    ]
    response = httpx.get(emu.url + BATCHES, headers=headers)
    assert response.status_code == 400
    assert '"2023-06-01, 2023-06-01"' in response.json()["error"]["message"]


def test_unknown_beta_is_refused_in_the_apis_words(http: httpx.Client) -> None:
    """An unknown anthropic-beta value is 400 with the API's message naming it."""
    response = http.get(
        BATCHES,
        headers={"anthropic-beta": "prompt-caching-2024-07-31, interleaved-thinking-2025-04-14"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "Unexpected value(s) `interleaved-thinking-2025-04-14` for the `anthropic-beta`"
        " header. Please consult our documentation at docs.anthropic.com or try again without"
        " the header.",
    }


def test_empty_beta_is_refused(http: httpx.Client) -> None:
    """An empty anthropic-beta header is an unexpected value too, as the API answers."""
    response = http.get(BATCHES, headers={"anthropic-beta": ""})
    assert response.status_code == 400
    assert "Unexpected value(s) ``" in response.json()["error"]["message"]


def test_known_betas_are_accepted_through_the_sdk(sdk: anthropic.Anthropic) -> None:
    """The SDK's beta batches with extra betas work: every name is one the API knows."""
    batch = sdk.beta.messages.batches.create(
        requests=batch_requests(1),  # type: ignore[arg-type]
        betas=["context-1m-2025-08-07", "files-api-2025-04-14", "output-128k-2025-02-19"],
    )
    assert batch.processing_status == "in_progress"


def test_post_body_without_json_content_type_is_refused(http: httpx.Client) -> None:
    """A create whose body is not declared application/json is 400 invalid_request_error."""
    body = httpx.Request("POST", "/", json={"requests": batch_requests(1)}).content
    response = http.post(BATCHES, content=body, headers={"content-type": "text/plain"})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("content-type: ")
    ok = http.post(
        BATCHES, content=body, headers={"content-type": "application/json; charset=utf-8"}
    )
    assert ok.status_code == 200


def test_post_without_body_needs_no_content_type(http: httpx.Client) -> None:
    """cancel sends no body, so it needs no content-type."""
    batch_id = http.post(BATCHES, json={"requests": batch_requests(1)}).json()["id"]
    assert http.post(f"{BATCHES}/{batch_id}/cancel").status_code == 200


def test_answers_carry_organization_and_rate_limit_headers(
    http: httpx.Client, emu: EmulatorProcess
) -> None:
    """Authenticated answers, errors included, name the organization and the request limit."""
    for response in (http.get(BATCHES), http.get(f"{BATCHES}/msgbatch_none")):
        headers = response.headers
        assert len(headers["anthropic-organization-id"]) == 36
        assert int(headers["anthropic-ratelimit-requests-limit"]) > 0
        assert int(headers["anthropic-ratelimit-requests-remaining"]) > 0
        datetime.fromisoformat(headers["anthropic-ratelimit-requests-reset"])
    unauthenticated = httpx.get(emu.url + BATCHES, headers={"anthropic-version": "2023-06-01"})
    assert "anthropic-organization-id" not in unauthenticated.headers


def test_beta_form_with_its_header_still_works(http: httpx.Client) -> None:
    """The older ?beta=true form with anthropic-beta: message-batches-2024-09-24 creates."""
    response = http.post(
        BATCHES,
        params={"beta": "true"},
        headers={"anthropic-beta": "message-batches-2024-09-24"},
        json={"requests": batch_requests(1)},
    )
    assert response.status_code == 200
