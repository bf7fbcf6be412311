"""Reads every key of a Redis, whatever its type, so tests can look for secrets in all of it.

Values are read type by type (so compressed encodings hide nothing) and also as `DUMP` bytes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import redis


def redis_values(client: redis.Redis) -> Iterator[tuple[bytes, bytes]]:
    """(key, bytes) for every field, member, element and value of every key, and its DUMP.

    `client` must not decode responses: everything is compared as bytes.
    """
    for key, value in _values(client):
        yield bytes(key), bytes(value)


def _values(client: Any) -> Iterator[tuple[Any, Any]]:
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else str(kind)
        if kind == "string":
            yield key, client.get(key) or b""
        elif kind == "hash":
            for field, value in client.hscan_iter(key, count=1000):
                yield key, field
                yield key, value
        elif kind == "list":
            for start in range(0, client.llen(key), 1000):
                for item in client.lrange(key, start, start + 999):
                    yield key, item
        elif kind == "set":
            for member in client.sscan_iter(key, count=1000):
                yield key, member
        elif kind == "zset":
            for member, _ in client.zscan_iter(key, count=1000):
                yield key, member
        elif kind == "stream":
            for _, fields in client.xrange(key):
                for field, value in fields.items():
                    yield key, field
                    yield key, value
        dumped = client.dump(key)
        if dumped is not None:
            yield key, dumped
