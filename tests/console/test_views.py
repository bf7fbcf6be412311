"""The console's reads on their own, against a real Redis with no daemon: the alerts, the sampled
history, what a URL shows, and the cost panel without a ledger."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from batchd.console import costs
from batchd.console.history import History
from batchd.console.views import Views, safe_text, safe_url
from batchd.observe.snapshot import LaneState, Snapshot
from batchd.runtime import Runtime
from batchd.settings import Settings
from tests.console.scenes import pause
from tests.console.seed import submit_to_lanes


@pytest.fixture
def views(redis_url: str) -> Iterator[Views]:
    settings = Settings(redis_url=redis_url)
    rt = Runtime(settings)
    try:
        yield Views(settings, rt, History())
    finally:
        rt.close()


def test_no_daemon_and_no_worker_are_alerts(views: Views) -> None:
    """With requests waiting and no `batchd run` alive, the overview says both."""
    submit_to_lanes(views.store, 1, 2)
    kinds = [a["kind"] for a in views.overview()["alerts"]]
    assert "no_daemon" in kinds and "no_workers" in kinds


def test_paused_account_is_an_alert_with_its_reason(views: Views) -> None:
    """A paused account is named, with why, first among the warnings."""
    pause(views.store)
    [alert] = [a for a in views.overview()["alerts"] if a["kind"] == "paused"]
    assert alert["account"] == "default" and "401" in alert["detail"]
    assert views.paused()["paused"][0]["resumes_in_s"] > 500


def test_urls_lose_credentials() -> None:
    """User information and query values never show; the rest of the URL does."""
    assert (
        safe_url("https://u:p@hooks.example/a/b?t=1&x")
        == "https://***@hooks.example/a/b?t=***&x=***"
    )
    assert safe_url("http://h:8080/x") == "http://h:8080/x"
    assert safe_text("failed: POST https://a:b@h/x?k=v refused") == (
        "failed: POST https://***@h/x?k=*** refused"
    )


def test_backlog_chart_keeps_the_busiest_lanes_and_sums_the_rest() -> None:
    """Eight lanes by backlog get their own line; the others add up to one."""
    history = History(every=1)
    for i in range(3):
        lanes = [LaneState("a", str(p), pending=p * (i + 1), bytes=0, oldest_age_s=None)
                 for p in range(12)]  # fmt: skip
        history.add(Snapshot(now_ms=1_000_000 + i * 1000, lanes=lanes))
    charts = history.charts()["backlog"]
    names = [s["name"] for s in charts["series"]]
    assert names[:8] == [f"a/{p}" for p in range(11, 3, -1)]
    assert names[8] == "other lanes"
    assert charts["series"][8]["values"] == [6, 12, 18]  # lanes 1..3 (lane 0 is empty)
    assert len(charts["t"]) == 3


def test_a_sample_is_taken_once_per_period() -> None:
    history = History(every=5)
    assert history.add(Snapshot(now_ms=10_000))
    assert not history.add(Snapshot(now_ms=12_000))
    assert history.add(Snapshot(now_ms=15_000))


def test_cost_panel_without_a_ledger_says_so(views: Views, monkeypatch: pytest.MonkeyPatch) -> None:
    """A build without the cost reports shows the panel as unavailable, not an error."""
    monkeypatch.setattr(costs, "COST_MODULE", "batchd.no_such_ledger")
    cost = views.overview()["cost"]
    assert cost == {"available": False, "why": "this build of batchd has no cost ledger"}


def test_cost_panel_covers_the_last_24_hours(views: Views) -> None:
    """With the ledger: one row per hour of the last day, the current hour last."""
    cost = costs.cost_by_hour(views.store, views.settings, views.store.now_ms())
    assert cost["available"] is True
    assert len(cost["hours"]) == costs.COST_HOURS
    assert (
        cost["hours"][-1]["hour_ms"]
        <= views.store.now_ms()
        < cost["hours"][-1]["hour_ms"] + 3_600_000
    )
