"""The request headers the API insists on: `anthropic-version`, `anthropic-beta`, `content-type`.

Each check answers 400 invalid_request_error with the API's own wording, as the API does.
"""

from __future__ import annotations

from collections.abc import Iterable

# Versions the API accepts. 2023-01-01 and 2023-06-01 are the documented ones; 2026-10-21 is
# what the official SDKs send (Python 2.16 `_constants.ANTHROPIC_API_VERSION`, TypeScript
# 1.16 `client.ts` default headers).
API_VERSIONS = frozenset({"2023-01-01", "2023-06-01", "2026-10-21"})
# The beta that opens the older `?beta=true` form of the batch endpoints.
BATCHES_BETA = "message-batches-2024-09-24"
# Every `anthropic-beta` name the API knows: the AnthropicBeta names of the official SDKs
# (Python 2.16, TypeScript 1.16) and of the stored OpenAPI description, and betas documented
# elsewhere (fine-grained tool streaming, web fetch, search results, ...).
KNOWN_BETAS = frozenset(
    {
        "message-batches-2024-09-24",
        "prompt-caching-2024-07-31",
        "computer-use-2024-10-22",
        "computer-use-2025-01-24",
        "computer-use-2025-11-24",
        "pdfs-2024-09-25",
        "token-counting-2024-11-01",
        "token-efficient-tools-2025-02-19",
        "output-128k-2025-02-19",
        "files-api-2025-04-14",
        "mcp-client-2025-04-04",
        "mcp-client-2025-11-20",
        "mcp-client-2026-09-15",
        "dev-full-thinking-2025-05-14",
        "interleaved-thinking-2025-05-14",
        "code-execution-2025-05-22",
        "code-execution-2025-08-25",
        "extended-cache-ttl-2025-04-11",
        "context-1m-2025-08-07",
        "context-management-2025-06-27",
        "model-context-window-exceeded-2025-08-26",
        "skills-2025-10-02",
        "fine-grained-tool-streaming-2025-05-14",
        "search-results-2025-06-09",
        "web-fetch-2025-09-10",
        "structured-outputs-2025-11-13",
        "effort-2025-11-24",
        "advanced-tool-use-2025-11-20",
        "compact-2026-01-12",
        "compact-2026-09-04",
        "fast-mode-2026-02-01",
        "output-300k-2026-03-24",
        "user-profiles-2026-03-24",
        "user-profiles-2026-08-18",
        "user-profiles-2026-09-04",
        "user-profiles-billing-2026-10-01",
        "advisor-tool-2026-03-01",
        "task-budgets-2026-03-13",
        "managed-agents-2026-04-01",
        "cache-diagnosis-2026-04-07",
        "dreaming-2026-04-21",
        "thinking-token-count-2026-05-13",
        "server-side-fallback-2026-06-01",
        "server-side-fallback-2026-07-01",
        "fallback-credit-2026-06-01",
        "fallback-credit-2026-07-01",
        "mcp-tunnels-2026-06-22",
        "mid-conversation-tool-changes-2026-07-01",
        "mid-conversation-output-config-2026-07-01",
        "mid-conversation-system-clear-at-2026-08-21",
        "ce-user-management-2026-07-13",
        "agent-memory-2026-07-22",
        "thinking-binding-controls-2026-08-01",
        "telemetry-destinations-2026-08-11",
        "message-threads-2026-08-12",
        "thinking-display-updates-2026-08-18",
        "analytics-usage-cost-2026-08-24",
        "ce-plugins-2026-09-01",
        "google-managed-data-controls-2026-09-01",
        "inline-tools-2026-09-15",
        "spend-limit-reads-2026-09-26",
        "efs-2026-10-01",
        "ce-claude-code-managed-settings-2026-10-06",
        "webhooks-2026-10-07",
        "admin-user-sign-out-2026-10-08",
        "experimental-claude-tag-2026-10-21",
    }
)


class HeaderError(ValueError):
    """A request header the API refuses; the message is the API's."""


def check_version(values: list[str]) -> None:
    """Refuse a missing or unknown `anthropic-version` (repeated values are joined, as sent)."""
    if not values:
        raise HeaderError("anthropic-version: header is required")
    version = ", ".join(values)
    if version not in API_VERSIONS:
        raise HeaderError(f'anthropic-version: "{version}" is not a valid version')


def parse_betas(values: Iterable[str]) -> tuple[str, ...]:
    """The betas named by every `anthropic-beta` header; refuse any the API does not know."""
    names = [part.strip() for value in values for part in value.split(",")]
    unknown = [name for name in names if name not in KNOWN_BETAS]
    if unknown:
        listed = ", ".join(f"`{name}`" for name in dict.fromkeys(unknown))
        raise HeaderError(
            f"Unexpected value(s) {listed} for the `anthropic-beta` header. Please consult our"
            " documentation at docs.anthropic.com or try again without the header."
        )
    return tuple(names)


def check_content_type(value: str | None) -> None:
    """A body the API is to read must be declared JSON."""
    media = (value or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        shown = value if value else "none"
        raise HeaderError(
            f"content-type: expected application/json for a request body, got {shown}"
        )
