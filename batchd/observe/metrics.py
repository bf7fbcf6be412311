"""Every Prometheus metric batchd counts in-process, defined in one place, and the hooks for them.

These are per-process facts (API calls, webhook deliveries, stage jobs, results applied, ingress
answers); `batchd run` puts them in prometheus-client's multiprocess mode so its /metrics adds up
its rq worker processes too. Every series with known labels exists, at zero, from start-up.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
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

#: Submit-to-result seconds: a drop-in call ends in a minute or two, a batch within 24 h, a
#: request sent round again (retries, a requeued dead letter) later still.
TURNAROUND_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0,
                      14400.0, 28800.0, 43200.0, 86400.0, 172800.0)  # fmt: skip
#: Ingress answer latency, seconds: a submit takes milliseconds, a held call up to its hold.
INGRESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   300.0)  # fmt: skip

STAGES = ("submit", "poll", "fanout")
WEBHOOK_OUTCOMES = ("delivered", "retry", "gone", "dead")
#: The Message Batches operations the daemon calls (their series exist before the first call).
API_OPERATIONS = ("create", "retrieve", "list", "cancel", "results")
#: How a request can end (`RequestStatus`'s terminal states).
END_STATUSES = ("succeeded", "errored", "canceled", "expired", "rejected", "dead")
#: The ingress's routes, `<METHOD> <path>` as its router names them: the `route` label's values
#: (anything else, such as a 404, counts as `other`). A test holds this to the app's routes.
INGRESS_ROUTES = (
    "POST /v1/requests",
    "GET /v1/requests",
    "POST /v1/requests/bulk",
    "GET /v1/requests/{id}",
    "DELETE /v1/requests/{id}",
    "GET /v1/batches",
    "GET /v1/batches/{id}",
    "GET /v1/dead",
    "POST /v1/dead/requeue",
    "POST /v1/dead/purge",
    "POST /v1/messages",
    "POST /v1/messages/count_tokens",
    "GET /v1/models",
    "GET /v1/models/{id}",
    "GET /openapi.json",
    "GET /v1/cost",
    "other",
)
#: The `code` label of ingress answers: the status class.
INGRESS_CODES = ("2xx", "4xx", "5xx")
#: Why the ingress turned a call away: no or a wrong token (401), an account the token may not
#: use (403), its token's rate limit (429 before any handler ran), every held slot taken (429).
INGRESS_REFUSALS = ("unauthorized", "forbidden", "rate_limited", "held_full")


@dataclass(frozen=True)
class Metrics:
    api_requests: Counter
    api_duration: Histogram
    webhook_deliveries: Counter
    webhook_duration: Histogram
    stage_duration: Histogram
    stage_failures: Counter
    turnaround: Histogram
    ingress_requests: Counter
    ingress_duration: Histogram
    ingress_refusals: Counter


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
        turnaround=Histogram(
            "batchd_request_turnaround_seconds",
            "Seconds from a request's submit to its result, observed where results are applied, "
            "by account and terminal status",
            ["account", "status"],
            buckets=TURNAROUND_BUCKETS,
            registry=REGISTRY,
        ),
        ingress_requests=Counter(
            "batchd_ingress_requests",
            "Calls the ingress answered, by route (`METHOD /path`, `other` for none) and status "
            "class (2xx, 4xx, 5xx)",
            ["route", "code"],
            registry=REGISTRY,
        ),
        ingress_duration=Histogram(
            "batchd_ingress_request_duration_seconds",
            "Time the ingress took to answer, held calls included, by route",
            ["route"],
            buckets=INGRESS_BUCKETS,
            registry=REGISTRY,
        ),
        ingress_refusals=Counter(
            "batchd_ingress_refusals",
            "Calls the ingress turned away, by reason: unauthorized (401), forbidden (403), "
            "rate_limited (429, the token's rate), held_full (429, every held slot taken)",
            ["reason"],
            registry=REGISTRY,
        ),
    )
    # Known label values start at zero, so rate() and alerts see a series before the first event.
    for stage in STAGES:
        m.stage_failures.labels(stage)
    for outcome in WEBHOOK_OUTCOMES:
        m.webhook_deliveries.labels(outcome)
        m.webhook_duration.labels(outcome)
    for operation in API_OPERATIONS:
        m.api_requests.labels(operation, "200")
        m.api_duration.labels(operation)
    for route in INGRESS_ROUTES:
        m.ingress_duration.labels(route)
        for code in INGRESS_CODES:
            m.ingress_requests.labels(route, code)
    for reason in INGRESS_REFUSALS:
        m.ingress_refusals.labels(reason)
    return m


def get() -> Metrics:
    """The process's metrics, built on first use (after `enable_multiprocess`, if called)."""
    global _metrics
    with _lock:
        if _metrics is None:
            _metrics = _build()
        return _metrics


def declare(accounts: Iterable[str]) -> None:
    """Make the per-account series exist at zero (the ops server calls this at start-up)."""
    m = get()
    for account in accounts:
        for status in END_STATUSES:
            m.turnaround.labels(account, status)


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


def request_turnarounds(account: str, ends: Iterable[tuple[str, float]]) -> None:
    """Requests that ended together: (status, seconds since submitted) each."""
    hist = get().turnaround
    by_status: dict[str, Any] = {}
    for status, seconds in ends:
        child = by_status.get(status)
        if child is None:
            child = by_status[status] = hist.labels(account, status)
        child.observe(seconds if seconds > 0.0 else 0.0)


def requests_ended(envelopes: Iterable[bytes | str | Mapping[str, Any]]) -> None:
    """Observe the submit-to-result time of requests that just ended, from their result
    envelopes (`{"account", "status", "submitted_at", "ended_at", ...}`, raw or parsed). Call
    it where results are applied, once per applied chunk; envelopes it cannot read are
    skipped."""
    m = get()
    for raw in envelopes:
        env = raw if isinstance(raw, Mapping) else _loads(raw)
        if env is None:
            continue
        submitted, ended = _time(env.get("submitted_at")), _time(env.get("ended_at"))
        if submitted is None or ended is None:
            continue
        labels = (str(env.get("account") or "default"), str(env.get("status") or "unknown"))
        m.turnaround.labels(*labels).observe(max(0.0, (ended - submitted).total_seconds()))


def _loads(raw: bytes | str) -> Mapping[str, Any] | None:
    try:
        env = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return env if isinstance(env, dict) else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def ingress_answer(route: str, status: int, seconds: float, refusal: str | None = None) -> None:
    """One call the ingress answered (the metering middleware's hook)."""
    m = get()
    label = route if route in INGRESS_ROUTES else "other"
    m.ingress_requests.labels(label, f"{status // 100}xx").inc()
    m.ingress_duration.labels(label).observe(seconds)
    if refusal is not None:
        m.ingress_refusals.labels(refusal).inc()


# The ingress's held calls are read live at scrape time: the ingress runs in the process that
# serves /metrics, and a gauge in files would outlive a process that died holding calls.
_held: Callable[[], tuple[int, int]] | None = None


def watch_held(source: Callable[[], tuple[int, int]] | None) -> None:
    """Where /metrics reads (held calls now, the most that may be held) from."""
    global _held
    _held = source


class LiveCollector(Collector):
    """Gauges of this process read at scrape time: the ingress's held calls and their bound."""

    def collect(self) -> Iterator[Metric]:
        held, limit = _held() if _held is not None else (0, 0)
        yield GaugeMetricFamily(
            "batchd_ingress_held_calls",
            "Calls the ingress holds open now, waiting for a result (long-polls, drop-in calls)",
            value=held,
        )
        yield GaugeMetricFamily(
            "batchd_ingress_held_limit",
            "The most calls the ingress may hold at once (ingress.max_held; 0 when it is off)",
            value=limit,
        )


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
