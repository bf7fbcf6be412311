"""How requests sit in Redis: params in the account's params hash, one SUBMIT per chunk and
account, done lists only for requests someone waits on, records of the older layout still read.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import pytest
import redis

from batchd import Client, Settings, Ticket, stages
from batchd import client as client_module
from batchd.errors import RequestNotFoundError
from batchd.keys import Keys, encode_token, new_token
from batchd.runtime import Runtime, lease
from tests.pipeline import ACCOUNT, Flow, compact, params, succeeded, token_of, wait_for


def evalsha_calls(r: redis.Redis) -> int:
    stats: dict[str, Any] = r.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def test_params_live_in_the_params_hash_until_the_request_ends(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """A pending request's params are a field of the params hash; its end removes them."""
    ticket = client.submit(params("kept"))
    token = token_of(ticket.id)
    assert redis_client.hget(Keys().params(ACCOUNT), token) == compact(params("kept"))
    assert not redis_client.hexists(Keys().request(ACCOUNT, token), "p")
    flow.end(ticket.id)
    assert not redis_client.hexists(Keys().params(ACCOUNT), token)


def test_small_record_keeps_the_compact_hash_encoding(
    client: Client, redis_client: redis.Redis
) -> None:
    """With its params elsewhere, a pending record of 2.5 KB params is a listpack hash."""
    ticket = client.submit(params("x" * 2500), reply_to="svc")
    encoding = redis_client.object("encoding", Keys().request(ACCOUNT, token_of(ticket.id)))
    assert encoding == b"listpack"


def test_record_of_the_older_layout_is_uploaded_and_ends(
    client: Client, flow: Flow, runtime: Runtime, redis_client: redis.Redis
) -> None:
    """Params kept in the record's own field `p` still go into the body; the request ends."""
    old, new = client.submit(params("old")), client.submit(params("new"))
    keys, rk = Keys(), Keys().request(ACCOUNT, token_of(old.id))
    redis_client.hdel(keys.params(ACCOUNT), token_of(old.id))
    redis_client.hset(rk, "p", compact(params("old")))
    asm = flow.cut()
    with lease(runtime, keys.create_lock(ACCOUNT)) as held:
        assert held is not None
        body = b"".join(stages.body_chunks(runtime, ACCOUNT, asm, held))
    lines = [
        b'{"custom_id":"' + token_of(t.id).encode() + b'","params":' + compact(params(c)) + b"}"
        for t, c in ((old, "old"), (new, "new"))
    ]
    assert body == b'{"requests":[' + b",".join(lines) + b"]}"
    flow.record(asm)
    flow.fanout(asm, [(token_of(old.id), "ok", succeeded()), (token_of(new.id), "ok", succeeded())])
    assert client.get(old.id).state == "succeeded"
    assert redis_client.pttl(rk) > 0


def test_submit_many_is_one_script_call_per_chunk(
    client: Client, redis_client: redis.Redis
) -> None:
    """2,500 items in chunks of 1,000 take three SUBMIT calls, not one per item."""
    client.submit(params())  # loads the script
    redis_client.config_resetstat()
    out = client.submit_many(({"params": params(str(i))} for i in range(2_500)), chunk=1_000)
    assert all(isinstance(o, Ticket) for o in out)
    assert evalsha_calls(redis_client) == 3


def test_submit_many_sends_a_chunk_early_past_its_byte_budget(
    client: Client, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk whose params pass CHUNK_BYTES goes at once, whatever its count."""
    monkeypatch.setattr(client_module, "CHUNK_BYTES", 1000)
    client.submit(params())
    redis_client.config_resetstat()
    client.submit_many([{"params": params("y" * 600)} for _ in range(4)], chunk=1_000)
    assert evalsha_calls(redis_client) == 2


def test_submit_many_keeps_each_account_in_its_own_call(
    make_settings: Any, redis_client: redis.Redis
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
        queued = redis_client.lrange(Keys().pending(account, 0), 0, -1)
        mine = [token_of(t.id) for t in tickets if t.id.startswith(account + ".")]
        assert [e.split(b" ")[0].decode() for e in queued] == mine
        assert redis_client.hlen(Keys().params(account)) == 3


def test_no_done_list_when_nobody_waits(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """A request nobody waits on ends without a done list (no key kept for its retention)."""
    ticket = client.submit(params())
    flow.end(ticket.id)
    assert not redis_client.exists(Keys().done(ACCOUNT, token_of(ticket.id)))
    assert client.wait(ticket.id, timeout=1).status == "succeeded"


def test_waiter_blocked_before_the_end_is_woken(
    client: Client, flow: Flow, redis_client: redis.Redis
) -> None:
    """A wait that started before the request ended returns when it ends, through its mark."""
    ticket = client.submit(params())
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(client.wait(ticket.id, 30).status))
    waiter.start()
    wait_for(lambda: redis_client.exists(Keys().waiter(ACCOUNT, token_of(ticket.id))))
    flow.end(ticket.id)
    waiter.join(10)
    assert got == ["succeeded"]
    assert redis_client.llen(Keys().done(ACCOUNT, token_of(ticket.id))) == 1


def test_wait_on_an_unknown_request_leaves_no_mark(
    client: Client, redis_client: redis.Redis
) -> None:
    """Waiting on a well-formed id that does not exist stores nothing."""
    token = new_token()
    with pytest.raises(RequestNotFoundError):
        client.wait(f"{ACCOUNT}.{token}", timeout=1)
    assert redis_client.dbsize() == 0


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
