"""Leases: a key held with a TTL and a token, renewed while held, released only by its holder."""

from __future__ import annotations

from batchd.store.runner import Read
from batchd.store.scripts import Call, call, text


def acquire(key: str, token: str, ttl_ms: int) -> Read[bool]:
    """Take the lease if free (SET NX PX); True when taken."""
    return Read([("SET", key, token, "NX", "PX", ttl_ms)], lambda out: bool(out[0]))


def renew(key: str, token: str, ttl_ms: int) -> Call[bool]:
    """RENEW: extend the lease while it is ours; False when it is not (any more)."""
    return call("renew", [key], [token, ttl_ms], lambda reply: bool(int(reply)))


def release(key: str, token: str) -> Call[bool]:
    """RELEASE: let go of the lease if it is ours."""
    return call("release", [key], [token], lambda reply: bool(int(reply)))


def holder(key: str) -> Read[str]:
    """The token holding the lease now ('' when free)."""
    return Read([("GET", key)], lambda out: text(out[0]))
