"""Fixtures of the ingress tests: `batchd run` with the ingress on a free port, real Redis and the
session emulator; one daemon per configuration, shared by a module's tests.

- `full`: every role, tokens, two accounts; requests run through whole batch cycles.
- `held`: only the ingress role under its own key prefix, so requests stay pending; short holds.
- `limited`: only the ingress role, tiny limits (body, rate, connections, timeouts).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from batchd.ingress.auth import new_token, token_sha256
from batchd.store import Keys, Store, request_id
from batchd.store import counters as counter_store
from tests.support.daemon import DaemonProcess, daemon_env, wait_for
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer, free_port

PARAMS: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Say hello"}],
}


#: The accounts every ingress of these tests serves.
ACCOUNTS = ("default", "other")


def params(i: int = 0, **extra: Any) -> dict[str, Any]:
    return {**PARAMS, "messages": [{"role": "user", "content": f"Say hello #{i}"}], **extra}


# httpx clients made by `Ingress.http` during one test; closed after it, so no test's keep-alive
# connections count against another's connection limits.
_CLIENTS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    try:
        yield
    finally:
        while _CLIENTS:
            _CLIENTS.pop().close()


@dataclass
class Ingress:
    """One daemon serving the ingress, its Redis, and the producer tokens it knows."""

    url: str
    daemon: DaemonProcess
    redis_url: str
    prefix: str
    tokens: dict[str, str]  # name -> token
    emulator: EmulatorProcess

    def http(self, token: str | None = "full", **kwargs: Any) -> httpx.Client:
        """An httpx client on the ingress, authenticated with the named token (None: none)."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {self.tokens[token]}"
        client = httpx.Client(base_url=self.url, headers=headers, timeout=30.0, **kwargs)
        _CLIENTS.append(client)
        return client

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis_url)

    def counter(self, name: str) -> int:
        """A counter of this daemon, added up over its accounts (they are kept per account)."""
        client = self.redis()
        try:
            store = Store(client, Keys(self.prefix))
            per_account = store.read(counter_store.read(store.keys, ACCOUNTS))
        finally:
            client.close()
        return counter_store.total(per_account).get(name, 0)

    def waited(self) -> set[str]:
        """Ids of the requests some held call has started waiting for (their waiter marks, which
        outlive the wait by up to a minute)."""
        keys = Keys(self.prefix)
        client = self.redis()
        try:
            found = client.scan_iter(match=keys.waiter("*", "*"), count=1000)
            marks = {k.decode() for k in found}
        finally:
            client.close()
        return {
            request_id(account, token)
            for account in ACCOUNTS
            for token in _tokens(marks, keys.waiter(account, ""))
        }

    def wait_held(self, *rids: str, count: int = 0) -> None:
        """Until a held call waits for each of `rids`, and for at least `count` requests."""
        wanted = set(rids)

        def held() -> bool:
            now = self.waited()
            return wanted <= now and len(now) >= count

        wait_for(held, 10, f"held calls waiting for {sorted(wanted)} (at least {count})")

    def close(self) -> None:
        self.daemon.kill()


def _tokens(keys: set[str], prefix: str) -> list[str]:
    return [k[len(prefix) :] for k in keys if k.startswith(prefix)]


def token_env(tokens: dict[str, list[str]]) -> tuple[dict[str, str], str]:
    """Fresh tokens for {name: accounts}: the tokens, and the settings value holding digests."""
    made = {name: new_token() for name in tokens}
    table = [
        {"name": name, "sha256": token_sha256(made[name]), "accounts": accounts}
        for name, accounts in tokens.items()
    ]
    return made, json.dumps(table)


def start_ingress(
    directory: Path,
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    tokens: dict[str, list[str]] | None,
    **env: str,
) -> Ingress:
    """`batchd run` with the ingress on a free port; returns once it answers."""
    port = free_port()
    extra = {
        "BATCHD_INGRESS__ENABLED": "true",
        "BATCHD_INGRESS__PORT": str(port),
        "BATCHD_ACCOUNTS__OTHER__API_KEY": emulator.api_keys[1],
        **env,
    }
    made: dict[str, str] = {}
    if tokens:
        made, table = token_env(tokens)
        extra["BATCHD_INGRESS__TOKENS"] = table
    daemon = DaemonProcess(
        directory, daemon_env(redis_server.url, emulator.url, emulator.api_key, extra)
    )
    daemon.start()
    url = f"http://127.0.0.1:{port}"
    ingress = Ingress(url, daemon, redis_server.url, env.get("BATCHD_PREFIX", "batchd"), made,
                      emulator)  # fmt: skip

    def ready() -> bool:
        if not daemon.alive():
            raise AssertionError(f"batchd run exited:\n{daemon.log_text()[-3000:]}")
        try:
            return httpx.get(f"{url}/openapi.json", timeout=1.0).status_code == 200
        except httpx.TransportError:
            return False

    wait_for(ready, 30, "the ingress to answer", step=0.05)
    return ingress


TOKENS = {"full": ["*"], "other": ["other"], "spare": ["*"]}


@pytest.fixture(scope="module")
def module_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), appendfsync="everysec")
    server.start()
    try:
        yield server
    finally:
        server.kill()


@pytest.fixture(scope="module")
def full(
    tmp_path_factory: pytest.TempPathFactory,
    module_redis: RedisServer,
    emulator_server: EmulatorProcess,
) -> Iterator[Ingress]:
    """Every role, batches cut within 0.3 s: requests end through real batch cycles."""
    emulator_server.reset()
    ing = start_ingress(tmp_path_factory.mktemp("full"), module_redis, emulator_server, TOKENS,
                        BATCHD_RETRY__MAX_ATTEMPTS="1")  # fmt: skip
    try:
        yield ing
    finally:
        ing.close()


@pytest.fixture(scope="module")
def held(
    tmp_path_factory: pytest.TempPathFactory,
    module_redis: RedisServer,
    emulator_server: EmulatorProcess,
) -> Iterator[Ingress]:
    """The ingress role alone under its own prefix: nothing is ever batched, calls are held."""
    ing = start_ingress(
        tmp_path_factory.mktemp("held"),
        module_redis,
        emulator_server,
        TOKENS,
        BATCHD_PREFIX="held",
        BATCHD_RUN__ROLES='["ingress"]',
        BATCHD_INGRESS__DROP_IN_MAX_HOLD="1",
        BATCHD_INGRESS__MAX_POLL_WAIT="2",
        BATCHD_INGRESS__MAX_HELD="2",
        BATCHD_INGRESS__MAX_BULK_ITEMS="5",
        BATCHD_BATCH__MAX_BYTES="4096",
    )
    try:
        yield ing
    finally:
        ing.close()
