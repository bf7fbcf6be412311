"""The OpenAPI 3.1 document of the ingress, served at `/openapi.json`.

Built from the running settings (accounts, priorities, limits, whether tokens are needed), so
what it promises is what the handlers in `app.py` and `messages.py` check and answer.
"""

from __future__ import annotations

from typing import Any

import orjson

from batchd.ingress import ledger
from batchd.ingress.operators import openapi_paths
from batchd.results import LIVE_STATES, TERMINAL_STATUSES
from batchd.settings import ACCOUNT_NAME, Settings

_REPLY_TO_PATTERN = r"^[A-Za-z0-9_.:/@-]+$"
_TAG_PATTERN = r"^[A-Za-z0-9_.:/@-]{1,64}$"
# http(s), any case, and no spaces or control characters (the shape `check_callback_url` wants).
_CALLBACK_PATTERN = r"^[Hh][Tt][Tt][Pp][Ss]?://[^\u0000-\u0020\u007f]+$"
_ERROR_STATUSES = {
    "400": "The request is invalid; `error.field` names the field at fault.",
    "401": "No producer token, or an unknown one.",
    "403": "The token may not use that account.",
    "404": "No such request, batch or route.",
    "408": "The request body did not arrive in time (ingress.body_timeout).",
    "409": "The request can no longer be canceled; or an idempotency key (the Idempotency-Key "
    "header or `key`) was used before with another body: the message names the key, the first "
    "request and what differs. Answered with `x-should-retry: false`.",
    "413": "The body is over ingress.max_body_bytes, or the request cannot fit in a batch.",
    "429": "Rate limit (ingress.rate_limit) or held connections (ingress.max_held) exceeded.",
    "503": "batchd's Redis is unavailable. On the drop-in also: the call was held "
    "ingress.drop_in_max_hold seconds (or less than the SDK's `x-stainless-timeout`) without a "
    "result, or batchd is stopping; the request stays queued and the message names its id. "
    "Retry after `Retry-After`: the same call (an SDK's own retry, or the same Idempotency-Key) "
    "waits for that request instead of queuing another.",
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
    known_betas = sorted(set(settings.api.known_betas))
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
            "mode": {
                "type": "string",
                "enum": ["batch", "realtime"],
                "description": "the route that produced the result: a batch, or the real-time "
                "Messages API (its deadline could not be made by batch)",
            },
            "deadline": {**nullable_str, "description": "the request's deadline, if it had one"},
            "deadline_met": {
                "type": ["boolean", "null"],
                "description": "with a deadline: whether the request succeeded by then",
            },
            "deadline_missed": {
                **nullable_str,
                "description": "why a deadline was missed: late (succeeded after it), "
                "unreachable (no batch could make it; policy fail), or how the request ended",
            },
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
                "tag": {
                    "type": ["string", "null"],
                    "pattern": _TAG_PATTERN,
                    "description": "groups the request in the cost ledger",
                },
                "betas": {
                    "type": ["array", "null"],
                    "items": {"type": "string", "enum": known_betas},
                    "description": "`anthropic-beta` values the request's batch is created with "
                    "(api.known_betas); requests with different betas never share a batch",
                },
                "deadline": {
                    "type": ["string", "number", "null"],
                    "description": "when the result is needed by: an ISO 8601 time with its "
                    "offset (2026-01-02T09:00:00Z) or epoch seconds. Its lane is cut early "
                    "enough for a batch to make it; if none can, the account's "
                    "deadline_policy decides (real-time call, late batch, or errored "
                    "deadline_exceeded)",
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
        "CountTokensParams": {
            "type": "object",
            "description": "A token-counting request body (MessageCountTokensParams), passed "
            "through to the API unchanged.",
            "required": ["model", "messages"],
            "properties": {
                "model": {"type": "string", "minLength": 1},
                "messages": {"type": "array"},
            },
            "additionalProperties": True,
        },
        "TokenCount": {
            "type": "object",
            "required": ["input_tokens"],
            "properties": {"input_tokens": {"type": "integer", "minimum": 0}},
        },
        "ModelInfo": {
            "type": "object",
            "description": "The API's ModelInfo, as the API answered it.",
            "required": ["type", "id", "display_name", "created_at"],
            "properties": {
                "type": {"const": "model"},
                "id": {"type": "string"},
                "display_name": {"type": "string"},
                "created_at": {"type": "string"},
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["data", "has_more", "first_id", "last_id"],
            "properties": {
                "data": {"type": "array", "items": _ref("ModelInfo")},
                "has_more": {"type": "boolean"},
                "first_id": nullable_str,
                "last_id": nullable_str,
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
    # Either header carries the token, on every route.
    token: list[dict[str, list[str]]] = [{"bearer": []}, {"apiKey": []}] if secured else []
    request_id = {
        "name": "id",
        "in": "path",
        "required": True,
        "schema": {"type": "string"},
        "description": "batchd's request id, `<account>.<token>`",
    }
    betas_header = {
        "name": "anthropic-beta",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "comma-separated beta names, as the API takes them: the request's batch "
        "is created with them (a batch of its own betas); a name not in api.known_betas is "
        "refused with the API's own message",
    }
    sdk_beta_query = {
        "name": "beta",
        "in": "query",
        "required": False,
        "schema": {"type": "string"},
        "description": "sent by SDKs' beta surface; changes nothing",
    }
    account_header = {
        "name": "batchd-account",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "pattern": ACCOUNT_NAME.pattern},
        "description": "the account the call runs under (default: the token's first)",
    }
    idem = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": settings.submit.max_key_length},
    }
    responses = {
        f"Error{status}": _json(_ref("Error"), text)
        | ({"headers": _retry_headers()} if status in ("429", "503") else {})
        for status, text in _ERROR_STATUSES.items()
    }
    responses["Error504"] = _json(
        _ref("Error"),
        "The request expired in its batch before it was processed (and retry.retry_expired is "
        "off), or the API's timeout_error result. Final: `x-should-retry: false`.",
    )
    for status, text in (("402", "billing_error"), ("500", "api_error"),
                         ("529", "overloaded_error")):  # fmt: skip
        responses[f"Error{status}"] = _json(
            _ref("Error"),
            f"The request ended with the API's {text} (after its attempts, if retryable), or "
            "batchd could not answer it. Final: `x-should-retry: false`.",
        )
    responses["Error502"] = _json(
        _ref("Error"),
        "The API could not be reached for a passed-through call; retry after `Retry-After`.",
    ) | {"headers": _retry_headers()}
    # The routes passed through to the API answer whatever it answered, errors included.
    passed_errors = {
        **_errors("400", "401", "403", "404", "408", "413", "429", "500", "502", "503", "529")
    }
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
        "security": token,
        "paths": {
            **ledger.openapi_paths(sorted(settings.accounts)),
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
                        "202": _json(
                            _ref("SubmitResponse"), "Queued (or a repeated key, same body)."
                        ),
                        **_errors("400", "401", "403", "408", "409", "413", "429", "503"),
                    },
                }
            },
            "/v1/requests/bulk": {
                "post": {
                    "operationId": "submitBulk",
                    "summary": "Queue many requests; one outcome per item, in order",
                    "description": "A JSON array, or JSONL with a JSONL content type. A bad item "
                    "gets its error in its place and never stops the others (`conflict_error` for "
                    "a key used before with another body). With an Idempotency-Key header, an "
                    "item without a key gets `<header>#<index>`.",
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
                    "the error with the API's status and type. `stream: true` is refused. A "
                    "call is queued for a batch and held until its result. An SDK's retry "
                    "(`x-stainless-retry-count` above 0) of a call with the same body, or a call "
                    "with the same Idempotency-Key, waits for the request the first attempt "
                    "queued instead of queuing another. Every final error says "
                    "`x-should-retry: false`; a hold that runs out is a 503 with Retry-After.",
                    "parameters": [
                        idem,
                        sdk_beta_query,
                        betas_header,
                        account_header,
                        {
                            "name": "x-stainless-retry-count",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "sent by the official SDKs: above 0 on a retry, "
                            "which re-attaches to the request its first attempt queued "
                            f"(for ingress.drop_in_reattach = {cfg.drop_in_reattach:g} s)",
                        },
                        {
                            "name": "x-stainless-timeout",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "sent by the official SDKs: their timeout in "
                            "seconds; the hold ends early enough to answer 503 before it",
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("MessageParams")}},
                    },
                    "responses": {
                        "200": _json(_ref("Message"), "The Message."),
                        **_errors("400", "401", "402", "403", "404", "408", "409", "413"),
                        **_errors("429", "500", "503", "504", "529"),
                    },
                }
            },
            "/v1/messages/count_tokens": {
                "post": {
                    "operationId": "countTokens",
                    "summary": "Count a request's input tokens (passed through to the API)",
                    "description": "Sent on to the API's `/v1/messages/count_tokens` with the "
                    "account's API key; its answer, errors included, comes back as it was.",
                    "parameters": [sdk_beta_query, betas_header, account_header],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": _ref("CountTokensParams")}},
                    },
                    "responses": {
                        "200": _json(_ref("TokenCount"), "The API's count."),
                        **passed_errors,
                    },
                }
            },
            "/v1/models": {
                "get": {
                    "operationId": "listModels",
                    "summary": "The models the account's key may use (passed through to the API)",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                        },
                        {
                            "name": "before_id",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                        {
                            "name": "after_id",
                            "in": "query",
                            "required": False,
                            "schema": {"type": "string"},
                        },
                        sdk_beta_query,
                        betas_header,
                        account_header,
                    ],
                    "responses": {
                        "200": _json(_ref("ModelList"), "One page of models, newest first."),
                        **passed_errors,
                    },
                }
            },
            "/v1/models/{id}": {
                "get": {
                    "operationId": "retrieveModel",
                    "summary": "One model, by id or alias (passed through to the API)",
                    "parameters": [
                        {
                            "name": "id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string"},
                        },
                        sdk_beta_query,
                        betas_header,
                        account_header,
                    ],
                    "responses": {
                        "200": _json(_ref("ModelInfo"), "The model."),
                        **passed_errors,
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
            "schemas": {**_schemas(settings), **ledger.openapi_schemas()},
            "responses": responses,
            "headers": {
                "RequestId": {
                    "description": "this answer's id, also in an error's `request_id`",
                    "schema": {"type": "string"},
                }
            },
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "producer token (SDKs: auth_token / authToken)",
                },
                "apiKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "x-api-key",
                    "description": "producer token, as Anthropic SDKs send their api_key",
                },
            },
        },
    }
    for path, ops in openapi_paths(settings).items():
        doc["paths"].setdefault(path, {}).update(ops)
    return doc


def _retry_headers() -> dict[str, Any]:
    return {
        "request-id": {"$ref": "#/components/headers/RequestId"},
        "Retry-After": {
            "description": "seconds to wait before trying again",
            "schema": {"type": "string"},
        },
        "retry-after-ms": {
            "description": "the same wait in milliseconds (read first by Anthropic SDKs)",
            "schema": {"type": "string"},
        },
    }


def document(settings: Settings) -> bytes:
    return orjson.dumps(build(settings))
