"""Rate-limit headers: parsed into RateLimit, kept per scope, given to on_rate_limit, always."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from batchd import errors
from batchd.api import BatchesClient, LimitWindow, RateLimit, RetryPolicy
from tests.support.emulator import EmulatorProcess

from .conftest import EMULATOR_RETRY
from .helpers import Script, batch_json, error_json, json_response, jsonl_response, make_client
from .rawserver import RawServer, http_answer

HEADERS = {
    "anthropic-ratelimit-requests-limit": "1000",
    "anthropic-ratelimit-requests-remaining": "999",
    "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
    "anthropic-ratelimit-tokens-limit": "96000",
    "anthropic-ratelimit-tokens-remaining": "95000",
    "anthropic-ratelimit-tokens-reset": "2025-08-21T12:41:00Z",
    "anthropic-ratelimit-input-tokens-limit": "80000",
    "anthropic-ratelimit-input-tokens-remaining": "79000",
    "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:40:59Z",
    "anthropic-ratelimit-output-tokens-limit": "16000",
    "anthropic-ratelimit-output-tokens-remaining": "15000",
    "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:41:00Z",
}


def test_every_documented_window_is_parsed() -> None:
    """requests, tokens, input and output tokens: limit, remaining and reset as typed values."""
    limits = RateLimit.from_headers(HEADERS, operation="messages", status=200)
    assert limits is not None
    assert limits.scope == "messages"
    assert limits.requests == LimitWindow(1000, 999, datetime(2025, 8, 21, 12, 40, 59, tzinfo=UTC))
    assert limits.tokens == LimitWindow(96000, 95000, datetime(2025, 8, 21, 12, 41, tzinfo=UTC))
    assert limits.input_tokens is not None and limits.input_tokens.remaining == 79000
    assert limits.output_tokens is not None and limits.output_tokens.limit == 16000
    assert limits.retry_after is None
    assert dict(limits.raw) == HEADERS


def test_retry_after_alone_is_a_rate_limit() -> None:
    """A 429 with only retry-after still reports when to come back."""
    limits = RateLimit.from_headers({"retry-after": "7"}, operation="list", status=429)
    assert limits is not None
    assert limits.retry_after == 7.0
    assert limits.scope == "batches"
    assert limits.windows == {}


def test_retry_after_ms_wins_over_retry_after() -> None:
    """retry-after-ms is the finer of the two and is preferred."""
    limits = RateLimit.from_headers(
        {"retry-after": "7", "retry-after-ms": "1500"}, operation="create", status=429
    )
    assert limits is not None and limits.retry_after == 1.5


def test_no_headers_no_rate_limit() -> None:
    """An answer without any of these headers reports nothing."""
    assert RateLimit.from_headers({"request-id": "r"}, operation="list", status=200) is None


def test_unparsable_values_read_as_none_but_stay_raw() -> None:
    """A proxy's odd values never fail the call: they read as None and stay in raw."""
    odd = {
        "anthropic-ratelimit-requests-limit": "lots",
        "anthropic-ratelimit-requests-remaining": "-3",
        "anthropic-ratelimit-requests-reset": "soon",
        "anthropic-ratelimit-unified-reset": "1755780059",
    }
    limits = RateLimit.from_headers(odd, operation="list", status=200)
    assert limits is not None
    assert limits.requests == LimitWindow(None, None, None)
    unified = limits.windows["unified"]
    assert unified.reset == datetime.fromtimestamp(1755780059, UTC)
    assert dict(limits.raw) == odd


def test_client_keeps_the_latest_per_scope_and_calls_the_hook() -> None:
    """Each answer with headers updates last_rate_limit, its scope's entry and on_rate_limit."""
    seen: list[RateLimit] = []
    script = Script(
        json_response(200, batch_json(), **HEADERS),
        json_response(200, {"input_tokens": 3}, **{"anthropic-ratelimit-requests-limit": "50"}),
    )
    with make_client(script, on_rate_limit=seen.append) as client:
        client.retrieve("msgbatch_01")
        client.count_tokens({"model": "m", "messages": []})
        scopes = client.rate_limits
        assert client.last_rate_limit is seen[-1]
    assert [(r.operation, r.scope) for r in seen] == [
        ("retrieve", "batches"),
        ("count_tokens", "count_tokens"),
    ]
    batches = scopes["batches"].requests
    assert batches is not None and batches.remaining == 999
    counting = scopes["count_tokens"].requests
    assert counting is not None and counting.limit == 50


def test_error_answers_report_their_rate_limit_too() -> None:
    """A final 429 raises, and its headers were recorded before it did."""
    answer = json_response(
        429,
        error_json("rate_limit_error", "slow down"),
        **{"retry-after": "2", "anthropic-ratelimit-requests-remaining": "0"},
    )
    with make_client(Script(answer), retry=RetryPolicy(max_retries=0)) as client:
        with pytest.raises(errors.RateLimitError):
            client.list()
        limits = client.last_rate_limit
    assert limits is not None and limits.status == 429
    assert limits.retry_after == 2.0
    assert limits.requests is not None and limits.requests.remaining == 0


def test_the_results_stream_reports_its_rate_limit() -> None:
    """The streamed results answer is a response path like any other."""
    response, _ = jsonl_response([b""])
    response.headers["anthropic-ratelimit-requests-remaining"] = "12"
    with make_client(Script(response)) as client:
        list(client.results("b"))
        limits = client.rate_limits["batches"]
    assert limits.operation == "results"
    assert limits.requests is not None and limits.requests.remaining == 12


def test_a_failing_hook_does_not_fail_the_call() -> None:
    """A broken on_rate_limit hook is logged, not raised."""

    def broken(_limits: RateLimit) -> None:
        raise RuntimeError("metrics down")

    script = Script(json_response(200, batch_json(), **HEADERS))
    with make_client(script, on_rate_limit=broken) as client:
        assert client.retrieve("msgbatch_01").id == "msgbatch_01"


@pytest.fixture
def limited_server() -> Iterator[RawServer]:
    body = b'{"data":[],"has_more":false,"first_id":null,"last_id":null}'
    server = RawServer(http_answer(200, body, headers=HEADERS))
    yield server
    server.close()


def test_headers_off_the_wire_reach_the_client(limited_server: RawServer) -> None:
    """Over a real socket, the headers the server sent are what the client reports."""
    with BatchesClient("sk-ant-raw", base_url=limited_server.url) as client:
        client.list()
        limits = client.last_rate_limit
    assert limits is not None
    assert limits.tokens is not None and limits.tokens.remaining == 95000
    assert limited_server.upload(0).request_line.startswith("GET /v1/messages/batches?")


def test_emulator_429_retry_after_is_recorded(emu: EmulatorProcess) -> None:
    """The emulator's 429 carries retry-after; the client records it, then retries and succeeds."""
    seen: list[RateLimit] = []
    statuses: list[int | None] = []

    def on_call(_op: str, status: int | None, _s: float) -> None:
        statuses.append(status)
        if status == 429:
            emu.set_profile({})

    emu.set_profile({"http_429_rate": 1.0, "retry_after": 3, "fault_operations": ["list"]})
    client = BatchesClient(
        emu.api_key,
        base_url=emu.url,
        retry=EMULATOR_RETRY,
        on_call=on_call,
        on_rate_limit=seen.append,
    )
    client._sleep = lambda _s: None
    with client:
        client.list()
    assert statuses == [429, 200]
    assert [(r.status, r.retry_after) for r in seen if r.status == 429] == [(429, 3.0)]
