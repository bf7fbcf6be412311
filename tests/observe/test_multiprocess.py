"""Metrics across processes: a daemon's own directory, and counts from child processes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from batchd.observe import lifecycle, metrics
from batchd.observe.worker import stage_of
from batchd.settings import Settings

CHILD = """
import sys
from batchd.observe import metrics
metrics.api_call("create", 200, 0.2)
metrics.api_call("retrieve", None, 1.5)
metrics.stage_job("poll", False, 0.1)
"""


def run_child(directory: Path) -> None:
    env = {**os.environ, metrics.MULTIPROC_ENV: str(directory)}
    subprocess.run([sys.executable, "-c", CHILD], env=env, check=True, timeout=60)


def read(directory: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        for s in family.samples
    }


def test_children_add_up(tmp_path: Path) -> None:
    """Counts from two worker processes are summed; a dead process's counts stay counted."""
    run_child(tmp_path)
    run_child(tmp_path)
    got = read(tmp_path)
    assert got[("batchd_api_requests_total", (("operation", "create"), ("status", "200")))] == 2
    no_answer = (("operation", "retrieve"), ("status", "no_response"))
    assert got[("batchd_api_requests_total", no_answer)] == 2
    assert got[("batchd_stage_job_failures_total", (("stage", "poll"),))] == 2
    assert got[("batchd_stage_job_failures_total", (("stage", "fanout"),))] == 0
    slow = (
        "batchd_api_request_duration_seconds_bucket",
        (("le", "1.0"), ("operation", "retrieve")),
    )
    assert got[slow] == 0
    assert got[("batchd_api_request_duration_seconds_count", (("operation", "retrieve"),))] == 2


def test_directory_is_fresh_and_dead_ones_go(tmp_path: Path) -> None:
    """A daemon gets an empty directory of its own; those of exited daemons are removed."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"{metrics.MULTIPROC_PREFIX}{dead.pid}"
    stale.mkdir()
    (stale / "counter_1.db").write_bytes(b"x")
    alive = tmp_path / f"{metrics.MULTIPROC_PREFIX}1"  # pid 1 is always running
    alive.mkdir()
    mine = metrics.prepare_directory(tmp_path)
    assert mine == tmp_path / f"{metrics.MULTIPROC_PREFIX}{os.getpid()}"
    assert mine.is_dir() and list(mine.iterdir()) == []
    assert not stale.exists()
    assert alive.exists()
    metrics.remove_directory(mine)
    assert not mine.exists()


def test_stage_label_of_a_job() -> None:
    """The stage is a job's first argument; anything unreadable is `other`."""

    class Job:
        def __init__(self, args: tuple[object, ...]) -> None:
            self.args = args

    class Broken:
        @property
        def args(self) -> tuple[object, ...]:
            raise ValueError("cannot decode")

    assert stage_of(Job(("fanout", "default", "A"))) == "fanout"
    assert stage_of(Job(())) == "other"
    assert stage_of(Broken()) == "other"


def test_unusable_metrics_dir_is_not_fatal(tmp_path: Path) -> None:
    """A metrics_dir that cannot be made is logged; the daemon goes on in single-process mode."""
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    settings = Settings.load(http={"metrics_dir": str(blocker / "sub")})
    observation = lifecycle.prepare(settings)
    assert observation.metrics_dir is None
    assert metrics.multiprocess_dir() is None
