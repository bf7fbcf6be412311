"""The overview's cost panel: what the ledger says was spent, and saved by batching, per hour.

The panel reads only `cost_by_hour`, which asks the cost reports (`COST_MODULE.report`, the
ledger priced) for the last hours grouped by hour. A build without the ledger shows the panel as
unavailable rather than failing.
"""

from __future__ import annotations

import datetime
import importlib
from typing import Any

from batchd.settings import Settings
from batchd.store import Store

#: The module whose `report(store, settings, since_ms=, until_ms=, by=)` prices the ledger.
COST_MODULE = "batchd.cost"
#: Hours the cost chart covers.
COST_HOURS = 24
HOUR_MS = 3_600_000


def cost_by_hour(
    store: Store, settings: Settings, now_ms: int, hours: int = COST_HOURS
) -> dict[str, Any]:
    """`{available, hours: [{hour, cost_usd, realtime_cost_usd, saved_usd, requests}], total}`
    over the last `hours` (the current one so far), or `{available: false, why}`."""
    try:
        cost = importlib.import_module(COST_MODULE)
    except ImportError:
        return {"available": False, "why": "this build of batchd has no cost ledger"}
    since = (now_ms // HOUR_MS - hours + 1) * HOUR_MS
    report = cost.report(store, settings, since_ms=since, until_ms=now_ms + 1, by=("hour",))
    data: dict[str, Any] = report.as_dict()
    rows = {str(row.get("hour")): row for row in data.get("rows", [])}
    out: list[dict[str, Any]] = []
    for h in range(since // HOUR_MS, now_ms // HOUR_MS + 1):
        label = _hour_label(h)
        row = rows.get(label, {})
        out.append(
            {
                "hour_ms": h * HOUR_MS,
                "cost_usd": float(row.get("cost_usd", 0.0)),
                "realtime_cost_usd": float(row.get("realtime_cost_usd", 0.0)),
                "saved_usd": float(row.get("saved_usd", 0.0)),
                "requests": int(row.get("requests", 0)),
            }
        )
    total = data.get("total", {})
    return {
        "available": True,
        "currency": data.get("currency", "USD"),
        "hours": out,
        "total": {
            "cost_usd": float(total.get("cost_usd", 0.0)),
            "realtime_cost_usd": float(total.get("realtime_cost_usd", 0.0)),
            "saved_usd": float(total.get("saved_usd", 0.0)),
            "requests": int(total.get("requests", 0)),
            "unpriced_models": list(total.get("unpriced_models", [])),
        },
    }


def _hour_label(hour: int) -> str:
    """How the reports name an hour: `2026-01-31T10:00Z`."""
    stamp = datetime.datetime.fromtimestamp(hour * 3600, tz=datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:00Z")
