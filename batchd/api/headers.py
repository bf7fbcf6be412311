"""The headers a call may add (betas, caller extras) and those of an answer worth passing on.

Checked before anything is sent: a bad header is a caller bug, never a retried network error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

BETA_HEADER = "anthropic-beta"

# A beta name as the API spells them (`message-batches-2024-09-24`): no commas or spaces,
# which would split or corrupt the comma-separated header.
_BETA = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
# Visible ASCII, space and tab: anything else h11 refuses (or httpx cannot encode) mid-send.
_VALUE = re.compile(r"[\t\x20-\x7e]*")

#: Headers the client owns: the API key, framing, and the body's type (always JSON).
RESERVED = frozenset(
    {
        "x-api-key",
        "authorization",
        "content-type",
        "content-length",
        "transfer-encoding",
        "connection",
        "host",
        "keep-alive",
        "te",
        "upgrade",
    }
)

#: Answer headers a proxy passes on besides every `anthropic-*` one; never framing or
#: encoding headers, which describe the bytes on this hop (the body is already decoded).
PASSED_ON = frozenset(
    {"content-type", "request-id", "retry-after", "retry-after-ms", "x-should-retry"}
)

Betas = Iterable[str] | str


def normalize_betas(betas: Betas | None) -> tuple[str, ...]:
    """The distinct betas, sorted: one spelling per set, so equal sets key the same lane.

    A single string is read as the header's own form, `a,b`. Raises ValueError for a name
    that is empty or could not travel in the header.
    """
    if betas is None:
        return ()
    items = betas.split(",") if isinstance(betas, str) else list(betas)
    names: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"a beta name must be a str, not {type(item).__name__}")
        name = item.strip()
        if not _BETA.fullmatch(name):
            raise ValueError(f"not a valid anthropic-beta name: {item!r}")
        names.add(name)
    return tuple(sorted(names))


def beta_header(betas: Betas | None) -> str | None:
    """The `anthropic-beta` value for a set of betas, or None when there are none."""
    names = normalize_betas(betas)
    return ",".join(names) if names else None


def request_headers(
    betas: Betas | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Per-call headers: `anthropic-beta` and the caller's extras, checked.

    Extras may not replace a reserved header, nor carry `anthropic-beta` when `betas` is also
    given (which one would win is not obvious). Names are sent lowercased.
    """
    headers: dict[str, str] = {}
    for name, value in (extra or {}).items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ValueError(f"not a valid header name: {name!r}")
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            raise ValueError(f"header {name}: value must be printable ASCII")
        lowered = name.lower()
        if lowered in RESERVED:
            raise ValueError(f"header {name} is set by the client and cannot be given")
        headers[lowered] = value
    beta = beta_header(betas)
    if beta is not None:
        if BETA_HEADER in headers:
            raise ValueError("give betas either as `betas` or as an anthropic-beta header")
        headers[BETA_HEADER] = beta
    return headers


def passed_on(headers: Mapping[str, str]) -> dict[str, str]:
    """The answer's headers a proxy should hand to its own caller, names lowercased."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        lowered = name.lower()
        if lowered in PASSED_ON or lowered.startswith("anthropic-"):
            out[lowered] = value
    return out
