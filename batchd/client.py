"""The producer API: `Client` (sync) and `AsyncClient` (asyncio), twins side by side.

A submit is one atomic round trip (a Lua script); `wait` blocks on a per-request list without a
polling loop; `replies` reads a reply queue, an item leaving it only on acknowledgement.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import orjson
import redis
import redis.asyncio as aredis

from batchd.errors import (
    CancelError,
    InvalidRequestError,
    RequestNotFoundError,
    SubmitError,
    WaitTimeoutError,
)
from batchd.keys import Keys, new_token, split_request_id
from batchd.results import TERMINAL_STATUSES, RequestState, Result, Ticket
from batchd.scripts import Scripts
from batchd.settings import Settings
from batchd.store import BLOCK_SECONDS, WAITER_SECONDS, connect, connect_async, text
from batchd.validate import Prepared, prepare

_ACCOUNTS_TTL = 60.0
#: A submit_many chunk is also sent once it holds this many bytes of params, so one script call
#: never carries a huge argument list (Redis reads a command whole before running it).
CHUNK_BYTES = 8 * 1024 * 1024
#: The most replies one `replies` round trip may take (they are acknowledged together too).
MAX_PREFETCH = 1000
_WAITER_MS = int(WAITER_SECONDS * 1000)


@dataclass(frozen=True, slots=True)
class SubmitItem:
    """One item of `submit_many`; the same fields as `submit`'s arguments."""

    params: Any
    reply_to: str | None = None
    callback_url: str | None = None
    key: str | None = None
    account: str | None = None
    priority: int = 0
    metadata: Any = None


def _item(obj: SubmitItem | Mapping[str, Any]) -> SubmitItem:
    if isinstance(obj, SubmitItem):
        return obj
    if not isinstance(obj, Mapping):
        raise InvalidRequestError(
            f"item: must be a SubmitItem or a mapping, got {type(obj).__name__}", field="item"
        )
    allowed = set(SubmitItem.__dataclass_fields__)
    extra = set(obj) - allowed
    if extra:
        raise InvalidRequestError(f"item: unknown fields {sorted(extra)}", field="item")
    if "params" not in obj:
        raise InvalidRequestError("item: params is required", field="params")
    return SubmitItem(**obj)


def _submit_args(keys: Keys, p: Prepared) -> list[Any]:
    """The SUBMIT script's arguments for one request: the account's, then the request's."""
    return [keys.tag(p.account), keys.prefix, p.account, *_request_args(p)]


def _request_args(p: Prepared) -> tuple[Any, ...]:
    return (
        new_token(),
        p.priority,
        p.params,
        p.size,
        p.key_digest,
        p.key_json,
        p.reply_to,
        p.callback_url,
        p.metadata,
    )


def _ticket(reply: Any, key: str | None, at: int = 0) -> Ticket:
    return Ticket(id=text(reply[at + 1]), key=key, duplicate=int(reply[at]) == 0)


_NOT_SENT = SubmitError("not sent")


@dataclass(slots=True)
class _Group:
    """One account's requests of a submit_many chunk: the SUBMIT arguments and outcome slots."""

    args: list[Any]
    slots: list[tuple[int, str | None]]
    size: int = 0


class _Chunks:
    """submit_many's requests grouped by account; each group goes to Redis as one SUBMIT call,
    so the keys of one call share the account's hash slot."""

    def __init__(self, keys: Keys, chunk: int) -> None:
        self.keys = keys
        self.chunk = max(1, chunk)
        self.outcomes: list[Ticket | SubmitError] = []
        self.groups: dict[str, _Group] = {}

    def add(self, p: Prepared, key: str | None) -> str | None:
        """Queue a prepared request; returns its account when that group is due to be sent."""
        group = self.groups.get(p.account)
        if group is None:
            group = self.groups[p.account] = _Group(
                [self.keys.tag(p.account), self.keys.prefix, p.account], []
            )
        group.args.extend(_request_args(p))
        group.slots.append((len(self.outcomes), key))
        group.size += len(p.params)
        self.outcomes.append(_NOT_SENT)
        if len(group.slots) >= self.chunk or group.size >= CHUNK_BYTES:
            return p.account
        return None

    def settle(self, group: _Group, reply: Any) -> None:
        for i, (slot, key) in enumerate(group.slots):
            self.outcomes[slot] = _ticket(reply, key, 2 * i)


#: The record fields `get` and `wait` read while a request has not ended.
RECORD_FIELDS = ("st", "at", "res", "a")


def record_fields(fields: Any, value: Any) -> list[Any]:
    """`RECORD_FIELDS` of a request from `HMGET rk *RECORD_FIELDS` and `GET rk`, sent in one
    pipeline with errors kept in place: one of the two fails. A live request's record is a
    hash; an ended one's is its envelope (a string). Anything else where a record belongs is
    foreign data, and the HMGET's error (Redis's WRONGTYPE) is raised."""
    if not isinstance(fields, Exception):
        return cast(list[Any], fields)
    if not isinstance(value, bytes) or not value.startswith(b'{"id":'):
        raise fields
    env = orjson.loads(value)
    return [env["status"], env["attempts"], value, None]


def _state(rid: str, fields: list[Any], batch_id: str | None) -> RequestState:
    st = text(fields[0])
    res = Result.from_json(fields[2]) if fields[2] else None
    return RequestState(
        id=rid,
        state=st,
        attempts=int(fields[1] or 0),
        batch_id=res.batch_id if res is not None else batch_id,
        result=res,
    )


def _block_limit(connection: Any) -> float:
    """The longest one blocking call may take on this connection: under its socket timeout
    (a caller's connection may have a short one), and at most BLOCK_SECONDS."""
    timeout = connection.connection_pool.connection_kwargs.get("socket_timeout")
    if not timeout:
        return BLOCK_SECONDS
    return max(0.01, min(BLOCK_SECONDS, float(timeout) * 0.5))


def _timeout(left: float, deadline: float | None, limit: float) -> int:
    """One blocking call's timeout (redis takes fractions of a second)."""
    if deadline is None:
        return cast(int, limit)
    return cast(int, min(max(left, 0.01), limit))


def _check_prefetch(prefetch: int) -> None:
    if (
        not isinstance(prefetch, int)
        or isinstance(prefetch, bool)
        or not (1 <= prefetch <= MAX_PREFETCH)
    ):
        raise ValueError(f"prefetch must be an integer from 1 to {MAX_PREFETCH}, not {prefetch!r}")


def _ids(rid: str) -> tuple[str, str]:
    try:
        return split_request_id(rid)
    except ValueError as exc:
        raise RequestNotFoundError(str(exc)) from None


def _cancel_refusal(rid: str, reply: Any) -> CancelError:
    state = text(reply[1])
    if state == "batched":
        return CancelError(
            f"request {rid} is already in a batch sent to the API and cannot be withdrawn; "
            "it will end with that batch"
        )
    return CancelError(f"request {rid} has already ended ({state})")


class Client:
    """Submit requests and fetch their results, from any process.

    >>> client = Client("redis://localhost:6379/0")
    >>> ticket = client.submit({"model": "claude-sonnet-4-5", "max_tokens": 256,
    ...                         "messages": [{"role": "user", "content": "Hello"}]})
    >>> result = client.wait(ticket.id, timeout=3600)
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        connection: redis.Redis | None = None,
    ) -> None:
        self.settings = settings or Settings.load()
        url = redis_url or self.settings.redis_url
        if connection is None and url is None:
            raise InvalidRequestError("a Redis URL is needed (redis_url or BATCHD_REDIS_URL)")
        self.redis = connection if connection is not None else connect(url or "")
        self._owns = connection is None
        self.keys = Keys(self.settings.prefix)
        self.scripts = Scripts(self.redis)
        self._block = _block_limit(self.redis)
        self._accounts: frozenset[str] | None = None
        self._accounts_at = 0.0

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> Client:
        return cls(url, settings=settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> Client:
        return cls(settings=settings)

    def close(self) -> None:
        if self._owns:
            self.redis.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _known_accounts(self) -> frozenset[str]:
        now = time.monotonic()
        if self._accounts is None or now - self._accounts_at > _ACCOUNTS_TTL:
            members = self.redis.smembers(self.keys.accounts())
            self._accounts = frozenset(text(m) for m in members)
            self._accounts_at = now
        return self._accounts

    def _prepare(self, item: SubmitItem) -> Prepared:
        return prepare(
            self.settings,
            item.params,
            account=item.account,
            priority=item.priority,
            key=item.key,
            reply_to=item.reply_to,
            callback_url=item.callback_url,
            metadata=item.metadata,
            known_accounts=self._known_accounts(),
        )

    def submit(
        self,
        params: Mapping[str, Any],
        *,
        reply_to: str | None = None,
        callback_url: str | None = None,
        key: str | None = None,
        account: str | None = None,
        priority: int = 0,
        metadata: Mapping[str, Any] | None = None,
    ) -> Ticket:
        """Queue one Messages request for a batch. Atomic, one round trip.

        The same `key` again returns the first request's ticket (`duplicate=True`) and queues
        nothing. Raises InvalidRequestError or RequestTooLargeError, storing nothing.
        """
        p = self._prepare(
            SubmitItem(params, reply_to, callback_url, key, account, priority, metadata)
        )
        reply = self.scripts.submit(args=_submit_args(self.keys, p))
        return _ticket(reply, key)

    def submit_many(
        self, items: Iterable[SubmitItem | Mapping[str, Any]], *, chunk: int = 1000
    ) -> list[Ticket | SubmitError]:
        """Submit many requests in chunks, each chunk one atomic round trip; one outcome per
        item, in order.

        A bad item gets its SubmitError in its place; the good ones are stored regardless.
        """
        chunks = _Chunks(self.keys, chunk)

        def send(account: str) -> None:
            group = chunks.groups.pop(account)
            chunks.settle(group, self.scripts.submit(args=group.args))

        for raw in items:
            try:
                item = _item(raw)
                p = self._prepare(item)
            except SubmitError as exc:
                chunks.outcomes.append(exc)
                continue
            due = chunks.add(p, item.key)
            if due is not None:
                send(due)
        for account in list(chunks.groups):
            send(account)
        return chunks.outcomes

    def get(self, request_id: str) -> RequestState:
        """The request's state now, and its result once terminal."""
        account, token = _ids(request_id)
        rk = self.keys.request(account, token)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(rk, *RECORD_FIELDS)
        pipe.get(rk)
        fields = record_fields(*pipe.execute(raise_on_error=False))
        if fields[0] is None:
            raise RequestNotFoundError(f"no request {request_id} (unknown, or past retention)")
        batch_id = None
        if fields[3] and not fields[2]:  # an ended request's result names its batch
            bid = self.redis.hget(self.keys.assembly(account, text(fields[3])), "bid")
            batch_id = text(bid) or None
        return _state(request_id, fields, batch_id)

    def wait(self, request_id: str, timeout: float | None = None) -> Result:
        """Block until the request is terminal and return its result (no polling loop).

        Works from any process, also when the result arrived long before the call.
        Raises WaitTimeoutError after `timeout` seconds (None waits for ever).
        """
        account, token = _ids(request_id)
        rk = self.keys.request(account, token)
        dk = self.keys.done(account, token)
        wk = self.keys.waiter(account, token)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            # Mark, then look (one round trip): the request's end, if it comes after the look,
            # sees the mark and pushes to `dk`.
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(wk, 1, px=_WAITER_MS)
            pipe.hmget(rk, *RECORD_FIELDS)
            pipe.get(rk)
            marked, *record = pipe.execute(raise_on_error=False)
            if isinstance(marked, Exception):
                raise marked
            st, _, res, _ = record_fields(*record)
            if st is None:
                self.redis.delete(wk)
                raise RequestNotFoundError(f"no request {request_id} (unknown, or past retention)")
            if res is not None and text(st) in TERMINAL_STATUSES:
                return Result.from_json(res)
            left = 0.0 if deadline is None else deadline - time.monotonic()
            if deadline is not None and left <= 0:
                raise WaitTimeoutError(f"request {request_id} is still {text(st)}")
            # BLMOVE onto the same list wakes every waiter and consumes nothing.
            try:
                self.redis.blmove(dk, dk, _timeout(left, deadline, self._block))
            except redis.TimeoutError:
                continue  # the socket gave up before Redis did: the deadline decides

    def cancel(self, request_id: str) -> Result:
        """Cancel a pending request: it ends `canceled` at once.

        A request already in a batch cannot be withdrawn from the API: CancelError says so.
        """
        account, token = _ids(request_id)
        reply = self.scripts.cancel(
            args=[
                self.keys.tag(account),
                self.keys.prefix,
                account,
                token,
                int(self.settings.retention * 1000),
            ]
        )
        if int(reply[0]) == 1:
            return Result.from_json(reply[1])
        if text(reply[1]) == "missing":
            raise RequestNotFoundError(f"no request {request_id}")
        raise _cancel_refusal(request_id, reply)

    def replies(
        self,
        reply_to: str,
        *,
        timeout: float | None = None,
        consumer: str = "default",
        prefetch: int = 1,
    ) -> Generator[Result, None, None]:
        """Iterate the results arriving on reply queue `reply_to`.

        An item is moved to this consumer's in-flight list when read and removed from it when
        the next item is asked for (or by `ack`). If the consumer stops or crashes before
        that, the item is delivered again by the next `replies` call with the same consumer
        name: nothing is lost. Iteration ends after `timeout` seconds with nothing new.

        `prefetch` > 1 takes up to that many waiting items in one round trip and acknowledges
        them together when the next group is taken: far fewer round trips (and AOF writes) per
        item, but a crash delivers up to `prefetch` items again, and the items taken wait in
        this consumer's in-flight list, out of other consumers' reach, until it reads on.
        """
        _check_prefetch(prefetch)
        q = self.keys.reply_queue(reply_to)
        inflight = self.keys.reply_inflight(reply_to, consumer)
        while self.redis.lmove(inflight, q, "LEFT", "RIGHT") is not None:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        finished: list[bytes] = []
        while True:
            group = self.scripts.take(keys=[q, inflight], args=[prefetch, *finished])
            finished = []
            if not group:
                left = 0.0 if deadline is None else deadline - time.monotonic()
                raw = self.redis.blmove(
                    q, inflight, _timeout(left, deadline, self._block), "RIGHT", "LEFT"
                )
                if raw is None:
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                    continue
                group = [raw]
            if deadline is not None:
                deadline = time.monotonic() + (timeout or 0)
            for raw in group:
                yield Result.from_json(raw)
                finished.append(raw)

    def ack(self, reply_to: str, result: Result, *, consumer: str = "default") -> None:
        """Acknowledge a reply now (before leaving a `replies` loop, say)."""
        self.redis.lrem(self.keys.reply_inflight(reply_to, consumer), 1, cast(str, result.raw))

    def flush(self, account: str | None = None, priority: int | None = None) -> None:
        """Ask the aggregator to cut the lane(s) now instead of waiting for a trigger."""
        acct = account or self.settings.default_account
        self.redis.sadd(self.keys.flush(acct), "*" if priority is None else str(priority))


class AsyncClient:
    """The asyncio twin of `Client`: the same methods, awaited."""

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        connection: aredis.Redis | None = None,
    ) -> None:
        self.settings = settings or Settings.load()
        url = redis_url or self.settings.redis_url
        if connection is None and url is None:
            raise InvalidRequestError("a Redis URL is needed (redis_url or BATCHD_REDIS_URL)")
        self.redis = connection if connection is not None else connect_async(url or "")
        self._owns = connection is None
        self.keys = Keys(self.settings.prefix)
        self.scripts = Scripts(self.redis)
        self._block = _block_limit(self.redis)
        self._accounts: frozenset[str] | None = None
        self._accounts_at = 0.0

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> AsyncClient:
        return cls(url, settings=settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncClient:
        return cls(settings=settings)

    async def aclose(self) -> None:
        if self._owns:
            await self.redis.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _known_accounts(self) -> frozenset[str]:
        now = time.monotonic()
        if self._accounts is None or now - self._accounts_at > _ACCOUNTS_TTL:
            members = await self.redis.smembers(self.keys.accounts())
            self._accounts = frozenset(text(m) for m in members)
            self._accounts_at = now
        return self._accounts

    async def _prepare(self, item: SubmitItem) -> Prepared:
        return prepare(
            self.settings,
            item.params,
            account=item.account,
            priority=item.priority,
            key=item.key,
            reply_to=item.reply_to,
            callback_url=item.callback_url,
            metadata=item.metadata,
            known_accounts=await self._known_accounts(),
        )

    async def submit(
        self,
        params: Mapping[str, Any],
        *,
        reply_to: str | None = None,
        callback_url: str | None = None,
        key: str | None = None,
        account: str | None = None,
        priority: int = 0,
        metadata: Mapping[str, Any] | None = None,
    ) -> Ticket:
        """See `Client.submit`."""
        p = await self._prepare(
            SubmitItem(params, reply_to, callback_url, key, account, priority, metadata)
        )
        reply = await self.scripts.submit(args=_submit_args(self.keys, p))
        return _ticket(reply, key)

    async def submit_many(
        self, items: Iterable[SubmitItem | Mapping[str, Any]], *, chunk: int = 1000
    ) -> list[Ticket | SubmitError]:
        """See `Client.submit_many`."""
        chunks = _Chunks(self.keys, chunk)

        async def send(account: str) -> None:
            group = chunks.groups.pop(account)
            chunks.settle(group, await self.scripts.submit(args=group.args))

        for raw in items:
            try:
                item = _item(raw)
                p = await self._prepare(item)
            except SubmitError as exc:
                chunks.outcomes.append(exc)
                continue
            due = chunks.add(p, item.key)
            if due is not None:
                await send(due)
        for account in list(chunks.groups):
            await send(account)
        return chunks.outcomes

    async def get(self, request_id: str) -> RequestState:
        """See `Client.get`."""
        account, token = _ids(request_id)
        rk = self.keys.request(account, token)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(rk, *RECORD_FIELDS)
        pipe.get(rk)
        fields = record_fields(*await pipe.execute(raise_on_error=False))
        if fields[0] is None:
            raise RequestNotFoundError(f"no request {request_id} (unknown, or past retention)")
        batch_id = None
        if fields[3] and not fields[2]:  # an ended request's result names its batch
            bid = await self.redis.hget(self.keys.assembly(account, text(fields[3])), "bid")
            batch_id = text(bid) or None
        return _state(request_id, fields, batch_id)

    async def wait(self, request_id: str, timeout: float | None = None) -> Result:
        """See `Client.wait`."""
        account, token = _ids(request_id)
        rk = self.keys.request(account, token)
        dk = self.keys.done(account, token)
        wk = self.keys.waiter(account, token)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pipe = self.redis.pipeline(transaction=False)
            pipe.set(wk, 1, px=_WAITER_MS)
            pipe.hmget(rk, *RECORD_FIELDS)
            pipe.get(rk)
            marked, *record = await pipe.execute(raise_on_error=False)
            if isinstance(marked, Exception):
                raise marked
            st, _, res, _ = record_fields(*record)
            if st is None:
                await self.redis.delete(wk)
                raise RequestNotFoundError(f"no request {request_id} (unknown, or past retention)")
            if res is not None and text(st) in TERMINAL_STATUSES:
                return Result.from_json(res)
            left = 0.0 if deadline is None else deadline - time.monotonic()
            if deadline is not None and left <= 0:
                raise WaitTimeoutError(f"request {request_id} is still {text(st)}")
            try:
                await self.redis.blmove(dk, dk, _timeout(left, deadline, self._block))
            except redis.TimeoutError:
                continue  # the socket gave up before Redis did: the deadline decides

    async def cancel(self, request_id: str) -> Result:
        """See `Client.cancel`."""
        account, token = _ids(request_id)
        reply = await self.scripts.cancel(
            args=[
                self.keys.tag(account),
                self.keys.prefix,
                account,
                token,
                int(self.settings.retention * 1000),
            ]
        )
        if int(reply[0]) == 1:
            return Result.from_json(reply[1])
        if text(reply[1]) == "missing":
            raise RequestNotFoundError(f"no request {request_id}")
        raise _cancel_refusal(request_id, reply)

    async def replies(
        self,
        reply_to: str,
        *,
        timeout: float | None = None,
        consumer: str = "default",
        prefetch: int = 1,
    ) -> AsyncGenerator[Result, None]:
        """See `Client.replies`."""
        _check_prefetch(prefetch)
        q = self.keys.reply_queue(reply_to)
        inflight = self.keys.reply_inflight(reply_to, consumer)
        while await self.redis.lmove(inflight, q, "LEFT", "RIGHT") is not None:
            pass
        deadline = None if timeout is None else time.monotonic() + timeout
        finished: list[bytes] = []
        while True:
            group = await self.scripts.take(keys=[q, inflight], args=[prefetch, *finished])
            finished = []
            if not group:
                left = 0.0 if deadline is None else deadline - time.monotonic()
                raw = await self.redis.blmove(
                    q, inflight, _timeout(left, deadline, self._block), "RIGHT", "LEFT"
                )
                if raw is None:
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                    continue
                group = [raw]
            if deadline is not None:
                deadline = time.monotonic() + (timeout or 0)
            for raw in group:
                yield Result.from_json(raw)
                finished.append(raw)

    async def ack(self, reply_to: str, result: Result, *, consumer: str = "default") -> None:
        """See `Client.ack`."""
        await self.redis.lrem(
            self.keys.reply_inflight(reply_to, consumer), 1, cast(str, result.raw)
        )

    async def flush(self, account: str | None = None, priority: int | None = None) -> None:
        """See `Client.flush`."""
        acct = account or self.settings.default_account
        await self.redis.sadd(self.keys.flush(acct), "*" if priority is None else str(priority))
