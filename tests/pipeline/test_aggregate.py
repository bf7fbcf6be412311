"""The aggregator: when a lane is cut, and how its requests are claimed into one assembly."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from batchd import Client, Settings, aggregate
from batchd.runtime import Runtime
from batchd.store import AssemblyState, Keys, LaneStats, Store
from batchd.store import assemblies as asm_store
from batchd.store import lanes as lane_store
from batchd.store.records import Field
from batchd.store.scripts import text
from tests.pipeline import (
    ACCOUNT,
    Flow,
    framed,
    lane,
    lane_stats,
    params,
    pending,
    token_of,
    wait_for,
)

MakeClient = Callable[..., Client]
MakeRuntime = Callable[..., Runtime]
MakeSettings = Callable[..., Settings]


def assemblies(store: Store) -> list[str]:
    """The account's live assemblies."""
    return store.read(asm_store.live(store.keys, ACCOUNT))


def in_submit_order(flow: Flow, asms: list[str], tokens: list[str]) -> list[str]:
    """Assemblies ordered by where their first request stands in `tokens`."""
    return sorted(asms, key=lambda a: tokens.index(flow.tokens(a)[0]))


def cut_reasons(logs: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [e["reason"] for e in logs if e["event"] == "lane cut"]


# -- when a lane is cut ---------------------------------------------------------------------


def test_nothing_is_cut_when_not_due(client: Client, runtime: Runtime, store: Store) -> None:
    """Below every trigger, a tick leaves the lane as it is."""
    ids = [client.submit(params(str(i))).id for i in range(3)]
    assert aggregate.tick(runtime) == 0
    assert pending(store) == [token_of(i) for i in ids]
    assert assemblies(store) == []
    assert all(client.get(i).state == "pending" for i in ids)


def test_cut_by_count(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    store: Store,
) -> None:
    """A lane with max_requests pending is cut into full assemblies; the rest keeps waiting."""
    s = make_settings(batch={"max_requests": 5, "max_wait": 60})
    client, rt = make_client(s), make_runtime(s)
    flow = Flow(rt)
    tokens = [token_of(client.submit(params(str(i))).id) for i in range(12)]
    with capture_logs() as logs:
        assert aggregate.tick(rt) == 2
    assert cut_reasons(logs) == ["count", "count"]
    first, second = in_submit_order(flow, assemblies(store), tokens)
    assert flow.tokens(first) == tokens[:5]
    assert flow.tokens(second) == tokens[5:10]
    assert pending(store) == tokens[10:]
    assert lane_stats(store) == (2, framed(params("10")) + framed(params("11")))


def test_cut_by_bytes_never_exceeds_max_bytes(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    store: Store,
) -> None:
    """Each body is at most max_bytes and its sealed length; the next request would not fit."""
    max_bytes = 2048
    s = make_settings(batch={"max_bytes": max_bytes, "max_wait": 60})
    client, rt = make_client(s), make_runtime(s)
    flow = Flow(rt)
    bodies = [params("x" * ((i * 137) % 400), metadata={"i": i}) for i in range(60)]
    tokens = [token_of(client.submit(p).id) for p in bodies]
    size = {t: framed(p) for t, p in zip(tokens, bodies, strict=True)}
    with capture_logs() as logs:
        cuts = aggregate.tick(rt)
    assert cuts >= 3
    assert set(cut_reasons(logs)) == {"bytes"}
    order = in_submit_order(flow, assemblies(store), tokens)
    claimed = [t for a in order for t in flow.tokens(a)]
    assert claimed + pending(store) == tokens
    following = [flow.tokens(a)[0] for a in order[1:]] + pending(store)[:1]
    for asm, nxt in zip(order, following, strict=False):
        body = flow.body(asm)
        assert len(body) <= max_bytes
        assert flow.assembly(asm).content_length == len(body)
        assert len(body) + 1 + size[nxt] > max_bytes, "the next request would have fitted"
    left = aggregate.lane_stats(rt, ACCOUNT, lane(0))
    assert aggregate.body_bytes(left) < max_bytes


def test_cut_by_age(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    store: Store,
) -> None:
    """Once the oldest request has waited max_wait, a tick cuts the whole lane."""
    s = make_settings(batch={"max_wait": 0.05})
    client, rt = make_client(s), make_runtime(s)
    ids = [client.submit(params(str(i))).id for i in range(3)]
    with capture_logs() as logs:
        wait_for(lambda: aggregate.tick(rt), 10, "an age cut")
    assert cut_reasons(logs) == ["age"]
    [asm] = assemblies(store)
    assert Flow(rt).tokens(asm) == [token_of(i) for i in ids]
    assert lane_stats(store) == (0, 0)


def test_age_is_measured_from_the_oldest_entry(client: Client, runtime: Runtime) -> None:
    """The lane is due by age exactly max_wait after its head entry was enqueued."""
    client.submit(params())
    stats = aggregate.lane_stats(runtime, ACCOUNT, lane(0))
    assert stats.oldest_ms is not None
    wait_ms = int(runtime.settings.batch.max_wait * 1000)
    assert aggregate.due_reason(runtime, stats, stats.oldest_ms + wait_ms - 1, False) is None
    assert aggregate.due_reason(runtime, stats, stats.oldest_ms + wait_ms, False) == "age"


@pytest.mark.parametrize(
    ("count", "nbytes", "flushed", "reason"),
    [
        (0, 0, True, None),
        (3, 300, False, None),
        (3, 300, True, "flush"),
        (10, 300, False, "count"),
        (3, 2048 - 15 - 2, False, "bytes"),
        (3, 2048 - 15 - 3, False, None),
    ],
)
def test_due_reason_names_the_trigger(
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    count: int,
    nbytes: int,
    flushed: bool,
    reason: str | None,
) -> None:
    """count, bytes (the whole body with commas), flush, or nothing; an empty lane is never due."""
    rt = make_runtime(make_settings(batch={"max_requests": 10, "max_bytes": 2048}))
    stats = LaneStats(ACCOUNT, lane(0), count, nbytes, None)
    assert aggregate.due_reason(rt, stats, 0, flushed) == reason


def test_flush_cuts_the_lane_now(client: Client, runtime: Runtime, flow: Flow) -> None:
    """`client.flush()` makes the next tick cut every lane of the account, once."""
    a = client.submit(params("a"), priority=0)
    b = client.submit(params("b"), priority=4)
    client.flush()
    with capture_logs() as logs:
        assert aggregate.tick(runtime) == 2
    assert cut_reasons(logs) == ["flush", "flush"]
    assert client.get(a.id).state == client.get(b.id).state == "batched"
    client.submit(params("c"))
    assert aggregate.tick(runtime) == 0


def test_flush_cuts_everything_pending_even_past_max_requests(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    store: Store,
) -> None:
    """A flush of a lane holding more than max_requests cuts all of it, in several batches."""
    s = make_settings(batch={"max_requests": 5, "max_wait": 60})
    client, rt = make_client(s), make_runtime(s)
    for i in range(7):
        client.submit(params(str(i)))
    client.flush()
    assert aggregate.tick(rt) == 2
    assert lane_stats(store) == (0, 0)


def test_flush_of_one_priority_cuts_only_that_lane(
    client: Client, runtime: Runtime, store: Store
) -> None:
    """A flush naming a priority leaves the other lanes waiting."""
    low = client.submit(params("low"), priority=0)
    high = client.submit(params("high"), priority=4)
    client.flush(priority=4)
    assert aggregate.tick(runtime) == 1
    assert client.get(high.id).state == "batched"
    assert pending(store) == [token_of(low.id)]
    assert store.read(lane_store.take_flushes(store.keys, ACCOUNT)) == set()


def test_flush_names_the_lanes_to_cut(client: Client, store: Store) -> None:
    """A flush of one priority asks for `p<priority>`, a flush of all for `*`."""
    client.flush(priority=3)
    client.flush()
    assert store.read(lane_store.take_flushes(store.keys, ACCOUNT)) == {"p3", "*"}


def test_paused_account_is_not_cut(client: Client, runtime: Runtime, store: Store) -> None:
    """While its API key is refused, an account's lanes wait even when flushed."""
    client.submit(params())
    store.read(lane_store.pause(store.keys, ACCOUNT, "401 from the API", 60_000))
    client.flush()
    assert aggregate.tick(runtime) == 0
    assert lane_stats(store)[0] == 1


# -- claiming -------------------------------------------------------------------------------


def test_cut_marks_requests_batched_in_their_assembly(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """Claimed records are `batched` in the assembly with one attempt; the assembly is sealed."""
    ids = [client.submit(params(str(i))).id for i in range(3)]
    asm = flow.cut()
    for rid in ids:
        state = client.get(rid)
        assert (state.state, state.attempts) == ("batched", 1)
        assert text(redis_client.hget(keys.request(ACCOUNT, token_of(rid)), Field.ASSEMBLY)) == asm
    info = flow.assembly(asm)
    assert info.state is AssemblyState.SEALED
    assert info.count == 3
    assert info.bytes == sum(framed(params(str(i))) for i in range(3))
    assert info.content_length == len(flow.body(asm))


def test_cut_queues_the_submit_stage(client: Client, flow: Flow) -> None:
    """A cut hands its assembly to the rq `submit` queue."""
    client.submit(params())
    asm = flow.cut()
    [job] = flow.rt.queue("submit").get_jobs()
    assert job.args == ("submit", ACCOUNT, asm)


def test_lane_stats_are_zero_after_a_full_cut(client: Client, flow: Flow, store: Store) -> None:
    """Claiming the whole lane brings its count and bytes back to zero."""
    for i in range(20):
        client.submit(params("z" * i))
    flow.cut()
    assert lane_stats(store) == (0, 0)
    assert pending(store) == []


def test_empty_lane_cuts_nothing(runtime: Runtime, store: Store) -> None:
    """A cut of an empty lane creates no assembly."""
    assert aggregate.cut(runtime, ACCOUNT, lane(0), "flush") is None
    assert assemblies(store) == []


def test_canceled_requests_entry_is_dropped_at_the_next_cut(
    client: Client, flow: Flow, store: Store
) -> None:
    """A canceled request's entry stays in its lane until the next cut, which drops it with its
    bytes and batches the live requests around it into an exact body."""
    a = client.submit(params("a"))
    gone = client.submit(params("gone"))
    b = client.submit(params("b"))
    client.cancel(gone)
    assert pending(store) == [token_of(a.id), token_of(gone.id), token_of(b.id)]
    asm = flow.cut()
    assert flow.tokens(asm) == [token_of(a.id), token_of(b.id)]
    info = flow.assembly(asm)
    assert info.bytes == framed(params("a")) + framed(params("b"))
    assert info.content_length == len(flow.body(asm))
    assert client.get(gone.id).state == "canceled"
    assert lane_stats(store) == (0, 0)


def test_concurrent_cuts_never_claim_a_request_twice(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    store: Store,
    redis_client: redis.Redis,
    keys: Keys,
) -> None:
    """Two cutters racing on one lane: every request lands in exactly one assembly."""
    s = make_settings(batch={"max_requests": 40, "claim_chunk": 7})
    client = make_client(s)
    outcomes = client.submit_many({"params": params(str(i))} for i in range(1_000))
    tokens = {token_of(o.id) for o in outcomes if not isinstance(o, Exception)}
    runtimes = [make_runtime(s), make_runtime(s)]
    start = threading.Barrier(2)
    cut_by: list[list[str]] = [[], []]
    errors: list[BaseException] = []

    def cutter(n: int) -> None:
        try:
            start.wait(10)
            while (asm := aggregate.cut(runtimes[n], ACCOUNT, lane(0), "race")) is not None:
                cut_by[n].append(asm)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=cutter, args=(n,)) for n in range(2)]
    with capture_logs():
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    flow = Flow(runtimes[0])
    claimed = [(t, asm) for asm in cut_by[0] + cut_by[1] for t in flow.tokens(asm)]
    assert len(claimed) == len(tokens)
    assert {t for t, _ in claimed} == tokens
    for token, asm in claimed:
        assert text(redis_client.hget(keys.request(ACCOUNT, token), Field.ASSEMBLY)) == asm
    assert all(len(flow.tokens(a)) <= 40 for a in cut_by[0] + cut_by[1])
    assert lane_stats(store) == (0, 0)


def test_cut_of_12000_requests_in_chunks(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    store: Store,
) -> None:
    """12,000 pending requests are claimed 500 at a time (the most one call may take) into one
    assembly, in order."""
    s = make_settings(batch={"claim_chunk": 500})
    client, rt = make_client(s), make_runtime(s)
    outcomes = client.submit_many({"params": params(str(i))} for i in range(12_000))
    tokens = [token_of(o.id) for o in outcomes if not isinstance(o, Exception)]
    assert len(tokens) == 12_000
    flow = Flow(rt)
    asm = flow.cut()
    assert flow.tokens(asm) == tokens
    info = flow.assembly(asm)
    assert info.count == 12_000
    assert info.content_length == len(flow.body(asm))
    assert lane_stats(store) == (0, 0)
