"""/healthz and /readyz: alive means the loops live; ready means Redis answers, this host's clock
agrees with Redis's, and the daemon is not stopping."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import datetime

import httpx
import pytest

from batchd.observe.health import Liveness
from batchd.observe.server import OpsServer
from batchd.settings import Settings
from batchd.store import counters as counter_store
from tests.e2e.conftest import Stack
from tests.observe.conftest import ops_port, probe
from tests.support.daemon import DaemonProcess, wait_for
from tests.support.redis import RedisServer
from tests.webhooks.support import clock_offset_env

#: The daemon host's clock minus Redis's in the clock tests, seconds.
SKEW = -7200


@pytest.fixture
def ops(redis_server: RedisServer) -> Iterator[tuple[OpsServer, int]]:
    """The endpoints in this process on a free port, over a live Redis."""
    settings = Settings.load(redis_url=redis_server.url)
    server = OpsServer(settings, stop=threading.Event(), liveness=Liveness(), port=0)
    _, port = server.start()
    try:
        yield server, port
    finally:
        server.close()


def test_readyz_follows_redis(stack: Stack) -> None:
    """A daemon turns not ready when Redis stops and ready when it is back, alive throughout."""
    daemon = stack.daemon()
    port = ops_port(daemon)
    wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "ready")
    stack.redis.stop()
    status, body = probe(port, "/readyz")
    assert status == 503
    assert any("redis" in p for p in body["problems"])
    assert probe(port, "/healthz")[0] == 200
    stack.redis.start()
    wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "ready again")
    assert daemon.alive()


def test_daemon_is_alive_in_redis_before_it_answers_ready(stack: Stack) -> None:
    """By the time /readyz first answers 200, producers see the daemon alive (they warn that no
    daemon runs otherwise): it announces itself before its loops and endpoints start."""
    daemon = stack.daemon()
    port = ops_port(daemon)
    wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "ready", step=0.01)
    store = stack.client.store
    assert store.read(counter_store.alive(store.keys, store.now_ms()))


def test_ready_and_healthy_when_all_is_well(ops: tuple[OpsServer, int]) -> None:
    """Both probes answer 200 with a JSON body."""
    _, port = ops
    assert probe(port, "/healthz") == (200, {"status": "ok", "problems": []})
    assert probe(port, "/readyz") == (200, {"status": "ready", "problems": []})


def test_not_ready_while_stopping(ops: tuple[OpsServer, int]) -> None:
    """Once the stop is set, /readyz says 503 stopping while /healthz stays 200."""
    server, port = ops
    server.stop.set()
    assert probe(port, "/readyz") == (503, {"status": "stopping"})
    assert probe(port, "/healthz") == (200, {"status": "stopping"})


def test_dead_loop_fails_both_probes(ops: tuple[OpsServer, int]) -> None:
    """A loop thread that died makes /healthz (and so /readyz) answer 503, naming it."""
    server, port = ops
    thread = threading.Thread(target=lambda: None, name="aggregator")
    thread.start()
    thread.join()
    server.liveness.watch_thread("aggregator", thread)
    status, body = probe(port, "/healthz")
    assert status == 503
    assert body["problems"] == ["thread aggregator has died"]
    assert probe(port, "/readyz")[0] == 503


def test_unknown_path_is_404(ops: tuple[OpsServer, int]) -> None:
    """Anything but the three endpoints (and an index) is not found."""
    _, port = ops
    assert httpx.get(f"http://127.0.0.1:{port}/nope", timeout=10).status_code == 404


def test_metrics_negotiates_openmetrics(ops: tuple[OpsServer, int]) -> None:
    """A scraper asking for OpenMetrics gets it; a plain GET gets the Prometheus text format."""
    _, port = ops
    url = f"http://127.0.0.1:{port}/metrics"
    plain = httpx.get(url, timeout=10)
    assert plain.headers["content-type"].startswith("text/plain")
    assert "batchd_build_info{" in plain.text
    om = httpx.get(url, headers={"Accept": "application/openmetrics-text"}, timeout=10)
    assert om.headers["content-type"].startswith("application/openmetrics-text")
    assert om.text.rstrip().endswith("# EOF")


def daemon_clock_offset(stack: Stack, daemon: DaemonProcess) -> float:
    """The daemon's clock minus Redis's (s), from the timestamp of its latest log line."""
    stamps = [
        json.loads(line)["timestamp"]
        for line in daemon.log_text().splitlines()
        if line.startswith("{") and '"timestamp"' in line
    ]
    logged = datetime.fromisoformat(stamps[-1].replace("Z", "+00:00")).timestamp()
    return logged - stack.client.store.time_ms() / 1000


def test_readyz_fails_when_the_clock_is_off_redis(stack: Stack) -> None:
    """A daemon whose clock is two hours behind Redis's is alive but not ready, and the problem
    names run.max_clock_skew."""
    daemon = stack.daemon(start=False)
    daemon.start(**clock_offset_env(SKEW))
    port = ops_port(daemon)
    assert abs(daemon_clock_offset(stack, daemon) - SKEW) < 60
    status, body = probe(port, "/readyz")
    assert status == 503
    [problem] = body["problems"]
    assert "run.max_clock_skew" in problem and "behind Redis" in problem
    assert probe(port, "/healthz")[0] == 200


def test_readyz_allows_a_skew_within_the_bound(stack: Stack) -> None:
    """The same two hours are no problem with run.max_clock_skew set above them."""
    daemon = stack.daemon(start=False)
    daemon.start(BATCHD_RUN__MAX_CLOCK_SKEW="10800", **clock_offset_env(SKEW))
    port = ops_port(daemon)
    assert abs(daemon_clock_offset(stack, daemon) - SKEW) < 60
    wait_for(lambda: probe(port, "/readyz")[0] == 200, 30, "ready")
