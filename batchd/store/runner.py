"""The store's one door to Redis: `Store` (sync) and `AsyncStore` (asyncio), twins side by side.

Both run script calls (EVALSHA, loading the script where a node lacks it), pipelined reads, and
durable writes: a write that decides a payment is followed by WAIT on the connection that made
it, so it has reached the configured replicas before batchd acts on it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis
from redis.cluster import RedisCluster

from batchd.defaults import CLOCK_CHECK
from batchd.errors import (
    BatchdError,
    DurabilityError,
    RedisFullError,
    RedisUnavailableError,
    StoreError,
)
from batchd.store.connection import is_cluster, server_time_ms
from batchd.store.keys import Keys
from batchd.store.scripts import Call, Script

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """Commands sent in one pipeline (no transaction), and how their replies are read.

    A reply that is an error is raised (as a BatchdError) unless `errors` is set: then it stays
    in place, an exception, for `parse` to judge.
    """

    commands: Sequence[tuple[Any, ...]]
    parse: Callable[[list[Any]], T]
    errors: bool = False


@dataclass
class Durability:
    """How many replicas a payment-deciding write must reach before batchd goes on.

    `replicas` None: as many as the master had connected when last asked (at most 1), so a
    deployment with a replica gets the guarantee by default and one without pays nothing.
    """

    replicas: int | None = None
    timeout_ms: int = 1000
    attempts: int = 3
    _seen: dict[str, tuple[float, int]] = field(default_factory=dict)

    def wanted(self, node: redis.Redis, name: str) -> int:
        if self.replicas is not None:
            return self.replicas
        at, n = self._seen.get(name, (0.0, -1))
        if time.monotonic() - at > 30.0:
            info = node.info("replication")
            n = min(1, int(info.get("connected_slaves", 0)))
            self._seen[name] = (time.monotonic(), n)
        return n


def _is_noscript(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.NoScriptError)


def translate(exc: redis.RedisError) -> BatchdError:
    """A redis-py error as the BatchdError that says what happened and what to do."""
    message = str(exc)
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return RedisUnavailableError(
            f"Redis refused batchd's credentials ({message}); check the user and password in "
            "redis_url (BATCHD_REDIS_URL)"
        )
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return RedisUnavailableError(
            f"cannot reach Redis ({message}); is it running, and is redis_url "
            "(BATCHD_REDIS_URL) right?"
        )
    if message.startswith("OOM") or "maxmemory" in message:
        return RedisFullError(
            f"Redis is full ({message}): consumers can still read and acknowledge replies, which "
            "frees memory; otherwise raise Redis's maxmemory or add memory"
        )
    if message.startswith("MISCONF") or "No space left" in message:
        return RedisFullError(
            f"Redis cannot write its data to disk ({message}): free disk space on the Redis host"
        )
    if isinstance(exc, redis.ReadOnlyError):
        return RedisUnavailableError(
            f"Redis answered from a read-only replica ({message}); a failover is under way or "
            "redis_url names a replica"
        )
    return StoreError(message)


def checked(reply: Any) -> Any:
    """A pipelined reply that is an error, raised as a BatchdError."""
    if isinstance(reply, redis.RedisError):
        raise translate(reply) from reply
    if isinstance(reply, Exception):
        raise reply
    return reply


def _parsed(r: Read[T], out: list[Any]) -> T:
    """A read's replies parsed; an error reply raised as a BatchdError, also one its parse
    raises (a record under foreign data: Redis's WRONGTYPE)."""
    if not r.errors:
        for reply in out:
            checked(reply)
    try:
        return r.parse(out)
    except redis.RedisError as exc:
        raise translate(exc) from exc


class Store:
    """Runs the data model's calls on one sync client (a server, or a cluster)."""

    def __init__(self, client: Any, keys: Keys, *, durability: Durability | None = None) -> None:
        self.client = client
        self.keys = keys
        self.cluster = is_cluster(client)
        self.durability = durability or Durability()
        self._offset = (0.0, -CLOCK_CHECK - 1.0)

    def _load(self, script: Script) -> None:
        self.client.script_load(script.source)

    def run(self, c: Call[T]) -> T:
        """Run one script call and read its reply."""
        try:
            try:
                reply = self.client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
            except redis.exceptions.NoScriptError:
                self._load(c.script)
                reply = self.client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
        except redis.RedisError as exc:
            raise translate(exc) from exc
        return c.parse(reply)

    def run_all(self, calls: Sequence[Call[Any]]) -> list[Any]:
        """Run calls in one pipeline (no transaction); each reply parsed, or its exception."""
        if not calls:
            return []
        try:
            replies = self._pipeline(calls)
            missing = {c.script for c, r in zip(calls, replies, strict=True) if _is_noscript(r)}
            if missing:
                for script in missing:
                    self._load(script)
                again = [i for i, r in enumerate(replies) if _is_noscript(r)]
                for i, reply in zip(again, self._pipeline([calls[i] for i in again]), strict=True):
                    replies[i] = reply
        except redis.RedisError as exc:
            raise translate(exc) from exc
        return [
            r if isinstance(r, Exception) else c.parse(r)
            for c, r in zip(calls, replies, strict=True)
        ]

    def _pipeline(self, calls: Sequence[Call[Any]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
        return list(pipe.execute(raise_on_error=False))

    def durable(self, c: Call[T]) -> T:
        """Run a call that decides a payment, then WAIT until the configured replicas have it.

        Raises DurabilityError when they do not confirm in time: the caller holds or retries
        the step rather than act on a write a failover could lose.
        """
        try:
            return self._durable(c)
        except redis.RedisError as exc:
            raise translate(exc) from exc

    def _durable(self, c: Call[T]) -> T:
        node, name = self._node_of(c.keys[0])
        want = self.durability.wanted(node, name)
        acked: Any = 0
        reply: Any = None
        for attempt in range(max(1, self.durability.attempts)):
            pipe = node.pipeline(transaction=False)
            if attempt == 0:
                pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
            pipe.execute_command("WAIT", want, self.durability.timeout_ms)  # type: ignore[no-untyped-call]
            out = pipe.execute(raise_on_error=False)
            if attempt == 0:
                if _is_noscript(out[0]):
                    self._load(c.script)
                    return self._durable(c)
                if isinstance(out[0], Exception):
                    raise out[0]
                reply = out[0]
            acked = out[-1]
            if isinstance(acked, Exception):
                raise StoreError(f"WAIT failed: {acked}") from acked
            if int(acked) >= want:
                return c.parse(reply)
        raise DurabilityError(
            f"{c.script.name}: the write reached {acked} of {want} replicas within "
            f"{self.durability.timeout_ms} ms (x{self.durability.attempts})"
        )

    def _node_of(self, key: str) -> tuple[redis.Redis, str]:
        """The connection that serves `key`: the client itself, or the cluster node's."""
        if isinstance(self.client, RedisCluster):
            node = self.client.get_node_from_key(key)  # type: ignore[no-untyped-call]
            conn = self.client.get_redis_connection(node)
            return conn, node.name
        return self.client, "server"

    def read(self, r: Read[T]) -> T:
        """Send a read's commands in one pipeline and parse the replies."""
        if not r.commands:
            return r.parse([])
        try:
            pipe = self.client.pipeline(transaction=False)
            for command in r.commands:
                pipe.execute_command(*command)
            out = list(pipe.execute(raise_on_error=False))
        except redis.RedisError as exc:
            raise translate(exc) from exc
        return _parsed(r, out)

    def block(self, command: tuple[Any, ...], timeout: float) -> Any:
        """One blocking command (BLMOVE, BLMPOP), its errors translated; None when it timed
        out (on Redis's side, or the socket's)."""
        try:
            return self.client.execute_command(*command)
        except redis.TimeoutError:
            return None
        except redis.RedisError as exc:
            raise translate(exc) from exc

    def time_ms(self) -> int:
        """Redis's clock (ms), asked now."""
        try:
            now = server_time_ms(self.client)
        except redis.RedisError as exc:
            raise translate(exc) from exc
        self._offset = (now - time.time() * 1000, time.monotonic())
        return now

    def now_ms(self) -> int:
        """Redis's clock (ms), from this host's clock and their offset, asked at most every
        CLOCK_CHECK seconds: one clock for every replica, at no round trip per read."""
        offset, at = self._offset
        if time.monotonic() - at > CLOCK_CHECK:
            return self.time_ms()
        return int(time.time() * 1000 + offset)

    def clock_skew_ms(self) -> int:
        """How far this host's clock is from Redis's (ms; positive: this host is behind)."""
        self.time_ms()
        return int(self._offset[0])

    def close(self) -> None:
        self.client.close()


class AsyncStore:
    """The asyncio twin of `Store`: the same calls and reads, awaited."""

    def __init__(self, client: Any, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self.cluster = is_cluster(client)

    async def run(self, c: Call[T]) -> T:
        try:
            try:
                reply = await self.client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
            except redis.exceptions.NoScriptError:
                await self.client.script_load(c.script.source)
                reply = await self.client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
        except redis.RedisError as exc:
            raise translate(exc) from exc
        return c.parse(reply)

    async def run_all(self, calls: Sequence[Call[Any]]) -> list[Any]:
        if not calls:
            return []
        try:
            replies = await self._pipeline(calls)
            missing = {c.script for c, r in zip(calls, replies, strict=True) if _is_noscript(r)}
            if missing:
                for script in missing:
                    await self.client.script_load(script.source)
                again = [i for i, r in enumerate(replies) if _is_noscript(r)]
                redo = await self._pipeline([calls[i] for i in again])
                for i, reply in zip(again, redo, strict=True):
                    replies[i] = reply
        except redis.RedisError as exc:
            raise translate(exc) from exc
        return [
            r if isinstance(r, Exception) else c.parse(r)
            for c, r in zip(calls, replies, strict=True)
        ]

    async def _pipeline(self, calls: Sequence[Call[Any]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            pipe.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
        return list(await pipe.execute(raise_on_error=False))

    async def read(self, r: Read[T]) -> T:
        if not r.commands:
            return r.parse([])
        try:
            pipe = self.client.pipeline(transaction=False)
            for command in r.commands:
                pipe.execute_command(*command)
            out = list(await pipe.execute(raise_on_error=False))
        except redis.RedisError as exc:
            raise translate(exc) from exc
        return _parsed(r, out)

    async def block(self, command: tuple[Any, ...], timeout: float) -> Any:
        try:
            return await self.client.execute_command(*command)
        except redis.TimeoutError:
            return None
        except redis.RedisError as exc:
            raise translate(exc) from exc

    async def time_ms(self) -> int:
        try:
            if self.cluster:
                nodes = self.client.get_primaries()
                sec, usec = await self.client.time(target_nodes=nodes[:1])
            else:
                sec, usec = await self.client.time()
        except redis.RedisError as exc:
            raise translate(exc) from exc
        return int(sec) * 1000 + int(usec) // 1000

    async def aclose(self) -> None:
        await self.client.aclose()
