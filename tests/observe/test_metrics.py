"""/metrics of a running daemon, scraped during and after real runs, against what happened."""

from __future__ import annotations

import socket

import pytest
from rq import Queue

from batchd.store import AssemblyState, Lane
from batchd.store import lanes as lane_store
from batchd.store.records import Assembly
from tests.e2e.conftest import Stack, SubmitFn, params
from tests.observe.conftest import ops_port, scrape, total, value
from tests.support.daemon import wait_for
from tests.webhooks.support import SECRET, Receiver

DEFAULT = {"account": "default"}
#: The labels of the default account's plain priority-0 lane.
LANE_0 = {"account": "default", "priority": "0", "lane": Lane.of(0).id}


def test_counts_match_the_run(stack: Stack, submit: SubmitFn) -> None:
    """Requests by status, retries, batches and API calls equal Redis's and the emulator's count."""
    stack.emulator.set_profile({"result_api_error_rate": 1.0})
    daemon = stack.daemon(BATCHD_RETRY__MAX_ATTEMPTS="2")
    port = ops_port(daemon)
    submit(3)
    stack.wait_ended(3)
    stack.emulator.set_profile({})
    submit(4)
    submit(1, temperature=5)  # checked by the API after the batch: ends errored
    stack.wait_ended(8)

    m = scrape(port)
    audit = stack.emulator.audit()[stack.emulator.api_key]
    created = audit["batches_created"]
    assert value(m, "batchd_requests_submitted_total", **DEFAULT) == 8
    assert value(m, "batchd_requests_ended_total", **DEFAULT, status="succeeded") == 4
    assert value(m, "batchd_requests_ended_total", **DEFAULT, status="errored") == 1
    assert value(m, "batchd_requests_ended_total", **DEFAULT, status="dead") == 3
    assert value(m, "batchd_requests_retried_total") == 3
    assert value(m, "batchd_dead_letters", account="default") == 3
    assert value(m, "batchd_batches_created_total") == created >= 3
    assert value(m, "batchd_batches_ended_total", outcome="completed") == created
    # Counted in the stage worker processes, read through the daemon's multiprocess directory.
    assert value(m, "batchd_api_requests_total", operation="create", status="200") == created
    assert value(m, "batchd_api_request_duration_seconds_count", operation="create") == created
    assert value(m, "batchd_api_requests_total", operation="results", status="200") == created
    assert value(m, "batchd_stage_job_duration_seconds_count", stage="fanout") >= created
    assert total(m, "batchd_stage_job_failures_total") == 0
    assert value(m, "batchd_pending_requests", **LANE_0) == 0
    assert value(m, "batchd_batches_in_flight", account="default") == 0
    assert value(m, "batchd_replies_waiting", account="default") == 0
    assert value(m, "batchd_replies_parked", account="default") == 0
    assert value(m, "batchd_redis_up") == 1
    assert value(m, "batchd_daemon_processes") == 1
    assert total(m, "batchd_build_info") == 1


def test_gauges_follow_a_batch(stack: Stack, submit: SubmitFn) -> None:
    """Pending count, bytes and age while requests wait; then one batch in flight; then none."""
    stack.emulator.set_profile({"processing_time": [3.0, 3.0]})
    daemon = stack.daemon(BATCHD_BATCH__MAX_WAIT="3600")
    port = ops_port(daemon)
    submit(3)
    lane = LANE_0
    m = scrape(port)
    stats = lane_store.stats(stack.client.keys, "default", [lane["lane"]])
    [counted] = stack.client.store.read(stats)
    assert value(m, "batchd_pending_requests", **lane) == 3
    assert value(m, "batchd_pending_bytes", **lane) == counted.stats.bytes > 0
    assert value(m, "batchd_pending_oldest_age_seconds", **lane) > 0

    stack.client.flush()
    wait_for(
        lambda: value(scrape(port), "batchd_batches_in_flight", account="default") == 1,
        30,
        "the batch to be in flight",
    )
    m = scrape(port)
    assert value(m, "batchd_pending_requests", **lane) == 0
    assert value(m, "batchd_assemblies", account="default", state="submitted") == 1
    assert value(m, "batchd_batch_oldest_age_seconds", account="default") >= 0
    stack.wait_ended(3)
    wait_for(
        lambda: value(scrape(port), "batchd_batches_in_flight", account="default") == 0,
        30,
        "the batch to close",
    )


def test_two_replicas_add_up(stack: Stack, submit: SubmitFn) -> None:
    """Process counts summed over replicas equal the total; Redis series are equal on each."""
    first = stack.daemon(BATCHD_BATCH__MAX_REQUESTS="5")
    second = stack.daemon(BATCHD_BATCH__MAX_REQUESTS="5")
    ports = [ops_port(first), ops_port(second)]
    for _ in range(4):
        submit(10)
    stack.wait_ended(40)

    scrapes = [scrape(p) for p in ports]
    created = stack.emulator.audit()[stack.emulator.api_key]["batches_created"]
    creates = [value(m, "batchd_api_requests_total", operation="create", status="200")
               for m in scrapes]  # fmt: skip
    assert sum(creates) == created >= 8
    for m in scrapes:
        assert value(m, "batchd_requests_submitted_total", **DEFAULT) == 40
        assert value(m, "batchd_batches_created_total") == created
        assert value(m, "batchd_daemon_processes") == 2


def test_webhook_deliveries_counted(stack: Stack) -> None:
    """A delivered callback shows as one delivery, with its latency observed."""
    receiver = Receiver()
    receiver.start()
    try:
        daemon = stack.daemon(
            BATCHD_WEBHOOKS__SECRET=SECRET, BATCHD_WEBHOOKS__ALLOW_NETWORKS='["127.0.0.1/32"]'
        )
        port = ops_port(daemon)
        stack.client.submit(params(1), callback_url=receiver.url())
        receiver.wait_for(1, timeout=60)
        wait_for(
            lambda: value(scrape(port), "batchd_webhook_deliveries_total", outcome="delivered"),
            30,
            "the delivery to be counted",
        )
    finally:
        receiver.stop()
    m = scrape(port)
    assert value(m, "batchd_webhook_deliveries_total", outcome="delivered") == 1
    assert value(m, "batchd_webhook_delivery_duration_seconds_count", outcome="delivered") == 1
    assert value(m, "batchd_webhook_deliveries_total", outcome="dead") == 0
    assert value(m, "batchd_webhook_deliveries_queued", account="default") == 0


@pytest.mark.tolerates_tracebacks  # the failing job is the test's own, on purpose
def test_stage_job_failure_counted(stack: Stack) -> None:
    """A stage job that raises counts once under its stage, as rq's failed registry shows."""
    daemon = stack.daemon()
    port = ops_port(daemon)
    r, keys = stack.client.redis, stack.client.keys
    # An assembly in flight with no batch id: its poll job cannot run.
    r.hset(
        keys.assembly("default", "broken"),
        mapping={Assembly.STATE: AssemblyState.SUBMITTED.value, Assembly.COUNT: 1},
    )
    queue = Queue("batchd-poll", connection=r)
    queue.enqueue("batchd.stages.run_stage", "poll", "default", "broken")
    wait_for(
        lambda: value(scrape(port), "batchd_stage_job_failures_total", stage="poll") == 1,
        30,
        "the failure to be counted",
    )
    assert queue.failed_job_registry.count == 1
    assert value(scrape(port), "batchd_stage_job_failures_total", stage="fanout") == 0


def test_taken_port_stops_the_daemon_at_start(stack: Stack) -> None:
    """With its metrics port taken, the daemon does not start: exit 2 naming http.port."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        daemon = stack.daemon(BATCHD_HTTP__PORT=str(port))
        assert daemon.wait_exit(60) == 2
    assert "http.port (BATCHD_HTTP__PORT)" in daemon.log_text()


def test_redis_unreachable_reads_as_redis_down(stack: Stack) -> None:
    """While Redis is down a scrape still answers, with batchd_redis_up 0 and no cluster series."""
    daemon = stack.daemon()
    port = ops_port(daemon)
    assert value(scrape(port), "batchd_redis_up") == 1
    stack.redis.stop()
    try:
        m = scrape(port)
        assert value(m, "batchd_redis_up") == 0
        assert ("batchd_requests_submitted_total", frozenset()) not in m
        assert total(m, "batchd_build_info") == 1
    finally:
        stack.redis.start()


def test_labels_are_bounded(stack: Stack, submit: SubmitFn) -> None:
    """After a run, every batchd series is labelled only by small, fixed dimensions."""
    daemon = stack.daemon()
    port = ops_port(daemon)
    ids = submit(5)
    stack.wait_ended(5)
    # `queue` is a reply queue's name: producers choose a few (the CLI uses none). The ledger's
    # `model` is one of the models used; `mode`, `kind` and a cap's `scope` and `period` are
    # fixed or configured (a `tag` label only for the tags ledger.metric_tags lists).
    allowed = {"operation", "status", "outcome", "stage", "account", "priority", "lane", "state",
               "le", "version", "python", "queue", "route", "code", "reason", "model", "mode",
               "kind", "scope", "period"}  # fmt: skip
    m = scrape(port)
    names = {name for name, _ in m if name.startswith("batchd_")}
    assert len(names) > 20
    for name, labels in m:
        if name.startswith("batchd_"):
            assert {k for k, _ in labels} <= allowed, name
            assert not any(v.startswith("msgbatch_") or v in ids for _, v in labels), name
