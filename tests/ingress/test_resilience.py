"""The ingress through trouble: Redis going away and coming back, and the daemon stopping while
connections are held."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from batchd.ingress.server import FD_HEADROOM, serve, warn_open_files
from batchd.settings import Settings
from tests.ingress.conftest import Ingress, params, start_ingress
from tests.ingress.test_routes import assert_error
from tests.support.daemon import wait_for
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer


@pytest.fixture
def lone(
    tmp_path: Path, redis_server: RedisServer, emulator_server: EmulatorProcess
) -> Iterator[Ingress]:
    """An ingress-only daemon of this test's own, on this test's own Redis."""
    ing = start_ingress(
        tmp_path / "daemon",
        redis_server,
        emulator_server,
        {"full": ["*"]},
        BATCHD_RUN__ROLES='["ingress"]',
        BATCHD_INGRESS__DROP_IN_MAX_HOLD="60",
    )
    try:
        yield ing
    finally:
        ing.close()


def test_redis_down_is_503_and_the_ingress_recovers(
    lone: Ingress, redis_server: RedisServer
) -> None:
    """With Redis gone a submit gets 503 with Retry-After; once it is back, submits succeed."""
    http = lone.http()
    assert http.post("/v1/requests", json={"params": params()}).status_code == 202
    redis_server.kill()
    response = http.post("/v1/requests", json={"params": params()})
    assert_error(response, 503, "api_error")
    assert response.headers["Retry-After"] == "1"
    redis_server.start()

    def accepted() -> bool:
        return http.post("/v1/requests", json={"params": params()}).status_code == 202

    wait_for(accepted, 20, "a submit to succeed after Redis restarted", step=0.2)
    assert lone.daemon.alive()


def test_stopping_answers_held_connections_at_once(lone: Ingress) -> None:
    """On SIGTERM a long-poll answers its state now; a drop-in call gets a retryable 503 with
    its id (an SDK's retry, once batchd is back, re-attaches to it)."""
    rid = lone.http().post("/v1/requests", json={"params": params()}).json()["id"]
    answers: dict[str, Any] = {}

    def call(name: str, method: str, path: str, **kwargs: Any) -> None:
        with httpx.Client(base_url=lone.url, timeout=30) as http:
            headers = {"Authorization": f"Bearer {lone.tokens['full']}"}
            answers[name] = http.request(method, path, headers=headers, **kwargs)

    threads = [
        threading.Thread(target=call, args=("poll", "GET", f"/v1/requests/{rid}"),
                         kwargs={"params": {"wait": 30}}),
        threading.Thread(target=call, args=("drop_in", "POST", "/v1/messages"),
                         kwargs={"json": params()}),
    ]  # fmt: skip
    for t in threads:
        t.start()
    lone.wait_held(rid, count=2)
    started = time.monotonic()
    assert lone.daemon.stop() == 0
    for t in threads:
        t.join(10)
    assert time.monotonic() - started < 8
    assert answers["poll"].status_code == 200
    assert answers["poll"].json()["status"] == "pending"
    body = assert_error(answers["drop_in"], 503, "api_error")
    assert "shutting down" in body["error"]["message"]
    assert answers["drop_in"].headers["batchd-request-id"] in body["error"]["message"]
    assert answers["drop_in"].headers["Retry-After"] == "1"
    assert "x-should-retry" not in answers["drop_in"].headers


def test_a_port_in_use_is_logged_and_nothing_raises() -> None:
    """When the port is taken, serve logs ingress.listen_failed and returns."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(redis_url="redis://127.0.0.1:1/0",
                            ingress={"enabled": True, "port": port})  # fmt: skip
        with capture_logs() as logs:
            asyncio.run(asyncio.wait_for(serve(settings, asyncio.Event()), 10))
    [failed] = [e for e in logs if e["event"] == "ingress.listen_failed"]
    assert failed["port"] == port and failed["log_level"] == "error"


def test_max_connections_above_the_open_files_limit_is_logged() -> None:
    """A max_connections the process cannot open files for is named at start-up."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        pytest.skip("this process has no open-files limit")
    with capture_logs() as logs:
        warn_open_files(soft)
        warn_open_files(max(1, soft - FD_HEADROOM))
    assert [e["max_connections"] for e in logs if e["event"] == "ingress.open_files_limit"] == [
        soft
    ]
