"""`batchd requests dead | requeue | purge` against a daemon whose requests end dead."""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import Stack, SubmitFn
from tests.e2e.test_cli import batchd


@pytest.fixture
def dead(stack: Stack, submit: SubmitFn) -> list[str]:
    """Three requests that ended dead: every results line is a retryable api_error, one try."""
    stack.emulator.set_profile({"result_api_error_rate": 1.0})
    stack.daemon(BATCHD_RETRY__MAX_ATTEMPTS="1")
    ids = submit(3, reply_to=None)
    stack.wait_ended(3)
    stack.emulator.set_profile({})
    return ids


def test_dead_lists_each_dead_request_readably(stack: Stack, dead: list[str]) -> None:
    """The table names each dead request, when it died, its attempts, error and whether it can go
    round again."""
    proc = batchd(stack, "requests", "dead")
    assert proc.returncode == 0, proc.stderr
    header, *rows = proc.stdout.splitlines()
    assert header.split() == ["ID", "DIED", "AT", "ATTEMPTS", "REQUEUEABLE", "ERROR", "MESSAGE"]
    assert sorted(r.split()[0] for r in rows) == sorted(dead)
    for row in rows:
        _, died, attempts, requeueable, etype, *message = row.split()
        assert died.endswith("Z") and attempts == "1" and requeueable == "yes"
        assert etype == "api_error" and message


def test_dead_json_gives_the_whole_error(stack: Stack, dead: list[str]) -> None:
    """`--json` prints one object per dead request, with its error's type and message."""
    proc = batchd(stack, "requests", "dead", "--json", "--limit", "2")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 2 and {r["id"] for r in rows} <= set(dead)
    assert {r["error"]["type"] for r in rows} == {"api_error"}
    assert all(r["error"]["message"] and r["requeueable"] for r in rows)


def test_requeue_one_sends_it_round_again(stack: Stack, dead: list[str]) -> None:
    """`requests requeue ID` sends that request again: it succeeds; the others stay dead."""
    first, *others = dead
    proc = batchd(stack, "requests", "requeue", first)
    assert proc.returncode == 0, proc.stderr
    assert f"{first}: requeued" in proc.stdout
    assert stack.client.wait(first, timeout=60).status == "succeeded"
    assert sorted(x.id for x in stack.client.dead()) == sorted(others)


def test_requeue_by_error_type_takes_only_those(stack: Stack, dead: list[str]) -> None:
    """`--error-type` selects dead requests by their last error: another type takes none."""
    none = batchd(stack, "requests", "requeue", "--error-type", "overloaded_error")
    assert none.returncode == 0, none.stderr
    assert "requeued 0 of 0" in none.stdout
    every = batchd(stack, "requests", "requeue", "--error-type", "api_error")
    assert every.returncode == 0, every.stderr
    assert "requeued 3 of 3" in every.stdout
    assert {r.status for r in stack.client.wait_many(dead, timeout=60)} == {"succeeded"}


def test_requeue_needs_ids_or_a_selection(stack: Stack, dead: list[str]) -> None:
    """Neither ids nor a selection, or both, is refused (exit 2) and nothing is requeued."""
    assert batchd(stack, "requests", "requeue").returncode == 2
    assert batchd(stack, "requests", "requeue", dead[0], "--all").returncode == 2
    assert len(stack.client.dead()) == 3


def test_requeue_of_a_live_request_says_not_dead(stack: Stack, dead: list[str]) -> None:
    """An id that is no dead letter is reported `not dead`, exit 3."""
    stack.client.requeue_dead([dead[0]])
    proc = batchd(stack, "requests", "requeue", dead[0])
    assert proc.returncode == 3
    assert f"{dead[0]}: not dead" in proc.stdout


def test_purge_all_forgets_the_letters_and_keeps_the_results(stack: Stack, dead: list[str]) -> None:
    """`requests purge --all` empties the dead letters; each `dead` result stays readable."""
    proc = batchd(stack, "requests", "purge", "--all")
    assert proc.returncode == 0, proc.stderr
    assert "purged 3" in proc.stdout
    assert batchd(stack, "requests", "dead").stdout.strip() == "no dead requests"
    shown = batchd(stack, "requests", "show", dead[0])
    assert json.loads(shown.stdout)["state"] == "dead"
