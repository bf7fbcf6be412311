"""The operator CLI against a running daemon: submit FILE, status, batches, requests, flush."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Stack, SubmitFn, params


def batchd(stack: Stack, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "batchd", *args],
        env=stack.env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_jsonl(path: Path, lines: list[object]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    return path


def test_submit_file_waits_and_writes_results_by_custom_id(stack: Stack, tmp_path: Path) -> None:
    """`batchd submit FILE --wait --out` writes one result line per given custom_id."""
    stack.daemon()
    ids = ["order 1/ä", "order-2", "x" * 100]
    f = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": c, "params": params(i)}
                                            for i, c in enumerate(ids)])  # fmt: skip
    out = tmp_path / "out.jsonl"
    proc = batchd(stack, "submit", str(f), "--wait", "--out", str(out), "--flush")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["custom_id"] for r in rows) == sorted(ids)
    assert {r["status"] for r in rows} == {"succeeded"}
    assert all(r["result"]["type"] == "succeeded" for r in rows)


def test_submit_file_reports_every_bad_line_and_submits_nothing(
    stack: Stack, tmp_path: Path
) -> None:
    """Malformed lines, duplicates and bad params are each named; nothing is queued."""
    data = (
        "\ufeff"
        + json.dumps({"custom_id": "a", "params": params(1)})
        + "\n\n{not json\n"
        + json.dumps({"custom_id": "a", "params": params(2)})
        + "\n"
        + json.dumps({"custom_id": "b", "params": {"model": "m"}})
        + "\n"
        + json.dumps({"custom_id": "c", "params": params(3), "extra": 1})
        + "\n"
    )
    f = tmp_path / "bad.jsonl"
    f.write_text(data, encoding="utf-8")
    proc = batchd(stack, "submit", str(f))
    assert proc.returncode == 2
    for needle in ("line 3", "line 4", "repeats line 1", "line 5", "max_tokens", "line 6"):
        assert needle in proc.stderr
    assert "Traceback" not in proc.stderr
    assert stack.counters().get("submitted", 0) == 0


def test_status_json_shows_lanes_and_batches(stack: Stack, submit: SubmitFn) -> None:
    """`batchd status --json` reports the pending lane and, later, the counters."""
    submit(3)
    proc = batchd(stack, "status", "--json")
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    [lane] = status["lanes"]
    assert lane["pending"] == 3 and lane["account"] == "default"
    assert lane["bytes"] > 0 and lane["oldest_age_s"] >= 0
    assert status["counters"]["submitted"] == 3


def test_status_table_is_readable(stack: Stack, submit: SubmitFn) -> None:
    """`batchd status` prints tables of lanes and batches in flight."""
    submit(2)
    proc = batchd(stack, "status")
    assert proc.returncode == 0, proc.stderr
    assert "Lanes" in proc.stdout and "Batches in flight" in proc.stdout


def test_batches_list_and_show(stack: Stack, submit: SubmitFn) -> None:
    """`batchd batches list` names each batch; `show --json` adds the API's view of it."""
    stack.daemon()
    [rid] = submit(1)
    result = stack.client.wait(rid, timeout=60)
    listed = batchd(stack, "batches", "list")
    assert listed.returncode == 0, listed.stderr
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["batch_id"] for r in rows] == [result.batch_id]
    shown = batchd(stack, "batches", "show", str(result.batch_id), "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert info["api"]["processing_status"] == "ended"
    assert batchd(stack, "batches", "show", "msgbatch_nope").returncode == 3


def test_requests_show(stack: Stack, submit: SubmitFn) -> None:
    """`batchd requests show ID` prints the state; an unknown id exits 3."""
    [rid] = submit(1)
    proc = batchd(stack, "requests", "show", rid)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["state"] == "pending"
    assert batchd(stack, "requests", "show", "default.0" * 3).returncode == 3


def test_flush_cuts_the_lane_now(stack: Stack, submit: SubmitFn) -> None:
    """`batchd flush` makes a lane with a long max_wait go out at once."""
    stack.daemon(BATCHD_BATCH__MAX_WAIT="3600")
    [rid] = submit(1)
    proc = batchd(stack, "flush")
    assert proc.returncode == 0, proc.stderr
    assert stack.client.wait(rid, timeout=60).status == "succeeded"


def test_flush_one_lane(stack: Stack, submit: SubmitFn) -> None:
    """`batchd flush --lane default/0` cuts that lane; an unknown account exits 2."""
    stack.daemon(BATCHD_BATCH__MAX_WAIT="3600")
    [rid] = submit(1)
    assert batchd(stack, "flush", "--lane", "nobody/0").returncode == 2
    assert batchd(stack, "flush", "--lane", "default/0").returncode == 0
    assert stack.client.wait(rid, timeout=60).status == "succeeded"


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    """`batchd demo` starts its own Redis, emulator and daemon and exits 0 with a summary."""
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("BATCHD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "batchd", "demo", "--requests", "300", "--data-dir",
         str(tmp_path / "demo")],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batches created" in proc.stdout
    assert "succeeded" in proc.stdout
    assert "requests per second" in proc.stdout
