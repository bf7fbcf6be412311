"""Limits: body size (413), per-token rate (429 + Retry-After), held connections, open
connections, and slow clients (headers that never end, bodies that never arrive)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from batchd.ingress.errors import IngressError
from batchd.ingress.limits import HeldSlots, RateLimiter
from tests.ingress.conftest import Ingress, params, start_ingress
from tests.ingress.test_routes import assert_error
from tests.support.daemon import wait_for
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer

# Each test its own token, so one test's bucket never limits another's.
TOKENS = {
    name: ["*"] for name in ("size", "chunked", "rate", "spare", "held", "held2", "held3", "slow")
}
MAX_CONNECTIONS = 4
IDLE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def limited(
    tmp_path_factory: pytest.TempPathFactory,
    module_redis: RedisServer,
    emulator_server: EmulatorProcess,
) -> Iterator[Ingress]:
    """The ingress alone, with every limit tiny."""
    ing = start_ingress(
        tmp_path_factory.mktemp("limited"),
        module_redis,
        emulator_server,
        TOKENS,
        BATCHD_PREFIX="limited",
        BATCHD_RUN__ROLES='["ingress"]',
        BATCHD_INGRESS__MAX_BODY_BYTES="2048",
        BATCHD_INGRESS__RATE_LIMIT="2",
        BATCHD_INGRESS__RATE_BURST="3",
        BATCHD_INGRESS__MAX_HELD="1",
        BATCHD_INGRESS__MAX_CONNECTIONS=str(MAX_CONNECTIONS),
        BATCHD_INGRESS__IDLE_TIMEOUT=str(IDLE_TIMEOUT),
        BATCHD_INGRESS__BODY_TIMEOUT="1",
        BATCHD_INGRESS__MAX_POLL_WAIT="30",
    )
    try:
        yield ing
    finally:
        ing.close()


# -- the pieces on their own -----------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_the_burst_then_refuses_with_the_wait() -> None:
    """burst requests pass at once; the next is refused, told when a token returns."""
    clock = Clock()
    limiter = RateLimiter(rate=4, burst=2, clock=clock)
    limiter.check("a")
    limiter.check("a")
    with pytest.raises(IngressError) as exc:
        limiter.check("a")
    assert exc.value.status == 429
    assert exc.value.headers == {"Retry-After": "1", "retry-after-ms": "250"}


def test_bucket_refills_at_the_rate_and_per_caller() -> None:
    """Tokens come back at `rate` a second; each caller has a bucket of its own."""
    clock = Clock()
    limiter = RateLimiter(rate=4, burst=1, clock=clock)
    limiter.check("a")
    limiter.check("b")
    clock.now += 0.25
    limiter.check("a")
    with pytest.raises(IngressError):
        limiter.check("a")


def test_rate_zero_turns_the_limit_off() -> None:
    """rate_limit = 0 never refuses."""
    limiter = RateLimiter(rate=0, burst=1, clock=Clock())
    for _ in range(1000):
        limiter.check("a")


def test_held_slots_refuse_past_the_limit_and_free_on_exit() -> None:
    """A slot past the limit raises 429; leaving a slot frees it, even on error."""
    slots = HeldSlots(1)
    with slots.hold():
        with pytest.raises(IngressError) as exc, slots.hold():
            pass
        assert exc.value.status == 429 and "Retry-After" in exc.value.headers
    with pytest.raises(RuntimeError), slots.hold():
        raise RuntimeError("boom")
    assert slots.held == 0


# -- against the daemon ----------------------------------------------------------------------------


def test_body_over_the_cap_is_413(limited: Ingress) -> None:
    """A body declared larger than max_body_bytes gets 413 request_too_large."""
    big = {"params": params(0, system="x" * 3000)}
    response = limited.http("size").post("/v1/requests", json=big)
    body = assert_error(response, 413, "request_too_large")
    assert "2048" in body["error"]["message"]


def test_chunked_body_over_the_cap_is_413(limited: Ingress) -> None:
    """A chunked body (no Content-Length) is cut off at the cap with 413."""

    def chunks() -> Iterator[bytes]:
        for _ in range(10):
            yield b" " * 500

    response = limited.http("chunked").post("/v1/requests", content=chunks())
    assert_error(response, 413, "request_too_large")


def test_rate_limit_answers_429_with_retry_after_then_lets_in_again(limited: Ingress) -> None:
    """Past rate_burst a token gets 429 with Retry-After; after that wait it is let in."""
    http = limited.http("rate")
    statuses = [http.post("/v1/requests", json={"params": params()}).status_code for _ in range(3)]
    assert statuses == [202, 202, 202]
    refused = http.post("/v1/requests", json={"params": params()})
    assert_error(refused, 429, "rate_limit_error")
    assert int(refused.headers["Retry-After"]) >= 1
    wait_ms = int(refused.headers["retry-after-ms"])
    assert 0 < wait_ms <= 500
    # Other tokens are not limited by this one's bucket.
    assert limited.http("spare").get("/v1/batches").status_code == 200
    time.sleep(wait_ms / 1000)  # the wait the server asked for
    assert http.post("/v1/requests", json={"params": params()}).status_code == 202


def test_held_connections_are_bounded(limited: Ingress) -> None:
    """With max_held long-polls in progress, another long-poll or drop-in call gets 429."""
    http = limited.http("held2")
    other = limited.http("held3")
    answer = other.post("/v1/requests", json={"params": params()})
    assert answer.status_code == 202, answer.text
    rid = answer.json()["id"]
    got: dict[str, Any] = {}
    thread = threading.Thread(
        target=lambda: got.update(
            state=limited.http("held").get(f"/v1/requests/{rid}", params={"wait": 20}).json()
        )
    )
    thread.start()
    try:
        limited.wait_held(rid)
        before = limited.counter("submitted")
        refused = http.get(f"/v1/requests/{rid}", params={"wait": 5})
        assert_error(refused, 429, "rate_limit_error")
        assert refused.headers["Retry-After"] == "1"
        drop_in = http.post("/v1/messages", json=params())
        assert_error(drop_in, 429, "rate_limit_error")
        assert limited.counter("submitted") == before  # the refused drop-in queued nothing
        assert other.get(f"/v1/requests/{rid}").status_code == 200  # no wait, no slot needed
    finally:
        other.delete(f"/v1/requests/{rid}")
        thread.join(10)
    assert got["state"]["status"] == "canceled"


def http_exchange(sock: socket.socket, request: bytes) -> bytes:
    """Send one request and read one whole answer (Content-Length framed)."""
    sock.sendall(request)
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def raw_request(ing: Ingress, token: str, body: bytes = b"") -> bytes:
    return (
        b"POST /v1/requests HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        b"Authorization: Bearer " + ing.tokens[token].encode() + b"\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


def connect(ing: Ingress) -> socket.socket:
    host, port = ing.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=10)


def served(ing: Ingress) -> bool:
    with connect(ing) as sock:
        sock.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n")
        return sock.recv(64).startswith(b"HTTP/1.1 200 ")


def wait_capacity(ing: Ingress) -> None:
    """Until a fresh connection is served: earlier tests' connections have been let go."""
    wait_for(lambda: served(ing), 5, "the ingress to serve a fresh connection")


def test_connections_past_the_cap_are_answered_503_and_closed(limited: Ingress) -> None:
    """With max_connections open, a further connection gets 503 at once; a freed slot serves."""
    wait_capacity(limited)
    open_ = [connect(limited) for _ in range(MAX_CONNECTIONS)]
    try:
        for sock in open_:  # each is now a served keep-alive connection
            answer = http_exchange(sock, b"GET /openapi.json HTTP/1.1\r\nHost: t\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 ")
        with connect(limited) as extra:
            answer = extra.recv(65536)
            assert answer.startswith(b"HTTP/1.1 503 ")
            assert b'"overloaded_error"' in answer
            assert extra.recv(65536) == b""  # closed by the server
        open_.pop().close()
        wait_capacity(limited)
    finally:
        for sock in open_:
            sock.close()


def test_headers_that_never_end_are_cut_off(limited: Ingress) -> None:
    """A client that never finishes its request head is disconnected after idle_timeout."""
    wait_capacity(limited)
    with connect(limited) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /v1/requests HTTP/1.1\r\nHost: test\r\nX-Slow: ")
        assert sock.recv(65536) == b""
        assert IDLE_TIMEOUT - 0.5 <= time.monotonic() - started < IDLE_TIMEOUT + 3


def test_body_that_never_arrives_is_408(limited: Ingress) -> None:
    """A body slower than body_timeout gets 408 timeout_error."""
    wait_capacity(limited)
    with connect(limited) as sock:
        head = raw_request(limited, "slow", b"x" * 100)[:-100]
        started = time.monotonic()
        answer = http_exchange(sock, head + b'{"params":')
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert b'"timeout_error"' in answer
    assert 0.9 <= time.monotonic() - started < 5
