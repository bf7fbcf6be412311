"""Token numbers: input tokens from the size of the params, and the workspace's prompt cache.

Counts are deterministic estimates (about four bytes a token); `count_tokens` and the usage of a
Message come from the same function, so they always agree.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

# Bytes of text per token, as a rough English tokenizer gives.
BYTES_PER_TOKEN = 4
# Tokens added for each message's role and turn markers.
MESSAGE_OVERHEAD_TOKENS = 3
# Tokens an image or a PDF counts for, whatever its size (the API's estimate for ~1 MP).
MEDIA_TOKENS = 1_600
# How long a cache entry lives after its last use, per `cache_control.ttl`.
CACHE_TTL_SECONDS = {"5m": 300.0, "1h": 3600.0}


def text_tokens(text: str) -> int:
    return max(1, -(-len(text.encode()) // BYTES_PER_TOKEN))


def _json_tokens(value: Any) -> int:
    return text_tokens(orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode())


def _block_tokens(block: Any) -> int:
    if isinstance(block, str):
        return text_tokens(block)
    if not isinstance(block, dict):
        return _json_tokens(block)
    kind = block.get("type")
    if kind == "text" and isinstance(block.get("text"), str):
        return text_tokens(block["text"])
    if kind in ("image", "document"):
        source = block.get("source")
        if isinstance(source, dict) and source.get("type") == "text":
            return text_tokens(str(source.get("data", "")))
        return MEDIA_TOKENS
    return _json_tokens({k: v for k, v in block.items() if k != "cache_control"})


@dataclass(frozen=True)
class Breakpoint:
    """The cacheable prefix a request marks: its tokens, its digest and the entry's TTL."""

    tokens: int
    key: bytes
    ttl: str


@dataclass(frozen=True)
class PromptSize:
    """A request's input tokens, and its last cache breakpoint if it has one."""

    tokens: int
    breakpoint: Breakpoint | None


def measure(params: dict[str, Any]) -> PromptSize:
    """Count the prompt of `params` in the order the API reads it: tools, system, messages.

    Each block with `cache_control` (or the last block, for a top-level `cache_control`) ends
    a cacheable prefix; the prefix key digests the model and every block up to it.
    """
    messages = params.get("messages")
    system = params.get("system")
    if (
        "tools" not in params
        and "cache_control" not in params
        and not isinstance(system, list)
        and isinstance(messages, list)
        and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in messages)
    ):
        # The common case, with nothing to cache: plain strings only.
        total = sum(MESSAGE_OVERHEAD_TOKENS + text_tokens(m["content"]) for m in messages)
        if isinstance(system, str):
            total += text_tokens(system)
        return PromptSize(max(1, total), None)
    blocks: list[Any] = []
    total = 0
    # (tokens up to and including the breakpoint, blocks it covers, ttl)
    last: tuple[int, int, str] | None = None

    def add(tokens: int, block: Any) -> None:
        nonlocal total, last
        total += tokens
        blocks.append(block)
        control = block.get("cache_control") if isinstance(block, dict) else None
        if isinstance(control, dict):
            last = (total, len(blocks), str(control.get("ttl") or "5m"))

    tools = params.get("tools")
    if isinstance(tools, list):
        for tool in tools:
            add(_json_tokens(tool), tool)
    if isinstance(system, str):
        add(text_tokens(system), system)
    elif isinstance(system, list):
        for block in system:
            add(_block_tokens(block), block)
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict):
                continue
            total += MESSAGE_OVERHEAD_TOKENS
            content = message.get("content")
            for block in content if isinstance(content, list) else [content]:
                add(_block_tokens(block), block)
    top = params.get("cache_control")
    if isinstance(top, dict) and total:
        last = (total, len(blocks), str(top.get("ttl") or "5m"))
    total = max(1, total)
    if last is None:
        return PromptSize(total, None)
    # Only a request with a breakpoint pays for digesting its prefix.
    digest = hashlib.blake2b(str(params.get("model")).encode(), digest_size=16)
    for block in blocks[: last[1]]:
        digest.update(orjson.dumps(block, option=orjson.OPT_SORT_KEYS))
    return PromptSize(total, Breakpoint(last[0], digest.digest(), last[2]))


@dataclass(frozen=True)
class CacheUse:
    """How a request's input tokens split: fresh, written to the cache, read from it."""

    input_tokens: int
    creation: int = 0
    read: int = 0
    ttl: str = "5m"

    def usage(self) -> dict[str, Any]:
        """The cache fields of a Usage object."""
        one_hour = self.creation if self.ttl == "1h" else 0
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.creation,
            "cache_read_input_tokens": self.read,
            "cache_creation": {
                "ephemeral_1h_input_tokens": one_hour,
                "ephemeral_5m_input_tokens": self.creation - one_hour,
            },
        }


class PromptCache:
    """One workspace's cached prefixes: the first use of a prefix writes it, later ones read it.

    Entries live for their TTL after their last use, on the emulator clock. Batches settle
    lazily, so a use may come in earlier than one already seen: it then writes the entry.
    """

    def __init__(self) -> None:
        # prefix key -> (written at, expires at)
        self._entries: dict[bytes, tuple[float, float]] = {}

    def use(self, size: PromptSize, min_tokens: int, now: float) -> CacheUse:
        mark = size.breakpoint
        if mark is None or mark.tokens < min_tokens:
            return CacheUse(size.tokens)
        ttl = CACHE_TTL_SECONDS.get(mark.ttl, CACHE_TTL_SECONDS["5m"])
        rest = size.tokens - mark.tokens
        entry = self._entries.get(mark.key)
        if entry is not None and entry[0] <= now <= entry[1]:
            self._entries[mark.key] = (entry[0], max(entry[1], now + ttl))
            return CacheUse(rest, read=mark.tokens, ttl=mark.ttl)
        if entry is not None and now < entry[0]:
            self._entries[mark.key] = (now, max(entry[1], now + ttl))
        else:
            self._entries[mark.key] = (now, now + ttl)
        return CacheUse(rest, creation=mark.tokens, ttl=mark.ttl)

    def clear(self) -> None:
        self._entries.clear()
