"""Settings of one emulator instance, and the API's limits it enforces by default.

Every tunable lives here with a line saying what it bounds; faults live in `faults.py`.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field

from batchd.emulator.faults import FaultProfile

# A key that works when none is given, so `batchd emulator` is usable with no flags.
DEFAULT_API_KEY = "sk-ant-emulator-default"
# Largest create body the edge accepts; one byte more is 413 request_too_large.
MAX_BODY_BYTES = 256_000_000
# Most requests one batch may hold.
MAX_BATCH_REQUESTS = 100_000
# How long a batch may process before its unfinished requests end `expired`.
EXPIRY_SECONDS = 24 * 3600.0
# How long after creation results stay downloadable; then `archived_at` is set.
RETENTION_SECONDS = 29 * 24 * 3600.0
# Page size of list when `limit` is absent, and the largest `limit` allowed.
LIST_DEFAULT_LIMIT = 20
LIST_MAX_LIMIT = 1000
# Page size of `GET /v1/models` when `limit` is absent.
MODELS_DEFAULT_LIMIT = 20
# Where results are downloaded: the documented path, and the opaque one `results_url` may name.
DOCUMENTED_RESULTS_PATH = "/v1/messages/batches/{batch_id}/results"
OPAQUE_RESULTS_PATH = "/v1/batch-results/{token}"
# Results are written in pieces of about this many bytes, never as one body.
RESULTS_CHUNK_BYTES = 256 * 1024
# Listen backlog: hundreds of clients may connect in the same instant.
LISTEN_BACKLOG = 2048


@dataclass
class EmulatorConfig:
    """How to run one emulator: where it listens, who may call it, its clock and its faults."""

    host: str = "127.0.0.1"
    port: int = 8765
    api_keys: tuple[str, ...] = (DEFAULT_API_KEY,)
    clock_scale: float = 1.0
    max_body_bytes: int = MAX_BODY_BYTES
    max_batch_requests: int = MAX_BATCH_REQUESTS
    expiry_seconds: float = EXPIRY_SECONDS
    retention_seconds: float = RETENTION_SECONDS
    profile: FaultProfile = field(default_factory=FaultProfile)
    # Base of `results_url`; by default the scheme and Host header of each request.
    public_url: str | None = None
    access_log: bool = False

    @property
    def organization_id(self) -> str:
        """The `anthropic-organization-id` every workspace of this emulator belongs to."""
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "batchd-emulator:" + ",".join(self.api_keys)))


def workspace_id_for(api_key: str) -> str:
    """The workspace an API key belongs to: stable, and does not reveal the key."""
    return "wrkspc_" + hashlib.sha256(api_key.encode()).hexdigest()[:24]
