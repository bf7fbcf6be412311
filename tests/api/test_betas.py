"""Betas and extra headers: one anthropic-beta spelling per set, on every call, checked early."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import orjson
import pytest

from batchd.api import BatchesClient, beta_header, normalize_betas
from batchd.api.headers import passed_on, request_headers
from tests.support.emulator import EmulatorProcess, batch_requests

from .helpers import Script, batch_json, json_response, jsonl_response, make_client
from .rawserver import RawServer, http_answer

BETAS = ["message-batches-2024-09-24", "context-1m-2025-08-07"]
HEADER = "context-1m-2025-08-07,message-batches-2024-09-24"


def test_a_set_of_betas_has_one_spelling() -> None:
    """Order, repeats and surrounding spaces do not change the header: equal sets, equal keys."""
    assert beta_header(BETAS) == HEADER
    assert beta_header([*reversed(BETAS), BETAS[0], f" {BETAS[1]} "]) == HEADER
    assert normalize_betas(HEADER) == tuple(sorted(BETAS))
    assert beta_header([]) is None and beta_header(None) is None


@pytest.mark.parametrize("bad", ["", "a b", "a\r\nx-api-key: stolen", "ß-beta", ",", "a;b"])
def test_a_beta_that_cannot_travel_is_refused(bad: str) -> None:
    """Empty names, spaces, CRLF and non-ASCII are a ValueError before any request."""
    with pytest.raises(ValueError):
        normalize_betas([bad])


@pytest.mark.parametrize(
    "extra",
    [
        {"x-api-key": "other"},
        {"Authorization": "Bearer x"},
        {"content-type": "text/plain"},
        {"content-length": "3"},
        {"bad name": "v"},
        {"batchd-custom-id": "line\nbreak"},
        {"batchd-custom-id": "caf\u00e9"},
    ],
)
def test_extra_headers_cannot_replace_the_clients_own_or_break_the_wire(
    extra: dict[str, str],
) -> None:
    """Auth, framing and content-type belong to the client; bad names and values are refused."""
    with pytest.raises(ValueError):
        request_headers(None, extra)


def test_betas_and_an_anthropic_beta_extra_header_do_not_mix() -> None:
    """Giving betas both ways is ambiguous, so it is refused."""
    with pytest.raises(ValueError):
        request_headers(["a"], {"anthropic-beta": "b"})
    assert request_headers(None, {"Anthropic-Beta": "b"}) == {"anthropic-beta": "b"}


def test_passed_on_keeps_api_headers_and_drops_framing() -> None:
    """A proxy gets request-id, retry hints and anthropic-*; never length or encoding."""
    headers = httpx.Headers(
        {
            "Content-Type": "application/json",
            "Content-Length": "10",
            "Content-Encoding": "gzip",
            "Transfer-Encoding": "chunked",
            "request-id": "req_1",
            "retry-after": "3",
            "x-should-retry": "false",
            "anthropic-organization-id": "org",
            "anthropic-ratelimit-requests-limit": "5",
            "server": "cloudflare",
        }
    )
    assert passed_on(headers) == {
        "content-type": "application/json",
        "request-id": "req_1",
        "retry-after": "3",
        "x-should-retry": "false",
        "anthropic-organization-id": "org",
        "anthropic-ratelimit-requests-limit": "5",
    }


Call = Callable[[BatchesClient], object]
CALLS: dict[str, tuple[Call, Callable[[], httpx.Response]]] = {
    "retrieve": (lambda c: c.retrieve("b", betas=BETAS), lambda: json_response(200, batch_json())),
    "list": (
        lambda c: c.list(betas=BETAS),
        lambda: json_response(200, {"data": [], "has_more": False}),
    ),
    "cancel": (
        lambda c: c.cancel("b", betas=BETAS),
        lambda: json_response(200, batch_json(status="canceling")),
    ),
    "delete": (
        lambda c: c.delete("b", betas=BETAS),
        lambda: json_response(200, {"id": "b", "type": "message_batch_deleted"}),
    ),
    "results": (
        lambda c: list(c.results("b", betas=BETAS)),
        lambda: jsonl_response([b""])[0],
    ),
    "create": (
        lambda c: c.create(b"{}", 2, betas=BETAS),
        lambda: json_response(200, batch_json()),
    ),
}


@pytest.mark.parametrize("operation", sorted(CALLS))
def test_every_batch_operation_sends_the_betas(operation: str) -> None:
    """create, retrieve, list, cancel, delete and results all carry the canonical header."""
    call, answer = CALLS[operation]
    script = Script(answer())
    with make_client(script) as client:
        call(client)
    assert script.requests[0].headers["anthropic-beta"] == HEADER


def test_no_betas_no_header() -> None:
    """Without betas no anthropic-beta header is sent at all."""
    script = Script(json_response(200, batch_json()))
    with make_client(script) as client:
        client.retrieve("b")
    assert "anthropic-beta" not in script.requests[0].headers


@pytest.fixture
def batch_server() -> Iterator[RawServer]:
    server = RawServer(http_answer(200, orjson.dumps(batch_json())))
    yield server
    server.close()


def test_create_with_betas_on_the_wire(batch_server: RawServer) -> None:
    """Over TCP the create carries anthropic-beta and content-type: application/json."""
    body = orjson.dumps({"requests": batch_requests(1)})
    with BatchesClient("sk-ant-raw", base_url=batch_server.url) as client:
        client.create(body, len(body), betas=BETAS)
    upload = batch_server.upload(0)
    assert upload.request_line == "POST /v1/messages/batches HTTP/1.1"
    assert upload.header("anthropic-beta") == HEADER
    assert upload.header("content-type") == "application/json"
    assert upload.header("anthropic-version") == "2023-06-01"
    assert bytes(upload.body) == body


def test_cancel_without_a_body_still_says_json(batch_server: RawServer) -> None:
    """A POST with an empty body is labelled application/json like every other call."""
    with BatchesClient("sk-ant-raw", base_url=batch_server.url) as client:
        client.cancel("msgbatch_01")
    upload = batch_server.upload(0)
    assert upload.request_line == "POST /v1/messages/batches/msgbatch_01/cancel HTTP/1.1"
    assert upload.header("content-type") == "application/json"


def test_the_emulator_takes_a_batch_created_with_betas(
    api: BatchesClient, emu: EmulatorProcess
) -> None:
    """A batch created with the batches beta is created and read back like any other."""
    body = orjson.dumps({"requests": batch_requests(3)})
    batch = api.create(body, len(body), betas=["message-batches-2024-09-24"])
    emu.advance(5)
    done = api.retrieve(batch.id, betas=["message-batches-2024-09-24"])
    assert done.ended and done.total == 3
    lines = list(api.results(done.id, betas=["message-batches-2024-09-24"]))
    assert sorted(line.custom_id for line in lines) == [f"req-{i}" for i in range(3)]
