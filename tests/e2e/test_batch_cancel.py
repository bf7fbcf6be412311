"""`batchd batches cancel` that fails leaves no cancel mark behind (bug 1 of issue 17)."""

from __future__ import annotations

import subprocess
import sys

from batchd.store.records import Assembly
from tests.e2e.conftest import Stack, SubmitFn
from tests.e2e.test_cli import batchd
from tests.support.daemon import wait_for


def marked(stack: Stack, batch_id: str) -> bool:
    """Whether the batch's assembly carries the operator's cancel mark."""
    batch = stack.client.batch(batch_id)
    assert batch is not None
    return bool(stack.client.redis.hexists(stack.client.keys.assembly("default", batch.id),
                                           Assembly.OPERATOR_CANCEL))  # fmt: skip


def test_cancel_without_an_api_key_leaves_the_batch_to_complete(
    stack: Stack, submit: SubmitFn
) -> None:
    """Refused for want of a key (exit 2), the cancel marks nothing: the batch completes and is
    counted completed, not canceled."""
    stack.emulator.set_profile({"processing_time": [2.0, 2.0]})
    stack.daemon()
    [rid] = submit(1)
    wait_for(lambda: stack.client.get(rid).batch_id, 30, "the batch to be created")
    batch_id = str(stack.client.get(rid).batch_id)
    env = {k: v for k, v in stack.env().items() if "API_KEY" not in k}
    proc = subprocess.run([sys.executable, "-m", "batchd", "batches", "cancel", batch_id],
                          env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 2
    assert "API key" in proc.stderr
    assert not marked(stack, batch_id)
    assert stack.client.wait(rid, timeout=60).status == "succeeded"
    wait_for(lambda: stack.counters().get("batches_ended:completed"), 30, "the batch to close")
    assert stack.counters().get("batches_ended:canceled", 0) == 0


def test_cancel_of_an_ended_batch_leaves_no_mark(stack: Stack, submit: SubmitFn) -> None:
    """The API refuses to cancel a batch that has ended (exit 1); its mark is taken back."""
    stack.daemon()
    [rid] = submit(1)
    batch_id = str(stack.client.wait(rid, timeout=60).batch_id)
    proc = batchd(stack, "batches", "cancel", batch_id)
    assert proc.returncode == 1
    assert "can no longer be canceled" in proc.stderr
    assert not marked(stack, batch_id)
