"""The store's one door to Redis: `Store` (sync) and `AsyncStore` (asyncio), twins side by side.

Both run script calls (EVALSHA, loading the script where a node lacks it), pipelined reads, and
durable writes: a write that decides a payment is followed by WAIT on the connection that made
it, so it has reached the configured replicas before batchd acts on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio as aredis
from redis.cluster import RedisCluster
from redis.exceptions import (
    AskError,
    ClusterDownError,
    ClusterError,
    MovedError,
    SlotNotCoveredError,
    TryAgainError,
)

from batchd.defaults import CLOCK_CHECK, CLUSTER_SETTLE, NO_REPLICAS_RECHECK, REPLICAS_RECHECK
from batchd.errors import (
    BatchdError,
    DurabilityError,
    RedisFullError,
    RedisUnavailableError,
    StoreError,
)
from batchd.store.connection import is_cluster, server_time_ms
from batchd.store.keys import Keys
from batchd.store.scripts import Call, Script, text

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
        n = self.cached(name)
        if n is None:
            info = node.info("replication")
            n = self.seen(name, int(info.get("connected_slaves", 0)))
        return n

    def cached(self, name: str) -> int | None:
        """What the server `name` had when last asked, while that is fresh: a replica seen
        stays wanted for REPLICAS_RECHECK s (a WAIT that times out only holds a step), none
        seen is asked again after NO_REPLICAS_RECHECK s (a replica that (re)joined is waited
        for at once: a failover right after would otherwise lose what went unwaited)."""
        at, n = self._seen.get(name, (0.0, -1))
        fresh = REPLICAS_RECHECK if n > 0 else NO_REPLICAS_RECHECK
        return n if n >= 0 and time.monotonic() - at <= fresh else None

    def seen(self, name: str, connected: int) -> int:
        n = min(1, connected)
        self._seen[name] = (time.monotonic(), n)
        return n


def _is_noscript(exc: BaseException) -> bool:
    return isinstance(exc, redis.exceptions.NoScriptError)


def unsettled(exc: object) -> bool:
    """A cluster's answer while a slot moves (TRYAGAIN, a redirect redis-py gave up following)
    or while a failover settles (CLUSTERDOWN, a slot nobody serves, a master that has no
    replica yet under `min-replicas-to-write`, a node that just became a replica): the command
    did not run, so running it again is safe."""
    if isinstance(
        exc,
        TryAgainError | AskError | ClusterDownError | SlotNotCoveredError | redis.ReadOnlyError,
    ):
        return True
    if isinstance(exc, redis.ResponseError) and str(exc).startswith("NOREPLICAS"):
        return True
    return isinstance(exc, ClusterError) and "TTL exhausted" in str(exc)


class Patience:
    """How long a call keeps trying while a cluster settles: CLUSTER_SETTLE seconds, the pauses
    growing from 20 ms to half a second."""

    def __init__(self) -> None:
        self.deadline: float | None = None
        self.pause = 0.02

    def _next(self) -> float | None:
        now = time.monotonic()
        if self.deadline is None:
            self.deadline = now + CLUSTER_SETTLE
        if now >= self.deadline:
            return None
        pause, self.pause = self.pause, min(0.5, self.pause * 2)
        return pause

    def wait(self) -> bool:
        """Sleep before the next try; False when the time is up."""
        pause = self._next()
        if pause is None:
            return False
        time.sleep(pause)
        return True

    async def await_(self) -> bool:
        pause = self._next()
        if pause is None:
            return False
        await asyncio.sleep(pause)
        return True


#: What redis-py raises: its errors, and the cluster client's own (a slot no node serves).
REDIS_ERRORS = (redis.RedisError, redis.exceptions.RedisClusterException)


def translate(exc: redis.RedisError | redis.exceptions.RedisClusterException) -> BatchdError:
    """A redis-py error as the BatchdError that says what happened and what to do."""
    message = str(exc)
    if isinstance(exc, redis.exceptions.RedisClusterException):
        return RedisUnavailableError(f"the Redis Cluster cannot serve this ({message})")
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return RedisUnavailableError(
            f"Redis refused batchd's credentials ({message}); check the user and password in "
            "redis_url (BATCHD_REDIS_URL)"
        )
    if isinstance(exc, redis.exceptions.MaxConnectionsError) or message == (
        "No connection available."
    ):
        return RedisUnavailableError(
            f"no free Redis connection in this client's pool ({message}): more calls at once "
            "than its max_connections; let fewer run at a time, or give the pool more"
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
    if unsettled(exc) or message.startswith(("MASTERDOWN", "CLUSTERDOWN")):
        return RedisUnavailableError(
            f"the Redis Cluster is settling ({message}): a failover or a slot moving; "
            "try again shortly"
        )
    return StoreError(message)


def checked(reply: Any) -> Any:
    """A pipelined reply that is an error, raised as a BatchdError."""
    if isinstance(reply, REDIS_ERRORS):
        raise translate(reply) from reply
    if isinstance(reply, Exception):
        raise reply
    return reply


def about_the_server(reply: object) -> bool:
    """An error that says nothing of the data asked for: the connection, the server's or the
    cluster's state. No parse may read it as an answer (an absent record, an empty list): a
    live assembly taken for gone during a failover would be dropped from the live index."""
    if isinstance(
        reply,
        redis.ConnectionError
        | redis.TimeoutError
        | redis.BusyLoadingError
        | redis.ReadOnlyError
        | ClusterError
        | TryAgainError
        | AskError
        | redis.exceptions.RedisClusterException,
    ):
        return True
    return isinstance(reply, redis.ResponseError) and str(reply).startswith(
        ("NOREPLICAS", "MASTERDOWN", "CLUSTERDOWN", "OOM", "MISCONF", "NOAUTH", "NOPERM")
    )


def _parsed(r: Read[T], out: list[Any]) -> T:
    """A read's replies parsed; an error reply raised as a BatchdError, also one its parse
    raises (a record under foreign data: Redis's WRONGTYPE). A Read with `errors` is handed
    the errors about the data only; one about the server is raised all the same."""
    for reply in out:
        if not r.errors or about_the_server(reply):
            checked(reply)
    try:
        return r.parse(out)
    except REDIS_ERRORS as exc:
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
            reply = self._raw(c)
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc
        return c.parse(reply)

    def _raw(self, c: Call[Any]) -> Any:
        """One call's unparsed reply; on a cluster, tried again while its slot moves."""
        patience = Patience()
        while True:
            try:
                try:
                    return self.client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
                except redis.exceptions.NoScriptError:
                    self._load(c.script)
                    return self.client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
            except (redis.RedisError, SlotNotCoveredError) as exc:
                if not (self.cluster and unsettled(exc) and patience.wait()):
                    if isinstance(exc, SlotNotCoveredError):
                        raise ClusterDownError(str(exc)) from exc
                    raise

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
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc
        for i, reply in enumerate(replies):
            if self.cluster and unsettled(reply):
                try:
                    replies[i] = self._raw(calls[i])
                except redis.RedisError as exc:
                    replies[i] = exc
        return [
            r if isinstance(r, Exception) else c.parse(r)
            for c, r in zip(calls, replies, strict=True)
        ]

    def _pipeline(self, calls: Sequence[Call[Any]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            # Through execute_command: a cluster pipeline refuses its `evalsha` method, though it
            # routes EVALSHA by its declared keys like any keyed command.
            pipe.execute_command("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args)
        return list(pipe.execute(raise_on_error=False))

    def durable(self, c: Call[T]) -> T:
        """Run a call that decides a payment, then WAIT until the configured replicas have it.

        Raises DurabilityError when they do not confirm in time: the caller holds or retries
        the step rather than act on a write a failover could lose.
        """

        def call(held: redis.Redis) -> Any:
            try:
                return held.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
            except redis.exceptions.NoScriptError:
                held.script_load(c.script.source)
                return held.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)

        return c.parse(self._replicated(c.keys[0], call, c.script.name))

    def watched(self, key: str) -> bool:
        """Whether a write to `key` is to be waited for: its server has replicas to wait for."""
        try:
            node, name = self._node_of(key)
            return self.durability.wanted(node, name) > 0
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc

    def barrier(self, key: str) -> None:
        """WAIT until every write the server of `key`'s slot has taken so far reached the
        configured replicas: a write of ours to `key` (a string that expires), then WAIT, which
        covers every write before ours. DurabilityError when they do not confirm in time.

        What leaves the slot (a reply pushed to a queue on another node) goes only after this,
        so no failover can take back the write that made it.
        """
        self._replicated(key, lambda held: held.set(key, b"1", px=60_000), "barrier", True)

    def _replicated(
        self, key: str, write: Callable[[redis.Redis], Any], what: str, only_watched: bool = False
    ) -> Any:
        try:
            return self._write_and_wait(key, write, what, only_watched)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            self._refresh()
            raise translate(exc) from exc
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc

    def _write_and_wait(
        self, key: str, write: Callable[[redis.Redis], Any], what: str, only_watched: bool
    ) -> Any:
        # WAIT counts the replicas that have this connection's writes, so the write and every
        # WAIT after it go over one connection held throughout, to the node that serves the key
        # (following the cluster's redirects by hand: ASKING, then the write, on the new node).
        # `only_watched`: the write is only there for the WAIT; none without replicas to wait for.
        patience = Patience()
        asking: tuple[str, int] | None = None
        while True:
            node, name = self._node_of(key, asking)
            want = self.durability.wanted(node, name)
            if want == 0 and only_watched:
                return None
            held = redis.Redis(connection_pool=node.connection_pool, single_connection_client=True)
            try:
                try:
                    if asking is not None:
                        held.execute_command("ASKING")  # type: ignore[no-untyped-call]
                    reply = write(held)
                except redis.RedisError as exc:
                    if not (self.cluster and unsettled(exc)):
                        raise
                    asking = None
                    if isinstance(exc, MovedError | ClusterDownError):
                        self._refresh()
                    elif isinstance(exc, AskError):
                        asking = (exc.host, exc.port)
                    if not patience.wait():
                        raise
                    continue
                acked = 0
                for _ in range(max(1, self.durability.attempts)):
                    if want == 0:
                        return reply
                    acked = int(held.execute_command("WAIT", want, self.durability.timeout_ms))  # type: ignore[no-untyped-call]
                    if acked >= want:
                        return reply
            finally:
                held.close()
            raise DurabilityError(
                f"{what}: the write reached {acked} of {want} replicas within "
                f"{self.durability.timeout_ms} ms (x{self.durability.attempts})"
            )

    def _node_of(self, key: str, at: tuple[str, int] | None = None) -> tuple[redis.Redis, str]:
        """The client of the server that serves `key` (or of the node `at`, host and port): the
        client itself, or the cluster node's."""
        if not isinstance(self.client, RedisCluster):
            return self.client, "server"
        if at is not None:
            node = self.client.get_node(host=at[0], port=at[1])  # type: ignore[no-untyped-call]
            if node is None:
                self._refresh()
                node = self.client.get_node(host=at[0], port=at[1])  # type: ignore[no-untyped-call]
        else:
            node = self.client.get_node_from_key(key)  # type: ignore[no-untyped-call]
        if node is None:
            raise ClusterDownError(f"no node of the cluster at {at}")
        conn = self.client.get_redis_connection(node)
        return conn, node.name

    def _refresh(self) -> None:
        """Read the cluster's slot map again (after a failover or a slot moved)."""
        if isinstance(self.client, RedisCluster):
            try:
                self.client.nodes_manager.initialize()
            except (redis.RedisError, redis.exceptions.RedisClusterException):
                pass  # no node answers yet; the next call tries again

    def read(self, r: Read[T]) -> T:
        """Send a read's commands in one pipeline and parse the replies."""
        if not r.commands:
            return r.parse([])
        try:
            pipe = self.client.pipeline(transaction=False)
            for command in r.commands:
                pipe.execute_command(*command)
            out = list(pipe.execute(raise_on_error=False))
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc
        if self.cluster:
            # Only the commands the cluster did not run go again: others may not be idempotent.
            for i, reply in enumerate(out):
                if unsettled(reply):
                    out[i] = self._command(r.commands[i])
        return _parsed(r, out)

    def _command(self, command: tuple[Any, ...]) -> Any:
        """One command tried until the cluster runs it (or time is up): its reply or error."""
        patience = Patience()
        while True:
            try:
                return self.client.execute_command(*command)
            except REDIS_ERRORS as exc:
                if not (unsettled(exc) and patience.wait()):
                    return exc

    def block(self, command: tuple[Any, ...], timeout: float) -> Any:
        """One blocking command (BLMOVE, BLMPOP), its errors translated; None when it timed
        out (on Redis's side, or the socket's)."""
        try:
            return self.client.execute_command(*command)
        except redis.TimeoutError:
            return None
        except redis.RedisError as exc:
            if self.cluster and unsettled(exc):
                time.sleep(0.05)  # the slot is moving: the caller looks again
                return None
            raise translate(exc) from exc

    def time_ms(self) -> int:
        """Redis's clock (ms), asked now."""
        sent = time.time() * 1000
        try:
            now = server_time_ms(self.client)
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc
        # Redis read its clock somewhere in the round trip: its middle is the best guess, and
        # keeps the estimate from lagging Redis by a whole round trip on a busy host.
        self._offset = (now - (sent + time.time() * 1000) / 2, time.monotonic())
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

    def __init__(self, client: Any, keys: Keys, *, durability: Durability | None = None) -> None:
        self.client = client
        self.keys = keys
        self.cluster = is_cluster(client)
        self.durability = durability or Durability()

    async def durable(self, c: Call[T]) -> T:
        """`Store.durable`, awaited."""
        try:
            reply = await self._write_and_wait(
                c.keys[0],
                ("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args),
                c.script.source,
                c.script.name,
            )
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc
        return c.parse(reply)

    async def barrier(self, key: str) -> None:
        """`Store.barrier`, awaited."""
        try:
            await self._write_and_wait(
                key, ("SET", key, b"1", "PX", 60_000), None, "barrier", only_watched=True
            )
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc

    async def _write_and_wait(
        self,
        key: str,
        write: tuple[Any, ...],
        source: str | None,
        what: str,
        only_watched: bool = False,
    ) -> Any:
        """The write, then WAIT, over one connection to the server of `key` (see Store)."""
        patience = Patience()
        asking: tuple[str, int] | None = None
        while True:
            async with self._held(key, asking) as (send, name):
                want = await self._wanted(send, name)
                if want == 0 and only_watched:
                    return None
                try:
                    if asking is not None:
                        await send("ASKING")
                    try:
                        reply = await send(*write)
                    except redis.exceptions.NoScriptError:
                        if source is None:
                            raise
                        await send("SCRIPT", "LOAD", source)
                        reply = await send(*write)
                except redis.RedisError as exc:
                    if not (self.cluster and unsettled(exc)):
                        raise
                    asking = None
                    if isinstance(exc, MovedError | ClusterDownError):
                        await self._refresh()
                    elif isinstance(exc, AskError):
                        asking = (exc.host, exc.port)
                    if not await patience.await_():
                        raise
                    continue
                acked = 0
                for _ in range(max(1, self.durability.attempts)):
                    if want == 0:
                        return reply
                    acked = int(await send("WAIT", want, self.durability.timeout_ms))
                    if acked >= want:
                        return reply
            raise DurabilityError(
                f"{what}: the write reached {acked} of {want} replicas within "
                f"{self.durability.timeout_ms} ms (x{self.durability.attempts})"
            )

    async def _wanted(self, send: Callable[..., Awaitable[Any]], name: str) -> int:
        d = self.durability
        if d.replicas is not None:
            return d.replicas
        n = d.cached(name)
        if n is None:
            info = await send("INFO", "replication")
            if not isinstance(info, dict):  # unparsed, from a cluster node's raw connection
                lines = text(info).splitlines()
                info = dict(line.split(":", 1) for line in lines if ":" in line)
            n = d.seen(name, int(info.get("connected_slaves", 0)))
        return n

    @contextlib.asynccontextmanager
    async def _held(
        self, key: str, at: tuple[str, int] | None
    ) -> AsyncIterator[tuple[Callable[..., Awaitable[Any]], str]]:
        """A function sending one command over one connection held for the block, to the server
        of `key` (or the cluster node `at`), and the server's name."""
        if not self.cluster:
            pool = self.client.connection_pool
            held = aredis.Redis(connection_pool=pool, single_connection_client=True)
            try:
                yield held.execute_command, "server"
            finally:
                await held.aclose()
            return
        node = (
            self.client.get_node(host=at[0], port=at[1])
            if at is not None
            else self.client.get_node_from_key(key)
        )
        if node is None:
            await self._refresh()
            raise ClusterDownError(f"no node of the cluster at {at}")
        conn = node.acquire_connection()

        async def send(*args: Any) -> Any:
            await conn.send_packed_command(conn.pack_command(*args))
            reply = await conn.read_response()
            if isinstance(reply, redis.ResponseError):
                raise reply
            return reply

        try:
            yield send, str(node.name)
        except (redis.ConnectionError, redis.TimeoutError):
            await conn.disconnect()
            await self._refresh()
            raise
        finally:
            node.release(conn)

    async def _refresh(self) -> None:
        if self.cluster:
            try:
                await self.client.nodes_manager.initialize()
            except (redis.RedisError, redis.exceptions.RedisClusterException):
                pass

    async def run(self, c: Call[T]) -> T:
        try:
            reply = await self._raw(c)
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc
        return c.parse(reply)

    async def _raw(self, c: Call[Any]) -> Any:
        patience = Patience()
        while True:
            try:
                try:
                    return await self.client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
                except redis.exceptions.NoScriptError:
                    await self.client.script_load(c.script.source)
                    return await self.client.evalsha(c.script.sha, len(c.keys), *c.keys, *c.args)
            except (redis.RedisError, SlotNotCoveredError) as exc:
                if not (self.cluster and unsettled(exc) and await patience.await_()):
                    if isinstance(exc, SlotNotCoveredError):
                        raise ClusterDownError(str(exc)) from exc
                    raise

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
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc
        for i, reply in enumerate(replies):
            if self.cluster and unsettled(reply):
                try:
                    replies[i] = await self._raw(calls[i])
                except redis.RedisError as exc:
                    replies[i] = exc
        return [
            r if isinstance(r, Exception) else c.parse(r)
            for c, r in zip(calls, replies, strict=True)
        ]

    async def _pipeline(self, calls: Sequence[Call[Any]]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            # Through execute_command: a cluster pipeline refuses its `evalsha` method, though it
            # routes EVALSHA by its declared keys like any keyed command.
            pipe.execute_command("EVALSHA", c.script.sha, len(c.keys), *c.keys, *c.args)
        return list(await pipe.execute(raise_on_error=False))

    async def read(self, r: Read[T]) -> T:
        if not r.commands:
            return r.parse([])
        try:
            pipe = self.client.pipeline(transaction=False)
            for command in r.commands:
                pipe.execute_command(*command)
            out = list(await pipe.execute(raise_on_error=False))
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc
        if self.cluster:
            for i, reply in enumerate(out):
                if unsettled(reply):
                    out[i] = await self._command(r.commands[i])
        return _parsed(r, out)

    async def _command(self, command: tuple[Any, ...]) -> Any:
        patience = Patience()
        while True:
            try:
                return await self.client.execute_command(*command)
            except REDIS_ERRORS as exc:
                if not (unsettled(exc) and await patience.await_()):
                    return exc

    async def block(self, command: tuple[Any, ...], timeout: float) -> Any:
        try:
            return await self.client.execute_command(*command)
        except redis.TimeoutError:
            return None
        except redis.RedisError as exc:
            if self.cluster and unsettled(exc):
                await asyncio.sleep(0.05)
                return None
            raise translate(exc) from exc

    async def time_ms(self) -> int:
        try:
            if self.cluster:
                nodes = self.client.get_primaries()
                sec, usec = await self.client.time(target_nodes=nodes[:1])
            else:
                sec, usec = await self.client.time()
        except REDIS_ERRORS as exc:
            raise translate(exc) from exc
        return int(sec) * 1000 + int(usec) // 1000

    async def aclose(self) -> None:
        await self.client.aclose()
