"""The webhook outbox as the sender and operators use it, over the store's delivery scripts.

Every change of a delivery is one script of the store (`store/webhooks.py`), so a crash between
two steps leaves either the old state or the new one, never half of each. Times are Redis's.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from batchd.defaults import WEBHOOK_CLAIM_CHUNK
from batchd.store import AsyncStore, Durability, Keys, Store
from batchd.store import webhooks as wh
from batchd.store.runner import checked
from batchd.store.webhooks import (
    Claimed,
    Delivery,
    DeliveryRecord,
    Lease,
    Outcome,
    Settle,
    Stopped,
)

__all__ = [
    "AsyncOutbox",
    "Claimed",
    "Delivery",
    "DeliveryRecord",
    "Lease",
    "Outcome",
    "Settle",
    "Stopped",
    "enqueue_delivery",
    "find_delivery",
    "gone_endpoints",
    "list_dead",
    "read_delivery",
    "retry_all_dead",
    "retry_delivery",
]


def enqueue_delivery(
    store: Store, account: str, token: str, url: str, body: bytes, now_ms: int | None = None
) -> None:
    """Put a delivery in the outbox, due now: exactly what the pipeline's fan-out writes."""
    at = store.now_ms() if now_ms is None else now_ms
    store.read(wh.enqueue(store.keys, account, token, url, body, at))


# -- operators' side (sync) ---------------------------------------------------------------------


def read_delivery(store: Store, account: str, token: str) -> DeliveryRecord | None:
    found: DeliveryRecord | None = store.read(wh.read_delivery(store.keys, account, token))
    return found


def list_dead(
    store: Store, accounts: Iterable[str], limit: int | None = None
) -> list[DeliveryRecord]:
    """Dead and gone deliveries of these accounts, most recent first."""
    found: list[tuple[float, DeliveryRecord]] = []
    for account in accounts:
        entries = store.read(wh.dead_tokens(store.keys, account, limit))
        if not entries:
            continue
        read = store.read(wh.read_deliveries(store.keys, account, [t for t, _ in entries]))
        for (_, score), record in zip(entries, read, strict=True):
            # A record past its retention is gone from Redis; only its set entry lingers.
            if record is not None:
                found.append((score, record))
    found.sort(key=lambda item: item[0], reverse=True)
    records = [record for _, record in found]
    return records if limit is None else records[:limit]


def gone_endpoints(store: Store, accounts: Iterable[str]) -> list[tuple[str, str, int]]:
    """(account, url, ms) of every callback URL marked gone after a 410 answer."""
    out: list[tuple[str, str, int]] = []
    for account in accounts:
        for url, at in store.read(wh.gone_endpoints(store.keys, account)):
            out.append((account, url, at))
    return sorted(out, key=lambda item: item[2])


def find_delivery(store: Store, accounts: Sequence[str], ident: str) -> tuple[str, str] | None:
    """(account, token) of a delivery named by request id `<account>.<token>` or `msg_<token>`."""
    parsed = wh.parse_ident(ident)
    if parsed is None:
        return None
    account, token = parsed
    for candidate in [account] if account is not None else accounts:
        if candidate in accounts and store.read(wh.exists(store.keys, candidate, token)):
            return candidate, token
    return None


def retry_delivery(store: Store, account: str, token: str) -> str:
    """Send one delivery again from its first attempt; returns the state it had before.

    'missing' means its record expired; 'pending' means it was still being tried (untouched).
    Its URL is no longer marked gone afterwards.
    """
    return store.run(wh.retry(store.keys, account, token))


def retry_all_dead(store: Store, accounts: Iterable[str]) -> dict[str, int]:
    """Send every dead or gone delivery again and clear every gone mark: counts by old state."""
    counts: dict[str, int] = {}
    for account in accounts:
        for token, _ in store.read(wh.dead_tokens(store.keys, account)):
            state = retry_delivery(store, account, token)
            counts[state] = counts.get(state, 0) + 1
        store.read(wh.forget_gone(store.keys, account))
    return counts


# -- the sender's side (async) ------------------------------------------------------------------


class AsyncOutbox:
    """Claims, settles and releases deliveries for the sender, many per round trip."""

    def __init__(
        self, client: Any, keys: Keys, retention: float, durability: Durability | None = None
    ) -> None:
        self.store = AsyncStore(client, keys, durability=durability)
        self.keys = keys
        self.retention_ms = int(retention * 1000)

    async def claim(self, account: str, limit: int, lease_ms: int, claim_id: str) -> Claimed:
        """Lease up to `limit` due deliveries of `account` for `lease_ms` (Redis's clock)."""
        now = await self.store.time_ms()
        limit = min(limit, WEBHOOK_CLAIM_CHUNK)
        tokens = await self.store.read(wh.due_head(self.keys, account, now, limit))
        if not tokens:
            next_due = await self.store.read(wh.next_due(self.keys, account))
            return Claimed([], [], next_due, now)
        # Durable: a result leaves Redis only once the replicas hold the write that made it, so
        # no failover can take it back and end the request again with another envelope.
        return await self.store.durable(
            wh.claim(self.keys, account, tokens, lease_ms, claim_id, self.retention_ms)
        )

    async def load(self, leases: Sequence[Lease]) -> list[Delivery]:
        """The bodies of claimed deliveries, in one round trip."""
        if not leases:
            return []
        return await self.store.read(wh.bodies(self.keys, leases))

    async def settle(self, results: Sequence[Settle]) -> list[int]:
        """Write back how each attempt ended, in one round trip; a script's answer per result."""
        if not results:
            return []
        calls = [wh.settle(self.keys, r, self.retention_ms) for r in results]
        answers = await self.store.run_all(calls)
        for a in answers:
            if isinstance(a, Exception):
                checked(a)  # raised as the BatchdError it is (a failover, say)
        return [int(a) for a in answers]

    async def release(self, leases: Sequence[Lease], delay_ms: int) -> None:
        """Hand claimed deliveries back untried, due after `delay_ms`."""
        if leases:
            await self.store.run_all([wh.release(self.keys, d, delay_ms) for d in leases])
