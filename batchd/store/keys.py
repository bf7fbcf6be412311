"""Every Redis key batchd writes, and the ids it makes: the one place key names are built.

An account's keys start `<prefix>:{<account>}`: they share that hash tag, so every key one state
change touches lies in the account's hash slot; a reply queue's keys share the queue's own tag.
Nothing else in batchd builds a key name.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Every pair of Crockford digits, indexed by the 10 bits they spell.
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)
#: Where each pair's 10 bits lie in a 130-bit token, most significant first.
_PAIR_SHIFTS = tuple(range(120, -1, -10))
_TOKEN_CHARS = frozenset(_CROCKFORD)
TOKEN_LENGTH = 26


def new_token() -> str:
    """A 26-character, time-ordered, random id (ULID layout): a valid custom_id as it stands."""
    return encode_token((int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big"))


def encode_token(value: int) -> str:
    """130 bits as 26 Crockford base32 digits, most significant first: 13 pairs of digits
    looked up by 10 bits each (half the time of base64's base32, which is Python code)."""
    pairs = _PAIRS
    return "".join([pairs[(value >> shift) & 1023] for shift in _PAIR_SHIFTS])


def is_token(value: str) -> bool:
    return len(value) == TOKEN_LENGTH and all(c in _TOKEN_CHARS for c in value)


def request_id(account: str, token: str) -> str:
    """The public id of a request: its account and token."""
    return f"{account}.{token}"


def split_request_id(rid: str) -> tuple[str, str]:
    """(account, token) of a request id; ValueError when it is not one of ours."""
    account, sep, token = rid.partition(".")
    if not sep or not account or not is_token(token):
        raise ValueError(f"not a batchd request id: {rid!r}")
    return account, token


def webhook_id(token: str) -> str:
    """The Standard Webhooks `webhook-id` of a request's result: stable across retries."""
    return f"msg_{token}"


def key_digest(key: str) -> str:
    """The digest under which an idempotency key is stored (SHA-1 of its UTF-8)."""
    return hashlib.sha1(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class RequestKeys:
    """The keys of one request, in the order scripts declare them."""

    record: str
    params: str
    waiter: str
    done: str
    delivery: str
    letter: str

    def all(self) -> tuple[str, str, str, str, str, str]:
        return (self.record, self.params, self.waiter, self.done, self.delivery, self.letter)


#: How many keys `RequestKeys.all()` declares per request.
KEYS_PER_REQUEST = 6


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix. Methods taking `account` return keys in its hash slot."""

    prefix: str = "batchd"

    def tag(self, account: str) -> str:
        return f"{self.prefix}:{{{account}}}"

    # -- requests ---------------------------------------------------------------------------
    def request(self, account: str, token: str) -> str:
        """Hash: the live request record; once ended, a string: its result envelope."""
        return f"{self.tag(account)}:r:{token}"

    def params(self, account: str, token: str) -> str:
        """String: the request's params (compact JSON) until it ends (a dead one's: retention)."""
        return f"{self.tag(account)}:p:{token}"

    def done(self, account: str, token: str) -> str:
        """List: gets one element when a request that `wait` callers marked ends; they block
        on it."""
        return f"{self.tag(account)}:done:{token}"

    def waiter(self, account: str, token: str) -> str:
        """String with TTL: present while some `wait` caller blocks on this request."""
        return f"{self.tag(account)}:w:{token}"

    def letter(self, account: str, token: str) -> str:
        """Hash: what a dead request needs to be sent again (its live record's fields)."""
        return f"{self.tag(account)}:x:{token}"

    def request_keys(self, account: str, token: str) -> RequestKeys:
        return RequestKeys(*self.request_key_groups(account, (token,)))

    def request_key_groups(self, account: str, tokens: Iterable[str]) -> list[str]:
        """The six keys of `request_keys` for each token in turn, as one flat list."""
        t = self.tag(account)
        out: list[str] = []
        for token in tokens:
            out += (
                f"{t}:r:{token}",
                f"{t}:p:{token}",
                f"{t}:w:{token}",
                f"{t}:done:{token}",
                f"{t}:wh:{token}",
                f"{t}:x:{token}",
            )
        return out

    def idempotency(self, account: str, key_digest: str) -> str:
        """String with TTL: `<request id> <body digest>` stored under a producer's key."""
        return f"{self.tag(account)}:k:{key_digest}"

    def dead(self, account: str) -> str:
        """Sorted set: request ids that ended `dead`, scored by time (trimmed to retention)."""
        return f"{self.tag(account)}:dead"

    # -- lanes ------------------------------------------------------------------------------
    def pending(self, account: str, lane: str) -> str:
        """List: entries `<token> <framed size> <enqueued ms>` waiting, oldest at the head."""
        return f"{self.tag(account)}:q:{lane}"

    def lane_stats(self, account: str, lane: str) -> str:
        """Hash: `count` and `bytes` (framed) of the pending list."""
        return f"{self.tag(account)}:qs:{lane}"

    def lanes(self, account: str) -> str:
        """Set: lane ids of this account that have (or had) pending requests."""
        return f"{self.tag(account)}:lanes"

    def lane_betas(self, account: str) -> str:
        """Hash: beta-set id (as in a lane id) -> the comma-joined betas it stands for."""
        return f"{self.tag(account)}:betas"

    def lane_lock(self, account: str, lane: str) -> str:
        return f"{self.tag(account)}:qlock:{lane}"

    def quarantine(self, account: str) -> str:
        """List: pending entries set aside unsent (not batchd's, or their record not a hash)."""
        return f"{self.tag(account)}:quarantine"

    def flush(self, account: str) -> str:
        """Set: lane ids (or `*`, or a priority) a producer or operator asked to cut now."""
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

    def batch(self, account: str, batch_id: str) -> str:
        """String: the assembly that holds this batch (expires `retention` after it closes)."""
        return f"{self.tag(account)}:b:{batch_id}"

    def batches(self, account: str) -> str:
        """Sorted set: assemblies that made a batch, scored by when (trimmed to retention)."""
        return f"{self.tag(account)}:batches"

    def list_turn(self, account: str) -> str:
        """String with TTL: present while one replica's listing of the account's batches is
        recent, so replicas between them list once per interval."""
        return f"{self.tag(account)}:listed"

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

    # -- deadlines and the real-time route --------------------------------------------------
    def deadlines(self, account: str) -> str:
        """Sorted set: `<token> <lane>` of each pending request that has a deadline, scored by
        its deadline (ms); what the planner reads to cut, escalate or give up in time."""
        return f"{self.tag(account)}:dl"

    def deadline_batches(self, account: str) -> str:
        """Sorted set: assemblies holding requests with a deadline, scored by the earliest one
        (ms), until they close; the planner cancels a batch that can no longer make it."""
        return f"{self.tag(account)}:dlb"

    def durations(self, account: str) -> str:
        """List: how long the account's last batches took from cut to end (ms), newest first,
        capped (see `defaults.DURATION_SAMPLES`)."""
        return f"{self.tag(account)}:durations"

    def realtime_queue(self, account: str) -> str:
        """Sorted set: tokens of requests bound for the real-time Messages API, by when each is
        due (ms)."""
        return f"{self.tag(account)}:rtq"

    def realtime_sending(self, account: str) -> str:
        """Sorted set: tokens whose real-time send intent is written, by when the sender's
        lease on it runs out (ms); one left there past it is reconciled, never resent."""
        return f"{self.tag(account)}:rts"

    def realtime_window(self, account: str, minute: int) -> str:
        """Hash with TTL: `requests` and `tokens` the real-time route sent in that minute (since
        the epoch), so replicas share the configured per-minute limits."""
        return f"{self.tag(account)}:rtw:{minute}"

    def realtime_hold(self, account: str) -> str:
        """String with TTL: present while the API asked the account's real-time calls to wait
        (a 429's retry-after)."""
        return f"{self.tag(account)}:rthold"

    # -- replies bound for reply queues (each queue lives in its own slot) -------------------
    def reply_outbox(self, account: str) -> str:
        """List: `<seq> <token> <reply_to>` of ended requests whose envelope is due on a reply
        queue; drained in order into each queue (see `replies.drain`)."""
        return f"{self.tag(account)}:out"

    def reply_barrier(self, account: str) -> str:
        """String with TTL: written before a drain, so the WAIT after it covers every earlier
        write of the account's slot (see `Store.barrier`); its value means nothing."""
        return f"{self.tag(account)}:outbarrier"

    def reply_parked(self, account: str) -> str:
        """List: outbox entries whose queue refused them (a key of another type); retried."""
        return f"{self.tag(account)}:outpark"

    def reply_queue(self, name: str) -> str:
        """List: result envelopes for producers reading `reply_to=name`."""
        return f"{self.prefix}:reply:{{{name}}}"

    def reply_inflight(self, name: str, consumer: str) -> str:
        """List: envelopes a consumer has read but not acknowledged yet."""
        return f"{self.prefix}:reply:{{{name}}}:inflight:{consumer}"

    def reply_consumers(self, name: str) -> str:
        """Hash: consumer name -> ms of its last read, so `ack` knows who holds what."""
        return f"{self.prefix}:reply:{{{name}}}:consumers"

    def reply_cursor(self, name: str) -> str:
        """Hash: account -> the last outbox sequence number pushed onto this queue."""
        return f"{self.prefix}:reply:{{{name}}}:cursor"

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

    # -- counters ---------------------------------------------------------------------------
    def counters(self, account: str) -> str:
        """Hash: the account's monotonic counters: submitted, ended:<status>, retries,
        batches_created, batches_ended:<outcome>, and the outbox sequence."""
        return f"{self.tag(account)}:counters"

    def rate_limits(self, account: str) -> str:
        """Hash: scope (batches, messages, ...) -> JSON of what the API last said of the
        account's rate limit there."""
        return f"{self.tag(account)}:ratelimit"

    def counters_by_minute(self, account: str) -> str:
        """Hash: minute since the epoch -> JSON snapshot of `counters` taken in that minute."""
        return f"{self.tag(account)}:counters:m"

    def reply_queues(self, account: str) -> str:
        """Sorted set: reply queues this account's results went to, by last push (ms)."""
        return f"{self.tag(account)}:rqs"

    # -- the token ledger -------------------------------------------------------------------
    def ledger_hour(self, account: str, hour: int) -> str:
        """Hash: `<model>|<tag>|<lane>|<kind>` -> tokens (or requests, kind `n`) in that hour
        (hours since the epoch)."""
        return f"{self.tag(account)}:ledger:h:{hour}"

    def ledger_day(self, account: str, day: int) -> str:
        """Hash: as `ledger_hour`, for one day (days since the epoch)."""
        return f"{self.tag(account)}:ledger:d:{day}"

    def ledger_total(self, account: str) -> str:
        """Hash: the ledger's fields summed over every day folded in so far (for counters that
        outlive the day buckets), and `@folded`, the last day folded."""
        return f"{self.tag(account)}:ledger:total"

    def ledger_once(self, account: str, digest: str) -> str:
        """String with TTL: a real-time usage record already counted (a retry counts nothing)."""
        return f"{self.tag(account)}:ledger:once:{digest}"

    # -- budgets ----------------------------------------------------------------------------
    def budget_inflight(self, account: str) -> str:
        """Hash: assembly id -> JSON estimate (USD, in total and per tag) of a batch cut under
        a spend cap, until its results are in the ledger."""
        return f"{self.tag(account)}:budget:inflight"

    def budget_holds(self, account: str) -> str:
        """Hash with TTL: lane id -> JSON of the cap holding it (renewed while it holds)."""
        return f"{self.tag(account)}:budget:holds"

    def budget_closed(self, account: str) -> str:
        """Hash with TTL: `*` or `tag:<tag>` -> why new submits are refused (a cap is reached
        and `budgets.refuse_submits` is set)."""
        return f"{self.tag(account)}:budget:closed"

    def migrated(self) -> str:
        """String: the data layout version this Redis holds (see `migrate`)."""
        return f"{self.prefix}:layout"

    # -- process-wide (single-key commands only: no script touches these) --------------------
    def accounts(self) -> str:
        """Set: the accounts the daemon serves (producers refuse others)."""
        return f"{self.prefix}:accounts"

    def budget_lock(self) -> str:
        """String with TTL: the lease under which one replica checks a cut against the spend
        caps and reserves its estimate (caps may span accounts)."""
        return f"{self.prefix}:budget:lock"

    def processes(self) -> str:
        """Sorted set: `batchd run` processes by last heartbeat (ms)."""
        return f"{self.prefix}:procs"

    # -- layouts before this one (read only by `migrate`) -------------------------------------
    def legacy_params(self, account: str) -> str:
        """Hash: token -> params, one per account (layout 1)."""
        return f"{self.tag(account)}:p"

    def legacy_counters(self) -> str:
        return f"{self.prefix}:counters"

    def legacy_counters_by_minute(self) -> str:
        return f"{self.prefix}:counters:m"

    def legacy_batch_index(self) -> str:
        """Hash: batch id -> `<account> <assembly id>` (layout 1)."""
        return f"{self.prefix}:batches"

    def legacy_known_batches(self, account: str) -> str:
        return f"{self.tag(account)}:kb"
