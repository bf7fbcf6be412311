"""The public API: what `import batchd` exports, pinned so a change to it is deliberate."""

from __future__ import annotations

import importlib

import pytest

import batchd

PUBLIC = [
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

ERRORS = [
    "APIError",
    "AckError",
    "BatchdError",
    "CancelError",
    "ConfigError",
    "IdempotencyConflictError",
    "InvalidRequestError",
    "RedisFullError",
    "RedisUnavailableError",
    "RequestNotFoundError",
    "RequestTooLargeError",
    "StoreError",
    "SubmitError",
    "WaitTimeoutError",
]


def test_all_is_pinned() -> None:
    """`batchd.__all__` is exactly the documented list, in order."""
    assert batchd.__all__ == PUBLIC


@pytest.mark.parametrize("name", PUBLIC)
def test_each_public_name_is_importable(name: str) -> None:
    """Every name in `__all__` is an attribute of the freshly imported package."""
    module = importlib.import_module("batchd")
    assert getattr(module, name) is not None


def test_star_import_gives_exactly_all() -> None:
    """`from batchd import *` binds the names of `__all__` and nothing else."""
    namespace: dict[str, object] = {}
    exec("from batchd import *", namespace)
    assert sorted(k for k in namespace if k != "__builtins__") == sorted(PUBLIC)


@pytest.mark.parametrize("name", ERRORS)
def test_public_errors_share_one_root(name: str) -> None:
    """Every exported error is a BatchdError, so one `except` catches them all."""
    assert issubclass(getattr(batchd, name), batchd.BatchdError)


def test_submit_refusals_are_submit_errors() -> None:
    """Every kind of submit refusal is caught as SubmitError."""
    assert issubclass(batchd.InvalidRequestError, batchd.SubmitError)
    assert issubclass(batchd.RequestTooLargeError, batchd.SubmitError)
    assert issubclass(batchd.IdempotencyConflictError, batchd.SubmitError)


def test_redis_failures_are_store_errors() -> None:
    """Redis down and Redis full are both caught as StoreError."""
    assert issubclass(batchd.RedisUnavailableError, batchd.StoreError)
    assert issubclass(batchd.RedisFullError, batchd.StoreError)


def test_async_ticket_is_a_ticket() -> None:
    """What AsyncClient.submit returns is a Ticket too, so code typed for one takes both."""
    assert issubclass(batchd.AsyncTicket, batchd.Ticket)


def test_version_is_a_string() -> None:
    """`__version__` is a dotted version string."""
    assert isinstance(batchd.__version__, str)
    assert all(part.isdigit() for part in batchd.__version__.split(".")[:2])
