"""The `batchd emulator` command, its Python API, and a real scaled clock."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest

from batchd.emulator import DEFAULT_API_KEY, EmulatorConfig, FaultProfile, start_in_thread
from batchd.emulator.command import config_from_args, register
from batchd.errors import ConfigError
from tests.emulator.conftest import api_headers
from tests.support.emulator import EmulatorProcess, batch_requests


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    return parser.parse_args(["emulator", *argv])


def wait_for(check: Any, timeout: float = 10.0) -> Any:
    """Poll `check()` until it returns something truthy, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := check():
            return result
        time.sleep(0.02)
    raise AssertionError("condition not met before the deadline")


def test_flags_make_the_config() -> None:
    """Flags set keys, limits, clock and the fault profile."""
    config = config_from_args(
        parse(
            "--api-key", "k1", "--api-key", "k2", "--clock-scale", "3600",
            "--processing-time", "1:3", "--fail-529", "0.1", "--max-processing", "500",
            "--max-body-bytes", "1000", "--split-crlf",
        )
    )  # fmt: skip
    assert config.api_keys == ("k1", "k2")
    assert config.clock_scale == 3600 and config.max_body_bytes == 1000
    assert config.profile.processing_time == (1.0, 3.0)
    assert config.profile.http_529_rate == 0.1
    assert config.profile.max_processing_requests == 500
    assert config.profile.results_split_crlf is True


def test_default_key_when_none_given() -> None:
    """Without --api-key the emulator accepts the default key."""
    assert config_from_args(parse()).api_keys == (DEFAULT_API_KEY,)


@pytest.mark.parametrize(
    "argv",
    [("--fail-500", "1.5"), ("--processing-time", "5:1"), ("--reset-mode", "explode")],
)
def test_bad_flags_are_config_errors(argv: tuple[str, ...]) -> None:
    """Out-of-range or unknown flag values raise ConfigError (exit code 2)."""
    with pytest.raises(ConfigError):
        config_from_args(parse(*argv))


def test_profile_rates_must_fit_together() -> None:
    """HTTP fault rates may not add up to more than 1."""
    with pytest.raises(ConfigError):
        FaultProfile.from_mapping({"http_500_rate": 0.6, "http_529_rate": 0.6})


def test_startup_prints_url_and_keys(tmp_path: Path) -> None:
    """At startup the command prints its URL and every API key."""
    cmd = [sys.executable, "-m", "batchd", "emulator", "--port", "0"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as proc:
        assert proc.stdout is not None
        try:
            first = proc.stdout.readline().decode()
            second = proc.stdout.readline().decode()
        finally:
            proc.terminate()
            proc.wait(10)
    assert first.startswith("batchd emulator listening on http://127.0.0.1:")
    assert second.strip() == f"api key: {DEFAULT_API_KEY}"
    assert proc.returncode == 0


def test_start_in_thread_serves_the_sdk() -> None:
    """start_in_thread gives a handle whose url and key work with the SDK, then stops."""
    config = EmulatorConfig(port=0, profile=FaultProfile(processing_time=(0.0, 0.0)))
    with start_in_thread(config) as handle:
        client = anthropic.Anthropic(api_key=handle.api_key, base_url=handle.url, max_retries=0)
        with client:
            batch = client.messages.batches.create(requests=batch_requests(2))  # type: ignore[arg-type]
            ended = wait_for(
                lambda: (
                    (b := client.messages.batches.retrieve(batch.id)).processing_status == "ended"
                    and b
                )
            )
            assert ended.request_counts.succeeded == 2
    with pytest.raises(httpx.ConnectError):
        httpx.get(handle.url + "/_emulator/health")


def test_clock_scale_expires_and_archives(tmp_path: Path) -> None:
    """With --clock-scale a 24 h expiry and a 29-day archive pass in about a second."""
    args = ["--clock-scale", "3000000", "--processing-time", "200000"]
    with (
        EmulatorProcess(tmp_path, args=args) as server,
        httpx.Client(base_url=server.url, headers=api_headers(server.api_key)) as http,
    ):
        batch_id = http.post("/v1/messages/batches", json={"requests": batch_requests(3)}).json()[
            "id"
        ]

        def current() -> dict[str, Any]:
            result: dict[str, Any] = http.get(f"/v1/messages/batches/{batch_id}").json()
            return result

        ended = wait_for(lambda: (b := current())["processing_status"] == "ended" and b)
        assert ended["request_counts"]["expired"] == 3
        assert ended["ended_at"] == ended["expires_at"]
        archived = wait_for(lambda: (b := current())["archived_at"] and b)
        assert archived["archived_at"] > archived["ended_at"]
        assert http.get(f"/v1/messages/batches/{batch_id}/results").status_code == 404


def test_clock_admin(emu: EmulatorProcess) -> None:
    """/_emulator/clock reports the scale and advance moves emulated time forward."""
    before = emu.admin("GET", "/clock")
    assert before["scale"] == 0
    after = emu.admin("POST", "/advance", {"seconds": 3600})
    assert after["epoch"] - before["epoch"] == pytest.approx(3600)
    with httpx.Client(base_url=emu.url) as client:
        assert client.post("/_emulator/advance", json={"seconds": -1}).status_code == 400


def test_flags_of_the_api_knobs() -> None:
    """Flags set transient 404s, list lag, clock offset, tier, latency and the results path."""
    profile = config_from_args(
        parse(
            "--transient-404", "0.2", "--transient-404-seconds", "5",
            "--transient-404-phases", "create,results", "--list-lag", "3",
            "--clock-offset", "-90", "--tier", "2", "--realtime-latency", "0.1:0.5",
            "--opaque-results-url",
        )
    ).profile  # fmt: skip
    assert profile.transient_404_rate == 0.2 and profile.transient_404_seconds == 5
    assert profile.transient_404_phases == ("create", "results")
    assert (profile.list_lag, profile.clock_offset, profile.tier) == (3, -90, 2)
    assert profile.realtime_latency == (0.1, 0.5) and profile.opaque_results_url is True


@pytest.mark.parametrize(
    "argv",
    [("--tier", "5"), ("--transient-404-phases", "later"), ("--realtime-latency", "2:1")],
)
def test_bad_api_knobs_are_config_errors(argv: tuple[str, ...]) -> None:
    """An unknown tier or phase, or a reversed latency range, is a ConfigError."""
    with pytest.raises(ConfigError):
        config_from_args(parse(*argv))


def test_new_knobs_are_off_by_default() -> None:
    """By default no 404s, no lag, no offset, no tier, no latency, the documented path."""
    profile = FaultProfile()
    assert profile.transient_404_rate == 0 and profile.list_lag == 0
    assert profile.clock_offset == 0 and profile.tier is None
    assert profile.realtime_latency == (0.0, 0.0) and not profile.opaque_results_url
