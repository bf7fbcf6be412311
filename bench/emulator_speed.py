"""How many keep-alive connections the emulator holds, and how fast it streams a big results file.

Usage: .venv/bin/python bench/emulator_speed.py [--connections 500] [--rounds 20]
       [--requests 100000] [--request-bytes 2500]
(starts its own `batchd emulator`; the results are read by httpx in a separate process).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx

KEY = "sk-ant-emulator-bench"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}

# Runs in its own process so reading does not share a CPU budget with the emulator's loop.
READER = """
import json, sys, time, httpx
url, key = sys.argv[1], sys.argv[2]
headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
started = time.monotonic()
lines = size = 0
with httpx.Client(timeout=600) as client:
    with client.stream("GET", url, headers=headers) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line:
                lines += 1
                size += len(line) + 1
print(json.dumps({"lines": lines, "bytes": size, "seconds": time.monotonic() - started}))
"""


def start_emulator() -> tuple[subprocess.Popen[bytes], str]:
    cmd = [sys.executable, "-m", "batchd", "emulator", "--port", "0", "--api-key", KEY]
    cmd += ["--clock-scale", "0", "--processing-time", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    return proc, line.rsplit(" ", 1)[-1].strip()


def memory_kib(pid: int) -> dict[str, int]:
    """Resident and peak resident memory of a process (Linux)."""
    fields = {}
    for row in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = row.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def hold_connections(url: str, pid: int, count: int, rounds: int, batch_id: str) -> None:
    """Open `count` connections at once, then run `rounds` keep-alive retrieves on each."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"GET /v1/messages/batches/{batch_id} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"x-api-key: {KEY}\r\nanthropic-version: 2023-06-01\r\n\r\n"
    ).encode()
    fds_before = open_fds(pid)
    started = time.monotonic()
    streams = await asyncio.gather(*(asyncio.open_connection(host, port) for _ in range(count)))
    connected = time.monotonic() - started

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
        ok = 0
        for _ in range(rounds):
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(h.split(b":")[1])
                for h in head.split(b"\r\n")
                if h.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            ok += head.startswith(b"HTTP/1.1 200")
        return ok

    started = time.monotonic()
    tasks = [asyncio.create_task(client(r, w)) for r, w in streams]
    await asyncio.sleep(0.2)
    held = open_fds(pid) - fds_before
    oks = await asyncio.gather(*tasks)
    elapsed = time.monotonic() - started
    for _, writer in streams:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in streams), return_exceptions=True)
    total = count * rounds
    print(
        f"connections: {count} opened in {connected:.2f}s; server held {held} sockets at once;"
        f" {sum(oks)}/{total} keep-alive retrieves OK in {elapsed:.2f}s"
        f" = {total / elapsed:,.0f} req/s"
    )


def batch_body(count: int, request_bytes: int) -> Iterator[bytes]:
    """A create body of `count` requests of about `request_bytes` each, in pieces."""

    def request(i: int, filler: str) -> bytes:
        return json.dumps(
            {
                "custom_id": f"bench-{i:06d}",
                "params": {
                    "model": "claude-sonnet-4-5",
                    "max_tokens": 256,
                    "messages": [{"role": "user", "content": f"Question {i}: {filler}"}],
                },
            }
        ).encode()

    filler = "x" * max(0, request_bytes - len(request(0, "")))
    yield b'{"requests":['
    for start in range(0, count, 1000):
        piece = b",".join(request(i, filler) for i in range(start, min(start + 1000, count)))
        yield (b"," if start else b"") + piece
    yield b"]}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--request-bytes", type=int, default=2500)
    args = parser.parse_args()
    proc, url = start_emulator()
    try:
        with httpx.Client(base_url=url, headers=HEADERS, timeout=600) as http:
            small = http.post(
                "/v1/messages/batches",
                json={"requests": [{"custom_id": "a", "params": {"model": "m"}}]},
            ).json()["id"]
            asyncio.run(hold_connections(url, proc.pid, args.connections, args.rounds, small))
            before = memory_kib(proc.pid)
            started = time.monotonic()
            body = bytearray()
            for piece in batch_body(args.requests, args.request_bytes):
                body += piece
            response = http.post(
                "/v1/messages/batches",
                content=bytes(body),
                headers={"content-type": "application/json"},
            )
            response.raise_for_status()
            created = time.monotonic() - started
            after = memory_kib(proc.pid)
            print(
                f"create: {args.requests:,} requests, {len(body) / 1e6:.0f} MB body in"
                f" {created:.2f}s; emulator RSS {before['VmRSS'] / 1024:.0f} ->"
                f" {after['VmRSS'] / 1024:.0f} MiB (peak {after['VmHWM'] / 1024:.0f} MiB)"
            )
            del body
            batch_id = response.json()["id"]
            http.post(url + "/_emulator/advance", json={"seconds": 10}).raise_for_status()
        results_url = f"{url}/v1/messages/batches/{batch_id}/results"
        for attempt in ("first", "second"):
            out = subprocess.run(
                [sys.executable, "-c", READER, results_url, KEY],
                check=True,
                capture_output=True,
                text=True,
            )
            read = json.loads(out.stdout)
            rate = read["lines"] / read["seconds"]
            print(
                f"results ({attempt} download): {read['lines']:,} lines,"
                f" {read['bytes'] / 1e6:.0f} MB in {read['seconds']:.2f}s = {rate:,.0f} lines/s,"
                f" {read['bytes'] / 1e6 / read['seconds']:.0f} MB/s"
            )
        print(f"emulator RSS after downloads: {memory_kib(proc.pid)['VmRSS'] / 1024:.0f} MiB")
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
