"""HTTP errors and transport failures become the right batchd error, with full context."""

from __future__ import annotations

import httpx
import pytest

from batchd import errors
from batchd.errors import APIError, APIStatusError

from .helpers import API_KEY, Script, error_json, json_response, make_client

DOCUMENTED = [
    (400, "invalid_request_error", errors.BadRequestError),
    (401, "authentication_error", errors.AuthenticationError),
    (402, "billing_error", errors.BillingError),
    (403, "permission_error", errors.PermissionDeniedError),
    (404, "not_found_error", errors.NotFoundError),
    (409, "conflict_error", errors.ConflictError),
    (413, "request_too_large", errors.APIRequestTooLargeError),
    (429, "rate_limit_error", errors.RateLimitError),
    (500, "api_error", errors.InternalServerError),
    (504, "timeout_error", errors.GatewayTimeoutError),
    (529, "overloaded_error", errors.OverloadedError),
]


def fail_once(response: httpx.Response) -> APIError:
    """Call retrieve with no retries against a single answer; return what it raised."""
    with make_client(Script(response)) as client:
        client.retry = client.retry.__class__(max_retries=0)
        with pytest.raises(APIError) as info:
            client.retrieve("msgbatch_x")
    return info.value


@pytest.mark.parametrize(("status", "error_type", "cls"), DOCUMENTED)
def test_documented_errors_map_to_their_class(
    status: int, error_type: str, cls: type[APIStatusError]
) -> None:
    """Each documented status and error type gives its class, status, type, message, ids."""
    exc = fail_once(
        json_response(status, error_json(error_type, "it went wrong"), **{"retry-after": "3"})
    )
    assert type(exc) is cls
    assert exc.status == status
    assert exc.error_type == error_type
    assert exc.message == "it went wrong"
    assert exc.request_id == "req_hdr"
    assert exc.retry_after == 3.0
    assert isinstance(exc.body, dict)
    assert f"status={status}" in str(exc) and error_type in str(exc)


def test_request_id_falls_back_to_the_body() -> None:
    """Without a `request-id` header the body's request_id is used."""
    response = httpx.Response(404, content=error_json("not_found_error", "gone", "req_from_body"))
    assert fail_once(response).request_id == "req_from_body"


@pytest.mark.parametrize(
    ("status", "cls"),
    [(502, errors.InternalServerError), (503, errors.InternalServerError), (418, APIStatusError)],
)
def test_statuses_without_a_class(status: int, cls: type[APIStatusError]) -> None:
    """Unknown 5xx are InternalServerError; unknown 4xx the base APIStatusError."""
    exc = fail_once(json_response(status, error_json("weird_error", "hm")))
    assert type(exc) is cls
    assert exc.error_type == "weird_error"


def test_error_type_decides_when_the_status_has_no_class() -> None:
    """A 408/422 whose body names a known type gets that type's class."""
    exc = fail_once(json_response(422, error_json("invalid_request_error", "bad")))
    assert type(exc) is errors.BadRequestError
    assert exc.status == 422


def test_retry_after_ms_and_http_date_reach_the_error() -> None:
    """retry_after comes from retry-after-ms too."""
    exc = fail_once(
        json_response(429, error_json("rate_limit_error", "slow"), **{"retry-after-ms": "1500"})
    )
    assert exc.retry_after == 1.5


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (
            b"<html><head><title>502 Bad Gateway</title></head>"
            b"<body><center><h1>502 Bad Gateway</h1></center><hr>nginx</body></html>",
            502,
            "502 Bad Gateway",
        ),
        (b"", 503, "empty body"),
        (b"\x00\xff\xfegarbage\x01\x02 here", 500, "garbage here"),
        (b'{"message": "not the error shape"}', 400, "not the error shape"),
        (b"x" * 100_000, 500, "xxxx"),
    ],
)
def test_undocumented_bodies_still_give_the_status_class(
    body: bytes, status: int, needle: str
) -> None:
    """HTML from a proxy, empty or garbage bodies: status class, short sanitised quote."""
    exc = fail_once(httpx.Response(status, content=body, headers={"content-type": "text/html"}))
    assert exc.status == status
    assert type(exc) is errors.status_error_class(status)
    assert exc.error_type is None
    assert needle in exc.message
    assert "<" not in exc.message and "\x00" not in exc.message
    assert len(exc.message) < 300


def test_excerpt_redacts_an_echoed_key() -> None:
    """A proxy page that echoes our headers does not put the key into the error."""
    page = f"<pre>x-api-key: {API_KEY}\nother: sk-ant-someone-elses-key</pre>".encode()
    exc = fail_once(httpx.Response(400, content=page))
    assert API_KEY not in str(exc)
    assert "sk-ant-" not in str(exc)
    assert "[REDACTED]" in str(exc)


@pytest.mark.parametrize(
    ("failure", "cls"),
    [
        (httpx.ConnectTimeout("connect timed out"), errors.APITimeoutError),
        (httpx.ReadTimeout("read timed out"), errors.APITimeoutError),
        (httpx.PoolTimeout("pool"), errors.APITimeoutError),
        (httpx.ConnectError("[Errno 111] Connection refused"), errors.APIConnectionError),
        (httpx.RemoteProtocolError("peer closed"), errors.APIConnectionError),
        (httpx.ReadError("reset"), errors.APIConnectionError),
    ],
)
def test_transport_failures(failure: Exception, cls: type[APIError]) -> None:
    """Timeouts become APITimeoutError, other transport errors APIConnectionError, chained."""
    script = Script(failure)
    with make_client(script) as client:
        client.retry = client.retry.__class__(max_retries=0)
        with pytest.raises(cls) as info:
            client.retrieve("msgbatch_x")
    assert type(info.value) is cls
    assert info.value.__cause__ is failure
    assert info.value.status is None
    assert "retrieve" in str(info.value)


def test_response_that_is_not_a_batch_is_a_response_error() -> None:
    """A 200 whose JSON is not a MessageBatch is APIResponseError, naming the bad fields."""
    client = make_client(Script(json_response(200, {"id": "x", "processing_status": "bogus"})))
    with client, pytest.raises(errors.APIResponseError) as info:
        client.retrieve("x")
    assert "processing_status" in str(info.value)
    assert info.value.request_id == "req_hdr"


def test_response_that_is_not_json_is_a_response_error() -> None:
    """A 200 with an HTML body is APIResponseError quoting it."""
    page = httpx.Response(200, content=b"<html><body>Welcome to the captive portal</body></html>")
    with make_client(Script(page)) as c, pytest.raises(errors.APIResponseError) as info:
        c.retrieve("x")
    assert "captive portal" in str(info.value)
