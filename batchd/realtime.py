"""The real-time route's sender (the "realtime" role of `batchd run`): requests that a deadline
took off the batch route go through the Messages API, each call made at most once.

For each request RT_CLAIM writes a send intent, which reaches the replicas (WAIT) before the
call is made; the call carries the request's token in `batchd-custom-id` (its batch custom_id
too). The answer ends the request with the same envelope as a batch's, `"mode": "realtime"`,
its usage in the ledger at list prices. An error answer billed nothing: the request goes back
on the queue (429, 5xx, 529: up to `realtime.max_attempts` calls) or ends with the error. A
call that left and got no answer cannot be looked up and may have been billed: the request ends
`errored` (`realtime_unanswered`) and is never sent again; so does one whose sender died
mid-call, found when its lease runs out. Only a call that never left (no connection) is made
again. Requests per minute, tokens per minute and the API's retry-after hold every replica.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson

from batchd.aggregate import budgets
from batchd.budgets import applies
from batchd.defaults import (
    ESCALATE_CHUNK,
    ESTIMATE_BYTES_PER_TOKEN,
    ESTIMATE_UNKNOWN_MAX_TOKENS,
    PAUSE_SECONDS,
    REALTIME_BACKOFF,
    REALTIME_BACKOFF_MAX,
    REALTIME_CLAIM_CHUNK,
    REALTIME_IDLE,
)
from batchd.errors import (
    APIConnectionError,
    APIError,
    APIResponseError,
    APIStatusError,
    BatchdError,
    DurabilityError,
)
from batchd.logs import get_logger
from batchd.runtime import Runtime, crash_point
from batchd.settings import Settings
from batchd.stages.ending import error_result
from batchd.stages.fanout import usage_of
from batchd.store import new_token
from batchd.store import realtime as rt_store
from batchd.store import replies as reply_store
from batchd.store.budgets import parse_estimate
from batchd.store.realtime import Job, Settle

log = get_logger("batchd.realtime")

#: The header naming the request on a real-time call: the custom_id its batches use too, so the
#: API's side (and the emulator's audit) can tell one request billed on both routes.
CUSTOM_ID_HEADER = "batchd-custom-id"
#: Statuses of an answer the API gives without running the call, worth another attempt.
RETRYABLE = frozenset({408, 409, 429})
#: Statuses that mean the account's key is refused: held as long as a refused batch create is.
KEY_REFUSED = frozenset({401, 402, 403})
#: Seconds a request held at a spend cap waits before it is looked at again.
CAPPED_WAIT = 30.0
#: Seconds between reads of the spend caps.
CAPS_REFRESH = 5.0
#: Settlement attempts of one answer while Redis is away (its lease expiring ends it
#: `realtime_unanswered` if none lands).
SETTLE_TRIES = 5


def unanswered(message: str) -> bytes:
    """The result of a request whose real-time call may have been billed without an answer."""
    return error_result(
        "realtime_unanswered",
        f"{message}; the call may have been billed, and the API cannot be asked, so it is not "
        "sent again",
    )


def api_error_result(exc: APIError) -> bytes:
    """An error answer as a batch's errored result: the API's error object when it sent one."""
    body = exc.body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(body, dict) and body.get("type") == "error" and isinstance(error, dict):
        return orjson.dumps({"type": "errored", "error": body})
    return error_result(exc.error_type or "api_error", exc.message)


def tokens_of(job: Job) -> int:
    """What a call counts against tokens per minute: input estimated from its size, and its
    max_tokens."""
    size = len(job.params or b"")
    max_tokens = parse_estimate(job.estimate)[0]
    out = max_tokens if max_tokens is not None else ESTIMATE_UNKNOWN_MAX_TOKENS
    return size // ESTIMATE_BYTES_PER_TOKEN + out


def backoff(attempt: int) -> float:
    return float(min(REALTIME_BACKOFF_MAX, REALTIME_BACKOFF * 2 ** max(0, attempt - 1)))


class Sender:
    """Claims due requests, sends them from worker threads, keeps their leases, settles them,
    and reconciles the leases of senders that died."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cfg = settings.realtime
        self._work: queue.Queue[tuple[str, Job] | None] = queue.Queue()
        self._lock = threading.Lock()
        # (account, token) -> intent id, of every call this process has in hand
        self._held: dict[tuple[str, str], str] = {}
        self._renewed = 0.0
        self._caps: tuple[float, list[Any]] = (0.0, [])
        self.lease_ms = int(settings.run.lease * 1000)

    # -- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event, beat: Callable[[str], None] | None = None) -> None:
        """Send until `stop`; then let the calls in hand finish within `run.grace`."""
        rt = Runtime(self.settings)
        workers = [
            threading.Thread(target=self._worker, args=(rt,), name=f"realtime-{i}", daemon=True)
            for i in range(self.cfg.concurrency)
        ]
        for w in workers:
            w.start()
        try:
            while not stop.is_set():
                if beat is not None:
                    beat("realtime")
                busy = False
                try:
                    busy = self.step(rt)
                except BatchdError as exc:
                    log.warning("real-time step failed; retrying", error=str(exc))
                    stop.wait(1.0)
                except Exception:
                    log.exception("real-time step failed; continuing")
                    stop.wait(1.0)
                stop.wait(REALTIME_IDLE if busy else self.settings.run.tick)
        finally:
            self._drain(rt)
            for _ in workers:
                self._work.put(None)
            rt.close()

    def _drain(self, rt: Runtime) -> None:
        """At shutdown: keep the leases of the calls in hand while they finish (up to the
        grace period); any still running after it is reconciled by another replica."""
        deadline = time.monotonic() + self.settings.run.grace
        while self.in_hand() and time.monotonic() < deadline:
            try:
                self._renew(rt)
            except BatchdError:
                pass
            time.sleep(0.1)

    def in_hand(self) -> int:
        with self._lock:
            return len(self._held)

    def step(self, rt: Runtime) -> bool:
        """Renew leases, reconcile expired ones, claim what is due; True when it claimed."""
        self._renew(rt)
        claimed = False
        now = rt.now_ms()
        for account in self.settings.accounts:
            self._reconcile(rt, account, now)
            claimed = self._claim(rt, account, now) or claimed
        return claimed

    def run_once(self, rt: Runtime) -> int:
        """One step, whose calls are made here one after the other (for tests and tools);
        returns how many were made."""
        self.step(rt)
        made = 0
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                return made
            if item is not None:
                self._handle(rt, *item)
                made += 1

    # -- leases ----------------------------------------------------------------------------------

    def _renew(self, rt: Runtime) -> None:
        if time.monotonic() - self._renewed < self.settings.run.lease / 3:
            return
        self._renewed = time.monotonic()
        with self._lock:
            held = list(self._held)
        by_account: dict[str, list[str]] = {}
        for account, token in held:
            by_account.setdefault(account, []).append(token)
        until = rt.now_ms() + self.lease_ms
        for account, tokens in by_account.items():
            rt.store.read(rt_store.renew(rt.keys, account, tokens, until))

    def _reconcile(self, rt: Runtime, account: str, now: int) -> None:
        """Sends whose sender's lease ran out (it died, or stalled past it): they may have been
        billed, so they end `realtime_unanswered`."""
        with self._lock:
            mine = {t for a, t in self._held if a == account}
        gone = [
            t
            for t in rt.store.read(rt_store.expired(rt.keys, account, now, ESCALATE_CHUNK))
            if t not in mine
        ]
        if not gone:
            return
        result = unanswered("its sender stopped before an answer was recorded")
        items = [Settle(t, "expire", status="errored", result=result, outcome="unanswered")
                 for t in gone]  # fmt: skip
        settled = self._settle(rt, account, items)
        if settled:
            log.warning(
                "real-time sends without a recorded answer ended errored (never resent)",
                account=account,
                requests=settled,
            )

    # -- claiming -------------------------------------------------------------------------------

    def _capped(self, rt: Runtime, account: str, tag: str | None) -> bool:
        """Whether a reached spend cap covers this account (and tag; None: any cap of the
        account as a whole)."""
        caps = budgets(rt)
        if caps is None or not caps.covers(account):
            return False
        at, reached = self._caps
        if time.monotonic() - at > CAPS_REFRESH:
            reached = [s.cap for s in caps.standings(rt.now_ms()) if s.reached]
            self._caps = (time.monotonic(), reached)
        if tag is None:
            return any(c.account in (None, account) and c.tag is None for c in reached)
        return any(applies(c, account, tag) for c in reached)

    def _claim(self, rt: Runtime, account: str, now: int) -> bool:
        free = self.cfg.concurrency - self.in_hand()
        if free <= 0:
            return False
        look = rt.store.read(
            rt_store.outlook(rt.keys, account, now, min(free, REALTIME_CLAIM_CHUNK))
        )
        if not look.due or look.hold_ms > 0:
            return False
        if self.cfg.requests_per_minute:
            free = min(free, self.cfg.requests_per_minute - look.requests)
        if self.cfg.tokens_per_minute and look.tokens >= self.cfg.tokens_per_minute:
            free = 0
        if free <= 0 or self._capped(rt, account, None):
            return False
        intent = f"{rt.identity}:{new_token()}"
        call = rt_store.claim(rt.keys, account, look.due[:free], intent, self.lease_ms)
        try:
            jobs = rt.store.durable(call)
        except BatchdError as exc:
            # Not on the replicas a failover would promote (DurabilityError), or no answer from
            # Redis: the intents may stand, and nothing was sent, so whatever it took goes back.
            why = "not on the replicas yet" if isinstance(exc, DurabilityError) else "unknown"
            log.warning(f"real-time intent {why}; holding", error=str(exc))
            back = [Settle(t, "release", intent, due_ms=now, outcome="released")
                    for t in look.due[:free]]  # fmt: skip
            self._settle(rt, account, back)
            return False
        if not jobs:
            return False
        rt.store.read(
            rt_store.count_sent(rt.keys, account, now, len(jobs), sum(map(tokens_of, jobs)))
        )
        capped = {j.token for j in jobs if j.tag and self._capped(rt, account, j.tag)}
        if capped:
            due = now + int(CAPPED_WAIT * 1000)
            self._settle(rt, account, [Settle(t, "release", intent, due_ms=due, outcome="capped")
                                       for t in sorted(capped)])  # fmt: skip
        sending = [j for j in jobs if j.token not in capped]
        with self._lock:
            for j in sending:
                self._held[(account, j.token)] = intent
        for j in sending:
            self._work.put((intent, j))
        return True

    # -- sending --------------------------------------------------------------------------------

    def _worker(self, rt: Runtime) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            self._handle(rt, *item)

    def _handle(self, rt: Runtime, intent: str, job: Job) -> None:
        try:
            self._send(rt, intent, job)
        except Exception:
            # Its lease runs out and it is reconciled: never sent twice.
            log.exception("real-time send failed", account=job.account, token=job.token)
        finally:
            with self._lock:
                self._held.pop((job.account, job.token), None)

    def _send(self, rt: Runtime, intent: str, job: Job) -> None:
        bound = log.bind(account=job.account, request_id=f"{job.account}.{job.token}")
        crash_point("after_realtime_intent")
        if job.params is None:
            missing = error_result("rejected", "the request's stored params are missing")
            settle = Settle(job.token, "end", intent, "rejected", result=missing,
                            outcome="rejected")  # fmt: skip
            self._settle(rt, job.account, [settle])
            return
        try:
            answer = rt.api(job.account).messages_create(
                job.params,
                betas=job.betas or None,
                extra_headers={CUSTOM_ID_HEADER: job.token},
                timeout=self.cfg.timeout,
                retries=False,
            )
        except APIStatusError as exc:
            settle = self._refused(rt, intent, job, exc)
        except APIConnectionError as exc:
            if exc.unsent and job.attempts < self.cfg.max_attempts:
                due = rt.now_ms() + int(backoff(job.attempts) * 1000)
                settle = Settle(job.token, "retry", intent, due_ms=due,
                                result=api_error_result(exc), outcome="unsent")  # fmt: skip
            elif exc.unsent:
                settle = Settle(job.token, "end", intent, "errored",
                                result=api_error_result(exc), outcome="unsent")  # fmt: skip
            else:
                bound.warning("real-time call got no answer; it is not sent again", error=str(exc))
                settle = Settle(job.token, "end", intent, "errored",
                                result=unanswered(f"the call got no answer ({exc.message})"),
                                outcome="unanswered")  # fmt: skip
        except APIResponseError as exc:
            # A 2xx whose body is not a Message: billed, and unreadable.
            settle = Settle(job.token, "end", intent, "errored",
                            result=error_result("realtime_unreadable",
                                                f"the API's answer could not be read: {exc}"),
                            outcome="unreadable")  # fmt: skip
        else:
            crash_point("after_realtime_answer")
            result = {"type": "succeeded", "message": answer.message}
            settle = Settle(job.token, "end", intent, "succeeded", result=orjson.dumps(result),
                            usage=usage_of(result), outcome="succeeded")  # fmt: skip
        self._settle(rt, job.account, [settle])

    def _refused(self, rt: Runtime, intent: str, job: Job, exc: APIStatusError) -> Settle:
        """An error answer: the call billed nothing. Again later, or the end with that error."""
        status = exc.status or 0
        again = status in RETRYABLE or status >= 500 or status in KEY_REFUSED
        if again and job.attempts < self.cfg.max_attempts:
            wait = exc.retry_after or backoff(job.attempts)
            if status in KEY_REFUSED:
                wait = max(wait, PAUSE_SECONDS)
                log.error("the API refused the account's key for a real-time call",
                          account=job.account, status=status)  # fmt: skip
            if status == 429:
                rt.store.read(rt_store.hold(rt.keys, job.account, int(wait * 1000)))
            due = rt.now_ms() + int(wait * 1000)
            return Settle(job.token, "retry", intent, due_ms=due, result=api_error_result(exc),
                          outcome="retried")  # fmt: skip
        return Settle(job.token, "end", intent, "errored", result=api_error_result(exc),
                      outcome="errored")  # fmt: skip

    def _settle(self, rt: Runtime, account: str, items: list[Settle]) -> int:
        """Apply settlements (trying again while Redis is away); how many applied."""
        settled = 0
        retention = int(self.settings.retention * 1000)
        for i in range(0, len(items), ESCALATE_CHUNK):
            part = items[i : i + ESCALATE_CHUNK]
            for attempt in range(SETTLE_TRIES):
                try:
                    done, replies = rt.store.run(
                        rt_store.settle(
                            rt.keys, account, part, retention_ms=retention, now_ms=rt.now_ms()
                        )
                    )
                except BatchdError as exc:
                    if attempt == SETTLE_TRIES - 1:
                        log.error("real-time outcome not recorded", error=str(exc))
                        break
                    time.sleep(0.2 * (attempt + 1))
                    continue
                settled += done
                if replies:
                    reply_store.drain_all(rt.store, account)
                break
        return settled


def run(settings: Settings, stop: threading.Event, beat: Callable[[str], None]) -> None:
    """The "realtime" role's thread."""
    Sender(settings).run(stop, beat)
