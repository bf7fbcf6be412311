"""A webhook sender alone in its own process, for the crash and clock-offset tests.

Usage: python -m tests.webhooks.sender_process REDIS_URL LEASE_SECONDS; SIGTERM stops it. It
first prints `clock <time.time()>`, so a test can see the clock it runs on.
"""

from __future__ import annotations

import signal
import sys
import threading
import time

from batchd.webhooks.sender import WebhookSender
from tests.webhooks.support import make_settings


def main() -> None:
    redis_url, lease = sys.argv[1], float(sys.argv[2])
    print(f"clock {time.time()}", flush=True)
    settings = make_settings(redis_url, concurrency=8, per_host=8, timeout=5.0)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    WebhookSender(settings, redis_url, lease=lease).run_in_thread(stop)


if __name__ == "__main__":
    main()
