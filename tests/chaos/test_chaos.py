"""The reduced, seeded chaos runs: every fault kind at least once, and nothing lost or repeated,
on one Redis and on a Redis Cluster.

The same harness as `make chaos`, smaller: its checker trusts only what producers were told and
what reached them, and the emulator's own audit of batches and billing.
"""

from __future__ import annotations

from pathlib import Path

from tests.chaos.harness import ChaosConfig, Report, run
from tests.chaos.nemesis import CLUSTER_KINDS, KINDS


def assert_nothing_broke(report: Report, kinds: dict[str, str]) -> None:
    detail = report.table() + "\n" + "\n".join(report.problems())
    v = report.verdict
    assert set(report.faults) == set(kinds), detail
    assert v.acknowledged == report.config.requests, detail
    assert v.violations() == dict.fromkeys(v.violations(), 0), detail
    assert report.processing_left == 0, detail
    assert report.leaks == [], detail
    assert sum(v.statuses.values()) == v.acknowledged, detail


def test_reduced_chaos_run_loses_repeats_and_double_bills_nothing(tmp_path: Path) -> None:
    """Replicas killed and paused, Redis and API faults: every result arrives exactly once."""
    assert_nothing_broke(run(ChaosConfig.reduced(seed=7, directory=tmp_path)), KINDS)


def test_reduced_chaos_run_on_a_redis_cluster_loses_repeats_and_double_bills_nothing(
    tmp_path: Path,
) -> None:
    """Master kills, failovers, live slot moves, API faults: every result once, paid once."""
    report = run(ChaosConfig.reduced(seed=7, directory=tmp_path, cluster=True))
    assert_nothing_broke(report, CLUSTER_KINDS)
