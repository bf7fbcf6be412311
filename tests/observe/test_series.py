"""Series that exist from start-up, reply-queue depth, and the submit-to-result histogram."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson

from batchd.commands import gather_status
from batchd.observe import metrics
from tests.e2e.conftest import Stack, SubmitFn
from tests.observe.conftest import ops_port, scrape, value

ZERO_AT_START = [
    ("batchd_api_requests_total", {"operation": "create", "status": "200"}),
    ("batchd_api_request_duration_seconds_count", {"operation": "results"}),
    ("batchd_request_turnaround_seconds_count", {"account": "default", "status": "succeeded"}),
    ("batchd_request_turnaround_seconds_bucket",
     {"account": "default", "status": "dead", "le": "+Inf"}),
    ("batchd_ingress_requests_total", {"route": "POST /v1/requests", "code": "4xx"}),
    ("batchd_ingress_request_duration_seconds_count", {"route": "GET /v1/dead"}),
    ("batchd_ingress_refusals_total", {"reason": "unauthorized"}),
    ("batchd_ingress_refusals_total", {"reason": "rate_limited"}),
    ("batchd_ingress_held_calls", {}),
    ("batchd_stage_job_failures_total", {"stage": "fanout"}),
    ("batchd_webhook_deliveries_total", {"outcome": "dead"}),
]  # fmt: skip


def test_every_series_is_there_at_zero_from_start_up(stack: Stack) -> None:
    """Before any request, API call or ingress call, every known series is exported at 0."""
    m = scrape(ops_port(stack.daemon()))
    missing = [(n, ls) for n, ls in ZERO_AT_START if (n, frozenset(ls.items())) not in m]
    assert missing == []
    assert all(m[(n, frozenset(ls.items()))] == 0 for n, ls in ZERO_AT_START)


def test_reply_queue_depth_is_a_gauge_per_queue(stack: Stack, submit: SubmitFn) -> None:
    """Replies waiting on each reply queue show per queue, and fall as a consumer reads them."""
    port = ops_port(stack.daemon())
    submit(3, reply_to="svc")
    submit(1, reply_to="other")
    stack.wait_ended(4)
    m = scrape(port)
    assert value(m, "batchd_reply_queue_depth", queue="svc") == 3
    assert value(m, "batchd_reply_queue_depth", queue="other") == 1
    for _ in stack.client.replies("svc", timeout=0):
        pass
    assert value(scrape(port), "batchd_reply_queue_depth", queue="svc") == 0


def test_requests_ended_observes_submit_to_result_seconds() -> None:
    """Each envelope is observed under its account and status, `ended_at - submitted_at` long."""
    start = datetime(2026, 1, 1, tzinfo=UTC)

    def envelope(status: str, seconds: float) -> bytes:
        ended = start + timedelta(seconds=seconds)
        return orjson.dumps({"id": "acct.x", "account": "acct", "status": status,
                             "submitted_at": start.isoformat().replace("+00:00", "Z"),
                             "ended_at": ended.isoformat().replace("+00:00", "Z")})  # fmt: skip

    def count(status: str, le: str) -> float:
        found = metrics.REGISTRY.get_sample_value(
            "batchd_request_turnaround_seconds_bucket",
            {"account": "acct", "status": status, "le": le},
        )
        return found or 0.0

    before = (count("succeeded", "60.0"), count("succeeded", "+Inf"), count("dead", "+Inf"))
    metrics.requests_ended([envelope("succeeded", 42.0), envelope("succeeded", 3600.5),
                            envelope("dead", 7.0), b"not json"])  # fmt: skip
    after = (count("succeeded", "60.0"), count("succeeded", "+Inf"), count("dead", "+Inf"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 2, 1]


def test_status_shows_what_waits_on_each_reply_queue(stack: Stack, submit: SubmitFn) -> None:
    """`batchd status --json` gives the replies waiting on each reply queue."""
    stack.daemon()
    submit(2, reply_to="svc")
    stack.wait_ended(2)
    status = gather_status(stack.client.settings)
    assert status["replies"]["queues"] == {"svc": 2}
