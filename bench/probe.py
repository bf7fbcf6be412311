"""A lone producer in its own process: one `submit` every INTERVAL, each one timed.

`Probe` starts it and steers it over stdin: `go` starts a fresh series of timed submits, `stop`
ends it and answers with the series (milliseconds, as JSON); closing stdin ends the process.
Its own process, so no benchmark thread shares its interpreter lock: what it measures is the
round trip of one submit while Redis serves others.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any

from batchd import Client, Ticket
from batchd.logs import configure
from bench.common import params, percentile, settings

#: Seconds between the starts of two probe submits.
INTERVAL = 0.005
#: Bytes of the probe's params.
SIZE = 1000
#: The probe's lane: a priority of its own, so its requests never join a lane being claimed.
PRIORITY = 7


class Probe:
    """The probe process, driven from the benchmark."""

    def __init__(self, redis_url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.probe", redis_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self._line() == "ready"

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line:
            raise RuntimeError(f"the probe process ended (exit code {self.proc.poll()})")
        return line

    def _say(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def go(self) -> None:
        self._say("go")
        assert self._line() == "going"

    def stop(self) -> list[float]:
        """The series since `go`: each submit's round trip, ms."""
        self._say("stop")
        found: list[float] = json.loads(self._line())
        return found

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def summary(series: list[float]) -> dict[str, Any]:
    """Worst, p99 and median of a series (ms), and how many submits it holds."""
    return {
        "n": len(series),
        "max": max(series) if series else float("nan"),
        "p99": percentile(series, 99),
        "p50": percentile(series, 50),
    }


def main(redis_url: str) -> None:
    configure(level="error", fmt="console")
    client = Client(settings=settings(redis_url))
    doc = params(0, SIZE)
    client.submit(doc, priority=PRIORITY)  # connect, load the script, learn the accounts
    active = threading.Event()
    quit_ = threading.Event()
    busy = threading.Lock()
    series: list[float] = []

    def loop() -> None:
        while not quit_.is_set():
            if not active.wait(0.05):
                continue
            with busy:
                if not active.is_set():
                    continue
                t0 = time.perf_counter()
                ticket = client.submit(doc, priority=PRIORITY)
                took = time.perf_counter() - t0
                assert isinstance(ticket, Ticket)
                series.append(took * 1000)
            time.sleep(max(0.0, INTERVAL - took))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    print("ready", flush=True)
    for line in sys.stdin:
        word = line.strip()
        if word == "go":
            with busy:
                series.clear()
                active.set()
            print("going", flush=True)
        elif word == "stop":
            with busy:
                active.clear()
                print(json.dumps(series), flush=True)
    quit_.set()
    thread.join(5)
    client.close()


if __name__ == "__main__":
    main(sys.argv[1])
