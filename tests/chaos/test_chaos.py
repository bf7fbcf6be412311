"""The reduced, seeded chaos run: every fault kind at least once, and nothing lost or repeated.

The same harness as `make chaos`, smaller: its checker trusts only what producers were told and
what reached them, and the emulator's own audit of batches and billing.
"""

from __future__ import annotations

from pathlib import Path

from tests.chaos.harness import ChaosConfig, run
from tests.chaos.nemesis import KINDS


def test_reduced_chaos_run_loses_repeats_and_double_bills_nothing(tmp_path: Path) -> None:
    """Replicas killed and paused, Redis and API faults: every result arrives exactly once."""
    report = run(ChaosConfig.reduced(seed=7, directory=tmp_path))
    detail = report.table() + "\n" + "\n".join(report.problems())
    v = report.verdict
    assert set(report.faults) == set(KINDS), detail
    assert v.acknowledged == report.config.requests, detail
    assert v.violations() == dict.fromkeys(v.violations(), 0), detail
    assert report.processing_left == 0, detail
    assert report.leaks == [], detail
    assert sum(v.statuses.values()) == v.acknowledged, detail
