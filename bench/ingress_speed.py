"""How many submits per second one `batchd run` takes over HTTP, from keep-alive connections.

Usage: .venv/bin/python bench/ingress_speed.py [--n 30000] [--connections 64] [--url URL]
(starts redis-server, the emulator and `batchd run` with the ingress on 127.0.0.1 unless --url
names a running ingress; the load generator is an aiohttp client in its own process.)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from batchd.store import Keys, Store, connect
from batchd.store import counters as counter_store

PARAMS = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "Summarise ticket #{i}: the printer is on fire."}],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(
    check: object, proc: subprocess.Popen[bytes], what: str, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if callable(check) and check():
                return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"{what} did not start")
        time.sleep(0.05)


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process and its threads so far (Linux), 0 without one."""
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def port_open(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=1) as resp:
        return bool(resp.status == 200)


async def load(url: str, n: int, connections: int, warmup: int) -> dict[str, float]:
    """POST n submits over `connections` keep-alive connections; times all but the warm-up."""
    import aiohttp

    bodies = [
        json.dumps(
            {
                "params": {
                    **PARAMS,
                    "messages": [{"role": "user", "content": f"Summarise ticket #{i}."}],
                },
                "metadata": {"ticket": i},
            }
        ).encode()
        for i in range(n + warmup)
    ]
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    next_index = 0

    async def worker(session: aiohttp.ClientSession, timed: bool, limit: int) -> None:
        nonlocal next_index
        while next_index < limit:
            body = bodies[next_index]
            next_index += 1
            started = time.perf_counter()
            async with session.post(f"{url}/v1/requests", data=body, headers=headers) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
            if timed:
                latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=connections, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session, False, warmup) for _ in range(connections)))
        statuses.clear()
        started = time.perf_counter()
        await asyncio.gather(*(worker(session, True, warmup + n) for _ in range(connections)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "seconds": elapsed,
        "per_second": n / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
        "statuses": statuses,  # type: ignore[dict-item]
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=30_000, help="timed submits (default 30000)")
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--url", help="a running ingress; nothing is started")
    parser.add_argument("--load", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.load:
        result = asyncio.run(load(args.load, args.n, args.connections, args.warmup))
        print(json.dumps(result))
        return

    procs: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="batchd-bench-ingress-"))
    redis_url = None
    try:
        url = args.url
        if url is None:
            rport = free_port()
            server = shutil.which("redis-server") or "redis-server"
            cmd = [server, "--port", str(rport), "--bind", "127.0.0.1", "--dir", str(workdir)]
            cmd += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
            cmd += ["--maxmemory-policy", "noeviction"]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
            wait_until(lambda: port_open(rport), procs[-1], "redis-server")
            redis_url = f"redis://127.0.0.1:{rport}/0"
            emu = subprocess.Popen(
                [sys.executable, "-m", "batchd", "emulator", "--port", "0",
                 "--api-key", "sk-ant-emulator-bench"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            procs.append(emu)
            assert emu.stdout is not None
            api_url = emu.stdout.readline().decode().rsplit(" ", 1)[-1].strip()
            iport = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
            env.update(
                {
                    "BATCHD_REDIS_URL": redis_url,
                    "BATCHD_API__BASE_URL": api_url,
                    "BATCHD_ACCOUNTS__DEFAULT__API_KEY": "sk-ant-emulator-bench",
                    "BATCHD_INGRESS__ENABLED": "true",
                    "BATCHD_INGRESS__PORT": str(iport),
                    "BATCHD_INGRESS__RATE_LIMIT": "0",
                    "BATCHD_HTTP__PORT": "0",
                    "BATCHD_LOG__LEVEL": "warning",
                    "BATCHD_LOG__FORMAT": "json",
                }
            )
            log = (workdir / "daemon.log").open("wb")
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "batchd", "run"],
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            url = f"http://127.0.0.1:{iport}"
            wait_until(lambda: http_ok(f"{url}/openapi.json"), procs[-1], "batchd run")
        daemon_pid = procs[-1].pid if args.url is None else None
        cpu_before = cpu_seconds(daemon_pid)
        load_before = os.getloadavg()[0]
        loader = subprocess.run(
            [sys.executable, __file__, "--load", url, "--n", str(args.n),
             "--connections", str(args.connections), "--warmup", str(args.warmup)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        result = json.loads(loader.stdout)
        cpu_used = cpu_seconds(daemon_pid) - cpu_before
        stored = None
        if redis_url is not None:
            store = Store(connect(redis_url), Keys())
            found = store.read(counter_store.read(store.keys, ["default"]))
            stored = found["default"].get("submitted", 0)
            store.close()
        print(
            f"{args.n} submits in {result['seconds']:.2f}s: {result['per_second']:,.0f}/s over "
            f"{args.connections} keep-alive connections (p50 {result['p50_ms']:.1f} ms, "
            f"p99 {result['p99_ms']:.1f} ms; statuses {result['statuses']}; "
            f"stored {stored} incl. {args.warmup} warm-up; {os.cpu_count()} CPUs, load "
            f"{load_before:.1f} before)"
        )
        if daemon_pid is not None:
            per = cpu_used / (args.n + args.warmup) * 1e6
            print(
                f"batchd run used {cpu_used:.2f} CPU-s: {per:.0f} us per submit, "
                f"{1e6 / per:,.0f} submits per CPU-second"
            )
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
