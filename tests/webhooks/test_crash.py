"""A sender killed with SIGKILL mid-flight: another one finishes its work, nothing is lost."""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from pathlib import Path

from batchd.store import Store, split_request_id, webhook_id
from tests.webhooks.support import Receiver, Reply, enqueue, record, spawn_sender, wait_until


def test_kill_9_mid_flight_loses_no_delivery(
    redis_url: str, store: Store, receiver: Receiver, tmp_path: Path
) -> None:
    """After SIGKILL with deliveries in flight, a new sender delivers every one, same ids."""
    receiver.reply = lambda r: Reply(200, delay=0.3)
    tokens = [enqueue(store, receiver.url()) for _ in range(30)]
    log = tmp_path / "senders.log"
    first = spawn_sender(redis_url, log)
    try:
        receiver.wait_for(8, timeout=20)  # eight POSTs are now waiting for their answers
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert len(receiver.requests) < len(tokens), "the first sender finished before the kill"

    def all_delivered() -> bool:
        return all((r := record(store, t)) is not None and r.state == "delivered" for t in tokens)

    second = spawn_sender(redis_url, log)
    try:
        wait_until(all_delivered, timeout=30, what="every delivery to be delivered")
    finally:
        second.terminate()
        assert second.wait(30) == 0, log.read_text()

    ids = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert set(ids) == {webhook_id(t) for t in tokens}
    assert max(ids.values()) > 1, "no delivery was in flight at the kill"
    for r in receiver.requests:
        # A repeat is the same message: same id, same body.
        _, token = split_request_id(json.loads(r.body)["id"])
        assert r.headers["webhook-id"] == webhook_id(token)
