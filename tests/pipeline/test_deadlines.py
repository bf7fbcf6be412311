"""Deadlines in the store: how producers give one, the planner's set, ESCALATE, the fan-out's
routing of unbilled lines, and the real-time route's claim and settlement (no API involved)."""

from __future__ import annotations

import datetime
import time
from typing import Any

import orjson
import pytest

from batchd import Client, IdempotencyConflictError, InvalidRequestError, deadlines
from batchd.runtime import Runtime
from batchd.settings import Settings
from batchd.store import assemblies as asm_store
from batchd.store import deadlines as dl_store
from batchd.store import realtime as rt_store
from batchd.store import requests as req_store
from batchd.store.assemblies import Line
from batchd.store.realtime import Settle
from tests.pipeline import ACCOUNT, BATCH_ID, Flow, params, succeeded, token_of

UTC = datetime.UTC
#: An hour from now: a batch (planned at the default hour plus a minute) cannot make it.
SOON = 1800.0
#: Two days from now: any batch can make it.
LATER = 2 * 86_400.0


def deadline_of(client: Client, rid: str) -> int | None:
    record = client.store.read(req_store.read(client.keys, ACCOUNT, token_of(rid)))
    assert record is not None
    return record.deadline_ms


def envelope(client: Client, rid: str) -> dict[str, Any]:
    found: dict[str, Any] = orjson.loads(client.wait(rid, timeout=0).raw)
    return found


@pytest.mark.parametrize(
    "given",
    [
        datetime.datetime(2030, 1, 2, 9, 0, tzinfo=UTC),
        "2030-01-02T09:00:00Z",
        "2030-01-02T10:00:00+01:00",
        1893574800,
        1893574800.0,
    ],
)
def test_deadline_is_kept_in_epoch_ms_whatever_its_form(client: Client, given: Any) -> None:
    """A timezone-aware datetime, an ISO 8601 time with its offset and epoch seconds are the
    same deadline, kept as epoch milliseconds."""
    rid = client.submit(params(), deadline=given).id
    assert deadline_of(client, rid) == 1893574800000


@pytest.mark.parametrize(
    "given", [datetime.datetime(2030, 1, 2, 9, 0), "2030-01-02T09:00:00", 1893574800000, "soon"]
)
def test_deadline_without_a_zone_or_in_ms_is_refused(client: Client, given: Any) -> None:
    """A time without a zone, milliseconds or words are refused naming `deadline`; nothing is
    stored."""
    with pytest.raises(InvalidRequestError) as caught:
        client.submit(params(), deadline=given)
    assert caught.value.field == "deadline"


def test_reused_key_with_another_deadline_is_a_conflict(client: Client) -> None:
    """The same idempotency key with another deadline is a conflict naming `deadline`."""
    client.submit(params(), key="k", deadline=time.time() + LATER)
    with pytest.raises(IdempotencyConflictError) as caught:
        client.submit(params(), key="k", deadline=time.time() + LATER + 60)
    assert caught.value.differs == ["deadline"]


def test_claim_takes_a_request_out_of_the_plan_and_keeps_the_earliest_deadline(
    client: Client, flow: Flow, runtime: Runtime
) -> None:
    """A pending request with a deadline is in the planner's set until a cut claims it; its
    assembly keeps the earliest deadline it holds."""
    first = client.submit(params("a"), deadline=time.time() + LATER).id
    client.submit(params("b"), deadline=time.time() + LATER + 600)
    client.submit(params("c"))
    now = runtime.now_ms()
    assert len(runtime.store.read(dl_store.due(runtime.keys, ACCOUNT, now + 10**9, 10))) == 2
    asm = flow.cut()
    assert runtime.store.read(dl_store.due(runtime.keys, ACCOUNT, now + 10**9, 10)) == []
    assert flow.assembly(asm).deadline_ms == deadline_of(client, first)
    held = runtime.store.read(dl_store.batches_due(runtime.keys, ACCOUNT, now + 10**9, 10))
    assert held == [(asm, deadline_of(client, first))]


def test_request_without_a_deadline_has_no_deadline_fields(client: Client, flow: Flow) -> None:
    """An envelope without a deadline says only its mode, `batch`."""
    rid = client.submit(params()).id
    asm = flow.cut()
    flow.fanout(asm, [(token_of(rid), "ok", succeeded())])
    env = envelope(client, rid)
    assert env["mode"] == "batch"
    assert not {"deadline", "deadline_met", "deadline_missed"} & set(env)


def test_deadline_met_by_a_batch_says_so(client: Client, flow: Flow) -> None:
    """A request that succeeds by its deadline is `deadline_met: true` with its deadline."""
    rid = client.submit(params(), deadline="2100-01-01T00:00:00Z").id
    asm = flow.cut()
    flow.fanout(asm, [(token_of(rid), "ok", succeeded())])
    env = envelope(client, rid)
    assert (env["deadline"], env["deadline_met"]) == ("2100-01-01T00:00:00.000Z", True)
    assert "deadline_missed" not in env


def test_unreachable_deadline_goes_to_the_realtime_queue(
    client: Client, flow: Flow, runtime: Runtime
) -> None:
    """Under policy realtime a pending request no batch can make leaves its lane for the
    real-time queue; the next cut drops its lane entry, so it is never batched."""
    rid = client.submit(params(), deadline=time.time() + SOON).id
    assert deadlines.route(runtime, ACCOUNT) == 1
    assert client.get(rid).state == "realtime"
    look = runtime.store.read(rt_store.outlook(runtime.keys, ACCOUNT, runtime.now_ms(), 10))
    assert look.due == [token_of(rid)]
    client.submit(params("other"))
    asm = flow.cut()
    assert flow.tokens(asm) != [] and token_of(rid) not in flow.tokens(asm)


def test_unreachable_deadline_under_policy_fail_ends_errored(
    make_settings: Any, make_client: Any, make_runtime: Any
) -> None:
    """Under policy fail it ends errored (deadline_exceeded), `deadline_missed: unreachable`."""
    s: Settings = make_settings(accounts={ACCOUNT: {"deadline_policy": "fail"}})
    client, runtime = make_client(s), make_runtime(s)
    rid = client.submit(params(), deadline=time.time() + SOON).id
    assert deadlines.route(runtime, ACCOUNT) == 1
    result = client.wait(rid, timeout=0)
    assert result.status == "errored"
    assert result.error is not None and result.error["type"] == "deadline_exceeded"
    assert (result.deadline_met, result.deadline_missed) == (False, "unreachable")


def test_canceled_line_goes_by_its_own_deadline(
    client: Client, flow: Flow, runtime: Runtime
) -> None:
    """A line that came back unbilled goes to the real-time queue when no new batch can make
    its deadline, back to its lane when one can or it has none."""
    near = client.submit(params("near"), deadline=time.time() + LATER).id
    far = client.submit(params("far"), deadline=time.time() + LATER * 2).id
    none = client.submit(params("none")).id
    asm = flow.cut()
    flow.record(asm)
    s = runtime.settings
    call = asm_store.fanout(
        runtime.keys,
        ACCOUNT,
        asm,
        BATCH_ID,
        flow.assembly(asm).lane,
        [Line(token_of(r), "retry", b'{"type":"canceled"}') for r in (near, far, none)],
        retention_ms=int(s.retention * 1000),
        max_attempts=s.retry.max_attempts,
        ledger=asm_store.ledger_keys(runtime.keys, ACCOUNT, runtime.now_ms()),
        too_late_ms=int((time.time() + LATER + 60) * 1000),
        policy="realtime",
    )
    out = runtime.store.run(call)
    assert (out.requeued, out.escalated) == (2, 1)
    assert [client.get(r).state for r in (near, far, none)] == ["realtime", "pending", "pending"]


def claim_one(client: Client, runtime: Runtime, intent: str) -> str:
    rid = client.submit(params(), deadline=time.time() + SOON).id
    deadlines.route(runtime, ACCOUNT)
    jobs = runtime.store.durable(
        rt_store.claim(runtime.keys, ACCOUNT, [token_of(rid)], intent, 60_000)
    )
    assert [j.token for j in jobs] == [token_of(rid)]
    return rid


def test_settlement_with_a_stale_intent_changes_nothing(client: Client, runtime: Runtime) -> None:
    """An answer settled under an intent that is no longer the request's (it was reconciled
    meanwhile) is ignored: the request ends once."""
    rid = claim_one(client, runtime, "sender-a")
    stale = Settle(token_of(rid), "end", "sender-b", "succeeded", result=succeeded())
    settle = rt_store.settle(
        runtime.keys, ACCOUNT, [stale], retention_ms=60_000, now_ms=runtime.now_ms()
    )
    assert runtime.store.run(settle) == (0, 0)
    assert client.get(rid).state == "realtime"


def test_expired_lease_ends_the_send_unanswered_but_a_renewal_wins(
    client: Client, runtime: Runtime
) -> None:
    """A send whose lease is still held is not reconciled; once its lease ran out it ends
    errored (realtime_unanswered), mode realtime, never sent again."""
    rid = claim_one(client, runtime, "sender-a")
    token = token_of(rid)
    unanswered = orjson.dumps({"type": "errored", "error": {"type": "error", "error": {
        "type": "realtime_unanswered", "message": "m"}}})  # fmt: skip
    expire = Settle(token, "expire", status="errored", result=unanswered, outcome="unanswered")
    now = runtime.now_ms()
    call = rt_store.settle(runtime.keys, ACCOUNT, [expire], retention_ms=60_000, now_ms=now)
    assert runtime.store.run(call) == (0, 0)
    runtime.store.read(rt_store.renew(runtime.keys, ACCOUNT, [token], now - 1))
    assert runtime.store.run(call)[0] == 1
    result = client.wait(rid, timeout=0)
    assert (result.status, result.mode) == ("errored", "realtime")
    assert result.error is not None and result.error["type"] == "realtime_unanswered"
    assert runtime.store.read(rt_store.expired(runtime.keys, ACCOUNT, now + 10**9, 10)) == []


def test_estimate_is_the_default_until_enough_batches_are_seen() -> None:
    """The plan uses deadlines.default_duration until min_samples batches were observed, then
    their percentile."""
    s = Settings(deadlines={"default_duration": 600, "min_samples": 3, "percentile": 0.9})
    few = deadlines.estimate(s, [10_000, 20_000])
    assert (few.planned_s, few.observed, few.samples) == (600, False, 2)
    many = deadlines.estimate(s, [10_000 * i for i in range(1, 11)])
    assert (many.planned_s, many.median_s, many.observed) == (90.0, 50.0, True)
