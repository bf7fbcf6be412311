"""Cluster metrics computed at scrape time from Redis, plus `batchd_build_info`.

Every replica reads the same Redis and so exports the same values for these series: aggregate
them with `max` across instances, never `sum` (the README's alert rules do).
"""

from __future__ import annotations

import platform
from collections.abc import Iterable, Iterator
from importlib import metadata

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from batchd.errors import BatchdError
from batchd.logs import get_logger
from batchd.observe import snapshot
from batchd.store import Store
from batchd.store import deadlines as dl_store
from batchd.store import realtime as rt_store

log = get_logger("batchd.observe")


def version() -> str:
    try:
        return metadata.version("batchd")
    except metadata.PackageNotFoundError:
        return "unknown"


class BuildInfoCollector(Collector):
    """`batchd_build_info{version, python}` = 1."""

    def collect(self) -> Iterator[Metric]:
        g = GaugeMetricFamily(
            "batchd_build_info", "Versions of batchd and Python", labels=["version", "python"]
        )
        g.add_metric([version(), platform.python_version()], 1)
        yield g


class RedisCollector(Collector):
    """Reads a `snapshot` per scrape; when Redis cannot be read, only `batchd_redis_up 0`."""

    def __init__(self, store: Store, accounts: Iterable[str]) -> None:
        self.store = store
        self.accounts = list(accounts)

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("batchd_redis_up", "1 when this scrape could read batchd's Redis")
        try:
            snap = snapshot.read(self.store, self.accounts)
        except BatchdError as exc:
            log.debug("metrics: redis unreadable", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _families(snap, self.accounts)


def _families(snap: snapshot.Snapshot, accounts: list[str]) -> Iterator[Metric]:
    submitted = CounterMetricFamily(
        "batchd_requests_submitted",
        "Requests accepted from producers (all replicas)",
        labels=["account"],
    )
    for account in accounts:
        submitted.add_metric([account], snap.account_counter(account, "submitted"))
    yield submitted

    ended = CounterMetricFamily(
        "batchd_requests_ended",
        "Requests that reached a terminal status",
        labels=["account", "status"],
    )
    for account in accounts:
        for status in snapshot.TERMINAL_STATUSES:
            ended.add_metric([account, status], snap.account_counter(account, f"ended:{status}"))
    yield ended

    retried = CounterMetricFamily(
        "batchd_requests_retried",
        "Requests sent round again after a retryable error, expiry or missing result line",
    )
    retried.add_metric([], snap.counter("retries"))
    yield retried

    created = CounterMetricFamily("batchd_batches_created", "Message batches created (or adopted)")
    created.add_metric([], snap.counter("batches_created"))
    yield created

    batches_ended = CounterMetricFamily(
        "batchd_batches_ended",
        "Batches closed, by outcome: completed, canceled (by an operator), vanished, archived",
        labels=["outcome"],
    )
    for outcome in snapshot.BATCH_OUTCOMES:
        batches_ended.add_metric([outcome], snap.counter(f"batches_ended:{outcome}"))
    yield batches_ended

    lane_labels = ["account", "priority", "lane"]
    pending = GaugeMetricFamily(
        "batchd_pending_requests", "Requests waiting in a lane for a batch", labels=lane_labels
    )
    pending_bytes = GaugeMetricFamily(
        "batchd_pending_bytes", "Encoded size of the requests waiting in a lane", labels=lane_labels
    )
    oldest = GaugeMetricFamily(
        "batchd_pending_oldest_age_seconds",
        "How long the oldest request of a lane has waited (0 when the lane is empty)",
        labels=lane_labels,
    )
    for lane in snap.lanes:
        labels = [lane.account, str(lane.priority), lane.lane]
        pending.add_metric(labels, lane.pending)
        pending_bytes.add_metric(labels, lane.bytes)
        oldest.add_metric(labels, lane.oldest_age_s or 0.0)
    yield pending
    yield pending_bytes
    yield oldest

    in_flight = GaugeMetricFamily(
        "batchd_batches_in_flight",
        "Batches created and not yet fanned out (processing, or ended and being read)",
        labels=["account"],
    )
    states = GaugeMetricFamily(
        "batchd_assemblies", "Live assemblies (batches in the making or in flight), by state",
        labels=["account", "state"],
    )  # fmt: skip
    oldest_batch = GaugeMetricFamily(
        "batchd_batch_oldest_age_seconds",
        "Age of the oldest batch in flight (0 when none): a stuck batch shows here",
        labels=["account"],
    )
    for account in accounts:
        mine = [a for a in snap.assemblies if a.account == account]
        in_flight.add_metric([account], sum(1 for a in mine if a.in_flight))
        for state in snapshot.ASSEMBLY_STATES:
            states.add_metric([account, state], sum(1 for a in mine if a.state == state))
        ages = [a.age_s or 0.0 for a in mine if a.in_flight]
        oldest_batch.add_metric([account], max(ages, default=0.0))
    yield in_flight
    yield states
    yield oldest_batch

    per_account = (
        ("batchd_dead_letters", "Requests that ended dead (retries exhausted)", snap.dead),
        (
            "batchd_webhook_deliveries_queued",
            "Webhook deliveries waiting in the outbox (due now or later)",
            snap.webhooks_queued,
        ),
        (
            "batchd_webhook_dead_letters",
            "Webhook deliveries that failed for good",
            snap.webhooks_dead,
        ),
        (
            "batchd_replies_waiting",
            "Results ended but not yet on their reply queue (the account's reply outbox)",
            snap.replies_waiting,
        ),
        (
            "batchd_replies_parked",
            "Results whose reply queue refused them (a key of another type), retried",
            snap.replies_parked,
        ),
    )
    for name, doc, values in per_account:
        g = GaugeMetricFamily(name, doc, labels=["account"])
        for account in accounts:
            g.add_metric([account], values.get(account, 0))
        yield g

    depth = GaugeMetricFamily(
        "batchd_reply_queue_depth",
        "Replies waiting on a reply queue for a consumer (consumer lag), for each queue results "
        "went to in the last 7 days",
        labels=["queue"],
    )
    for queue, n in sorted(snap.reply_queues.items()):
        depth.add_metric([queue], n)
    yield depth

    yield from _deadline_families(snap, accounts)

    paused = GaugeMetricFamily(
        "batchd_account_paused", "1 while the API refuses the account's key", labels=["account"]
    )
    for account in accounts:
        paused.add_metric([account], 1 if account in snap.paused else 0)
    yield paused

    procs = GaugeMetricFamily(
        "batchd_daemon_processes", "`batchd run` processes with a heartbeat in the last 10 s"
    )
    procs.add_metric([], len(snap.processes))
    yield procs


def _deadline_families(snap: snapshot.Snapshot, accounts: list[str]) -> Iterator[Metric]:
    """Deadlines met and missed, requests that left the batch route, real-time sends."""
    met = CounterMetricFamily(
        "batchd_deadlines",
        "Requests with a deadline that ended, by outcome: met (succeeded by then) or missed",
        labels=["account", "outcome"],
    )
    missed = CounterMetricFamily(
        "batchd_deadlines_missed",
        "Deadlines missed, by reason: late, unreachable (policy fail), realtime_*, or the status",
        labels=["account", "reason"],
    )
    left = CounterMetricFamily(
        "batchd_deadline_escalations",
        "Requests no batch could make by their deadline, by route: realtime, fail, or batch "
        "(kept, late)",
        labels=["account", "route"],
    )
    sends = CounterMetricFamily(
        "batchd_realtime_sends",
        "Real-time Messages API sends, by outcome (unanswered ones are never sent again)",
        labels=["account", "outcome"],
    )
    canceled = CounterMetricFamily(
        "batchd_batches_canceled_for_deadline",
        "Batches canceled because they could no longer end before their earliest deadline",
        labels=["account"],
    )
    for account in accounts:
        for outcome in ("met", "missed"):
            met.add_metric(
                [account, outcome], snap.account_counter(account, f"deadlines_{outcome}")
            )
        for reason in dl_store.MISS_REASONS:
            n = snap.account_counter(account, f"deadlines_missed:{reason}")
            missed.add_metric([account, reason], n)
        for route in dl_store.POLICIES:
            left.add_metric([account, route], snap.account_counter(account, f"escalated:{route}"))
        for outcome in rt_store.OUTCOMES:
            n = snap.account_counter(account, f"realtime:{outcome}")
            sends.add_metric([account, outcome], n)
        canceled.add_metric([account], snap.account_counter(account, "batches_canceled:deadline"))
    yield met
    yield missed
    yield left
    yield sends
    yield canceled
