"""Fixtures of the SDK tests: `batchd run` with the ingress, driven by the official Anthropic SDKs
(Python here, TypeScript through `node`), and the emulator's audit to count what was billed.

`drop_in` is one daemon per module: every role, batchd's own retries at 2 attempts, expired
results not retried, drop-in lanes cut after 1 s (so calls sent together share a batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from tests.ingress.conftest import (
    TOKENS,
    Ingress,
    _close_clients,
    module_redis,
    start_ingress,
)
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer

# The ingress tests' fixtures, here too (`_close_clients` closes what `Ingress.http` opened).
__all__ = ["_close_clients", "module_redis"]

#: A model the SDKs do not warn about (warnings are errors in this suite).
MODEL = "claude-haiku-4-5"
#: batchd's own attempts at a request before it ends dead (BATCHD_RETRY__MAX_ATTEMPTS).
MAX_ATTEMPTS = 2
#: Emulator seconds after which a batch has expired (24 h, and a minute).
EXPIRY = 86_400 + 60
#: A beta both batchd (api.known_betas) and the emulator know.
BETA = "token-efficient-tools-2025-02-19"
#: A beta name nobody knows.
UNKNOWN_BETA = "no-such-beta-2099-01-01"


def params(prompt: str = "Say hello") -> dict[str, Any]:
    """A Messages request body with this prompt."""
    return {"model": MODEL, "max_tokens": 64, "messages": [{"role": "user", "content": prompt}]}


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDKs read ANTHROPIC_* from the environment; only what a test passes counts."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def drop_in(
    tmp_path_factory: pytest.TempPathFactory,
    module_redis: RedisServer,
    emulator_server: EmulatorProcess,
) -> Iterator[Ingress]:
    """Every role; 2 attempts per request, expired results final, drop-in lanes cut after 1 s."""
    emulator_server.reset()
    ing = start_ingress(
        tmp_path_factory.mktemp("sdk"),
        module_redis,
        emulator_server,
        TOKENS,
        BATCHD_RETRY__MAX_ATTEMPTS=str(MAX_ATTEMPTS),
        BATCHD_RETRY__RETRY_EXPIRED="false",
        BATCHD_INGRESS__DROP_IN_MAX_WAIT="1",
        BATCHD_BATCH__MAX_WAIT="1",
    )
    try:
        yield ing
    finally:
        ing.close()


@pytest.fixture
def emulator_profile(drop_in: Ingress) -> Iterator[Callable[[dict[str, Any]], Any]]:
    """Change the emulator's fault profile for one test; the startup profile afterwards."""
    yield drop_in.emulator.patch_profile
    drop_in.emulator.set_profile({})


@dataclass
class Audit:
    """What the emulator's audit of the default account's workspace counted since `take`."""

    ing: Ingress
    start: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def take(cls, ing: Ingress) -> Audit:
        return cls(ing, cls._now(ing))

    @staticmethod
    def _now(ing: Ingress) -> dict[str, Any]:
        return ing.emulator.audit()[ing.emulator.api_key]

    def since(self) -> dict[str, Any]:
        """Batch requests sent, billed and batches created since `take`; double submissions."""
        now = self._now(self.ing)
        out: dict[str, Any] = {
            k: now[k] - self.start[k] for k in ("requests", "billed", "batches_created")
        }
        out["double_submitted"] = now["double_submitted"]
        return out


def batch_of(ing: Ingress, rid: str) -> str:
    """The API's id of the batch that ran batchd's request `rid`."""
    state = ing.http().get(f"/v1/requests/{rid}").json()
    batch_id: str = state["batch_id"]
    assert batch_id, state
    return batch_id


def betas_of_batches(ing: Ingress) -> dict[str, list[str]]:
    """The anthropic-beta names each batch of the default workspace was created with."""
    return {b["id"]: b["betas"] for b in ing.emulator.batches()[ing.emulator.api_key]}


def api_answer(ing: Ingress, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """What the API (the emulator, with the account's key) answers to this call itself."""
    headers = {"x-api-key": ing.emulator.api_key, "anthropic-version": "2023-06-01"}
    headers |= kwargs.pop("headers", {})
    with httpx.Client(base_url=ing.emulator.url, headers=headers, timeout=30) as http:
        return http.request(method, path, **kwargs)
