"""Look-ups from the CLI: requests by key and by batch, batches shown readably and their results
written, `--version`, the no-daemon warning and output into a closed pipe."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from batchd.store import AssemblyRecord
from tests.e2e.conftest import Stack, SubmitFn, params
from tests.e2e.test_cli import batchd, write_jsonl
from tests.support.daemon import wait_for

ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def in_flight(stack: Stack, rid: str) -> AssemblyRecord:
    """The batch a request is in, once it has been created at the API."""
    wait_for(lambda: stack.client.get(rid).batch_id, 30, "the batch to be created")
    found = stack.client.batch(str(stack.client.get(rid).batch_id))
    assert found is not None
    return found


def test_find_by_key(stack: Stack) -> None:
    """`requests find --key` shows the request submitted under the key; an unknown key exits 3."""
    ticket = stack.client.submit(params(1), key="order-17")
    proc = batchd(stack, "requests", "find", "--key", "order-17")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["id"] == ticket.id
    assert batchd(stack, "requests", "find", "--key", "order-18").returncode == 3


def test_list_a_batch_in_flight_by_either_id(stack: Stack, submit: SubmitFn) -> None:
    """`requests list --batch` gives the requests of a batch in flight, named by the API's id or
    batchd's `<account>.<id>` alike."""
    stack.emulator.set_profile({"processing_time": [600, 600]})
    stack.daemon()
    ids = submit(3)
    batch = in_flight(stack, ids[0])
    for ref in (str(batch.batch_id), f"{batch.account}.{batch.id}"):
        proc = batchd(stack, "requests", "list", "--batch", ref, "--json")
        assert proc.returncode == 0, proc.stderr
        rows = [json.loads(line) for line in proc.stdout.splitlines()]
        assert sorted(r["id"] for r in rows) == sorted(ids)
        assert {r["state"] for r in rows} == {"batched"}


def test_list_a_closed_batch_from_its_results(stack: Stack, submit: SubmitFn) -> None:
    """A closed batch keeps no list of its requests; its results at the API name them."""
    stack.daemon()
    ids = submit(2)
    [result, _] = stack.client.wait_many(ids, timeout=60)
    proc = batchd(stack, "requests", "list", "--batch", str(result.batch_id))
    assert proc.returncode == 0, proc.stderr
    assert f"2 requests in batch {result.batch_id}" in proc.stdout
    assert all(rid in proc.stdout for rid in ids)


def test_batches_show_is_readable_for_an_assembly_id(stack: Stack, submit: SubmitFn) -> None:
    """`batches show <account>.<id>` (as `status` names a batch) prints names, states and ISO
    times, then the API's view."""
    stack.daemon()
    [rid] = submit(1)
    result = stack.client.wait(rid, timeout=60)
    batch = stack.client.batch(str(result.batch_id))
    assert batch is not None
    proc = batchd(stack, "batches", "show", f"{batch.account}.{batch.id}")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"batch        {result.batch_id}" in out
    assert "state        done: every request has ended or gone round again" in out
    assert "API counts   processing 0, succeeded 1" in out
    assert len(ISO.findall(out.split("the API's view")[0])) == 4
    assert "the API's view (retrieved now):" in out and "status       ended" in out
    for raw in ("st", "cnt", "bid"):
        assert not re.search(rf"^\s*{raw}\b", out, re.M)


def test_batches_show_says_it_needs_the_api_key(stack: Stack, submit: SubmitFn) -> None:
    """Without the account's API key, `batches show` shows batchd's view and names the key it
    would need for the API's."""
    stack.daemon()
    [rid] = submit(1)
    batch_id = str(stack.client.wait(rid, timeout=60).batch_id)
    env = {k: v for k, v in stack.env().items() if "API_KEY" not in k}
    proc = subprocess.run([sys.executable, "-m", "batchd", "batches", "show", batch_id],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "state        done" in proc.stdout
    assert "not shown: it needs account 'default''s API key" in proc.stdout
    assert "BATCHD_ACCOUNTS__DEFAULT__API_KEY" in proc.stdout


def test_batches_results_writes_jsonl(stack: Stack, submit: SubmitFn, tmp_path: Path) -> None:
    """`batches results ID --out FILE` writes the API's results, one line per request."""
    stack.daemon()
    ids = submit(3)
    results = stack.client.wait_many(ids, timeout=60)
    out = tmp_path / "results.jsonl"
    proc = batchd(stack, "batches", "results", str(results[0].batch_id), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(f"default.{line['custom_id']}" for line in lines) == sorted(ids)
    assert {line["result"]["type"] for line in lines} == {"succeeded"}
    assert "3 results" in proc.stderr


def test_version(stack: Stack) -> None:
    """`batchd --version` prints the installed version."""
    proc = batchd(stack, "--version")
    assert proc.returncode == 0
    assert re.fullmatch(r"batchd \S+\n", proc.stdout)


def test_submit_warns_when_no_daemon_is_alive(stack: Stack, tmp_path: Path) -> None:
    """`submit FILE` with no daemon alive stores the requests and says nothing will batch them;
    stdout still holds only the ids."""
    f = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "params": params(1)}])
    proc = batchd(stack, "submit", str(f))
    assert proc.returncode == 0, proc.stderr
    assert "no batchd daemon is alive" in proc.stderr
    assert [json.loads(line)["custom_id"] for line in proc.stdout.splitlines()] == ["a"]


def test_submit_with_a_daemon_alive_does_not_warn(stack: Stack, tmp_path: Path) -> None:
    """With a daemon alive there is no warning."""
    stack.daemon()
    wait_for(lambda: stack.client.daemons_alive(), 30, "the daemon's heartbeat")
    f = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "params": params(1)}])
    proc = batchd(stack, "submit", str(f))
    assert proc.returncode == 0, proc.stderr
    assert "no batchd daemon is alive" not in proc.stderr


def test_output_into_a_closed_pipe_ends_quietly(stack: Stack, submit: SubmitFn) -> None:
    """`batchd requests show ID | head` whose reader left: exit 141, no traceback."""
    [rid] = submit(1)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "batchd", "requests", "show", rid],
                              env=stack.env(), stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=60)  # fmt: skip
    finally:
        os.close(write_end)
    assert proc.returncode == 141
    assert proc.stderr == ""


def test_request_state_names_its_state_status_as_results_do(stack: Stack, submit: SubmitFn) -> None:
    """`get()` answers `.status` (as a Result does), the same as `.state`, before and after."""
    stack.daemon()
    [rid] = submit(1)
    live = stack.client.get(rid)
    assert live.status == live.state in ("pending", "batched")
    result = stack.client.wait(rid, timeout=60)
    ended = stack.client.get(rid)
    assert ended.status == ended.state == result.status == "succeeded"
