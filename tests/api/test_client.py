"""BatchesClient against scripted transports: the operations, retries, hooks and secrecy."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from structlog.testing import capture_logs

from batchd import errors
from batchd.api import BatchesClient, MessageBatch, RetryPolicy
from batchd.settings import Settings

from .helpers import (
    API_KEY,
    FAST_RETRY,
    Script,
    batch_json,
    error_json,
    json_response,
    make_client,
)


def test_retrieve_sends_auth_headers_and_parses_the_batch() -> None:
    """retrieve GETs the batch with x-api-key, anthropic-version and content-type."""
    script = Script(json_response(200, batch_json(processing=5, future_field={"a": 1})))
    with make_client(script) as client:
        batch = client.retrieve("msgbatch_01")
    (request,) = script.requests
    assert request.method == "GET"
    assert request.url == "https://api.test/v1/messages/batches/msgbatch_01"
    assert request.headers["x-api-key"] == API_KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.headers["content-type"] == "application/json"
    assert isinstance(batch, MessageBatch)
    assert batch.processing_status == "in_progress"
    assert batch.total == 5
    assert batch.expires_at is not None and batch.ended_at is None


def test_batch_ids_are_quoted_into_the_path() -> None:
    """An id with slashes cannot reach another endpoint."""
    script = Script(json_response(200, batch_json()))
    with make_client(script) as client:
        client.retrieve("../x?y")
    assert script.requests[0].url.raw_path == b"/v1/messages/batches/..%2Fx%3Fy"


def test_empty_batch_id_is_refused() -> None:
    """An empty id is a caller bug, caught before any request."""
    with make_client(Script()) as client, pytest.raises(ValueError):
        client.retrieve("")


def test_cancel_posts_to_the_cancel_path() -> None:
    """cancel POSTs /cancel and returns the canceling batch."""
    script = Script(
        json_response(
            200, batch_json(status="canceling", cancel_initiated_at="2024-08-20T19:00:00Z")
        )
    )
    with make_client(script) as client:
        batch = client.cancel("msgbatch_01")
    assert script.requests[0].method == "POST"
    assert script.requests[0].url.path == "/v1/messages/batches/msgbatch_01/cancel"
    assert batch.processing_status == "canceling"
    assert batch.cancel_initiated_at is not None


def test_delete_returns_the_deleted_id() -> None:
    """delete sends DELETE and returns the id from the answer."""
    script = Script(json_response(200, {"id": "msgbatch_01", "type": "message_batch_deleted"}))
    with make_client(script) as client:
        assert client.delete("msgbatch_01") == "msgbatch_01"
    assert script.requests[0].method == "DELETE"


def test_delete_answer_of_the_wrong_type_is_a_response_error() -> None:
    """A delete answer that is not message_batch_deleted is not taken for a deletion."""
    script = Script(json_response(200, batch_json()))
    with make_client(script) as client, pytest.raises(errors.APIResponseError):
        client.delete("msgbatch_01")


def test_list_passes_cursors_and_limit() -> None:
    """list sends before_id, after_id and limit, and returns one page."""
    page = {
        "data": [batch_json("b2"), batch_json("b1")],
        "has_more": True,
        "first_id": "b2",
        "last_id": "b1",
    }
    script = Script(json_response(200, page))
    with make_client(script) as client:
        result = client.list(after_id="b3", limit=2)
    assert dict(script.requests[0].url.params) == {"limit": "2", "after_id": "b3"}
    assert [b.id for b in result.data] == ["b2", "b1"]
    assert result.has_more and result.first_id == "b2" and result.last_id == "b1"


def paged(ids: list[str], per_page: int) -> Script:
    """A list endpoint over `ids` (newest first) that honours after_id and before_id."""

    def handler(request: httpx.Request) -> httpx.Response:
        params = request.url.params
        limit = int(params.get("limit", "20"))
        if "after_id" in params:
            start = ids.index(params["after_id"]) + 1
            chunk = ids[start : start + limit]
            more = start + limit < len(ids)
        elif "before_id" in params:
            end = ids.index(params["before_id"])
            chunk = ids[max(0, end - limit) : end]
            more = end - limit > 0
        else:
            chunk, more = ids[:limit], len(ids) > limit
        body = {
            "data": [batch_json(i) for i in chunk],
            "has_more": more,
            "first_id": chunk[0] if chunk else None,
            "last_id": chunk[-1] if chunk else None,
        }
        return json_response(200, body)

    return Script(*([handler] * (len(ids) // per_page + 3)))


def test_iter_batches_walks_every_page_newest_first() -> None:
    """iter_batches follows last_id until has_more is false."""
    ids = [f"b{n:02d}" for n in range(10, 0, -1)]
    script = paged(ids, 3)
    with make_client(script) as client:
        seen = [b.id for b in client.iter_batches(limit=3)]
    assert seen == ids
    assert len(script.requests) == 4
    assert [r.url.params.get("after_id") for r in script.requests] == [None, "b08", "b05", "b02"]


def test_iter_batches_from_a_cursor() -> None:
    """after_id starts the walk below a known batch."""
    ids = [f"b{n:02d}" for n in range(10, 0, -1)]
    with make_client(paged(ids, 4)) as client:
        assert [b.id for b in client.iter_batches(limit=4, after_id="b07")] == ids[4:]


def test_iter_batches_backwards_from_before_id() -> None:
    """before_id alone walks towards newer batches using first_id."""
    ids = [f"b{n:02d}" for n in range(10, 0, -1)]
    with make_client(paged(ids, 2)) as client:
        seen = [b.id for b in client.iter_batches(limit=2, before_id="b03")]
    assert sorted(seen) == sorted(ids[:7])
    assert len(seen) == 7


def test_iter_batches_is_lazy() -> None:
    """Only the pages actually consumed are fetched."""
    ids = [f"b{n:02d}" for n in range(10, 0, -1)]
    script = paged(ids, 3)
    with make_client(script) as client:
        it = client.iter_batches(limit=3)
        assert next(it).id == "b10"
        assert len(script.requests) == 1


def test_has_more_without_cursor_is_a_response_error() -> None:
    """A page that says has_more but gives no last_id cannot loop forever."""
    page = {"data": [batch_json("b1")], "has_more": True, "first_id": None, "last_id": None}
    client = make_client(Script(json_response(200, page)))
    with client, pytest.raises(errors.APIResponseError):
        list(client.iter_batches())


# -- retries ---------------------------------------------------------------------------------


def test_429_with_retry_after_is_retried_after_that_wait() -> None:
    """A 429 is retried after its retry-after (capped by retry_after_max)."""
    sleeps: list[float] = []
    script = Script(
        json_response(429, error_json("rate_limit_error", "slow"), **{"retry-after": "0.004"}),
        json_response(429, error_json("rate_limit_error", "slow"), **{"retry-after": "30"}),
        json_response(200, batch_json()),
    )
    with make_client(script, sleeps=sleeps) as client:
        assert client.retrieve("msgbatch_01").id == "msgbatch_01"
    assert sleeps == [0.004, FAST_RETRY.retry_after_max]
    assert len(script.requests) == 3


@pytest.mark.parametrize("status", [408, 409, 500, 502, 503, 504, 529])
def test_retryable_statuses_are_retried(status: int) -> None:
    """Retryable statuses are tried again with backoff within the policy's bounds."""
    sleeps: list[float] = []
    script = Script(
        json_response(status, error_json("api_error", "x")), json_response(200, batch_json())
    )
    with make_client(script, sleeps=sleeps) as client:
        client.retrieve("msgbatch_01")
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= FAST_RETRY.backoff_cap(0)


def test_connection_errors_are_retried() -> None:
    """A refused connection and a read timeout are retried."""
    script = Script(
        httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), json_response(200, batch_json())
    )
    with make_client(script) as client:
        client.retrieve("msgbatch_01")
    assert len(script.requests) == 3


def test_retries_give_up_after_max_retries() -> None:
    """After max_retries retries the last error is raised."""
    script = Script(*[json_response(529, error_json("overloaded_error", "busy"))] * 4)
    with make_client(script) as client, pytest.raises(errors.OverloadedError):
        client.retrieve("msgbatch_01")
    assert len(script.requests) == FAST_RETRY.max_retries + 1


def test_x_should_retry_false_stops_a_retry() -> None:
    """x-should-retry: false makes even a 500 final."""
    script = Script(json_response(500, error_json("api_error", "x"), **{"x-should-retry": "false"}))
    with make_client(script) as client, pytest.raises(errors.InternalServerError):
        client.retrieve("msgbatch_01")
    assert len(script.requests) == 1


def test_x_should_retry_true_retries_a_400() -> None:
    """x-should-retry: true makes a normally final status retryable."""
    script = Script(
        json_response(400, error_json("invalid_request_error", "x"), **{"x-should-retry": "true"}),
        json_response(200, batch_json()),
    )
    with make_client(script) as client:
        client.retrieve("msgbatch_01")
    assert len(script.requests) == 2


def test_final_errors_are_not_retried() -> None:
    """404 is raised at once."""
    script = Script(json_response(404, error_json("not_found_error", "no such batch")))
    with make_client(script) as client, pytest.raises(errors.NotFoundError):
        client.retrieve("msgbatch_01")
    assert len(script.requests) == 1


# -- metrics hook ----------------------------------------------------------------------------


def test_on_call_is_called_once_per_attempt() -> None:
    """The hook sees every attempt: status, or None when there was no answer, and seconds."""
    calls: list[tuple[str, int | None, float]] = []
    script = Script(
        httpx.ConnectError("refused"),
        json_response(503, b"busy"),
        json_response(200, batch_json()),
    )
    with make_client(script, on_call=lambda *a: calls.append(a)) as client:
        client.retrieve("msgbatch_01")
    assert [(op, status) for op, status, _ in calls] == [
        ("retrieve", None),
        ("retrieve", 503),
        ("retrieve", 200),
    ]
    assert all(seconds >= 0 for _, _, seconds in calls)


def test_a_failing_on_call_hook_does_not_fail_the_call() -> None:
    """Metrics are best effort."""

    def broken(*_: Any) -> None:
        raise RuntimeError("metrics down")

    with make_client(Script(json_response(200, batch_json())), on_call=broken) as client:
        assert client.retrieve("msgbatch_01").id == "msgbatch_01"


# -- construction ----------------------------------------------------------------------------


def test_from_settings_uses_the_account_and_api_settings() -> None:
    """from_settings takes the account's key and base URL and the retry policy."""
    settings = Settings(
        accounts={"acme": {"api_key": API_KEY, "base_url": "https://acme.test"}},
        default_account="acme",
        api={"max_retries": 2, "backoff_initial": 0.25},
    )
    script = Script(json_response(200, batch_json()))
    client = BatchesClient.from_settings(settings, "acme", transport=httpx.MockTransport(script))
    with client:
        client.retrieve("msgbatch_01")
    assert client.retry == RetryPolicy(max_retries=2, backoff_initial=0.25)
    assert str(script.requests[0].url).startswith("https://acme.test/v1/")
    assert script.requests[0].headers["x-api-key"] == API_KEY


def test_from_settings_without_a_key_is_a_config_error() -> None:
    """An account without a key cannot make a client."""
    with pytest.raises(errors.ConfigError):
        BatchesClient.from_settings(Settings(), "default")
    with pytest.raises(errors.ConfigError):
        BatchesClient.from_settings(Settings(), "nobody")


def test_one_http_client_is_reused() -> None:
    """All calls share one httpx.Client (keep-alive), closed with the BatchesClient."""
    script = Script(json_response(200, batch_json()), json_response(200, batch_json()))
    client = make_client(script)
    http = client._http
    client.retrieve("a")
    client.retrieve("b")
    assert client._http is http
    client.close()
    assert http.is_closed


# -- secrecy ---------------------------------------------------------------------------------


def exceptions_from_every_path() -> Iterator[BaseException]:
    scenarios: list[Any] = [
        json_response(401, error_json("authentication_error", "invalid x-api-key")),
        json_response(500, f"<h1>upstream said {API_KEY}</h1>".encode()),
        json_response(429, error_json("rate_limit_error", f"key {API_KEY} is slow")),
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ReadTimeout("timed out"),
        json_response(200, f"<html>{API_KEY}</html>".encode()),
        json_response(200, {"id": API_KEY}),
    ]
    for answer in scenarios:
        with make_client(Script(answer), retry=RetryPolicy(max_retries=0)) as client:
            try:
                client.retrieve("msgbatch_01")
            except errors.APIError as exc:
                yield exc
            else:
                raise AssertionError("no error raised")


def test_api_key_never_appears_in_errors_or_reprs_or_logs() -> None:
    """No exception text, repr, argument or cause, and no log event, carries the API key."""
    with capture_logs() as logs:
        found = list(exceptions_from_every_path())
        with make_client(Script(), retry=RetryPolicy(max_retries=0)) as client:
            assert API_KEY not in repr(client)
    assert len(found) == 7
    for exc in found:
        chain: BaseException | None = exc
        while chain is not None:
            body = getattr(chain, "body", None)
            for text in (str(chain), repr(chain), *map(repr, chain.args), repr(body)):
                assert API_KEY not in text, text
            chain = chain.__cause__ or chain.__context__
    assert API_KEY not in repr(logs)
