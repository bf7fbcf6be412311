"""Fixtures of the emulator tests: a frozen-clock emulator, HTTP and SDK clients, the schemas."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import pytest

from tests.support.emulator import (
    EmulatorProcess,
    OpenAPISchemas,
    emulator,
    emulator_server,
)

__all__ = ["emulator", "emulator_server"]


@pytest.fixture
def emu(emulator: EmulatorProcess) -> EmulatorProcess:
    """The session emulator, reset, with its clock stopped: only `advance` moves time."""
    emulator.set_clock_scale(0)
    return emulator


@pytest.fixture(scope="session")
def schemas() -> OpenAPISchemas:
    return OpenAPISchemas()


def api_headers(key: str) -> dict[str, str]:
    return {"x-api-key": key, "anthropic-version": "2023-06-01"}


@pytest.fixture
def http(emu: EmulatorProcess) -> Iterator[httpx.Client]:
    """A plain HTTP client of the first workspace."""
    with httpx.Client(base_url=emu.url, headers=api_headers(emu.api_key), timeout=30) as client:
        yield client


@pytest.fixture
def sdk(emu: EmulatorProcess) -> Iterator[anthropic.Anthropic]:
    """The official SDK pointed at the emulator, without retries so every error surfaces."""
    client = anthropic.Anthropic(api_key=emu.api_key, base_url=emu.url, max_retries=0)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="module")
def small_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorProcess]:
    """An emulator with tiny limits: 4,000-byte bodies and 5 requests per batch."""
    server = EmulatorProcess(
        tmp_path_factory.mktemp("small-emulator"),
        args=["--max-body-bytes", "4000", "--max-batch-requests", "5", "--clock-scale", "0"],
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


def write_profile(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text)
    return path
