"""The webhook outbox in Redis: writing a delivery, claiming and settling it, dead letters.

Every change of a delivery goes through one script of `scripts.py`, so a crash between two
steps leaves either the old state or the new one, never half of each.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import redis
import redis.asyncio

from batchd.keys import Keys, request_id, split_request_id, webhook_id
from batchd.webhooks import scripts

Outcome = Literal["delivered", "retry", "dead", "gone"]


def _clock_ms() -> int:
    return int(time.time() * 1000)


def enqueue_delivery(
    client: redis.Redis,
    keys: Keys,
    account: str,
    token: str,
    url: str,
    body: bytes,
    now_ms: int | None = None,
) -> None:
    """Put a delivery in the outbox, due now: exactly what the pipeline's fan-out writes."""
    at = _clock_ms() if now_ms is None else now_ms
    pipe = client.pipeline(transaction=True)
    pipe.hset(
        keys.delivery(account, token),
        mapping={
            "url": url,
            "body": body,
            "wid": webhook_id(token),
            "rid": request_id(account, token),
            "attempts": 0,
            "state": "pending",
            "created": at,
        },
    )
    pipe.zadd(keys.deliveries_due(account), {token: at})
    pipe.execute()


@dataclass(frozen=True)
class Lease:
    """A claimed delivery, body not loaded yet: the sender may still hand it back untried."""

    account: str
    token: str
    url: str
    webhook_id: str
    request_id: str
    attempts: int
    claim_id: str


@dataclass(frozen=True)
class Delivery(Lease):
    """A claimed delivery with its body, ready to send."""

    body: bytes = b""


@dataclass(frozen=True)
class Stopped:
    """A delivery the claim ended without sending, because its URL answered 410 before."""

    account: str
    token: str
    request_id: str
    url: str


@dataclass(frozen=True)
class Claimed:
    """What one claim took, what it stopped, and when the account's next delivery is due."""

    leases: list[Lease]
    stopped: list[Stopped]
    next_due_ms: int | None


@dataclass(frozen=True)
class Settle:
    """How one attempt ended, to be written back: `next_ms` is set only for a retry."""

    delivery: Delivery
    outcome: Outcome
    at_ms: int
    status: int | None = None
    error: str = ""
    next_ms: int | None = None


@dataclass(frozen=True)
class DeliveryRecord:
    """A delivery as stored, for operators: `webhooks dead` prints these."""

    account: str
    token: str
    request_id: str
    webhook_id: str
    url: str
    state: str
    attempts: int
    last_status: int | None
    last_error: str
    created_ms: int | None
    last_ms: int | None
    ended_ms: int | None
    next_ms: int | None

    @classmethod
    def from_hash(cls, account: str, token: str, raw: dict[bytes, bytes]) -> DeliveryRecord:
        def text(name: str) -> str:
            return raw.get(name.encode(), b"").decode("utf-8", "replace")

        def number(name: str) -> int | None:
            value = text(name)
            try:
                return int(float(value)) if value else None
            except ValueError:
                return None

        return cls(
            account=account,
            token=token,
            request_id=text("rid") or f"{account}.{token}",
            webhook_id=text("wid") or webhook_id(token),
            url=text("url"),
            state=text("state"),
            attempts=number("attempts") or 0,
            last_status=number("last_status"),
            last_error=text("last_error"),
            created_ms=number("created"),
            last_ms=number("last_at"),
            ended_ms=number("ended"),
            next_ms=number("next"),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "webhook_id": self.webhook_id,
            "url": self.url,
            "state": self.state,
            "attempts": self.attempts,
            "last_status": self.last_status,
            "last_error": self.last_error or None,
            "created_ms": self.created_ms,
            "last_attempt_ms": self.last_ms,
            "ended_ms": self.ended_ms,
        }


# -- operators' side (sync) ---------------------------------------------------------------------


def read_delivery(
    client: redis.Redis, keys: Keys, account: str, token: str
) -> DeliveryRecord | None:
    raw: dict[bytes, bytes] = client.hgetall(keys.delivery(account, token))  # type: ignore[assignment]
    return DeliveryRecord.from_hash(account, token, raw) if raw else None


def list_dead(
    client: redis.Redis, keys: Keys, accounts: Iterable[str], limit: int | None = None
) -> list[DeliveryRecord]:
    """Dead and gone deliveries of these accounts, most recent first."""
    found: list[tuple[float, DeliveryRecord]] = []
    for account in accounts:
        end = -1 if limit is None else limit - 1
        entries: list[tuple[bytes, float]] = client.zrevrange(  # type: ignore[assignment]
            keys.deliveries_dead(account), 0, end, withscores=True
        )
        if not entries:
            continue
        pipe = client.pipeline(transaction=False)
        for token, _ in entries:
            pipe.hgetall(keys.delivery(account, token.decode()))
        for (token, score), raw in zip(entries, pipe.execute(), strict=True):
            # A record past its retention is gone from Redis; only its zset entry lingers.
            if raw:
                found.append((score, DeliveryRecord.from_hash(account, token.decode(), raw)))
    found.sort(key=lambda item: item[0], reverse=True)
    records = [record for _, record in found]
    return records if limit is None else records[:limit]


def gone_endpoints(
    client: redis.Redis, keys: Keys, accounts: Iterable[str]
) -> list[tuple[str, str, int]]:
    """(account, url, ms) of every callback URL marked gone after a 410 answer."""
    out: list[tuple[str, str, int]] = []
    for account in accounts:
        marks: dict[bytes, bytes] = client.hgetall(keys.endpoints_gone(account))  # type: ignore[assignment]
        for url, at in marks.items():
            out.append((account, url.decode("utf-8", "replace"), int(at)))
    return sorted(out, key=lambda item: item[2])


def find_delivery(
    client: redis.Redis, keys: Keys, accounts: Sequence[str], ident: str
) -> tuple[str, str] | None:
    """(account, token) of a delivery named by request id `<account>.<token>` or `msg_<token>`."""
    if ident.startswith("msg_"):
        token = ident[len("msg_") :]
        for account in accounts:
            if client.exists(keys.delivery(account, token)):
                return account, token
        return None
    try:
        account, token = split_request_id(ident)
    except ValueError:
        return None
    if account not in accounts or not client.exists(keys.delivery(account, token)):
        return None
    return account, token


def retry_delivery(
    client: redis.Redis, keys: Keys, account: str, token: str, now_ms: int | None = None
) -> str:
    """Send one delivery again from its first attempt; returns the state it had before.

    'missing' means its record expired; 'pending' means it was still being tried (untouched).
    Its URL is no longer marked gone afterwards.
    """
    at = _clock_ms() if now_ms is None else now_ms
    result = client.register_script(scripts.RETRY)(
        keys=[
            keys.delivery(account, token),
            keys.deliveries_due(account),
            keys.deliveries_dead(account),
            keys.endpoints_gone(account),
        ],
        args=[token, at],
    )
    return result.decode() if isinstance(result, bytes) else str(result)


def retry_all_dead(
    client: redis.Redis, keys: Keys, accounts: Iterable[str], now_ms: int | None = None
) -> dict[str, int]:
    """Send every dead or gone delivery again and clear every gone mark: counts by old state."""
    at = _clock_ms() if now_ms is None else now_ms
    counts: dict[str, int] = {}
    for account in accounts:
        tokens: list[bytes] = client.zrange(keys.deliveries_dead(account), 0, -1)  # type: ignore[assignment]
        for token in tokens:
            state = retry_delivery(client, keys, account, token.decode(), at)
            counts[state] = counts.get(state, 0) + 1
        client.delete(keys.endpoints_gone(account))
    return counts


# -- the sender's side (async) ------------------------------------------------------------------


class AsyncOutbox:
    """Claims, settles and releases deliveries for the sender, many per round trip."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys, retention: float) -> None:
        self.client = client
        self.keys = keys
        self.retention_ms = int(retention * 1000)
        self._claim = client.register_script(scripts.CLAIM)
        self._succeed = client.register_script(scripts.SUCCEED)
        self._fail = client.register_script(scripts.FAIL)
        self._release = client.register_script(scripts.RELEASE)

    async def claim(
        self, account: str, limit: int, lease_ms: int, claim_id: str, at_ms: int | None = None
    ) -> Claimed:
        """Lease up to `limit` due deliveries of `account` for `lease_ms`."""
        at = _clock_ms() if at_ms is None else at_ms
        claimed, gone, next_due = await self._claim(
            keys=[
                self.keys.deliveries_due(account),
                self.keys.endpoints_gone(account),
                self.keys.deliveries_dead(account),
            ],
            args=[
                at,
                lease_ms,
                limit,
                claim_id,
                self.keys.delivery(account, ""),
                self.retention_ms,
            ],
        )
        leases = [
            Lease(
                account=account,
                token=claimed[i].decode(),
                url=claimed[i + 1].decode(),
                webhook_id=claimed[i + 2].decode(),
                request_id=claimed[i + 3].decode() or request_id(account, claimed[i].decode()),
                attempts=int(claimed[i + 4]),
                claim_id=claim_id,
            )
            for i in range(0, len(claimed), 5)
        ]
        stopped = [
            Stopped(account, gone[i].decode(), gone[i + 1].decode(), gone[i + 2].decode())
            for i in range(0, len(gone), 3)
        ]
        return Claimed(leases, stopped, int(float(next_due)) if next_due else None)

    async def load(self, leases: Sequence[Lease]) -> list[Delivery]:
        """The bodies of claimed deliveries, in one round trip."""
        if not leases:
            return []
        pipe = self.client.pipeline(transaction=False)
        for lease in leases:
            pipe.hget(self.keys.delivery(lease.account, lease.token), "body")
        bodies: list[bytes | None] = await pipe.execute()
        # A pending record never expires, so its body is there while the lease is held.
        return [
            Delivery(**vars(lease), body=body or b"")
            for lease, body in zip(leases, bodies, strict=True)
        ]

    async def settle(self, results: Sequence[Settle]) -> list[int]:
        """Write back how each attempt ended, in one round trip; a script's answer per result."""
        if not results:
            return []
        pipe = self.client.pipeline(transaction=False)
        for r in results:
            d = r.delivery
            record = self.keys.delivery(d.account, d.token)
            due = self.keys.deliveries_due(d.account)
            status = "" if r.status is None else str(r.status)
            if r.outcome == "delivered":
                await self._succeed(
                    keys=[record, due],
                    args=[d.token, r.at_ms, self.retention_ms, status],
                    client=pipe,
                )
                continue
            await self._fail(
                keys=[
                    record,
                    due,
                    self.keys.deliveries_dead(d.account),
                    self.keys.endpoints_gone(d.account),
                ],
                args=[
                    d.token,
                    d.claim_id,
                    r.at_ms,
                    "" if r.next_ms is None else r.next_ms,
                    "gone" if r.outcome == "gone" else "dead",
                    status,
                    r.error,
                    self.retention_ms,
                    d.url,
                ],
                client=pipe,
            )
        answers: list[Any] = await pipe.execute()
        return [int(a) for a in answers]

    async def release(self, leases: Sequence[Lease], due_ms: int) -> None:
        """Hand claimed deliveries back untried, due at `due_ms`."""
        if not leases:
            return
        pipe = self.client.pipeline(transaction=False)
        for d in leases:
            await self._release(
                keys=[self.keys.delivery(d.account, d.token), self.keys.deliveries_due(d.account)],
                args=[d.token, d.claim_id, due_ms],
                client=pipe,
            )
        await pipe.execute()
