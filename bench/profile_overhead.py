"""Where batchd's CPU goes on the overhead benchmark's workload, stage by stage, in one process.

Usage: .venv/bin/python bench/profile_overhead.py [--requests 5000] [--size 1000] [--batch 1000]
       [--html DIR]
Starts its own redis-server (appendfsync always, as the benchmarks) and emulator (no processing
time), then runs each step of the pipeline in this process, as `batchd run`'s loops and stage
workers would, under pyinstrument: the producer's submit_many, the aggregator's cuts, the submit
stage (uploads), the poll stage, the fan-out stage, a consumer reading the reply queue. Prints
each step's CPU seconds (this process, and Redis's) and pyinstrument's heaviest frames; `--html`
writes each step's full profile.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from pyinstrument import Profiler

from batchd import Client, Ticket, aggregate, stages
from batchd.logs import configure
from batchd.runtime import Runtime
from batchd.store.scripts import SCRIPTS
from bench.common import API_KEY, commandstats, params, redis_cpu, settings
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer

QUEUE = "profile"


def step(name: str, fn: Callable[[], object], r: redis.Redis, html: Path | None) -> None:
    profiler = Profiler(interval=0.0005)
    stats0 = commandstats(r)
    cpu0, rcpu0, t0 = time.process_time(), redis_cpu(r), time.perf_counter()
    profiler.start()
    fn()
    profiler.stop()
    cpu, rcpu = time.process_time() - cpu0, redis_cpu(r) - rcpu0
    wall = time.perf_counter() - t0
    stats = commandstats(r)
    print(f"\n== {name}: {wall:.2f} s wall, {cpu:.2f} CPU-s here, {rcpu:.2f} CPU-s in Redis")
    # Scripts by name; INFO commandstats also counts each redis.call inside them on its own.
    scripts = {s.sha: n for n, s in SCRIPTS.items()}
    slow: dict[str, tuple[int, int]] = {}
    for entry in r.slowlog_get(100_000):
        words = (
            entry["command"].decode(errors="replace").split()
            if isinstance(entry["command"], bytes)
            else str(entry["command"]).split()
        )
        if len(words) > 1 and words[0].upper() == "EVALSHA":
            name_ = scripts.get(words[1].lower(), words[1][:8])
            total, calls = slow.get(name_, (0, 0))
            slow[name_] = (total + int(entry["duration"]), calls + 1)
    r.slowlog_reset()
    for command, (n, us) in sorted(
        stats.items(), key=lambda kv: -(kv[1][1] - stats0.get(kv[0], (0, 0.0))[1])
    ):
        n0, us0 = stats0.get(command, (0, 0.0))
        if n - n0 and command != "info":
            print(f"   redis {command:12s} {n - n0:7d} calls {(us - us0) / 1e6:6.3f} s")
    for script_name, (total, calls) in sorted(slow.items(), key=lambda kv: -kv[1][0]):
        print(f"   script {script_name:12s} {calls:7d} calls {total / 1e6:6.3f} s")
    print(profiler.output_text(unicode=False, color=False, show_all=False, short_mode=False)[:6000])
    if html is not None:
        (html / f"{name.replace(' ', '_')}.html").write_text(profiler.output_html())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--html", type=Path)
    args = parser.parse_args()
    configure(level="error", fmt="console")
    if args.html:
        args.html.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="batchd-profile-"))
    server = RedisServer(tmp / "redis")
    server.start()
    emu = EmulatorProcess(tmp / "emulator", api_keys=(API_KEY,), args=["--processing-time", "0"])
    emu.start()
    try:
        s = settings(server.url, emu.url, batch={"max_requests": args.batch, "max_wait": 3600})
        r = redis.Redis.from_url(server.url)
        r.config_set("slowlog-log-slower-than", 0)
        r.config_set("slowlog-max-len", 100_000)
        client = Client(settings=s)
        rt = Runtime(s)
        items = [{"params": params(i, args.size), "reply_to": QUEUE} for i in range(args.requests)]
        asms: list[str] = []

        def produce() -> None:
            out = client.submit_many(items)
            assert all(isinstance(o, Ticket) for o in out)

        def cut() -> None:
            while (asm := aggregate.cut(rt, "default", "0", "count")) is not None:
                asms.append(asm)

        def submit() -> None:
            for asm in asms:
                assert stages.run(rt, "default", asm) == "submitted"

        def poll() -> None:
            for asm in asms:
                assert stages.run(rt, "default", asm) == "ended"

        def fanout() -> None:
            for asm in asms:
                assert stages.run(rt, "default", asm) == "done"

        def consume() -> None:
            got = 0
            with client.replies(QUEUE, timeout=5, prefetch=100) as stream:
                for _ in stream:
                    got += 1
                    if got == args.requests:
                        break
            assert got == args.requests, got

        for name, fn in (("producer submit_many", produce), ("aggregator cuts", cut),
                         ("submit stage", submit), ("poll stage", poll),
                         ("fan-out stage", fanout), ("consumer", consume)):  # fmt: skip
            step(name, fn, r, args.html)
        rt.close()
        client.close()
    finally:
        emu.stop()
        server.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
