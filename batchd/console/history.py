"""What the overview's charts show over time that Redis keeps no history of: each lane's backlog,
the batches in the making and in flight, and the dead letters, sampled by this console.

Throughput per minute comes from Redis (every replica's counters, see `observe.throughput`); these
samples are this process's own, kept for `KEEP_SECONDS`, so they start when the console starts.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from batchd.observe.snapshot import Snapshot

#: Seconds between two samples.
SAMPLE_SECONDS = 5.0
#: Seconds of samples kept (and charted).
KEEP_SECONDS = 3600.0
#: Lanes charted one by one (those with the largest backlog now); the rest as one line.
TOP_LANES = 8


@dataclass(frozen=True, slots=True)
class Sample:
    at_ms: int
    lanes: dict[str, int]
    """Pending requests per `account/lane`."""
    making: int
    in_flight: int
    dead: int


def sample_of(snap: Snapshot) -> Sample:
    lanes = {f"{ln.account}/{ln.lane}": ln.pending for ln in snap.lanes}
    in_flight = sum(1 for a in snap.assemblies if a.in_flight)
    return Sample(
        snap.now_ms,
        lanes,
        len(snap.assemblies) - in_flight,
        in_flight,
        sum(snap.dead.values()),
    )


class History:
    """Samples of the last KEEP_SECONDS, oldest first; safe to share between threads."""

    def __init__(self, every: float = SAMPLE_SECONDS, keep: float = KEEP_SECONDS) -> None:
        self.every_ms = int(every * 1000)
        self._samples: deque[Sample] = deque(maxlen=max(2, int(keep / every)))
        self._lock = threading.Lock()

    def due(self, now_ms: int) -> bool:
        with self._lock:
            return not self._samples or now_ms - self._samples[-1].at_ms >= self.every_ms

    def add(self, snap: Snapshot) -> bool:
        """Keep a sample of this snapshot, unless one was taken less than `every` ago."""
        sample = sample_of(snap)
        with self._lock:
            if self._samples and sample.at_ms - self._samples[-1].at_ms < self.every_ms:
                return False
            self._samples.append(sample)
            return True

    def samples(self) -> list[Sample]:
        with self._lock:
            return list(self._samples)

    def charts(self) -> dict[str, Any]:
        """The series of the overview's sampled charts: `{t: [ms], series: [{name, values}]}`."""
        samples = self.samples()
        t = [s.at_ms for s in samples]
        latest = samples[-1].lanes if samples else {}
        ranked = sorted(latest, key=lambda lane: (-latest[lane], lane))
        top = [lane for lane in ranked[:TOP_LANES] if latest[lane] > 0]
        # A lane emptied a while ago still shows, so a drained backlog is seen going down.
        if len(top) < TOP_LANES:
            seen: dict[str, int] = {}
            for s in samples:
                for lane, n in s.lanes.items():
                    seen[lane] = max(seen.get(lane, 0), n)
            more = sorted((x for x in seen if seen[x] > 0 and x not in top), key=lambda x: -seen[x])
            top += more[: TOP_LANES - len(top)]
        series = [{"name": lane, "values": [s.lanes.get(lane, 0) for s in samples]} for lane in top]
        rest = [sum(n for lane, n in s.lanes.items() if lane not in top) for s in samples]
        if any(rest):
            series.append({"name": "other lanes", "values": rest})
        return {
            "backlog": {"t": t, "series": series},
            "batches": {
                "t": t,
                "series": [
                    {"name": "in flight", "values": [s.in_flight for s in samples]},
                    {"name": "in the making", "values": [s.making for s in samples]},
                ],
            },
            "dead": {
                "t": t,
                "series": [{"name": "dead letters", "values": [s.dead for s in samples]}],
            },
        }
