"""Every Prometheus metric batchd counts in-process, defined in one place, and the hooks for them.

These are per-process facts (API calls, webhook deliveries, stage jobs); `batchd run` puts them in
prometheus-client's multiprocess mode so its /metrics adds up its rq worker processes too.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from batchd.logs import get_logger

log = get_logger("batchd.observe")

#: prometheus-client's switch to multiprocess mode: a directory of per-process value files.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Name of a daemon's own multiprocess directory; the pid lets a later daemon spot dead ones.
MULTIPROC_PREFIX = "batchd-metrics-"

#: API call latency, seconds: a poll takes tens of milliseconds, a 256 MB upload minutes.
API_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, 600.0)
#: Webhook delivery latency, seconds, up to the default whole-attempt deadline of 10 s and beyond.
WEBHOOK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Stage job run time, seconds: a poll is quick, a fan-out of 100,000 results takes minutes.
STAGE_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 21600.0)

STAGES = ("submit", "poll", "fanout")
WEBHOOK_OUTCOMES = ("delivered", "retry", "gone", "dead")


@dataclass(frozen=True)
class Metrics:
    api_requests: Counter
    api_duration: Histogram
    webhook_deliveries: Counter
    webhook_duration: Histogram
    stage_duration: Histogram
    stage_failures: Counter


#: Where the metrics live in a single process (a test, a CLI command). Under `batchd run` the
#: values go to the multiprocess directory instead, and /metrics reads them from there.
REGISTRY = CollectorRegistry()

_lock = threading.Lock()
_metrics: Metrics | None = None


def _build() -> Metrics:
    m = Metrics(
        api_requests=Counter(
            "batchd_api_requests",
            "Message Batches API calls (each HTTP attempt), by operation and HTTP status "
            "(no_response when none came)",
            ["operation", "status"],
            registry=REGISTRY,
        ),
        api_duration=Histogram(
            "batchd_api_request_duration_seconds",
            "Time to each Message Batches API answer (headers), by operation",
            ["operation"],
            buckets=API_BUCKETS,
            registry=REGISTRY,
        ),
        webhook_deliveries=Counter(
            "batchd_webhook_deliveries",
            "Webhook delivery attempts by outcome: delivered, retry, gone (410), dead",
            ["outcome"],
            registry=REGISTRY,
        ),
        webhook_duration=Histogram(
            "batchd_webhook_delivery_duration_seconds",
            "Time each webhook delivery attempt took, by outcome",
            ["outcome"],
            buckets=WEBHOOK_BUCKETS,
            registry=REGISTRY,
        ),
        stage_duration=Histogram(
            "batchd_stage_job_duration_seconds",
            "Run time of stage jobs (submit, poll, fanout), failed ones included",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=REGISTRY,
        ),
        stage_failures=Counter(
            "batchd_stage_job_failures",
            "Stage jobs that raised or timed out (rq keeps them in its failed registry)",
            ["stage"],
            registry=REGISTRY,
        ),
    )
    # Known label values start at zero, so rate() and alerts see a series before the first event.
    for stage in STAGES:
        m.stage_failures.labels(stage)
    for outcome in WEBHOOK_OUTCOMES:
        m.webhook_deliveries.labels(outcome)
    return m


def get() -> Metrics:
    """The process's metrics, built on first use (after `enable_multiprocess`, if called)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _build()
        return _metrics


# -- hooks ---------------------------------------------------------------------------------------


def api_call(operation: str, status: int | None, seconds: float) -> None:
    """BatchesClient's `on_call` hook."""
    m = get()
    m.api_requests.labels(operation, "no_response" if status is None else str(status)).inc()
    m.api_duration.labels(operation).observe(seconds)


def webhook_result(outcome: str, seconds: float) -> None:
    """WebhookSender's `on_result` hook."""
    m = get()
    m.webhook_deliveries.labels(outcome).inc()
    m.webhook_duration.labels(outcome).observe(seconds)


def stage_job(stage: str, ok: bool, seconds: float) -> None:
    """One stage job ran (see observe.worker); `stage` outside the known three is `other`."""
    m = get()
    label = stage if stage in STAGES else "other"
    m.stage_duration.labels(label).observe(seconds)
    if not ok:
        m.stage_failures.labels(label).inc()


# -- multiprocess mode ----------------------------------------------------------------------------


def enable_multiprocess(directory: Path) -> None:
    """Count into per-process files under `directory`; child processes inherit it.

    prometheus-client picks its value class when it is imported, from the environment; it may
    have been imported before this runs, so the choice is made again here. Metrics built before
    this call would stay in memory, which is why `get()` builds them lazily.
    """
    if _metrics is not None:
        log.warning("metrics were created before multiprocess mode; worker counts may be missing")
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


def multiprocess_dir() -> Path | None:
    found = os.environ.get(MULTIPROC_ENV)
    return Path(found) if found else None


def prepare_directory(parent: Path | None = None) -> Path:
    """A fresh, empty multiprocess directory for this daemon, under `parent` (default: temp dir).

    Directories left by daemons that died (their pid gone) are removed on the way, so a host
    that restarts batchd many times does not fill up.
    """
    base = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob(MULTIPROC_PREFIX + "*"):
        pid_text = old.name.removeprefix(MULTIPROC_PREFIX)
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            shutil.rmtree(old, ignore_errors=True)
    mine = base / f"{MULTIPROC_PREFIX}{os.getpid()}"
    shutil.rmtree(mine, ignore_errors=True)  # a reused pid: its old counts are not ours
    mine.mkdir(mode=0o700)
    return mine


def remove_directory(directory: Path) -> None:
    shutil.rmtree(directory, ignore_errors=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def local_collector() -> Collector:
    """What /metrics reads the in-process metrics from: every process's files, or this one."""
    get()  # so the known label values show before the first event
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry
