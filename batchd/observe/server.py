"""The operations endpoints of `batchd run`: /metrics, /healthz (alive), /readyz (ready for work).

Served from a thread on `http.host:http.port` (port 0 picks a free one, logged). A port that is
taken is logged as an error and batchd runs on without the endpoints.
"""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from redis.backoff import NoBackoff
from redis.retry import Retry

from batchd.errors import BatchdError
from batchd.logs import get_logger
from batchd.observe import metrics
from batchd.observe.collector import BuildInfoCollector, RedisCollector
from batchd.observe.health import Liveness
from batchd.observe.ledger import LedgerCollector
from batchd.settings import Settings
from batchd.store import Keys, Store, connect

if TYPE_CHECKING:
    from batchd.daemon import Daemon

log = get_logger("batchd.observe")

#: Seconds a probe or scrape waits on Redis: a probe must answer well inside its own timeout.
REDIS_TIMEOUT = 2.0
#: Seconds a client may take to send its request before its connection is dropped.
REQUEST_TIMEOUT = 10.0


class OpsServer:
    """The three endpoints on one listening socket, each request in a thread of its own."""

    def __init__(
        self,
        settings: Settings,
        *,
        stop: threading.Event,
        liveness: Liveness,
        host: str | None = None,
        port: int | None = None,
    ) -> None:
        self.settings = settings
        self.stop = stop
        self.liveness = liveness
        self.host = settings.http.host if host is None else host
        self.port = settings.http.port if port is None else port
        self.redis = connect(
            settings.redis_url or "",
            socket_timeout=REDIS_TIMEOUT,
            socket_connect_timeout=REDIS_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a probe reports what it sees, it does not wait it out
        )
        self.registry = CollectorRegistry(auto_describe=False)
        metrics.declare(settings.accounts)
        self.registry.register(metrics.local_collector())
        self.registry.register(metrics.LiveCollector())
        self.store = Store(self.redis, Keys(settings.prefix))
        self.registry.register(RedisCollector(self.store, list(settings.accounts)))
        self.registry.register(LedgerCollector(self.store, settings))
        self.registry.register(BuildInfoCollector())
        ProcessCollector(registry=self.registry)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self._httpd is not None, "not started"
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> tuple[str, int]:
        """Bind and serve from a daemon thread; raises OSError when the address is unusable."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        server_class = type("_Server", (ThreadingHTTPServer,), {"address_family": family})
        httpd = server_class((self.host, self.port), _Handler, bind_and_activate=True)
        httpd.ops = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True
        )
        self._thread.start()
        return self.address

    def close(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(5)
        self.redis.close()

    # -- the checks ----------------------------------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Alive: every loop, thread and worker of the process (Redis is not asked)."""
        if self.stop.is_set():
            # Draining is healthy: a restart now would only cut the grace period short.
            return True, {"status": "stopping"}
        problems = self.liveness.problems()
        return not problems, {"status": "ok" if not problems else "failing", "problems": problems}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        """Ready: not shutting down, alive, and Redis answers."""
        if self.stop.is_set():
            return False, {"status": "stopping"}
        problems = list(self.liveness.problems())
        try:
            skew = self.store.clock_skew_ms()
        except BatchdError as exc:
            problems.append(f"redis unreachable: {exc}")
        else:
            bound = self.settings.run.max_clock_skew * 1000
            if abs(skew) > bound:
                problems.append(
                    f"this host's clock is {abs(skew) / 1000:.1f} s "
                    f"{'behind' if skew > 0 else 'ahead of'} Redis's (run.max_clock_skew "
                    f"{self.settings.run.max_clock_skew:g} s): fix its time sync (NTP)"
                )
        return not problems, {"status": "ready" if not problems else "not ready",
                              "problems": problems}  # fmt: skip

    def metrics_page(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type


class _Handler(BaseHTTPRequestHandler):
    server_version = "batchd"
    protocol_version = "HTTP/1.1"  # keep-alive for scrapers, so every answer has a length
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:
        ops: OpsServer = self.server.ops  # type: ignore[attr-defined]
        path = self.path.split("?", 1)[0]
        try:
            if path == "/metrics":
                body, ctype = ops.metrics_page(self.headers.get("Accept", ""))
                self._answer(200, body, ctype)
            elif path in ("/healthz", "/livez"):
                self._json(*ops.health())
            elif path == "/readyz":
                self._json(*ops.readiness())
            elif path == "/":
                self._answer(200, b"batchd: /metrics /healthz /readyz\n", "text/plain")
            else:
                self._answer(404, b"not found\n", "text/plain")
        except Exception:  # an endpoint failing must answer 500, never take the daemon down
            log.exception("operations endpoint failed", path=path)
            self._answer(500, b"internal error\n", "text/plain")

    def _json(self, ok: bool, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode() + b"\n"
        self._answer(200 if ok else 503, body, "application/json")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # scrapes and probes every few seconds would drown the log


# One `batchd run` per process: where its endpoints listen, for READY=1 and the tests.
_started = threading.Event()
_address: list[tuple[str, int]] = []


def wait_started(timeout: float) -> tuple[str, int] | None:
    """The endpoints' address once they listen (None: disabled, failed, or not yet)."""
    _started.wait(timeout)
    return _address[0] if _address else None


def run(daemon: Daemon, stop: threading.Event) -> None:
    """`batchd run`'s service entry: listen, and keep answering until the process exits.

    Returns once `stop` is set, so the daemon's shutdown does not wait on it; the server thread
    goes on answering (/readyz with 503) while the daemon drains, and ends with the process.
    """
    settings = daemon.settings
    server = OpsServer(settings, stop=stop, liveness=daemon.liveness)
    try:
        host, port = server.start()
    except OSError as exc:
        server.close()
        log.error(
            "operations endpoints cannot listen; batchd runs on without them",
            host=settings.http.host,
            port=settings.http.port,
            error=str(exc),
        )
        _started.set()
        return
    _address.append((host, port))
    _started.set()
    log.info("operations endpoints listening", host=host, port=port)
    stop.wait()
