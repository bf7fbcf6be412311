"""`batchd webhooks dead` and `batchd webhooks retry`, through the real command line."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import redis

from batchd.cli import main
from batchd.store import Store
from batchd.webhooks.outbox import list_dead
from tests.webhooks.support import (
    KEYS,
    Receiver,
    Reply,
    RunningSender,
    enqueue,
    make_settings,
    record,
    wait_state,
)

StartSender = Callable[..., RunningSender]


def make_dead(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender, n: int
) -> list[str]:
    """`n` deliveries that failed every attempt (the sender is stopped afterwards)."""
    receiver.reply = lambda r: Reply(500, body=b"down for maintenance")
    sender = start_sender(make_settings(redis_url))
    tokens = [enqueue(store, receiver.url()) for _ in range(n)]
    for token in tokens:
        wait_state(store, token, "dead")
    sender.stop()
    return tokens


def test_dead_lists_failed_deliveries_as_json(
    redis_url: str,
    store: Store,
    receiver: Receiver,
    start_sender: StartSender,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dead --json` names each dead delivery with its url, attempts and last error."""
    [token] = make_dead(redis_url, store, receiver, start_sender, 1)
    capsys.readouterr()  # the sender's own log lines
    assert main(["--redis-url", redis_url, "webhooks", "dead", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    [entry] = doc["deliveries"]
    assert entry["request_id"] == f"default.{token}"
    assert entry["url"] == receiver.url()
    assert entry["state"] == "dead" and entry["attempts"] == 3 and entry["last_status"] == 500
    assert entry["last_error"] == "HTTP 500: down for maintenance"
    assert entry["ended_ms"] > 0
    assert doc["gone_endpoints"] == []


def test_dead_prints_a_table(
    redis_url: str,
    store: Store,
    receiver: Receiver,
    start_sender: StartSender,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`dead` prints one line per dead delivery under a header."""
    [token] = make_dead(redis_url, store, receiver, start_sender, 1)
    capsys.readouterr()  # the sender's own log lines
    assert main(["--redis-url", redis_url, "webhooks", "dead"]) == 0
    header, line = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["REQUEST", "ID", "STATE"]
    assert line.startswith(f"default.{token}  dead") and receiver.url() in line


def test_retry_by_id_sends_again_from_the_first_attempt(
    redis_url: str,
    store: Store,
    receiver: Receiver,
    start_sender: StartSender,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`retry ID` puts a dead delivery back, attempts reset, and it is delivered."""
    first, second = make_dead(redis_url, store, receiver, start_sender, 2)
    capsys.readouterr()  # the sender's own log lines
    assert main(["--redis-url", redis_url, "webhooks", "retry", f"default.{first}"]) == 0
    assert "re-sending (was dead)" in capsys.readouterr().out
    again = record(store, first)
    assert again is not None and (again.state, again.attempts) == ("pending", 0)
    receiver.reply = lambda r: Reply(200)
    start_sender(make_settings(redis_url))
    rec = wait_state(store, first, "delivered")
    assert rec.attempts == 1
    assert [r.token for r in list_dead(store, ["default"])] == [second]


def test_retry_all_resends_every_dead_delivery(
    redis_url: str,
    store: Store,
    redis_client: redis.Redis,
    receiver: Receiver,
    start_sender: StartSender,
) -> None:
    """`retry --all` empties the dead-letter set and every delivery arrives."""
    tokens = make_dead(redis_url, store, receiver, start_sender, 3)
    assert main(["--redis-url", redis_url, "webhooks", "retry", "--all"]) == 0
    assert redis_client.zcard(KEYS.deliveries_dead("default")) == 0
    receiver.reply = lambda r: Reply(200)
    start_sender(make_settings(redis_url))
    for token in tokens:
        wait_state(store, token, "delivered")


def test_retry_re_enables_a_gone_endpoint(
    redis_url: str,
    store: Store,
    redis_client: redis.Redis,
    receiver: Receiver,
    start_sender: StartSender,
) -> None:
    """After a 410, `retry` clears the endpoint's gone mark and its deliveries go out again."""
    receiver.reply = lambda r: Reply(410)
    sender = start_sender(make_settings(redis_url))
    token = enqueue(store, receiver.url())
    wait_state(store, token, "gone")
    sender.stop()
    assert main(["--redis-url", redis_url, "webhooks", "retry", f"msg_{token}"]) == 0
    assert not redis_client.exists(KEYS.endpoints_gone("default"))
    receiver.reply = lambda r: Reply(200)
    start_sender(make_settings(redis_url))
    later = enqueue(store, receiver.url())
    wait_state(store, token, "delivered")
    wait_state(store, later, "delivered")


def test_retry_unknown_id_exits_not_found(
    redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An id with no delivery behind it is reported and the exit code is 3."""
    code = main(
        ["--redis-url", redis_url, "webhooks", "retry", "default.01ARZ3NDEKTSV4RRFFQ69G5FAV"]
    )
    assert code == 3
    assert "no such delivery" in capsys.readouterr().out


def test_commands_need_a_redis_url(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a Redis URL the command stops with a usage error saying what is missing."""
    monkeypatch.delenv("BATCHD_REDIS_URL", raising=False)
    monkeypatch.delenv("BATCHD_CONFIG", raising=False)
    assert main(["webhooks", "dead"]) == 2
    assert "Redis URL" in capsys.readouterr().err
