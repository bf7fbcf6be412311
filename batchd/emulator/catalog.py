"""The models the emulated API knows: ids, aliases, release dates and limits, in one table.

Param validation (an unknown model is `not_found_error`) and `GET /v1/models` both read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelEntry:
    """One model: its id, the aliases that name it, and what `GET /v1/models` says of it."""

    id: str
    display_name: str
    # RFC 3339 date of release; newer models list first.
    created_at: str
    max_input_tokens: int
    max_tokens: int
    aliases: tuple[str, ...] = ()
    thinking: bool = True
    adaptive_thinking: bool = False
    # Fewest prompt tokens a cache breakpoint needs before anything is cached.
    min_cache_tokens: int = 1024


# Ids and aliases are those of the official SDKs (Python 2.16, TypeScript 1.16) and the stored
# OpenAPI description, plus older models batchd's users still name. Release dates of models the
# public record gives none for (the 4.7 generation on) are placeholders that only order the list.
MODELS: tuple[ModelEntry, ...] = (
    ModelEntry("claude-fable-5-2", "Claude Fable 5.2", "2026-10-14T00:00:00Z", 1_000_000, 128_000,
               adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-mythos-5-2", "Claude Mythos 5.2", "2026-10-14T00:00:00Z", 1_000_000,
               128_000, adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-haiku-5-5", "Claude Haiku 5.5", "2026-09-30T00:00:00Z", 200_000, 64_000,
               adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-sonnet-5-5", "Claude Sonnet 5.5", "2026-09-30T00:00:00Z", 1_000_000,
               64_000, adaptive_thinking=True),
    ModelEntry("claude-opus-5-5", "Claude Opus 5.5", "2026-09-30T00:00:00Z", 1_000_000, 128_000,
               adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-fable-5-1", "Claude Fable 5.1", "2026-08-26T00:00:00Z", 1_000_000, 128_000,
               adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-mythos-5-1", "Claude Mythos 5.1", "2026-08-26T00:00:00Z", 1_000_000,
               128_000, adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-sonnet-5", "Claude Sonnet 5", "2026-07-15T00:00:00Z", 1_000_000, 64_000,
               adaptive_thinking=True),
    ModelEntry("claude-fable-5", "Claude Fable 5", "2026-07-15T00:00:00Z", 1_000_000, 128_000,
               adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-mythos-5", "Claude Mythos 5", "2026-07-15T00:00:00Z", 1_000_000, 128_000,
               adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-opus-5", "Claude Opus 5", "2026-07-15T00:00:00Z", 1_000_000, 128_000,
               adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-opus-4-8", "Claude Opus 4.8", "2026-05-20T00:00:00Z", 1_000_000, 128_000,
               adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-opus-4-7", "Claude Opus 4.7", "2026-04-16T00:00:00Z", 1_000_000, 128_000,
               adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-mythos-preview", "Claude Mythos Preview", "2026-04-07T00:00:00Z",
               1_000_000, 128_000, adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-sonnet-4-6", "Claude Sonnet 4.6", "2026-02-17T00:00:00Z", 1_000_000,
               64_000, adaptive_thinking=True),
    ModelEntry("claude-opus-4-6", "Claude Opus 4.6", "2026-02-04T00:00:00Z", 1_000_000, 128_000,
               adaptive_thinking=True, min_cache_tokens=4096),
    ModelEntry("claude-opus-4-5-20251101", "Claude Opus 4.5", "2025-11-24T00:00:00Z", 200_000,
               64_000, aliases=("claude-opus-4-5",), min_cache_tokens=4096),
    ModelEntry("claude-haiku-4-5-20251001", "Claude Haiku 4.5", "2025-10-15T00:00:00Z", 200_000,
               64_000, aliases=("claude-haiku-4-5",), min_cache_tokens=4096),
    ModelEntry("claude-sonnet-4-5-20250929", "Claude Sonnet 4.5", "2025-09-29T00:00:00Z",
               1_000_000, 64_000, aliases=("claude-sonnet-4-5",)),
    ModelEntry("claude-opus-4-1-20250805", "Claude Opus 4.1", "2025-08-05T00:00:00Z", 200_000,
               32_000, aliases=("claude-opus-4-1",)),
    ModelEntry("claude-opus-4-20250514", "Claude Opus 4", "2025-05-22T00:00:00Z", 200_000,
               32_000, aliases=("claude-opus-4-0", "claude-4-opus-20250514")),
    ModelEntry("claude-sonnet-4-20250514", "Claude Sonnet 4", "2025-05-22T00:00:00Z", 1_000_000,
               64_000, aliases=("claude-sonnet-4-0", "claude-4-sonnet-20250514")),
    ModelEntry("claude-3-7-sonnet-20250219", "Claude Sonnet 3.7", "2025-02-24T00:00:00Z",
               200_000, 64_000, aliases=("claude-3-7-sonnet-latest",)),
    ModelEntry("claude-3-5-haiku-20241022", "Claude Haiku 3.5", "2024-10-22T00:00:00Z", 200_000,
               8_192, aliases=("claude-3-5-haiku-latest",), thinking=False,
               min_cache_tokens=2048),
    ModelEntry("claude-3-haiku-20240307", "Claude Haiku 3", "2024-03-07T00:00:00Z", 200_000,
               4_096, thinking=False, min_cache_tokens=2048),
)  # fmt: skip

_BY_NAME: dict[str, ModelEntry] = {}
for _entry in MODELS:
    for _name in (_entry.id, *_entry.aliases):
        _BY_NAME[_name] = _entry


def find_model(name: str) -> ModelEntry | None:
    """The model an id or alias names, or None if the API does not know it."""
    return _BY_NAME.get(name)


def model_names() -> frozenset[str]:
    """Every id and alias the API accepts as `model`."""
    return frozenset(_BY_NAME)


def _supported(flag: bool) -> dict[str, bool]:
    return {"supported": flag}


def model_info(entry: ModelEntry) -> dict[str, Any]:
    """The ModelInfo object of one model, as `GET /v1/models/{id}` answers it."""
    adaptive = entry.adaptive_thinking
    return {
        "type": "model",
        "id": entry.id,
        "display_name": entry.display_name,
        "created_at": entry.created_at,
        "max_input_tokens": entry.max_input_tokens,
        "max_tokens": entry.max_tokens,
        "capabilities": {
            "batch": _supported(True),
            "citations": _supported(True),
            "code_execution": _supported(entry.thinking),
            "context_management": {
                "supported": entry.thinking,
                "clear_thinking_20251015": _supported(entry.thinking),
                "clear_tool_uses_20250919": _supported(entry.thinking),
                "compact_20260112": _supported(adaptive),
            },
            "effort": {
                "supported": adaptive,
                "low": _supported(adaptive),
                "medium": _supported(adaptive),
                "high": _supported(adaptive),
                "max": _supported(adaptive),
                "xhigh": _supported(adaptive),
            },
            "image_input": _supported(True),
            "pdf_input": _supported(True),
            "structured_outputs": _supported(entry.thinking),
            "thinking": {
                "supported": entry.thinking,
                "types": {"enabled": _supported(entry.thinking), "adaptive": _supported(adaptive)},
            },
        },
    }
