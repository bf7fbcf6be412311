"""What the store tests share: the account, a small request, settings against the emulator."""

from __future__ import annotations

from typing import Any

from batchd import Settings
from tests.support.emulator import EmulatorProcess

ACCOUNT = "default"


def params(n: int) -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": f"question {n}"}],
    }


def emulated(redis_url: str, emulator: EmulatorProcess) -> Settings:
    """A daemon's settings against the emulator, cutting lanes only when asked."""
    return Settings.load(
        redis_url=redis_url,
        api={"base_url": emulator.url},
        accounts={ACCOUNT: {"api_key": emulator.api_key}},
        batch={"max_wait": 3600},
    )
