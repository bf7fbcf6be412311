"""`batchd demo`: batchd end to end on one machine, offline, from a bare checkout.

It starts an embedded Redis (unless one is configured), the emulator and the daemon, submits N
sample requests through the client with live progress, waits for every result and prints a summary.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from batchd import cost
from batchd.client import Client
from batchd.embedded import EmbeddedRedis
from batchd.logs import configure
from batchd.options import load_settings
from batchd.store import counters as counter_store
from batchd.store import new_token

#: The emulator's behaviour in the demo: a few errors and expiries, which batchd retries, so the
#: summary shows them. Times are on the emulator's clock, which runs CLOCK_SCALE times faster:
#: a request takes 10 to 60 emulated minutes, and the 24 h expiry comes after 20 real seconds.
DEMO_PROFILE: dict[str, Any] = {
    "seed": 7,
    "processing_time": [600, 3600],
    "result_api_error_rate": 0.02,
    "result_overloaded_rate": 0.01,
    "result_expired_rate": 0.002,
}
CLOCK_SCALE = 86400 / 20
#: One sample request in this many carries a parameter the API refuses after the batch runs.
INVALID_EVERY = 200
TOPICS = ("tides", "bread", "glaciers", "compilers", "bees", "jazz", "volcanoes", "chess")


def sample(i: int) -> dict[str, Any]:
    params: dict[str, Any] = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 256,
        "messages": [
            {
                "role": "user",
                "content": f"In one sentence, #{i}: what is interesting about "
                f"{TOPICS[i % len(TOPICS)]}?",
            }
        ],
    }
    if i % INVALID_EVERY == INVALID_EVERY - 1:
        params["temperature"] = 5  # outside [0, 1]: the API ends it errored
    return params


def run_demo(args: argparse.Namespace) -> int:
    from batchd.emulator.config import EmulatorConfig
    from batchd.emulator.faults import FaultProfile
    from batchd.emulator.server import start_in_thread

    console = Console(stderr=True)
    # The progress display is the demo's output; the daemon logs to a file, the rest is quiet.
    configure("warning", "console")
    n = int(args.requests)
    if n < 1:
        console.print("batchd demo: --requests must be at least 1")
        return 2
    settings = load_settings(args)
    data_dir = Path(args.data_dir or settings.data_dir / "demo").resolve()
    embedded: EmbeddedRedis | None = None
    if settings.redis_url:
        redis_url = settings.redis_url
        prefix = f"demo-{new_token()[-8:].lower()}"
    else:
        shutil.rmtree(data_dir / "redis", ignore_errors=True)
        embedded = EmbeddedRedis(data_dir)
        redis_url = embedded.start()
        prefix = "batchd"
        console.print(f"[bold]embedded Redis[/bold] (AOF on) with its data in {data_dir / 'redis'}")
    data_dir.mkdir(parents=True, exist_ok=True)
    emulator = start_in_thread(
        EmulatorConfig(
            port=0, clock_scale=CLOCK_SCALE, profile=FaultProfile.from_mapping(DEMO_PROFILE)
        )
    )
    console.print(f"[bold]emulator[/bold] of the Message Batches API at {emulator.url}")
    log_path = data_dir / "daemon.log"
    batch_size = max(100, min(10_000, n // 5 or 1))
    env = dict(os.environ)
    env.update(
        {
            "BATCHD_REDIS_URL": redis_url,
            "BATCHD_PREFIX": prefix,
            "BATCHD_ACCOUNTS__DEFAULT__API_KEY": emulator.api_key,
            "BATCHD_API__BASE_URL": emulator.url,
            "BATCHD_BATCH__MAX_REQUESTS": str(batch_size),
            "BATCHD_BATCH__MAX_WAIT": "1",
            "BATCHD_POLL__MIN_INTERVAL": "0.5",
            "BATCHD_POLL__MAX_INTERVAL": "2",
            "BATCHD_LOG__FORMAT": "json",
            # Its endpoints on any free port: a daemon already on the default one must not
            # stop the demo (a port that is taken stops `batchd run` at start).
            "BATCHD_HTTP__PORT": "0",
        }
    )
    log_file = open(log_path, "wb")  # noqa: SIM115
    daemon = subprocess.Popen(
        [sys.executable, "-m", "batchd", "run"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    console.print(f"[bold]batchd run[/bold] (pid {daemon.pid}), its log in {log_path}")
    client_settings = settings.model_copy(update={"redis_url": redis_url, "prefix": prefix})
    client = Client(settings=client_settings)
    statuses: Counter[str] = Counter()
    retried = 0
    started = time.monotonic()
    try:
        _wait_for_daemon(client, daemon, log_path)
        started = time.monotonic()
        started_ms = client.store.time_ms()
        columns = (
            TextColumn("{task.description:<22}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=console) as progress:
            submit_task = progress.add_task("submitting", total=n)
            result_task = progress.add_task("results", total=n)
            for start in range(0, n, 1000):
                items = [
                    {"params": sample(i), "reply_to": "demo", "key": f"demo-{i}"}
                    for i in range(start, min(n, start + 1000))
                ]
                outcomes = client.submit_many(items)
                bad = [o for o in outcomes if isinstance(o, Exception)]
                if bad:
                    raise RuntimeError(f"submit refused: {bad[0]}")
                progress.advance(submit_task, len(items))
            got = 0
            last_seen = time.monotonic()
            while got < n:
                for result in client.replies("demo", timeout=1, prefetch=100):
                    statuses[result.status] += 1
                    retried += result.attempts > 1
                    got += 1
                    last_seen = time.monotonic()
                    progress.advance(result_task)
                    if got >= n:
                        break
                if daemon.poll() is not None:
                    raise RuntimeError(
                        f"the daemon exited with {daemon.returncode}; see {log_path}"
                    )
                if time.monotonic() - last_seen > 120:
                    raise RuntimeError(f"no result for 120 s; see {log_path}")
        elapsed = time.monotonic() - started
        counters = counter_store.total(
            client.store.read(counter_store.read(client.keys, list(settings.accounts)))
        )
        spend = cost.report(client.store, client_settings, since_ms=started_ms, by=())
    except (RuntimeError, KeyboardInterrupt) as exc:
        console.print(f"[red]batchd demo failed:[/red] {exc}")
        return 1
    finally:
        client.close()
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
        log_file.close()
        emulator.stop()
        if embedded is not None:
            embedded.stop()
    table = Table(title=f"batchd demo: {n} requests", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("batches created", str(counters.get("batches_created", 0)))
    for status in ("succeeded", "errored", "canceled", "expired", "rejected", "dead"):
        if statuses.get(status) or status in ("succeeded", "errored"):
            table.add_row(f"requests {status}", str(statuses.get(status, 0)))
    # Counted from the results themselves, so the row agrees with the statuses above it.
    table.add_row("requests sent again (retryable error or expiry)", str(retried))
    table.add_row("wall time", f"{elapsed:.1f} s")
    table.add_row("requests per second", f"{n / elapsed:.0f}")
    u, c = spend.total.usage, spend.total.cost
    table.add_row("tokens in / out", f"{u.input:,} / {u.output:,}")
    if u.cache_write_5m or u.cache_write_1h or u.cache_read:
        written = u.cache_write_5m + u.cache_write_1h
        table.add_row("tokens cache write / read", f"{written:,} / {u.cache_read:,}")
    table.add_row("cost at batch prices", f"${c.billed:,.4f}")
    table.add_row("same tokens at real-time prices", f"${c.list:,.4f}")
    share = f" ({c.saved / c.list:.0%})" if c.list else ""
    table.add_row("saved", f"${c.saved:,.4f}{share}")
    out = Console()
    out.print(table)
    out.print(NEXT_STEPS)
    return 0 if sum(statuses.values()) == n else 1


#: What the demo suggests once it has shown its summary.
NEXT_STEPS = """\
[bold]Try next[/bold]
  make dev                 a dev loop: Redis, the emulator and batchd with 1 s windows,
                           and the exports for your own code (Ctrl-C stops all)
  docs/getting-started.md  a first request from Python, over HTTP, from the shell
  make demo N=10000        this demo with more requests"""


def _wait_for_daemon(client: Client, daemon: subprocess.Popen[bytes], log_path: Path) -> None:
    """Submit only once the daemon beats, so the client has no reason to warn none is alive."""
    deadline = time.monotonic() + 60
    while client.daemons_alive() == 0:
        if daemon.poll() is not None:
            raise RuntimeError(f"the daemon exited with {daemon.returncode}; see {log_path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the daemon did not start within 60 s; see {log_path}")
        time.sleep(0.1)
