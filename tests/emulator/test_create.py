"""Creating a batch: the body size limit, the envelope checks and the request count bounds."""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import orjson
import pytest

from tests.emulator.conftest import api_headers
from tests.support.emulator import EmulatorProcess, batch_requests

DEFAULT_LIMIT = 256_000_000


@pytest.fixture
def small(small_emulator: EmulatorProcess) -> Iterator[httpx.Client]:
    small_emulator.reset()
    headers = api_headers(small_emulator.api_key)
    with httpx.Client(base_url=small_emulator.url, headers=headers) as client:
        yield client


def raw_exchange(url: str, head: str, body: bytes = b"") -> tuple[bytes, bytes]:
    """Send a hand-made request; return the status line and body of the answer."""
    parts = urlsplit(url)
    assert parts.hostname is not None and parts.port is not None
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        received = b""
        while b"\r\n\r\n" not in received:
            received += sock.recv(65536)
        header, _, rest = received.partition(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: *(\d+)", header)[1])  # type: ignore[index]
        while len(rest) < length:
            rest += sock.recv(65536)
        return header.split(b"\r\n")[0], rest


def test_content_length_over_limit_is_413(small: httpx.Client) -> None:
    """A declared Content-Length over the limit is refused with 413 request_too_large."""
    body = orjson.dumps({"requests": batch_requests(1, system="x" * 5000)})
    response = small.post("/v1/messages/batches", content=body)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "request_too_large"


def test_chunked_body_over_limit_is_413(small: httpx.Client) -> None:
    """A chunked body is counted as it arrives and refused once past the limit."""

    def pieces() -> Iterator[bytes]:
        yield b'{"requests": ['
        for _ in range(20):
            yield b" " * 500

    response = small.post("/v1/messages/batches", content=pieces())
    assert response.status_code == 413


def test_body_at_the_limit_is_accepted(small: httpx.Client) -> None:
    """A body of exactly the limit is read and the batch created."""
    body = orjson.dumps({"requests": batch_requests(1)})
    body = body[:-1] + b" " * (4000 - len(body)) + b"}"
    assert len(body) == 4000
    response = small.post(
        "/v1/messages/batches", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200


def test_default_limit_is_256_000_000(emu: EmulatorProcess) -> None:
    """Without --max-body-bytes the limit is 256,000,000 bytes: one more is 413 at once."""
    assert emu.admin("GET", "/config")["max_body_bytes"] == DEFAULT_LIMIT
    host = urlsplit(emu.url).netloc
    head = (
        f"POST /v1/messages/batches HTTP/1.1\r\nHost: {host}\r\nx-api-key: {emu.api_key}\r\n"
        f"anthropic-version: 2023-06-01\r\ncontent-type: application/json\r\n"
        f"content-length: {DEFAULT_LIMIT + 1}\r\n\r\n"
    )
    status, body = raw_exchange(emu.url, head, b'{"requests": [')
    assert status.startswith(b"HTTP/1.1 413 ")
    assert orjson.loads(body)["error"]["type"] == "request_too_large"


def test_custom_id_pattern_error_names_the_index(http: httpx.Client) -> None:
    """A custom_id off the pattern is 400 with a message naming requests.17.custom_id."""
    requests = batch_requests(20)
    requests[17]["custom_id"] = "has/slash"
    response = http.post("/v1/messages/batches", json={"requests": requests})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("requests.17.custom_id: ")


def test_custom_id_too_long_is_refused(http: httpx.Client) -> None:
    """A 65-character custom_id is refused; 64 characters are fine."""
    requests = batch_requests(2)
    requests[0]["custom_id"] = "a" * 64
    requests[1]["custom_id"] = "b" * 65
    response = http.post("/v1/messages/batches", json={"requests": requests})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("requests.1.custom_id: ")


def test_duplicate_custom_id_names_the_index(http: httpx.Client) -> None:
    """The second use of a custom_id is 400 naming that request's index."""
    requests = batch_requests(5)
    requests[3]["custom_id"] = requests[1]["custom_id"]
    response = http.post("/v1/messages/batches", json={"requests": requests})
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert message.startswith("requests.3.custom_id: ") and "unique" in message


def test_malformed_json_is_400(http: httpx.Client) -> None:
    """A body that is not JSON is 400 invalid_request_error."""
    response = http.post("/v1/messages/batches", content=b'{"requests": [')
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_empty_requests_is_400(http: httpx.Client) -> None:
    """A batch must hold at least one request."""
    response = http.post("/v1/messages/batches", json={"requests": []})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("requests: ")


def test_unknown_top_level_field_is_400(http: httpx.Client) -> None:
    """The create body allows no field but `requests` (there is no metadata)."""
    response = http.post(
        "/v1/messages/batches", json={"requests": batch_requests(1), "metadata": {}}
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("metadata: ")


def test_params_must_be_an_object(http: httpx.Client) -> None:
    """params that are not an object are refused at once, naming the index."""
    requests = batch_requests(3)
    requests[2]["params"] = "hello"
    response = http.post("/v1/messages/batches", json={"requests": requests})
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("requests.2.params: ")


def test_too_many_requests_is_400(small: httpx.Client) -> None:
    """More requests than the per-batch maximum is 400; the maximum itself is fine."""
    assert small.post("/v1/messages/batches", json={"requests": batch_requests(5)}).is_success
    response = small.post("/v1/messages/batches", json={"requests": batch_requests(6)})
    assert response.status_code == 400
    assert "at most 5" in response.json()["error"]["message"]


def test_default_maximum_is_100_000_requests(emu: EmulatorProcess) -> None:
    """Without --max-batch-requests a batch holds up to 100,000 requests."""
    assert emu.admin("GET", "/config")["max_batch_requests"] == 100_000


def test_client_leaving_mid_body_is_not_an_error(emu: EmulatorProcess) -> None:
    """A client that hangs up mid-body is logged as a disconnect, not as a server error."""
    assert emu.directory is not None
    log = emu.directory / "emulator.log"
    parts = urlsplit(emu.url)
    head = (
        f"POST /v1/messages/batches HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"x-api-key: {emu.api_key}\r\nanthropic-version: 2023-06-01\r\n"
        "content-length: 1000\r\n\r\n"
    )
    before = log.read_text().count("client_disconnected")
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(head.encode() + b'{"requests": [')
    deadline = time.monotonic() + 10
    while log.read_text().count("client_disconnected") == before:
        assert time.monotonic() < deadline, "no disconnect logged"
        time.sleep(0.02)
    assert "Error handling request" not in log.read_text()
    assert httpx.get(emu.url + "/_emulator/health").status_code == 200
