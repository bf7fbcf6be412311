"""Results over real sockets: short and cut downloads, damaged bytes, where results_url leads."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from batchd import errors
from batchd.api import BatchesClient, RetryPolicy
from tests.support.emulator import EmulatorProcess, batch_requests

from .conftest import EMULATOR_RETRY
from .helpers import result_line
from .rawserver import RawServer, http_answer

IDS = [f"req-{n}" for n in range(5)]
NO_RETRY = RetryPolicy(max_retries=0)


def jsonl(ids: list[str]) -> bytes:
    return b"".join(result_line(i) + b"\n" for i in ids)


def results_answer(body: bytes, *, content_length: int | None = None) -> bytes:
    return http_answer(200, body, content_type="application/x-jsonl", content_length=content_length)


def test_a_short_download_that_ends_cleanly_is_counted_not_raised() -> None:
    """3 of 5 lines in a correctly framed body: ended cleanly, short, the count exact."""
    server = RawServer(results_answer(jsonl(IDS[:3])))
    try:
        with BatchesClient("sk-ant-raw", base_url=server.url) as client:
            stream = client.results("msgbatch_1", expected=len(IDS))
            got = [line.custom_id for line in stream]
    finally:
        server.close()
    assert got == IDS[:3]
    assert stream.ended_cleanly and stream.short and stream.lines == 3
    assert len(server.uploads) == 1


def test_a_body_cut_short_of_its_length_is_a_stream_error() -> None:
    """The server hangs up before content-length bytes: ResultsStreamError with the count."""
    whole = jsonl(IDS)
    cut = jsonl(IDS[:2]) + result_line(IDS[2])[:20]
    server = RawServer(results_answer(cut, content_length=len(whole)), close_after=True)
    try:
        with BatchesClient("sk-ant-raw", base_url=server.url, retry=NO_RETRY) as client:
            stream = client.results("msgbatch_1", resume=False)
            got: list[str] = []
            with pytest.raises(errors.ResultsStreamError) as info:
                got.extend(line.custom_id for line in stream)
    finally:
        server.close()
    assert got == IDS[:2]
    assert info.value.delivered == stream.delivered == 2
    assert not stream.ended_cleanly


def test_a_cut_body_is_resumed_and_completed() -> None:
    """With resume, the cut download is fetched again; each line arrives once."""
    whole = jsonl(IDS)
    cut = jsonl(IDS[:2]) + result_line(IDS[2])[:20]
    server = RawServer(
        [results_answer(cut, content_length=len(whole)), results_answer(whole)],
        close_after=True,
    )
    retry = RetryPolicy(max_retries=2, backoff_initial=0.001, backoff_max=0.001)
    try:
        with BatchesClient("sk-ant-raw", base_url=server.url, retry=retry) as client:
            stream = client.results("msgbatch_1", expected=len(IDS))
            got = [line.custom_id for line in stream]
    finally:
        server.close()
    assert got == IDS
    assert stream.downloads == 2 and stream.repeated == 2 and stream.complete
    assert server.connections == 2


def test_damaged_bytes_off_the_wire_are_delivered_flagged() -> None:
    """Invalid UTF-8 and a lone surrogate escape, as sent by a server, keep their custom_ids."""
    bad_utf8 = result_line("req-x").replace(b"answer to", b"\xc3\x28 to")
    surrogate = result_line("req-y").replace(b"answer to", b"\\ud800 to")
    body = jsonl(IDS[:1]) + bad_utf8 + b"\r\n" + surrogate + b"\r\n" + b"\xff\xfe garbage\n"
    server = RawServer(results_answer(body))
    bad: list[int] = []
    try:
        with BatchesClient("sk-ant-raw", base_url=server.url) as client:
            stream = client.results(
                "msgbatch_1", on_bad_line=lambda n, _e: bad.append(n), recover=True
            )
            lines = list(stream)
    finally:
        server.close()
    assert [(r.custom_id, r.damaged) for r in lines] == [
        ("req-0", False),
        ("req-x", True),
        ("req-y", True),
    ]
    assert lines[1].raw == bad_utf8 and lines[2].raw == surrogate
    assert bad == [4]
    assert stream.lines == 4 and stream.ended_cleanly


def test_results_url_on_the_api_origin_is_requested_exactly_with_the_key() -> None:
    """The server sees a GET of the results_url's own path and query, with x-api-key."""
    server = RawServer(results_answer(jsonl(IDS)))
    try:
        url = f"{server.url}/v1/files/file_1/content?sig=abc"
        with BatchesClient("sk-ant-raw", base_url=server.url) as client:
            assert len(list(client.results("msgbatch_1", results_url=url))) == len(IDS)
        upload = server.upload(0)
    finally:
        server.close()
    assert upload.request_line == "GET /v1/files/file_1/content?sig=abc HTTP/1.1"
    assert upload.header("x-api-key") == "sk-ant-raw"


@pytest.fixture
def elsewhere() -> Iterator[RawServer]:
    """A server that would record anything sent to it: a foreign results_url host."""
    server = RawServer(results_answer(jsonl(["forged"])))
    yield server
    server.close()


@pytest.fixture
def emulator_pointing_elsewhere(tmp_path: Path, elsewhere: RawServer) -> Iterator[EmulatorProcess]:
    """An emulator whose results_url names another origin, as a gateway's clients may see."""
    process = EmulatorProcess(
        tmp_path,
        args=["--processing-time", "0.1", "--public-url", elsewhere.url],
    )
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_a_foreign_results_url_never_gets_the_key(
    emulator_pointing_elsewhere: EmulatorProcess, elsewhere: RawServer
) -> None:
    """The foreign host is never contacted; the batch's results path is read from the API."""
    emu = emulator_pointing_elsewhere
    emu.set_clock_scale(0)
    body = b'{"requests":' + orjson.dumps(batch_requests(4)) + b"}"
    with BatchesClient(emu.api_key, base_url=emu.url, retry=EMULATOR_RETRY) as client:
        batch = client.create(body, len(body))
        emu.advance(5)
        done = client.retrieve(batch.id)
        assert done.results_url is not None and done.results_url.startswith(elsewhere.url)
        stream = client.results_from(done)
        got = sorted(line.custom_id for line in stream)
    assert got == [f"req-{i}" for i in range(4)]
    assert stream.complete and stream.expected == 4
    assert elsewhere.connections == 0


def test_results_from_the_emulator_follow_its_results_url(
    api: BatchesClient, emu: EmulatorProcess
) -> None:
    """An ended batch's results_url (same origin) gives every line, counted complete."""
    body = b'{"requests":' + orjson.dumps(batch_requests(30)) + b"}"
    batch = api.create(body, len(body))
    emu.advance(5)
    done = api.retrieve(batch.id)
    assert done.results_url == f"{emu.url}/v1/messages/batches/{batch.id}/results"
    stream = api.results_from(done)
    got = sorted(line.custom_id for line in stream)
    assert got == sorted(f"req-{i}" for i in range(30))
    assert stream.complete and stream.lines == stream.expected == 30
