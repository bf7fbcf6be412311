"""BatchesClient against the real emulator process: every operation, faults, broken streams.

The emulator's clock is stopped; a test ends its batches by advancing it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from batchd import errors
from batchd.api import BatchesClient, MessageBatch, RetryPolicy
from tests.support.emulator import EmulatorProcess, OpenAPISchemas, batch_requests

from .conftest import EMULATOR_RETRY


def encoded(requests: list[dict[str, Any]]) -> tuple[list[bytes], int]:
    """A create body as separate chunks (one per request) and its total length."""
    chunks = [b'{"requests":[']
    for i, request in enumerate(requests):
        chunks.append((b"," if i else b"") + orjson.dumps(request))
    chunks.append(b"]}")
    return chunks, sum(map(len, chunks))


def create(api: BatchesClient, count: int, prefix: str = "req") -> MessageBatch:
    chunks, length = encoded(batch_requests(count, prefix))
    return api.create(iter(chunks), length)


def ended_batch(api: BatchesClient, emu: EmulatorProcess, count: int) -> MessageBatch:
    batch = create(api, count)
    emu.advance(5)
    done = api.retrieve(batch.id)
    assert done.processing_status == "ended"
    return done


def test_create_streams_a_generator_body(api: BatchesClient) -> None:
    """create sends a generator's chunks and gets an in-progress batch of that size."""
    chunks, length = encoded(batch_requests(25))
    consumed: list[int] = []

    def body() -> Iterator[bytes]:
        for n, chunk in enumerate(chunks):
            consumed.append(n)
            yield chunk

    batch = api.create(body(), length)
    assert batch.id.startswith("msgbatch_")
    assert batch.processing_status == "in_progress"
    assert batch.total == 25 == batch.request_counts.processing
    assert batch.expires_at is not None and batch.results_url is None
    assert consumed == list(range(len(chunks)))


def test_retrieve_follows_a_batch_to_its_end(api: BatchesClient, emu: EmulatorProcess) -> None:
    """retrieve sees in_progress, then ended with counts that sum to the size."""
    batch = create(api, 10)
    assert api.retrieve(batch.id).processing_status == "in_progress"
    emu.advance(5)
    done = api.retrieve(batch.id)
    assert done.processing_status == "ended"
    assert done.ended_at is not None and done.results_url is not None
    assert done.total == 10 == done.request_counts.succeeded


def test_list_and_iter_batches_newest_first(api: BatchesClient) -> None:
    """list pages and iter_batches walk every batch, newest first."""
    ids = [create(api, 1, prefix=f"b{n}").id for n in range(5)]
    page = api.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2]
    assert page.has_more and page.last_id == ids[3]
    assert [b.id for b in api.iter_batches(limit=2)] == ids[::-1]
    assert [b.id for b in api.iter_batches(limit=2, after_id=ids[3])] == ids[2::-1]


def test_cancel_then_ended_as_canceled(api: BatchesClient, emu: EmulatorProcess) -> None:
    """cancel answers canceling; once ended, the requests count as canceled."""
    batch = create(api, 4)
    canceling = api.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    emu.advance(5)
    done = api.retrieve(batch.id)
    assert done.processing_status == "ended"
    assert done.request_counts.canceled + done.request_counts.succeeded == 4
    kinds = {line.type for line in api.results(batch.id)}
    assert kinds <= {"canceled", "succeeded"}


def test_results_deliver_every_request_once(api: BatchesClient, emu: EmulatorProcess) -> None:
    """results stream one line per request, matched by custom_id."""
    batch = ended_batch(api, emu, 50)
    lines = list(api.results(batch.id))
    assert sorted(line.custom_id for line in lines) == sorted(f"req-{i}" for i in range(50))
    assert all(line.type == "succeeded" for line in lines)
    assert all(orjson.loads(line.raw)["custom_id"] == line.custom_id for line in lines)


def test_delete_an_ended_batch(api: BatchesClient, emu: EmulatorProcess) -> None:
    """delete returns the id, after which the batch is gone (404)."""
    batch = ended_batch(api, emu, 2)
    assert api.delete(batch.id) == batch.id
    with pytest.raises(errors.NotFoundError):
        api.retrieve(batch.id)


def test_delete_in_progress_is_refused(api: BatchesClient) -> None:
    """A batch still processing cannot be deleted: a status error, not retried forever."""
    batch = create(api, 2)
    with pytest.raises(errors.APIStatusError) as info:
        api.delete(batch.id)
    assert info.value.status is not None and 400 <= info.value.status < 500


def test_unknown_batch_is_not_found(api: BatchesClient) -> None:
    """A 404 is NotFoundError with the emulator's request id and message."""
    with pytest.raises(errors.NotFoundError) as info:
        api.retrieve("msgbatch_doesnotexist")
    assert info.value.status == 404
    assert info.value.error_type == "not_found_error"
    assert info.value.request_id and info.value.request_id.startswith("req_")


@pytest.mark.parametrize("operation", ["retrieve", "results"])
def test_not_found_is_raised_at_once_with_its_request_id(
    emu: EmulatorProcess, operation: str
) -> None:
    """A 404 is never retried: one call, NotFoundError carrying the answer's request id."""
    calls: list[tuple[str, int | None]] = []
    with (
        BatchesClient(
            emu.api_key,
            base_url=emu.url,
            retry=EMULATOR_RETRY,
            on_call=lambda op, status, _t: calls.append((op, status)),
        ) as client,
        pytest.raises(errors.NotFoundError) as info,
    ):
        if operation == "retrieve":
            client.retrieve("msgbatch_gone")
        else:
            list(client.results("msgbatch_gone"))
    assert calls == [(operation, 404)]
    assert info.value.request_id is not None and info.value.request_id.startswith("req_")
    assert info.value.request_id in str(info.value)


def test_an_ended_batch_has_every_field_of_the_spec(
    api: BatchesClient, emu: EmulatorProcess
) -> None:
    """retrieve of an ended batch fills results_url and every MessageBatch field of the spec."""
    batch = ended_batch(api, emu, 3)
    schemas = OpenAPISchemas()
    spec_fields = set(schemas.schema("MessageBatch")["properties"])
    assert spec_fields <= set(MessageBatch.model_fields)
    schemas.validate("MessageBatch", batch.model_dump(mode="json"))
    assert batch.results_url == f"{emu.url}/v1/messages/batches/{batch.id}/results"
    assert batch.ended_at is not None and batch.expires_at is not None


def test_wrong_key_is_an_authentication_error(emu: EmulatorProcess) -> None:
    """A refused key is AuthenticationError, and the key is not in the error."""
    bad_key = "sk-ant-not-a-known-key-123456"
    client = BatchesClient(bad_key, base_url=emu.url, retry=EMULATOR_RETRY)
    with client, pytest.raises(errors.AuthenticationError) as info:
        client.list()
    assert info.value.status == 401
    assert info.value.error_type == "authentication_error"
    assert bad_key not in str(info.value) and bad_key not in repr(info.value)


# -- faults -------------------------------------------------------------------------------


def fault_once(
    emu: EmulatorProcess, profile: dict[str, Any], operation: str, **kw: Any
) -> tuple[BatchesClient, list[tuple[str, int | None]], list[float]]:
    """A client whose first failing call switches the emulator back to a clean profile."""
    calls: list[tuple[str, int | None]] = []
    sleeps: list[float] = []

    def on_call(op: str, status: int | None, _seconds: float) -> None:
        calls.append((op, status))
        if status is not None and status >= 400:
            emu.set_profile({})

    emu.set_profile({**profile, "fault_operations": [operation]})
    client = BatchesClient(
        emu.api_key, base_url=emu.url, retry=EMULATOR_RETRY, on_call=on_call, **kw
    )

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        time.sleep(seconds)

    client._sleep = sleep
    return client, calls, sleeps


def test_429_with_retry_after_is_retried(emu: EmulatorProcess) -> None:
    """A 429 carries retry-after; the client waits (capped) and succeeds on retry."""
    client, calls, sleeps = fault_once(emu, {"http_429_rate": 1.0, "retry_after": 3}, "list")
    with client:
        client.list()
    assert calls == [("list", 429), ("list", 200)]
    # retry-after was 3 s, capped by the policy's retry_after_max.
    assert sleeps == [EMULATOR_RETRY.retry_after_max]


@pytest.mark.parametrize(("rate_key", "status"), [("http_500_rate", 500), ("http_529_rate", 529)])
def test_server_errors_are_retried(emu: EmulatorProcess, rate_key: str, status: int) -> None:
    """500 and 529 are retried with backoff and the call succeeds."""
    batch_id = None
    with BatchesClient(emu.api_key, base_url=emu.url, retry=EMULATOR_RETRY) as setup:
        batch_id = create(setup, 1).id
    client, calls, sleeps = fault_once(emu, {rate_key: 1.0}, "retrieve")
    with client:
        assert client.retrieve(batch_id).id == batch_id
    assert calls == [("retrieve", status), ("retrieve", 200)]
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= EMULATOR_RETRY.backoff_cap(0)


def test_persistent_529_gives_up_after_max_retries(emu: EmulatorProcess) -> None:
    """A fault that never clears is raised after max_retries retries."""
    emu.set_profile({"http_529_rate": 1.0})
    calls: list[int | None] = []
    with (
        BatchesClient(
            emu.api_key,
            base_url=emu.url,
            retry=EMULATOR_RETRY,
            on_call=lambda o, s, t: calls.append(s),
        ) as client,
        pytest.raises(errors.OverloadedError),
    ):
        client.list()
    assert calls == [529] * (EMULATOR_RETRY.max_retries + 1)


def test_create_with_a_factory_is_retried_whole(emu: EmulatorProcess) -> None:
    """A create refused with 500 is sent again from the factory; one batch results."""
    chunks, length = encoded(batch_requests(3))
    client, calls, _ = fault_once(emu, {"http_500_rate": 1.0}, "create")
    with client:
        batch = client.create(lambda: iter(chunks), length)
        assert batch.total == 3
        assert [b.id for b in client.iter_batches()] == [batch.id]
    assert calls[:2] == [("create", 500), ("create", 200)]


def test_lost_create_answer_is_raised_without_retry(emu: EmulatorProcess) -> None:
    """retries=False: a create whose answer is lost raises; the batch exists for adoption."""
    chunks, length = encoded(batch_requests(2))
    emu.set_profile({"create_lost_response_rate": 1.0})
    with BatchesClient(emu.api_key, base_url=emu.url, retry=EMULATOR_RETRY) as client:
        with pytest.raises(errors.APIConnectionError):
            client.create(iter(chunks), length, retries=False)
        emu.set_profile({})
        batches = list(client.iter_batches())
    assert len(batches) == 1 and batches[0].total == 2


def test_aborted_upload_creates_no_batch(api: BatchesClient) -> None:
    """An exception from the body generator propagates and the emulator makes no batch."""
    chunks, length = encoded(batch_requests(5))

    def body() -> Iterator[bytes]:
        yield from chunks[:3]
        raise InterruptedError("lost the lease")

    with pytest.raises(InterruptedError):
        api.create(body(), length)
    with pytest.raises(errors.BodyLengthError):
        api.create(iter(chunks[:-1]), length)
    assert api.list().data == []


# -- results streams ------------------------------------------------------------------------


@pytest.mark.parametrize("split", [False, True])
def test_results_with_crlf_and_long_lines(
    api: BatchesClient, emu: EmulatorProcess, split: bool
) -> None:
    """CRLF endings (split across chunks or not) and lines over 64 KiB all come through."""
    emu.set_profile(
        {"results_crlf": True, "results_split_crlf": split, "results_long_line_rate": 0.3}
    )
    batch = create(api, 40)
    emu.advance(5)
    lines = list(api.results(batch.id))
    assert sorted(line.custom_id for line in lines) == sorted(f"req-{i}" for i in range(40))
    assert all(not line.raw.endswith(b"\r") for line in lines)
    assert max(len(line.raw) for line in lines) > 65536


@pytest.mark.parametrize("mode", ["close", "rst"])
def test_results_cut_mid_stream_resume_without_loss_or_repeat(
    emu: EmulatorProcess, mode: str
) -> None:
    """A download cut halfway is fetched again; every custom_id is delivered exactly once."""
    with BatchesClient(emu.api_key, base_url=emu.url, retry=EMULATOR_RETRY) as setup:
        batch = create(setup, 200)
    emu.advance(5)
    client, calls, sleeps = fault_once(
        emu, {"results_reset_rate": 1.0, "results_reset_mode": mode}, "results"
    )

    def clean_after_first(op: str, status: int | None, _s: float) -> None:
        calls.append((op, status))
        if len(calls) == 1:
            emu.set_profile({})  # the first download is already doomed; the next is clean

    client._on_call = clean_after_first
    with client:
        got = [line.custom_id for line in client.results(batch.id)]
    assert len(got) == len(set(got)) == 200
    assert set(got) == {f"req-{i}" for i in range(200)}
    assert calls == [("results", 200), ("results", 200)]
    assert len(sleeps) == 1


def test_results_cut_without_resume_reports_delivered(emu: EmulatorProcess) -> None:
    """resume=False: the cut is ResultsStreamError with exactly the lines handed over."""
    with BatchesClient(emu.api_key, base_url=emu.url, retry=EMULATOR_RETRY) as client:
        batch = create(client, 100)
        emu.advance(5)
        emu.set_profile({"results_reset_rate": 1.0, "results_reset_after": 0.3})
        got: list[str] = []
        with pytest.raises(errors.ResultsStreamError) as info:
            got.extend(line.custom_id for line in client.results(batch.id, resume=False))
        assert info.value.delivered == len(got) == 30
        emu.set_profile({})
        rest = [line.custom_id for line in client.results(batch.id, skip=len(got))]
    assert sorted(got + rest) == sorted(f"req-{i}" for i in range(100))


def test_results_that_always_break_give_up(emu: EmulatorProcess) -> None:
    """A download that breaks at the same place every time fails after max_retries resumes."""
    calls: list[tuple[str, int | None]] = []
    with BatchesClient(
        emu.api_key,
        base_url=emu.url,
        retry=RetryPolicy(max_retries=2, backoff_initial=0.001, backoff_max=0.001),
        on_call=lambda op, status, _t: calls.append((op, status)),
    ) as client:
        batch = create(client, 20)
        emu.advance(5)
        emu.set_profile({"results_reset_rate": 1.0})
        got: list[str] = []
        with pytest.raises(errors.ResultsStreamError) as info:
            got.extend(line.custom_id for line in client.results(batch.id))
    assert info.value.delivered == len(got) == 10
    assert calls == [("create", 200)] + [("results", 200)] * 3
