"""The store layer: batchd's data model in Redis, and the only code that knows it.

Key names (`keys`), the Lua scripts (`lua/*.lua`, one typed function each in the modules below),
the records and their states (`records`), connections (`connection`), and the runners that send
calls and reads (`runner`). The modules by noun: `requests`, `lanes`, `assemblies`, `replies`,
`webhooks`, `counters`, `locks`, `ledger`, `migrate`. Everything else in batchd calls these.
"""

from batchd.store.connection import (
    connect,
    connect_async,
    durability_warnings,
    is_cluster,
    is_cluster_url,
    parse_url,
)
from batchd.store.keys import Keys, new_token, request_id, split_request_id, webhook_id
from batchd.store.records import (
    AssemblyRecord,
    AssemblyState,
    Lane,
    LaneStats,
    RequestRecord,
    RequestStatus,
)
from batchd.store.runner import AsyncStore, Durability, Read, Store
from batchd.store.scripts import Call

__all__ = [
    "AssemblyRecord",
    "AssemblyState",
    "AsyncStore",
    "Call",
    "Durability",
    "Keys",
    "Lane",
    "LaneStats",
    "Read",
    "RequestRecord",
    "RequestStatus",
    "Store",
    "connect",
    "connect_async",
    "durability_warnings",
    "is_cluster",
    "is_cluster_url",
    "new_token",
    "parse_url",
    "request_id",
    "split_request_id",
    "webhook_id",
]
