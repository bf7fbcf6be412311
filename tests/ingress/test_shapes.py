"""Pure pieces: a batch result rendered as the Messages API's answer, error bodies, bulk parsing,
and where the listener binds."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from batchd.errors import InvalidRequestError
from batchd.ingress.app import bulk_items
from batchd.ingress.errors import TYPE_STATUS, IngressError, error_body
from batchd.ingress.messages import NO_RETRY, _api_message, render
from batchd.ingress.server import listen_host
from batchd.results import Result
from batchd.settings import Settings

MESSAGE = {
    "id": "msg_01",
    "type": "message",
    "role": "assistant",
    "model": "claude-haiku-4-5",
    "content": [{"type": "text", "text": "Hello"}],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 3, "output_tokens": 1},
}


def result(status: str, outcome: dict[str, Any]) -> Result:
    envelope = {"id": "default.01J0000000000000000000000A", "status": status, "result": outcome,
                "account": "default", "attempts": 1}  # fmt: skip
    return Result.from_json(orjson.dumps(envelope))


def errored(etype: str, message: str = "something") -> dict[str, Any]:
    return {
        "type": "errored",
        "error": {
            "type": "error",
            "error": {"type": etype, "message": message},
            "request_id": "req_api_1",
        },
    }


def test_succeeded_result_is_the_message_itself() -> None:
    """A succeeded result answers 200 with the Message, byte for byte as JSON."""
    response = render(result("succeeded", {"type": "succeeded", "message": MESSAGE}), {})
    assert response.status == 200
    assert orjson.loads(response.body) == MESSAGE  # type: ignore[arg-type]


@pytest.mark.parametrize(("etype", "status"), sorted(TYPE_STATUS.items()))
def test_errored_result_gets_the_apis_status_and_error_object(etype: str, status: int) -> None:
    """Each API error type answers its API status with the API's own error object."""
    outcome = errored(etype)
    response = render(result("errored", outcome), {"batchd-request-id": "x"})
    assert response.status == status
    assert orjson.loads(response.body) == outcome["error"]  # type: ignore[arg-type]
    assert response.headers["batchd-request-id"] == "x"


def test_batchd_own_error_types_are_api_errors() -> None:
    """A reason the API never gives (a missing result line) answers 500 api_error naming it."""
    with pytest.raises(IngressError) as exc:
        render(result("dead", errored("missing_result", "no line in the batch results")), {})
    assert (exc.value.status, exc.value.error_type) == (500, "api_error")
    assert exc.value.message == "missing_result: no line in the batch results"


def test_expired_result_is_a_timeout_error() -> None:
    """A request that expired unprocessed answers 504 timeout_error."""
    with pytest.raises(IngressError) as exc:
        render(result("expired", {"type": "expired"}), {})
    assert (exc.value.status, exc.value.error_type) == (504, "timeout_error")


def test_canceled_result_tells_sdks_not_to_retry() -> None:
    """A canceled request answers 500 with x-should-retry: false (a retry would queue anew)."""
    with pytest.raises(IngressError) as exc:
        render(result("canceled", {"type": "canceled"}), {})
    assert exc.value.status == 500
    assert exc.value.headers.items() >= NO_RETRY.items()
    assert "canceled" in exc.value.message


def test_validation_messages_name_top_level_fields_on_the_drop_in() -> None:
    """`params.x` in a refusal reads `x` on the drop-in, whose body is the params."""
    assert _api_message(InvalidRequestError("params.stream: no")) == "stream: no"
    assert (
        _api_message(InvalidRequestError("params: must be an object")) == "body: must be an object"
    )
    assert _api_message(InvalidRequestError("account: bad")) == "account: bad"


def test_error_body_is_the_apis_shape() -> None:
    """The error body: type error, error{type, message[, field]}, request_id."""
    assert orjson.loads(error_body("not_found_error", "gone", "req_1")) == {
        "type": "error", "error": {"type": "not_found_error", "message": "gone"},
        "request_id": "req_1",
    }  # fmt: skip
    with_field = orjson.loads(error_body("invalid_request_error", "bad", "req_2", "key"))
    assert with_field["error"]["field"] == "key"


def test_bulk_body_is_an_array_or_jsonl_by_content_type() -> None:
    """application/json wants an array; a JSONL type reads lines, a bad one as its own error."""
    assert bulk_items(b'[{"a":1},2]', "application/json") == [{"a": 1}, 2]
    items = bulk_items(b'{"a":1}\n\nnope\n{"b":2}', "application/x-ndjson")
    assert items[0] == {"a": 1} and items[2] == {"b": 2}
    assert isinstance(items[1], IngressError) and "line 3" in items[1].message
    with pytest.raises(IngressError):
        bulk_items(b'{"a":1}', "application/json")


@pytest.mark.parametrize(
    ("host", "tokens", "bound"),
    [
        ("0.0.0.0", False, "127.0.0.1"),
        ("::", False, "::1"),
        ("10.1.2.3", False, "127.0.0.1"),
        ("127.0.0.1", False, "127.0.0.1"),
        ("localhost", False, "localhost"),
        ("0.0.0.0", True, "0.0.0.0"),
    ],
)
def test_listener_binds_loopback_unless_tokens_guard_it(
    host: str, tokens: bool, bound: str
) -> None:
    """Without tokens any non-loopback host becomes loopback; with tokens the host is kept."""
    table = [{"name": "t", "sha256": "c" * 64, "accounts": ["*"]}] if tokens else []
    settings = Settings(ingress={"host": host, "tokens": table})
    assert listen_host(settings) == bound
