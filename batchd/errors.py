"""Every error batchd raises, as one tree.

BatchdError
├── ConfigError                  invalid configuration (the CLI exits 2)
├── SubmitError                  a request refused at submit time; nothing was stored
│   ├── InvalidRequestError      params, metadata, reply_to, callback_url or key are wrong
│   └── RequestTooLargeError     the encoded request cannot fit in any batch
├── RequestNotFoundError         no request with that id (or it expired after its retention)
├── CancelError                  the request can no longer be withdrawn
├── WaitTimeoutError             `wait` ended before the request reached a terminal state
├── StoreError                   batchd's own Redis data is missing or corrupted
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
"""

from __future__ import annotations

from typing import Any


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


class RequestNotFoundError(BatchdError):
    """No request with that id exists (never did, or its retention ran out)."""


class CancelError(BatchdError):
    """The request cannot be canceled any more (it is in a live batch, or already ended)."""


class WaitTimeoutError(BatchdError):
    """``wait`` gave up before the request reached a terminal state."""


class StoreError(BatchdError):
    """batchd's own data in Redis is missing, foreign or corrupted."""


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
    """No HTTP answer came back: connection refused or reset, DNS failure."""


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
