"""Reading a create body into compact per-request records, and the fake answers built from them.

A 100,000-request body is parsed once and reduced to a custom_id, model, reply and flags per
request; results lines (a deterministic Message, or an error) are encoded from those records.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import sys
from array import array
from dataclasses import dataclass, field
from typing import Any

import orjson

CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_CUSTOM_ID = re.compile(CUSTOM_ID_PATTERN)

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
_SNIPPET_CHARS = 100


class InvalidBody(ValueError):
    """The create body is refused as a whole (400 invalid_request_error)."""


@dataclass
class ParsedBatch:
    """What the emulator keeps of a create body: a few small values per request."""

    custom_ids: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    replies: list[str] = field(default_factory=list)
    input_tokens: array[int] = field(default_factory=lambda: array("L"))
    # Index of each request whose params fail validation -> the error message for its result.
    invalid: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.custom_ids)


def parse_create_body(body: bytes | bytearray, max_requests: int, *, beta: bool) -> ParsedBatch:
    """Validate the envelope of a create body now; params only later, into `invalid`.

    Raises InvalidBody with a message naming the offending index, like the API's.
    """
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidBody(f"Request body is not valid JSON: {exc}") from None
    if isinstance(body, bytearray):
        # The parsed tree holds all that is needed now; give the body's memory back at once.
        body.clear()
    if not isinstance(data, dict):
        raise InvalidBody("body: Input should be a valid dictionary")
    for key in data:
        if key != "requests":
            raise InvalidBody(f"{key}: Extra inputs are not permitted")
    requests = data.get("requests")
    if requests is None:
        raise InvalidBody("requests: Field required")
    if not isinstance(requests, list):
        raise InvalidBody("requests: Input should be a valid list")
    if not requests:
        raise InvalidBody("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > max_requests:
        raise InvalidBody(
            f"requests: List should have at most {max_requests} items after validation,"
            f" not {len(requests)}"
        )
    allowed = BETA_PARAMS_FIELDS if beta else PARAMS_FIELDS
    parsed = ParsedBatch()
    seen: set[str] = set()
    models: dict[str, str] = {}
    for i, item in enumerate(requests):
        where = f"requests.{i}"
        if not isinstance(item, dict):
            raise InvalidBody(f"{where}: Input should be a valid dictionary")
        for key in item:
            if key not in ("custom_id", "params"):
                raise InvalidBody(f"{where}.{key}: Extra inputs are not permitted")
        custom_id = item.get("custom_id")
        if custom_id is None:
            raise InvalidBody(f"{where}.custom_id: Field required")
        if not isinstance(custom_id, str) or not _CUSTOM_ID.fullmatch(custom_id):
            raise InvalidBody(
                f"{where}.custom_id: String should match pattern '{CUSTOM_ID_PATTERN}'"
            )
        if custom_id in seen:
            raise InvalidBody(
                f"{where}.custom_id: Duplicate custom_id '{custom_id}';"
                " custom_id must be unique within a message batch"
            )
        seen.add(custom_id)
        params = item.get("params")
        if params is None:
            raise InvalidBody(f"{where}.params: Field required")
        if not isinstance(params, dict):
            raise InvalidBody(f"{where}.params: Input should be a valid dictionary")
        error = params_error(params, allowed)
        if error is not None:
            parsed.invalid[i] = error
        model = params.get("model")
        model = model if isinstance(model, str) and model else "unknown-model"
        parsed.custom_ids.append(custom_id)
        # Most requests share a model: keep one string object per distinct name.
        parsed.models.append(models.setdefault(model, model))
        reply, tokens = _reply_for(params)
        parsed.replies.append(reply)
        parsed.input_tokens.append(tokens)
    return parsed


def parse_and_release(body: bytearray, max_requests: int, *, beta: bool) -> ParsedBatch:
    """`parse_create_body`, then hand the freed parse memory back to the operating system.

    Without the trim, glibc keeps the heap the parsed tree used, and a 250 MB create would
    leave the process that much bigger for good.
    """
    try:
        return parse_create_body(body, max_requests, beta=beta)
    finally:
        _trim_heap()


def _trim_heap() -> None:
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


_libc = _load_libc()


def params_error(params: dict[str, Any], allowed: frozenset[str]) -> str | None:
    """The first reason `params` is not a valid CreateMessageParams, or None.

    Checks the basics the API checks: required fields, types and ranges, no streaming.
    """
    for key in params:
        if key not in allowed:
            return f"{key}: Extra inputs are not permitted"
    for key in ("model", "messages", "max_tokens"):
        if key not in params:
            return f"{key}: Field required"
    model = params["model"]
    if not isinstance(model, str) or not model:
        return "model: Input should be a valid non-empty string"
    max_tokens = params["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 0:
        return "max_tokens: Input should be greater than or equal to 0"
    if params.get("stream") is True:
        return "stream: Message Batches do not support streaming; set stream to false or omit it"
    if "stream" in params and not isinstance(params["stream"], bool):
        return "stream: Input should be a valid boolean"
    error = _messages_error(params["messages"])
    if error is not None:
        return error
    for key, low, high in (("temperature", 0.0, 1.0), ("top_p", 0.0, 1.0)):
        if key in params:
            value = params[key]
            if isinstance(value, bool) or not isinstance(value, int | float):
                return f"{key}: Input should be a valid number"
            if not low <= value <= high:
                return f"{key}: Input should be between {low:g} and {high:g}"
    if "top_k" in params:
        top_k = params["top_k"]
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
            return "top_k: Input should be a non-negative integer"
    if "stop_sequences" in params:
        stops = params["stop_sequences"]
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            return "stop_sequences: Input should be a valid list of strings"
    if "system" in params and not isinstance(params["system"], str | list):
        return "system: Input should be a valid string or list of text blocks"
    if "metadata" in params and not isinstance(params["metadata"], dict):
        return "metadata: Input should be a valid dictionary"
    return None


def _messages_error(messages: Any) -> str | None:
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    for j, message in enumerate(messages):
        where = f"messages.{j}"
        if not isinstance(message, dict):
            return f"{where}: Input should be a valid dictionary"
        for key in message:
            if key not in ("role", "content"):
                return f"{where}.{key}: Extra inputs are not permitted"
        role = message.get("role")
        if role not in ("user", "assistant"):
            return f"{where}.role: Input should be 'user' or 'assistant'"
        if "content" not in message:
            return f"{where}.content: Field required"
        content = message["content"]
        if isinstance(content, str):
            continue
        if not isinstance(content, list):
            return f"{where}.content: Input should be a valid string or list of content blocks"
        for k, block in enumerate(content):
            if not isinstance(block, dict) or not isinstance(block.get("type"), str):
                return f"{where}.content.{k}: Input should be a content block with a type"
    return None


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            b["text"]
            for b in content
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )
    return ""


def _reply_for(params: dict[str, Any]) -> tuple[str, int]:
    """The fake answer's text (a digest and echo of the last user turn) and input tokens."""
    messages = params.get("messages")
    total = len(_text_of(params.get("system")))
    last_user = ""
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                text = _text_of(message.get("content"))
                total += len(text)
                if message.get("role") == "user":
                    last_user = text
    digest = hashlib.blake2b(last_user.encode(), digest_size=6).hexdigest()
    snippet = " ".join(last_user.split())[:_SNIPPET_CHARS]
    # About four characters per token, as a rough English tokenizer would give.
    return f"Emulated reply {digest}: {snippet}", max(1, total // 4)


def message_id(batch_id: str, custom_id: str) -> str:
    digest = hashlib.blake2b(f"{batch_id}/{custom_id}".encode(), digest_size=12).hexdigest()
    return "msg_" + digest


def request_id_for(batch_id: str, custom_id: str) -> str:
    digest = hashlib.blake2b(f"{custom_id}@{batch_id}".encode(), digest_size=12).hexdigest()
    return "req_" + digest


def output_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def fake_message(
    *,
    message_id: str,
    model: str,
    text: str,
    input_tokens: int,
    beta: bool,
) -> dict[str, Any]:
    """A Message as the Messages API returns it (valid against the spec's `Message`)."""
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "output_tokens": output_tokens(text),
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation": None,
        "inference_geo": None,
        "server_tool_use": None,
        "service_tier": "batch",
    }
    message: dict[str, Any] = {
        "id": message_id,
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [{"type": "text", "text": text, "citations": None}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
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


def error_body(error_type: str, message: str, request_id: str | None) -> dict[str, Any]:
    """The API's error envelope, as in an HTTP error body or an `errored` result."""
    return {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }
