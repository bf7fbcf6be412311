"""Reply queues: the account's outbox drained into each queue (its own hash slot) at most once,
and the consumer's side: take, acknowledge, restore.

A request that ends with a `reply_to` gets an outbox entry `<seq> <token> <queue>` in the same
script that ends it. `drain` reads the outbox head, pushes each queue's envelopes with
PUSH_REPLIES (which skips sequence numbers its cursor has seen, so a repeated or concurrent
drain pushes nothing twice), then trims what it handled. A queue that refuses its entries (a key
of another type under its name) gets them parked, retried later from their own list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from batchd.defaults import DIRECT_QUEUES, DRAIN_CHUNK, QUEUE_SEEN_MS
from batchd.errors import DurabilityError, RedisUnavailableError, StoreError
from batchd.store.keys import Keys
from batchd.store.runner import AsyncStore, Read, Store, about_the_server, checked
from batchd.store.scripts import Call, call, text

# -- consumers ---------------------------------------------------------------------------------


def take(
    keys: Keys, name: str, consumer: str, n: int, finished: Sequence[bytes]
) -> Call[list[bytes]]:
    """TAKE: acknowledge `finished`, then take up to `n` replies for `consumer`."""
    return call(
        "take",
        [keys.reply_queue(name), keys.reply_inflight(name, consumer), keys.reply_consumers(name)],
        [n, consumer, *finished],
        lambda reply: list(reply or []),
    )


def ack(keys: Keys, name: str, consumer: str, envelope: bytes) -> Call[int]:
    """ACK: 1 removed, 0 this consumer held no such reply, -1 no such consumer ever read."""
    return call(
        "ack",
        [keys.reply_inflight(name, consumer), keys.reply_consumers(name)],
        [consumer, envelope],
        int,
    )


def restore(keys: Keys, name: str, consumer: str, n: int = 1000) -> Call[int]:
    """RESTORE: up to `n` unacknowledged replies of `consumer` go back to the queue."""
    return call("restore", [keys.reply_queue(name), keys.reply_inflight(name, consumer)], [n], int)


def block_take(keys: Keys, name: str, consumer: str, timeout: float) -> tuple[Any, ...]:
    """The BLMOVE a consumer blocks on when the queue is empty: the oldest reply moves to its
    in-flight list."""
    return (
        "BLMOVE",
        keys.reply_queue(name),
        keys.reply_inflight(name, consumer),
        "RIGHT",
        "LEFT",
        timeout,
    )


def consumers(keys: Keys, name: str) -> Read[dict[str, int]]:
    """Each consumer of a reply queue, and when it last read (s)."""

    def parse(out: list[Any]) -> dict[str, int]:
        raw = out[0] or {}
        if isinstance(raw, list):
            raw = dict(zip(raw[::2], raw[1::2], strict=True))
        found: dict[str, int] = {}
        for k, v in raw.items():
            seen = text(v)
            found[text(k)] = int(seen) if seen.isdigit() else 0
        return found

    return Read([("HGETALL", keys.reply_consumers(name))], parse)


def register(keys: Keys, name: str, consumer: str, now_s: int) -> Read[None]:
    return Read([("HSET", keys.reply_consumers(name), consumer, now_s)], lambda out: None)


def depth(keys: Keys, names: Sequence[str]) -> Read[dict[str, int]]:
    """How many replies wait on each of these queues (consumer lag)."""
    queues = list(names)
    return Read(
        [("LLEN", keys.reply_queue(n)) for n in queues],
        lambda out: {
            n: int(v) if not isinstance(v, Exception) else 0
            for n, v in zip(queues, out, strict=True)
        },
        errors=True,
    )


def queue_names(keys: Keys, account: str) -> Read[list[str]]:
    return Read(
        [("ZREVRANGE", keys.reply_queues(account), 0, 999)],
        lambda out: sorted(text(m) for m in (out[0] or [])),
    )


def direct_queues(store: Store, account: str) -> list[str]:
    """The account's most recently used reply queues (DIRECT_QUEUES at most) that a script
    ending its requests may push onto in the same call, skipping the outbox: all of them on a
    single server with no replicas to wait for, none on a cluster (a queue lives in another slot)
    or where replicas are waited for (a reply must not leave before the write that made it
    reached them; the outbox's drain waits for that)."""
    keys = store.keys
    if store.cluster or store.watched(keys.reply_outbox(account)):
        return []
    return store.read(
        Read(
            [("ZREVRANGE", keys.reply_queues(account), 0, DIRECT_QUEUES - 1)],
            lambda out: [text(m) for m in (out[0] or [])],
        )
    )


# -- the outbox --------------------------------------------------------------------------------


def push(keys: Keys, name: str, field: str, pairs: Sequence[tuple[int, bytes]]) -> Call[int]:
    """PUSH_REPLIES: the envelopes whose sequence number the queue's cursor has not seen."""
    args: list[str | bytes | int] = [field]
    for seq, env in pairs:
        args += (seq, env)
    return call("push_replies", [keys.reply_queue(name), keys.reply_cursor(name)], args, int)


def trim_outbox(
    keys: Keys, account: str, last_seq: int, n: int, refused: Sequence[str]
) -> Call[int]:
    return call(
        "trim_outbox",
        [keys.reply_outbox(account), keys.reply_parked(account)],
        [last_seq, n, *refused],
        int,
    )


def trim_parked(keys: Keys, account: str, n: int, refused: Sequence[str]) -> Call[int]:
    return call("trim_parked", [keys.reply_parked(account)], [n, *refused], int)


@dataclass(frozen=True, slots=True)
class Drained:
    pushed: int
    entries: int
    undeliverable: int
    refused: int
    #: The replicas did not confirm in time: nothing was trimmed, the next drain goes on.
    held: bool = False


def _entries(raw: Sequence[Any]) -> list[tuple[int, str, str]]:
    out: list[tuple[int, str, str]] = []
    for e in raw:
        parts = text(e).split(" ")
        if len(parts) == 3 and parts[0].isdigit():
            out.append((int(parts[0]), parts[1], parts[2]))
        else:
            out.append((-1, "", ""))
    return out


def _outbox_head(keys: Keys, account: str, parked: bool, limit: int) -> Read[list[bytes]]:
    source = keys.reply_parked(account) if parked else keys.reply_outbox(account)
    return Read([("LRANGE", source, 0, limit - 1)], lambda out: list(out[0]))


def _envelopes(keys: Keys, account: str, tokens: Sequence[str]) -> Read[dict[str, bytes | None]]:
    def parse(out: list[Any]) -> dict[str, bytes | None]:
        found: dict[str, bytes | None] = {}
        for token, env in zip(tokens, out[0], strict=True):
            ok = isinstance(env, bytes) and env.startswith(b'{"id":')
            found[token] = env if ok else None
        return found

    return Read([("MGET", *[keys.request(account, t) for t in tokens])], parse)


@dataclass
class _Plan:
    """One drain round worked out from the outbox head: the pushes, then the notes and trim."""

    raw: list[bytes]
    entries: list[tuple[int, str, str]]
    by_queue: dict[str, list[tuple[int, bytes]]]
    undeliverable: int

    def pushes(self, keys: Keys, account: str, parked: bool) -> list[Call[int]]:
        field = f"p:{account}" if parked else account
        return [push(keys, q, field, pairs) for q, pairs in self.by_queue.items()]

    def finish(
        self, keys: Keys, account: str, parked: bool, results: list[Any], now_ms: int
    ) -> tuple[Read[None], Call[int], Drained]:
        refused = [
            q for q, r in zip(self.by_queue, results, strict=True) if isinstance(r, Exception)
        ]
        pushed = sum(int(r) for r in results if not isinstance(r, Exception))
        notes: list[tuple[Any, ...]] = []
        if self.by_queue:
            seen: list[Any] = []
            for q in self.by_queue:
                seen += [now_ms, q]
            notes.append(("ZADD", keys.reply_queues(account), *seen))
            notes.append(
                ("ZREMRANGEBYSCORE", keys.reply_queues(account), "-inf", now_ms - QUEUE_SEEN_MS)
            )
        if self.undeliverable:
            notes.append(
                ("HINCRBY", keys.counters(account), "replies_undeliverable", self.undeliverable)
            )
        if parked:
            trim = trim_parked(keys, account, len(self.raw), refused)
        else:
            last = max((seq for seq, _, _ in self.entries), default=0)
            trim = trim_outbox(keys, account, last, len(self.raw), refused)
        done = Drained(pushed, len(self.raw), self.undeliverable, len(refused))
        return Read(notes, lambda out: None), trim, done


def _plan(raw: list[bytes], envelopes: dict[str, bytes | None]) -> _Plan:
    entries = _entries(raw)
    by_queue: dict[str, list[tuple[int, bytes]]] = {}
    undeliverable = 0
    for seq, token, queue in entries:
        env = envelopes.get(token)
        if seq < 0 or env is None:
            undeliverable += 1
            continue
        by_queue.setdefault(queue, []).append((seq, env))
    return _Plan(raw, entries, by_queue, undeliverable)


def _pushed(store: Store, pushes: list[Call[int]]) -> list[int | Exception]:
    """Each queue's push, on its replicas before it counts; a refusal (a key of another type
    under the queue's name, or that node full) as its exception. Where no replica is to be
    waited for, all in one pipeline."""
    if not any(store.watched(push.keys[0]) for push in pushes):
        results: list[int | Exception] = store.run_all(pushes)
        for r in results:
            if about_the_server(r):
                checked(r)
        return results
    out: list[int | Exception] = []
    for push in pushes:
        try:
            out.append(store.durable(push))
        except (DurabilityError, RedisUnavailableError):
            raise
        except StoreError as exc:
            out.append(exc)
    return out


def drain(store: Store, account: str, *, parked: bool = False, limit: int = DRAIN_CHUNK) -> Drained:
    """Move the head of the account's outbox (or parked list) onto the reply queues.

    Replies leave the account's slot only once its replicas hold the writes that made them (a
    failover could take those back and hand their sequence numbers to other requests), and
    leave the outbox only once the queue's replicas hold them. When replicas do not confirm in
    time the drain stops, `held`, and the next one goes on (a queue skips what it has seen).
    """
    keys = store.keys
    raw = store.read(_outbox_head(keys, account, parked, limit))
    if not raw:
        return Drained(0, 0, 0, 0)
    tokens = [t for _, t, _ in _entries(raw) if t]
    envelopes = store.read(_envelopes(keys, account, tokens)) if tokens else {}
    plan = _plan(raw, envelopes)
    try:
        if plan.by_queue:
            store.barrier(keys.reply_barrier(account))
        results = _pushed(store, plan.pushes(keys, account, parked))
    except DurabilityError:
        return Drained(0, len(raw), 0, 0, held=True)
    notes, trim, done = plan.finish(keys, account, parked, results, store.now_ms())
    store.read(notes)
    store.run(trim)
    return done


async def adrain(
    store: AsyncStore, account: str, *, parked: bool = False, limit: int = DRAIN_CHUNK
) -> Drained:
    """The asyncio twin of `drain`."""
    keys = store.keys
    raw = await store.read(_outbox_head(keys, account, parked, limit))
    if not raw:
        return Drained(0, 0, 0, 0)
    tokens = [t for _, t, _ in _entries(raw) if t]
    envelopes = await store.read(_envelopes(keys, account, tokens)) if tokens else {}
    plan = _plan(raw, envelopes)
    results: list[int | Exception] = []
    try:
        if plan.by_queue:
            await store.barrier(keys.reply_barrier(account))
        for push in plan.pushes(keys, account, parked):
            try:
                pushed: int = await store.durable(push)
                results.append(pushed)
            except (DurabilityError, RedisUnavailableError):
                raise
            except StoreError as exc:
                results.append(exc)
    except DurabilityError:
        return Drained(0, len(raw), 0, 0, held=True)
    notes, trim, done = plan.finish(keys, account, parked, results, await store.time_ms())
    await store.read(notes)
    await store.run(trim)
    return done


def drain_all(store: Store, account: str) -> int:
    """Drain the account's outbox until it is empty (or only refusals are left); pushed count."""
    total = 0
    while True:
        d = drain(store, account)
        total += d.pushed
        if d.entries < DRAIN_CHUNK or d.held:
            return total


async def adrain_all(store: AsyncStore, account: str) -> int:
    """The asyncio twin of `drain_all`."""
    total = 0
    while True:
        d = await adrain(store, account)
        total += d.pushed
        if d.entries < DRAIN_CHUNK or d.held:
            return total


def backlog(keys: Keys, accounts: Sequence[str]) -> Read[dict[str, tuple[int, int]]]:
    """(outbox length, parked length) per account: replies not on their queues yet."""
    names = list(accounts)
    commands: list[tuple[Any, ...]] = []
    for a in names:
        commands += [("LLEN", keys.reply_outbox(a)), ("LLEN", keys.reply_parked(a))]
    return Read(
        commands,
        lambda out: {a: (int(out[2 * i]), int(out[2 * i + 1])) for i, a in enumerate(names)},
    )
