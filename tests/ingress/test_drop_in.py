"""The drop-in `POST /v1/messages`: the official `anthropic` SDK pointed at batchd with base_url."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx2
import pytest

from tests.ingress.conftest import PARAMS as _PARAMS
from tests.ingress.conftest import Ingress
from tests.ingress.test_routes import assert_error

# A model the SDK does not warn about (warnings are errors in this suite).
MODEL = "claude-haiku-4-5"
PARAMS = {**_PARAMS, "model": MODEL}


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK reads ANTHROPIC_* from the environment; only what a test passes counts."""
    for name in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def sdk(ing: Ingress, token: str = "full", **kwargs: Any) -> anthropic.Anthropic:
    """The SDK as a producer would configure it: the two lines are base_url and api_key."""
    kwargs.setdefault("api_key", ing.tokens.get(token, token))
    return anthropic.Anthropic(base_url=ing.url, max_retries=0, timeout=60.0, **kwargs)


@pytest.fixture
def emulator_profile(full: Ingress) -> Iterator[Any]:
    """Change the emulator's fault profile for one test; the startup profile afterwards."""
    yield full.emulator.patch_profile
    full.emulator.set_profile({})


def billed(ing: Ingress) -> int:
    return int(ing.emulator.audit()[ing.emulator.api_key]["billed"])


def test_sdk_gets_a_message_through_a_whole_batch_cycle(full: Ingress) -> None:
    """messages.create returns a typed Message, answered from a batch and billed once."""
    before = billed(full)
    with sdk(full) as client:
        message = client.messages.create(
            model=MODEL,
            max_tokens=64,
            messages=[{"role": "user", "content": "Say hello"}],
        )
    assert isinstance(message, anthropic.types.Message)
    assert message.role == "assistant"
    assert message.content[0].type == "text"
    assert "Say hello" in message.content[0].text  # the emulator echoes the prompt
    assert message.usage.output_tokens > 0
    assert billed(full) == before + 1


def test_deadline_header_no_batch_can_make_is_answered_in_real_time(full: Ingress) -> None:
    """A `batchd-deadline` no batch can make is answered through the real-time API (policy
    realtime): the same Message, `batchd-mode: realtime`, billed once and in no batch."""
    audit = full.emulator.audit
    before = audit()[full.emulator.api_key]
    deadline = time.time() + 60  # a batch is planned at an hour by default
    with sdk(full) as client:
        raw = client.messages.with_raw_response.create(
            **PARAMS, extra_headers={"batchd-deadline": str(deadline)}
        )
    assert raw.headers["batchd-mode"] == "realtime"
    assert raw.parse().type == "message"
    after = audit()[full.emulator.api_key]
    assert after["realtime_billed"] == before["realtime_billed"] + 1
    assert after["requests"] == before["requests"]


def test_sdk_with_a_bearer_token_works_too(full: Ingress) -> None:
    """An SDK configured with auth_token (Authorization: Bearer) is accepted as well."""
    with sdk(full, api_key=None, auth_token=full.tokens["full"]) as client:
        message = client.messages.create(**PARAMS)
    assert message.type == "message"


def test_sdk_stream_true_is_a_bad_request(full: Ingress) -> None:
    """stream=True is refused with invalid_request_error (BadRequestError); nothing is queued."""
    before = full.counter("submitted")
    with sdk(full) as client, pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(**PARAMS, stream=True)
    assert exc.value.status_code == 400
    assert exc.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert exc.value.body["error"]["message"].startswith("stream:")  # type: ignore[index]
    assert full.counter("submitted") == before


def test_sdk_with_a_wrong_token_gets_authentication_error(full: Ingress) -> None:
    """An unknown token (an Anthropic key, say) raises AuthenticationError (401)."""
    client = sdk(full, "sk-ant-api03-not-a-batchd-token")
    with client, pytest.raises(anthropic.AuthenticationError) as exc:
        client.messages.create(**PARAMS)
    assert exc.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]


def test_sdk_with_a_token_not_allowed_the_account_gets_permission_denied(full: Ingress) -> None:
    """A token for account `other` asking for `default` raises PermissionDeniedError (403)."""
    client = sdk(full, "other", default_headers={"batchd-account": "default"})
    with client, pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(**PARAMS)


def test_sdk_invalid_body_is_a_bad_request_before_any_batch(full: Ingress) -> None:
    """A body batchd can already tell is wrong raises BadRequestError at once."""
    with sdk(full) as client, pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(model=MODEL, max_tokens=0, messages=[])
    assert exc.value.body["error"]["message"].startswith("max_tokens:")  # type: ignore[index]


def test_errored_result_is_the_apis_own_error(full: Ingress) -> None:
    """A request the API refuses in the batch raises BadRequestError with the API's error."""
    with sdk(full) as client, pytest.raises(anthropic.BadRequestError) as exc:
        client.messages.create(**PARAMS, extra_body={"temperature": 5})
    body = exc.value.body
    assert isinstance(body, dict)
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "temperature" in body["error"]["message"]
    assert exc.value.response.headers["batchd-request-id"].startswith("default.")


@pytest.mark.parametrize(
    ("profile", "status", "error_class", "etype"),
    [
        ({"result_api_error_rate": 1.0}, 500, anthropic.InternalServerError, "api_error"),
        ({"result_overloaded_rate": 1.0}, 529, anthropic.OverloadedError, "overloaded_error"),
    ],
)
def test_retryable_result_past_its_attempts_gets_the_apis_status(
    full: Ingress,
    emulator_profile: Any,
    profile: dict[str, float],
    status: int,
    error_class: type[anthropic.APIStatusError],
    etype: str,
) -> None:
    """A request that ends dead on api_error / overloaded_error answers 500 / 529 as the API."""
    emulator_profile(profile)
    with sdk(full) as client, pytest.raises(error_class) as exc:
        client.messages.create(**PARAMS)
    assert exc.value.status_code == status
    assert exc.value.body["error"]["type"] == etype  # type: ignore[index]


def test_repeated_idempotency_key_waits_for_the_same_request(full: Ingress) -> None:
    """Two calls with one Idempotency-Key are one request: same id, same Message, billed once."""
    before = billed(full)
    headers = {"Idempotency-Key": "drop-in-1"}
    with sdk(full) as client:
        first = client.messages.with_raw_response.create(**PARAMS, extra_headers=headers)
        again = client.messages.with_raw_response.create(**PARAMS, extra_headers=headers)
    assert first.headers["batchd-request-id"] == again.headers["batchd-request-id"]
    assert first.parse().id == again.parse().id
    assert billed(full) == before + 1


def test_hold_past_the_maximum_is_a_retryable_503_naming_the_request(held: Ingress) -> None:
    """Past drop_in_max_hold: 503 with retry-after (not x-should-retry: false), the id and how
    to fetch it; the request stays queued."""
    response = held.http().post("/v1/messages", json=PARAMS)
    body = assert_error(response, 503, "api_error")
    rid = response.headers["batchd-request-id"]
    assert response.headers["Retry-After"] == "1"
    assert response.headers["retry-after-ms"] == "1000"
    assert "x-should-retry" not in response.headers
    assert f"GET /v1/requests/{rid}" in body["error"]["message"]
    assert held.http().get(f"/v1/requests/{rid}").json()["status"] == "pending"


def test_sdk_retries_of_a_hold_that_ran_out_re_attach(held: Ingress) -> None:
    """With retries on, every attempt after a hold ran out waits for the request the first one
    queued: three attempts, one request."""
    attempts: list[httpx2.Response] = []
    before = held.counter("submitted")
    client = anthropic.Anthropic(
        base_url=held.url,
        api_key=held.tokens["full"],
        max_retries=2,
        http_client=anthropic.DefaultHttpxClient(event_hooks={"response": [attempts.append]}),
    )
    with client, pytest.raises(anthropic.ServiceUnavailableError):
        client.messages.create(**PARAMS)
    assert [a.request.headers["x-stainless-retry-count"] for a in attempts] == ["0", "1", "2"]
    assert len({a.headers["batchd-request-id"] for a in attempts}) == 1
    assert held.counter("submitted") == before + 1


def test_drop_in_errors_have_exactly_the_apis_shape(held: Ingress) -> None:
    """An error batchd answers itself carries only type, error{type, message}, request_id."""
    response = held.http().post("/v1/messages", json={"model": "m", "messages": []})
    body = assert_error(response, 400, "invalid_request_error")
    assert set(body) == {"type", "error", "request_id"}
    assert set(body["error"]) == {"type", "message"}


def test_drop_in_stream_is_refused_by_name(held: Ingress) -> None:
    """stream: true gets invalid_request_error naming stream, before anything is queued."""
    response = held.http().post("/v1/messages", json={**PARAMS, "stream": True})
    body = assert_error(response, 400, "invalid_request_error")
    assert body["error"]["message"].startswith("stream:")
