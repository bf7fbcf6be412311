"""What one batchd process holds: settings, its store, API clients, rq queues, leases.

Stage jobs find it with `current()`; `batchd run` and its workers build it once at start.
Also here: leases (a key with a TTL, renewed from a thread) and the crash points tests use.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import redis
from rq import Queue
from rq.job import Job, JobStatus

from batchd.api import BatchesClient
from batchd.api.ratelimit import RateLimit
from batchd.defaults import JOB_TIMEOUTS
from batchd.errors import BatchdError, RedisUnavailableError, StoreError
from batchd.observe import metrics
from batchd.settings import Settings
from batchd.store import Durability, Keys, Store, connect, locks, new_token
from batchd.store import assemblies as asm_store
from batchd.store import counters as counter_store

#: The stage queues, most urgent first: a worker takes fan-out work before new submissions.
STAGES = ("fanout", "submit", "poll")


class Runtime:
    """The per-process context of the daemon's loops and stage jobs."""

    def __init__(self, settings: Settings, connection: Any = None) -> None:
        if settings.redis_url is None and connection is None:
            raise ValueError("the runtime needs a Redis URL")
        self.settings = settings
        self.redis = connection if connection is not None else connect(settings.redis_url or "")
        self.keys = Keys(settings.prefix)
        r = settings.redis
        self.store = Store(
            self.redis,
            self.keys,
            durability=Durability(r.wait_replicas, int(r.wait_timeout * 1000)),
        )
        rq_url = settings.redis.rq_url
        self.rq_redis: redis.Redis = (
            connect(rq_url) if rq_url else self.redis if not self.store.cluster else None  # type: ignore[assignment]
        )
        self.identity = f"{os.uname().nodename}:{os.getpid()}:{new_token()[-6:]}"
        self._api: dict[str, BatchesClient] = {}
        self._limits_noted: dict[tuple[str, str], float] = {}
        self._queues: dict[str, Queue] = {}
        self._lock = threading.Lock()

    def api(self, account: str) -> BatchesClient:
        with self._lock:
            client = self._api.get(account)
            if client is None:
                client = BatchesClient.from_settings(
                    self.settings,
                    account,
                    on_call=metrics.api_call,
                    on_rate_limit=lambda limit: self._note_rate_limit(account, limit),
                )
                self._api[account] = client
            return client

    def _note_rate_limit(self, account: str, limit: RateLimit) -> None:
        """Keep what the API says of the account's rate limits, at most once a second per
        scope unless it refused a call (status and /metrics read it from Redis)."""
        key = (account, limit.scope)
        now = time.monotonic()
        if limit.status != 429 and now - self._limits_noted.get(key, 0.0) < 1.0:
            return
        self._limits_noted[key] = now
        window = limit.requests
        reset = window.reset if window is not None else None
        try:
            self.store.read(
                counter_store.note_rate_limit(
                    self.keys,
                    account,
                    limit.scope,
                    window.limit if window is not None else None,
                    window.remaining if window is not None else None,
                    int(reset.timestamp() * 1000) if reset is not None else None,
                    limit.status,
                    limit.retry_after,
                    self.now_ms(),
                )
            )
        except BatchdError:
            pass  # a view for operators; the call itself is what matters

    def queue(self, stage: str) -> Queue:
        q = self._queues.get(stage)
        if q is None:
            q = Queue(f"{self.settings.prefix}-{stage}", connection=self.rq_redis)
            self._queues[stage] = q
        return q

    def queue_names(self) -> list[str]:
        return [f"{self.settings.prefix}-{s}" for s in STAGES]

    def now_ms(self) -> int:
        """Redis's clock: the one every replica schedules and compares by."""
        return self.store.now_ms()

    def enqueue(self, stage: str, account: str, asm: str, delay: float = 0.0) -> None:
        """Run the assembly's next stage now, or after `delay` seconds.

        A delayed stage is only a due time in the account's live-assembly index: the sweeper
        queues its job when it is due. A stage due now gets an rq job at once, whose id the
        assembly keeps, so the sweeper queues no second one while it waits or runs.
        """
        now = self.now_ms()
        if delay > 0:
            self.store.read(asm_store.set_due(self.keys, account, asm, now + int(delay * 1000)))
            return
        job_id = f"{stage}-{account}-{asm}-{new_token()[-8:]}"
        self.store.read(
            asm_store.queued(
                self.keys, account, asm, job_id, now + int(self.settings.run.stale_after * 1000)
            )
        )
        try:
            self.queue(stage).enqueue(
                "batchd.stages.run_stage",
                stage,
                account,
                asm,
                job_id=job_id,
                job_timeout=JOB_TIMEOUTS[stage],
                result_ttl=0,
                failure_ttl=86400,
                description=f"{stage} {account}/{asm}",
            )
        except redis.RedisError as exc:
            # No job: the sweeper finds none waiting at the check time and queues the stage.
            raise RedisUnavailableError(
                f"cannot queue the {stage} stage on rq's Redis ({exc}); is redis.rq_url "
                "(BATCHD_REDIS__RQ_URL) right?"
            ) from exc

    def job_status(self, job_id: str) -> str | None:
        """The status rq has for a stage job (None when rq no longer has it)."""
        try:
            job = Job.fetch(job_id, connection=self.rq_redis)
        except Exception:  # no such job (or not decodable): rq no longer runs it
            return None
        status = job.get_status(refresh=False)
        return status.value if isinstance(status, JobStatus) else str(status)

    def job_waiting(self, job_id: str) -> bool:
        """Whether a stage job is still waiting in rq's queue for a worker.

        Its status alone does not say: a worker that took the job and lost rq's Redis before
        marking it started leaves it `queued` and in no queue, never to run.
        """
        try:
            job = Job.fetch(job_id, connection=self.rq_redis)
            status = job.get_status(refresh=False)
            if status in (JobStatus.DEFERRED, JobStatus.SCHEDULED):
                return True
            if status is not JobStatus.QUEUED:
                return False
            return Queue(job.origin, connection=self.rq_redis).get_job_position(job_id) is not None
        except Exception:  # no such job (or not decodable): rq no longer runs it
            return False

    def close(self) -> None:
        for client in self._api.values():
            client.close()
        self.redis.close()
        if self.rq_redis is not None and self.rq_redis is not self.redis:
            self.rq_redis.close()


_current: Runtime | None = None


def install(rt: Runtime) -> Runtime:
    global _current
    _current = rt
    return rt


def current() -> Runtime:
    """The process's runtime; a worker builds it from settings on first use."""
    global _current
    if _current is None:
        _current = Runtime(Settings.load())
    return _current


@dataclass
class Lease:
    """A Redis key held with a TTL and renewed from a thread until released.

    `due` names an assembly whose due time moves with each renewal, so the sweeper sees the
    stage as running while the lease lives, and overdue within one lease after a crash.
    """

    rt: Runtime
    key: str
    token: str
    ttl_ms: int
    due: tuple[str, str] | None = None
    lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        def renew() -> None:
            while not self._stop.wait(self.ttl_ms / 3000):
                try:
                    ok = self.rt.store.run(locks.renew(self.key, self.token, self.ttl_ms))
                    if ok and self.due is not None:
                        self._push_due()
                except BatchdError:
                    continue  # Redis away for a moment; the TTL still covers us
                if not ok:
                    self.lost.set()
                    return

        if self.due is not None:
            self._push_due()
        self._thread = threading.Thread(target=renew, name=f"lease {self.key}", daemon=True)
        self._thread.start()

    def _push_due(self) -> None:
        assert self.due is not None
        account, asm = self.due
        due = self.rt.now_ms() + self.ttl_ms
        self.rt.store.read(asm_store.set_due(self.rt.keys, account, asm, due, only_if_live=True))

    def held(self) -> bool:
        """True while the key still holds our token (checked in Redis, not from memory)."""
        if self.lost.is_set():
            return False
        return self.rt.store.read(locks.holder(self.key)) == self.token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        try:
            self.rt.store.run(locks.release(self.key, self.token))
        except (BatchdError, StoreError):
            pass  # it expires by itself


@contextmanager
def lease(
    rt: Runtime, key: str, token: str | None = None, due: tuple[str, str] | None = None
) -> Iterator[Lease | None]:
    """Hold `key` for the duration of the block, or yield None when someone else holds it."""
    token = token or rt.identity + ":" + new_token()
    ttl = int(rt.settings.run.lease * 1000)
    if not rt.store.read(locks.acquire(key, token, ttl)):
        yield None
        return
    held = Lease(rt, key, token, ttl, due)
    held.start()
    try:
        yield held
    finally:
        held.release()


def jittered(seconds: float, jitter: float = 0.1) -> float:
    return max(0.0, seconds * (1 + random.uniform(-jitter, jitter)))


def crash_point(name: str) -> None:
    """Test seam: with BATCHD_CRASH_AT=name, SIGKILL this process group once, right here.

    BATCHD_CRASH_MARKER names a file created at the crash, so a restarted daemon goes on.
    """
    if os.environ.get("BATCHD_CRASH_AT") != name:
        return
    marker = os.environ.get("BATCHD_CRASH_MARKER")
    if marker:
        if os.path.exists(marker):
            return
        with open(marker, "w") as fh:
            fh.write(f"{name} {os.getpid()} {time.time()}\n")
    os.killpg(os.getpgid(0), signal.SIGKILL)
