"""`batchd run`: the daemon's whole life in one place.

The main process runs the aggregator, sweeper (and deadline planner), real-time sender and
webhook sender loops in threads and supervises rq worker processes for the stage jobs.
SIGTERM/SIGINT stop it within the grace period without losing work (every stage resumes from
Redis); a second signal forces the stop.
"""

from __future__ import annotations

import ctypes
import importlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

from batchd import aggregate, realtime, sweeper
from batchd.defaults import WORKER_RESTART_DELAY, WORKER_RESTART_MAX, WORKER_STABLE
from batchd.embedded import EmbeddedRedis
from batchd.errors import BatchdError
from batchd.logs import configure, get_logger
from batchd.observe import lifecycle, metrics, throughput
from batchd.observe.health import Liveness
from batchd.observe.worker import StageWorker
from batchd.runtime import Runtime, install
from batchd.settings import Settings
from batchd.store import counters as counter_store
from batchd.store import durability_warnings
from batchd.store.migrate import migrate

log = get_logger("batchd.daemon")


def _die_with_parent() -> None:
    """In a child: get SIGKILL when the daemon dies, so no worker outlives a kill -9."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def resolve_redis(settings: Settings) -> tuple[Settings, EmbeddedRedis | None]:
    """Settings with a Redis URL: the configured one, or an embedded server's."""
    if settings.redis_url:
        return settings, None
    embedded = EmbeddedRedis(settings.data_dir)
    log.warning(
        "no Redis configured: starting an embedded redis-server for this machine alone; set "
        "redis_url (BATCHD_REDIS_URL) to use a shared Redis",
        directory=str(embedded.directory),
    )
    url = embedded.start()
    return settings.model_copy(update={"redis_url": url}), embedded


def worker_main(settings: Settings) -> int:
    """One rq worker process for the stage jobs. rq's scheduler is not used: delayed stages
    are due times in batchd's own data, queued by the sweeper."""
    rt = install(Runtime(settings))
    worker = StageWorker(rt.queue_names(), connection=rt.rq_redis)
    worker.work(with_scheduler=False, logging_level=settings.log.level.upper())
    return 0


class Daemon:
    """Loops in threads, workers in processes, one stop event."""

    def __init__(
        self, settings: Settings, roles: list[str], child_args: list[str] | None = None
    ) -> None:
        self.settings = settings
        self.roles = roles
        self.child_args = child_args or []
        self.stop = threading.Event()
        self._signals = 0
        self._workers: list[subprocess.Popen[bytes] | None] = []
        # per worker slot: (when its process started, failures in a row, when to restart it)
        self._restarts: dict[int, tuple[float, int, float]] = {}
        self._threads: list[threading.Thread] = []
        self.embedded: EmbeddedRedis | None = None
        self.liveness = Liveness()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("stopping", signal=signal.Signals(signum).name, grace=self.settings.run.grace)
            self.stop.set()
        else:
            log.warning("second signal: stopping now")
            self._kill_workers(signal.SIGKILL)
            os._exit(1)

    def _loop(self, name: str, period: float, step: Callable[[Runtime], Any]) -> None:
        rt = Runtime(self.settings)
        bound = log.bind(loop=name)
        try:
            while not self.stop.is_set():
                self.liveness.beat(name)
                try:
                    step(rt)
                except BatchdError as exc:
                    bound.warning("step failed; retrying", error=str(exc))
                    self.stop.wait(1.0)
                except Exception:
                    bound.exception("loop step failed; continuing")
                    self.stop.wait(1.0)
                self.stop.wait(period)
        finally:
            rt.close()

    def _start_thread(self, name: str, target: Callable[[], None], watch: bool = True) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)
        t.start()
        self._threads.append(t)
        if watch:  # a loop that must live as long as the process (services may end early)
            self.liveness.watch_thread(name, t)

    def _spawn_worker(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["BATCHD_REDIS_URL"] = self.settings.redis_url or ""
        if self.settings.redis.rq_url:
            env["BATCHD_REDIS__RQ_URL"] = self.settings.redis.rq_url
        cmd = [sys.executable, "-m", "batchd", *self.child_args, "worker"]
        return subprocess.Popen(cmd, env=env, preexec_fn=_die_with_parent)

    def _kill_workers(self, sig: int) -> None:
        for proc in self._workers:
            if proc is not None and proc.poll() is None:
                try:
                    proc.send_signal(sig)
                except ProcessLookupError:
                    pass

    def _supervise(self) -> None:
        """Restart workers that exited, backing off while they keep dying (Redis full or away:
        a crash loop would only add load), and starting afresh once one has lived a while."""
        now = time.monotonic()
        for i, proc in enumerate(self._workers):
            if proc is None or proc.poll() is None or self.stop.is_set():
                continue
            started, failures, due = self._restarts.get(i, (now, 0, 0.0))
            if due == 0.0:
                failures = 0 if now - started > WORKER_STABLE else failures + 1
                delay = min(WORKER_RESTART_MAX, WORKER_RESTART_DELAY * 2 ** max(0, failures - 1))
                log.warning(
                    "worker exited; restarting",
                    pid=proc.pid,
                    code=proc.returncode,
                    restart_in=delay,
                    failures_in_a_row=failures,
                )
                self._restarts[i] = (started, failures, now + delay)
                continue
            if now >= due:
                self._workers[i] = self._spawn_worker()
                self._restarts[i] = (now, failures, 0.0)

    def run(self) -> int:
        observation = lifecycle.prepare(self.settings)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        self.settings, self.embedded = resolve_redis(self.settings)
        rt = install(Runtime(self.settings))
        for problem in durability_warnings(rt.redis):
            log.warning("redis may lose data", problem=problem)
        migrate(rt.store, list(self.settings.accounts), int(self.settings.retention * 1000))
        rt.store.read(counter_store.publish_accounts(rt.keys, list(self.settings.accounts)))
        sweeper.wake_held(rt)
        # Alive from the start: a producer that submits as soon as /readyz answers is not told
        # that no daemon runs (the main loop beats again every half second).
        self._heartbeat(rt)
        tick = self.settings.run.tick
        if "aggregator" in self.roles:
            self._start_thread("aggregator", lambda: self._loop("aggregator", tick, aggregate.tick))
        if "sweeper" in self.roles:
            self._start_thread("sweeper", lambda: self._loop("sweeper", tick, sweeper.sweep))
        if "webhooks" in self.roles and self.settings.webhooks.enabled:
            self._start_webhooks()
        if "realtime" in self.roles:
            self._start_thread(
                "realtime", lambda: realtime.run(self.settings, self.stop, self.liveness.beat)
            )
        if "ingress" in self.roles and self.settings.ingress.enabled:
            self._start_service("batchd.ingress.server", "ingress")
        if "console" in self.roles and self.settings.console.enabled:
            self._start_service("batchd.console.server", "console")
        if self.settings.http.enabled:
            self._start_service("batchd.observe.server", "http")
        if "worker" in self.roles:
            self._workers = [self._spawn_worker() for _ in range(self.settings.run.workers)]
            self.liveness.watch_processes("workers", lambda: self._workers)
        log.info(
            "batchd running",
            roles=self.roles,
            workers=len(self._workers),
            accounts=sorted(self.settings.accounts),
            redis=_safe_url(self.settings.redis_url or ""),
        )
        observation.started(self)
        while not self.stop.wait(0.5):
            self.liveness.beat("main")
            self._supervise()
            self._heartbeat(rt)
        try:
            return self._shutdown(rt)
        finally:
            observation.finish()

    def _start_webhooks(self) -> None:
        try:
            from batchd.webhooks.sender import WebhookSender
        except ImportError:
            log.warning("webhook sender unavailable; callbacks stay in the outbox")
            return
        sender = WebhookSender(
            self.settings, self.settings.redis_url or "", on_result=metrics.webhook_result
        )
        self._start_thread("webhooks", lambda: sender.run_in_thread(self.stop))

    def _start_service(self, module: str, name: str) -> None:
        """Start `module.run(daemon, stop_event)` in a thread, if that module exists."""
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not module.startswith(exc.name):
                raise
            log.warning("service unavailable in this build", service=name)
            return
        self._start_thread(name, lambda: mod.run(self, self.stop), watch=False)

    def _heartbeat(self, rt: Runtime) -> None:
        try:
            now = rt.now_ms()
            rt.store.read(counter_store.heartbeat(rt.keys, rt.identity, now))
            throughput.record(rt.store, list(self.settings.accounts), now)
        except BatchdError:
            pass

    def _shutdown(self, rt: Runtime) -> int:
        deadline = time.monotonic() + self.settings.run.grace
        # rq's warm shutdown: each worker finishes its current job, then exits.
        self._kill_workers(signal.SIGTERM)
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for proc in self._workers:
            if proc is None:
                continue
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("worker did not stop within the grace period; killing", pid=proc.pid)
                proc.kill()
                proc.wait()
        try:
            rt.store.read(counter_store.leave(rt.keys, rt.identity))
        except BatchdError:
            pass
        rt.close()
        if self.embedded is not None:
            self.embedded.stop()
        log.info("stopped")
        return 0


def _safe_url(url: str) -> str:
    """A Redis URL without its password."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def run(settings: Settings, roles: list[str], child_args: list[str]) -> int:
    configure(settings.log.level, settings.log.format, settings.secrets())
    return Daemon(settings, roles, child_args).run()
