"""A safe `batchd submit FILE --wait` and `batchd collect` (bug 2 of issue 17): the ids are on disk
before the wait, an interrupted run says how to collect the rest, a second run re-attaches."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import Stack, params
from tests.e2e.test_cli import batchd, write_jsonl

CUSTOM_IDS = ["a", "b", "c"]
#: What `submit --wait` says on stderr once the mapping is written, before waiting.
WRITTEN = "their ids are in "


@pytest.fixture
def batch_file(tmp_path: Path) -> Path:
    lines: list[object] = [{"custom_id": c, "params": params(i)} for i, c in enumerate(CUSTOM_IDS)]
    return write_jsonl(tmp_path / "in.jsonl", lines)


def mapping(path: Path) -> dict[str, str]:
    return {r["custom_id"]: r["id"] for r in map(json.loads, path.read_text().splitlines())}


@pytest.fixture
def waiting(stack: Stack, batch_file: Path, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """`submit --wait` with no daemon alive, started and read up to its "ids are in" line."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "batchd", "submit", str(batch_file), "--wait",
         "--out", str(tmp_path / "out.jsonl")],
        env=stack.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stderr is not None
    for line in proc.stderr:
        if WRITTEN in line:
            break
    else:
        pytest.fail(f"submit --wait ended before writing its ids (exit {proc.wait()})")
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()


def test_ids_are_on_disk_before_the_wait(
    stack: Stack, waiting: subprocess.Popen[str], tmp_path: Path
) -> None:
    """While it waits, the mapping beside --out already names every line's request."""
    assert waiting.poll() is None
    ids = mapping(tmp_path / "out.ids.jsonl")
    assert sorted(ids) == CUSTOM_IDS
    assert all(stack.client.get(rid).state == "pending" for rid in ids.values())


def test_interrupted_wait_says_how_to_collect(
    waiting: subprocess.Popen[str], tmp_path: Path
) -> None:
    """Ctrl-C ends the wait with exit 130 and the `batchd collect` command that gets the rest."""
    waiting.send_signal(signal.SIGINT)
    assert waiting.wait(timeout=30) == 130
    assert waiting.stderr is not None
    said = waiting.stderr.read()
    assert "interrupted: 0 of 3 results written" in said
    assert f"batchd collect {tmp_path / 'out.ids.jsonl'} --out {tmp_path / 'out.jsonl'}" in said
    assert "Traceback" not in said


def test_timeout_says_how_to_collect(stack: Stack, batch_file: Path, tmp_path: Path) -> None:
    """`--timeout` ends the wait with exit 4 and the same advice."""
    proc = batchd(stack, "submit", str(batch_file), "--wait", "--timeout", "0.5")
    assert proc.returncode == 4
    assert "timed out after 0.5 s: 0 of 3 results written" in proc.stderr
    assert f"batchd collect {tmp_path / 'in.ids.jsonl'}" in proc.stderr


def test_collect_writes_every_result_of_a_mapping(
    stack: Stack, batch_file: Path, tmp_path: Path
) -> None:
    """`batchd collect MAPFILE --out FILE` waits for each request named and writes its result
    under its custom_id."""
    ids_file = tmp_path / "ids.jsonl"
    submitted = batchd(stack, "submit", str(batch_file))
    assert submitted.returncode == 0, submitted.stderr
    ids_file.write_text(submitted.stdout)
    stack.daemon()
    out = tmp_path / "results.jsonl"
    proc = batchd(stack, "collect", str(ids_file), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["custom_id"], r["id"]) for r in rows) == sorted(mapping(ids_file).items())
    assert {r["status"] for r in rows} == {"succeeded"}


def test_running_a_file_again_reattaches(stack: Stack, batch_file: Path, tmp_path: Path) -> None:
    """The same file submitted again queues nothing new: each line re-attaches to its request."""
    stack.daemon()
    first = batchd(stack, "submit", str(batch_file), "--wait", "--out", str(tmp_path / "1.jsonl"))
    assert first.returncode == 0, first.stderr
    again = batchd(stack, "submit", str(batch_file), "--wait", "--out", str(tmp_path / "2.jsonl"))
    assert again.returncode == 0, again.stderr
    assert "0 requests queued, 3 re-attached" in again.stderr
    assert stack.counters()["submitted"] == 3
    assert mapping(tmp_path / "1.ids.jsonl") == mapping(tmp_path / "2.ids.jsonl")
    assert len((tmp_path / "2.jsonl").read_text().splitlines()) == 3


def test_key_prefix_names_the_keys(stack: Stack, batch_file: Path) -> None:
    """With `--key-prefix P`, line `a`'s idempotency key is `Pa`."""
    proc = batchd(stack, "submit", str(batch_file), "--key-prefix", "run-1/")
    assert proc.returncode == 0, proc.stderr
    ids = {r["custom_id"]: r["id"] for r in map(json.loads, proc.stdout.splitlines())}
    assert stack.client.find("run-1/a").id == ids["a"]


def test_waiting_uses_no_reply_queue(stack: Stack, batch_file: Path, tmp_path: Path) -> None:
    """`submit --wait` waits on the requests themselves: it leaves no reply queue behind."""
    stack.daemon()
    proc = batchd(stack, "submit", str(batch_file), "--wait", "--out", str(tmp_path / "o.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert stack.client.redis.keys(f"{stack.client.keys.prefix}:reply:*") == []
