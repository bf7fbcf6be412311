"""Validating Messages params as the API does, with the API's messages where they are known.

In a batch a bad request becomes an `errored` result line; on the real-time routes it is an
HTTP error. The first problem found is reported, like the API's first pydantic error.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass
from typing import Any

from batchd.emulator.catalog import find_model

# The top-level fields of CreateMessageParams; the spec forbids any other.
PARAMS_FIELDS = frozenset(
    {
        "cache_control",
        "container",
        "inference_geo",
        "max_tokens",
        "messages",
        "metadata",
        "model",
        "output_config",
        "service_tier",
        "stop_sequences",
        "stream",
        "system",
        "temperature",
        "thinking",
        "tool_choice",
        "tools",
        "top_k",
        "top_p",
    }
)
# BetaCreateMessageParams adds these; the beta form of the endpoints accepts them.
BETA_PARAMS_FIELDS = PARAMS_FIELDS | {
    "context_management",
    "mcp_servers",
    "output_format",
    "speed",
    "user_profile_id",
}
# The fields of CountMessageTokensParams.
COUNT_FIELDS = frozenset(
    {
        "cache_control",
        "messages",
        "model",
        "output_config",
        "system",
        "thinking",
        "tool_choice",
        "tools",
    }
)
# The `type` tags of InputContentBlock, in the order the API lists them in an error.
INPUT_BLOCK_TYPES = (
    "text",
    "image",
    "document",
    "search_result",
    "thinking",
    "redacted_thinking",
    "tool_use",
    "tool_result",
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "container_upload",
)
IMAGE_MEDIA_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
# The leading bytes of each image media type, to tell whether data is what it claims.
_IMAGE_MAGIC = {
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/gif": (b"GIF87a", b"GIF89a"),
    "image/webp": (b"RIFF",),
}
TOOL_NAME_PATTERN = "^[a-zA-Z0-9_-]{1,128}$"
_TOOL_NAME = re.compile(TOOL_NAME_PATTERN)
# Server tools are named by a versioned type such as web_search_20250305.
_SERVER_TOOL_TYPE = re.compile(r"^[a-z_]+_\d{8}$")
MIN_THINKING_BUDGET = 1024
THINKING_DOCS = (
    "https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
    "#max-tokens-and-context-window-size"
)


@dataclass(frozen=True)
class Invalid:
    """Why params are refused: the API's error type and message."""

    error_type: str
    message: str

    @property
    def status(self) -> int:
        return 404 if self.error_type == "not_found_error" else 400


def _bad(message: str) -> Invalid:
    return Invalid("invalid_request_error", message)


def params_error(
    params: dict[str, Any], allowed: frozenset[str], *, count_only: bool = False
) -> Invalid | None:
    """The first reason `params` are not valid Messages params, or None.

    With `count_only`, they are CountMessageTokensParams: no `max_tokens` and no sampling.
    """
    for key in params:
        if key not in allowed:
            return _bad(f"{key}: Extra inputs are not permitted")
    required = ("model", "messages") if count_only else ("model", "messages", "max_tokens")
    for key in required:
        if key not in params:
            return _bad(f"{key}: Field required")
    model = params["model"]
    if not isinstance(model, str) or not model:
        return _bad("model: Input should be a valid non-empty string")
    max_tokens: int | None = None
    if not count_only:
        raw = params["max_tokens"]
        if isinstance(raw, bool) or not isinstance(raw, int):
            return _bad("max_tokens: Input should be a valid integer")
        if raw < 1:
            return _bad("max_tokens: Input should be greater than or equal to 1")
        max_tokens = raw
    if "stream" in params and not isinstance(params["stream"], bool):
        return _bad("stream: Input should be a valid boolean")
    error = (
        _messages_error(params["messages"])
        or _system_error(params.get("system"))
        or _sampling_error(params)
        or _tools_error(params)
        or _thinking_error(params, max_tokens)
    )
    if error is not None:
        return error
    entry = find_model(model)
    if entry is None:
        return Invalid("not_found_error", f"model: {model}")
    if max_tokens is not None and max_tokens > entry.max_tokens:
        return _bad(
            f"max_tokens: {max_tokens} > {entry.max_tokens}, which is the maximum allowed"
            f" number of output tokens for {entry.id}"
        )
    return None


def batch_params_error(params: dict[str, Any], allowed: frozenset[str]) -> Invalid | None:
    """`params_error` plus what only a batch refuses: streaming."""
    if params.get("stream") is True:
        return _bad(
            "stream: Message Batches do not support streaming; set stream to false or omit it"
        )
    return params_error(params, allowed)


def _sampling_error(params: dict[str, Any]) -> Invalid | None:
    for key, low, high in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        if key in params:
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                return _bad(f"{key}: Input should be a valid number")
            if not low <= value <= high:
                return _bad(f"{key}: Input should be between {low:g} and {high:g}")
    if "top_k" in params:
        top_k = params["top_k"]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            return _bad("top_k: Input should be a non-negative integer")
    if "stop_sequences" in params:
        stops = params["stop_sequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            return _bad("stop_sequences: Input should be a valid list of strings")
        if any(not s.strip() for s in stops):
            return _bad("stop_sequences: each stop sequence must contain non-whitespace")
    if "metadata" in params and not isinstance(params["metadata"], dict):
        return _bad("metadata: Input should be a valid dictionary")
    return None


def _system_error(system: Any) -> Invalid | None:
    if system is None or isinstance(system, str):
        return None
    if not isinstance(system, list):
        return _bad("system: Input should be a valid string or list of text blocks")
    for k, block in enumerate(system):
        if not isinstance(block, dict) or block.get("type") != "text":
            return _bad(f"system.{k}.type: Input should be 'text'")
        if not isinstance(block.get("text"), str):
            return _bad(f"system.{k}.text: Field required")
    return None


def _messages_error(messages: Any) -> Invalid | None:
    if not isinstance(messages, list):
        return _bad("messages: Input should be a valid list")
    if not messages:
        return _bad("messages: at least one message is required")
    for j, message in enumerate(messages):
        where = f"messages.{j}"
        if not isinstance(message, dict):
            return _bad(f"{where}: Input should be a valid dictionary")
        for key in message:
            if key not in ("role", "content"):
                return _bad(f"{where}.{key}: Extra inputs are not permitted")
        role = message.get("role")
        if role not in ("user", "assistant"):
            return _bad(f"{where}.role: Input should be 'user' or 'assistant'")
        if "content" not in message:
            return _bad(f"{where}.content: Field required")
        content = message["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return _bad(
                f"{where}.content: Input should be a valid string or list of content blocks"
            )
        for k, block in enumerate(content):
            error = _block_error(block, f"{where}.content.{k}")
            if error is not None:
                return error
    return None


def _block_error(block: Any, where: str) -> Invalid | None:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        return _bad(f"{where}: Input should be a content block with a type")
    kind = block["type"]
    if kind not in INPUT_BLOCK_TYPES:
        tags = ", ".join(f"'{t}'" for t in INPUT_BLOCK_TYPES)
        return _bad(
            f"{where}: Input tag '{kind}' found using 'type' does not match any of the"
            f" expected tags: {tags}"
        )
    if kind == "text" and not isinstance(block.get("text"), str):
        return _bad(f"{where}.text.text: Field required")
    if kind == "image":
        return _image_error(block.get("source"), f"{where}.image.source")
    if kind == "tool_result" and isinstance(block.get("content"), list):
        for m, inner in enumerate(block["content"]):
            error = _block_error(inner, f"{where}.tool_result.content.{m}")
            if error is not None:
                return error
    return None


def _image_error(source: Any, where: str) -> Invalid | None:
    if not isinstance(source, dict):
        return _bad(f"{where}: Field required")
    kind = source.get("type")
    if kind == "url":
        return (
            None if isinstance(source.get("url"), str) else _bad(f"{where}.url.url: Field required")
        )
    if kind == "file":
        return None
    if kind != "base64":
        return _bad(
            f"{where}: Input tag '{kind}' found using 'type' does not match any of the"
            " expected tags: 'base64', 'url', 'file'"
        )
    where += ".base64"
    media_type = source.get("media_type")
    if media_type not in IMAGE_MEDIA_TYPES:
        return _bad(
            f"{where}.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif'"
            " or 'image/webp'"
        )
    data = source.get("data")
    if not isinstance(data, str) or not data:
        return _bad(f"{where}: image cannot be empty")
    try:
        head = base64.b64decode(data[:64], validate=True)
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return _bad(f"{where}.data: Invalid base64 data")
    if not head.startswith(_IMAGE_MAGIC[media_type]):
        return _bad(f"{where}.data: Image does not match the provided media type {media_type}")
    return None


def custom_tools(tools: Any) -> list[dict[str, Any]]:
    """The client tools of a `tools` list: those the model answers with `tool_use`."""
    if not isinstance(tools, list):
        return []
    return [t for t in tools if isinstance(t, dict) and t.get("type") in (None, "custom")]


def _tools_error(params: dict[str, Any]) -> Invalid | None:
    tools = params.get("tools")
    names: set[str] = set()
    if tools is not None:
        if not isinstance(tools, list):
            return _bad("tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict):
                return _bad(f"tools.{i}: Input should be a valid dictionary")
            kind = tool.get("type")
            name = tool.get("name")
            if kind not in (None, "custom"):
                if not isinstance(kind, str) or not _SERVER_TOOL_TYPE.fullmatch(kind):
                    return _bad(
                        f"tools.{i}: Input tag '{kind}' found using 'type' does not match"
                        " any of the expected tags"
                    )
                if not isinstance(name, str):
                    return _bad(f"tools.{i}.{kind}.name: Field required")
                names.add(name)
                continue
            where = f"tools.{i}.custom"
            if name is None:
                return _bad(f"{where}.name: Field required")
            if not isinstance(name, str) or not _TOOL_NAME.fullmatch(name):
                return _bad(f"{where}.name: String should match pattern '{TOOL_NAME_PATTERN}'")
            schema = tool.get("input_schema")
            if schema is None:
                return _bad(f"{where}.input_schema: Field required")
            if not isinstance(schema, dict) or schema.get("type") != "object":
                return _bad(f"{where}.input_schema.type: Input should be 'object'")
            if name in names:
                return _bad(f"tools: Tool names must be unique. Duplicate name: {name}")
            names.add(name)
    choice = params.get("tool_choice")
    if choice is None:
        return None
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        return _bad(
            "tool_choice: Input tag found using 'type' does not match any of the expected tags:"
            " 'auto', 'any', 'tool', 'none'"
        )
    if choice["type"] == "tool":
        name = choice.get("name")
        if not isinstance(name, str):
            return _bad("tool_choice.tool.name: Field required")
        if name not in names:
            return _bad(f"tool_choice: Tool '{name}' not found in tools")
    elif choice["type"] in ("any",) and not names:
        return _bad("tool_choice: tool_choice.type 'any' requires tools to be set")
    return None


def _thinking_error(params: dict[str, Any], max_tokens: int | None) -> Invalid | None:
    thinking = params.get("thinking")
    if thinking is None:
        return None
    if not isinstance(thinking, dict) or thinking.get("type") not in (
        "enabled",
        "disabled",
        "adaptive",
    ):
        return _bad(
            "thinking: Input tag found using 'type' does not match any of the expected tags:"
            " 'enabled', 'disabled', 'adaptive'"
        )
    if thinking["type"] != "enabled":
        return None
    budget = thinking.get("budget_tokens")
    if budget is None:
        return _bad("thinking.enabled.budget_tokens: Field required")
    if isinstance(budget, bool) or not isinstance(budget, int):
        return _bad("thinking.enabled.budget_tokens: Input should be a valid integer")
    if budget < MIN_THINKING_BUDGET:
        return _bad(
            "thinking.enabled.budget_tokens: Input should be greater than or equal to"
            f" {MIN_THINKING_BUDGET}"
        )
    if max_tokens is not None and budget >= max_tokens:
        return _bad(
            "`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our"
            f" documentation at {THINKING_DOCS}"
        )
    choice = params.get("tool_choice")
    if isinstance(choice, dict) and choice.get("type") in ("any", "tool"):
        return _bad("Thinking may not be enabled when tool_choice forces tool use.")
    return None
