"""batchd: run single Claude Messages requests through the Message Batches API at half price.

Producers use `Client` / `AsyncClient`; the daemon is `batchd run`; see README.md.
"""

from batchd.client import AsyncClient, AsyncTicket, Client, Replies, SubmitItem
from batchd.errors import (
    AckError,
    APIError,
    BatchdError,
    CancelError,
    ConfigError,
    IdempotencyConflictError,
    InvalidRequestError,
    RedisFullError,
    RedisUnavailableError,
    RequestNotFoundError,
    RequestTooLargeError,
    StoreError,
    SubmitError,
    WaitTimeoutError,
)
from batchd.results import RequestState, Result, Ticket
from batchd.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AckError",
    "AsyncClient",
    "AsyncTicket",
    "BatchdError",
    "CancelError",
    "Client",
    "ConfigError",
    "IdempotencyConflictError",
    "InvalidRequestError",
    "RedisFullError",
    "RedisUnavailableError",
    "Replies",
    "RequestNotFoundError",
    "RequestState",
    "RequestTooLargeError",
    "Result",
    "Settings",
    "StoreError",
    "SubmitError",
    "SubmitItem",
    "Ticket",
    "WaitTimeoutError",
    "__version__",
]
