"""Authentication and workspaces: each API key sees only its own batches."""

from __future__ import annotations

import httpx

from tests.emulator.conftest import api_headers
from tests.support.emulator import EmulatorProcess, batch_requests


def test_missing_key_is_401(emu: EmulatorProcess) -> None:
    """No x-api-key is 401 authentication_error."""
    response = httpx.get(
        emu.url + "/v1/messages/batches", headers={"anthropic-version": "2023-06-01"}
    )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"


def test_unknown_key_is_401(emu: EmulatorProcess) -> None:
    """A key the emulator was not given is 401 authentication_error."""
    response = httpx.get(emu.url + "/v1/messages/batches", headers=api_headers("sk-ant-stranger"))
    assert response.status_code == 401


def test_bearer_token_is_accepted(emu: EmulatorProcess) -> None:
    """The key may come as `Authorization: Bearer`, as newer SDKs send it."""
    headers = {"authorization": f"Bearer {emu.api_key}", "anthropic-version": "2023-06-01"}
    assert httpx.get(emu.url + "/v1/messages/batches", headers=headers).status_code == 200


def test_missing_version_is_400(emu: EmulatorProcess) -> None:
    """No anthropic-version header is 400 invalid_request_error."""
    response = httpx.get(emu.url + "/v1/messages/batches", headers={"x-api-key": emu.api_key})
    assert response.status_code == 400
    assert "anthropic-version" in response.json()["error"]["message"]


def test_workspaces_list_only_their_own(emu: EmulatorProcess) -> None:
    """Each key lists only the batches it created."""
    key_a, key_b = emu.api_keys
    with (
        httpx.Client(base_url=emu.url, headers=api_headers(key_a)) as a,
        httpx.Client(base_url=emu.url, headers=api_headers(key_b)) as b,
    ):
        mine = a.post("/v1/messages/batches", json={"requests": batch_requests(1)}).json()["id"]
        theirs = b.post("/v1/messages/batches", json={"requests": batch_requests(1)}).json()["id"]
        assert [x["id"] for x in a.get("/v1/messages/batches").json()["data"]] == [mine]
        assert [x["id"] for x in b.get("/v1/messages/batches").json()["data"]] == [theirs]


def test_other_workspace_batch_is_404(emu: EmulatorProcess) -> None:
    """Another workspace's batch id is 404 for every operation."""
    key_a, key_b = emu.api_keys
    with (
        httpx.Client(base_url=emu.url, headers=api_headers(key_a)) as a,
        httpx.Client(base_url=emu.url, headers=api_headers(key_b)) as b,
    ):
        batch_id = a.post("/v1/messages/batches", json={"requests": batch_requests(1)}).json()["id"]
        emu.advance(1)
        path = f"/v1/messages/batches/{batch_id}"
        answers = [b.get(path), b.get(path + "/results"), b.post(path + "/cancel"), b.delete(path)]
        assert [r.status_code for r in answers] == [404, 404, 404, 404]
        assert a.get(path).status_code == 200
