"""Real-time messages and the pass-through calls: bodies and headers as sent, retries as chosen."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson
import pytest

from batchd import errors
from batchd.api import BatchesClient, RetryPolicy

from .helpers import FAST_RETRY, Script, error_json, json_response, make_client
from .rawserver import RawServer, http_answer

MESSAGE: dict[str, Any] = {
    "id": "msg_rt_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-sonnet-4-5",
    "content": [{"type": "text", "text": "hi"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 7, "output_tokens": 2},
}
PARAMS = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hello"}],
}
RAW_PARAMS = b'{"model":"claude-sonnet-4-5","max_tokens":16,  "messages":[]}'
LIMITS = {
    "anthropic-ratelimit-requests-limit": "50",
    "anthropic-ratelimit-requests-remaining": "49",
    "anthropic-organization-id": "org-1",
}
QUICK = RetryPolicy(max_retries=2, backoff_initial=0.001, backoff_max=0.001)


def overloaded() -> bytes:
    return http_answer(
        529, error_json("overloaded_error", "Overloaded"), headers={"retry-after-ms": "1"}
    )


@contextmanager
def serving(*answers: bytes, close_after: bool = False) -> Iterator[RawServer]:
    """A RawServer giving these answers in turn, closed on the way out."""
    server = RawServer(list(answers), close_after=close_after)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def message_server() -> Iterator[RawServer]:
    with serving(http_answer(200, orjson.dumps(MESSAGE), headers=LIMITS)) as server:
        yield server


def test_messages_create_sends_the_bytes_as_given(message_server: RawServer) -> None:
    """Byte params go out unchanged, as JSON, with betas and the caller's extra headers."""
    with BatchesClient("sk-ant-raw", base_url=message_server.url) as client:
        answer = client.messages_create(
            RAW_PARAMS,
            betas=["context-1m-2025-08-07"],
            extra_headers={"batchd-custom-id": "01HXYZ"},
        )
    upload = message_server.upload(0)
    assert upload.request_line == "POST /v1/messages HTTP/1.1"
    assert bytes(upload.body) == RAW_PARAMS
    assert upload.header("content-type") == "application/json"
    assert upload.header("content-length") == str(len(RAW_PARAMS))
    assert upload.header("anthropic-beta") == "context-1m-2025-08-07"
    assert upload.header("batchd-custom-id") == "01HXYZ"
    assert upload.header("x-api-key") == "sk-ant-raw"
    assert answer.message == MESSAGE
    assert answer.usage == {"input_tokens": 7, "output_tokens": 2}
    assert orjson.loads(answer.content) == MESSAGE
    assert answer.request_id == "req_raw"
    assert answer.headers["anthropic-organization-id"] == "org-1"
    assert answer.rate_limit is not None and answer.rate_limit.scope == "messages"
    assert answer.rate_limit.requests is not None and answer.rate_limit.requests.remaining == 49


def test_messages_create_encodes_a_mapping(message_server: RawServer) -> None:
    """Mapping params are encoded to JSON once."""
    with BatchesClient("sk-ant-raw", base_url=message_server.url) as client:
        client.messages_create(PARAMS)
    assert orjson.loads(bytes(message_server.upload(0).body)) == PARAMS


def test_streaming_is_refused_before_sending() -> None:
    """stream: true would answer events, not a Message: ValueError, nothing sent."""
    script = Script()
    with make_client(script) as client, pytest.raises(ValueError):
        client.messages_create({**PARAMS, "stream": True})
    assert script.requests == []


def test_without_retries_an_overloaded_answer_is_raised_after_one_send() -> None:
    """retries=False: one request, the 529 raised as OverloadedError for the caller to judge."""
    with (
        serving(overloaded(), http_answer(200, orjson.dumps(MESSAGE))) as server,
        BatchesClient("sk-ant-raw", base_url=server.url, retry=QUICK) as client,
        pytest.raises(errors.OverloadedError) as info,
    ):
        client.messages_create(PARAMS, retries=False)
    assert len(server.uploads) == 1
    assert info.value.request_id == "req_raw"


def test_with_retries_an_overloaded_answer_is_sent_again() -> None:
    """retries=True follows the client's policy: the 529 is retried and the Message returned."""
    with (
        serving(overloaded(), http_answer(200, orjson.dumps(MESSAGE))) as server,
        BatchesClient("sk-ant-raw", base_url=server.url, retry=QUICK) as client,
    ):
        answer = client.messages_create(PARAMS)
    assert answer.message["id"] == "msg_rt_1"
    assert len(server.uploads) == 2
    assert server.uploads[0].body == server.uploads[1].body


def test_an_unanswered_call_without_retries_is_sent_once() -> None:
    """The server takes the body and hangs up: APIConnectionError, and exactly one send."""
    with (
        serving(b"", close_after=True) as server,
        BatchesClient("sk-ant-raw", base_url=server.url, retry=QUICK) as client,
        pytest.raises(errors.APIConnectionError),
    ):
        client.messages_create(PARAMS, retries=False)
    assert len(server.uploads) == 1 and server.uploads[0].body == orjson.dumps(PARAMS)


def test_a_number_of_retries_is_a_budget() -> None:
    """retries=1 allows two sends in all, then raises."""
    with (
        serving(overloaded()) as server,
        BatchesClient("sk-ant-raw", base_url=server.url, retry=QUICK) as client,
        pytest.raises(errors.OverloadedError),
    ):
        client.messages_create(PARAMS, retries=1)
    assert len(server.uploads) == 2


def test_messages_errors_are_the_usual_tree() -> None:
    """A 400 is BadRequestError with the API's type, message and request id, not retried."""
    script = Script(json_response(400, error_json("invalid_request_error", "max_tokens: bad")))
    with make_client(script) as client, pytest.raises(errors.BadRequestError) as info:
        client.messages_create(PARAMS)
    assert info.value.error_type == "invalid_request_error"
    assert "max_tokens" in str(info.value)
    assert info.value.request_id == "req_hdr"
    assert len(script.requests) == 1


@pytest.mark.parametrize(
    "answer",
    [
        json_response(200, {"type": "error", "error": {}}),
        httpx.Response(200, content=b"<html>hi</html>", headers={"content-type": "text/html"}),
    ],
)
def test_a_200_that_is_not_a_message_is_a_response_error(answer: httpx.Response) -> None:
    """A success status with something else than a Message raises APIResponseError."""
    with make_client(Script(answer)) as client, pytest.raises(errors.APIResponseError):
        client.messages_create(PARAMS)


def test_a_call_timeout_bounds_reads_and_keeps_connect() -> None:
    """timeout=seconds applies to this call's reads and writes only."""
    script = Script(json_response(200, MESSAGE), json_response(200, MESSAGE))
    with make_client(script) as client:
        client.messages_create(PARAMS, timeout=3.5)
        client.messages_create(PARAMS)
    first, second = (r.extensions["timeout"] for r in script.requests)
    assert first == {"connect": 10.0, "read": 3.5, "write": 3.5, "pool": 10.0}
    assert second["read"] == 600.0


# -- pass-through ----------------------------------------------------------------------------


def test_count_tokens_hands_back_the_answer_unchanged() -> None:
    """Status, passed-on headers and the exact body bytes of count_tokens come back."""
    body = b'{"input_tokens": 12}'
    with (
        serving(http_answer(200, body, headers=LIMITS)) as server,
        BatchesClient("sk-ant-raw", base_url=server.url) as client,
    ):
        answer = client.count_tokens(RAW_PARAMS, query={"beta": "true"})
        upload = server.upload(0)
    assert upload.request_line == "POST /v1/messages/count_tokens?beta=true HTTP/1.1"
    assert bytes(upload.body) == RAW_PARAMS
    assert upload.header("content-type") == "application/json"
    assert (answer.status, answer.content) == (200, body)
    assert answer.json() == {"input_tokens": 12}
    assert answer.headers == {
        "content-type": "application/json",
        "request-id": "req_raw",
        **LIMITS,
    }
    assert answer.rate_limit is not None and answer.rate_limit.scope == "count_tokens"


def test_a_final_error_is_returned_not_raised() -> None:
    """A 400 from count_tokens is handed back as it came, for the proxy to pass on."""
    body = error_json("invalid_request_error", "messages: Field required")
    script = Script(json_response(400, body))
    with make_client(script) as client:
        answer = client.count_tokens({"model": "m"})
    assert (answer.status, answer.content, answer.is_success) == (400, body, False)
    assert answer.request_id == "req_hdr"
    assert len(script.requests) == 1


def test_retryable_errors_are_retried_then_the_last_is_returned() -> None:
    """529s are retried by policy; when the budget is spent the last 529 is returned."""
    with (
        serving(overloaded()) as server,
        BatchesClient("sk-ant-raw", base_url=server.url, retry=QUICK) as client,
    ):
        answer = client.list_models()
    assert answer.status == 529
    assert answer.headers["retry-after-ms"] == "1"
    assert orjson.loads(answer.content)["error"]["type"] == "overloaded_error"
    assert len(server.uploads) == QUICK.max_retries + 1


def test_no_answer_at_all_raises() -> None:
    """With nothing to hand back, a pass-through raises APIConnectionError."""
    script = Script(*[httpx.ConnectError("refused")] * (FAST_RETRY.max_retries + 1))
    with make_client(script) as client, pytest.raises(errors.APIConnectionError):
        client.list_models()


def test_list_models_passes_the_query_and_betas() -> None:
    """The caller's query and betas reach GET /v1/models."""
    page = {"data": [], "has_more": False, "first_id": None, "last_id": None}
    script = Script(json_response(200, page))
    with make_client(script) as client:
        answer = client.list_models(query={"limit": 5, "after_id": "m1"}, betas=["b-1"])
    request = script.requests[0]
    assert request.method == "GET"
    assert request.url.path == "/v1/models"
    assert dict(request.url.params) == {"limit": "5", "after_id": "m1"}
    assert request.headers["anthropic-beta"] == "b-1"
    assert answer.json() == page


def test_retrieve_model_quotes_the_id() -> None:
    """A model id cannot reach another path."""
    script = Script(json_response(404, error_json("not_found_error", "model: x")))
    with make_client(script) as client:
        answer = client.retrieve_model("../v1/messages")
    assert script.requests[0].url.raw_path == b"/v1/models/..%2Fv1%2Fmessages"
    assert answer.status == 404


def test_an_encoded_answer_is_handed_on_decoded_without_its_encoding() -> None:
    """A gzip answer comes back as plain bytes, and content-encoding is not passed on."""
    body = b'{"id":"claude-sonnet-4-5","type":"model"}'
    packed = gzip.compress(body)
    with (
        serving(http_answer(200, packed, headers={"content-encoding": "gzip"})) as server,
        BatchesClient("sk-ant-raw", base_url=server.url) as client,
    ):
        answer = client.retrieve_model("claude-sonnet-4-5")
    assert answer.content == body
    assert "content-encoding" not in answer.headers
    assert "content-length" not in answer.headers


def test_an_answer_cut_short_is_never_handed_on() -> None:
    """A body that ends before its content-length raises instead of passing on a part."""
    body = b'{"data":[' + b'{"id":"m"},' * 100
    with (
        serving(http_answer(200, body[:50], content_length=len(body)), close_after=True) as server,
        BatchesClient("sk-ant-raw", base_url=server.url, retry=QUICK) as client,
        pytest.raises(errors.APIResponseError, match="broke off"),
    ):
        client.list_models()
    assert len(server.uploads) == 1
