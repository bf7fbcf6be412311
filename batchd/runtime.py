"""What one batchd process holds: settings, its Redis client and scripts, API clients, rq queues.

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
from datetime import timedelta
from typing import Any

import redis
from rq import Queue

from batchd.api import BatchesClient
from batchd.keys import Keys, new_token
from batchd.observe import metrics
from batchd.scripts import Scripts
from batchd.settings import Settings
from batchd.store import connect, text

STAGES = ("fanout", "submit", "poll")
#: Seconds a stage job may run before rq stops it; long ones renew their lease meanwhile.
JOB_TIMEOUTS = {"submit": 6 * 3600, "poll": 300, "fanout": 6 * 3600}


class Runtime:
    """The per-process context of the daemon's loops and stage jobs."""

    def __init__(self, settings: Settings, connection: redis.Redis | None = None) -> None:
        if settings.redis_url is None and connection is None:
            raise ValueError("the runtime needs a Redis URL")
        self.settings = settings
        self.redis = connection if connection is not None else connect(settings.redis_url or "")
        self.keys = Keys(settings.prefix)
        self.scripts = Scripts(self.redis)
        self.identity = f"{os.uname().nodename}:{os.getpid()}:{new_token()[-6:]}"
        self._api: dict[str, BatchesClient] = {}
        self._queues: dict[str, Queue] = {}
        self._lock = threading.Lock()

    def api(self, account: str) -> BatchesClient:
        with self._lock:
            client = self._api.get(account)
            if client is None:
                client = BatchesClient.from_settings(
                    self.settings, account, on_call=metrics.api_call
                )
                self._api[account] = client
            return client

    def queue(self, stage: str) -> Queue:
        q = self._queues.get(stage)
        if q is None:
            q = Queue(f"{self.settings.prefix}-{stage}", connection=self.redis)
            self._queues[stage] = q
        return q

    def queue_names(self) -> list[str]:
        return [f"{self.settings.prefix}-{s}" for s in STAGES]

    def now_ms(self) -> int:
        sec, usec = self.redis.time()
        return int(sec) * 1000 + int(usec) // 1000

    def enqueue(self, stage: str, account: str, asm: str, delay: float = 0.0) -> None:
        """Queue a stage job for an assembly, and note when the sweeper should check on it."""
        q = self.queue(stage)
        kwargs: dict[str, Any] = {
            "job_timeout": JOB_TIMEOUTS[stage],
            "result_ttl": 0,
            "failure_ttl": 86400,
            "description": f"{stage} {account}/{asm}",
        }
        if delay > 0:
            q.enqueue_in(timedelta(seconds=delay), "batchd.stages.run_stage", stage, account, asm,
                         **kwargs)  # fmt: skip
        else:
            q.enqueue("batchd.stages.run_stage", stage, account, asm, **kwargs)
        due = self.now_ms() + int((delay + self.settings.run.stale_after) * 1000)
        self.redis.zadd(self.keys.assemblies(account), {asm: due})

    def assembly(self, account: str, asm: str) -> dict[str, str]:
        raw = self.redis.hgetall(self.keys.assembly(account, asm))
        return {text(k): text(v) for k, v in raw.items()}

    def close(self) -> None:
        for client in self._api.values():
            client.close()
        self.redis.close()


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
    """A Redis key held with a TTL and renewed from a thread until released."""

    rt: Runtime
    key: str
    token: str
    ttl_ms: int
    lost: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        def renew() -> None:
            while not self._stop.wait(self.ttl_ms / 3000):
                try:
                    ok = self.rt.scripts.renew(keys=[self.key], args=[self.token, self.ttl_ms])
                except redis.RedisError:
                    continue  # Redis away for a moment; the TTL still covers us
                if not ok:
                    self.lost.set()
                    return

        self._thread = threading.Thread(target=renew, name=f"lease {self.key}", daemon=True)
        self._thread.start()

    def held(self) -> bool:
        """True while the key still holds our token (checked in Redis, not from memory)."""
        if self.lost.is_set():
            return False
        return text(self.rt.redis.get(self.key)) == self.token

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=1)
        try:
            self.rt.scripts.release(keys=[self.key], args=[self.token])
        except redis.RedisError:
            pass  # it expires by itself


@contextmanager
def lease(rt: Runtime, key: str, token: str | None = None) -> Iterator[Lease | None]:
    """Hold `key` for the duration of the block, or yield None when someone else holds it."""
    token = token or rt.identity + ":" + new_token()
    ttl = int(rt.settings.run.lease * 1000)
    if not rt.redis.set(key, token, nx=True, px=ttl):
        yield None
        return
    held = Lease(rt, key, token, ttl)
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
