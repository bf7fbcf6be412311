"""A sender killed with SIGKILL mid-flight: another one finishes its work, nothing is lost."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import redis

from batchd.keys import webhook_id
from tests.webhooks.support import Receiver, Reply, enqueue, record, wait_until

ROOT = Path(__file__).resolve().parents[2]


def spawn_sender(redis_url: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "tests.webhooks.sender_process", redis_url, "1.0"],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def test_kill_9_mid_flight_loses_no_delivery(
    redis_url: str, redis_client: redis.Redis, receiver: Receiver, tmp_path: Path
) -> None:
    """After SIGKILL with deliveries in flight, a new sender delivers every one, same ids."""
    receiver.reply = lambda r: Reply(200, delay=0.3)
    tokens = [enqueue(redis_client, receiver.url()) for _ in range(30)]
    log = tmp_path / "senders.log"
    first = spawn_sender(redis_url, log)
    try:
        receiver.wait_for(8, timeout=20)  # eight POSTs are now waiting for their answers
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
    assert len(receiver.requests) < len(tokens), "the first sender finished before the kill"

    second = spawn_sender(redis_url, log)
    try:
        wait_until(
            lambda: all(record(redis_client, t).get("state") == "delivered" for t in tokens),
            timeout=30,
            what="every delivery to be delivered",
        )
    finally:
        second.terminate()
        assert second.wait(30) == 0, log.read_text()

    ids = Counter(r.headers["webhook-id"] for r in receiver.requests)
    assert set(ids) == {webhook_id(t) for t in tokens}
    assert max(ids.values()) > 1, "no delivery was in flight at the kill"
    for r in receiver.requests:
        # A repeat is the same message: same id, same body.
        token = json.loads(r.body)["id"].split(".")[1]
        assert r.headers["webhook-id"] == webhook_id(token)
