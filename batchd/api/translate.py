"""Turns HTTP error answers and httpx failures into the errors of `batchd.errors`.

The only place that reads the API's error JSON; bodies that are not that JSON are quoted, sanitised.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from http import HTTPStatus
from typing import Any

import httpx
import orjson

from batchd.api.retry import parse_retry_after
from batchd.errors import (
    APIConnectionError,
    APIRequestTooLargeError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    BillingError,
    ConflictError,
    GatewayTimeoutError,
    InternalServerError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitError,
    status_error_class,
)

#: The API's `error.type` values, for statuses that have no class of their own (e.g. 408, 422).
ERROR_TYPES: dict[str, type[APIStatusError]] = {
    "invalid_request_error": BadRequestError,
    "authentication_error": AuthenticationError,
    "billing_error": BillingError,
    "permission_error": PermissionDeniedError,
    "not_found_error": NotFoundError,
    "conflict_error": ConflictError,
    "request_too_large": APIRequestTooLargeError,
    "rate_limit_error": RateLimitError,
    "api_error": InternalServerError,
    "timeout_error": GatewayTimeoutError,
    "overloaded_error": OverloadedError,
}

EXCERPT_CHARS = 200

_TAGS = re.compile(rb"<[^>]{0,2000}>")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# Anything shaped like an Anthropic key or a webhook secret, even one that is not ours (a proxy
# may echo request headers into its error page).
_SECRET_SHAPES = re.compile(r"(sk-ant-[A-Za-z0-9_\-]{4,}|whsec_[A-Za-z0-9+/=]{4,})")
REDACTED = "[REDACTED]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _SECRET_SHAPES.sub(REDACTED, text)


def redact_tree(value: Any, secrets: Iterable[str] = ()) -> Any:
    """A copy of parsed JSON with every string redacted (error bodies are kept on exceptions)."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {k: redact_tree(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_tree(v, secrets) for v in value]
    return value


def excerpt(data: bytes, secrets: Iterable[str] = (), limit: int = EXCERPT_CHARS) -> str:
    """A short, printable, secret-free quote of a body: tags and control characters removed."""
    # Read a little more than we show, since tags and whitespace are dropped.
    raw = _TAGS.sub(b" ", data[: limit * 8])
    text = _CONTROL.sub(" ", raw.decode("utf-8", "replace"))
    text = redact(" ".join(text.split()), secrets)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_error(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    *,
    secrets: Iterable[str] = (),
) -> APIStatusError:
    """The batchd error for an HTTP error answer, whatever its body looks like."""
    header_request_id = headers.get("request-id")
    retry_after = parse_retry_after(headers)
    error_type: str | None = None
    message: str | None = None
    body_request_id: str | None = None
    parsed: Any = None
    try:
        parsed = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        parsed = redact_tree(parsed, secrets)
        error = parsed["error"]
        if isinstance(error.get("type"), str):
            error_type = error["type"]
        if isinstance(error.get("message"), str):
            message = error["message"]
        if isinstance(parsed.get("request_id"), str):
            body_request_id = parsed["request_id"]
    if error_type is None and message is None:
        # Not the documented error JSON: an HTML page from a proxy, an empty body, garbage.
        quoted = excerpt(body, secrets)
        reason = _reason(status)
        message = (
            f"HTTP {status}{reason} with an empty body"
            if not quoted
            else f"HTTP {status}{reason} with a body that is not an API error: {quoted!r}"
        )
        parsed = quoted or None
    cls = status_error_class(status)
    if cls is APIStatusError and error_type in ERROR_TYPES:
        cls = ERROR_TYPES[error_type]
    return cls(
        message or f"HTTP {status} {error_type}",
        status=status,
        error_type=error_type,
        request_id=header_request_id or body_request_id,
        retry_after=retry_after,
        body=parsed,
    )


def _reason(status: int) -> str:
    try:
        return f" {HTTPStatus(status).phrase}"
    except ValueError:
        return ""


def transport_error(
    exc: httpx.HTTPError, operation: str, secrets: Iterable[str] = ()
) -> APIConnectionError:
    """The batchd error for a call that got no (complete) HTTP answer."""
    detail = redact(str(exc) or type(exc).__name__, secrets)
    error: APIConnectionError
    if isinstance(exc, httpx.TimeoutException):
        error = APITimeoutError(f"{operation}: no answer in time ({type(exc).__name__}: {detail})")
    else:
        error = APIConnectionError(
            f"{operation}: connection failed ({type(exc).__name__}: {detail})"
        )
    # No connection was made (or none was free): the request never left this process.
    error.unsent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return error
