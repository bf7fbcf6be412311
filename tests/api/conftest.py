"""Fixtures of the API client tests: the real emulator (clock stopped) and a client bound to it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchd.api import BatchesClient, RetryPolicy
from tests.support.emulator import EmulatorProcess, emulator, emulator_server

__all__ = ["emulator", "emulator_server"]

# Small waits so fault tests stay quick; retry-after from the emulator is capped to this.
EMULATOR_RETRY = RetryPolicy(
    max_retries=3, backoff_initial=0.01, backoff_max=0.05, retry_after_max=0.05
)


@pytest.fixture
def emu(emulator: EmulatorProcess) -> EmulatorProcess:
    """The session emulator, reset, its clock stopped: batches end only when a test advances it."""
    emulator.set_clock_scale(0)
    return emulator


@pytest.fixture
def api(emu: EmulatorProcess) -> Iterator[BatchesClient]:
    """A BatchesClient of the emulator's first workspace."""
    with BatchesClient(emu.api_key, base_url=emu.url, retry=EMULATOR_RETRY) as client:
        yield client
