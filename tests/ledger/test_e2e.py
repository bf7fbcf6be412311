"""The ledger and the spend caps with `batchd run`, Redis and the emulator as real processes:
kills and retries lose or double no line of the ledger; a cap holds a lane and a raised one
releases it, nothing lost."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from batchd.store import ledger as ledger_store
from batchd.store import split_request_id
from batchd.store.budgets import holds
from batchd.store.ledger import DAY_MS, Usage
from tests.e2e.conftest import Stack, params
from tests.observe.conftest import ops_port, scrape, total
from tests.support.daemon import wait_for

#: A system prompt long enough to be cached (over 1,024 tokens), marked for the prompt cache.
CACHED_SYSTEM = [
    {
        "type": "text",
        "text": "You answer briefly. " * 300,
        "cache_control": {"type": "ephemeral"},
    }
]
TAGS = ("nightly", "search", "")


def usage_of(envelope: dict[str, Any]) -> tuple[str, Usage]:
    """The model and usage of a received result (nothing for one that was not billed)."""
    result = envelope["result"]
    if result.get("type") != "succeeded":
        return "", Usage()
    msg = result["message"]
    u = msg["usage"]
    created = u.get("cache_creation_input_tokens") or 0
    one_hour = (u.get("cache_creation") or {}).get("ephemeral_1h_input_tokens") or 0
    return msg["model"], Usage(
        1,
        u["input_tokens"],
        u["output_tokens"],
        created - one_hour,
        one_hour,
        u.get("cache_read_input_tokens") or 0,
    )


def submit_mixed(stack: Stack, n: int, queue: str) -> dict[str, str]:
    """n requests over three tags and two models, a third with a cached system prompt; the
    tag of each, by id."""
    items = []
    for i in range(n):
        p = params(i, model="claude-haiku-4-5" if i % 2 else "claude-sonnet-4-5")
        if i % 3 == 0:
            p["system"] = CACHED_SYSTEM
        tag = TAGS[i % len(TAGS)]
        items.append({"params": p, "reply_to": queue, **({"tag": tag} if tag else {})})
    tags = {}
    for item, outcome in zip(items, stack.client.submit_many(items), strict=True):
        assert not isinstance(outcome, Exception), outcome
        tags[outcome.id] = str(item.get("tag", ""))
    return tags


def ledger_by_model_and_tag(stack: Stack) -> dict[tuple[str, str], Usage]:
    store = stack.client.store
    now = store.now_ms()
    entries = store.read(ledger_store.read(store.keys, ["default"], now - DAY_MS, now + 1, now))
    out: dict[tuple[str, str], Usage] = {}
    for e in entries:
        out[(e.model, e.tag)] = out.get((e.model, e.tag), Usage()) + e.usage
    return out


def received_by_model_and_tag(stack: Stack, queue: str, tags: dict[str, str]) -> dict[
    tuple[str, str], Usage
]:  # fmt: skip
    out: dict[tuple[str, str], Usage] = {}
    raw = stack.client.redis.lrange(stack.client.keys.reply_queue(queue), 0, -1)
    for envelope in map(orjson.loads, raw):
        model, u = usage_of(envelope)
        if u.requests:
            k = (model, tags[envelope["id"]])
            out[k] = out.get(k, Usage()) + u
    return out


def test_ledger_equals_the_usage_producers_received_after_kills(
    stack: Stack, tmp_path: Path
) -> None:
    """kill -9 mid fan-out and again later, retried errors and expiries: per model and tag,
    the ledger holds exactly the usage of the results the producers received."""
    # The emulator's clock runs fast, so a batch with an expired request ends (at its 24 h
    # expiry) within seconds.
    stack.emulator.set_clock_scale(86_400 / 8)
    stack.emulator.set_profile(
        {
            "processing_time": [60, 600],
            "result_api_error_rate": 0.04,
            "result_overloaded_rate": 0.03,
            "result_expired_rate": 0.02,
        }
    )
    marker = tmp_path / "crashed"
    daemon = stack.daemon(
        start=False,
        BATCHD_BATCH__MAX_REQUESTS="300",
        BATCHD_CRASH_AT="mid_fanout",
        BATCHD_CRASH_MARKER=str(marker),
    )
    daemon.start()
    n = 1200
    tags = submit_mixed(stack, n, "ledger")
    wait_for(marker.exists, 90, "the kill -9 in the middle of a fan-out")
    daemon.wait_exit(30)
    assert stack.ended() < n
    daemon.start()
    wait_for(lambda: stack.ended() >= n // 2, 120, "half the requests to end")
    daemon.kill()
    daemon.start()
    stack.wait_ended(n, timeout=240)

    ids = stack.reply_ids("ledger")
    assert len(ids) == len(set(ids)) == n, "a reply is missing or doubled"
    assert stack.counters().get("retries", 0) > 0, "no request went round again"
    received = received_by_model_and_tag(stack, "ledger", tags)
    assert any(u.cache_read and u.cache_write_5m for u in received.values())
    assert ledger_by_model_and_tag(stack) == received


def test_a_cap_holds_a_lane_and_a_raised_cap_releases_it(stack: Stack) -> None:
    """At its cap the lane is held (on /metrics too), its requests pending; a daemon started
    with a higher cap sends them all, each ending once."""
    cap = [{"account": "default", "daily": 0.0001}]
    daemon = stack.daemon(BATCHD_BUDGETS__CAPS=json.dumps(cap))
    ids = [t.id for t in (stack.client.submit(params(i), reply_to="capped") for i in range(20))]
    store = stack.client.store
    wait_for(lambda: store.read(holds(store.keys, ["default"])), 30, "the lane's hold")
    samples = scrape(ops_port(daemon))
    assert total(samples, "batchd_lane_held", account="default", lane="0") == 1
    assert {stack.client.get(i).state for i in ids} == {"pending"}
    assert stack.counters().get("batches_created", 0) == 0

    daemon.stop()
    stack.daemon(BATCHD_BUDGETS__CAPS=json.dumps([{"account": "default", "daily": 100.0}]))
    stack.wait_ended(20, timeout=60)
    replies = stack.reply_ids("capped")
    assert sorted(replies) == sorted(ids) and len(set(replies)) == 20
    assert {stack.client.get(i).state for i in ids} == {"succeeded"}
    wait_for(lambda: not store.read(holds(store.keys, ["default"])), 10, "the hold to go")


def test_metrics_show_cost_and_saving_after_a_run(stack: Stack) -> None:
    """After a run, /metrics counts the tokens, the cost as billed and the saving."""
    daemon = stack.daemon()
    for i in range(30):
        stack.client.submit(params(i), reply_to="metrics", tag="demo")
    stack.wait_ended(30)
    samples = scrape(ops_port(daemon))
    billed = total(samples, "batchd_cost_usd_total", account="default", mode="batch")
    saved = total(samples, "batchd_cost_saved_usd_total", account="default")
    assert billed > 0 and abs(saved - billed) < 1e-9
    assert total(samples, "batchd_ledger_requests_total", account="default") == 30
    assert split_request_id(stack.reply_ids("metrics")[0])[0] == "default"
