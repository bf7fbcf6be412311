"""The Redis-backed series of /metrics, read from a real Redis a client wrote to: per-account
request counters, per-lane gauges, and the reply outbox's backlog."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchd import Client, Settings
from batchd.observe.collector import RedisCollector
from batchd.store import Lane, split_request_id
from batchd.store import replies as reply_store
from batchd.store import requests as req_store
from tests.observe.conftest import Samples, value

ACCOUNTS = ["default", "team-b"]
PARAMS = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "Say hello"}],
}
BETA = "prompt-caching-2024-07-31"


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    """A producer on two accounts (no daemon runs: requests stay where the client puts them)."""
    settings = Settings.load(redis_url=redis_url, accounts={a: {} for a in ACCOUNTS})
    with Client(settings=settings) as c:
        yield c


def collect(client: Client) -> Samples:
    """Every sample the collector yields for the configured accounts, keyed like a scrape."""
    out: Samples = {}
    for family in RedisCollector(client.store, ACCOUNTS).collect():
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def cancel_without_drain(client: Client, rid: str) -> None:
    """End a pending request `canceled` by the store's own script, leaving its reply in the
    account's outbox (`Client.cancel` would drain it onto the queue at once)."""
    account, token = split_request_id(rid)
    retention_ms = int(client.settings.retention * 1000)
    out = client.store.run(req_store.cancel(client.keys, account, token, retention_ms))
    assert out.state == "canceled" and out.replies == 1


def test_submitted_is_counted_per_account(client: Client) -> None:
    """batchd_requests_submitted carries the account each request was submitted to."""
    client.submit(PARAMS)
    client.submit(PARAMS)
    client.submit(PARAMS, account="team-b")
    m = collect(client)
    assert value(m, "batchd_requests_submitted_total", account="default") == 2
    assert value(m, "batchd_requests_submitted_total", account="team-b") == 1


def test_ended_is_counted_per_account_and_status(client: Client) -> None:
    """batchd_requests_ended carries the account and the terminal status of each request."""
    client.submit(PARAMS).cancel()
    client.submit(PARAMS, account="team-b")
    m = collect(client)
    assert value(m, "batchd_requests_ended_total", account="default", status="canceled") == 1
    team_b = frozenset({("account", "team-b"), ("status", "canceled")})
    assert m[("batchd_requests_ended_total", team_b)] == 0  # a series, at zero


def test_lane_gauges_name_the_lane(client: Client) -> None:
    """Pending requests are gauged per lane: priority and betas each make a lane of their own."""
    client.submit(PARAMS)
    client.submit(PARAMS, betas=[BETA])
    client.submit(PARAMS, betas=[BETA])
    client.submit(PARAMS, priority=3)
    m = collect(client)
    lanes: dict[str, tuple[str, int]] = {
        Lane.of(0).id: ("0", 1),
        Lane.of(0, betas=[BETA]).id: ("0", 2),
        Lane.of(3).id: ("3", 1),
    }
    assert len(lanes) == 3
    for lane, (priority, n) in lanes.items():
        labels = {"account": "default", "priority": priority, "lane": lane}
        assert value(m, "batchd_pending_requests", **labels) == n, lane
        assert value(m, "batchd_pending_bytes", **labels) > 0, lane
    series = {dict(ls)["lane"] for name, ls in m if name == "batchd_pending_requests"}
    assert series == set(lanes)


def test_replies_waiting_counts_the_outbox(client: Client) -> None:
    """A reply ended but not yet moved onto its queue is waiting; once drained it is not."""
    ticket = client.submit(PARAMS, reply_to="results")
    cancel_without_drain(client, ticket.id)
    assert value(collect(client), "batchd_replies_waiting", account="default") == 1
    assert reply_store.drain_all(client.store, "default") == 1
    m = collect(client)
    assert value(m, "batchd_replies_waiting", account="default") == 0
    assert value(m, "batchd_replies_parked", account="default") == 0


def test_replies_parked_counts_refused_replies(client: Client) -> None:
    """A reply whose queue key holds another type is parked, and gauged as parked."""
    client.redis.set(client.keys.reply_queue("results"), "not a list")
    ticket = client.submit(PARAMS, reply_to="results")
    cancel_without_drain(client, ticket.id)
    drained = reply_store.drain(client.store, "default")
    assert drained.refused == 1
    m = collect(client)
    assert value(m, "batchd_replies_parked", account="default") == 1
    assert value(m, "batchd_replies_waiting", account="default") == 0
