"""The emulated model: what a Message answers to given params, the same every time.

Text echoes the last user turn; `tools` may bring a `tool_use` block, `thinking` a signed
`thinking` block first; `stop_sequences` and `max_tokens` end the answer early. Every draw is
seeded by a digest of the params, so one request always gets one answer, on either route.
"""

from __future__ import annotations

import base64
import hashlib
import random
from dataclasses import dataclass
from typing import Any

import orjson

from batchd.emulator.usage import CacheUse
from batchd.emulator.validate import custom_tools

# Characters of the last user turn a reply echoes.
SNIPPET_CHARS = 100
# Chance that `tool_choice: auto` (the default when tools are given) answers with a tool call.
AUTO_TOOL_USE_RATE = 0.5
# Range of tokens a thinking block takes; always below the smallest valid budget (1024).
THINKING_TOKENS = (32, 256)
# Output tokens a tool_use block costs beyond its input's JSON.
TOOL_USE_OVERHEAD_TOKENS = 10


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _last_user(params: dict[str, Any]) -> tuple[str, Any]:
    """The text and the raw content of the last user turn."""
    text, content = "", None
    messages = params.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                text = text_of(content)
    return text, content


def reply_text(params: dict[str, Any]) -> str:
    """The fake answer's text: a digest and an echo of the last user turn."""
    last_user, _content = _last_user(params)
    digest = hashlib.blake2b(last_user.encode(), digest_size=6).hexdigest()
    snippet = " ".join(last_user.split())[:SNIPPET_CHARS]
    return f"Emulated reply {digest}: {snippet}"


def output_tokens(text: str) -> int:
    return max(1, len(text) // 4)


@dataclass(frozen=True)
class Answer:
    """A Message's content, stop reason and output tokens, when not plain text to end_turn."""

    content: tuple[dict[str, Any], ...]
    stop_reason: str
    stop_sequence: str | None
    output_tokens: int


def _seed(params: dict[str, Any]) -> random.Random:
    digest = hashlib.blake2b(orjson.dumps(params, option=orjson.OPT_SORT_KEYS), digest_size=8)
    return random.Random(digest.digest())


def _value_for(schema: Any) -> Any:
    """A value a JSON schema accepts, for the common types."""
    if not isinstance(schema, dict):
        return "emulated"
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object":
        return _input_for(schema)
    return {
        "integer": 1,
        "number": 1.5,
        "boolean": True,
        "array": [],
        "null": None,
    }.get(str(kind), "emulated")


def _input_for(schema: dict[str, Any]) -> dict[str, Any]:
    """A tool input with every key the schema requires."""
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required")
    names = [r for r in required if isinstance(r, str)] if isinstance(required, list) else []
    return {name: _value_for(properties.get(name)) for name in names}


def _tool_call(params: dict[str, Any], rng: random.Random) -> dict[str, Any] | None:
    """The tool the answer calls, or None: by tool_choice, and by chance under `auto`."""
    tools = custom_tools(params.get("tools"))
    choice = params.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else "auto"
    if not tools or kind == "none":
        return None
    if kind == "tool":
        named = [t for t in tools if t.get("name") == choice.get("name")]  # type: ignore[union-attr]
        return named[0] if named else None
    if kind == "auto":
        _text, content = _last_user(params)
        answering = isinstance(content, list) and any(
            isinstance(b, dict) and b.get("type") == "tool_result" for b in content
        )
        if answering or rng.random() >= AUTO_TOOL_USE_RATE:
            return None
    return tools[rng.randrange(len(tools))]


def _thinking_block(params: dict[str, Any], rng: random.Random) -> tuple[dict[str, Any], int]:
    tokens = rng.randint(*THINKING_TOKENS)
    seed = hashlib.blake2b(orjson.dumps(params, option=orjson.OPT_SORT_KEYS), digest_size=48)
    thought = "Emulated thinking about the request. "
    text = (thought * (tokens * 4 // len(thought) + 1))[: tokens * 4]
    signature = base64.b64encode(b"emulated-signature:" + seed.digest()).decode()
    return {"type": "thinking", "thinking": text, "signature": signature}, tokens


def answer(params: dict[str, Any], reply: str) -> Answer | None:
    """The answer to `params` with `reply` as its text; None when that is plain end_turn text."""
    max_tokens = params.get("max_tokens")
    limit = max_tokens if isinstance(max_tokens, int) else None
    if (
        "thinking" not in params
        and "tools" not in params
        and "stop_sequences" not in params
        and (limit is None or len(reply) // 4 <= limit)
    ):
        return None
    thinking = params.get("thinking")
    thinks = isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")
    stops = params.get("stop_sequences")
    if (
        not thinks
        and not custom_tools(params.get("tools"))
        and not stops
        and (limit is None or output_tokens(reply) <= limit)
    ):
        return None
    rng = _seed(params)
    blocks: list[dict[str, Any]] = []
    used = 0
    if thinks:
        block, used = _thinking_block(params, rng)
        blocks.append(block)
    tool = _tool_call(params, rng)
    stop_reason, stop_sequence = "end_turn", None
    text = reply
    tool_block: dict[str, Any] | None = None
    if tool is not None:
        name = str(tool["name"])
        text = f"I'll use the {name} tool."
        digest = hashlib.blake2b(f"{reply}/{name}/{rng.random()}".encode(), digest_size=12)
        tool_input = _input_for(tool.get("input_schema") or {})
        tool_block = {
            "type": "tool_use",
            "id": "toolu_" + digest.hexdigest(),
            "name": name,
            "input": tool_input,
            "caller": {"type": "direct"},
        }
        stop_reason = "tool_use"
    elif isinstance(stops, list) and stops:
        stop_sequence = str(stops[rng.randrange(len(stops))])
        stop_reason = "stop_sequence"
    tool_tokens = 0
    if tool_block is not None:
        tool_tokens = output_tokens(orjson.dumps(tool_block["input"]).decode())
        tool_tokens += TOOL_USE_OVERHEAD_TOKENS
    if limit is not None and used + output_tokens(text) + tool_tokens > limit:
        # The answer runs out of tokens inside its text: what fits, and no tool call.
        room = max(0, limit - used)
        text = text[: room * 4]
        tool_block, tool_tokens = None, 0
        stop_reason, stop_sequence = "max_tokens", None
        used = limit
    else:
        used += output_tokens(text) + tool_tokens
    if text:
        blocks.append({"type": "text", "text": text, "citations": None})
    if tool_block is not None:
        blocks.append(tool_block)
    return Answer(tuple(blocks), stop_reason, stop_sequence, used)


def fake_message(
    *,
    message_id: str,
    model: str,
    text: str,
    input_tokens: int,
    beta: bool,
    result: Answer | None = None,
    cache: CacheUse | None = None,
    service_tier: str = "batch",
) -> dict[str, Any]:
    """A Message as the Messages API returns it (valid against the spec's `Message`)."""
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens(text) if result is None else result.output_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": None,
        "inference_geo": None,
        "server_tool_use": None,
        "service_tier": service_tier,
    }
    if cache is not None and (cache.creation or cache.read):
        usage.update(cache.usage())
    if result is None:
        content: list[dict[str, Any]] = [{"type": "text", "text": text, "citations": None}]
        stop_reason, stop_sequence = "end_turn", None
    else:
        content = [dict(block) for block in result.content]
        stop_reason, stop_sequence = result.stop_reason, result.stop_sequence
    if beta:
        for block in content:
            # BetaResponseToolUseBlock has no caller in the stored description.
            if block["type"] == "tool_use":
                block.pop("caller", None)
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": stop_sequence,
        "stop_details": None,
        "usage": usage,
        "container": None,
    }
    if beta:
        # BetaMessage and BetaUsage require these as well.
        message["context_management"] = None
        usage["iterations"] = None
        usage["speed"] = None
    return message
