"""The chaos run's checker: its own record of every acknowledged submit and of every result seen.

It trusts nothing batchd keeps about itself: what producers were told (tickets), what reached
them (reply queues, waits, webhooks) and what the emulator saw (batches, billing) decide.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

#: How a request's producer expects its result.
CHANNELS = ("reply", "wait", "webhook")


@dataclass
class Expected:
    """One acknowledged submit."""

    n: int
    request_id: str
    channel: str
    queue: str | None = None


@dataclass
class Verdict:
    """What the checker concluded; every count under `violations` must be zero."""

    acknowledged: int = 0
    by_channel: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    lost: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    redelivered: int = 0
    unexpected: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    webhook_repeats: int = 0
    bad_signatures: int = 0
    double_submitted: int = 0
    double_billed: int = 0
    billed: int = 0
    batches_created: int = 0
    requests_sent: int = 0
    distinct_sent: int = 0

    def violations(self) -> dict[str, int]:
        return {
            "lost": len(self.lost),
            "duplicates": len(self.duplicates),
            "unexpected results": len(self.unexpected),
            "inconsistent statuses": len(self.inconsistent),
            "bad webhook signatures": self.bad_signatures,
            "double-submitted": self.double_submitted,
            "double-billed": self.double_billed,
        }

    @property
    def ok(self) -> bool:
        return not any(self.violations().values())


class Checker:
    """Thread-safe record of acknowledgements and of results as producers receive them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.expected: dict[str, Expected] = {}
        # reply queue: deliveries per id, and whether an ack of the latest one is known to hold
        self.replies: dict[str, list[str]] = defaultdict(list)
        self.reply_queue_of: dict[str, set[str]] = defaultdict(set)
        self.acked: set[str] = set()
        self.after_ack: list[str] = []
        self.redelivered = 0
        self.waits: dict[str, str] = {}
        # webhooks: (webhook-id, body) of each delivery answered 2xx, per request id
        self.webhooks: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        self.webhook_status: dict[str, str] = {}
        self.refused: dict[str, list[str]] = defaultdict(list)
        self.bad_signatures = 0
        self._done = threading.Condition(self._lock)
        self._seen: set[str] = set()

    # -- what producers were told ----------------------------------------------------------
    def acknowledge(self, n: int, request_id: str, channel: str, queue: str | None) -> None:
        with self._lock:
            self.expected[request_id] = Expected(n, request_id, channel, queue)

    # -- what reached them ----------------------------------------------------------------
    def reply(self, queue: str, request_id: str, status: str) -> None:
        """A reply-queue delivery, before its acknowledgement."""
        with self._lock:
            if request_id in self.acked:
                # Read again after an acknowledgement that held: the queue held it twice.
                self.after_ack.append(request_id)
            elif self.replies.get(request_id):
                self.redelivered += 1  # its earlier acknowledgement was lost with Redis
            self.replies[request_id].append(status)
            self.reply_queue_of[request_id].add(queue)
            self._mark(request_id)

    def reply_acked(self, request_id: str) -> None:
        with self._lock:
            self.acked.add(request_id)

    def waited(self, request_id: str, status: str) -> None:
        with self._lock:
            self.waits[request_id] = status
            self._mark(request_id)

    def webhook(self, request_id: str, webhook_id: str, body: bytes, status: str) -> None:
        with self._lock:
            self.webhooks[request_id].append((webhook_id, body))
            self.webhook_status[request_id] = status
            self._mark(request_id)

    def webhook_refused(self, request_id: str, webhook_id: str) -> None:
        """A delivery the receiver answered with an error on purpose: it must come again."""
        with self._lock:
            self.refused[request_id].append(webhook_id)

    def bad_signature(self) -> None:
        with self._lock:
            self.bad_signatures += 1

    def _mark(self, request_id: str) -> None:
        self._seen.add(request_id)
        self._done.notify_all()

    # -- progress -------------------------------------------------------------------------
    def outstanding(self) -> list[str]:
        """Acknowledged requests whose producer has not seen a result yet."""
        with self._lock:
            return [rid for rid in self.expected if rid not in self._seen]

    def wait_all_seen(self, timeout: float) -> bool:
        import time

        deadline = time.monotonic() + timeout
        with self._lock:
            while any(rid not in self._seen for rid in self.expected):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._done.wait(min(left, 1.0))
            return True

    def seen_count(self) -> int:
        with self._lock:
            return len(self._seen & set(self.expected))

    # -- the verdict ----------------------------------------------------------------------
    def verdict(
        self,
        leftovers: dict[str, list[str]],
        states: dict[str, str],
        audit: dict[str, Any],
    ) -> Verdict:
        """Judge the run.

        `leftovers`: ids still in each reply queue or in-flight list at the end; `states`: the
        state `get` reports per acknowledged id (a cross-check only); `audit`: the emulator's
        audit of the workspace.
        """
        v = Verdict()
        with self._lock:
            v.acknowledged = len(self.expected)
            for rid, exp in self.expected.items():
                v.by_channel[exp.channel] += 1
                status = self._status(exp)
                if status is None:
                    v.lost.append(rid)
                    continue
                v.statuses[status] += 1
                if states.get(rid) != status:
                    v.inconsistent.append(
                        f"{rid}: producer saw {status}, get says {states.get(rid)}"
                    )
                if exp.channel == "reply" and self.reply_queue_of[rid] != {exp.queue}:
                    v.inconsistent.append(f"{rid}: arrived on {sorted(self.reply_queue_of[rid])}")
                if exp.channel == "webhook":
                    deliveries = self.webhooks[rid]
                    # Every attempt, refused ones included, must carry the same webhook-id.
                    ids = {wid for wid, _ in deliveries} | set(self.refused.get(rid, []))
                    bodies = {body for _, body in deliveries}
                    v.webhook_repeats += len(deliveries) - 1 + len(self.refused.get(rid, []))
                    if len(ids) > 1 or len(bodies) > 1:
                        v.duplicates.append(
                            f"{rid}: webhooks with {len(ids)} ids, {len(bodies)} bodies"
                        )
            v.duplicates.extend(f"{rid}: read again after its ack" for rid in self.after_ack)
            for name, left in leftovers.items():
                for rid in left:
                    if rid in self.replies:
                        v.duplicates.append(f"{rid}: still in {name} after it was delivered")
                    else:
                        v.lost.append(f"{rid}: left unread in {name}")
            seen = set(self.replies) | set(self.waits) | set(self.webhooks)
            v.unexpected = sorted(seen - set(self.expected))
            v.redelivered = self.redelivered
            v.bad_signatures = self.bad_signatures
        v.double_submitted = len(audit.get("double_submitted", []))
        v.billed = int(audit.get("billed", 0))
        v.batches_created = int(audit.get("batches_created", 0))
        v.requests_sent = int(audit.get("requests", 0))
        v.distinct_sent = int(audit.get("custom_ids", 0))
        # Only succeeded results are billed: the API billed more than producers got back?
        v.double_billed = max(0, v.billed - v.statuses["succeeded"])
        return v

    def _status(self, exp: Expected) -> str | None:
        rid = exp.request_id
        if exp.channel == "reply":
            got = self.replies.get(rid)
            if not got:
                return None
            if len(set(got)) > 1:
                return "inconsistent:" + "/".join(sorted(set(got)))
            return got[0]
        if exp.channel == "wait":
            return self.waits.get(rid)
        if not self.webhooks.get(rid):
            return None
        return self.webhook_status.get(rid)
