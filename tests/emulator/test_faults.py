"""Faults on demand: HTTP errors, stalls, lost answers, broken results, bad outcomes, caps."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.emulator.conftest import api_headers, write_profile
from tests.support.emulator import EmulatorProcess, batch_requests


def create(http: httpx.Client, count: int, prefix: str = "req") -> dict[str, Any]:
    response = http.post("/v1/messages/batches", json={"requests": batch_requests(count, prefix)})
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def ended_batch(http: httpx.Client, emu: EmulatorProcess, count: int) -> str:
    batch_id = str(create(http, count)["id"])
    emu.advance(1)
    return batch_id


def statuses(http: httpx.Client, calls: int) -> list[int]:
    return [http.get("/v1/messages/batches").status_code for _ in range(calls)]


def test_429_carries_retry_after(http: httpx.Client, emu: EmulatorProcess) -> None:
    """An injected 429 is rate_limit_error with a retry-after in seconds."""
    emu.set_profile({"http_429_rate": 1.0, "retry_after": 3})
    response = http.get("/v1/messages/batches")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == "rate_limit_error"


def test_status_faults_hit_a_fraction_of_calls(http: httpx.Client, emu: EmulatorProcess) -> None:
    """With 500 and 529 rates set, some calls fail with each and the rest succeed."""
    emu.set_profile({"http_500_rate": 0.3, "http_529_rate": 0.3, "seed": 11})
    seen = statuses(http, 60)
    assert {200, 500, 529} == set(seen)


def test_seeded_faults_repeat(http: httpx.Client, emu: EmulatorProcess) -> None:
    """The same seed gives the same sequence of injected failures."""
    emu.set_profile({"http_500_rate": 0.5, "seed": 42})
    first = statuses(http, 30)
    emu.set_profile({"http_500_rate": 0.5, "seed": 42})
    assert statuses(http, 30) == first


def test_seeded_outcomes_repeat(http: httpx.Client, emu: EmulatorProcess) -> None:
    """After a reset with the same seed, a batch's per-request outcomes and order repeat."""

    def run() -> list[tuple[str, str]]:
        emu.reset()
        emu.set_clock_scale(0)
        emu.set_profile({"seed": 8, "result_api_error_rate": 0.5, "processing_time": [1, 9]})
        batch_id = ended_batch(http, emu, 30)
        emu.advance(10)
        body = http.get(f"/v1/messages/batches/{batch_id}/results").content
        return [(x["custom_id"], x["result"]["type"]) for x in map(orjson.loads, body.splitlines())]

    assert run() == run()


def test_slow_calls_stall(http: httpx.Client, emu: EmulatorProcess) -> None:
    """A slow call answers normally, but only after slow_seconds."""
    emu.set_profile({"slow_rate": 1.0, "slow_seconds": 0.3})
    started = time.monotonic()
    assert http.get("/v1/messages/batches").status_code == 200
    assert time.monotonic() - started >= 0.3


def test_faults_apply_to_chosen_operations(http: httpx.Client, emu: EmulatorProcess) -> None:
    """fault_operations limits injected failures to the named operations."""
    emu.set_profile({"http_500_rate": 1.0, "fault_operations": ["create"]})
    assert http.get("/v1/messages/batches").status_code == 200
    response = http.post("/v1/messages/batches", json={"requests": batch_requests(1)})
    assert response.status_code == 500


def test_lost_create_answer_still_creates(http: httpx.Client, emu: EmulatorProcess) -> None:
    """A create whose answer is lost (500) has made the batch all the same."""
    emu.set_profile({"create_lost_response_rate": 1.0, "create_lost_response_status": 500})
    response = http.post("/v1/messages/batches", json={"requests": batch_requests(2)})
    assert response.status_code == 500
    listed = http.get("/v1/messages/batches").json()["data"]
    assert len(listed) == 1 and listed[0]["request_counts"]["processing"] == 2


def test_lost_create_by_reset_still_creates(http: httpx.Client, emu: EmulatorProcess) -> None:
    """A create answered by a connection reset has made the batch all the same."""
    emu.set_profile({"create_lost_response_rate": 1.0})
    with pytest.raises(httpx.TransportError):
        http.post("/v1/messages/batches", json={"requests": batch_requests(2)})
    assert len(http.get("/v1/messages/batches").json()["data"]) == 1


@pytest.mark.parametrize("mode", ["close", "rst"])
def test_results_cut_mid_body(http: httpx.Client, emu: EmulatorProcess, mode: str) -> None:
    """A reset download breaks off inside a line after about the given part of the body."""
    batch_id = ended_batch(http, emu, 2000)
    full = http.get(f"/v1/messages/batches/{batch_id}/results").content
    emu.set_profile(
        {"results_reset_rate": 1.0, "results_reset_after": 0.5, "results_reset_mode": mode}
    )
    received = bytearray()
    with (
        pytest.raises(httpx.TransportError),
        http.stream("GET", f"/v1/messages/batches/{batch_id}/results") as response,
    ):
        for chunk in response.iter_raw():
            received += chunk
    assert len(received) < len(full)
    if mode == "close":
        # A FIN delivers everything sent: half the lines, then half a line.
        assert 0.45 < len(received) / len(full) < 0.55
        assert received.count(b"\n") == 1000 and not received.endswith(b"\n")


def test_crlf_line_endings(http: httpx.Client, emu: EmulatorProcess) -> None:
    """With results_crlf every line ends in CRLF."""
    batch_id = ended_batch(http, emu, 50)
    emu.set_profile({"results_crlf": True})
    body = http.get(f"/v1/messages/batches/{batch_id}/results").content
    assert body.count(b"\r\n") == 50 == body.count(b"\n")


def test_crlf_split_across_chunks(emu: EmulatorProcess, http: httpx.Client) -> None:
    """With results_split_crlf a chunk ends on CR and the next begins with LF."""
    batch_id = ended_batch(http, emu, 1500)
    emu.set_profile({"results_crlf": True, "results_split_crlf": True})
    with http.stream("GET", f"/v1/messages/batches/{batch_id}/results") as response:
        chunks = list(response.iter_raw())
    pairs = itertools.pairwise(chunks)
    assert any(a.endswith(b"\r") and b.startswith(b"\n") for a, b in pairs)
    assert b"".join(chunks).count(b"\r\n") == 1500


def test_long_result_lines(http: httpx.Client, emu: EmulatorProcess) -> None:
    """results_long_line_rate makes lines longer than 64 KiB that still parse."""
    emu.set_profile({"results_long_line_rate": 1.0, "seed": 2})
    batch_id = ended_batch(http, emu, 3)
    lines = http.get(f"/v1/messages/batches/{batch_id}/results").content.splitlines()
    assert all(len(line) > 64 * 1024 for line in lines)
    assert all(orjson.loads(line)["result"]["type"] == "succeeded" for line in lines)


def test_errored_rates(http: httpx.Client, emu: EmulatorProcess) -> None:
    """Per-request api_error and overloaded_error rates end requests errored with those types."""
    emu.set_profile({"result_api_error_rate": 0.3, "result_overloaded_rate": 0.3, "seed": 4})
    batch_id = ended_batch(http, emu, 100)
    counts = http.get(f"/v1/messages/batches/{batch_id}").json()["request_counts"]
    body = http.get(f"/v1/messages/batches/{batch_id}/results").content
    kinds = [
        r["error"]["error"]["type"]
        for r in (orjson.loads(line)["result"] for line in body.splitlines())
        if r["type"] == "errored"
    ]
    assert set(kinds) == {"api_error", "overloaded_error"}
    assert counts["errored"] == len(kinds)
    assert counts["succeeded"] == 100 - len(kinds)


def test_expired_rate(http: httpx.Client, emu: EmulatorProcess) -> None:
    """With result_expired_rate some requests expire, so the batch runs to expires_at."""
    emu.set_profile({"result_expired_rate": 0.5, "seed": 6})
    batch = create(http, 40)
    emu.advance(3600)
    assert http.get(f"/v1/messages/batches/{batch['id']}").json()["processing_status"] == (
        "in_progress"
    )
    emu.advance(86400)
    ended = http.get(f"/v1/messages/batches/{batch['id']}").json()
    assert ended["ended_at"] == ended["expires_at"]
    assert 0 < ended["request_counts"]["expired"] < 40


def test_processing_cap_refuses_creates(http: httpx.Client, emu: EmulatorProcess) -> None:
    """Past the cap on requests processing, create is 429 until batches end."""
    emu.set_profile({"max_processing_requests": 10, "retry_after": 5})
    create(http, 8, "a")
    refused = http.post("/v1/messages/batches", json={"requests": batch_requests(3, "b")})
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert refused.headers["retry-after"] == "5"
    emu.advance(1)
    create(http, 3, "b")


def test_requests_per_minute(http: httpx.Client, emu: EmulatorProcess) -> None:
    """Past requests_per_minute, calls are 429 with the time left in the minute."""
    emu.set_profile({"requests_per_minute": 3})
    assert statuses(http, 4) == [200, 200, 200, 429]
    other = httpx.get(emu.url + "/v1/messages/batches", headers=api_headers(emu.api_keys[1]))
    assert other.status_code == 200


def test_profile_admin_round_trip(emu: EmulatorProcess) -> None:
    """POST sets a profile over the startup one, PATCH changes the current one, GET reads it."""
    assert emu.set_profile({"http_500_rate": 0.25})["http_500_rate"] == 0.25
    patched = emu.patch_profile({"results_crlf": True})
    assert patched["http_500_rate"] == 0.25 and patched["results_crlf"] is True
    assert emu.set_profile({})["http_500_rate"] == 0.0
    assert emu.profile()["processing_time"] == [0.1, 0.1]


def test_bad_profile_is_refused(emu: EmulatorProcess) -> None:
    """Unknown keys and out-of-range rates are 400, and the profile stays as it was."""
    with httpx.Client(base_url=emu.url) as client:
        unknown = client.post("/_emulator/profile", json={"http_999_rate": 1})
        bad_rate = client.post("/_emulator/profile", json={"http_500_rate": 2})
    assert unknown.status_code == 400 and "http_999_rate" in unknown.json()["error"]["message"]
    assert bad_rate.status_code == 400
    assert emu.profile()["http_500_rate"] == 0.0


def test_profile_file_and_flags(tmp_path: Path) -> None:
    """A TOML profile file is loaded at start and flags override its keys."""
    profile = write_profile(
        tmp_path,
        "faults.toml",
        'http_500_rate = 1.0\nfault_operations = ["list"]\nprocessing_time = [2, 5]\n'
        "results_crlf = true\n",
    )
    args = ["--profile", str(profile), "--fail-500", "0.5", "--seed", "3", "--crlf"]
    with EmulatorProcess(tmp_path / "run", args=args) as server:
        loaded = server.profile()
        assert loaded["http_500_rate"] == 0.5
        assert loaded["fault_operations"] == ["list"]
        assert loaded["processing_time"] == [2.0, 5.0]
        assert loaded["seed"] == 3 and loaded["results_crlf"] is True


def test_json_profile_file(tmp_path: Path) -> None:
    """A JSON profile file works the same, and --processing-time takes MIN:MAX."""
    profile = write_profile(tmp_path, "faults.json", orjson.dumps({"http_429_rate": 0.2}).decode())
    args = ["--profile", str(profile), "--processing-time", "3:7"]
    with EmulatorProcess(tmp_path / "run", args=args) as server:
        loaded = server.profile()
        assert loaded["http_429_rate"] == 0.2 and loaded["processing_time"] == [3.0, 7.0]
