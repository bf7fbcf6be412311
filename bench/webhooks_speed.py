"""How many webhooks per second one sender delivers to a local receiver that answers at once.

Usage: .venv/bin/python bench/webhooks_speed.py [--n 20000] [--concurrency 256] [--redis-url URL]
(starts its own redis-server unless --redis-url is given; the receiver runs in its own process).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from batchd.logs import configure
from batchd.settings import Settings
from batchd.store import Keys, Store, connect, new_token, request_id
from batchd.store import webhooks as wh
from batchd.webhooks.outbox import enqueue_delivery
from batchd.webhooks.sender import WebhookSender

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{what} did not start") from None
            time.sleep(0.02)


def run_receiver(port: int) -> None:
    """The receiver process: 204 to every POST; on GET /count how many came and when the first
    and the last did (time.time()); POST /reset starts the count again."""
    from aiohttp import web

    received = 0
    first = last = 0.0

    async def hook(request: web.Request) -> web.Response:
        nonlocal received, first, last
        await request.read()
        received += 1
        last = time.time()
        first = first or last
        return web.Response(status=204)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"received": received, "first": first, "last": last})

    async def reset(request: web.Request) -> web.Response:
        nonlocal received, first, last
        received, first, last = 0, 0.0, 0.0
        return web.json_response({"received": received})

    app = web.Application()
    app.router.add_post("/hook", hook)
    app.router.add_get("/count", count)
    app.router.add_post("/reset", reset)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def envelope(account: str, token: str) -> bytes:
    doc = {
        "id": request_id(account, token),
        "key": None,
        "account": account,
        "status": "succeeded",
        "result": {
            "type": "succeeded",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": "The answer is forty-two. " * 20}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 120, "output_tokens": 140},
            },
        },
        "batch_id": "msgbatch_01",
        "attempts": 1,
        "metadata": {"job": 1},
        "submitted_at": "2025-01-01T00:00:00.000Z",
        "ended_at": "2025-01-01T00:01:00.000Z",
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--redis-url")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        run_receiver(args.receiver)
        return

    configure(level="warning", fmt="json")
    procs: list[subprocess.Popen[bytes]] = []
    workdir = Path(tempfile.mkdtemp(prefix="batchd-bench-"))
    try:
        redis_url = args.redis_url
        if redis_url is None:
            port = free_port()
            server = shutil.which("redis-server") or "redis-server"
            cmd = [server, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir)]
            cmd += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
            procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL))
            wait_port(port, procs[-1], "redis-server")
            redis_url = f"redis://127.0.0.1:{port}/0"
        rport = free_port()
        procs.append(subprocess.Popen([sys.executable, __file__, "--receiver", str(rport)]))
        wait_port(rport, procs[-1], "receiver")

        keys = Keys("bench")
        store = Store(connect(redis_url), keys)
        url = f"http://127.0.0.1:{rport}/hook"
        for _ in range(args.n):
            token = new_token()
            enqueue_delivery(store, "default", token, url, envelope("default", token))

        settings = Settings(
            redis_url=redis_url,
            prefix="bench",
            webhooks={
                "secret": SECRET,
                "allow_networks": ["127.0.0.1/32"],
                "concurrency": args.concurrency,
                "per_host": args.concurrency,
            },
        )
        sender = WebhookSender(settings, redis_url)
        stop = threading.Event()
        thread = threading.Thread(target=sender.run_in_thread, args=(stop,))
        started = time.perf_counter()
        thread.start()
        while store.read(wh.counts(keys, ["default"]))["default"][0]:
            time.sleep(0.02)
        elapsed = time.perf_counter() - started
        stop.set()
        thread.join()
        with urllib.request.urlopen(f"http://127.0.0.1:{rport}/count") as resp:
            received = json.load(resp)["received"]
        store.close()
        print(
            f"{args.n} deliveries in {elapsed:.2f}s: {args.n / elapsed:,.0f}/s "
            f"(receiver got {received}; outcomes {dict(sender.counters)}; "
            f"concurrency {args.concurrency}, {os.cpu_count()} CPUs)"
        )
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
