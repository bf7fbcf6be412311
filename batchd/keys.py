"""Every Redis key batchd writes, in one place.

Per-account keys share the hash tag `{<prefix>:<account>}` so that one lane's keys (and one
account's) live in one hash slot; only reply queues and the global indexes are elsewhere.
"""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# base64's base32 alphabet to Crockford's, so the C encoder does the 5-bit split.
_FROM_B32 = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _CROCKFORD.encode())
_LOW120 = (1 << 120) - 1


def new_token() -> str:
    """A 26-character, time-ordered, random id (ULID layout): a valid custom_id as it stands."""
    return encode_token((int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big"))


def encode_token(value: int) -> str:
    """130 bits as 26 Crockford base32 digits, most significant first."""
    # The top 10 bits are two digits; the low 120 bits are exactly 15 bytes, 24 base32 digits.
    high = value >> 120
    low = base64.b32encode((value & _LOW120).to_bytes(15, "big")).translate(_FROM_B32)
    return _CROCKFORD[high >> 5] + _CROCKFORD[high & 31] + low.decode()


def request_id(account: str, token: str) -> str:
    """The public id of a request: its account and token."""
    return f"{account}.{token}"


def split_request_id(rid: str) -> tuple[str, str]:
    """(account, token) of a request id; ValueError when it is not one of ours."""
    account, sep, token = rid.partition(".")
    if not sep or not account or len(token) != 26 or any(c not in _CROCKFORD for c in token):
        raise ValueError(f"not a batchd request id: {rid!r}")
    return account, token


def webhook_id(token: str) -> str:
    """The Standard Webhooks `webhook-id` of a request's result: stable across retries."""
    return f"msg_{token}"


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix. Methods taking `account` return keys in its hash slot."""

    prefix: str = "batchd"

    def tag(self, account: str) -> str:
        return f"{self.prefix}:{{{account}}}"

    # -- requests ---------------------------------------------------------------------------
    def request(self, account: str, token: str) -> str:
        """Hash: the request record (state, routing, result envelope once terminal)."""
        return f"{self.tag(account)}:r:{token}"

    def request_prefix(self, account: str) -> str:
        return f"{self.tag(account)}:r:"

    def params(self, account: str) -> str:
        """Hash: token -> params (compact JSON) of each of the account's requests not ended."""
        return f"{self.tag(account)}:p"

    def done(self, account: str, token: str) -> str:
        """List: gets one element when a request that `wait` callers marked ends; they block
        on it."""
        return f"{self.tag(account)}:done:{token}"

    def waiter(self, account: str, token: str) -> str:
        """String with TTL: present while some `wait` caller blocks on this request."""
        return f"{self.tag(account)}:w:{token}"

    def idempotency(self, account: str, key_digest: str) -> str:
        """String: request id stored under a producer's idempotency key (its digest)."""
        return f"{self.tag(account)}:k:{key_digest}"

    def dead(self, account: str) -> str:
        """Sorted set: request ids that ended `dead`, scored by time."""
        return f"{self.tag(account)}:dead"

    # -- lanes ------------------------------------------------------------------------------
    def pending(self, account: str, priority: int) -> str:
        """List: entries `<token> <framed size> <enqueued ms>` waiting, oldest at the head."""
        return f"{self.tag(account)}:q:{priority}"

    def lane_stats(self, account: str, priority: int) -> str:
        """Hash: `count` and `bytes` (framed) of the pending list."""
        return f"{self.tag(account)}:qs:{priority}"

    def lanes(self, account: str) -> str:
        """Set: priorities of this account that have (or had) pending requests."""
        return f"{self.tag(account)}:lanes"

    def lane_lock(self, account: str, priority: int) -> str:
        return f"{self.tag(account)}:qlock:{priority}"

    def quarantine(self, account: str) -> str:
        """List: pending entries set aside unsent (not batchd's, or their record not a hash)."""
        return f"{self.tag(account)}:quarantine"

    def flush(self, account: str) -> str:
        """Set: priorities (or `*`) a producer or operator asked to cut now."""
        return f"{self.tag(account)}:flush"

    def paused(self, account: str) -> str:
        """String: why the account is paused (its API key was refused); absent when not."""
        return f"{self.tag(account)}:paused"

    # -- assemblies (a batch in the making, then in flight) ---------------------------------
    def assembly(self, account: str, asm: str) -> str:
        """Hash: the assembly's state, lane, counts, intent and batch id."""
        return f"{self.tag(account)}:a:{asm}"

    def assembly_entries(self, account: str, asm: str) -> str:
        """List: the pending entries claimed into this assembly, in body order."""
        return f"{self.tag(account)}:a:{asm}:e"

    def assembly_lease(self, account: str, asm: str) -> str:
        """String with TTL: who is working on this assembly's current stage."""
        return f"{self.tag(account)}:a:{asm}:lease"

    def assemblies(self, account: str) -> str:
        """Sorted set: live assemblies by due time (ms) of their next stage."""
        return f"{self.tag(account)}:as"

    def known_batches(self, account: str) -> str:
        """Set: batch ids batchd created or adopted for this account."""
        return f"{self.tag(account)}:kb"

    def create_lock(self, account: str) -> str:
        """String with TTL: the fencing token of whoever may create a batch now."""
        return f"{self.tag(account)}:createlock"

    def fence(self, account: str) -> str:
        """Counter: source of fencing tokens for create_lock."""
        return f"{self.tag(account)}:fence"

    def open_intent(self, account: str) -> str:
        """String: the assembly whose create may have made a batch nobody recorded yet.

        While it is unresolved no other create starts, so a batch found in the list can only
        be that one's: two unknown batches of one size are never told apart by guessing.
        """
        return f"{self.tag(account)}:intent"

    # -- webhook outbox ---------------------------------------------------------------------
    def delivery(self, account: str, token: str) -> str:
        """Hash: one webhook delivery (url, body, attempts, next time, last status, state)."""
        return f"{self.tag(account)}:wh:{token}"

    def deliveries_due(self, account: str) -> str:
        """Sorted set: request tokens whose delivery is due, scored by due time (ms)."""
        return f"{self.tag(account)}:whdue"

    def deliveries_dead(self, account: str) -> str:
        """Sorted set: request tokens whose delivery failed for good, scored by time."""
        return f"{self.tag(account)}:whdead"

    def endpoints_gone(self, account: str) -> str:
        """Hash: callback URL -> ms it answered 410 Gone; no more deliveries go there."""
        return f"{self.tag(account)}:whgone"

    # -- global -----------------------------------------------------------------------------
    def reply_queue(self, name: str) -> str:
        """List: result envelopes for producers reading `reply_to=name`."""
        return f"{self.prefix}:reply:{{{name}}}"

    def reply_inflight(self, name: str, consumer: str) -> str:
        """List: envelopes a consumer has read but not acknowledged yet."""
        return f"{self.prefix}:reply:{{{name}}}:inflight:{consumer}"

    def counters(self) -> str:
        """Hash: monotonic counters: submitted, ended:<status>, retries, batches_created,
        batches_ended:<outcome>."""
        return f"{self.prefix}:counters"

    def counters_by_minute(self) -> str:
        """Hash: minute since the epoch -> JSON snapshot of `counters` taken in that minute."""
        return f"{self.prefix}:counters:m"

    def batch_index(self) -> str:
        """Hash: batch id -> `<account> <assembly id>`, for operators' look-ups."""
        return f"{self.prefix}:batches"

    def accounts(self) -> str:
        """Set: the accounts the daemon serves (producers refuse others)."""
        return f"{self.prefix}:accounts"

    def processes(self) -> str:
        """Sorted set: `batchd run` processes by last heartbeat (ms)."""
        return f"{self.prefix}:procs"
