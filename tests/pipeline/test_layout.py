"""How requests sit in Redis: params in a key of their own, one SUBMIT per chunk and account,
done lists only for requests someone waits on, data of the earlier layout migrated and read.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import orjson
import pytest
import redis

from batchd import Client, Settings, Ticket, defaults
from batchd.errors import RequestNotFoundError
from batchd.runtime import Runtime, lease
from batchd.stages.submit import body_chunks
from batchd.store import Keys, Store, migrate
from batchd.store.keys import encode_token, new_token
from batchd.store.records import Field
from tests.pipeline import (
    ACCOUNT,
    BATCH_ID,
    Flow,
    compact,
    lane,
    params,
    pending,
    succeeded,
    token_of,
    wait_for,
)
from tests.support.introspect import command_calls, dbsize, reset_stats


def evalsha_calls(r: Any) -> int:
    return command_calls(r).get("evalsha", 0)


def test_params_live_in_their_own_key_until_the_request_ends(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """A pending request's params are a string key of their own; its end deletes it."""
    ticket = client.submit(params("kept"))
    pk = keys.params(ACCOUNT, token_of(ticket.id))
    assert redis_client.get(pk) == compact(params("kept"))
    flow.end(ticket.id)
    assert not redis_client.exists(pk)


def test_small_record_keeps_the_compact_hash_encoding(
    client: Client, redis_client: redis.Redis, keys: Keys
) -> None:
    """With its params elsewhere, a pending record of 2.5 KB params is a listpack hash."""
    ticket = client.submit(params("x" * 2500), reply_to="svc")
    encoding = redis_client.object("encoding", keys.request(ACCOUNT, token_of(ticket.id)))
    assert encoding == b"listpack"


def test_params_of_the_earlier_layout_are_migrated_uploaded_and_end(
    client: Client, flow: Flow, runtime: Runtime, redis_client: redis.Redis, keys: Keys
) -> None:
    """Params kept in the account's params hash (layout 1) move to their own keys at start;
    they go into the body, and the request ends."""
    old, new = client.submit(params("old")), client.submit(params("new"))
    redis_client.delete(keys.params(ACCOUNT, token_of(old.id)))
    redis_client.hset(keys.legacy_params(ACCOUNT), token_of(old.id), compact(params("old")))
    moved = migrate.migrate(runtime.store, [ACCOUNT], int(runtime.settings.retention * 1000))
    assert moved["params"] == 1
    assert not redis_client.exists(keys.legacy_params(ACCOUNT))
    asm = flow.cut()
    with lease(runtime, keys.create_lock(ACCOUNT)) as held:
        assert held is not None
        body = b"".join(body_chunks(runtime, flow.assembly(asm), held))
    lines = [
        b'{"custom_id":"' + token_of(t.id).encode() + b'","params":' + compact(params(c)) + b"}"
        for t, c in ((old, "old"), (new, "new"))
    ]
    assert body == b'{"requests":[' + b",".join(lines) + b"]}"
    flow.record(asm)
    flow.fanout(asm, [(token_of(old.id), "ok", succeeded()), (token_of(new.id), "ok", succeeded())])
    assert client.get(old.id).state == "succeeded"
    assert redis_client.pttl(keys.request(ACCOUNT, token_of(old.id))) > 0


def test_ended_record_of_the_earlier_layout_is_read(
    client: Client, redis_client: redis.Redis, keys: Keys
) -> None:
    """An ended request kept as a hash holding its envelope (an earlier layout) reads as ended."""
    rid = f"{ACCOUNT}.{new_token()}"
    envelope = orjson.dumps(
        {
            "id": rid,
            "key": None,
            "account": ACCOUNT,
            "status": "succeeded",
            "result": orjson.loads(succeeded()),
            "batch_id": BATCH_ID,
            "attempts": 1,
            "metadata": None,
            "submitted_at": "2026-01-01T00:00:00.000Z",
            "ended_at": "2026-01-01T00:01:00.000Z",
        }
    )
    rk = keys.request(ACCOUNT, token_of(rid))
    redis_client.hset(rk, mapping={Field.STATUS: "succeeded", Field.RESULT: envelope})
    state = client.get(rid)
    assert (state.state, state.attempts) == ("succeeded", 1)
    assert state.result is not None and state.result.raw == envelope
    assert client.wait(rid, timeout=0).raw == envelope


def test_submit_many_is_one_script_call_per_chunk(
    client: Client, redis_client: redis.Redis
) -> None:
    """2,500 items take one SUBMIT call per SUBMIT_CHUNK items (a larger chunk asked for is
    capped), not one per item."""
    client.submit(params())  # loads the script
    reset_stats(redis_client)
    out = client.submit_many(({"params": params(str(i))} for i in range(2_500)), chunk=1_000)
    assert all(isinstance(o, Ticket) for o in out)
    assert evalsha_calls(redis_client) == -(-2_500 // defaults.SUBMIT_CHUNK)


def test_submit_many_sends_a_chunk_early_past_its_byte_budget(
    client: Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk whose params pass SUBMIT_CHUNK_BYTES goes at once, whatever its count."""
    monkeypatch.setattr(defaults, "SUBMIT_CHUNK_BYTES", 1000)
    client.submit(params())
    reset_stats(redis_client)
    client.submit_many([{"params": params("y" * 600)} for _ in range(4)], chunk=1_000)
    assert evalsha_calls(redis_client) == 2


def test_submit_many_keeps_each_account_in_its_own_call(
    make_settings: Any, redis_client: redis.Redis, store: Store, keys: Keys
) -> None:
    """Items of two accounts, interleaved, land in their own account's keys, in order."""
    settings: Settings = make_settings(accounts={"default": {}, "other": {}})
    with Client(settings=settings) as c:
        out = c.submit_many(
            [{"params": params(str(i)), "account": ("default", "other")[i % 2]} for i in range(6)]
        )
    tickets = [o for o in out if isinstance(o, Ticket)]
    assert [t.id.split(".")[0] for t in tickets] == ["default", "other"] * 3
    for account in ("default", "other"):
        mine = [token_of(t.id) for t in tickets if t.id.startswith(account + ".")]
        assert pending(store, lane(0), account) == mine
        assert redis_client.exists(*[keys.params(account, t) for t in mine]) == 3


def test_no_done_list_when_nobody_waits(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """A request nobody waits on ends without a done list (no key kept for its retention)."""
    ticket = client.submit(params())
    flow.end(ticket.id)
    assert not redis_client.exists(keys.done(ACCOUNT, token_of(ticket.id)))
    assert client.wait(ticket.id, timeout=1).status == "succeeded"


def test_waiter_blocked_before_the_end_is_woken(
    client: Client, flow: Flow, redis_client: redis.Redis, keys: Keys
) -> None:
    """A wait that started before the request ended returns when it ends, through its mark."""
    ticket = client.submit(params())
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(client.wait(ticket.id, 30).status))
    waiter.start()
    wait_for(lambda: redis_client.exists(keys.waiter(ACCOUNT, token_of(ticket.id))))
    flow.end(ticket.id)
    waiter.join(10)
    assert got == ["succeeded"]
    assert redis_client.llen(keys.done(ACCOUNT, token_of(ticket.id))) == 1


def test_wait_on_an_unknown_request_leaves_no_mark(
    client: Client, redis_client: redis.Redis
) -> None:
    """Waiting on a well-formed id that does not exist stores nothing."""
    token = new_token()
    with pytest.raises(RequestNotFoundError):
        client.wait(f"{ACCOUNT}.{token}", timeout=1)
    assert dbsize(redis_client) == 0


def test_token_encoding_matches_base32_digit_by_digit() -> None:
    """encode_token writes the same 26 Crockford digits as the plain 5-bit loop."""
    alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

    def plain(value: int) -> str:
        return "".join(alphabet[(value >> (5 * (25 - i))) & 31] for i in range(26))

    rng = random.Random(7)
    values = [0, 1, (1 << 130) - 1, (1 << 128) - 1, 1 << 120, (1 << 120) - 1]
    values += [rng.getrandbits(130) for _ in range(2000)]
    for value in values:
        assert encode_token(value) == plain(value)
