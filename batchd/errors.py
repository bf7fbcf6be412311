"""Every error batchd raises, as one tree.

BatchdError
├── ConfigError                  invalid configuration (the CLI exits 2)
├── SubmitError                  a request refused at submit time; nothing was stored
│   ├── InvalidRequestError      params, metadata, reply_to, callback_url or key are wrong
│   ├── RequestTooLargeError     the encoded request cannot fit in any batch
│   ├── IdempotencyConflictError the idempotency key was used before for another request
│   └── BudgetExceededError      a spend cap of the account or tag is reached (if set to refuse)
├── RequestNotFoundError         no request with that id (or it expired after its retention)
├── CancelError                  the request can no longer be withdrawn
├── WaitTimeoutError             `wait` ended before the request reached a terminal state
├── AckError                     `ack` named a consumer that holds no such reply
├── StoreError                   batchd's own Redis data is missing, foreign or corrupted
│   ├── CorruptRequest           one request's record does not match its lane entry
│   ├── DurabilityError          a write that decides a payment did not reach its replicas
│   ├── RedisUnavailableError    Redis cannot be reached (down, wrong URL, refused auth)
│   └── RedisFullError           Redis refuses writes: out of memory, or its disk is full
├── LostLease                    this process no longer holds the lease it worked under
├── IngressError                 an HTTP error answer of the ingress (status, type, message)
├── WebhookVerificationError     a received webhook's signature, timestamp or body is wrong
├── BlockedAddressError          a callback URL led to an address webhooks may not reach
├── BodyLengthError              a streamed batch body did not match its declared length
└── APIError                     anything the Message Batches API (or the way to it) did wrong
    ├── APIConnectionError       no HTTP answer: refused, reset, DNS
    │   └── APITimeoutError      the answer did not come in time
    ├── APIResponseError         an answer that is not what the API promises (bad JSON, HTML)
    │   └── ResultsStreamError   the results stream broke; says how many lines were delivered
    └── APIStatusError           an HTTP error status, with the API's error type and message
        ├── BadRequestError            400 invalid_request_error
        ├── AuthenticationError        401 authentication_error
        ├── BillingError               402 billing_error
        ├── PermissionDeniedError      403 permission_error
        ├── NotFoundError              404 not_found_error
        ├── ConflictError              409 conflict_error
        ├── APIRequestTooLargeError    413 request_too_large
        ├── RateLimitError             429 rate_limit_error
        ├── InternalServerError        500 api_error (and any other 5xx)
        ├── GatewayTimeoutError        504 timeout_error
        └── OverloadedError            529 overloaded_error

Foreign errors (httpx, redis) are translated at the boundary with ``raise ... from exc``.
The CLI's exit codes live here too, beside the errors that lead to them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Exit codes of every `batchd` command.
EXIT_OK = 0
EXIT_FAILURE = 1  # a runtime failure (Redis down, an API error, a partial submit)
EXIT_USAGE = 2  # bad usage, input or configuration: the message says what to change
EXIT_NOT_FOUND = 3  # the request, batch or delivery named does not exist
EXIT_TIMEOUT = 4  # gave up waiting (`--timeout`); what was done is kept
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT); what was done is kept
EXIT_BROKEN_PIPE = 141  # stdout's reader went away (`| head`): 128 + SIGPIPE, as for other tools


class BatchdError(Exception):
    """Root of every error batchd raises on purpose."""


class ConfigError(BatchdError):
    """The configuration is invalid; ``problems`` names every bad field and why."""

    def __init__(self, message: str, problems: list[str] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []


class SubmitError(BatchdError):
    """A request was refused at submit time. Nothing was stored."""

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class InvalidRequestError(SubmitError):
    """A field of the submitted request is wrong; ``field`` names it."""


class RequestTooLargeError(SubmitError):
    """The encoded request is larger than one batch may be."""


class IdempotencyConflictError(SubmitError):
    """The idempotency key was used before for another request: `request_id` names it and
    `differs` the fields that differ. Nothing was stored."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = "key",
        request_id: str = "",
        differs: list[str] | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.request_id = request_id
        self.differs = differs or []


class BudgetExceededError(SubmitError):
    """A spend cap of the request's account or tag is reached and the operator chose to refuse
    new submits until it frees (a new day or month, or a higher cap). Nothing was stored."""


class RequestNotFoundError(BatchdError):
    """No request with that id exists (never did, or its retention ran out)."""


class CancelError(BatchdError):
    """The request cannot be canceled any more (it is in a live batch, or already ended)."""


class WaitTimeoutError(BatchdError):
    """``wait`` gave up before the request reached a terminal state."""


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


class AckError(BatchdError):
    """`ack` named a consumer that holds no such reply (not the reader's own name?)."""


class StoreError(BatchdError):
    """batchd's own data in Redis is missing, foreign or corrupted."""


class CorruptRequest(StoreError):
    """A request's record in Redis is missing or does not match its pending entry."""

    def __init__(self, token: str) -> None:
        super().__init__(f"request record {token} is missing or corrupted")
        self.token = token


class DurabilityError(StoreError):
    """A write that decides a payment did not reach the configured replicas in time: the step
    is held or retried, never acted on."""


class RedisUnavailableError(StoreError):
    """Redis cannot be reached: it is down, the URL is wrong, or it refused the credentials."""


class RedisFullError(StoreError):
    """Redis refuses writes: it is at `maxmemory` (noeviction) or cannot write its AOF (disk
    full). Reading and acknowledging replies still works and frees memory."""


class LostLease(BatchdError):
    """This process no longer holds the lock it was working under; it must stop at once."""


class IngressError(BatchdError):
    """An HTTP error answer of the ingress: status, message, the field at fault, extra headers."""

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


class BodyLengthError(BatchdError):
    """A batch body streamed to the API yielded more or fewer bytes than its Content-Length."""

    def __init__(self, message: str, *, expected: int, sent: int) -> None:
        super().__init__(message)
        self.expected = expected
        self.sent = sent


class WebhookVerificationError(BatchdError):
    """A received webhook failed verification: missing headers, stale timestamp, bad signature."""


class BlockedAddressError(BatchdError):
    """A webhook connection was refused before it was made: its address is not allowed."""


class APIError(BatchdError):
    """The Message Batches API, or the road to it, failed.

    Every API error carries the HTTP ``status`` (None when there was no answer), the API's
    ``error_type`` and ``message``, the ``request_id`` header and ``retry_after`` in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error_type: str | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error_type = error_type
        self.request_id = request_id
        self.retry_after = retry_after
        self.body = body

    def __str__(self) -> str:
        parts = [self.message]
        if self.status is not None:
            parts.append(f"status={self.status}")
        if self.error_type:
            parts.append(f"type={self.error_type}")
        if self.request_id:
            parts.append(f"request_id={self.request_id}")
        if self.retry_after is not None:
            parts.append(f"retry_after={self.retry_after:g}s")
        return " ".join(parts)


class APIConnectionError(APIError):
    """No HTTP answer came back: connection refused or reset, DNS failure.

    ``unsent`` is True when the request certainly never left (no connection could be made),
    so the API cannot have acted on it; False when it may have been received.
    """

    unsent: bool = False


class APITimeoutError(APIConnectionError):
    """The answer did not arrive within the configured timeout."""


class APIResponseError(APIError):
    """The API answered something it never promises: malformed JSON, HTML, wrong shape."""


class ResultsStreamError(APIResponseError):
    """The results stream broke off. ``delivered`` lines were handed to the caller intact."""

    def __init__(self, message: str, *, delivered: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.delivered = delivered


class APIStatusError(APIError):
    """The API answered with an HTTP error status."""


class BadRequestError(APIStatusError):
    """400 invalid_request_error."""


class AuthenticationError(APIStatusError):
    """401 authentication_error: the API key is missing or refused."""


class BillingError(APIStatusError):
    """402 billing_error."""


class PermissionDeniedError(APIStatusError):
    """403 permission_error."""


class NotFoundError(APIStatusError):
    """404 not_found_error."""


class ConflictError(APIStatusError):
    """409 conflict_error."""


class APIRequestTooLargeError(APIStatusError):
    """413 request_too_large: the batch body is over the API's size limit."""


class RateLimitError(APIStatusError):
    """429 rate_limit_error; ``retry_after`` says when to come back."""


class InternalServerError(APIStatusError):
    """500 api_error, or any 5xx without a more specific class."""


class GatewayTimeoutError(APIStatusError):
    """504 timeout_error."""


class OverloadedError(APIStatusError):
    """529 overloaded_error."""


STATUS_ERRORS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: BillingError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: APIRequestTooLargeError,
    429: RateLimitError,
    500: InternalServerError,
    504: GatewayTimeoutError,
    529: OverloadedError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    """The exception class for an HTTP error status (unknown 5xx map to InternalServerError)."""
    if status in STATUS_ERRORS:
        return STATUS_ERRORS[status]
    if status >= 500:
        return InternalServerError
    return APIStatusError
