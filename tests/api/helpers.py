"""Shared pieces of the API client's unit tests: sample API objects and scripted transports.

Samples follow the OpenAPI schemas (test_models.py checks them against the stored spec).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import orjson

from batchd.api import BatchesClient, RetryPolicy

API_KEY = "sk-ant-api03-unit-test-key-0123456789abcdef"

# Retries as fast as possible, so retry tests take no wall time.
FAST_RETRY = RetryPolicy(
    max_retries=3, backoff_initial=0.001, backoff_max=0.002, retry_after_max=0.01
)


def batch_json(
    batch_id: str = "msgbatch_01",
    status: str = "in_progress",
    processing: int = 2,
    **extra: Any,
) -> dict[str, Any]:
    ended = status == "ended"
    body: dict[str, Any] = {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": status,
        "request_counts": {
            "processing": 0 if ended else processing,
            "succeeded": processing if ended else 0,
            "errored": 0,
            "canceled": 0,
            "expired": 0,
        },
        "created_at": "2024-08-20T18:37:24.100435Z",
        "expires_at": "2024-08-21T18:37:24.100435Z",
        "ended_at": "2024-08-20T18:40:00Z" if ended else None,
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": (
            f"https://api.anthropic.com/v1/messages/batches/{batch_id}/results" if ended else None
        ),
    }
    body.update(extra)
    return body


def error_json(error_type: str, message: str, request_id: str | None = "req_body") -> bytes:
    return orjson.dumps(
        {
            "type": "error",
            "error": {"type": error_type, "message": message},
            "request_id": request_id,
        }
    )


def result_line(custom_id: str, kind: str = "succeeded") -> bytes:
    result: dict[str, Any]
    if kind == "succeeded":
        result = {
            "type": "succeeded",
            "message": {
                "id": f"msg_{custom_id}",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": f"answer to {custom_id}", "citations": None}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "stop_details": None,
                "container": None,
                "usage": {
                    "input_tokens": 10,
                    "output_tokens": 5,
                    "cache_creation": None,
                    "cache_creation_input_tokens": None,
                    "cache_read_input_tokens": None,
                    "inference_geo": None,
                    "server_tool_use": None,
                    "service_tier": "batch",
                },
            },
        }
    elif kind == "errored":
        result = {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {"type": "invalid_request_error", "message": "bad params"},
                "request_id": "req_x",
            },
        }
    else:
        result = {"type": kind}
    return orjson.dumps({"custom_id": custom_id, "result": result})


def json_response(status: int, body: Any, **headers: str) -> httpx.Response:
    return httpx.Response(
        status,
        content=body if isinstance(body, bytes) else orjson.dumps(body),
        headers={"content-type": "application/json", "request-id": "req_hdr", **headers},
    )


class ChunkStream(httpx.SyncByteStream):
    """A response body sent as the given chunks, optionally breaking off with `fail` after them."""

    def __init__(self, chunks: list[bytes], fail: Exception | None = None) -> None:
        self.chunks = chunks
        self.fail = fail
        self.closed = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self.chunks
        if self.fail is not None:
            raise self.fail

    def close(self) -> None:
        self.closed = True


def jsonl_response(
    chunks: list[bytes],
    fail: Exception | None = None,
    content_type: str = "application/x-jsonl",
) -> tuple[httpx.Response, ChunkStream]:
    stream = ChunkStream(chunks, fail)
    response = httpx.Response(
        200, stream=stream, headers={"content-type": content_type, "request-id": "req_res"}
    )
    return response, stream


Handler = Callable[[httpx.Request], httpx.Response]


class Script:
    """A MockTransport handler that answers from a list, recording every request it saw."""

    def __init__(self, *answers: httpx.Response | Exception | Handler) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            raise AssertionError(f"unexpected request {request.method} {request.url}")
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if isinstance(answer, httpx.Response):
            return answer
        return answer(request)


def make_client(
    handler: Handler,
    retry: RetryPolicy = FAST_RETRY,
    sleeps: list[float] | None = None,
    **kw: Any,
) -> BatchesClient:
    client = BatchesClient(
        API_KEY,
        base_url="https://api.test",
        retry=retry,
        transport=httpx.MockTransport(handler),
        **kw,
    )
    # Record the waits instead of sleeping through them.
    client._sleep = sleeps.append if sleeps is not None else (lambda _s: None)
    return client
