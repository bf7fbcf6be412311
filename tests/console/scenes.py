"""States the console tests look at, made by a real daemon and emulator (or, where a daemon would
change them at once, through the store): dead letters, dead webhook deliveries, a paused account,
throughput history."""

from __future__ import annotations

from batchd.store import Store
from batchd.store import counters as counter_store
from batchd.store import lanes as lane_store
from tests.e2e.conftest import Stack, SubmitFn

PAUSE_REASON = "401 authentication_error: invalid x-api-key"


def make_dead(stack: Stack, submit: SubmitFn, n: int) -> list[str]:
    """`n` requests that end dead: every results line a retryable api_error, one attempt each.
    Needs a daemon started with BATCHD_RETRY__MAX_ATTEMPTS=1."""
    before = stack.ended()
    stack.emulator.set_profile({"result_api_error_rate": 1.0})
    ids = submit(n, reply_to=None)
    stack.wait_ended(before + n)
    stack.emulator.set_profile({})
    return ids


def pause(store: Store, account: str = "default", seconds: float = 600.0) -> None:
    """Pause the account as the pipeline does when the API refuses its key."""
    store.read(lane_store.pause(store.keys, account, PAUSE_REASON, int(seconds * 1000)))


def throughput_history(store: Store, minutes: int = 30, account: str = "default") -> None:
    """Counter snapshots for the `minutes` minutes before this one, as if daemons had run then
    with a varying stream of requests (for the overview's chart). They count up to 0, so the
    real counters of this minute's snapshot continue them."""
    now_minute = store.now_ms() // 60_000
    submitted = ended = 0
    for back in range(1, minutes + 1):
        snap = {"submitted": submitted, "ended:succeeded": ended}
        store.read(counter_store.snapshot_minute(store.keys, {account: snap}, now_minute - back))
        submitted -= 30 + (back * 7) % 25
        ended -= 28 + (back * 5) % 27
