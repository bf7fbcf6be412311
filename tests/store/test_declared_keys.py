"""Every Lua script touches only the keys it declares, all in one hash slot: read from what a
real server executed (MONITOR) while batchd's own flows ran every script, so a key name built
inside Lua, which a cluster would refuse or send to the wrong node, cannot pass unseen."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Iterator
from importlib import resources

import pytest
import redis

from batchd import Client, Settings, aggregate, deadlines, realtime, stages, sweeper
from batchd.observe.ledger import fold_totals
from batchd.runtime import Runtime, lease
from batchd.stages.ending import error_result, reject_and_unclaim, requeue_missing
from batchd.store import AssemblyRecord, AssemblyState, Keys, Store, connect_async, locks, replies
from batchd.store import assemblies as asm_store
from batchd.store import ledger as ledger_store
from batchd.store.scripts import NAMES, SCRIPTS, Call, Script
from batchd.webhooks.outbox import AsyncOutbox, Settle, retry_delivery
from tests.store import ACCOUNT, params
from tests.support.daemon import wait_for
from tests.support.emulator import EmulatorProcess
from tests.support.keycheck import KeyReport, ScriptCall, declared_in_one_slot, record_script_keys

#: Script names by the sha1 of their source, so the report names them.
NAMED = {s.sha: name for name, s in SCRIPTS.items()}
HOOK = "https://hooks.example.com/"


def direct_queues(call: ScriptCall) -> list[bytes]:
    """The reply queues a FANOUT call declared to push onto in the same call: the one exception
    to one slot per call, made only on a single server with no replicas to wait for (see
    `replies.direct_queues`; on a cluster it declares none, which tests/cluster run through)."""
    if call.script != "fanout":
        return []
    return [k for k in call.declared if k.startswith(b"batchd:reply:{")]


def check(report: KeyReport) -> None:
    """Fail on any call that touched an undeclared key, or declared keys in several slots."""
    crossing = [
        c
        for c in report.cross_slot()
        if not declared_in_one_slot(k for k in c.declared if k not in direct_queues(c))
    ]
    bad = report.undeclared() + crossing
    assert not bad, f"{len(bad)} of {len(report.calls)} calls:\n" + report.explain(bad[:20])


@pytest.fixture
def settings(redis_url: str, emulator: EmulatorProcess) -> Settings:
    """A daemon's settings against the emulator: leases short enough to be renewed within a
    step, one attempt per request (sent round again, it ends dead), cuts only when asked."""
    return Settings.load(
        redis_url=redis_url,
        api={"base_url": emulator.url, "backoff_initial": 0.01, "backoff_max": 0.05},
        accounts={ACCOUNT: {"api_key": emulator.api_key}},
        run={"lease": 1.2, "create_settle": 0.1},
        retry={"max_attempts": 1},
        batch={"max_wait": 3600},
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    try:
        yield rt
    finally:
        rt.close()


@pytest.fixture
def client(settings: Settings) -> Iterator[Client]:
    with Client(settings=settings) as c:
        yield c


def assembly(rt: Runtime, asm: str) -> AssemblyRecord:
    a = rt.store.read(asm_store.read(rt.keys, ACCOUNT, asm))
    assert a is not None
    return a


def run_until(rt: Runtime, asm: str, *states: AssemblyState) -> None:
    """Run the assembly's stages, as workers would, until it reaches one of `states`."""
    deadline = time.monotonic() + 30
    while (state := assembly(rt, asm).state) not in states:
        assert time.monotonic() < deadline, f"assembly stuck in {state}"
        stages.run(rt, ACCOUNT, asm)
        time.sleep(0.02)


def cut(rt: Runtime) -> str:
    asm = aggregate.cut(rt, ACCOUNT, "0", "test")
    assert asm is not None
    return asm


def every_flow(client: Client, rt: Runtime, emulator: EmulatorProcess, raw: redis.Redis) -> None:
    """Producers, consumers, stages, the sweeper, webhooks and the ledger, each as batchd runs
    them; between them every script in NAMES runs."""
    keys, store = rt.keys, rt.store
    # Producers: submits, cancels (their replies drained to the queue), a queue that refuses.
    hooked = [client.submit(params(n), callback_url=f"{HOOK}{n}").id for n in range(3)]
    client.cancel(client.submit(params(3), reply_to="q"))
    raw.set(keys.reply_queue("refusing"), b"not a list")
    client.cancel(client.submit(params(4), reply_to="refusing"))  # parked
    raw.delete(keys.reply_queue("refusing"))
    replies.drain(store, ACCOUNT, parked=True)
    # Consumers: take and ack; a reader starting again restores what it held.
    with client.replies("q", consumer="c", timeout=0) as stream:
        client.ack(next(stream))
    list(client.replies("q", consumer="c", timeout=0))
    # A batch's life: claim and seal, intent and record, polls under leases renewed as they
    # go, fan-out (the hooked requests get their webhook deliveries), close.
    run_until(rt, cut(rt), AssemblyState.DONE)
    # A create the API refuses with 429: the intent is withdrawn. Then the sweeper takes the
    # overdue assembly (SCHEDULE) and its batch is made.
    client.submit(params(5))
    emulator.set_profile({"http_429_rate": 1.0, "retry_after": 0.1})
    asm = cut(rt)
    stages.run(rt, ACCOUNT, asm)
    emulator.set_profile({})
    store.read(asm_store.set_due(keys, ACCOUNT, asm, 0))
    sweeper.sweep(rt)
    run_until(rt, asm, AssemblyState.SUBMITTED, AssemblyState.ENDED, AssemblyState.DONE)
    # Requests with no line in their batch's results go round again: past the cap, dead. One
    # dead letter is sent again, the other forgotten.
    dead = [client.submit(params(n)).id for n in (6, 7)]
    asm = cut(rt)
    run_until(rt, asm, AssemblyState.SUBMITTED, AssemblyState.ENDED)
    requeue_missing(rt, assembly(rt, asm), error_result("missing_result", "no line"))
    assert [client.get(rid).state for rid in dead] == ["dead", "dead"]
    assert client.requeue_dead([dead[0]]) == {dead[0]: "requeued"}
    assert client.purge_dead([dead[1]]) == 1
    # A never-sent assembly holding a corrupt request: it ends rejected, the rest unclaimed.
    client.submit(params(8))
    asm = cut(rt)
    entries = store.read(asm_store.entries(keys, ACCOUNT, asm, 0, 10))
    reject_and_unclaim(rt, assembly(rt, asm), entries[0].split(b" ", 1)[0].decode())
    # Webhooks, through the sender's outbox; and an operator sending a dead one again.
    failed = asyncio.run(webhooks(rt))
    assert retry_delivery(store, ACCOUNT, failed) == "dead"
    # The ledger: a real-time call's usage recorded once, and final days folded into totals.
    usage = ledger_store.Usage(requests=1, input=10, output=2)
    now = rt.now_ms()
    store.run(ledger_store.record(keys, ACCOUNT, "claude-sonnet-4-5", usage, now, once="msg_1"))
    fold_totals(store, [ACCOUNT], now)
    # Deadlines: one a batch can make is cut with its lane (CLAIM notes it) and fanned out; one
    # no batch can make leaves the batch route (ESCALATE) for the real-time queue, whose sender
    # writes its intent (RT_CLAIM) and records the answer (RT_SETTLE); a never-sent one goes
    # back to its lane with its deadline (UNCLAIM), and one ends canceled while pending.
    client.submit(params(10), deadline=time.time() + 86_400)
    run_until(rt, cut(rt), AssemblyState.DONE)
    client.submit(params(11), deadline=time.time() + 1)
    assert deadlines.plan(rt) == 1
    # Due at Redis's clock when escalated; the sender reads that clock from its own and an
    # offset, which may trail it by a millisecond or two.
    sender = realtime.Sender(rt.settings)
    assert wait_for(lambda: sender.run_once(rt), 5, "the real-time send") == 1
    client.submit(params(12), deadline=time.time() + 86_400)
    asm = cut(rt)
    reject_and_unclaim(rt, assembly(rt, asm), None)
    client.cancel(client.submit(params(13), deadline=time.time() + 86_400))
    # A lease held past a third of its time is renewed, and released at the end.
    with lease(rt, keys.lane_lock(ACCOUNT, "0")) as held:
        assert held is not None
        time.sleep(rt.settings.run.lease / 2)
    assert all(client.get(rid).terminal for rid in hooked)


async def webhooks(rt: Runtime) -> str:
    """The sender claims the due deliveries: one is delivered, one fails for good, the third
    is handed back untried. Returns the failed one's token."""
    client = connect_async(rt.settings.redis_url or "")
    try:
        outbox = AsyncOutbox(client, rt.keys, rt.settings.retention)
        claimed = await outbox.claim(ACCOUNT, 10, 5_000, "claim-1")
        assert len(claimed.leases) == 3
        sent, failed, untried = await outbox.load(claimed.leases)
        await outbox.settle(
            [Settle(sent, "delivered", status=200), Settle(failed, "dead", status=500)]
        )
        await outbox.release([untried], 0)
        return failed.token
    finally:
        await client.aclose()


def test_lua_folder_holds_exactly_the_scripts_named() -> None:
    """Each file in `lua/` but the shared helpers is one script of NAMES, and none is missing."""
    folder = resources.files("batchd.store") / "lua"
    files = {p.name.removesuffix(".lua") for p in folder.iterdir() if p.name.endswith(".lua")}
    assert files - {"common"} == set(NAMES)


def test_every_script_touches_only_its_declared_keys_in_one_slot(
    client: Client,
    runtime: Runtime,
    emulator: EmulatorProcess,
    redis_client: redis.Redis,
) -> None:
    """Through batchd's flows every script runs, touching only its KEYS, all in one slot."""
    report = record_script_keys(
        redis_client,
        lambda: every_flow(client, runtime, emulator, redis_client),
        names=NAMED,
    )
    check(report)
    assert report.scripts() == set(NAMES)
    # the fan-out pushed onto a known queue at once, and that call was checked like the others
    assert any(direct_queues(c) for c in report.calls)


# -- the check catches what it must --------------------------------------------------------

#: RENEW as it would be written by mistake: it also bumps a counter whose name it builds.
BUILDS_A_KEY = (
    "#!lua\n"
    "redis.call('INCR', KEYS[1] .. ':renewals')\n"
    "if redis.call('GET', KEYS[1]) == ARGV[1] then\n"
    "  return redis.call('PEXPIRE', KEYS[1], ARGV[2])\n"
    "end\n"
    "return 0\n"
)


def test_a_script_that_builds_a_key_inside_lua_fails_the_check(
    redis_client: redis.Redis,
) -> None:
    """A renewal whose script builds a key name from KEYS[1] fails the same check, named."""
    bad = Script("renew", BUILDS_A_KEY, hashlib.sha1(BUILDS_A_KEY.encode()).hexdigest())
    store = Store(redis_client, Keys())
    key = "batchd:{default}:qlock:0"
    redis_client.set(key, "me", px=5_000)
    good = locks.renew(key, "me", 5_000)
    mistaken = Call(bad, good.keys, good.args, good.parse)
    report = record_script_keys(
        redis_client,
        lambda: (store.run(good), store.run(mistaken)),
        names={**NAMED, bad.sha: "renew (builds a key)"},
    )
    assert [c.script for c in report.calls] == ["renew", "renew (builds a key)"]
    with pytest.raises(AssertionError, match=r"undeclared b'batchd:\{default\}:qlock:0:renewals'"):
        check(report)


def test_keys_declared_in_two_slots_fail_the_check(redis_client: redis.Redis) -> None:
    """A call whose KEYS lie in two hash slots (CROSSSLOT on a cluster) is caught too."""
    store = Store(redis_client, Keys())
    split = locks.renew("batchd:{default}:qlock:0", "me", 5_000)
    crossing = Call(split.script, [*split.keys, "batchd:{other}:qlock:0"], split.args, split.parse)
    report = record_script_keys(redis_client, lambda: store.run(crossing), names=NAMED)
    with pytest.raises(AssertionError, match="declared keys span slots"):
        check(report)
