"""Params validated as the API validates them: bad requests end `errored`, never refuse a batch."""

# The table of cases keeps each expected API message on one line, whatever its length.
# ruff: noqa: E501

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from batchd.emulator.validate import INPUT_BLOCK_TYPES, PARAMS_FIELDS
from tests.support.emulator import (
    EmulatorProcess,
    OpenAPISchemas,
    batch_requests,
    result_lines,
    validate_lines,
)

PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()
WEATHER = {
    "name": "get_weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def image(data: str, media_type: str = "image/png") -> dict[str, Any]:
    source = {"type": "base64", "media_type": media_type, "data": data}
    return {"role": "user", "content": [{"type": "image", "source": source}]}


CASES: list[tuple[dict[str, Any], str, str]] = [
    ({"max_tokens": 0}, "invalid_request_error", "max_tokens: Input should be greater than or equal to 1"),
    ({"model": "claude-nonexistent-9"}, "not_found_error", "model: claude-nonexistent-9"),
    ({"messages": [image("not base64 !!")]}, "invalid_request_error", "messages.0.content.0.image.source.base64.data: Invalid base64 data"),
    (
        {"messages": [image(base64.b64encode(b"GIF89a....").decode())]},
        "invalid_request_error",
        "messages.0.content.0.image.source.base64.data: Image does not match the provided media type image/png",
    ),
    ({"messages": [image(PNG, "image/bmp")]}, "invalid_request_error", "messages.0.content.0.image.source.base64.media_type: Input should be"),
    (
        {"messages": [{"role": "user", "content": [{"type": "hologram", "data": "x"}]}]},
        "invalid_request_error",
        "messages.0.content.0: Input tag 'hologram' found using 'type' does not match any of the expected tags: 'text'",
    ),
    ({"tools": [WEATHER | {"name": "get weather!"}]}, "invalid_request_error", "tools.0.custom.name: String should match pattern '^[a-zA-Z0-9_-]{1,128}$'"),
    ({"tools": [{"name": "get_weather"}]}, "invalid_request_error", "tools.0.custom.input_schema: Field required"),
    (
        {"tools": [WEATHER], "tool_choice": {"type": "tool", "name": "other"}},
        "invalid_request_error",
        "tool_choice: Tool 'other' not found in tools",
    ),
    (
        {"max_tokens": 2000, "thinking": {"type": "enabled", "budget_tokens": 2000}},
        "invalid_request_error",
        "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our documentation",
    ),
    (
        {"max_tokens": 4000, "thinking": {"type": "enabled", "budget_tokens": 512}},
        "invalid_request_error",
        "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
    ),
    ({"stream": True}, "invalid_request_error", "stream: Message Batches do not support streaming"),
    ({"max_tokens": 10_000_000}, "invalid_request_error", "max_tokens: 10000000 > 64000"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "kind", "fragment"), CASES)
def test_bad_params_end_errored_with_the_apis_error(
    http: httpx.Client,
    emu: EmulatorProcess,
    schemas: OpenAPISchemas,
    change: dict[str, Any],
    kind: str,
    fragment: str,
) -> None:
    """The batch is accepted; the bad request's line is errored with the API's type and words."""
    requests = batch_requests(3)
    requests[1]["params"].update(change)
    created = http.post("/v1/messages/batches", json={"requests": requests})
    assert created.status_code == 200
    emu.advance(1)
    lines = result_lines(http.get(f"/v1/messages/batches/{created.json()['id']}/results"))
    validate_lines(schemas, lines)
    results = {line["custom_id"]: line["result"] for line in lines}
    assert results["req-0"]["type"] == results["req-2"]["type"] == "succeeded"
    error = results["req-1"]["error"]["error"]
    assert (results["req-1"]["type"], error["type"]) == ("errored", kind)
    assert error["message"].startswith(fragment)


@pytest.mark.parametrize(
    "model",
    ["claude-sonnet-4-5", "claude-opus-4-1", "claude-haiku-4-5", "claude-3-5-haiku-latest",
     "claude-sonnet-4-5-20250929", "claude-opus-4-6", "claude-opus-5"],
)  # fmt: skip
def test_current_models_and_aliases_succeed(
    http: httpx.Client, emu: EmulatorProcess, model: str
) -> None:
    """Every current model id and alias is known, so its requests succeed."""
    created = http.post("/v1/messages/batches", json={"requests": batch_requests(1, model=model)})
    emu.advance(1)
    lines = result_lines(http.get(f"/v1/messages/batches/{created.json()['id']}/results"))
    assert lines[0]["result"]["type"] == "succeeded"


def test_block_types_are_the_specs(schemas: OpenAPISchemas) -> None:
    """The content block types validation accepts are the spec's InputContentBlock tags."""
    mapping = schemas.schema("InputContentBlock")["discriminator"]["mapping"]
    assert set(INPUT_BLOCK_TYPES) == set(mapping)


def test_params_fields_are_the_specs(schemas: OpenAPISchemas) -> None:
    """The top-level params accepted are the spec's CreateMessageParams properties."""
    assert set(PARAMS_FIELDS) == set(schemas.schema("CreateMessageParams")["properties"])


def test_valid_image_and_tool_result_succeed(http: httpx.Client, emu: EmulatorProcess) -> None:
    """A real PNG header and a tool_result turn are valid input."""
    requests = batch_requests(2)
    requests[0]["params"]["messages"] = [image(PNG)]
    requests[1]["params"]["messages"] = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": json.dumps({"c": 20})}
            ],
        },
    ]
    requests[1]["params"]["tools"] = [WEATHER]
    created = http.post("/v1/messages/batches", json={"requests": requests})
    emu.advance(1)
    lines = result_lines(http.get(f"/v1/messages/batches/{created.json()['id']}/results"))
    assert {line["result"]["type"] for line in lines} == {"succeeded"}
