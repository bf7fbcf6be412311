"""Answers beyond text (tool_use, thinking, early stops) and realistic usage, valid to the spec."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx

from tests.support.emulator import (
    EmulatorProcess,
    OpenAPISchemas,
    batch_requests,
    result_lines,
    validate_lines,
)

WEATHER = {
    "name": "get_weather",
    "description": "Weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "days", "unit"],
    },
}
THINKING = {"type": "enabled", "budget_tokens": 1024}
LONG_SYSTEM = "You are a careful assistant. " * 200


def run(
    http: httpx.Client, emu: EmulatorProcess, requests: list[dict[str, Any]], **params: str
) -> dict[str, dict[str, Any]]:
    """Create, end and download a batch; its result lines by custom_id."""
    created = http.post("/v1/messages/batches", json={"requests": requests}, params=params)
    created.raise_for_status()
    emu.advance(1)
    response = http.get(f"/v1/messages/batches/{created.json()['id']}/results", params=params)
    return {line["custom_id"]: line for line in result_lines(response)}


def messages(lines: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [line["result"]["message"] for line in lines.values()]


def test_forced_tool_choice_answers_tool_use(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """tool_choice any gives a tool_use block with every required key, stop_reason tool_use."""
    lines = run(http, emu, batch_requests(5, tools=[WEATHER], tool_choice={"type": "any"}))
    validate_lines(schemas, list(lines.values()))
    for message in messages(lines):
        assert message["stop_reason"] == "tool_use"
        call = message["content"][-1]
        assert call["type"] == "tool_use" and call["name"] == "get_weather"
        assert call["id"].startswith("toolu_")
        assert set(call["input"]) == {"city", "days", "unit"}
        assert call["input"]["unit"] == "celsius" and isinstance(call["input"]["days"], int)


def test_auto_tool_choice_sometimes_calls(http: httpx.Client, emu: EmulatorProcess) -> None:
    """With tools and no tool_choice, some answers call a tool and some answer in text."""
    lines = run(http, emu, batch_requests(40, tools=[WEATHER]))
    reasons = {m["stop_reason"] for m in messages(lines)}
    assert reasons == {"tool_use", "end_turn"}


def test_tool_choice_none_never_calls(http: httpx.Client, emu: EmulatorProcess) -> None:
    """tool_choice none answers in text only."""
    lines = run(http, emu, batch_requests(20, tools=[WEATHER], tool_choice={"type": "none"}))
    assert {m["stop_reason"] for m in messages(lines)} == {"end_turn"}


def test_thinking_block_comes_first_with_a_signature(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """With thinking enabled a signed thinking block precedes the text."""
    lines = run(http, emu, batch_requests(3, max_tokens=4096, thinking=THINKING))
    validate_lines(schemas, list(lines.values()))
    for message in messages(lines):
        first, second = message["content"][:2]
        assert first["type"] == "thinking" and first["thinking"] and first["signature"]
        assert second["type"] == "text"
        assert message["usage"]["output_tokens"] < 4096


def test_small_max_tokens_stops_with_max_tokens(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """An answer longer than max_tokens is cut there: stop_reason max_tokens."""
    lines = run(http, emu, batch_requests(3, max_tokens=3))
    validate_lines(schemas, list(lines.values()))
    for message in messages(lines):
        assert message["stop_reason"] == "max_tokens"
        assert message["usage"]["output_tokens"] == 3
        assert len(message["content"][0]["text"]) <= 12


def test_stop_sequences_stop_with_one_of_them(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """Given stop_sequences, the answer stops at one: stop_reason and stop_sequence say which."""
    stops = ["\n\nHuman:", "END"]
    lines = run(http, emu, batch_requests(10, stop_sequences=stops))
    validate_lines(schemas, list(lines.values()))
    for message in messages(lines):
        assert message["stop_reason"] == "stop_sequence"
        assert message["stop_sequence"] in stops


def test_beta_lines_with_tools_and_thinking_are_beta_shapes(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """In the beta form tool_use and thinking answers are valid BetaMessages."""
    requests = batch_requests(
        4, max_tokens=2048, thinking=THINKING, tools=[WEATHER], tool_choice={"type": "auto"}
    )
    lines = run(http, emu, requests, beta="true")
    validate_lines(schemas, list(lines.values()), beta=True)


def test_sdk_decodes_tool_use_and_thinking(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """The SDK types every new block: ThinkingBlock, TextBlock, ToolUseBlock."""
    requests = batch_requests(2, max_tokens=2048, thinking=THINKING, tools=[WEATHER])
    requests += batch_requests(2, "forced", tools=[WEATHER], tool_choice={"type": "any"})
    batch = sdk.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    emu.advance(1)
    kinds: set[str] = set()
    for line in sdk.messages.batches.results(batch.id):
        assert line.result.type == "succeeded"
        kinds |= {block.type for block in line.result.message.content}
    assert {"thinking", "text", "tool_use"} <= kinds


def test_same_request_same_answer_and_usage(http: httpx.Client, emu: EmulatorProcess) -> None:
    """The same params give the same content and token counts in another batch."""
    requests = batch_requests(6, tools=[WEATHER], max_tokens=1500, thinking=THINKING)
    first = run(http, emu, requests)
    second = run(http, emu, requests)
    for custom_id, line in first.items():
        a, b = line["result"]["message"], second[custom_id]["result"]["message"]
        assert a["content"] == b["content"] and a["usage"] == b["usage"]


def test_input_tokens_grow_with_the_prompt(http: httpx.Client, emu: EmulatorProcess) -> None:
    """input_tokens is about a quarter of the prompt's bytes; service_tier is batch."""
    requests = batch_requests(2)
    requests[0]["params"]["messages"] = [{"role": "user", "content": "x" * 400}]
    requests[1]["params"]["messages"] = [{"role": "user", "content": "x" * 4000}]
    lines = run(http, emu, requests)
    small, large = (lines[f"req-{i}"]["result"]["message"]["usage"] for i in range(2))
    assert 100 <= small["input_tokens"] < 120 and 1000 <= large["input_tokens"] < 1020
    assert small["service_tier"] == large["service_tier"] == "batch"


def test_cache_control_writes_then_reads(
    http: httpx.Client, emu: EmulatorProcess, schemas: OpenAPISchemas
) -> None:
    """A cached prefix is written by its first request and read by later ones in the workspace."""
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    first = run(http, emu, batch_requests(1, "first", system=system))
    validate_lines(schemas, list(first.values()))
    written = first["first-0"]["result"]["message"]["usage"]
    assert written["cache_creation_input_tokens"] > 1024 and written["cache_read_input_tokens"] == 0
    assert written["cache_creation"]["ephemeral_5m_input_tokens"] > 1024
    later = run(http, emu, batch_requests(3, "later", system=system))
    for message in messages(later):
        usage = message["usage"]
        assert usage["cache_read_input_tokens"] == written["cache_creation_input_tokens"]
        assert usage["cache_creation_input_tokens"] == 0 and usage["input_tokens"] < 50


def test_short_prefix_is_not_cached(http: httpx.Client, emu: EmulatorProcess) -> None:
    """A breakpoint before the model's minimum cacheable length caches nothing."""
    system = [{"type": "text", "text": "short", "cache_control": {"type": "ephemeral"}}]
    usage = messages(run(http, emu, batch_requests(1, system=system)))[0]["usage"]
    assert usage["cache_creation_input_tokens"] == usage["cache_read_input_tokens"] == 0
