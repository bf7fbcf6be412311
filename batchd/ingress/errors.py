"""The one error shape of the HTTP ingress, which is the Messages API's own.

`{"type":"error","error":{"type":T,"message":M[,"field":F]},"request_id":R}`; every status maps to
the error type the Anthropic API uses for it, so SDKs raise their usual typed errors.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchd.errors import STATUS_TYPES, TYPE_STATUS, IngressError

__all__ = ["STATUS_TYPES", "TYPE_STATUS", "IngressError", "error_body"]


def error_body(error_type: str, message: str, request_id: str, field: str | None = None) -> bytes:
    """The JSON bytes of one error answer."""
    error: dict[str, Any] = {"type": error_type, "message": message}
    if field is not None:
        error["field"] = field
    return orjson.dumps({"type": "error", "error": error, "request_id": request_id})
