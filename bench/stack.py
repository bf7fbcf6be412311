"""What the benchmarks that drive a whole `batchd run` share: the daemon, consumer processes on
each result channel, and what Redis and the emulator recorded of each batch.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from rq import Worker

from batchd.api import BatchesClient, MessageBatch
from batchd.store import AssemblyRecord, Store
from batchd.store import assemblies as asm_store
from batchd.store import counters as counter_store
from bench.common import ACCOUNT, settings, tree, wait_until
from tests.support.daemon import DaemonProcess

#: A consumer process: reads a channel until it has `n` results, then prints when the first and
#: the last came (time.time()) and the CPU seconds it spent since it said `ready`. Channels:
#: `queue` (a reply queue, with a prefetch), `wait` (`threads` threads calling `Client.wait` on
#: the ids it reads from stdin).
CONSUMER = r"""
import json, os, sys, threading, time
from batchd import Client, Settings
from batchd.logs import configure
configure(level="error", fmt="console")
url, channel, name = sys.argv[1:4]
n, arg = int(sys.argv[4]), int(sys.argv[5])
client = Client(settings=Settings.load(redis_url=url))
times = []
PER_CLIENT = 90
t0 = os.times()
if channel == "queue":
    print("ready", flush=True)
    with client.replies(name, timeout=900, prefetch=arg) as stream:
        for result in stream:
            times.append(time.time())
            if len(times) == n:
                break  # leaving the loop acknowledges what was read
else:
    ids = [line.strip() for line in sys.stdin if line.strip()]
    assert len(ids) == n, len(ids)
    lock = threading.Lock()
    # A client's pool holds 100 connections (redis-py's default) and each waiting thread
    # blocks one: PER_CLIENT threads share a client.
    clients = [client] + [Client(settings=Settings.load(redis_url=url))
                          for _ in range((arg - 1) // PER_CLIENT)]
    def waiter(mine, c):
        for rid in mine:
            c.wait(rid, timeout=900)
            now = time.time()
            with lock:
                times.append(now)
    threads = [threading.Thread(target=waiter, args=(ids[i::arg], clients[i // PER_CLIENT]))
               for i in range(arg)]
    for t in threads:
        t.start()
    t0 = os.times()
    print("ready", flush=True)
    for t in threads:
        t.join()
t = os.times()
client.close()
print(json.dumps({"got": len(times), "first": min(times), "last": max(times),
                  "cpu": t.user + t.system - t0.user - t0.system}), flush=True)
"""


@dataclass
class Consumed:
    got: int
    first: float
    last: float
    cpu: float


class Consumer:
    """One consumer process on a result channel (see CONSUMER)."""

    def __init__(
        self,
        redis_url: str,
        channel: str,
        name: str,
        n: int,
        arg: int,
        ids: list[str] | None = None,
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", CONSUMER, redis_url, channel, name, str(n), str(arg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if channel == "wait":
            self.proc.stdin.write("".join(f"{rid}\n" for rid in ids or []))
        self.proc.stdin.close()
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"the consumer did not start: {line!r}")

    def result(self, timeout: float = 900) -> Consumed:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        self.proc.wait(timeout)
        if not line:
            raise RuntimeError(f"the consumer ended without an answer ({self.proc.returncode})")
        got = json.loads(line)
        return Consumed(got["got"], got["first"], got["last"], got["cpu"])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def start_daemon(directory: Path, env: dict[str, str], store: Store) -> DaemonProcess:
    """`batchd run`, started and waited for: heartbeat seen, stage workers up."""
    daemon = DaemonProcess(directory, env)
    daemon.start()
    wait_for_daemon(daemon, store, workers=int(env.get("BATCHD_RUN__WORKERS", "2")))
    return daemon


def wait_for_daemon(daemon: DaemonProcess, store: Store, workers: int = 2) -> None:
    """Until the daemon's heartbeat is in Redis and its stage workers listen on their queues
    (rq registers each; a worker takes seconds to import on a busy machine)."""
    assert daemon.proc is not None
    pid = daemon.proc.pid
    wait_until(
        lambda: any(who.split(":")[1] == str(pid) for who, _ in alive(store)), 120, "batchd run"
    )
    wait_until(lambda: listening(pid, store) >= workers, 120, "the stage workers", 0.05)


def listening(pid: int, store: Store) -> int:
    """How many of the daemon's stage workers rq has registered (its queues live on the data
    Redis in these benchmarks)."""
    mine = set(tree(pid))
    return sum(1 for w in Worker.all(connection=store.client) if w.pid in mine)


def alive(store: Store) -> list[tuple[str, float]]:
    return store.read(counter_store.alive(store.keys, store.now_ms()))


def assemblies(store: Store) -> list[AssemblyRecord]:
    """Every assembly that made a batch (within retention), oldest first."""
    asms = store.read(asm_store.recent_batches(store.keys, ACCOUNT, 100_000))
    found = store.read(asm_store.read_many(store.keys, [(ACCOUNT, a) for a in asms]))
    return sorted(found, key=lambda a: a.submitted_ms or 0)


def emulated_batches(api_url: str) -> dict[str, MessageBatch]:
    """Every batch the emulator holds for the benchmark's key, by id (through the API)."""
    api = BatchesClient.from_settings(settings("redis://127.0.0.1:9", api_url), ACCOUNT)
    try:
        return {b.id: b for b in api.iter_batches(limit=1000)}
    finally:
        api.close()


def epoch(at: datetime | None) -> float:
    assert at is not None
    return at.timestamp()


def ms(value: int | None) -> float:
    """A Redis-clock ms field as epoch seconds."""
    assert value is not None
    return value / 1000


_CALL = re.compile(r'\\"(GET|POST|DELETE) /v1/messages/batches([^ ?]*)')


def call_kind(method: str, rest: str) -> str:
    """An access-log line's Batches API call: create, list, retrieve, results, cancel, delete."""
    if method == "POST":
        return "create" if not rest else "cancel"
    if method == "DELETE":
        return "delete"
    if not rest:
        return "list"
    return "results" if rest.endswith("results") else "retrieve"


class CallLog:
    """The Batches API calls an emulator started with `--access-log` has answered so far, by
    kind, read from its log as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.counts: dict[str, int] = {}

    def read(self) -> dict[str, int]:
        if self.path.exists():
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                data = fh.read()
            end = data.rfind(b"\n") + 1  # a line still being written waits for the next read
            self.offset += end
            for method, rest in _CALL.findall(data[:end].decode(errors="replace")):
                kind = call_kind(method, rest)
                self.counts[kind] = self.counts.get(kind, 0) + 1
        return dict(self.counts)
