"""The producer API: `Client` (sync) and `AsyncClient` (asyncio), twins side by side.

A submit is one atomic round trip (a Lua script); `wait` blocks on a per-request list without a
polling loop (`wait_many` and `as_completed` block on many such lists in one call); `replies`
reads a reply queue, an item leaving it only on acknowledgement. Every Redis failure surfaces as a
`BatchdError` (see `errors.py`).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import weakref
from collections.abc import (
    AsyncIterator,
    Iterable,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast

from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from batchd import defaults
from batchd.defaults import ENTRY_CHUNK
from batchd.errors import (
    AckError,
    BudgetExceededError,
    CancelError,
    IdempotencyConflictError,
    InvalidRequestError,
    RedisFullError,
    RequestNotFoundError,
    SubmitError,
    WaitTimeoutError,
)
from batchd.logs import get_logger
from batchd.results import RequestState, Result, Ticket
from batchd.settings import Settings
from batchd.store import (
    AssemblyRecord,
    AsyncStore,
    Durability,
    Keys,
    Store,
    connect,
    connect_async,
    request_id,
    split_request_id,
)
from batchd.store import assemblies as asm_store
from batchd.store import budgets as budget_store
from batchd.store import counters as counter_store
from batchd.store import lanes as lane_store
from batchd.store import replies as reply_store
from batchd.store import requests as req_store
from batchd.store.keys import is_token
from batchd.store.records import RequestRecord
from batchd.store.requests import DeadLetter, NewRequest, SubmitOutcome
from batchd.store.runner import Read
from batchd.store.scripts import Call, text
from batchd.validate import digest_differences, parse_deadline, prepare

log = get_logger("batchd.client")
T = TypeVar("T")

_WAITER_MS = int(defaults.WAITER_SECONDS * 1000)
#: Seconds a reply queue's consumer may go without reading before another consumer takes back
#: what it held unacknowledged (its visibility timeout).
RECLAIM_AFTER = 300.0
#: How often (seconds) a producer re-checks that some `batchd run` is alive, to warn if not.
DAEMON_CHECK = 60.0

#: A request named by its ticket or its id.
RequestRef = Ticket | str


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
    tag: str | None = None
    betas: Sequence[str] | None = None
    deadline: datetime | float | str | None = None
    """When the result is needed by: a timezone-aware datetime, epoch seconds or an ISO 8601
    time (see `Client.submit`)."""


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


def _rid(request: RequestRef) -> str:
    return request.id if isinstance(request, Ticket) else request


def _ids(request: RequestRef) -> tuple[str, str]:
    rid = _rid(request)
    try:
        return split_request_id(rid)
    except ValueError as exc:
        raise RequestNotFoundError(str(exc)) from None


def _outcome(
    outcome: SubmitOutcome, r: NewRequest, key: str | None, client: Any
) -> Ticket | SubmitError:
    if outcome.conflict:
        differs = digest_differences(outcome.first_digest, r.body_digest) or ["the body"]
        return IdempotencyConflictError(
            f"key: {key!r} was used before for request {outcome.id} with another "
            f"{' and '.join(differs)}; use a new key for a new request",
            field="key",
            request_id=outcome.id,
            differs=differs,
        )
    return Ticket(id=outcome.id, key=key, duplicate=not outcome.stored, _client=client)


def _refused(closed: Mapping[str, str], r: NewRequest) -> BudgetExceededError | None:
    """The refusal of a request whose account or tag is at a spend cap (when the daemon is set
    to refuse submits then); None when it may be stored."""
    if not closed:
        return None
    why = closed.get(budget_store.EVERY_REQUEST)
    if why is not None:
        return BudgetExceededError(why, field="account")
    why = closed.get(f"tag:{r.tag}") if r.tag else None
    return BudgetExceededError(why, field="tag") if why is not None else None


class _Budgets:
    """Which scopes of each account refuse submits, as the daemon marked them; read at most
    once per BUDGET_CHECK seconds per account, so a submit rarely pays a round trip for it."""

    def __init__(self) -> None:
        self.seen: dict[str, tuple[float, dict[str, str]]] = {}

    def fresh(self, account: str) -> dict[str, str] | None:
        at, scopes = self.seen.get(account, (float("-inf"), {}))
        return scopes if time.monotonic() - at <= defaults.BUDGET_CHECK else None

    def keep(self, account: str, scopes: dict[str, str]) -> dict[str, str]:
        self.seen[account] = (time.monotonic(), scopes)
        return scopes


class _Batches:
    """submit_many's requests grouped by account, each group sent as SUBMIT calls of at most
    SUBMIT_CHUNK requests and SUBMIT_CHUNK_BYTES of params."""

    def __init__(self, chunk: int) -> None:
        self.chunk = max(1, min(chunk, defaults.SUBMIT_CHUNK))
        self.outcomes: list[Ticket | SubmitError] = []
        self.groups: dict[str, list[tuple[int, NewRequest, str | None]]] = {}
        self.sizes: dict[str, int] = {}

    def add(self, r: NewRequest, key: str | None) -> str | None:
        """Queue a prepared request; returns its account when that group is due to be sent."""
        group = self.groups.setdefault(r.account, [])
        group.append((len(self.outcomes), r, key))
        self.sizes[r.account] = self.sizes.get(r.account, 0) + len(r.params)
        self.outcomes.append(SubmitError("not sent"))
        if len(group) >= self.chunk or self.sizes[r.account] >= defaults.SUBMIT_CHUNK_BYTES:
            return r.account
        return None

    def take(self, account: str) -> list[tuple[int, NewRequest, str | None]]:
        self.sizes.pop(account, None)
        return self.groups.pop(account)


def _state(record: RequestRecord, batch_id: str | None) -> RequestState:
    result = Result.from_json(record.envelope) if record.envelope is not None else None
    return RequestState(
        id=record.id,
        state=str(record.status),
        attempts=record.attempts,
        batch_id=result.batch_id if result is not None else batch_id,
        result=result,
    )


def _block_limit(client: Any) -> float:
    """The longest one blocking call may take on this connection: under its socket timeout
    (a caller's connection may have a short one), and at most BLOCK_SECONDS."""
    if isinstance(client, RedisCluster):
        options = client.get_connection_kwargs()  # type: ignore[no-untyped-call]
    elif isinstance(client, AsyncRedisCluster):
        options = client.connection_kwargs
    else:
        pool = getattr(client, "connection_pool", None)
        options = pool.connection_kwargs if pool is not None else {}
    timeout = options.get("socket_timeout")
    if not timeout:
        return defaults.BLOCK_SECONDS
    return max(0.01, min(defaults.BLOCK_SECONDS, float(timeout) * 0.5))


def _durability(settings: Settings) -> Durability:
    """How far the writes that must survive a failover go before they count (settings.redis)."""
    return Durability(settings.redis.wait_replicas, int(settings.redis.wait_timeout * 1000))


def _timeout(left: float | None, limit: float) -> float:
    """One blocking call's timeout (Redis takes fractions of a second)."""
    if left is None:
        return limit
    return min(max(left, 0.01), limit)


def _check_prefetch(prefetch: int) -> None:
    if (
        not isinstance(prefetch, int)
        or isinstance(prefetch, bool)
        or not (1 <= prefetch <= defaults.MAX_PREFETCH)
    ):
        raise ValueError(
            f"prefetch must be an integer from 1 to {defaults.MAX_PREFETCH}, not {prefetch!r}"
        )


def _cancel_refusal(rid: str, state: str) -> CancelError:
    if state == "batched":
        return CancelError(
            f"request {rid} is already in a batch sent to the API and cannot be withdrawn; "
            "it will end with that batch"
        )
    if state == "realtime":
        return CancelError(
            f"request {rid} left the batch route for the real-time Messages API (its deadline) "
            "and cannot be withdrawn; it will end with that call"
        )
    return CancelError(f"request {rid} has already ended ({state})")


def default_consumer() -> str:
    """A consumer name unique to this process: two processes never share in-flight replies."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _not_found(rid: str) -> RequestNotFoundError:
    return RequestNotFoundError(f"no request {rid} (unknown, or past retention)")


def _ack_refusal(result: Result, consumer: str, code: int) -> AckError:
    if code < 0:
        return AckError(
            f"no consumer {consumer!r} ever read reply queue {result.reply_to!r}; acknowledge "
            "with the name the reply was read under (or pass the Result itself)"
        )
    return AckError(
        f"consumer {consumer!r} holds no unacknowledged reply {result.id} on "
        f"{result.reply_to!r} (already acknowledged, or read by another consumer)"
    )


#: A dead letter named by its ticket, its id, or the DeadLetter `dead()` listed.
DeadRef = Ticket | DeadLetter | str
#: Dead letters read per round trip while scanning an account's for a filter.
DEAD_PAGE = 500


def _dead_rids(items: Iterable[DeadRef]) -> list[tuple[str, str]]:
    return [_ids(i.id if isinstance(i, DeadLetter) else i) for i in items]


def _dead_selection(
    requests: Iterable[DeadRef] | None, account: str | None, error_type: str | None, every: bool
) -> list[tuple[str, str]] | None:
    """The dead letters named, or None: every one the filters let through (then a filter or
    `every=True` is required, so that no call acts on all of them by accident)."""
    if requests is not None:
        if account is not None or error_type is not None or every:
            raise ValueError(
                "name dead letters, or select them by filter (or every=True): not both"
            )
        return _dead_rids(requests)
    if account is None and error_type is None and not every:
        raise ValueError(
            "name the dead letters, or select them: account=, error_type=, or every=True"
        )
    return None


def _matches(letter: DeadLetter, error_type: str | None) -> bool:
    return error_type is None or letter.error_type == error_type


def _batch_candidates(ref: str, accounts: Sequence[str]) -> list[tuple[str, str]]:
    """(account, assembly) pairs a batchd batch id may name: `<account>.<assembly>`, or a bare
    assembly id (in any account); `status` shows the latter in parentheses."""
    ref = ref.strip().strip("()")
    account, sep, asm = ref.rpartition(".")
    if sep and account in accounts and is_token(asm):
        return [(account, asm)]
    if not sep and is_token(ref):
        return [(a, ref) for a in accounts]
    return []


def _entry_ids(account: str, entries: Sequence[bytes]) -> list[str]:
    return [request_id(account, text(e).split(" ", 1)[0]) for e in entries]


class Client:
    """Submit requests and fetch their results, from any process.

    >>> client = Client("redis://localhost:6379/0")
    >>> ticket = client.submit({"model": "claude-sonnet-4-5", "max_tokens": 256,
    ...                         "messages": [{"role": "user", "content": "Hello"}]})
    >>> print(ticket.wait(timeout=3600).text)
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        connection: Any = None,
    ) -> None:
        self.settings = settings or Settings.load()
        url = redis_url or self.settings.redis_url
        if connection is None and url is None:
            raise InvalidRequestError(
                "a Redis URL is needed: Client('redis://host:6379/0'), or set BATCHD_REDIS_URL "
                "(`make dev` prints one)"
            )
        self.redis = connection if connection is not None else connect(url or "")
        self._owns = connection is None
        self.keys = Keys(self.settings.prefix)
        self.store = Store(self.redis, self.keys, durability=_durability(self.settings))
        self._block = _block_limit(self.redis)
        self._accounts: frozenset[str] | None = None
        self._accounts_at = 0.0
        self._daemon_checked = 0.0
        self._budgets = _Budgets()

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

    # -- submitting ------------------------------------------------------------------------

    def _known_accounts(self) -> frozenset[str]:
        now = time.monotonic()
        if self._accounts is None or now - self._accounts_at > defaults.ACCOUNTS_TTL:
            self._accounts = self.store.read(counter_store.known_accounts(self.keys))
            self._accounts_at = now
        return self._accounts

    def _prepare(self, item: SubmitItem) -> NewRequest:
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
            tag=item.tag,
            betas=item.betas,
            deadline_ms=parse_deadline(item.deadline),
        )

    def _closed(self, account: str) -> dict[str, str]:
        found = self._budgets.fresh(account)
        if found is None:
            found = self._budgets.keep(
                account, self.store.read(budget_store.closed(self.keys, account))
            )
        return found

    def _send(
        self, account: str, group: Sequence[tuple[int, NewRequest, str | None]]
    ) -> list[Ticket | SubmitError]:
        closed = self._closed(account)
        refused = [_refused(closed, r) for _, r, _ in group]
        sending = [g for g, no in zip(group, refused, strict=True) if no is None]
        sent: Iterator[Ticket | SubmitError] = iter(())
        if sending:
            call = req_store.submit(
                self.keys,
                account,
                [r for _, r, _ in sending],
                int(self.settings.submit.idempotency_ttl * 1000),
            )
            outcomes = self._acknowledged(call)
            self._check_daemon()
            sent = iter(
                [_outcome(o, r, k, self) for o, (_, r, k) in zip(outcomes, sending, strict=True)]
            )
        return [no if no is not None else next(sent) for no in refused]

    def _acknowledged(self, c: Call[T]) -> T:
        """A write whose success the caller is told (a submit, an ack): with
        `redis.wait_submits`, on the replicas before it returns (else DurabilityError: it may
        be stored; the same call again, a submit under the same key, is safe)."""
        return self.store.durable(c) if self.settings.redis.wait_submits else self.store.run(c)

    def _check_daemon(self) -> None:
        now = time.monotonic()
        if now - self._daemon_checked < DAEMON_CHECK:
            return
        self._daemon_checked = now
        alive = self.store.read(counter_store.alive(self.keys, self.store.now_ms()))
        if not alive:
            log.warning(
                "no batchd daemon is alive: requests are stored but nothing will batch them "
                "until `batchd run` starts"
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
        tag: str | None = None,
        betas: Sequence[str] | None = None,
        deadline: datetime | float | str | None = None,
    ) -> Ticket:
        """Queue one Messages request for a batch. Atomic, one round trip.

        The same `key` with the same request again returns the first request's ticket
        (`duplicate=True`) and queues nothing; with another request it raises
        IdempotencyConflictError. Raises InvalidRequestError or RequestTooLargeError, storing
        nothing. `betas` are `anthropic-beta` values its batch is created with; `tag` groups it
        in the cost ledger. `deadline` (a timezone-aware datetime, epoch seconds, or an ISO 8601
        time with its offset) is when the result is needed by: its lane is cut early enough for
        a batch to make it, and if none can, the account's `deadline_policy` decides (sent in
        real time, kept in batches and marked late, or ended errored `deadline_exceeded`); the
        result says whether it was met (`Result.deadline_met`).
        """
        item = SubmitItem(
            params, reply_to, callback_url, key, account, priority, metadata, tag, betas, deadline
        )
        r = self._prepare(item)
        [outcome] = self._send(r.account, [(0, r, key)])
        if isinstance(outcome, SubmitError):
            raise outcome
        return outcome

    def submit_many(
        self,
        items: Iterable[SubmitItem | Mapping[str, Any]],
        *,
        chunk: int = defaults.SUBMIT_CHUNK,
    ) -> list[Ticket | SubmitError]:
        """Submit many requests in chunks, each chunk one atomic round trip; one outcome per
        item, in order. A bad item gets its SubmitError in its place; the others are stored."""
        batches = _Batches(chunk)

        def send(account: str) -> None:
            group = batches.take(account)
            for (slot, _, _), outcome in zip(group, self._send(account, group), strict=True):
                batches.outcomes[slot] = outcome

        for raw in items:
            try:
                item = _item(raw)
                r = self._prepare(item)
            except SubmitError as exc:
                batches.outcomes.append(exc)
                continue
            due = batches.add(r, item.key)
            if due is not None:
                send(due)
        for account in list(batches.groups):
            send(account)
        return batches.outcomes

    # -- reading ---------------------------------------------------------------------------

    def get(self, request: RequestRef) -> RequestState:
        """The request's state now, and its result once terminal."""
        account, token = _ids(request)
        record = self.store.read(req_store.read(self.keys, account, token))
        if record is None:
            raise _not_found(_rid(request))
        batch_id = None
        if record.assembly and record.envelope is None:
            a = self.store.read(asm_store.read(self.keys, account, record.assembly))
            batch_id = a.batch_id if a is not None else None
        return _state(record, batch_id)

    def find(self, key: str, *, account: str | None = None) -> RequestState:
        """The request first submitted under this idempotency key (remembered for
        `submit.idempotency_ttl`)."""
        acct = account or self.settings.default_account
        rid = self.store.read(req_store.find_by_key(self.keys, acct, key))
        if rid is None:
            raise RequestNotFoundError(f"no request under key {key!r} in account {acct!r}")
        return self.get(rid)

    def wait(self, request: RequestRef, timeout: float | None = None) -> Result:
        """Block until the request is terminal and return its result (no polling loop).

        Works from any process, also when the result arrived long before the call.
        Raises WaitTimeoutError after `timeout` seconds (None waits for ever).
        """
        account, token = _ids(request)
        rid = _rid(request)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            record = self.store.read(req_store.mark_and_read(self.keys, account, token, _WAITER_MS))
            if record is None:
                self.store.read(req_store.unmark(self.keys, account, token))
                raise _not_found(rid)
            if record.envelope is not None:
                return Result.from_json(record.envelope)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeoutError(f"request {rid} is still {record.status}")
            # BLMOVE onto the same list wakes every waiter and consumes nothing.
            wait_s = _timeout(left, self._block)
            self.store.block(req_store.block_on_end(self.keys, account, token, wait_s), wait_s)

    def as_completed(
        self, requests: Iterable[RequestRef], timeout: float | None = None
    ) -> Iterator[Result]:
        """Yield each request's result as it ends, over one connection however many there are.

        Raises WaitTimeoutError after `timeout` seconds with some still unfinished.
        """
        pending: dict[str, tuple[str, str]] = {_rid(r): _ids(r) for r in requests}
        deadline = None if timeout is None else time.monotonic() + timeout
        while pending:
            for rid, result in self._sweep(pending):
                del pending[rid]
                yield result
            if not pending:
                return
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeoutError(f"{len(pending)} requests still unfinished")
            self._block_any(pending, _timeout(left, self._block))

    def wait_many(
        self, requests: Iterable[RequestRef], timeout: float | None = None
    ) -> list[Result]:
        """Every request's result, in the order given (see `as_completed`)."""
        order = [_rid(r) for r in requests]
        got = {r.id: r for r in self.as_completed(order, timeout)}
        return [got[rid] for rid in order]

    def _sweep(self, pending: Mapping[str, tuple[str, str]]) -> list[tuple[str, Result]]:
        """Mark every pending request as waited for, read them, and return those that ended."""
        done: list[tuple[str, Result]] = []
        items = list(pending.items())
        for i in range(0, len(items), 500):
            part = items[i : i + 500]
            reads = [req_store.mark_and_read(self.keys, a, t, _WAITER_MS) for _, (a, t) in part]
            records = self.store.read(_merge(reads))
            for (rid, _), record in zip(part, records, strict=True):
                if record is None:
                    raise _not_found(rid)
                if record.envelope is not None:
                    done.append((rid, Result.from_json(record.envelope)))
        return done

    def _block_any(self, pending: Mapping[str, tuple[str, str]], timeout: float) -> None:
        """Block until one of the pending requests' done lists gets an element (or timeout).

        Done lists of one account share its hash slot, so one BLMPOP covers them; with several
        accounts, each gets a share of the time. The element is pushed back, so other waiters of
        the same request see it too.
        """
        by_account: dict[str, list[str]] = {}
        for account, token in pending.values():
            by_account.setdefault(account, []).append(
                req_store.done_list(self.keys, account, token)
            )
        share = max(0.01, timeout / len(by_account))
        for done_keys in by_account.values():
            part = done_keys[:3000]
            got = req_store.woke(self.store.block(req_store.block_on_any(part, share), share))
            if got:
                self.store.read(req_store.put_back(*got))
                return

    def cancel(self, request: RequestRef) -> Result:
        """Cancel a pending request: it ends `canceled` at once.

        A request already in a batch cannot be withdrawn from the API: CancelError says so.
        """
        account, token = _ids(request)
        rid = _rid(request)
        out = self.store.run(
            req_store.cancel(self.keys, account, token, int(self.settings.retention * 1000))
        )
        if out.replies:
            reply_store.drain_all(self.store, account)
        if out.envelope is not None:
            return Result.from_json(out.envelope)
        if out.state == "missing":
            raise RequestNotFoundError(f"no request {rid}")
        raise _cancel_refusal(rid, out.state)

    # -- reply queues ----------------------------------------------------------------------

    def replies(
        self,
        reply_to: str,
        *,
        timeout: float | None = None,
        consumer: str | None = None,
        prefetch: int = 1,
        reclaim_after: float = RECLAIM_AFTER,
    ) -> Replies:
        """The results arriving on reply queue `reply_to`, as an iterable (and context manager).

        An item moves to this consumer's in-flight list when read and is acknowledged when the
        next one is asked for, when the loop is left (`break` acknowledges what was yielded), or
        by `ack`. Inside `with client.replies(...) as stream:`, an exception leaving the block
        leaves the current item unacknowledged, so it is delivered again. Items a crashed
        consumer held come back: to the same consumer name when it starts again, and to any
        consumer once the holder has read nothing for `reclaim_after` seconds. Iteration ends
        after `timeout` seconds with nothing new. `prefetch` > 1 takes that many at once.
        """
        _check_prefetch(prefetch)
        return Replies(self, reply_to, timeout, consumer or default_consumer(), prefetch,
                       reclaim_after)  # fmt: skip

    def ack(self, result: Result, *, consumer: str | None = None) -> None:
        """Acknowledge a reply now; by default under the consumer that read it.

        Raises AckError when that consumer holds no such reply.
        """
        name = result.reply_to
        who = consumer or result.consumer or default_consumer()
        if name is None:
            raise AckError(f"result {result.id} was not read from a reply queue")
        code = self._acknowledged(reply_store.ack(self.keys, name, who, result.raw))
        if code != 1:
            raise _ack_refusal(result, who, code)

    def flush(self, account: str | None = None, priority: int | None = None) -> None:
        """Ask the aggregator to cut the lane(s) now instead of waiting for a trigger."""
        acct = account or self.settings.default_account
        what = "*" if priority is None else f"p{priority}"
        self.store.read(lane_store.request_flush(self.keys, acct, what))

    # -- dead letters ----------------------------------------------------------------------

    def _all_accounts(self) -> list[str]:
        """The configured accounts and those a daemon published (a producer may know fewer)."""
        return sorted(set(self.settings.accounts) | self._known_accounts())

    def _scan_dead(
        self, account: str, error_type: str | None, want: int | None
    ) -> list[DeadLetter]:
        """An account's dead letters that match, most recent first: at most `want`."""
        found: list[DeadLetter] = []
        start = 0
        while want is None or len(found) < want:
            page = DEAD_PAGE if want is None or error_type else max(1, want - len(found))
            entries = self.store.read(
                req_store.list_dead(self.keys, account, offset=start, limit=page)
            )
            if not entries:
                break
            letters = self.store.read(req_store.read_letters(self.keys, entries))
            found += [x for x in letters if _matches(x, error_type)]
            if len(entries) < page:
                break
            start += len(entries)
        return found if want is None else found[:want]

    def dead(
        self,
        *,
        account: str | None = None,
        limit: int = 100,
        offset: int = 0,
        error_type: str | None = None,
    ) -> list[DeadLetter]:
        """Requests that ended `dead` (most recent first), with what can be done with them;
        only those whose last error is `error_type`, if given."""
        accounts = [account] if account else self._all_accounts()
        letters: list[DeadLetter] = []
        for acct in accounts:
            letters += self._scan_dead(acct, error_type, offset + limit)
        letters.sort(key=lambda x: x.died_ms, reverse=True)
        return letters[offset : offset + limit]

    def _dead_targets(
        self,
        requests: Iterable[DeadRef] | None,
        account: str | None,
        error_type: str | None,
        every: bool,
    ) -> list[tuple[str, str]]:
        named = _dead_selection(requests, account, error_type, every)
        if named is not None:
            return named
        accounts = [account] if account else self._all_accounts()
        return [
            split_request_id(x.id) for a in accounts for x in self._scan_dead(a, error_type, None)
        ]

    def requeue_dead(
        self,
        requests: Iterable[DeadRef] | None = None,
        *,
        account: str | None = None,
        error_type: str | None = None,
        every: bool = False,
    ) -> dict[str, str]:
        """Send dead requests round again from their first attempt; what happened to each:
        `requeued`, `not dead`, or `params gone` (past retention).

        Name them (tickets, ids or listed DeadLetters), or select them: by `account`, by
        `error_type` (the last error's type, as `dead()` shows it), or `every=True` for all.
        """
        out: dict[str, str] = {}
        for account_, token in self._dead_targets(requests, account, error_type, every):
            rid = f"{account_}.{token}"
            for _ in range(3):
                lane = self.store.read(req_store.letter_lane(self.keys, account_, token))
                if lane is None:
                    out[rid] = "not dead"
                    break
                code = self.store.run(req_store.requeue_dead(self.keys, account_, token, lane))
                if code != -2:
                    out[rid] = {1: "requeued", 0: "not dead", -1: "params gone"}[code]
                    break
        return out

    def purge_dead(
        self,
        requests: Iterable[DeadRef] | None = None,
        *,
        account: str | None = None,
        error_type: str | None = None,
        every: bool = False,
    ) -> int:
        """Forget dead letters (their results stay readable until retention ends); how many
        were. Chosen as in `requeue_dead`."""
        n = 0
        for account_, token in self._dead_targets(requests, account, error_type, every):
            n += self.store.run(req_store.purge_dead(self.keys, account_, token))
        return n

    # -- batches and daemons ---------------------------------------------------------------

    def batch(self, ref: str) -> AssemblyRecord | None:
        """The batch batchd made, by the API's batch id or batchd's `<account>.<assembly>`
        (a bare assembly id too); None when batchd knows no such batch (or past retention)."""
        accounts = self._all_accounts()
        where = self.store.read(asm_store.find_batch(self.keys, accounts, ref.strip()))
        for account, asm in [where] if where is not None else _batch_candidates(ref, accounts):
            record = self.store.read(asm_store.read(self.keys, account, asm))
            if record is not None:
                return record
        return None

    def batch_requests(self, batch: AssemblyRecord) -> list[str]:
        """The ids of the requests in a batch, in body order. Kept while the batch is in the
        making or in flight: [] once it has closed."""
        ids: list[str] = []
        while True:
            chunk = self.store.read(
                asm_store.entries(self.keys, batch.account, batch.id, len(ids), ENTRY_CHUNK)
            )
            ids += _entry_ids(batch.account, chunk)
            if len(chunk) < ENTRY_CHUNK:
                return ids

    def daemons_alive(self) -> int:
        """How many `batchd run` processes have a recent heartbeat. (Submits warn in the log
        when none is; this look counts as that check for the next minute.)"""
        self._daemon_checked = time.monotonic()
        return len(self.store.read(counter_store.alive(self.keys, self.store.now_ms())))


def _merge(reads: Sequence[Any]) -> Any:
    """Several single-request reads as one Read (one round trip) returning their values."""
    commands: list[tuple[Any, ...]] = []
    spans: list[tuple[int, int]] = []
    for r in reads:
        spans.append((len(commands), len(r.commands)))
        commands += r.commands

    def parse(out: list[Any]) -> list[Any]:
        return [r.parse(out[s : s + n]) for r, (s, n) in zip(reads, spans, strict=True)]

    return Read(commands, parse, errors=True)


class Replies:
    """What `Client.replies` returns: iterate it (optionally inside `with`)."""

    def __init__(
        self,
        client: Client,
        name: str,
        timeout: float | None,
        consumer: str,
        prefetch: int,
        reclaim_after: float,
    ) -> None:
        self.client = client
        self.name = name
        self.timeout = timeout
        self.consumer = consumer
        self.prefetch = prefetch
        self.reclaim_after = reclaim_after
        self._finished: list[bytes] = []
        self._current: bytes | None = None
        self._failed = False
        self._iter: Iterator[Result] | None = None

    def __enter__(self) -> Replies:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._failed = exc is not None
        self.close()

    def __iter__(self) -> Replies:
        return self

    def __next__(self) -> Result:
        if self._iter is None:
            # The reading generator holds a proxy, not this object: a loop left by `break` drops
            # the last reference to it at once, and `__del__` acknowledges what was yielded.
            self._iter = Replies._run(cast(Replies, weakref.proxy(self)))
        return next(self._iter)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            # A finalizer must not raise; what stays in flight comes back to this consumer name.
            pass

    def close(self) -> None:
        """Stop reading; acknowledge what was handled (all yielded, unless an exception left the
        `with` block: then the current item stays unacknowledged)."""
        if self._iter is not None:
            self._iter.close()  # type: ignore[attr-defined]
            self._iter = None
        self._settle()

    def _settle(self) -> None:
        done = list(self._finished)
        if self._current is not None and not self._failed:
            done.append(self._current)
        self._finished, self._current = [], None
        keys, store = self.client.keys, self.client.store
        for raw in done:
            store.run(reply_store.ack(keys, self.name, self.consumer, raw))

    def _reclaim(self) -> None:
        c = self.client
        now_s = c.store.now_ms() // 1000
        c.store.read(reply_store.register(c.keys, self.name, self.consumer, now_s))
        while c.store.run(reply_store.restore(c.keys, self.name, self.consumer)) > 0:
            pass
        for other, seen in c.store.read(reply_store.consumers(c.keys, self.name)).items():
            if other != self.consumer and now_s - seen > self.reclaim_after:
                while c.store.run(reply_store.restore(c.keys, self.name, other)) > 0:
                    pass

    def _run(self) -> Iterator[Result]:
        c = self.client
        self._reclaim()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            finished = self._finished
            if self._current is not None:
                finished.append(self._current)
                self._current = None
            group = c.store.run(
                reply_store.take(c.keys, self.name, self.consumer, self.prefetch, finished)
            )
            self._finished = []
            if not group:
                left = None if deadline is None else deadline - time.monotonic()
                wait_s = _timeout(left, c._block)
                try:
                    raw = c.store.block(
                        reply_store.block_take(c.keys, self.name, self.consumer, wait_s), wait_s
                    )
                except RedisFullError:
                    # Redis refuses BLMOVE at maxmemory; TAKE still works: look again shortly.
                    raw = None
                    time.sleep(min(1.0, wait_s))
                if raw is None:
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                    continue
                group = [raw]
            if deadline is not None:
                deadline = time.monotonic() + (self.timeout or 0)
            for i, raw in enumerate(group):
                self._current = raw
                self._finished = list(group[:i])
                yield Result.from_json(raw, reply_to=self.name, consumer=self.consumer)
            self._finished = list(group[:-1])


# -- asyncio ---------------------------------------------------------------------------------


class AsyncClient:
    """The asyncio twin of `Client`: the same methods, awaited.

    Every `wait` of one client shares one blocking connection per account (a hub that blocks
    on all their done lists at once), so thousands of concurrent waits need a few connections.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        settings: Settings | None = None,
        connection: Any = None,
    ) -> None:
        self.settings = settings or Settings.load()
        url = redis_url or self.settings.redis_url
        if connection is None and url is None:
            raise InvalidRequestError(
                "a Redis URL is needed: AsyncClient('redis://host:6379/0'), or set BATCHD_REDIS_URL"
            )
        self.redis = connection if connection is not None else connect_async(url or "")
        self._owns = connection is None
        self.keys = Keys(self.settings.prefix)
        self.store = AsyncStore(self.redis, self.keys, durability=_durability(self.settings))
        self._block = _block_limit(self.redis)
        self._accounts: frozenset[str] | None = None
        self._accounts_at = 0.0
        self._hubs: dict[str, _WaitHub] = {}
        self._first_looks = asyncio.Semaphore(defaults.WAIT_FIRST_LOOKS)
        self._budgets = _Budgets()

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> AsyncClient:
        return cls(url, settings=settings)

    @classmethod
    def from_settings(cls, settings: Settings) -> AsyncClient:
        return cls(settings=settings)

    async def aclose(self) -> None:
        for hub in self._hubs.values():
            await hub.stop()
        self._hubs.clear()
        if self._owns:
            await self.redis.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _known_accounts(self) -> frozenset[str]:
        now = time.monotonic()
        if self._accounts is None or now - self._accounts_at > defaults.ACCOUNTS_TTL:
            self._accounts = await self.store.read(counter_store.known_accounts(self.keys))
            self._accounts_at = now
        return self._accounts

    async def prepare(self, item: SubmitItem, *, interactive: bool = False) -> NewRequest:
        """Validate one item as `submit` would (the ingress uses this before submitting)."""
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
            tag=item.tag,
            betas=item.betas,
            interactive=interactive,
            deadline_ms=parse_deadline(item.deadline),
        )

    async def _acknowledged(self, c: Call[T]) -> T:
        """`Client._acknowledged`, awaited."""
        if self.settings.redis.wait_submits:
            return await self.store.durable(c)
        return await self.store.run(c)

    async def submit_prepared(
        self, requests: Sequence[tuple[NewRequest, str | None]]
    ) -> list[Ticket | SubmitError]:
        """Store prepared requests of one account (at most SUBMIT_CHUNK) in one round trip."""
        if not requests:
            return []
        account = requests[0][0].account
        closed = self._budgets.fresh(account)
        if closed is None:
            closed = self._budgets.keep(
                account, await self.store.read(budget_store.closed(self.keys, account))
            )
        refused = [_refused(closed, r) for r, _ in requests]
        sending = [g for g, no in zip(requests, refused, strict=True) if no is None]
        sent: Iterator[Ticket | SubmitError] = iter(())
        if sending:
            call = req_store.submit(
                self.keys,
                account,
                [r for r, _ in sending],
                int(self.settings.submit.idempotency_ttl * 1000),
            )
            outcomes = await self._acknowledged(call)
            sent = iter(
                [_outcome(o, r, k, None) for o, (r, k) in zip(outcomes, sending, strict=True)]
            )
        return [no if no is not None else next(sent) for no in refused]

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
        tag: str | None = None,
        betas: Sequence[str] | None = None,
        deadline: datetime | float | str | None = None,
    ) -> AsyncTicket:
        """See `Client.submit`."""
        item = SubmitItem(
            params, reply_to, callback_url, key, account, priority, metadata, tag, betas, deadline
        )
        r = await self.prepare(item)
        [outcome] = await self.submit_prepared([(r, key)])
        if isinstance(outcome, SubmitError):
            raise outcome
        return AsyncTicket(outcome.id, outcome.key, outcome.duplicate, self)

    async def submit_many(
        self,
        items: Iterable[SubmitItem | Mapping[str, Any]],
        *,
        chunk: int = defaults.SUBMIT_CHUNK,
    ) -> list[Ticket | SubmitError]:
        """See `Client.submit_many`."""
        batches = _Batches(chunk)

        async def send(account: str) -> None:
            group = batches.take(account)
            got = await self.submit_prepared([(r, k) for _, r, k in group])
            for (slot, _, _), outcome in zip(group, got, strict=True):
                if isinstance(outcome, Ticket):
                    outcome = AsyncTicket(outcome.id, outcome.key, outcome.duplicate, self)
                batches.outcomes[slot] = outcome

        for raw in items:
            try:
                item = _item(raw)
                r = await self.prepare(item)
            except SubmitError as exc:
                batches.outcomes.append(exc)
                continue
            due = batches.add(r, item.key)
            if due is not None:
                await send(due)
        for account in list(batches.groups):
            await send(account)
        return batches.outcomes

    async def get(self, request: RequestRef) -> RequestState:
        """See `Client.get`."""
        account, token = _ids(request)
        record = await self.store.read(req_store.read(self.keys, account, token))
        if record is None:
            raise _not_found(_rid(request))
        batch_id = None
        if record.assembly and record.envelope is None:
            a = await self.store.read(asm_store.read(self.keys, account, record.assembly))
            batch_id = a.batch_id if a is not None else None
        return _state(record, batch_id)

    async def states(self, requests: Sequence[RequestRef]) -> list[str]:
        """The state now of each request (one round trip); `unknown` for one with no record."""
        records = await self.store.read(req_store.read_many(self.keys, [_rid(r) for r in requests]))
        return [str(r.status) if r is not None else "unknown" for r in records]

    async def find(self, key: str, *, account: str | None = None) -> RequestState:
        """See `Client.find`."""
        acct = account or self.settings.default_account
        rid = await self.store.read(req_store.find_by_key(self.keys, acct, key))
        if rid is None:
            raise RequestNotFoundError(f"no request under key {key!r} in account {acct!r}")
        return await self.get(rid)

    async def wait(self, request: RequestRef, timeout: float | None = None) -> Result:
        """See `Client.wait`. Concurrent waits share the client's hub connection."""
        account, token = _ids(request)
        rid = _rid(request)
        # Each first look takes a pooled connection for a moment: bounded, so any number of
        # concurrent waits stays within the pool (which refuses more than its size).
        async with self._first_looks:
            record = await self.store.read(
                req_store.mark_and_read(self.keys, account, token, _WAITER_MS)
            )
            if record is None:
                await self.store.read(req_store.unmark(self.keys, account, token))
        if record is None:
            raise _not_found(rid)
        if record.envelope is not None:
            return Result.from_json(record.envelope)
        hub = self._hubs.get(account)
        if hub is None:
            hub = self._hubs[account] = _WaitHub(self, account)
        future = hub.add(rid, token)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            raise WaitTimeoutError(f"request {rid} is still {record.status}") from None
        finally:
            hub.discard(rid, future)

    async def as_completed(
        self, requests: Iterable[RequestRef], timeout: float | None = None
    ) -> AsyncIterator[Result]:
        """See `Client.as_completed`."""
        # Each wait takes its first look before its timeout runs: what ended before the call
        # comes back even with timeout=0, as from the sync client.
        tasks = [asyncio.ensure_future(self.wait(r, timeout)) for r in requests]
        try:
            pending = set(tasks)
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                late = [t for t in done if isinstance(t.exception(), WaitTimeoutError)]
                for t in done:
                    if t not in late:
                        yield t.result()
                if late:
                    raise WaitTimeoutError(f"{len(late) + len(pending)} requests still unfinished")
        finally:
            for t in tasks:
                t.cancel()

    async def wait_many(
        self, requests: Iterable[RequestRef], timeout: float | None = None
    ) -> list[Result]:
        """See `Client.wait_many`."""
        order = [_rid(r) for r in requests]
        got = {r.id: r async for r in self.as_completed(order, timeout)}
        return [got[rid] for rid in order]

    async def cancel(self, request: RequestRef) -> Result:
        """See `Client.cancel`."""
        account, token = _ids(request)
        rid = _rid(request)
        out = await self.store.run(
            req_store.cancel(self.keys, account, token, int(self.settings.retention * 1000))
        )
        if out.replies:
            await reply_store.adrain_all(self.store, account)
        if out.envelope is not None:
            return Result.from_json(out.envelope)
        if out.state == "missing":
            raise RequestNotFoundError(f"no request {rid}")
        raise _cancel_refusal(rid, out.state)

    def replies(
        self,
        reply_to: str,
        *,
        timeout: float | None = None,
        consumer: str | None = None,
        prefetch: int = 1,
        reclaim_after: float = RECLAIM_AFTER,
    ) -> AsyncReplies:
        """See `Client.replies`: iterate with `async for`, inside `async with` so that leaving
        the block acknowledges what was yielded at once (an exception leaving it keeps the
        current item for redelivery). A plain `async for` left early acknowledges on the
        consumer's next read, or another consumer takes the items back after `reclaim_after`."""
        _check_prefetch(prefetch)
        return AsyncReplies(self, reply_to, timeout, consumer or default_consumer(), prefetch,
                            reclaim_after)  # fmt: skip

    async def ack(self, result: Result, *, consumer: str | None = None) -> None:
        """See `Client.ack`."""
        name = result.reply_to
        who = consumer or result.consumer or default_consumer()
        if name is None:
            raise AckError(f"result {result.id} was not read from a reply queue")
        code = await self._acknowledged(reply_store.ack(self.keys, name, who, result.raw))
        if code != 1:
            raise _ack_refusal(result, who, code)

    async def flush(self, account: str | None = None, priority: int | None = None) -> None:
        """See `Client.flush`."""
        acct = account or self.settings.default_account
        what = "*" if priority is None else f"p{priority}"
        await self.store.read(lane_store.request_flush(self.keys, acct, what))

    async def _all_accounts(self) -> list[str]:
        return sorted(set(self.settings.accounts) | await self._known_accounts())

    async def _scan_dead(
        self, account: str, error_type: str | None, want: int | None
    ) -> list[DeadLetter]:
        found: list[DeadLetter] = []
        start = 0
        while want is None or len(found) < want:
            page = DEAD_PAGE if want is None or error_type else max(1, want - len(found))
            entries = await self.store.read(
                req_store.list_dead(self.keys, account, offset=start, limit=page)
            )
            if not entries:
                break
            letters = await self.store.read(req_store.read_letters(self.keys, entries))
            found += [x for x in letters if _matches(x, error_type)]
            if len(entries) < page:
                break
            start += len(entries)
        return found if want is None else found[:want]

    async def dead(
        self,
        *,
        account: str | None = None,
        limit: int = 100,
        offset: int = 0,
        error_type: str | None = None,
    ) -> list[DeadLetter]:
        """See `Client.dead`."""
        accounts = [account] if account else await self._all_accounts()
        letters: list[DeadLetter] = []
        for acct in accounts:
            letters += await self._scan_dead(acct, error_type, offset + limit)
        letters.sort(key=lambda x: x.died_ms, reverse=True)
        return letters[offset : offset + limit]

    async def _dead_targets(
        self,
        requests: Iterable[DeadRef] | None,
        account: str | None,
        error_type: str | None,
        every: bool,
    ) -> list[tuple[str, str]]:
        named = _dead_selection(requests, account, error_type, every)
        if named is not None:
            return named
        out: list[tuple[str, str]] = []
        for a in [account] if account else await self._all_accounts():
            out += [split_request_id(x.id) for x in await self._scan_dead(a, error_type, None)]
        return out

    async def requeue_dead(
        self,
        requests: Iterable[DeadRef] | None = None,
        *,
        account: str | None = None,
        error_type: str | None = None,
        every: bool = False,
    ) -> dict[str, str]:
        """See `Client.requeue_dead`."""
        out: dict[str, str] = {}
        for account_, token in await self._dead_targets(requests, account, error_type, every):
            rid = f"{account_}.{token}"
            for _ in range(3):
                lane = await self.store.read(req_store.letter_lane(self.keys, account_, token))
                if lane is None:
                    out[rid] = "not dead"
                    break
                code = await self.store.run(
                    req_store.requeue_dead(self.keys, account_, token, lane)
                )
                if code != -2:
                    out[rid] = {1: "requeued", 0: "not dead", -1: "params gone"}[code]
                    break
        return out

    async def purge_dead(
        self,
        requests: Iterable[DeadRef] | None = None,
        *,
        account: str | None = None,
        error_type: str | None = None,
        every: bool = False,
    ) -> int:
        """See `Client.purge_dead`."""
        n = 0
        for account_, token in await self._dead_targets(requests, account, error_type, every):
            n += await self.store.run(req_store.purge_dead(self.keys, account_, token))
        return n

    async def batch(self, ref: str) -> AssemblyRecord | None:
        """See `Client.batch`."""
        accounts = await self._all_accounts()
        where = await self.store.read(asm_store.find_batch(self.keys, accounts, ref.strip()))
        for account, asm in [where] if where is not None else _batch_candidates(ref, accounts):
            record = await self.store.read(asm_store.read(self.keys, account, asm))
            if record is not None:
                return record
        return None

    async def batch_requests(self, batch: AssemblyRecord) -> list[str]:
        """See `Client.batch_requests`."""
        ids: list[str] = []
        while True:
            chunk = await self.store.read(
                asm_store.entries(self.keys, batch.account, batch.id, len(ids), ENTRY_CHUNK)
            )
            ids += _entry_ids(batch.account, chunk)
            if len(chunk) < ENTRY_CHUNK:
                return ids

    async def daemons_alive(self) -> int:
        """See `Client.daemons_alive`."""
        now = await self.store.time_ms()
        alive = await self.store.read(counter_store.alive(self.keys, now))
        return len(alive)


#: Acknowledgements scheduled by AsyncReplies left without `async with` (kept until they ran).
_CLOSING: set[asyncio.Task[None]] = set()


class AsyncReplies:
    """What `AsyncClient.replies` returns: an async iterator and async context manager."""

    def __init__(
        self,
        client: AsyncClient,
        name: str,
        timeout: float | None,
        consumer: str,
        prefetch: int,
        reclaim_after: float,
    ) -> None:
        self.client = client
        self.name = name
        self.timeout = timeout
        self.consumer = consumer
        self.prefetch = prefetch
        self.reclaim_after = reclaim_after
        self._finished: list[bytes] = []
        self._current: bytes | None = None
        self._failed = False
        self._gen: AsyncIterator[Result] | None = None

    async def __aenter__(self) -> AsyncReplies:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._failed = exc is not None
        await self.aclose()

    def __aiter__(self) -> AsyncReplies:
        return self

    def __del__(self) -> None:
        # A plain `async for` left by `break`: acknowledge in a task of the running loop.
        if self._gen is None and self._current is None and not self._finished:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop any more: what stays in flight comes back to this consumer name
        task = loop.create_task(self.aclose())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    async def __anext__(self) -> Result:
        if self._gen is None:
            # A proxy, as in `Replies`: a loop left by `break` drops the last reference at once.
            self._gen = AsyncReplies._run(cast(AsyncReplies, weakref.proxy(self)))
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        """Stop reading; acknowledge what was handled (see `Replies.close`)."""
        if self._gen is not None:
            await self._gen.aclose()  # type: ignore[attr-defined]
            self._gen = None
        done = list(self._finished)
        if self._current is not None and not self._failed:
            done.append(self._current)
        self._finished, self._current = [], None
        for raw in done:
            await self.client.store.run(
                reply_store.ack(self.client.keys, self.name, self.consumer, raw)
            )

    async def _reclaim(self) -> None:
        c = self.client
        now_s = await c.store.time_ms() // 1000
        await c.store.read(reply_store.register(c.keys, self.name, self.consumer, now_s))
        while await c.store.run(reply_store.restore(c.keys, self.name, self.consumer)) > 0:
            pass
        for other, seen in (await c.store.read(reply_store.consumers(c.keys, self.name))).items():
            if other != self.consumer and now_s - seen > self.reclaim_after:
                while await c.store.run(reply_store.restore(c.keys, self.name, other)) > 0:
                    pass

    async def _run(self) -> AsyncIterator[Result]:
        c = self.client
        await self._reclaim()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            finished = self._finished
            if self._current is not None:
                finished.append(self._current)
                self._current = None
            group = await c.store.run(
                reply_store.take(c.keys, self.name, self.consumer, self.prefetch, finished)
            )
            self._finished = []
            if not group:
                left = None if deadline is None else deadline - time.monotonic()
                wait_s = _timeout(left, c._block)
                try:
                    raw = await c.store.block(
                        reply_store.block_take(c.keys, self.name, self.consumer, wait_s), wait_s
                    )
                except RedisFullError:
                    raw = None  # Redis refuses BLMOVE at maxmemory; TAKE still works
                    await asyncio.sleep(min(1.0, wait_s))
                if raw is None:
                    if deadline is not None and time.monotonic() >= deadline:
                        return
                    continue
                group = [raw]
            if deadline is not None:
                deadline = time.monotonic() + (self.timeout or 0)
            for i, raw in enumerate(group):
                self._current = raw
                self._finished = list(group[:i])
                yield Result.from_json(raw, reply_to=self.name, consumer=self.consumer)
            self._finished = list(group[:-1])


@dataclass(frozen=True, slots=True)
class AsyncTicket(Ticket):
    """A ticket from `AsyncClient.submit`: its handle methods are awaited."""

    async def wait(self, timeout: float | None = None) -> Result:
        client: AsyncClient = self._bound()
        return await client.wait(self.id, timeout=timeout)

    async def get(self) -> RequestState:
        client: AsyncClient = self._bound()
        return await client.get(self.id)

    async def cancel(self) -> Result:
        client: AsyncClient = self._bound()
        return await client.cancel(self.id)


class _WaitHub:
    """One account's concurrent `wait`s, served by one task on one blocking connection.

    New waits are marked and read at once; then the task blocks on every waited request's done
    list in one BLMPOP, reads the one that fired, and renews the marks before they lapse.
    """

    def __init__(self, client: AsyncClient, account: str) -> None:
        self.client = client
        self.account = account
        self.waiting: dict[str, tuple[str, list[asyncio.Future[Result]]]] = {}
        self.fresh: set[str] = set()
        self.by_key: dict[str, str] = {}
        self.task: asyncio.Task[None] | None = None

    def add(self, rid: str, token: str) -> asyncio.Future[Result]:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        entry = self.waiting.setdefault(rid, (token, []))
        entry[1].append(future)
        self.fresh.add(rid)
        self.by_key[req_store.done_list(self.client.keys, self.account, token)] = rid
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
        return future

    def discard(self, rid: str, future: asyncio.Future[Result]) -> None:
        entry = self.waiting.get(rid)
        if entry is None:
            return
        if future in entry[1]:
            entry[1].remove(future)
        if not entry[1]:
            self._forget(rid)

    def _forget(self, rid: str) -> None:
        entry = self.waiting.pop(rid, None)
        self.fresh.discard(rid)
        if entry is not None:
            self.by_key.pop(req_store.done_list(self.client.keys, self.account, entry[0]), None)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass

    async def _check(self, rids: Sequence[str]) -> None:
        """Mark and read these requests; settle the waits of those that ended."""
        keys, store = self.client.keys, self.client.store
        for i in range(0, len(rids), 500):
            part = [r for r in rids[i : i + 500] if r in self.waiting]
            reads = [
                req_store.mark_and_read(keys, self.account, self.waiting[r][0], _WAITER_MS)
                for r in part
            ]
            try:
                records = await store.read(_merge(reads))
            except Exception as exc:
                for rid in part:
                    self._settle(rid, exc)
                continue
            for rid, record in zip(part, records, strict=True):
                if record is None:
                    self._settle(rid, _not_found(rid))
                elif record.envelope is not None:
                    self._settle(rid, Result.from_json(record.envelope))

    def _settle(self, rid: str, outcome: Result | BaseException) -> None:
        entry = self.waiting.get(rid)
        if entry is None:
            return
        for f in entry[1]:
            if f.done():
                continue
            if isinstance(outcome, BaseException):
                f.set_exception(outcome)
            else:
                f.set_result(outcome)
        self._forget(rid)

    async def _run(self) -> None:
        store = self.client.store
        renewed = time.monotonic()
        while self.waiting:
            if self.fresh:
                fresh = list(self.fresh)
                self.fresh.clear()
                await self._check(fresh)
            if time.monotonic() - renewed > defaults.WAITER_SECONDS / 3:
                await self._check(list(self.waiting))
                renewed = time.monotonic()
            if not self.waiting or self.fresh:
                continue
            done_keys = list(self.by_key)[:3000]
            wait_s = min(1.0, self.client._block)
            got = req_store.woke(
                await store.block(req_store.block_on_any(done_keys, wait_s), wait_s)
            )
            if got:
                await store.read(req_store.put_back(*got))
                # Many may have ended at once (a fan-out chunk): look at every done list that
                # has an element, in one round trip, rather than one wake-up each.
                fired = await store.read(req_store.nonempty(done_keys))
                rids = [self.by_key[k] for k in fired if k in self.by_key]
                if rids:
                    await self._check(rids)
