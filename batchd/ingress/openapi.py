"""The OpenAPI 3.1 document of the ingress, served at `/openapi.json`.

Built from the running settings (accounts, priorities, limits, whether tokens are needed), so
what it promises is what the handlers in `app.py` and `messages.py` check and answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchd.results import LIVE_STATES, TERMINAL_STATUSES
from batchd.settings import ACCOUNT_NAME, Settings

_REPLY_TO_PATTERN = r"^[A-Za-z0-9_.:/@-]+$"
# http(s), any case, and no spaces or control characters (the shape `check_callback_url` wants).
_CALLBACK_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\u0000-\u0020\u007f]+$"
_ERROR_STATUSES = {
    "400": "The request is invalid; `error.field` names the field at fault.",
    "401": "No producer token, or an unknown one.",
    "403": "The token may not use that account.",
    "404": "No such request, batch or route.",
    "408": "The request body did not arrive in time (ingress.body_timeout).",
    "409": "The request can no longer be canceled.",
    "413": "The body is over ingress.max_body_bytes, or the request cannot fit in a batch.",
    "429": "Rate limit (ingress.rate_limit) or held connections (ingress.max_held) exceeded.",
    "503": "batchd's Redis is unavailable.",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {"request-id": {"$ref": "#/components/headers/RequestId"}},
        "content": {"application/json": {"schema": schema}},
        **extra,
    }


def _errors(*statuses: str) -> dict[str, Any]:
    return {s: {"$ref": f"#/components/responses/Error{s}"} for s in statuses}


def _schemas(settings: Settings) -> dict[str, Any]:
    sub = settings.submit
    accounts = sorted(settings.accounts)
    nullable_str = {"type": ["string", "null"]}
    params = {
        "type": "object",
        "description": "A Messages API request body (CreateMessageParams). batchd checks what "
        "it can know at submit time; the API checks the rest when the batch runs, and a "
        "request it refuses ends `errored`.",
        "required": ["model", "max_tokens", "messages"],
        "properties": {
            "model": {"type": "string", "minLength": 1},
            "max_tokens": {"type": "integer", "minimum": 1},
            "messages": {"type": "array", "minItems": 1},
            "stream": {"not": {"const": True}, "description": "batches cannot stream"},
        },
        "additionalProperties": True,
    }
    result_envelope = {
        "type": "object",
        "description": "The result envelope, the same on every path (wait, reply queue, "
        "webhook). `result` is the Message Batches result object, unchanged.",
        "required": ["id", "status", "result", "account", "attempts"],
        "properties": {
            "id": {"type": "string"},
            "key": nullable_str,
            "account": {"type": "string"},
            "status": {"type": "string", "enum": sorted(TERMINAL_STATUSES)},
            "result": {"type": "object"},
            "batch_id": nullable_str,
            "attempts": {"type": "integer", "minimum": 0},
            "metadata": {"type": ["object", "null"]},
            "submitted_at": nullable_str,
            "ended_at": nullable_str,
        },
    }
    item_error = {
        "type": "object",
        "required": ["type", "message"],
        "properties": {
            "type": {"type": "string"},
            "message": {"type": "string"},
            "field": nullable_str,
        },
    }
    ticket_props = {
        "id": {"type": "string", "description": "batchd's request id, `<account>.<token>`"},
        "status": {"type": "string"},
        "key": nullable_str,
        "account": {"type": "string"},
        "duplicate": {
            "type": "boolean",
            "description": "true when the idempotency key was seen before: `id` is the first "
            "request's and nothing new was queued",
        },
    }
    return {
        "MessageParams": params,
        "SubmitRequest": {
            "type": "object",
            "required": ["params"],
            "additionalProperties": False,
            "properties": {
                "params": _ref("MessageParams"),
                "reply_to": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": sub.max_reply_to_length,
                    "pattern": _REPLY_TO_PATTERN,
                    "description": "a reply queue the result envelope is pushed onto",
                },
                "callback_url": {
                    "type": ["string", "null"],
                    "maxLength": sub.max_callback_url_length,
                    "pattern": _CALLBACK_PATTERN,
                    "description": "an http(s) URL the result is POSTed to, signed (webhooks); "
                    "private and loopback addresses are refused unless allowed",
                },
                "key": {
                    "type": ["string", "null"],
                    "minLength": 1,
                    "maxLength": sub.max_key_length,
                    "description": "idempotency key (or the Idempotency-Key header)",
                },
                "account": {
                    "type": ["string", "null"],
                    "enum": [*accounts, None],
                    "description": "default: the token's first account",
                },
                "priority": {"type": "integer", "minimum": 0, "maximum": sub.priorities - 1},
                "metadata": {
                    "type": ["object", "null"],
                    "description": f"returned unchanged; at most {sub.max_metadata_bytes} "
                    "bytes as JSON",
                },
            },
        },
        "SubmitResponse": {
            "type": "object",
            "required": ["id", "status", "key", "account", "duplicate"],
            "properties": ticket_props,
        },
        "BulkOutcome": {
            "type": "object",
            "required": ["index"],
            "properties": {
                "index": {"type": "integer", "minimum": 0},
                **ticket_props,
                "error": item_error,
            },
        },
        "BulkResponse": {
            "type": "object",
            "required": ["data", "accepted", "refused"],
            "properties": {
                "data": {"type": "array", "items": _ref("BulkOutcome")},
                "accepted": {"type": "integer", "minimum": 0},
                "refused": {"type": "integer", "minimum": 0},
            },
        },
        "ResultEnvelope": result_envelope,
        "RequestState": {
            "type": "object",
            "required": ["id", "status", "attempts", "batch_id", "result"],
            "properties": {
                "id": {"type": "string"},
                "status": {
                    "type": "string",
                    "enum": sorted(LIVE_STATES | TERMINAL_STATUSES),
                },
                "attempts": {"type": "integer", "minimum": 0},
                "batch_id": nullable_str,
                "result": {"oneOf": [_ref("ResultEnvelope"), {"type": "null"}]},
            },
        },
        "Batch": {
            "type": "object",
            "required": ["id", "account", "state", "batch_id", "requests"],
            "properties": {
                "id": {"type": "string", "description": "batchd's id, `<account>.<assembly>`"},
                "account": {"type": "string"},
                "priority": {"type": "integer"},
                "state": {"type": "string"},
                "batch_id": {**nullable_str, "description": "the API's id, once created"},
                "requests": {"type": "integer", "minimum": 0},
                "bytes": {"type": "integer", "minimum": 0},
                "polls": {"type": "integer", "minimum": 0},
                "created_at": nullable_str,
                "submitted_at": nullable_str,
                "closed_at": nullable_str,
            },
        },
        "BatchList": {
            "type": "object",
            "required": ["data", "count"],
            "properties": {
                "data": {"type": "array", "items": _ref("Batch")},
                "count": {"type": "integer", "minimum": 0},
            },
        },
        "Message": {
            "type": "object",
            "description": "The Messages API's Message, exactly as the batch result carried it.",
            "required": ["id", "type", "role", "content", "model"],
            "properties": {
                "id": {"type": "string"},
                "type": {"const": "message"},
                "role": {"const": "assistant"},
                "content": {"type": "array"},
                "model": {"type": "string"},
                "stop_reason": nullable_str,
                "usage": {"type": "object"},
            },
        },
        "Error": {
            "type": "object",
            "description": "The one error shape (the Anthropic API's).",
            "required": ["type", "error"],
            "properties": {
                "type": {"const": "error"},
                "error": item_error,
                "request_id": nullable_str,
            },
        },
    }


def build(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document for these settings."""
    cfg = settings.ingress
    secured = bool(cfg.tokens)
    bearer: list[dict[str, list[str]]] = [{"bearer": []}] if secured else []
    drop_in_security: list[dict[str, list[str]]] = (
        [{"bearer": []}, {"apiKey": []}] if secured else []
    )
    request_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "batchd's request id, `<account>.<token>`",
    }
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": settings.submit.max_key_length},
    }
    responses = {
        f"Error{status}": _json(_ref("Error"), text)
        | ({"headers": _retry_headers()} if status == "429" else {})
        for status, text in _ERROR_STATUSES.items()
    }
    responses["Error504"] = _json(
        _ref("Error"),
        "The drop-in call was held ingress.drop_in_max_hold seconds without a result (or batchd "
        "is stopping): the message names the request id to fetch later. Also the API's "
        "timeout_error result.",
    )
    for status, text in (("402", "billing_error"), ("500", "api_error"),
                         ("529", "overloaded_error")):  # fmt: skip
        responses[f"Error{status}"] = _json(_ref("Error"), f"The batch result was {text}.")
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "batchd ingress",
            "version": "1",
            "description": "Submit Claude Messages requests to batchd over HTTP and fetch their "
            "results; POST /v1/messages is a drop-in for the Messages API answered through "
            f"Message Batches. Rate limit {cfg.rate_limit:g}/s per token (0 = none), bodies up "
            f"to {cfg.max_body_bytes} bytes.",
        },
        "security": bearer,
        "paths": {
            "/v1/requests": {
                "post": {
                    "operationId": "submitRequest",
                    "summary": "Queue one request for a batch",
                    "parameters": [idem],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("SubmitRequest")}},
                    },
                    "responses": {
                        "202": _json(_ref("SubmitResponse"), "Queued (or a repeated key)."),
                        **_errors("400", "401", "403", "408", "413", "429", "503"),
                    },
                }
            },
            "/v1/requests/bulk": {
                "post": {
                    "operationId": "submitBulk",
                    "summary": "Queue many requests; one outcome per item, in order",
                    "description": "A JSON array, or JSONL with a JSONL content type. A bad item "
                    "gets its error in its place and never stops the others. With an "
                    "Idempotency-Key header, an item without a key gets `<header>#<index>`.",
                    "parameters": [idem],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {"type": "array", "maxItems": cfg.max_bulk_items}
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    "responses": {
                        "200": _json(_ref("BulkResponse"), "One outcome per item."),
                        **_errors("400", "401", "408", "413", "429", "503"),
                    },
                }
            },
            "/v1/requests/{id}": {
                "get": {
                    "operationId": "getRequest",
                    "summary": "The request's state, and its result once terminal",
                    "parameters": [
                        request_id,
                        {
                            "name": "wait",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "number", "minimum": 0},
                            "description": "long-poll up to this many seconds for a terminal "
                            f"state (cut to {cfg.max_poll_wait:g})",
                        },
                    ],
                    "responses": {
                        "200": _json(_ref("RequestState"), "The state now."),
                        **_errors("400", "401", "403", "404", "429", "503"),
                    },
                },
                "delete": {
                    "operationId": "cancelRequest",
                    "summary": "Cancel a pending request",
                    "parameters": [request_id],
                    "responses": {
                        "200": _json(_ref("RequestState"), "Canceled."),
                        **_errors("401", "403", "404", "409", "429", "503"),
                    },
                },
            },
            "/v1/batches": {
                "get": {
                    "operationId": "listBatches",
                    "summary": "Batches in the making or in flight",
                    "parameters": [
                        {
                            "name": "account",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string", "enum": sorted(settings.accounts)},
                        }
                    ],
                    "responses": {
                        "200": _json(_ref("BatchList"), "The batches."),
                        **_errors("400", "401", "403", "429", "503"),
                    },
                }
            },
            "/v1/batches/{id}": {
                "get": {
                    "operationId": "getBatch",
                    "summary": "One batch, by the API's batch id or batchd's id",
                    "parameters": [
                        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
                    ],
                    "responses": {
                        "200": _json(_ref("Batch"), "The batch."),
                        **_errors("401", "403", "404", "429", "503"),
                    },
                }
            },
            "/v1/messages": {
                "post": {
                    "operationId": "createMessage",
                    "summary": "Drop-in Messages API: answered through a batch",
                    "description": "The Messages API's own request and answers: the Message, or "
                    "the error with the API's status and type. `stream: true` is refused. "
                    "Optional headers: Idempotency-Key, batchd-account.",
                    "security": drop_in_security,
                    "parameters": [
                        idem,
                        {
                            "name": "beta",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "sent by SDKs' beta surface; ignored",
                        },
                        {
                            "name": "batchd-account",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string", "pattern": ACCOUNT_NAME.pattern},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("MessageParams")}},
                    },
                    "responses": {
                        "200": _json(_ref("Message"), "The Message."),
                        **_errors("400", "401", "402", "403", "404", "408", "413", "429"),
                        **_errors("500", "503", "504", "529"),
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "schemas": _schemas(settings),
            "responses": responses,
            "headers": {
                "RequestId": {
                    "description": "this answer's id, also in an error's `request_id`",
                    "schema": {"type": "string"},
                }
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "producer token"},
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "producer token, as Anthropic SDKs send it (drop-in only)",
                },
            },
        },
    }
    return doc


def _retry_headers() -> dict[str, Any]:
    return {
        "request-id": {"$ref": "#/components/headers/RequestId"},
        "Retry-After": {
            "description": "seconds to wait before trying again",
            "schema": {"type": "string"},
        },
    }


def document(settings: Settings) -> bytes:
    return orjson.dumps(build(settings))
