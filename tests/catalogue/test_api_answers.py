"""Bad answers from the API (or a proxy in front of it), through a running daemon.

Each case spoils one kind of answer; the requests still end (succeeded, or a clear terminal
status), no request is ever in two live batches, and the daemon keeps running.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import orjson
import pytest

from batchd.store import split_request_id
from tests.catalogue.conftest import Stack
from tests.catalogue.mangler import Answer, Rule, html_page
from tests.support.daemon import wait_for

GARBAGE = b"\x00\x9f{garbage \xff not json"
#: A list page without any batch: the account's list does not show the batch looked for.
EMPTY_LIST = Answer(body=orjson.dumps({"data": [], "has_more": False, "first_id": None,
                                       "last_id": None}))  # fmt: skip


def not_found(message: str) -> Answer:
    """The API's 404 answer."""
    return Answer(status=404, body=orjson.dumps({"type": "error", "error": {
        "type": "not_found_error", "message": message}}))  # fmt: skip


def lines(data: bytes) -> list[dict[str, object]]:
    return [orjson.loads(x) for x in data.splitlines() if x.strip()]


def jsonl(objs: list[dict[str, object]]) -> bytes:
    return b"".join(orjson.dumps(o) + b"\n" for o in objs)


def all_succeed(stack: Stack, n: int = 4, billed_once: bool = True) -> list[str]:
    ids = stack.submit(n)
    results = stack.results(ids)
    assert {r.status for r in results} == {"succeeded"}, [r.result for r in results]
    stack.assert_unharmed()
    if billed_once:
        assert stack.audit()["billed"] == n
    return ids


# -- create --------------------------------------------------------------------------------------


def test_create_answered_by_a_proxy_html_page(stack: Stack) -> None:
    """An HTML 502 from a proxy before the API saw the body: sent again, created once."""
    stack.mangler.add(Rule("create", html_page(502)))
    all_succeed(stack)
    assert stack.audit()["batches_created"] == 1


def test_create_done_but_answered_with_html(stack: Stack) -> None:
    """The batch was made, the answer is a proxy's HTML: the batch is found and adopted."""
    stack.mangler.add(Rule("create", dataclasses.replace(html_page(502), forward_first=True)))
    all_succeed(stack)
    assert stack.audit()["batches_created"] == 1
    assert "checking the list" in stack.daemon.log_text()


def test_create_done_but_answered_200_with_garbage(stack: Stack) -> None:
    """200 with bytes that are not JSON after the batch was made: adopted, not made twice."""
    stack.mangler.add(Rule("create", Answer(body=GARBAGE, forward_first=True)))
    all_succeed(stack)
    assert stack.audit()["batches_created"] == 1


def test_create_done_but_answer_cut_mid_json(stack: Stack) -> None:
    """200 with half a MessageBatch: adopted, not made twice."""
    stack.mangler.add(Rule("create", Answer(body=b'{"id": "msgbatch_01", "type": "mess',
                                            forward_first=True)))  # fmt: skip
    all_succeed(stack)
    assert stack.audit()["batches_created"] == 1


def test_create_answered_with_the_wrong_content_type(stack: Stack) -> None:
    """200 text/html with a page after the batch was made: adopted, not made twice."""
    page = html_page(200)
    stack.mangler.add(Rule("create", Answer(body=page.body, content_type="text/html",
                                            forward_first=True)))  # fmt: skip
    all_succeed(stack)
    assert stack.audit()["batches_created"] == 1


def test_create_answered_200_with_an_empty_body(stack: Stack) -> None:
    """An empty 200 before the API saw it: nothing in the list, so sent again after settling."""
    stack.mangler.add(Rule("create", Answer(body=b"")))
    all_succeed(stack)
    assert stack.audit()["batches_created"] == 1


def test_create_refused_with_400_goes_round_again(stack: Stack) -> None:
    """The API refuses the whole batch once (400): its requests go round, then succeed."""
    body = orjson.dumps({"type": "error", "error": {"type": "invalid_request_error",
                                                    "message": "nope"}})  # fmt: skip
    stack.mangler.add(Rule("create", Answer(status=400, body=body)))
    all_succeed(stack)


def test_create_refused_with_413_goes_round_again(stack: Stack) -> None:
    """An edge's 413 for the body: the requests go round again and then succeed."""
    body = orjson.dumps({"type": "error", "error": {"type": "request_too_large",
                                                    "message": "too big"}})  # fmt: skip
    stack.mangler.add(Rule("create", Answer(status=413, body=body)))
    all_succeed(stack)


def test_create_and_list_both_broken(stack: Stack) -> None:
    """The create's answer is lost and the list answers garbage: adopted once the list reads."""
    stack.mangler.add(Rule("create", Answer(body=GARBAGE, forward_first=True)))
    stack.mangler.add(Rule("list", Answer(body=GARBAGE)))
    all_succeed(stack)
    assert stack.audit()["batches_created"] == 1
    assert "cannot list batches yet" in stack.daemon.log_text()


# -- retrieve ------------------------------------------------------------------------------------


def test_poll_answered_200_with_garbage(stack: Stack) -> None:
    """Polls answered with garbage are retried; the batch is followed to its end."""
    stack.mangler.add(Rule("retrieve", Answer(body=GARBAGE), times=3))
    all_succeed(stack)


def test_poll_answered_with_html_503(stack: Stack) -> None:
    """Polls answered by a proxy's 503 page are retried."""
    stack.mangler.add(Rule("retrieve", html_page(503), times=3))
    all_succeed(stack)


def test_poll_answered_with_an_unknown_status(stack: Stack) -> None:
    """A MessageBatch with a processing_status never documented is retried, not trusted."""

    def odd(data: bytes) -> bytes:
        batch = orjson.loads(data)
        batch["processing_status"] = "hibernating"
        return orjson.dumps(batch)

    stack.mangler.add(Rule("retrieve", transform=odd, times=2))
    all_succeed(stack)


def test_batch_vanished_from_the_api(stack: Stack) -> None:
    """A batch answering 404 and absent from the list past the grace: its requests end errored."""
    stack.mangler.add(Rule("retrieve", not_found("no such batch"), times=1000))
    stack.mangler.add(Rule("list", EMPTY_LIST, times=1000))
    ids = stack.submit(3)
    results = stack.results(ids)
    assert {r.status for r in results} == {"errored"}
    assert {r.error["type"] for r in results if r.error} == {"not_found_error"}
    assert "batch vanished from the API" in stack.daemon.log_text()
    stack.assert_unharmed()
    stack.mangler.clear()
    all_succeed(stack, billed_once=False)


def test_poll_404_while_the_list_shows_the_batch_is_transient(stack: Stack) -> None:
    """Polls answered 404 while the list still shows the batch: it is followed to its end."""
    stack.mangler.add(Rule("retrieve", not_found("no such batch"), times=3))
    all_succeed(stack)
    assert "retrieve answered 404 but the list shows the batch" in stack.daemon.log_text()


# -- results -------------------------------------------------------------------------------------


def test_results_answered_with_an_html_page(stack: Stack) -> None:
    """Results served as text/html: not read as results; fan-out tries again and succeeds."""
    page = html_page(200)
    stack.mangler.add(Rule("results", Answer(body=page.body, content_type="text/html")))
    all_succeed(stack)


def test_results_with_a_result_type_never_seen(stack: Stack) -> None:
    """A line whose result type is unknown ends its request errored, carrying that result."""
    target: list[str] = []

    def odd(data: bytes) -> bytes:
        objs = lines(data)
        objs[0]["result"] = {"type": "teleported", "where": "elsewhere"}
        target.append(str(objs[0]["custom_id"]))
        return jsonl(objs)

    stack.mangler.add(Rule("results", transform=odd))
    ids = stack.submit(4)
    results = {split_request_id(r.id)[1]: r for r in stack.results(ids)}
    odd_one = results.pop(target[0])
    assert odd_one.status == "errored" and odd_one.result["type"] == "teleported"
    assert {r.status for r in results.values()} == {"succeeded"}
    stack.assert_unharmed()


def test_results_with_a_custom_id_never_sent(stack: Stack) -> None:
    """Lines for custom_ids batchd never sent are ignored; every real request succeeds."""

    def extra(data: bytes) -> bytes:
        objs = lines(data)
        ghost = dict(objs[0])
        objs += [ghost | {"custom_id": "0" * 26}, ghost | {"custom_id": "not-ours"},
                 ghost | {"custom_id": "x" * 64}]  # fmt: skip
        return jsonl(objs)

    stack.mangler.add(Rule("results", transform=extra))
    all_succeed(stack)


def test_results_line_that_is_not_json_forever(stack: Stack) -> None:
    """One request's line is garbage in every stream: it ends dead, its neighbours succeed."""
    victim: list[str] = []

    def garble(data: bytes) -> bytes:
        out = []
        for raw in data.splitlines():
            obj = orjson.loads(raw)
            if not victim:
                victim.append(str(obj["custom_id"]))
            out.append(GARBAGE if obj["custom_id"] == victim[0] else raw)
        return b"\n".join(out) + b"\n"

    stack.mangler.add(Rule("results", transform=garble, times=1000))
    ids = stack.submit(4)
    results = {split_request_id(r.id)[1]: r for r in stack.results(ids)}
    bad = results.pop(victim[0])
    assert bad.status == "dead" and bad.error is not None
    assert bad.error["type"] == "missing_result"
    assert {r.status for r in results.values()} == {"succeeded"}
    assert "unreadable results line skipped" in stack.daemon.log_text()
    stack.assert_unharmed()


def cut_short(obj: dict[str, object]) -> bytes:
    line = orjson.dumps(obj)
    return line[: line.index(b'"result"') + 20]


def result_a_string(obj: dict[str, object]) -> bytes:
    return orjson.dumps(obj | {"result": "ok"})


@pytest.mark.parametrize(
    "damage", [result_a_string, cut_short], ids=["result a string", "line cut short"]
)
def test_damaged_results_line_with_a_readable_custom_id_ends_errored_keeping_it(
    stack: Stack, damage: Callable[[dict[str, object]], bytes]
) -> None:
    """A line with a readable custom_id but no result: errored `unreadable_result`, not resent."""
    victim: list[str] = []

    def spoil(data: bytes) -> bytes:
        objs = lines(data)
        victim.append(str(objs[0]["custom_id"]))
        return b"".join([damage(objs[0]) + b"\n", jsonl(objs[1:])])

    stack.mangler.add(Rule("results", transform=spoil))
    ids = stack.submit(4)
    results = {split_request_id(r.id)[1]: r for r in stack.results(ids)}
    bad = results.pop(victim[0])
    assert bad.status == "errored" and bad.error is not None
    assert bad.error["type"] == "unreadable_result"
    assert bad.result["batchd_damaged_line"] is True
    assert victim[0] in bad.result["raw_line"]
    assert bad.attempts == 1
    assert {r.status for r in results.values()} == {"succeeded"}
    assert stack.audit()["billed"] == 4
    stack.assert_unharmed()


def test_results_line_with_invalid_utf8_is_recovered(stack: Stack) -> None:
    """A succeeded line with a byte that is not UTF-8: recovered, flagged, not sent again."""
    victim: list[str] = []

    def spoil(data: bytes) -> bytes:
        objs = lines(data)
        victim.append(str(objs[0]["custom_id"]))
        first = orjson.dumps(objs[0])
        assert b'"text":"' in first
        return first.replace(b'"text":"', b'"text":"\xff', 1) + b"\n" + jsonl(objs[1:])

    stack.mangler.add(Rule("results", transform=spoil))
    ids = stack.submit(4)
    results = {split_request_id(r.id)[1]: r for r in stack.results(ids)}
    repaired = results.pop(victim[0])
    assert repaired.status == "succeeded"
    assert repaired.result["batchd_damaged_line"] is True
    assert repaired.text is not None and repaired.text.startswith("\ufffd")
    assert repaired.attempts == 1
    assert {r.status for r in results.values()} == {"succeeded"}
    assert stack.audit()["billed"] == 4
    stack.assert_unharmed()


def test_results_200_with_a_garbage_body(stack: Stack) -> None:
    """A whole results body of garbage: every request counts as missing and goes round once."""
    body = (GARBAGE + b"\n") * 50
    stack.mangler.add(Rule("results", Answer(body=body, content_type="application/x-jsonl")))
    ids = all_succeed(stack, billed_once=False)
    assert {stack.client.get(i).attempts for i in ids} == {2}


def test_results_gone(stack: Stack) -> None:
    """Results answering 404 with the batch absent from the list: requests end errored, once."""
    stack.mangler.add(Rule("results", not_found("gone"), times=1000))
    stack.mangler.add(Rule("list", EMPTY_LIST, times=1000))
    ids = stack.submit(3)
    results = stack.results(ids)
    assert {r.status for r in results} == {"errored"}
    assert {r.attempts for r in results} == {1}
    assert "batch results are gone" in stack.daemon.log_text()
    stack.assert_unharmed()


def test_results_404_while_the_list_shows_the_batch_is_transient(stack: Stack) -> None:
    """Results answered 404 once while the list shows the batch: fetched again, all succeed."""
    stack.mangler.add(Rule("results", not_found("gone")))
    all_succeed(stack)
    assert "results answered 404 but the list shows the batch" in stack.daemon.log_text()


def test_two_unanswered_creates_of_one_size_are_never_confused(stack: Stack) -> None:
    """A's create made a batch but got garbage and A could not list; B (same size) waits until
    A's outcome is known, so neither adopts the other's batch (found by the chaos run)."""
    stack.mangler.add(Rule("create", Answer(body=GARBAGE, forward_first=True), times=2))
    stack.mangler.add(Rule("list", Answer(body=GARBAGE)))
    seen = stack.daemon.log_text().count("cannot list batches yet")
    first = stack.submit(5)
    wait_for(lambda: stack.daemon.log_text().count("cannot list batches yet") > seen, 30,
             "A's failed list")  # fmt: skip
    second = stack.submit(5)
    results = stack.results(first + second)
    assert {r.status for r in results} == {"succeeded"}
    assert {r.attempts for r in results} == {1}, "a request was sent twice"
    audit = stack.audit()
    assert (audit["batches_created"], audit["billed"]) == (2, 10)
    stack.assert_unharmed()


def test_a_batch_the_api_creates_late_is_adopted_not_made_twice(stack: Stack) -> None:
    """The create fails at once but the API makes the batch half a second later: batchd waits
    `create_settle` before believing nothing was made, and adopts it (found by the chaos run)."""
    stack.mangler.add(Rule("create", Answer(status=502, body=b"", forward_after=0.5)))
    results = stack.results(stack.submit(4))
    assert {r.status for r in results} == {"succeeded"}
    assert {r.attempts for r in results} == {1}
    audit = stack.audit()
    assert (audit["batches_created"], audit["billed"]) == (1, 4)
    stack.assert_unharmed()
