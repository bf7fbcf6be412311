"""A TCP proxy for the chaos run that drops, delays or refuses connections on command.

It runs as its own process (`python -m tests.chaos.proxy HOST:PORT`), steered over stdin and
stdout one JSON line at a time, so its forwarding never competes with the harness for the GIL.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import threading
from collections import Counter
from typing import Any

#: Bytes read from one side before they are written to the other.
READ_SIZE = 65536
#: Seconds to wait for the upstream to accept a connection.
CONNECT_TIMEOUT = 5.0


class Proxy:
    """Forwards every accepted connection to `upstream`; faults apply to all of them at once."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.delay = 0.0
        self.refusing = False
        self.stats: Counter[str] = Counter()
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.stats["accepted"] += 1
        if self.refusing:
            self.stats["refused"] += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            self.stats["upstream_down"] += 1
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            self._pairs.discard(pair)
            for w in pair:
                w.transport.abort()

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
                self.stats["bytes"] += len(data)
        except (ConnectionError, OSError):
            pass
        # One side ended: end the other too (neither Redis nor HTTP here half-closes).
        writer.transport.abort()

    def busy(self) -> bool:
        return bool(self._pairs)

    def drop(self) -> int:
        """Abort every open connection, both sides, as a network fault would."""
        pairs = list(self._pairs)
        for pair in pairs:
            for w in pair:
                w.transport.abort()
        self.stats["dropped"] += len(pairs)
        return len(pairs)

    def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        if op == "drop":
            return {"dropped": self.drop()}
        if op == "delay":
            self.delay = float(cmd.get("seconds", 0.0))
            return {"delay": self.delay}
        if op == "partition":
            self.refusing = True
            return {"dropped": self.drop()}
        if op == "heal":
            self.delay, self.refusing = 0.0, False
            return {"healed": True}
        if op == "stats":
            return dict(self.stats) | {"open": len(self._pairs)}
        return {"error": f"unknown op {op!r}"}


async def serve(upstream: str) -> None:
    host, _, port = upstream.rpartition(":")
    proxy = Proxy(host or "127.0.0.1", int(port))
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    print(f"listening {bound}", flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def read_commands() -> None:
        for line in sys.stdin:
            cmd = json.loads(line)
            future = asyncio.run_coroutine_threadsafe(_run(proxy, cmd), loop)
            print(json.dumps(future.result()), flush=True)
        loop.call_soon_threadsafe(done.set)

    threading.Thread(target=read_commands, daemon=True).start()
    async with server:
        await done.wait()
        server.close()
        proxy.drop()
        # Let every connection's handler see its sockets closed, so none is cancelled mid-read.
        for _ in range(100):
            if not proxy.busy():
                break
            await asyncio.sleep(0.01)


async def _run(proxy: Proxy, cmd: dict[str, Any]) -> dict[str, Any]:
    return proxy.command(cmd)


class ProxyProcess:
    """The parent's handle on one proxy process: start it, send it faults, stop it."""

    def __init__(self, upstream_port: int, name: str) -> None:
        self.upstream_port = upstream_port
        self.name = name
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.chaos.proxy", f"127.0.0.1:{self.upstream_port}"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"proxy {self.name} did not start: {line!r}")
        self.port = int(line.split()[1])

    def command(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        assert self.proc.stdout is not None
        with self._lock:
            self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
            self.proc.stdin.flush()
            answer: dict[str, Any] = json.loads(self.proc.stdout.readline())
            return answer

    def drop(self) -> int:
        return int(self.command("drop")["dropped"])

    def delay(self, seconds: float) -> None:
        self.command("delay", seconds=seconds)

    def partition(self) -> None:
        self.command("partition")

    def heal(self) -> None:
        self.command("heal")

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin is not None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("upstream", help="HOST:PORT to forward to")
    args = parser.parse_args()
    asyncio.run(serve(args.upstream))


if __name__ == "__main__":
    main()
