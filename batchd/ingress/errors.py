"""The one error shape of the HTTP ingress, which is the Messages API's own.

`{"type":"error","error":{"type":T,"message":M[,"field":F]},"request_id":R}`; every status maps to
the error type the Anthropic API uses for it, so SDKs raise their usual typed errors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

#: The API's error type for each status batchd answers with (and its inverse below).
STATUS_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

#: The HTTP status the Messages API answers for each error type (reference: "HTTP errors").
TYPE_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "conflict_error": 409,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


class IngressError(Exception):
    """An HTTP error answer: status, message, the field at fault, extra headers."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        field: str | None = None,
        headers: Mapping[str, str] | None = None,
        error_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.headers = dict(headers or {})
        self.error_type = error_type or STATUS_TYPES.get(status, "api_error")


def error_body(error_type: str, message: str, request_id: str, field: str | None = None) -> bytes:
    """The JSON bytes of one error answer."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if field is not None:
        error["field"] = field
    return orjson.dumps({"type": "error", "error": error, "request_id": request_id})
