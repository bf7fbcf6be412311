"""The chaos run's checker: its own record of every acknowledged submit and of every result seen.

It trusts nothing batchd keeps about itself: what producers were told (tickets), what reached
them (reply queues, waits, webhooks) and what the emulator saw (batches, billing) decide.
"""

from __future__ import annotations

import threading
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
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
    # -- deadlines and the real-time route --------------------------------------------------
    #: Requests submitted with a deadline; how many met it; the misses by reason.
    with_deadline: int = 0
    deadlines_met: int = 0
    deadlines_missed: Counter[str] = field(default_factory=Counter)
    #: Deadline requests whose result did not say (truthfully) whether it was met, and why not.
    deadlines_unreported: list[str] = field(default_factory=list)
    #: Succeeded results by the route that produced them (the envelope's `mode`).
    by_mode: Counter[str] = field(default_factory=Counter)
    realtime_billed: int = 0
    #: Requests ended errored `realtime_unanswered`: each may have been billed once, unanswered.
    unanswered: int = 0
    #: custom_ids the emulator billed in a batch and in real time; twice in real time.
    billed_both_routes: list[str] = field(default_factory=list)
    realtime_double_billed: list[str] = field(default_factory=list)
    #: Requests ended errored because batchd took their batch (or its results) for gone: with
    #: transient 404s only (the nemesis never deletes a batch), every one is a broken promise.
    errored_by_404: list[str] = field(default_factory=list)

    def violations(self) -> dict[str, int]:
        return {
            "lost": len(self.lost),
            "duplicates": len(self.duplicates),
            "unexpected results": len(self.unexpected),
            "inconsistent statuses": len(self.inconsistent),
            "bad webhook signatures": self.bad_signatures,
            "double-submitted": self.double_submitted,
            "double-billed": self.double_billed,
            "billed on both routes": len(self.billed_both_routes),
            "billed twice in real time": len(self.realtime_double_billed),
            "errored by a transient 404": len(self.errored_by_404),
            "deadlines unreported": len(self.deadlines_unreported),
        }

    @property
    def batch_price_share(self) -> float:
        """Of the requests billed, the share billed at the batch price."""
        total = self.billed + self.realtime_billed
        return self.billed / total if total else 1.0

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
        # deadlines given at submit (epoch s), and what each result said of route and deadline
        self.deadlines: dict[str, float] = {}
        self.outcomes: dict[str, Outcome] = {}

    # -- what producers were told ----------------------------------------------------------
    def acknowledge(self, n: int, request_id: str, channel: str, queue: str | None) -> None:
        with self._lock:
            self.expected[request_id] = Expected(n, request_id, channel, queue)

    def deadline(self, request_id: str, deadline: float) -> None:
        """The acknowledged request was submitted with this deadline (epoch seconds)."""
        with self._lock:
            self.deadlines[request_id] = deadline

    # -- what reached them ----------------------------------------------------------------
    def envelope(self, request_id: str, env: dict[str, Any]) -> None:
        """What a delivered result said of its route and deadline (any channel)."""
        with self._lock:
            self.outcomes[request_id] = Outcome.of(env)

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
        v.realtime_billed = int(audit.get("realtime_billed", 0))
        v.billed_both_routes = list(audit.get("billed_both_routes", []))
        v.realtime_double_billed = list(audit.get("realtime_double_billed", []))
        self._judge_deadlines(v)
        # Only succeeded results are billed, once, on one route; a real-time call that got no
        # answer may have been billed too (and says so): did the API bill more than that?
        v.double_billed = max(
            0, v.billed + v.realtime_billed - v.statuses["succeeded"] - v.unanswered
        )
        return v

    def _judge_deadlines(self, v: Verdict) -> None:
        """Every deadline met or reported missed with its reason, truthfully; none invented."""
        with self._lock:
            for rid, out in self.outcomes.items():
                if out.status == "succeeded":
                    v.by_mode[out.mode] += 1
                if out.error_type == "realtime_unanswered":
                    v.unanswered += 1
                if out.error_type == "not_found_error":
                    v.errored_by_404.append(rid)
                deadline = self.deadlines.get(rid)
                if deadline is None:
                    if out.has_deadline:
                        v.deadlines_unreported.append(f"{rid}: a deadline it was never given")
                    continue
                v.with_deadline += 1
                if out.met is True and out.status == "succeeded" and out.ended_at <= deadline:
                    v.deadlines_met += 1
                elif out.met is False and out.missed:
                    v.deadlines_missed[out.missed] += 1
                else:
                    v.deadlines_unreported.append(
                        f"{rid}: {out.status}, deadline_met {out.met}, missed {out.missed!r}"
                    )

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


@dataclass(frozen=True)
class Outcome:
    """What one result envelope said of its route and deadline."""

    status: str
    mode: str
    has_deadline: bool
    met: bool | None
    missed: str | None
    ended_at: float
    error_type: str | None

    @classmethod
    def of(cls, env: dict[str, Any]) -> Outcome:
        result = env.get("result") or {}
        err = result.get("error") if isinstance(result, dict) else None
        if isinstance(err, dict) and isinstance(err.get("error"), dict):
            err = err["error"]
        ended = env.get("ended_at") or ""
        try:
            ended_at = datetime.fromisoformat(ended.replace("Z", "+00:00")).timestamp()
        except ValueError:
            ended_at = float("inf")
        return cls(
            status=str(env.get("status")),
            mode=str(env.get("mode", "batch")),
            has_deadline="deadline" in env,
            met=env.get("deadline_met"),
            missed=env.get("deadline_missed"),
            ended_at=ended_at,
            error_type=err.get("type") if isinstance(err, dict) else None,
        )
