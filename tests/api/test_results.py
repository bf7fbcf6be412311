"""results(): streaming JSONL, content types, broken streams, resume without loss or repeats."""

from __future__ import annotations

import httpx
import pytest

from batchd import errors
from batchd.api import RetryPolicy

from .helpers import (
    FAST_RETRY,
    ChunkStream,
    Script,
    error_json,
    json_response,
    jsonl_response,
    make_client,
    result_line,
)

IDS = [f"req-{n}" for n in range(6)]
KINDS = ["succeeded", "errored", "canceled", "expired", "succeeded", "succeeded"]


def body(ids: list[str] = IDS, ending: bytes = b"\r\n") -> bytes:
    kinds = dict(zip(IDS, KINDS, strict=True))
    return b"".join(result_line(i, kinds.get(i, "succeeded")) + ending for i in ids)


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_results_stream_every_line_in_order() -> None:
    """Every line arrives as a ResultLine, raw bytes without the CRLF."""
    response, stream = jsonl_response(chunked(body(), 37))
    script = Script(response)
    with make_client(script) as client:
        lines = list(client.results("msgbatch_01"))
    assert [r.custom_id for r in lines] == IDS
    assert [r.type for r in lines] == KINDS
    assert all(not r.raw.endswith((b"\r", b"\n")) for r in lines)
    assert script.requests[0].url.path == "/v1/messages/batches/msgbatch_01/results"
    assert stream.closed


@pytest.mark.parametrize(
    "content_type",
    [
        "application/x-jsonl",
        "application/binary",
        "application/octet-stream",
        "application/x-jsonl; charset=utf-8",
    ],
)
def test_results_content_types_accepted(content_type: str) -> None:
    """The API's JSONL may be labelled x-jsonl, binary or octet-stream."""
    response, _ = jsonl_response([body()], content_type=content_type)
    with make_client(Script(response)) as client:
        assert len(list(client.results("b"))) == len(IDS)


@pytest.mark.parametrize(
    ("content_type", "page"),
    [
        ("text/html", b"<html><body>Please log in</body></html>"),
        ("application/json", error_json("api_error", "results not ready")),
    ],
)
def test_an_error_page_with_200_is_a_response_error(content_type: str, page: bytes) -> None:
    """An HTML or JSON page served with 200 is not results: APIResponseError, response closed."""
    response, stream = jsonl_response([page], content_type=content_type)
    with make_client(Script(response)) as client, pytest.raises(errors.APIResponseError) as info:
        list(client.results("b"))
    assert content_type in str(info.value)
    assert stream.closed


def test_results_error_status_is_raised_as_itself() -> None:
    """A 404 on the first request is NotFoundError, not a stream error."""
    client = make_client(Script(json_response(404, error_json("not_found_error", "no"))))
    with client, pytest.raises(errors.NotFoundError):
        list(client.results("b"))


def test_results_retries_a_500_before_streaming() -> None:
    """The results request itself goes through the retry policy."""
    response, _ = jsonl_response([body()])
    script = Script(json_response(500, error_json("api_error", "x")), response)
    with make_client(script) as client:
        assert len(list(client.results("b"))) == len(IDS)


def test_truncated_last_line_that_is_complete_json_is_delivered() -> None:
    """A last line without newline but complete is a normal end."""
    data = body().rstrip(b"\r\n")
    response, _ = jsonl_response(chunked(data, 50))
    with make_client(Script(response)) as client:
        assert [r.custom_id for r in client.results("b", resume=False)] == IDS


def test_truncated_last_line_cut_mid_json_is_a_stream_error() -> None:
    """A cut last line is ResultsStreamError with the exact delivered count."""
    data = body() + result_line("req-late")[:25]
    response, stream = jsonl_response([data])
    got: list[str] = []
    with make_client(Script(response)) as client, pytest.raises(errors.ResultsStreamError) as info:
        got.extend(r.custom_id for r in client.results("b", resume=False))
    assert got == IDS
    assert info.value.delivered == len(IDS)
    assert "cut off" in str(info.value)
    assert stream.closed


def test_dropped_connection_without_resume_is_a_stream_error() -> None:
    """An httpx error mid-stream is ResultsStreamError(delivered=n), the response closed."""
    response, stream = jsonl_response(
        [*chunked(body(IDS[:3]), 64), result_line("req-3")[:30]],
        fail=httpx.RemoteProtocolError("peer closed connection without sending complete body"),
    )
    got: list[str] = []
    with make_client(Script(response)) as client, pytest.raises(errors.ResultsStreamError) as info:
        got.extend(r.custom_id for r in client.results("b", resume=False))
    assert got == IDS[:3]
    assert info.value.delivered == 3
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert stream.closed


def test_read_timeout_mid_stream_is_a_stream_error() -> None:
    """A read timeout mid-stream breaks the stream the same way."""
    response, _ = jsonl_response([body(IDS[:2])], fail=httpx.ReadTimeout("timed out"))
    with make_client(Script(response)) as client, pytest.raises(errors.ResultsStreamError) as info:
        list(client.results("b", resume=False))
    assert info.value.delivered == 2


def test_resume_after_a_drop_dedupes_by_custom_id() -> None:
    """With resume, a broken stream is fetched again and each custom_id is delivered once."""
    sleeps: list[float] = []
    first, s1 = jsonl_response(
        [body(IDS[:3]) + result_line("req-3")[:20]], fail=httpx.ReadError("connection reset")
    )
    # The second read returns lines in another order: dedupe must be by custom_id, not count.
    second, s2 = jsonl_response(chunked(body(list(reversed(IDS))), 41))
    script = Script(first, second)
    with make_client(script, sleeps=sleeps) as client:
        got = [r.custom_id for r in client.results("b")]
    assert sorted(got) == sorted(IDS)
    assert len(got) == len(set(got)) == len(IDS)
    assert got[:3] == IDS[:3]
    assert len(script.requests) == 2
    assert len(sleeps) == 1 and 0 <= sleeps[0] <= FAST_RETRY.backoff_cap(0)
    assert s1.closed and s2.closed


def test_resume_after_a_truncated_tail() -> None:
    """A cut last line is resumed like a drop when resume is on."""
    first, _ = jsonl_response([body(IDS[:4]) + result_line("req-4")[:10]])
    second, _ = jsonl_response([body()])
    with make_client(Script(first, second)) as client:
        assert [r.custom_id for r in client.results("b")] == IDS


def test_resume_gives_up_after_max_retries_with_exact_count() -> None:
    """A stream that always breaks at the same place fails after max_retries resumes."""
    answers = [
        jsonl_response([body(IDS[:2])], fail=httpx.ReadError("reset"))[0]
        for _ in range(FAST_RETRY.max_retries + 1)
    ]
    script = Script(*answers)
    got: list[str] = []
    with make_client(script) as client, pytest.raises(errors.ResultsStreamError) as info:
        got.extend(r.custom_id for r in client.results("b"))
    assert got == IDS[:2]
    assert info.value.delivered == 2
    assert len(script.requests) == FAST_RETRY.max_retries + 1


def test_resume_budget_resets_when_a_read_makes_progress() -> None:
    """Breaks that each deliver new lines do not use up the resume budget."""
    retry = RetryPolicy(max_retries=1, backoff_initial=0.001, backoff_max=0.001)
    answers = [
        jsonl_response([body(IDS[: n + 1])], fail=httpx.ReadError("reset"))[0] for n in range(5)
    ] + [jsonl_response([body()])[0]]
    with make_client(Script(*answers), retry=retry) as client:
        assert [r.custom_id for r in client.results("b")] == IDS


def test_resume_that_meets_an_error_status_reports_the_count() -> None:
    """If the re-request is refused (batch deleted), ResultsStreamError keeps delivered."""
    first, _ = jsonl_response([body(IDS[:3])], fail=httpx.ReadError("reset"))
    script = Script(first, json_response(404, error_json("not_found_error", "gone")))
    with make_client(script) as client, pytest.raises(errors.ResultsStreamError) as info:
        list(client.results("b"))
    assert info.value.delivered == 3
    assert info.value.status == 404
    assert isinstance(info.value.__cause__, errors.NotFoundError)


def test_skip_drops_the_first_lines() -> None:
    """skip=n resumes by count: the first n lines are not delivered."""
    response, _ = jsonl_response([body()])
    with make_client(Script(response)) as client:
        assert [r.custom_id for r in client.results("b", skip=4)] == IDS[4:]


def test_skip_and_resume_together_never_repeat_skipped_lines() -> None:
    """Lines skipped by count are not delivered by a later resume either."""
    first, _ = jsonl_response([body(IDS[:3])], fail=httpx.ReadError("reset"))
    second, _ = jsonl_response([body(list(reversed(IDS)))])
    with make_client(Script(first, second)) as client:
        assert sorted(r.custom_id for r in client.results("b", skip=2)) == IDS[2:]


def test_a_bad_line_raises_with_its_number_and_closes_the_response() -> None:
    """A line that is not a result is an APIResponseError naming the line."""
    data = result_line("a") + b"\r\n\r\n" + b'{"nope": 1}\r\n' + result_line("b") + b"\r\n"
    response, stream = jsonl_response([data])
    with make_client(Script(response)) as client, pytest.raises(errors.APIResponseError) as info:
        list(client.results("b"))
    assert not isinstance(info.value, errors.ResultsStreamError)
    assert "line 3" in str(info.value)
    assert stream.closed


def test_stopping_early_closes_the_response() -> None:
    """A caller that stops iterating leaves no open response behind."""
    response, stream = jsonl_response([body()])
    with make_client(Script(response)) as client:
        it = client.results("b")
        assert next(it).custom_id == IDS[0]
        it.close()
    assert stream.closed


def test_results_are_streamed_not_buffered() -> None:
    """The first line is handed over before the rest of the body has been read."""
    reads: list[int] = []

    class Counting(ChunkStream):
        def __iter__(self):  # type: ignore[no-untyped-def]
            for n, chunk in enumerate(self.chunks):
                reads.append(n)
                yield chunk

    lines = [result_line(i) + b"\n" for i in IDS]
    stream = Counting(lines)
    response = httpx.Response(200, stream=stream, headers={"content-type": "application/x-jsonl"})
    with make_client(Script(response)) as client:
        it = client.results("b")
        next(it)
        assert len(reads) < len(IDS)
        it.close()
