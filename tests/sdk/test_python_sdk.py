"""The official Python SDK (`anthropic`) pointed at batchd with `base_url`, with its own habits:
retries of timeouts and 5xx, Idempotency-Key in default headers, betas, the routes beside
`messages.create`. The emulator's audit says what was sent and billed."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx2
import pytest

from tests.ingress.conftest import Ingress
from tests.sdk.conftest import (
    BETA,
    EXPIRY,
    MAX_ATTEMPTS,
    MODEL,
    UNKNOWN_BETA,
    Audit,
    batch_of,
    betas_of_batches,
    params,
)
from tests.support.daemon import wait_for

Profile = Callable[[dict[str, Any]], Any]
#: A token-counting body.
COUNT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "How many?"}]}


@dataclass
class Attempts:
    """Every HTTP attempt an SDK client made, and the answers it got (a timed-out one has none)."""

    sent: list[httpx2.Request] = field(default_factory=list)
    answered: list[httpx2.Response] = field(default_factory=list)

    def http_client(self) -> httpx2.Client:
        hooks: dict[str, list[Callable[..., Any]]] = {
            "request": [self.sent.append],
            "response": [self.answered.append],
        }
        return anthropic.DefaultHttpxClient(event_hooks=hooks)

    @property
    def retry_counts(self) -> list[str]:
        return [r.headers["x-stainless-retry-count"] for r in self.sent]

    @property
    def answered_counts(self) -> list[str]:
        """The retry counts of the attempts that got an answer."""
        return [r.request.headers["x-stainless-retry-count"] for r in self.answered]

    @property
    def statuses(self) -> list[int]:
        return [r.status_code for r in self.answered]


def sdk(
    ing: Ingress, attempts: Attempts | None = None, *, auth: str = "api_key", **kwargs: Any
) -> anthropic.Anthropic:
    """The SDK as a user configures it: base_url and the token as api_key (or auth_token)."""
    kwargs.setdefault("timeout", 60.0)
    kwargs[auth] = ing.tokens["full"]
    if attempts is not None:
        kwargs["http_client"] = attempts.http_client()
    return anthropic.Anthropic(base_url=ing.url, **kwargs)


def emulator_sdk(ing: Ingress) -> anthropic.Anthropic:
    """The SDK on the emulator itself, with the account's API key: what the API answers."""
    return anthropic.Anthropic(base_url=ing.emulator.url, api_key=ing.emulator.api_key)


# -- retries that re-attach ------------------------------------------------------------------------


def test_a_call_whose_attempts_time_out_is_answered_and_billed_once(
    drop_in: Ingress, emulator_profile: Profile
) -> None:
    """Attempts that time out client-side are retried; the retries re-attach to the request the
    first queued: one Message, one batch request, billed once."""
    emulator_profile({"processing_time": [3, 3]})
    audit = Audit.take(drop_in)
    attempts = Attempts()
    with sdk(drop_in, attempts, timeout=0.5, max_retries=8) as client:
        message = client.messages.create(**params("Timed out, then answered"))
    assert "Timed out, then answered" in message.content[0].text
    assert "0" not in attempts.answered_counts  # the first attempt timed out
    assert len(attempts.sent) > 1
    assert audit.since() == {
        "requests": 1, "billed": 1, "batches_created": 1, "double_submitted": [],
    }  # fmt: skip


def test_a_hold_shortened_to_the_sdk_timeout_is_retried_and_billed_once(
    drop_in: Ingress, emulator_profile: Profile
) -> None:
    """With a timeout longer than the hold floor, batchd answers 503 + retry-after before the
    SDK gives up; its retries re-attach and the call is billed once."""
    emulator_profile({"processing_time": [3, 3]})
    audit = Audit.take(drop_in)
    attempts = Attempts()
    with sdk(drop_in, attempts, timeout=4.5, max_retries=5) as client:
        message = client.messages.create(**params("Held, then answered"))
    assert message.type == "message"
    assert attempts.answered_counts == attempts.retry_counts  # no attempt timed out
    assert attempts.statuses[0] == 503 and attempts.statuses[-1] == 200
    assert audit.since()["requests"] == 1
    assert audit.since()["billed"] == 1


def test_a_dead_request_is_not_resubmitted_by_the_sdk(
    drop_in: Ingress, emulator_profile: Profile
) -> None:
    """A request that ends dead answers 500 with x-should-retry: false: one HTTP attempt, and
    batchd's own attempts are the only batch requests."""
    emulator_profile({"result_api_error_rate": 1.0})
    audit = Audit.take(drop_in)
    attempts = Attempts()
    with (
        sdk(drop_in, attempts, max_retries=2) as client,
        pytest.raises(anthropic.InternalServerError) as exc,
    ):
        client.messages.create(**params("Dead on arrival"))
    assert exc.value.status_code == 500
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert attempts.retry_counts == ["0"]
    assert audit.since()["requests"] == MAX_ATTEMPTS
    assert audit.since()["billed"] == 0


def test_an_expired_request_is_not_resubmitted_by_the_sdk(
    drop_in: Ingress, emulator_profile: Profile
) -> None:
    """An expired result (retry.retry_expired off) answers 504 with x-should-retry: false: one
    HTTP attempt, one batch request."""
    emulator_profile({"result_expired_rate": 1.0})
    audit = Audit.take(drop_in)
    attempts = Attempts()
    with sdk(drop_in, attempts, max_retries=2) as client, ThreadPoolExecutor(1) as pool:
        call = pool.submit(lambda: client.messages.create(**params("Expired in its batch")))
        wait_for(lambda: audit.since()["batches_created"], 30, "the batch to be created")
        drop_in.emulator.advance(EXPIRY)  # an unprocessed request expires with its batch
        exc = call.exception(60)
    assert isinstance(exc, anthropic.GatewayTimeoutError), exc
    assert exc.response.headers["x-should-retry"] == "false"
    assert "expired" in exc.message
    assert attempts.retry_counts == ["0"]
    assert audit.since()["requests"] == 1


# -- idempotency keys ------------------------------------------------------------------------------


def test_a_reused_idempotency_key_with_another_body_is_a_conflict(drop_in: Ingress) -> None:
    """An Idempotency-Key set once in default_headers answers the second prompt with 409
    (ConflictError), not retried, naming the key; only the first prompt is sent."""
    audit = Audit.take(drop_in)
    attempts = Attempts()
    headers = {"Idempotency-Key": "python-default-key"}
    with sdk(drop_in, attempts, max_retries=2, default_headers=headers) as client:
        first = client.messages.create(**params("First prompt"))
        with pytest.raises(anthropic.ConflictError) as exc:
            client.messages.create(**params("Second prompt"))
    assert "First prompt" in first.content[0].text
    assert "python-default-key" in exc.value.message and "params" in exc.value.message
    assert exc.value.response.headers["x-should-retry"] == "false"
    assert attempts.statuses == [200, 409]
    assert audit.since()["requests"] == 1


def test_the_same_idempotency_key_and_body_re_attach(drop_in: Ingress) -> None:
    """The same call twice under one key (extra_headers) is one request, billed once."""
    audit = Audit.take(drop_in)
    headers = {"Idempotency-Key": "python-extra-key"}
    with sdk(drop_in) as client:
        first = client.messages.with_raw_response.create(**params(), extra_headers=headers)
        again = client.messages.with_raw_response.create(**params(), extra_headers=headers)
    assert first.headers["batchd-request-id"] == again.headers["batchd-request-id"]
    assert first.parse().id == again.parse().id
    assert audit.since()["billed"] == 1


# -- betas -----------------------------------------------------------------------------------------


def test_beta_calls_are_batched_apart_and_created_with_their_header(drop_in: Ingress) -> None:
    """Two plain calls and a beta call sent together: the plain ones share a batch created
    without anthropic-beta; the beta one has a batch of its own created with it."""

    def plain(prompt: str) -> str:
        with sdk(drop_in) as client:
            raw = client.messages.with_raw_response.create(**params(prompt))
        assert raw.parse().type == "message"
        return raw.headers["batchd-request-id"]

    def beta(prompt: str) -> str:
        with sdk(drop_in) as client:
            raw = client.beta.messages.with_raw_response.create(**params(prompt), betas=[BETA])
        assert raw.parse().type == "message"
        return raw.headers["batchd-request-id"]

    with ThreadPoolExecutor(3) as pool:
        calls = [pool.submit(plain, "plain 1"), pool.submit(plain, "plain 2"),
                 pool.submit(beta, "beta 1")]  # fmt: skip
        plain_1, plain_2, beta_1 = (batch_of(drop_in, c.result()) for c in calls)
    betas = betas_of_batches(drop_in)
    assert plain_1 == plain_2 != beta_1
    assert betas[plain_1] == []
    assert betas[beta_1] == [BETA]


def test_an_unknown_beta_is_refused_with_the_apis_message(drop_in: Ingress) -> None:
    """betas=[unknown] raises BadRequestError at once with the message the API gives for it;
    nothing is queued."""
    before = drop_in.counter("submitted")
    with sdk(drop_in) as client, pytest.raises(anthropic.BadRequestError) as exc:
        client.beta.messages.create(**params(), betas=[UNKNOWN_BETA])
    with emulator_sdk(drop_in) as api, pytest.raises(anthropic.BadRequestError) as direct:
        api.beta.messages.count_tokens(**COUNT, betas=[UNKNOWN_BETA])
    assert exc.value.body["error"]["message"] == direct.value.body["error"]["message"]  # type: ignore[index]
    assert drop_in.counter("submitted") == before


# -- the routes beside messages.create -------------------------------------------------------------

AUTHS = ["api_key", "auth_token"]


@pytest.mark.parametrize("auth", AUTHS)
def test_count_tokens_is_the_apis_count(drop_in: Ingress, auth: str) -> None:
    """messages.count_tokens through batchd answers what the API answers, and bills nothing."""
    audit = Audit.take(drop_in)
    with sdk(drop_in, auth=auth) as client, emulator_sdk(drop_in) as api:
        counted = client.messages.count_tokens(**COUNT)
        assert counted.input_tokens == api.messages.count_tokens(**COUNT).input_tokens
    assert counted.input_tokens > 0
    assert audit.since()["requests"] == 0


@pytest.mark.parametrize("auth", AUTHS)
def test_models_list_pages_through_the_apis_models(drop_in: Ingress, auth: str) -> None:
    """models.list, auto-paginated 5 at a time through batchd, is the API's list."""
    with sdk(drop_in, auth=auth) as client, emulator_sdk(drop_in) as api:
        through = [m.id for m in client.models.list(limit=5)]
        direct = [m.id for m in api.models.list(limit=1000)]
    assert through == direct
    assert len(through) > 5  # more than one page came through


@pytest.mark.parametrize("auth", AUTHS)
def test_models_retrieve_is_the_apis_model(drop_in: Ingress, auth: str) -> None:
    """models.retrieve of an alias through batchd answers the API's ModelInfo for it."""
    with sdk(drop_in, auth=auth) as client, emulator_sdk(drop_in) as api:
        model = client.models.retrieve(MODEL)
        assert model == api.models.retrieve(MODEL)
    assert model.id.startswith(MODEL)  # the alias's dated id


def test_models_retrieve_of_an_unknown_model_is_the_apis_404(drop_in: Ingress) -> None:
    """An unknown model id raises NotFoundError with the API's own error."""
    with sdk(drop_in) as client, pytest.raises(anthropic.NotFoundError) as exc:
        client.models.retrieve("claude-nothing-1")
    assert exc.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
