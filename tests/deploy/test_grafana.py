"""The Grafana dashboard beside the alert rules queries only what a real `batchd run` exports."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.deploy.conftest import DEPLOY
from tests.e2e.conftest import Stack, params
from tests.observe.conftest import ops_port, scrape

DASHBOARD = DEPLOY / "grafana" / "batchd.json"
#: A metric name in a PromQL expression (batchd's own, and the process collector's).
METRIC = re.compile(r"\b((?:batchd|process)_[a-z0-9_]+)\b")
#: A selector with label matchers: `name{label="x", other=~"y"}`.
SELECTOR = re.compile(r"\b((?:batchd|process)_[a-z0-9_]+)\{([^}]*)\}")
MATCHER = re.compile(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)")


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and template variables."""
    found = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        query = var.get("query")
        if isinstance(query, dict):
            found.append(query["query"])
    return found


def test_dashboard_queries_only_exported_metrics(stack: Stack) -> None:
    """Every metric (and label matched on) the dashboard queries is on a real daemon's /metrics."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    daemon = stack.daemon()
    port = ops_port(daemon)
    stack.client.submit(params(1), reply_to="svc")
    stack.wait_ended(1)
    samples = scrape(port)
    labels: dict[str, set[str]] = {}
    for name, pairs in samples:
        labels.setdefault(name, set()).update(k for k, _ in pairs)
    exprs = queries(dashboard)
    assert len(exprs) > 30
    used = {m for e in exprs for m in METRIC.findall(e)}
    assert sorted(used - set(labels)) == []
    for expr in exprs:
        for name, matchers in SELECTOR.findall(expr):
            assert set(MATCHER.findall(matchers)) <= labels[name], (name, matchers)
