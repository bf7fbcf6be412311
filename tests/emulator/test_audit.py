"""The audit endpoint: what a chaos checker that does not trust batchd reads from the emulator."""

from __future__ import annotations

import httpx

from tests.support.emulator import EmulatorProcess, batch_requests


def create(http: httpx.Client, custom_ids: list[str]) -> str:
    requests = batch_requests(len(custom_ids))
    for request, custom_id in zip(requests, custom_ids, strict=True):
        request["custom_id"] = custom_id
    response = http.post("/v1/messages/batches", json={"requests": requests})
    response.raise_for_status()
    return str(response.json()["id"])


def test_audit_counts_batches_and_requests(http: httpx.Client, emu: EmulatorProcess) -> None:
    """batches_created and requests count every create of the workspace."""
    create(http, ["a", "b"])
    create(http, ["c"])
    audit = emu.audit()[emu.api_key]
    assert (audit["batches_created"], audit["requests"]) == (2, 3)
    assert emu.audit()[emu.api_keys[1]]["batches_created"] == 0


def test_overlapping_batches_are_a_double_submit(http: httpx.Client, emu: EmulatorProcess) -> None:
    """A custom_id sent again while its first batch is still live is reported."""
    create(http, ["a", "b", "c"])
    create(http, ["c", "d"])
    audit = emu.audit()[emu.api_key]
    assert audit["double_submitted"] == ["c"]
    assert audit["custom_ids_in_several_batches"] == 1


def test_resubmit_after_the_end_is_not_a_double_submit(
    http: httpx.Client, emu: EmulatorProcess
) -> None:
    """A custom_id sent again after its batch ended is counted, not reported as double."""
    create(http, ["a", "b"])
    emu.advance(1)
    create(http, ["a"])
    audit = emu.audit()[emu.api_key]
    assert audit["double_submitted"] == []
    assert audit["custom_ids_in_several_batches"] == 1


def test_distinct_custom_ids_show_how_many_were_sent_again(
    http: httpx.Client, emu: EmulatorProcess
) -> None:
    """custom_ids counts each id once, so requests minus it is the number of re-sends."""
    create(http, ["a", "b"])
    emu.advance(1)
    create(http, ["a", "c"])
    audit = emu.audit()[emu.api_key]
    assert (audit["requests"], audit["custom_ids"]) == (4, 3)


def test_canceling_batch_is_still_live(http: httpx.Client, emu: EmulatorProcess) -> None:
    """A batch that is canceling but not ended still counts as live."""
    first = create(http, ["a"])
    http.post(f"/v1/messages/batches/{first}/cancel").raise_for_status()
    create(http, ["a"])
    assert emu.audit()[emu.api_key]["double_submitted"] == ["a"]


def test_billed_counts_only_succeeded(http: httpx.Client, emu: EmulatorProcess) -> None:
    """billed is the number of succeeded requests of ended batches, deleted ones included."""
    emu.set_profile({"result_api_error_rate": 0.5, "seed": 12})
    batch_id = create(http, [f"r{i}" for i in range(40)])
    assert emu.audit()[emu.api_key]["billed"] == 0
    emu.advance(1)
    succeeded = http.get(f"/v1/messages/batches/{batch_id}").json()["request_counts"]["succeeded"]
    assert 0 < succeeded < 40
    http.delete(f"/v1/messages/batches/{batch_id}").raise_for_status()
    assert emu.audit()[emu.api_key]["billed"] == succeeded


def test_billed_counts_batches_never_retrieved(http: httpx.Client, emu: EmulatorProcess) -> None:
    """A batch that ended unobserved is billed in the audit all the same."""
    create(http, ["a", "b", "c"])
    emu.advance(1)
    audit = emu.admin("GET", "/audit")
    assert audit["totals"]["billed"] == 3


def test_audit_needs_no_key(emu: EmulatorProcess) -> None:
    """Admin endpoints answer without an API key."""
    response = httpx.get(emu.url + "/_emulator/audit")
    assert response.status_code == 200
    assert len(response.json()["workspaces"]) == 2
