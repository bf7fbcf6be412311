"""The compact per-request records a create keeps, and the result lines made from them."""

from __future__ import annotations

import orjson

from batchd.emulator.faults import FaultProfile
from batchd.emulator.generate import fake_message
from batchd.emulator.messages import message_id, parse_create_body
from batchd.emulator.results import result_chunks
from batchd.emulator.state import Batch
from tests.support.emulator import batch_requests


def ended_batch(count: int) -> Batch:
    body = bytearray(orjson.dumps({"requests": batch_requests(count)}))
    parsed = parse_create_body(body, 100_000, beta=False)
    return Batch(
        batch_id="msgbatch_test",
        sequence=1,
        created=0.0,
        parsed=parsed,
        profile=FaultProfile(processing_time=(1.0, 1.0)),
        seed="1",
        expiry=86400.0,
        retention=1e9,
    )


def test_records_hold_no_request_dicts() -> None:
    """Parsing keeps strings and numbers per request, never the request objects."""
    parsed = parse_create_body(
        bytearray(orjson.dumps({"requests": batch_requests(3)})), 10, beta=False
    )
    assert parsed.custom_ids == ["req-0", "req-1", "req-2"]
    assert all(type(x) is str for x in parsed.replies + parsed.models)
    assert parsed.invalid == {}


def test_parse_gives_the_body_memory_back() -> None:
    """The body buffer is emptied once parsed, so only the records stay."""
    body = bytearray(orjson.dumps({"requests": batch_requests(2)}))
    parse_create_body(body, 10, beta=False)
    assert len(body) == 0


def test_succeeded_line_equals_the_whole_message() -> None:
    """A templated succeeded line is the same JSON as the full Message dict."""
    batch = ended_batch(5)
    body = b"".join(result_chunks(batch, beta=False))
    assert batch.requests is not None
    for raw in body.splitlines():
        line = orjson.loads(raw)
        i = batch.requests.custom_ids.index(line["custom_id"])
        expected = fake_message(
            message_id=message_id(batch.id, line["custom_id"]),
            model=batch.requests.models[i],
            text=batch.requests.replies[i],
            input_tokens=batch.requests.input_tokens[i],
            beta=False,
        )
        assert line["result"] == {"type": "succeeded", "message": expected}


def test_chunks_are_bounded() -> None:
    """Results come in pieces near the chunk size, never as one body."""
    chunks = list(result_chunks(ended_batch(2000), beta=False, chunk_bytes=64 * 1024))
    assert len(chunks) > 5
    assert all(len(c) < 2 * 64 * 1024 for c in chunks)
