"""The real-time routes: POST /v1/messages, count_tokens and models, driven by the official SDK."""

from __future__ import annotations

import time

import anthropic
import httpx
import pytest

from tests.support.emulator import EmulatorProcess, OpenAPISchemas, batch_requests

QUESTION: list[anthropic.types.MessageParam] = [
    {"role": "user", "content": "What is a quaternion?"}
]
CUSTOM_ID = "01JABCDEFGHJKMNPQRSTVWXYZ0"


def ask(
    sdk: anthropic.Anthropic,
    *,
    system: str | anthropic.Omit = anthropic.omit,
    extra_headers: dict[str, str] | None = None,
) -> anthropic.types.Message:
    return sdk.messages.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        messages=QUESTION,
        system=system,
        extra_headers=extra_headers,
    )


def test_message_is_standard_tier_and_valid(
    sdk: anthropic.Anthropic, schemas: OpenAPISchemas
) -> None:
    """A real-time call answers a valid Message at service_tier standard."""
    raw = sdk.messages.with_raw_response.create(
        model="claude-sonnet-4-5",
        max_tokens=256,
        messages=QUESTION,
    )
    schemas.validate("Message", raw.http_response.json())
    message = raw.parse()
    assert message.usage.service_tier == "standard"
    block = message.content[0]
    assert isinstance(block, anthropic.types.TextBlock)
    assert "What is a quaternion?" in block.text
    assert raw.headers["anthropic-ratelimit-tokens-limit"]


def test_same_generator_as_batches(
    sdk: anthropic.Anthropic, http: httpx.Client, emu: EmulatorProcess
) -> None:
    """The same params answer the same content and tokens on both routes; only the tier differs."""
    tools: list[anthropic.types.ToolParam] = [
        {"name": "lookup", "input_schema": {"type": "object", "required": ["q"]}}
    ]
    model, max_tokens = "claude-sonnet-4-5", 256
    params = {"model": model, "max_tokens": max_tokens, "messages": QUESTION, "tools": tools}
    raw = sdk.messages.with_raw_response.create(
        model=model, max_tokens=max_tokens, messages=QUESTION, tools=tools
    )
    live = raw.http_response.json()
    created = http.post(
        "/v1/messages/batches", json={"requests": [{"custom_id": "a", "params": params}]}
    ).json()
    emu.advance(1)
    line = http.get(f"/v1/messages/batches/{created['id']}/results").json()
    batched = line["result"]["message"]
    assert live["content"] == batched["content"]
    assert live["usage"]["input_tokens"] == batched["usage"]["input_tokens"]
    assert (live["usage"]["service_tier"], batched["usage"]["service_tier"]) == (
        "standard",
        "batch",
    )


def test_bad_params_are_http_400(sdk: anthropic.Anthropic) -> None:
    """Validation errors are BadRequestError with the API's message, not result lines."""
    with pytest.raises(anthropic.BadRequestError, match="greater than or equal to 1"):
        sdk.messages.create(model="claude-sonnet-4-5", max_tokens=0, messages=QUESTION)


def test_unknown_model_is_404(sdk: anthropic.Anthropic) -> None:
    """An unknown model is NotFoundError with the message `model: <name>`."""
    with pytest.raises(anthropic.NotFoundError, match="model: claude-none"):
        sdk.messages.create(model="claude-none", max_tokens=8, messages=QUESTION)


def test_stream_is_refused(http: httpx.Client) -> None:
    """stream: true is refused with 400."""
    body = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": QUESTION, "stream": True}
    response = http.post("/v1/messages", json=body)
    assert response.status_code == 400
    assert response.json()["error"]["message"].startswith("stream: ")


def test_faults_apply_to_messages(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """fault_operations [messages] makes real-time calls fail and leaves batches alone."""
    emu.set_profile({"http_529_rate": 1.0, "fault_operations": ["messages"]})
    with pytest.raises(anthropic.OverloadedError):
        ask(sdk)
    assert sdk.messages.batches.list().data == []
    assert emu.audit()[emu.api_key]["realtime_billed"] == 0


def test_realtime_latency_holds_the_answer(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """realtime_latency holds each call for that many real seconds."""
    emu.set_profile({"realtime_latency": [0.3, 0.3]})
    started = time.monotonic()
    ask(sdk)
    assert time.monotonic() - started >= 0.3


def test_lost_realtime_response_is_billed_without_an_answer(
    http: httpx.Client, emu: EmulatorProcess
) -> None:
    """realtime_lost_response_rate bills the call, then resets the connection unanswered."""
    emu.set_profile({"realtime_lost_response_rate": 1.0})
    body = {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": QUESTION}
    with pytest.raises(httpx.TransportError):
        http.post("/v1/messages", json=body, headers={"batchd-custom-id": CUSTOM_ID})
    audit = emu.audit()[emu.api_key]
    assert audit["realtime_billed"] == 1
    assert audit["realtime_double_billed"] == []


def test_audit_counts_realtime_billing(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """Each answered call is billed; the same batchd-custom-id twice is reported."""
    ask(sdk, extra_headers={"batchd-custom-id": CUSTOM_ID})
    ask(sdk, extra_headers={"batchd-custom-id": CUSTOM_ID})
    ask(sdk)
    audit = emu.audit()[emu.api_key]
    assert audit["realtime_billed"] == 3
    assert audit["realtime_double_billed"] == [CUSTOM_ID]
    assert audit["billed_both_routes"] == []


def test_audit_reports_billing_on_both_routes(
    sdk: anthropic.Anthropic, http: httpx.Client, emu: EmulatorProcess
) -> None:
    """A custom_id that succeeded in a batch and was billed in real time too is reported."""
    requests = batch_requests(2)
    requests[0]["custom_id"] = CUSTOM_ID
    http.post("/v1/messages/batches", json={"requests": requests}).raise_for_status()
    ask(sdk, extra_headers={"batchd-custom-id": CUSTOM_ID})
    assert emu.audit()[emu.api_key]["billed_both_routes"] == []
    emu.advance(1)
    audit = emu.audit()[emu.api_key]
    assert audit["billed_both_routes"] == [CUSTOM_ID]
    assert emu.admin("GET", "/audit")["totals"]["billed_both_routes"] == 1


def test_count_tokens_matches_usage(sdk: anthropic.Anthropic) -> None:
    """count_tokens gives the input_tokens a Message with the same prompt is billed for."""
    system = "Answer in one sentence. " * 20
    counted = sdk.messages.count_tokens(
        model="claude-sonnet-4-5",
        system=system,
        messages=QUESTION,
    )
    billed = ask(sdk, system=system).usage.input_tokens
    assert counted.input_tokens == billed > 100


def test_count_tokens_refuses_unknown_model(sdk: anthropic.Anthropic) -> None:
    """count_tokens for a model the API does not know is NotFoundError."""
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.count_tokens(model="claude-none", messages=QUESTION)


def test_models_page_like_the_api(sdk: anthropic.Anthropic, schemas: OpenAPISchemas) -> None:
    """models.list pages newest first with first_id/last_id, and auto-paging sees all once."""
    raw = sdk.models.with_raw_response.list(limit=3)
    page = raw.http_response.json()
    schemas.validate("ListResponse_ModelInfo_", page)
    assert len(page["data"]) == 3 and page["has_more"]
    assert page["first_id"] == page["data"][0]["id"] and page["last_id"] == page["data"][2]["id"]
    ids = [model.id for model in sdk.models.list(limit=4)]
    assert len(ids) == len(set(ids)) > 10
    assert "claude-sonnet-4-5-20250929" in ids
    dates = [model.created_at for model in sdk.models.list(limit=100)]
    assert dates == sorted(dates, reverse=True)


def test_model_by_alias_and_unknown(sdk: anthropic.Anthropic, schemas: OpenAPISchemas) -> None:
    """models.retrieve resolves an alias to its model; an unknown id is NotFoundError."""
    raw = sdk.models.with_raw_response.retrieve("claude-haiku-4-5")
    schemas.validate("ModelInfo", raw.http_response.json())
    assert raw.parse().id == "claude-haiku-4-5-20251001"
    with pytest.raises(anthropic.NotFoundError):
        sdk.models.retrieve("claude-none")


def test_new_routes_check_keys_and_versions(emu: EmulatorProcess) -> None:
    """models and count_tokens need a key and a known version, like every route."""
    no_key = httpx.get(emu.url + "/v1/models", headers={"anthropic-version": "2023-06-01"})
    bad_version = httpx.get(
        emu.url + "/v1/models",
        headers={"x-api-key": emu.api_key, "anthropic-version": "2020-01-01"},
    )
    assert (no_key.status_code, bad_version.status_code) == (401, 400)
