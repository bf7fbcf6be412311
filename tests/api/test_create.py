"""create(): the body is streamed lazily with an exact Content-Length, and aborts cleanly."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import httpx
import orjson
import pytest

from batchd import errors
from batchd.api import BatchesClient, RetryPolicy

from .helpers import API_KEY, Script, batch_json, error_json, json_response, make_client
from .rawserver import RawServer, Upload

CHUNKS = [
    b'{"requests":[',
    b'{"custom_id":"a","params":{}}',
    b",",
    b'{"custom_id":"b","params":{}}',
    b"]}",
]
BODY = b"".join(CHUNKS)


class LazyTransport(httpx.BaseTransport):
    """Reads the request body chunk by chunk, logging each read next to the generator's yields."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.requests: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        self.events.append(f"sent headers, length {request.headers['content-length']}")
        assert isinstance(request.stream, httpx.SyncByteStream)
        for chunk in request.stream:
            self.events.append(f"received {len(chunk)}")
        return json_response(200, batch_json())


def logged(events: list[str]) -> Iterator[bytes]:
    for chunk in CHUNKS:
        events.append(f"yield {len(chunk)}")
        yield chunk


def test_body_is_consumed_lazily_chunk_by_chunk() -> None:
    """Headers go first; then each chunk is sent as soon as it is yielded, never joined."""
    events: list[str] = []
    transport = LazyTransport(events)
    with BatchesClient(API_KEY, base_url="https://api.test", transport=transport) as client:
        batch = client.create(logged(events), len(BODY))
    assert batch.id == "msgbatch_01"
    expected = [f"sent headers, length {len(BODY)}"]
    for chunk in CHUNKS:
        expected += [f"yield {len(chunk)}", f"received {len(chunk)}"]
    assert events == expected
    request = transport.requests[0]
    assert request.method == "POST"
    assert request.url.path == "/v1/messages/batches"
    assert "transfer-encoding" not in request.headers
    assert request.headers["content-type"] == "application/json"


def test_nothing_is_read_before_the_request_is_sent() -> None:
    """Creating the client call does not pre-read the iterator."""
    events: list[str] = []
    with BatchesClient(API_KEY, base_url="https://api.test", transport=LazyTransport(events)) as c:
        c.create(logged(events), len(BODY))
    assert events[0].startswith("sent headers")


@pytest.mark.parametrize("declared", [len(BODY) - 1, len(BODY) + 1, 0])
def test_wrong_total_raises_body_length_error(declared: int) -> None:
    """A body longer or shorter than content_length raises BodyLengthError, no batch made."""
    script = Script(json_response(200, batch_json()))
    with make_client(script) as client, pytest.raises(errors.BodyLengthError) as info:
        client.create(iter(CHUNKS), declared)
    assert info.value.expected == declared
    assert script.requests == []


def test_iterator_exception_propagates_as_itself() -> None:
    """An exception from the body generator comes out unchanged, not wrapped."""
    boom = RuntimeError("submission aborted")

    def failing() -> Iterator[bytes]:
        yield CHUNKS[0]
        raise boom

    client = make_client(Script(json_response(200, batch_json())))
    with client, pytest.raises(RuntimeError) as info:
        client.create(failing(), len(BODY))
    assert info.value is boom


def test_factory_body_is_retried_with_a_fresh_iterator() -> None:
    """With a factory, a 529 is retried and the body is produced again, whole."""
    bodies: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(request.content)
        if len(bodies) == 1:
            return json_response(529, error_json("overloaded_error", "busy"))
        return json_response(200, batch_json())

    with make_client(handler) as client:
        client.create(lambda: iter(CHUNKS), len(BODY))
    assert bodies == [BODY, BODY]


def test_plain_iterator_is_never_retried() -> None:
    """A one-shot iterator cannot be sent twice: the first failure is raised."""
    script = Script(
        json_response(500, error_json("api_error", "x")), json_response(200, batch_json())
    )
    with make_client(script) as client, pytest.raises(errors.InternalServerError):
        client.create(iter(CHUNKS), len(BODY))
    assert len(script.requests) == 1


def test_retries_false_makes_one_attempt_even_with_a_factory() -> None:
    """retries=False: one attempt; the caller owns the exactly-once decision."""
    script = Script(httpx.ReadTimeout("no answer"), json_response(200, batch_json()))
    with make_client(script) as client, pytest.raises(errors.APITimeoutError):
        client.create(lambda: iter(CHUNKS), len(BODY), retries=False)
    assert len(script.requests) == 1


def test_bytes_and_lists_are_accepted_and_retryable() -> None:
    """A bytes body or a list of chunks can be sent again, so they are retried."""
    script = Script(
        json_response(503, b""),
        json_response(200, batch_json()),
        json_response(503, b""),
        json_response(200, batch_json()),
    )
    with make_client(script) as client:
        client.create(BODY, len(BODY))
        client.create(list(CHUNKS), len(BODY))
    assert [r.content for r in script.requests] == [BODY] * 4


def test_str_chunks_are_refused() -> None:
    """Text chunks are a caller bug: TypeError, not a half-encoded upload."""
    with make_client(Script()) as client, pytest.raises(TypeError):
        client.create(iter(["{}"]), 2)  # type: ignore[arg-type]


# -- over a real socket ------------------------------------------------------------------------


def http_answer(status: int, body: bytes) -> bytes:
    return (
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nrequest-id: req_raw\r\n\r\n"
    ).encode() + body


@pytest.fixture
def ok_server() -> Iterator[RawServer]:
    server = RawServer(http_answer(200, orjson.dumps(batch_json())))
    yield server
    server.close()


def test_chunks_reach_the_server_before_the_next_is_made(ok_server: RawServer) -> None:
    """Over TCP, the server holds chunk 1 before the generator makes chunk 2 (true streaming)."""
    part = b"x" * 100_000

    def gated() -> Iterator[bytes]:
        yield b'{"pad":"' + part
        for _ in range(500):  # the server must have the first chunk before we go on
            if ok_server.uploads and len(ok_server.uploads[-1].body) >= len(part):
                break
            threading.Event().wait(0.01)
        else:
            raise AssertionError("first chunk never reached the server")
        yield part + b'"}'

    total = len(part) * 2 + 10
    with BatchesClient(API_KEY, base_url=ok_server.url) as client:
        client.create(gated(), total)
    upload = ok_server.upload(0)
    assert upload.content_length == total
    assert len(upload.body) == total
    assert not upload.cut_short
    assert b"transfer-encoding" not in upload.head.lower()


def test_raising_mid_upload_drops_the_connection(ok_server: RawServer) -> None:
    """An exception mid-body closes the connection: the server never gets a complete body."""
    boom = KeyError("stop")

    def failing() -> Iterator[bytes]:
        yield BODY[:10]
        raise boom

    with BatchesClient(API_KEY, base_url=ok_server.url) as client:
        with pytest.raises(KeyError) as info:
            client.create(failing(), len(BODY))
        assert info.value is boom
        upload = ok_server.upload(0)
        assert upload.cut_short
        assert bytes(upload.body) == BODY[:10]
        # The client is still usable: the broken connection was discarded, not reused.
        assert client.retrieve("msgbatch_01").id == "msgbatch_01"
    assert ok_server.connections == 2


@pytest.mark.parametrize("declared", [len(BODY) + 5, len(BODY) - 5])
def test_wrong_length_never_completes_a_body_on_the_wire(
    ok_server: RawServer, declared: int
) -> None:
    """Too short or too long: the connection is dropped before a full body is sent."""
    client = BatchesClient(API_KEY, base_url=ok_server.url)
    with client, pytest.raises(errors.BodyLengthError):
        client.create(iter(CHUNKS), declared)
    upload: Upload = ok_server.upload(0)
    assert upload.cut_short
    assert len(upload.body) < declared


def test_keep_alive_reuses_one_connection(ok_server: RawServer) -> None:
    """Successive calls share one TCP connection."""
    with BatchesClient(API_KEY, base_url=ok_server.url, retry=RetryPolicy(max_retries=0)) as c:
        for _ in range(3):
            c.create(BODY, len(BODY))
    assert [ok_server.upload(i).body for i in range(3)] == [BODY] * 3
    assert ok_server.connections == 1
