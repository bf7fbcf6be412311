"""batchd: run single Claude Messages requests through the Message Batches API at half price.

Producers use `Client` / `AsyncClient`; the daemon is `batchd run`; see README.md.
"""

from batchd.client import AsyncClient, Client, SubmitItem
from batchd.errors import (
    APIError,
    BatchdError,
    CancelError,
    ConfigError,
    InvalidRequestError,
    RequestNotFoundError,
    RequestTooLargeError,
    SubmitError,
    WaitTimeoutError,
)
from batchd.results import RequestState, Result, Ticket
from batchd.settings import Settings

__version__ = "0.1.0"

__all__ = [
    "APIError",
    "AsyncClient",
    "BatchdError",
    "CancelError",
    "Client",
    "ConfigError",
    "InvalidRequestError",
    "RequestNotFoundError",
    "RequestState",
    "RequestTooLargeError",
    "Result",
    "Settings",
    "SubmitError",
    "SubmitItem",
    "Ticket",
    "WaitTimeoutError",
    "__version__",
]
