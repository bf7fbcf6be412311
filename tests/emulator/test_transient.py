"""What the real API does on real time: transient 404s, a list that lags, a clock that differs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.emulator import (
    EmulatorProcess,
    OpenAPISchemas,
    batch_requests,
    result_lines,
    wait_until,
)

WINDOW = 0.3


def create(http: httpx.Client, count: int = 2, prefix: str = "req") -> dict[str, Any]:
    response = http.post("/v1/messages/batches", json={"requests": batch_requests(count, prefix)})
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def flaky(phases: list[str], **more: Any) -> dict[str, Any]:
    return {
        "transient_404_rate": 1.0,
        "transient_404_seconds": WINDOW,
        "transient_404_phases": phases,
    } | more


def status_of(http: httpx.Client, path: str) -> int | None:
    code = http.get(path).status_code
    return code if code != 404 else None


def test_retrieve_404s_right_after_create_then_recovers(
    sdk: anthropic.Anthropic, emu: EmulatorProcess
) -> None:
    """A flaky batch is 404 not_found_error to retrieve at first, then retrieves as usual."""
    emu.set_profile(flaky(["create"]))
    batch = sdk.messages.batches.create(requests=batch_requests(2))  # type: ignore[arg-type]
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.messages.batches.retrieve(batch.id)
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]

    def retrieved() -> anthropic.types.messages.MessageBatch | None:
        try:
            return sdk.messages.batches.retrieve(batch.id)
        except anthropic.NotFoundError:
            return None

    assert wait_until(retrieved).processing_status == "in_progress"
    emu.advance(1)
    assert sdk.messages.batches.retrieve(batch.id).request_counts.succeeded == 2
    assert emu.audit()[emu.api_key]["transient_404s"] >= 1


def test_list_shows_a_batch_retrieve_cannot_find(http: httpx.Client, emu: EmulatorProcess) -> None:
    """While retrieve answers 404, list still holds the batch: a client can cross-check."""
    emu.set_profile(flaky(["create"], transient_404_seconds=30))
    batch_id = create(http)["id"]
    assert http.get(f"/v1/messages/batches/{batch_id}").status_code == 404
    assert [b["id"] for b in http.get("/v1/messages/batches").json()["data"]] == [batch_id]


def test_midlife_404_opens_once_past_half_the_processing_time(
    http: httpx.Client, emu: EmulatorProcess
) -> None:
    """A mid-life window opens at the first retrieve past half the processing time, then shuts."""
    emu.set_profile(flaky(["midlife"], processing_time=10))
    batch_id = create(http)["id"]
    path = f"/v1/messages/batches/{batch_id}"
    emu.advance(4)
    assert http.get(path).status_code == 200
    emu.advance(2)
    assert http.get(path).status_code == 404
    assert wait_until(lambda: status_of(http, path)) == 200
    emu.advance(10)
    assert http.get(path).json()["processing_status"] == "ended"


def test_results_404_after_the_end_then_download(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """After the end, results answer 404 for a while, then the whole file downloads."""
    emu.set_profile(flaky(["results"]))
    batch_id = create(http, 3)["id"]
    emu.advance(1)
    path = f"/v1/messages/batches/{batch_id}/results"
    assert http.get(f"/v1/messages/batches/{batch_id}").status_code == 200
    refused = http.get(path)
    assert refused.status_code == 404
    schemas.validate("ErrorResponse", refused.json())
    wait_until(lambda: status_of(http, path))
    assert len(result_lines(http.get(path))) == 3


def test_transient_404s_are_off_by_default(http: httpx.Client, emu: EmulatorProcess) -> None:
    """Without the knob no batch ever answers a transient 404."""
    batch_id = create(http)["id"]
    assert http.get(f"/v1/messages/batches/{batch_id}").status_code == 200
    emu.advance(1)
    assert http.get(f"/v1/messages/batches/{batch_id}/results").status_code == 200
    assert emu.audit()[emu.api_key]["transient_404s"] == 0


def test_which_batches_are_flaky_repeats_with_the_seed(
    http: httpx.Client, emu: EmulatorProcess
) -> None:
    """With the same seed the same batches (by order of creation) are flaky."""

    def run() -> list[int]:
        emu.reset()
        emu.set_clock_scale(0)
        emu.set_profile(flaky(["create"], transient_404_rate=0.5, transient_404_seconds=30, seed=5))
        ids = [create(http, 1, f"s{i}")["id"] for i in range(12)]
        return [http.get(f"/v1/messages/batches/{i}").status_code for i in ids]

    first = run()
    assert set(first) == {200, 404}
    assert run() == first


def test_new_batch_lags_behind_in_list(http: httpx.Client, emu: EmulatorProcess) -> None:
    """With list_lag a new batch is missing from list at first, and retrievable meanwhile."""
    emu.set_profile({"list_lag": WINDOW})
    batch_id = create(http)["id"]
    assert http.get("/v1/messages/batches").json()["data"] == []
    assert http.get(f"/v1/messages/batches/{batch_id}").status_code == 200
    listed = wait_until(lambda: http.get("/v1/messages/batches").json()["data"])
    assert [b["id"] for b in listed] == [batch_id]


def test_paging_skips_lagging_batches_without_losing_others(
    http: httpx.Client, emu: EmulatorProcess
) -> None:
    """Pages count only listed batches; after_id and before_id page around a lagging one."""
    ids = [create(http, 1, f"p{i}")["id"] for i in range(5)]
    emu.patch_profile({"list_lag": 30})
    lagging = create(http, 1, "late")["id"]
    page = http.get("/v1/messages/batches", params={"limit": 2}).json()
    assert [b["id"] for b in page["data"]] == [ids[4], ids[3]] and page["has_more"]
    after = http.get("/v1/messages/batches", params={"limit": 10, "after_id": lagging}).json()
    assert [b["id"] for b in after["data"]] == ids[::-1] and not after["has_more"]
    before = http.get("/v1/messages/batches", params={"limit": 2, "before_id": ids[1]}).json()
    assert [b["id"] for b in before["data"]] == [ids[3], ids[2]] and before["has_more"]
    newest = http.get("/v1/messages/batches", params={"limit": 1, "before_id": ids[4]}).json()
    assert newest["data"] == [] and not newest["has_more"]


@pytest.mark.parametrize("offset", [3600.0, -7200.0])
def test_clock_offset_shifts_every_reported_time(
    http: httpx.Client, emu: EmulatorProcess, offset: float
) -> None:
    """created_at, expires_at, ended_at and cancel times are off the host clock by the offset."""
    before = emu.admin("GET", "/clock")["epoch"]
    emu.set_profile({"clock_offset": offset})
    batch = create(http)
    http.post(f"/v1/messages/batches/{batch['id']}/cancel").raise_for_status()
    emu.advance(1)
    ended = http.get(f"/v1/messages/batches/{batch['id']}").json()
    created = datetime.fromisoformat(ended["created_at"]).timestamp()
    assert abs(created - (before + offset)) < 1e-3
    for key in ("expires_at", "ended_at", "cancel_initiated_at"):
        moment = datetime.fromisoformat(ended[key])
        assert moment >= datetime.fromisoformat(ended["created_at"])
    assert datetime.fromisoformat(ended["expires_at"]) - datetime.fromisoformat(
        ended["created_at"]
    ) == timedelta(hours=24)
    assert emu.admin("GET", "/clock")["offset"] == offset
