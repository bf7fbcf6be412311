"""Facts put in Redis through the store, as the pipeline writes them: requests waiting in many
lanes, and batches in flight (claimed, sealed, created under the create lock, recorded, polled).

For pages whose state a daemon would change at once (lanes waiting past their window, a thousand
batches in flight); the daemon serving the console then runs the console role alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from batchd.settings import Settings
from batchd.store import Lane, Store, locks, new_token
from batchd.store import assemblies as asm_store
from batchd.store import lanes as lane_store
from batchd.store import requests as req_store
from batchd.validate import prepare

ACCOUNT = "default"
PARAMS = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 64,
    "messages": [{"role": "user", "content": "Say hello"}],
}


@dataclass(frozen=True)
class Seeded:
    lanes: list[str]
    batches: list[tuple[str, str]]
    """(assembly, API batch id) of each batch in flight."""
    pending: dict[str, int]
    """Requests left waiting per lane."""


def submit_to_lanes(store: Store, lanes: int, per_lane: int, account: str = ACCOUNT) -> list[str]:
    """`per_lane` requests into each of `lanes` lanes (priorities 0 .. lanes-1); the lane ids."""
    settings = Settings(submit={"priorities": 100})
    ids: list[str] = []
    chunk: list[req_store.NewRequest] = []
    for p in range(lanes):
        ids.append(Lane.of(p).id)
        for i in range(per_lane):
            params = {**PARAMS, "messages": [{"role": "user", "content": f"lane {p} #{i}"}]}
            chunk.append(prepare(settings, params, account=account, priority=p))
            if len(chunk) == 500:
                store.run(req_store.submit(store.keys, account, chunk, 86_400_000))
                chunk = []
    if chunk:
        store.run(req_store.submit(store.keys, account, chunk, 86_400_000))
    return ids


def batch_in_flight(
    store: Store,
    lane: str,
    size: int,
    batch_id: str,
    counts: dict[str, int],
    account: str = ACCOUNT,
) -> str:
    """Claim `size` requests of a lane into a new assembly and take it to `submitted` with these
    request counts (as a poll records them); the assembly id."""
    keys = store.keys
    asm = new_token()
    entries = store.read(lane_store.head(keys, account, lane, size))
    claimed = store.run(
        lane_store.claim(
            keys,
            account,
            lane,
            asm,
            entries,
            max_count=size,
            max_bytes=100_000_000,
            lease_ms=3_600_000,
            retention_ms=86_400_000,
        )
    )
    assert claimed.count == size, claimed
    assert store.run(asm_store.seal(keys, account, asm)) > 0
    fence = str(store.read(asm_store.next_fence(keys, account)))
    lock = asm_store.create_lock_key(keys, account)
    assert store.read(locks.acquire(lock, fence, 60_000))
    try:
        seen = store.read(asm_store.open_intent(keys, account))
        assert store.run(asm_store.intent(keys, account, asm, fence, seen)) > 0
        recorded = store.run(
            asm_store.record(
                keys,
                account,
                asm,
                batch_id,
                first_poll_ms=3_600_000,
                retention_ms=86_400_000,
            )
        )
        assert recorded.code == 1, recorded
    finally:
        store.run(locks.release(lock, fence))
    store.read(asm_store.progress(keys, account, asm, 3, counts))
    return asm


def seed(store: Store, lanes: int, batches: int, per_batch: int, left: int) -> Seeded:
    """`lanes` lanes, `batches` batches in flight claimed round-robin from them, and `left`
    requests still waiting in each lane."""
    per_lane = -(-batches // lanes) * per_batch + left
    lane_ids = submit_to_lanes(store, lanes, per_lane)
    made: list[tuple[str, str]] = []
    taken = dict.fromkeys(lane_ids, 0)
    for i in range(batches):
        lane = lane_ids[i % lanes]
        done = i % (per_batch + 1)
        counts = {"processing": per_batch - done, "succeeded": done}
        bid = f"msgbatch_seed{i:05d}"
        made.append((batch_in_flight(store, lane, per_batch, bid, counts), bid))
        taken[lane] += per_batch
    return Seeded(lane_ids, made, {ln: per_lane - taken[ln] for ln in lane_ids})
