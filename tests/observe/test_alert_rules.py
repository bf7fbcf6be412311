"""The alert rules in deploy/prometheus and the operating docs use only series batchd exports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client.metrics_core import Metric

from batchd import Client, Settings
from batchd.observe import metrics
from batchd.observe.collector import BuildInfoCollector, RedisCollector
from batchd.observe.ledger import LedgerCollector

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "batchd-rules.yaml"
SUFFIXES = {"counter": ["_total"], "histogram": ["", "_bucket", "_count", "_sum"], "gauge": [""]}


def series_names(families: list[Metric]) -> set[str]:
    return {f.name + s for f in families for s in SUFFIXES[f.type]}


def exported(redis_url: str) -> set[str]:
    """Every series name batchd's /metrics can show (a lane exists, so lane gauges show too)."""
    settings = Settings.load(redis_url=redis_url)
    metrics.get()
    families = list(metrics.REGISTRY.collect()) + list(BuildInfoCollector().collect())
    families += list(metrics.LiveCollector().collect())
    with Client(settings=settings) as client:
        client.submit(
            {
                "model": "claude-sonnet-4-5",
                "max_tokens": 1,
                "messages": [{"role": "user", "content": "x"}],
            }
        )
        families += list(RedisCollector(client.store, ["default"]).collect())
        families += list(LedgerCollector(client.store, settings).collect())
    return series_names(families)


def test_rules_are_well_formed() -> None:
    """Each rule has a name, an expression, a severity and a summary."""
    [group] = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    assert len(group["rules"]) >= 3
    for rule in group["rules"]:
        assert rule["alert"].startswith("Batchd") and rule["expr"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert rule["annotations"]["summary"]


def test_rules_and_docs_name_exported_series(redis_url: str) -> None:
    """No alert watches a series that does not exist."""
    names = exported(redis_url)
    assert "batchd_pending_oldest_age_seconds" in names
    for path in (RULES, ROOT / "docs" / "operating.md"):
        used = set(re.findall(r"\bbatchd_[a-z_]+\b", path.read_text(encoding="utf-8")))
        used -= {"batchd_"}
        assert used, path
        assert used <= names, (path.name, sorted(used - names))
