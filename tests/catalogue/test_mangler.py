"""The fault rules themselves: a rule naming no operation is refused, and each rule counts what
it spoiled, so a catalogue case whose fault never happened fails instead of passing."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.catalogue.mangler import Mangler, Rule, html_page
from tests.support.emulator import EmulatorProcess


@pytest.fixture
def mangler(emulator: EmulatorProcess) -> Iterator[Mangler]:
    proxy = Mangler(emulator.url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def get(mangler: Mangler, emulator: EmulatorProcess, path: str) -> httpx.Response:
    headers = {"x-api-key": emulator.api_key, "anthropic-version": "2023-06-01"}
    return httpx.get(mangler.url + path, headers=headers, timeout=10)


def test_a_misspelt_operation_is_refused(mangler: Mangler) -> None:
    """A rule naming an operation that does not exist is refused at once: it could never fire."""
    with pytest.raises(ValueError, match="craete"):
        mangler.add(Rule("craete", html_page(502)))
    assert mangler.rules == []


def test_a_rule_that_never_fired_fails_the_check(
    mangler: Mangler, emulator: EmulatorProcess
) -> None:
    """A rule whose operation never came through fails `assert_fired`, naming the operation."""
    mangler.add(Rule("results", html_page(502)))
    assert get(mangler, emulator, "/v1/messages/batches").status_code == 200
    with pytest.raises(AssertionError, match="results"):
        mangler.assert_fired()


def test_a_rule_counts_the_answers_it_spoiled(mangler: Mangler, emulator: EmulatorProcess) -> None:
    """A rule replaces `times` answers, each counted; then the API answers again."""
    rule = mangler.add(Rule("list", html_page(502), times=2))
    statuses = [get(mangler, emulator, "/v1/messages/batches").status_code for _ in range(3)]
    assert statuses == [502, 502, 200]
    assert rule.hits == 2
    mangler.assert_fired()


def test_a_transform_counts_only_bodies_it_rewrote(
    mangler: Mangler, emulator: EmulatorProcess
) -> None:
    """A transform meeting an error answer leaves it as it is, uncounted, and stays due."""
    rule = mangler.add(Rule("retrieve", transform=lambda body: b"spoiled"))
    answer = get(mangler, emulator, "/v1/messages/batches/msgbatch_01NoSuchBatch")
    assert answer.status_code == 404 and answer.content != b"spoiled"
    assert rule.hits == 0
    assert mangler.unfired() == [rule]
