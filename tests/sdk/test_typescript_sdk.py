"""The official TypeScript SDK (`@anthropic-ai/sdk`, pinned in tests/sdk/ts/package.json) pointed
at batchd with `baseURL`, run by `node` through tests/sdk/ts/call.mjs: the same habits as the
Python SDK's tests, checked against the emulator's audit."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.ingress.conftest import Ingress
from tests.sdk.conftest import (
    BETA,
    EXPIRY,
    MAX_ATTEMPTS,
    MODEL,
    UNKNOWN_BETA,
    Audit,
    api_answer,
    batch_of,
    betas_of_batches,
    params,
)
from tests.support.daemon import wait_for

Profile = Callable[[dict[str, Any]], Any]
TS_DIR = Path(__file__).resolve().parent / "ts"
SCRIPT = TS_DIR / "call.mjs"
SDK_PACKAGE = "@anthropic-ai/sdk"
INSTALL = "npm ci --prefix tests/sdk/ts"
#: Seconds one run of the script may take.
RUN_TIMEOUT = 180


def sdk_problem() -> str | None:
    """Why the TypeScript SDK cannot run here, or None."""
    node = shutil.which("node")
    if node is None:
        return "node (Node.js 20 or newer) is not on PATH"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    found = re.match(r"v(\d+)\.", version.stdout.strip())
    if found is None or int(found[1]) < 20:
        return f"Node.js 20 or newer is needed; `node --version` says {version.stdout.strip()!r}"
    pinned = json.loads((TS_DIR / "package.json").read_text())["dependencies"][SDK_PACKAGE]
    installed = TS_DIR / "node_modules" / SDK_PACKAGE / "package.json"
    if not installed.exists():
        return f"{SDK_PACKAGE} is not installed in tests/sdk/ts/node_modules"
    have = json.loads(installed.read_text())["version"]
    if have != pinned:
        return f"tests/sdk/ts/node_modules has {SDK_PACKAGE} {have}; package.json pins {pinned}"
    return None


@pytest.fixture(scope="module", autouse=True)
def typescript_sdk() -> None:
    """Skip without the SDK installed, saying how to install it; under CI, fail instead."""
    problem = sdk_problem()
    if problem is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{problem}: .ci/run installs it with `{INSTALL}`", pytrace=False)
    pytest.skip(f"{problem}: install it with `{INSTALL}` (or `make ts-sdk`)")


def start(ing: Ingress, plan: dict[str, Any], auth: str = "api_key") -> subprocess.Popen[str]:
    """Start call.mjs on this plan, authenticated with the full token (`auth`: api_key/bearer)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "BATCHD_"))}
    env |= {"BATCHD_URL": ing.url, "BATCHD_TOKEN": ing.tokens["full"], "BATCHD_AUTH": auth}
    return subprocess.Popen(
        ["node", str(SCRIPT), json.dumps(plan)],
        cwd=TS_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """What each call of a started run got back."""
    try:
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    assert proc.returncode == 0, f"call.mjs exited {proc.returncode}:\n{err[-3000:]}"
    calls: list[dict[str, Any]] = json.loads(out)["calls"]
    return calls


def run(ing: Ingress, *calls: dict[str, Any], auth: str = "api_key", **plan: Any) -> list[Any]:
    """Run these calls (plan: client={timeout_ms, max_retries, headers}, parallel=bool)."""
    return finish(start(ing, {"calls": list(calls), **plan}, auth))


def create(prompt: str) -> dict[str, Any]:
    return {"op": "create", "params": params(prompt)}


def statuses(call: dict[str, Any]) -> list[int | None]:
    """The status each HTTP attempt got (None: it timed out client-side)."""
    return [a["status"] for a in call["attempts"]]


def retry_counts(call: dict[str, Any]) -> list[str]:
    return [a["retry_count"] for a in call["attempts"]]


# -- retries that re-attach ------------------------------------------------------------------------


def test_a_call_whose_attempts_time_out_is_answered_and_billed_once(
    drop_in: Ingress, emulator_profile: Profile
) -> None:
    """Attempts that time out client-side are retried; the retries re-attach to the request the
    first queued: one Message, one batch request, billed once."""
    emulator_profile({"processing_time": [3, 3]})
    audit = Audit.take(drop_in)
    [call] = run(
        drop_in, create("Timed out, then answered"), client={"timeout_ms": 500, "max_retries": 8}
    )
    assert call["ok"], call
    assert "Timed out, then answered" in call["data"]["content"][0]["text"]
    assert statuses(call)[0] is None  # the first attempt timed out
    assert statuses(call)[-1] == 200
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
    [call] = run(
        drop_in, create("Held, then answered"), client={"timeout_ms": 4500, "max_retries": 5}
    )
    assert call["ok"], call
    assert None not in statuses(call)  # no attempt timed out
    assert statuses(call)[0] == 503 and statuses(call)[-1] == 200
    assert audit.since()["requests"] == 1
    assert audit.since()["billed"] == 1


def test_a_dead_request_is_not_resubmitted_by_the_sdk(
    drop_in: Ingress, emulator_profile: Profile
) -> None:
    """A request that ends dead answers 500 with x-should-retry: false: one HTTP attempt, and
    batchd's own attempts are the only batch requests."""
    emulator_profile({"result_api_error_rate": 1.0})
    audit = Audit.take(drop_in)
    [call] = run(drop_in, create("Dead on arrival"), client={"max_retries": 2})
    assert not call["ok"]
    assert (call["error"]["class"], call["error"]["status"]) == ("InternalServerError", 500)
    assert call["error"]["headers"]["x-should-retry"] == "false"
    assert retry_counts(call) == ["0"]
    assert audit.since()["requests"] == MAX_ATTEMPTS
    assert audit.since()["billed"] == 0


def test_an_expired_request_is_not_resubmitted_by_the_sdk(
    drop_in: Ingress, emulator_profile: Profile
) -> None:
    """An expired result (retry.retry_expired off) answers 504 with x-should-retry: false: one
    HTTP attempt, one batch request."""
    emulator_profile({"result_expired_rate": 1.0})
    audit = Audit.take(drop_in)
    proc = start(drop_in, {"calls": [create("Expired in its batch")], "client": {"max_retries": 2}})
    try:
        wait_for(lambda: audit.since()["batches_created"], 30, "the batch to be created")
    finally:
        drop_in.emulator.advance(EXPIRY)  # an unprocessed request expires with its batch
        [call] = finish(proc)
    assert not call["ok"]
    assert (call["error"]["class"], call["error"]["status"]) == ("GatewayTimeoutError", 504)
    assert call["error"]["headers"]["x-should-retry"] == "false"
    assert retry_counts(call) == ["0"]
    assert audit.since()["requests"] == 1


# -- idempotency keys ------------------------------------------------------------------------------


def test_a_reused_idempotency_key_with_another_body_is_a_conflict(drop_in: Ingress) -> None:
    """An Idempotency-Key set once in defaultHeaders answers the second prompt with 409
    (ConflictError), not retried, naming the key; only the first prompt is sent."""
    audit = Audit.take(drop_in)
    headers = {"Idempotency-Key": "ts-default-key"}
    first, second = run(
        drop_in,
        create("First prompt"),
        create("Second prompt"),
        client={"max_retries": 2, "headers": headers},
    )
    assert first["ok"] and "First prompt" in first["data"]["content"][0]["text"]
    assert (second["error"]["class"], second["error"]["status"]) == ("ConflictError", 409)
    message = second["error"]["body"]["error"]["message"]
    assert "ts-default-key" in message and "params" in message
    assert second["error"]["headers"]["x-should-retry"] == "false"
    assert retry_counts(second) == ["0"]
    assert audit.since()["requests"] == 1


# -- betas -----------------------------------------------------------------------------------------


def test_beta_calls_are_batched_apart_and_created_with_their_header(drop_in: Ingress) -> None:
    """Two plain calls and a beta call sent together: the plain ones share a batch created
    without anthropic-beta; the beta one has a batch of its own created with it."""
    beta = {"op": "beta.create", "params": params("beta 1"), "betas": [BETA]}
    calls = run(drop_in, create("plain 1"), create("plain 2"), beta, parallel=True)
    assert all(c["ok"] for c in calls), calls
    plain_1, plain_2, beta_1 = (batch_of(drop_in, c["request_id"]) for c in calls)
    betas = betas_of_batches(drop_in)
    assert plain_1 == plain_2 != beta_1
    assert betas[plain_1] == []
    assert betas[beta_1] == [BETA]


def test_an_unknown_beta_is_refused_with_the_apis_message(drop_in: Ingress) -> None:
    """betas: [unknown] raises BadRequestError at once with the message the API gives for it;
    nothing is queued."""
    before = drop_in.counter("submitted")
    [call] = run(drop_in, {"op": "beta.create", "params": params(), "betas": [UNKNOWN_BETA]})
    direct = api_answer(
        drop_in, "POST", "/v1/messages/count_tokens", json=COUNT,
        headers={"anthropic-beta": UNKNOWN_BETA},
    )  # fmt: skip
    assert (call["error"]["class"], call["error"]["status"]) == ("BadRequestError", 400)
    assert call["error"]["body"]["error"]["message"] == direct.json()["error"]["message"]
    assert drop_in.counter("submitted") == before


# -- the routes beside messages.create -------------------------------------------------------------

AUTHS = ["api_key", "bearer"]
COUNT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "How many?"}]}


@pytest.mark.parametrize("auth", AUTHS)
def test_count_tokens_is_the_apis_count(drop_in: Ingress, auth: str) -> None:
    """messages.countTokens through batchd answers what the API answers, and bills nothing."""
    audit = Audit.take(drop_in)
    [call] = run(drop_in, {"op": "count_tokens", "params": COUNT}, auth=auth)
    direct = api_answer(drop_in, "POST", "/v1/messages/count_tokens", json=COUNT).json()
    assert call["ok"], call
    assert call["data"] == direct
    assert audit.since()["requests"] == 0


@pytest.mark.parametrize("auth", AUTHS)
def test_models_list_pages_through_the_apis_models(drop_in: Ingress, auth: str) -> None:
    """models.list, auto-paginated 5 at a time through batchd, is the API's list."""
    [call] = run(drop_in, {"op": "models.list", "params": {"limit": 5}}, auth=auth)
    direct = api_answer(drop_in, "GET", "/v1/models", params={"limit": 1000}).json()
    assert call["ok"], call
    assert call["data"] == [m["id"] for m in direct["data"]]
    assert len(call["attempts"]) > 1  # more than one page came through


@pytest.mark.parametrize("auth", AUTHS)
def test_models_retrieve_is_the_apis_model(drop_in: Ingress, auth: str) -> None:
    """models.retrieve through batchd answers the API's ModelInfo."""
    [call] = run(drop_in, {"op": "models.retrieve", "model": MODEL}, auth=auth)
    direct = api_answer(drop_in, "GET", f"/v1/models/{MODEL}").json()
    assert call["ok"], call
    assert call["data"] == direct
