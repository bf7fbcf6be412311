"""Conformance: the official `anthropic` SDK drives the emulator as it drives the real API."""

from __future__ import annotations

import anthropic
import pytest

from tests.support.emulator import EmulatorProcess, batch_requests


def test_create_returns_an_in_progress_batch(sdk: anthropic.Anthropic) -> None:
    """create answers a MessageBatch in progress with every request processing."""
    batch = sdk.messages.batches.create(requests=batch_requests(3))  # type: ignore[arg-type]
    assert batch.id.startswith("msgbatch_")
    assert batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 3
    assert batch.results_url is None and batch.ended_at is None


def test_retrieve_sees_the_batch_end(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """retrieve reports `ended` with final counts once the processing time has passed."""
    batch = sdk.messages.batches.create(requests=batch_requests(4))  # type: ignore[arg-type]
    assert sdk.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    emu.advance(1)
    ended = sdk.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 4
    assert ended.results_url == f"{emu.url}/v1/messages/batches/{batch.id}/results"


def test_list_auto_pages_newest_first(sdk: anthropic.Anthropic) -> None:
    """list(limit=2) pages through every batch, newest first, with no repeats."""
    created = [
        sdk.messages.batches.create(requests=batch_requests(1, f"b{i}")).id  # type: ignore[arg-type]
        for i in range(5)
    ]
    page = sdk.messages.batches.list(limit=2)
    assert len(page.data) == 2 and page.has_more
    assert [b.id for b in sdk.messages.batches.list(limit=2)] == created[::-1]


def test_list_pages_backwards_with_before_id(sdk: anthropic.Anthropic) -> None:
    """before_id pages toward newer batches and auto-paging follows first_id."""
    created = [
        sdk.messages.batches.create(requests=batch_requests(1, f"b{i}")).id  # type: ignore[arg-type]
        for i in range(5)
    ]
    newer = [b.id for b in sdk.messages.batches.list(limit=2, before_id=created[0])]
    assert sorted(newer) == sorted(created[1:])


def test_cancel_then_results_show_canceled(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """cancel moves the batch to canceling, then it ends with every request canceled."""
    batch = sdk.messages.batches.create(requests=batch_requests(3))  # type: ignore[arg-type]
    canceling = sdk.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    emu.advance(1)
    ended = sdk.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.canceled == 3
    assert {r.result.type for r in sdk.messages.batches.results(batch.id)} == {"canceled"}


def test_delete_after_end(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """delete of an ended batch answers message_batch_deleted and the batch is gone."""
    batch = sdk.messages.batches.create(requests=batch_requests(1))  # type: ignore[arg-type]
    emu.advance(1)
    deleted = sdk.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.batches.retrieve(batch.id)


def test_results_decode_into_typed_lines(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """results yields one typed line per request, each Message echoing its request's model."""
    requests = batch_requests(20, model="claude-haiku-4-5")
    batch = sdk.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    emu.advance(1)
    lines = list(sdk.messages.batches.results(batch.id))
    assert sorted(line.custom_id for line in lines) == sorted(r["custom_id"] for r in requests)
    for line in lines:
        assert line.result.type == "succeeded"
        message = line.result.message
        assert message.model == "claude-haiku-4-5"
        assert message.id.startswith("msg_")
        assert message.stop_reason == "end_turn"
        assert message.content[0].type == "text"
        assert message.usage.output_tokens > 0


def test_bad_key_is_authentication_error(emu: EmulatorProcess) -> None:
    """An unknown API key raises AuthenticationError."""
    client = anthropic.Anthropic(api_key="sk-ant-nobody", base_url=emu.url, max_retries=0)
    with client, pytest.raises(anthropic.AuthenticationError):
        client.messages.batches.list()


def test_bad_custom_id_is_bad_request(sdk: anthropic.Anthropic) -> None:
    """A custom_id off the pattern raises BadRequestError naming its index."""
    requests = batch_requests(3)
    requests[2]["custom_id"] = "no spaces allowed"
    with pytest.raises(anthropic.BadRequestError, match=r"requests\.2\.custom_id"):
        sdk.messages.batches.create(requests=requests)  # type: ignore[arg-type]


def test_unknown_batch_is_not_found(sdk: anthropic.Anthropic) -> None:
    """An id the workspace never had raises NotFoundError."""
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.batches.retrieve("msgbatch_doesnotexist")


def test_injected_429_is_rate_limit_error(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """An injected 429 raises RateLimitError carrying retry-after."""
    emu.set_profile({"http_429_rate": 1.0, "retry_after": 7})
    with pytest.raises(anthropic.RateLimitError) as caught:
        sdk.messages.batches.list()
    assert caught.value.response.headers["retry-after"] == "7"


def test_injected_500_is_internal_server_error(
    sdk: anthropic.Anthropic, emu: EmulatorProcess
) -> None:
    """An injected 500 raises InternalServerError."""
    emu.set_profile({"http_500_rate": 1.0})
    with pytest.raises(anthropic.InternalServerError) as caught:
        sdk.messages.batches.list()
    assert caught.value.status_code == 500


def test_injected_529_is_overloaded_error(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """An injected 529 raises OverloadedError, an InternalServerError."""
    emu.set_profile({"http_529_rate": 1.0})
    with pytest.raises(anthropic.OverloadedError) as caught:
        sdk.messages.batches.create(requests=batch_requests(1))  # type: ignore[arg-type]
    assert isinstance(caught.value, anthropic.InternalServerError)


def test_oversized_body_is_content_too_large(small_emulator: EmulatorProcess) -> None:
    """A body over the size limit raises the SDK's 413 error."""
    with (
        anthropic.Anthropic(
            api_key=small_emulator.api_key, base_url=small_emulator.url, max_retries=0
        ) as client,
        pytest.raises(anthropic.ContentTooLargeError),
    ):
        client.messages.batches.create(
            requests=batch_requests(2, max_tokens=1, system="x" * 5000)  # type: ignore[arg-type]
        )


def test_cancel_after_end_is_bad_request(sdk: anthropic.Anthropic, emu: EmulatorProcess) -> None:
    """cancel of an ended batch raises BadRequestError."""
    batch = sdk.messages.batches.create(requests=batch_requests(1))  # type: ignore[arg-type]
    emu.advance(1)
    with pytest.raises(anthropic.BadRequestError, match="already ended"):
        sdk.messages.batches.cancel(batch.id)
