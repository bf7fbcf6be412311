"""The aggregator: when a lane is cut, and how its requests are claimed into one assembly."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest
import redis
from structlog.testing import capture_logs

from batchd import Client, Settings, aggregate
from batchd.aggregate import LaneStats
from batchd.keys import Keys
from batchd.runtime import Runtime
from batchd.store import text
from tests.pipeline import ACCOUNT, Flow, framed, params, token_of, wait_for

MakeClient = Callable[..., Client]
MakeRuntime = Callable[..., Runtime]
MakeSettings = Callable[..., Settings]


def lane_stats(r: redis.Redis, priority: int = 0) -> tuple[int, int]:
    count, nbytes = r.hmget(Keys().lane_stats(ACCOUNT, priority), "count", "bytes")
    return int(count or 0), int(nbytes or 0)


def pending(r: redis.Redis, priority: int = 0) -> list[str]:
    return [text(e).split(" ")[0] for e in r.lrange(Keys().pending(ACCOUNT, priority), 0, -1)]


def assemblies(r: redis.Redis) -> list[str]:
    return [text(a) for a in r.zrange(Keys().assemblies(ACCOUNT), 0, -1)]


def in_submit_order(flow: Flow, asms: list[str], tokens: list[str]) -> list[str]:
    """Assemblies ordered by where their first request stands in `tokens`."""
    return sorted(asms, key=lambda a: tokens.index(flow.tokens(a)[0]))


def cut_reasons(logs: Sequence[Mapping[str, Any]]) -> list[Any]:
    return [e["reason"] for e in logs if e["event"] == "lane cut"]


# -- when a lane is cut ---------------------------------------------------------------------


def test_nothing_is_cut_when_not_due(
    client: Client, runtime: Runtime, redis_client: redis.Redis
) -> None:
    """Below every trigger, a tick leaves the lane as it is."""
    ids = [client.submit(params(str(i))).id for i in range(3)]
    assert aggregate.tick(runtime) == 0
    assert pending(redis_client) == [token_of(i) for i in ids]
    assert assemblies(redis_client) == []
    assert all(client.get(i).state == "pending" for i in ids)


def test_cut_by_count(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    redis_client: redis.Redis,
) -> None:
    """A lane with max_requests pending is cut into full assemblies; the rest keeps waiting."""
    s = make_settings(batch={"max_requests": 5, "max_wait": 60})
    client, rt = make_client(s), make_runtime(s)
    flow = Flow(rt)
    tokens = [token_of(client.submit(params(str(i))).id) for i in range(12)]
    with capture_logs() as logs:
        assert aggregate.tick(rt) == 2
    assert cut_reasons(logs) == ["count", "count"]
    first, second = in_submit_order(flow, assemblies(redis_client), tokens)
    assert flow.tokens(first) == tokens[:5]
    assert flow.tokens(second) == tokens[5:10]
    assert pending(redis_client) == tokens[10:]
    assert lane_stats(redis_client) == (2, framed(params("10")) + framed(params("11")))


def test_cut_by_bytes_never_exceeds_max_bytes(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    redis_client: redis.Redis,
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
    order = in_submit_order(flow, assemblies(redis_client), tokens)
    claimed = [t for a in order for t in flow.tokens(a)]
    assert claimed + pending(redis_client) == tokens
    following = [flow.tokens(a)[0] for a in order[1:]] + pending(redis_client)[:1]
    for asm, nxt in zip(order, following, strict=False):
        body = flow.body(asm)
        assert len(body) <= max_bytes
        assert int(rt.assembly(ACCOUNT, asm)["clen"]) == len(body)
        assert len(body) + 1 + size[nxt] > max_bytes, "the next request would have fitted"
    left = aggregate.lane_stats(rt, ACCOUNT, 0)
    assert left.body_bytes() < max_bytes


def test_cut_by_age(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    redis_client: redis.Redis,
) -> None:
    """Once the oldest request has waited max_wait, a tick cuts the whole lane."""
    s = make_settings(batch={"max_wait": 0.05})
    client, rt = make_client(s), make_runtime(s)
    ids = [client.submit(params(str(i))).id for i in range(3)]
    with capture_logs() as logs:
        wait_for(lambda: aggregate.tick(rt), 10, "an age cut")
    assert cut_reasons(logs) == ["age"]
    [asm] = assemblies(redis_client)
    assert Flow(rt).tokens(asm) == [token_of(i) for i in ids]
    assert lane_stats(redis_client) == (0, 0)


def test_age_is_measured_from_the_oldest_entry(client: Client, runtime: Runtime) -> None:
    """The lane is due by age exactly max_wait after its head entry was enqueued."""
    client.submit(params())
    stats = aggregate.lane_stats(runtime, ACCOUNT, 0)
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
    stats = LaneStats(ACCOUNT, 0, count, nbytes, None)
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
    redis_client: redis.Redis,
) -> None:
    """A flush of a lane holding more than max_requests cuts all of it, in several batches."""
    s = make_settings(batch={"max_requests": 5, "max_wait": 60})
    client, rt = make_client(s), make_runtime(s)
    for i in range(7):
        client.submit(params(str(i)))
    client.flush()
    assert aggregate.tick(rt) == 2
    assert lane_stats(redis_client) == (0, 0)


def test_flush_of_one_priority_cuts_only_that_lane(
    client: Client, runtime: Runtime, redis_client: redis.Redis
) -> None:
    """A flush naming a priority leaves the other lanes waiting."""
    low = client.submit(params("low"), priority=0)
    high = client.submit(params("high"), priority=4)
    client.flush(priority=4)
    assert aggregate.tick(runtime) == 1
    assert client.get(high.id).state == "batched"
    assert pending(redis_client, 0) == [token_of(low.id)]
    assert not redis_client.exists(Keys().flush(ACCOUNT))


def test_paused_account_is_not_cut(
    client: Client, runtime: Runtime, redis_client: redis.Redis
) -> None:
    """While its API key is refused, an account's lanes wait even when flushed."""
    client.submit(params())
    redis_client.set(Keys().paused(ACCOUNT), "401 from the API")
    client.flush()
    assert aggregate.tick(runtime) == 0
    assert lane_stats(redis_client)[0] == 1


# -- claiming -------------------------------------------------------------------------------


def test_cut_marks_requests_batched_in_their_assembly(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """Claimed records are `batched` in the assembly with one attempt; the assembly is sealed."""
    ids = [client.submit(params(str(i))).id for i in range(3)]
    asm = flow.cut()
    for rid in ids:
        st, a, at = redis_client.hmget(Keys().request(ACCOUNT, token_of(rid)), "st", "a", "at")
        assert (st, text(a), at) == (b"batched", asm, b"1")
    info = flow.rt.assembly(ACCOUNT, asm)
    assert info["st"] == "sealed"
    assert int(info["cnt"]) == 3
    assert int(info["bytes"]) == sum(framed(params(str(i))) for i in range(3))
    assert int(info["clen"]) == len(flow.body(asm))


def test_cut_queues_the_submit_stage(client: Client, flow: Flow) -> None:
    """A cut hands its assembly to the rq `submit` queue."""
    client.submit(params())
    asm = flow.cut()
    [job] = flow.rt.queue("submit").get_jobs()
    assert job.args == ("submit", ACCOUNT, asm)


def test_lane_stats_are_zero_after_a_full_cut(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """Claiming the whole lane brings its count and bytes back to zero."""
    for i in range(20):
        client.submit(params("z" * i))
    flow.cut()
    assert lane_stats(redis_client) == (0, 0)
    assert redis_client.llen(Keys().pending(ACCOUNT, 0)) == 0


def test_empty_lane_cuts_nothing(runtime: Runtime, redis_client: redis.Redis) -> None:
    """A cut of an empty lane creates no assembly."""
    assert aggregate.cut(runtime, ACCOUNT, 0, "flush") is None
    assert assemblies(redis_client) == []


def test_stale_pending_entry_is_skipped(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """An entry left behind by a canceled request is dropped, with its bytes, not batched."""
    a = client.submit(params("a"))
    gone = client.submit(params("gone"))
    b = client.submit(params("b"))
    q = Keys().pending(ACCOUNT, 0)
    [stale] = [e for e in redis_client.lrange(q, 0, -1) if text(e).startswith(token_of(gone.id))]
    client.cancel(gone.id)
    # Put the entry back as if the cancel had raced an older writer and missed it.
    [b_entry] = [e for e in redis_client.lrange(q, 0, -1) if text(e).startswith(token_of(b.id))]
    redis_client.linsert(q, "BEFORE", text(b_entry), text(stale))
    redis_client.hincrby(Keys().lane_stats(ACCOUNT, 0), "count", 1)
    redis_client.hincrby(Keys().lane_stats(ACCOUNT, 0), "bytes", framed(params("gone")))
    asm = flow.cut()
    assert flow.tokens(asm) == [token_of(a.id), token_of(b.id)]
    assert int(flow.rt.assembly(ACCOUNT, asm)["clen"]) == len(flow.body(asm))
    assert client.get(gone.id).state == "canceled"
    assert lane_stats(redis_client) == (0, 0)


def test_concurrent_cuts_never_claim_a_request_twice(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    redis_client: redis.Redis,
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
            while (asm := aggregate.cut(runtimes[n], ACCOUNT, 0, "race")) is not None:
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
        assert text(redis_client.hget(Keys().request(ACCOUNT, token), "a")) == asm
    assert all(len(flow.tokens(a)) <= 40 for a in cut_by[0] + cut_by[1])
    assert lane_stats(redis_client) == (0, 0)


def test_cut_of_12000_requests_in_chunks(
    make_client: MakeClient,
    make_runtime: MakeRuntime,
    make_settings: MakeSettings,
    redis_client: redis.Redis,
) -> None:
    """12,000 pending requests are claimed 5,000 at a time into one assembly, in order."""
    s = make_settings(batch={"claim_chunk": 5_000})
    client, rt = make_client(s), make_runtime(s)
    outcomes = client.submit_many({"params": params(str(i))} for i in range(12_000))
    tokens = [token_of(o.id) for o in outcomes if not isinstance(o, Exception)]
    assert len(tokens) == 12_000
    flow = Flow(rt)
    asm = flow.cut()
    assert flow.tokens(asm) == tokens
    info = rt.assembly(ACCOUNT, asm)
    assert int(info["cnt"]) == 12_000
    assert int(info["clen"]) == len(flow.body(asm))
    assert lane_stats(redis_client) == (0, 0)
