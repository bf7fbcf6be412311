"""Fixtures and helpers of the operations tests: the e2e stack, scraping and probing a daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import stack, submit
from tests.support.daemon import DaemonProcess, wait_for

__all__ = ["stack", "submit"]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def ops_port(daemon: DaemonProcess, timeout: float = 30.0) -> int:
    """The port the daemon's operations endpoints listen on, from its start-up log line."""

    def find() -> int | None:
        for line in daemon.log_text().splitlines():
            if '"operations endpoints listening"' in line:
                return int(json.loads(line)["port"])
        return None

    return int(str(wait_for(find, timeout, "the operations endpoints to listen")))


def scrape(port: int) -> Samples:
    """Every sample of /metrics, keyed by (name, labels)."""
    response = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    response.raise_for_status()
    out: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0.0 when the series is absent (a counter not yet incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum over every series of `name` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= ls)


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)
    return response.status_code, response.json()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client
