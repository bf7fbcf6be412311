"""results(): streaming JSONL, content types, broken streams, resume without loss or repeats."""

from __future__ import annotations

import gc
from collections.abc import Generator

import httpx
import pytest

from batchd import errors
from batchd.api import MessageBatch, RetryPolicy

from .helpers import (
    API_KEY,
    FAST_RETRY,
    ChunkStream,
    Script,
    batch_json,
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


def test_a_dropped_stream_closes_the_response_at_once() -> None:
    """Letting go of a half-read stream releases its connection without waiting for the GC."""
    response, stream = jsonl_response([body()])
    with make_client(Script(response)) as client:
        results = client.results("b")
        next(results)
        gc.disable()
        try:
            del results
            assert stream.closed
        finally:
            gc.enable()


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


# -- damaged and unreadable lines ------------------------------------------------------------

BAD_UTF8 = result_line("req-bad").replace(b"answer to", b"answer \xff to")
LONE_SURROGATE = result_line("req-sur").replace(b"answer to", b"answer \\udc00 to")
NO_ID = b'{"result":{"type":"succeeded"'


def test_damaged_lines_are_delivered_flagged_and_only_unreadable_ones_reported() -> None:
    """Lines with a readable custom_id come through damaged; on_bad_line gets only the rest."""
    data = b"\n".join([result_line("a"), BAD_UTF8, NO_ID, LONE_SURROGATE, result_line("b")]) + b"\n"
    response, _ = jsonl_response([data])
    bad: list[int] = []
    with make_client(Script(response)) as client:
        stream = client.results("x", on_bad_line=lambda n, _e: bad.append(n), recover=True)
        lines = list(stream)
    assert [(r.custom_id, r.damaged) for r in lines] == [
        ("a", False),
        ("req-bad", True),
        ("req-sur", True),
        ("b", False),
    ]
    assert [r.type for r in lines] == ["succeeded"] * 4
    assert bad == [3]
    assert (stream.delivered, stream.damaged, stream.unreadable) == (4, 2, 1)
    assert stream.lines == 5 and stream.ended_cleanly


def test_without_on_bad_line_a_damaged_line_does_not_raise() -> None:
    """A damaged line with its custom_id is not an error even with no on_bad_line."""
    response, _ = jsonl_response([BAD_UTF8 + b"\n"])
    with make_client(Script(response)) as client:
        (line,) = list(client.results("x", recover=True))
    assert line.damaged and line.custom_id == "req-bad"


def test_a_whole_damaged_last_line_without_newline_is_not_a_cut() -> None:
    """An unterminated last line that is whole (if damaged) JSON is delivered, no resume."""
    response, _ = jsonl_response([result_line("a") + b"\n" + LONE_SURROGATE])
    script = Script(response)
    with make_client(script) as client:
        stream = client.results("x", recover=True)
        got = [(r.custom_id, r.damaged) for r in stream]
    assert got == [("a", False), ("req-sur", True)]
    assert stream.ended_cleanly and len(script.requests) == 1


def test_without_recover_results_keeps_its_strict_contract() -> None:
    """results() alone reports every line that is not a strict result, as it always has."""
    data = b"\n".join([result_line("a"), BAD_UTF8, LONE_SURROGATE, b'{"custom_id":"c"}']) + b"\n"
    response, _ = jsonl_response([data])
    bad: list[int] = []
    with make_client(Script(response)) as client:
        stream = client.results("x", on_bad_line=lambda n, _e: bad.append(n))
        got = [r.custom_id for r in stream]
    assert got == ["a"] and bad == [2, 3, 4]
    assert stream.unreadable == 3 and stream.damaged == 0


def test_results_from_recovers_by_default() -> None:
    """The new entry point delivers damaged lines unless told not to."""
    response, _ = jsonl_response([result_line("a") + b"\n" + BAD_UTF8 + b"\n"])
    with make_client(Script(response)) as client:
        stream = client.results_from(ended(None))
        got = [(r.custom_id, r.damaged) for r in stream]
    assert got == [("a", False), ("req-bad", True)]


def test_an_unreadable_line_is_reported_once_across_resumes() -> None:
    """A re-read after a break meets the same bad line again; on_bad_line hears of it once."""
    first, _ = jsonl_response(
        [result_line("a") + b"\n" + NO_ID + b"\n"], fail=httpx.ReadError("reset")
    )
    second, _ = jsonl_response([NO_ID + b"\n" + result_line("a") + b"\n" + result_line("b")])
    bad: list[int] = []
    with make_client(Script(first, second)) as client:
        stream = client.results("x", on_bad_line=lambda n, _e: bad.append(n))
        got = [r.custom_id for r in stream]
    assert got == ["a", "b"]
    assert bad == [2]
    assert (stream.unreadable, stream.repeated, stream.downloads) == (1, 1, 2)
    assert stream.lines == 3


# -- counts and clean ends -------------------------------------------------------------------


def test_a_clean_end_is_reported_with_exact_counts() -> None:
    """A whole download says ended_cleanly, with delivered and skipped as they happened."""
    response, _ = jsonl_response([body()])
    with make_client(Script(response)) as client:
        stream = client.results("b", skip=2, expected=len(IDS))
        got = list(stream)
    assert len(got) == stream.delivered == len(IDS) - 2
    assert stream.skipped == 2 and stream.lines == len(IDS)
    assert stream.ended_cleanly and stream.complete and not stream.short


def test_a_clean_but_short_download_is_not_an_error() -> None:
    """Fewer lines than expected, cleanly ended: no exception, and `short` says so."""
    response, _ = jsonl_response([body(IDS[:4])])
    with make_client(Script(response)) as client:
        stream = client.results("b", expected=len(IDS))
        got = [r.custom_id for r in stream]
    assert got == IDS[:4]
    assert stream.ended_cleanly and stream.short and not stream.complete
    assert stream.lines == 4


def test_a_stream_stopped_early_has_not_ended_cleanly() -> None:
    """A caller that stops reading never sees ended_cleanly."""
    response, _ = jsonl_response([body()])
    with make_client(Script(response)) as client:
        stream = client.results("b")
        next(stream)
        stream.close()
    assert stream.delivered == 1 and not stream.ended_cleanly


def test_a_broken_stream_has_not_ended_cleanly() -> None:
    """ResultsStreamError's delivered and the stream's counter agree; no clean end."""
    response, _ = jsonl_response([body(IDS[:2])], fail=httpx.ReadError("reset"))
    with make_client(Script(response)) as client:
        stream = client.results("b", resume=False)
        with pytest.raises(errors.ResultsStreamError) as info:
            list(stream)
    assert info.value.delivered == stream.delivered == 2
    assert not stream.ended_cleanly


def test_a_resumed_download_counts_each_line_once() -> None:
    """After a break and a re-read in another order, the counts match the distinct lines."""
    first, _ = jsonl_response([body(IDS[:3])], fail=httpx.ReadError("reset"))
    second, _ = jsonl_response([body(list(reversed(IDS)))])
    with make_client(Script(first, second)) as client:
        stream = client.results("b", expected=len(IDS))
        list(stream)
    assert stream.delivered == len(IDS) and stream.repeated == 3
    assert stream.downloads == 2 and stream.complete


def test_the_stream_is_a_generator() -> None:
    """Callers that treat results() as a generator keep working: iter, next, send, close."""
    response, _ = jsonl_response([body()])
    with make_client(Script(response)) as client:
        stream = client.results("b")
        assert isinstance(stream, Generator)
        assert iter(stream) is stream
        assert stream.send(None).custom_id == IDS[0]
        assert next(stream).custom_id == IDS[1]
        with pytest.raises(KeyError):
            stream.throw(KeyError("stop"))
        with pytest.raises(StopIteration):
            next(stream)


def test_negative_skip_is_refused_at_once() -> None:
    """A bad skip is a ValueError from the call itself, before any request."""
    script = Script()
    with make_client(script) as client, pytest.raises(ValueError):
        client.results("b", skip=-1)
    assert script.requests == []


# -- results_url ----------------------------------------------------------------------------


def ended(results_url: str | None) -> MessageBatch:
    return MessageBatch.model_validate(
        batch_json("msgbatch_9", status="ended", processing=len(IDS), results_url=results_url)
    )


def test_results_from_gets_exactly_the_results_url() -> None:
    """A results_url on the API's origin is fetched as given, path and query, with the key."""
    response, _ = jsonl_response([body()])
    script = Script(response)
    with make_client(script) as client:
        stream = client.results_from(ended("https://api.test/v1/files/f_1/content?sig=a%2Fb"))
        assert len(list(stream)) == len(IDS)
    (request,) = script.requests
    assert str(request.url) == "https://api.test/v1/files/f_1/content?sig=a%2Fb"
    assert request.headers["x-api-key"] == API_KEY
    assert stream.expected == len(IDS) and stream.complete


def test_a_resume_requests_the_same_results_url() -> None:
    """After a break, the same URL is fetched again."""
    first, _ = jsonl_response([body(IDS[:2])], fail=httpx.ReadError("reset"))
    second, _ = jsonl_response([body()])
    script = Script(first, second)
    url = "https://api.test/elsewhere/results"
    with make_client(script) as client:
        assert len(list(client.results("msgbatch_9", results_url=url))) == len(IDS)
    assert [str(r.url) for r in script.requests] == [url, url]


def test_a_relative_results_url_is_read_against_the_api() -> None:
    """A path without a host is taken on the configured API's origin."""
    response, _ = jsonl_response([body()])
    script = Script(response)
    with make_client(script) as client:
        list(client.results("msgbatch_9", results_url="/v1/custom/results"))
    assert str(script.requests[0].url) == "https://api.test/v1/custom/results"


@pytest.mark.parametrize(
    "url",
    [
        "https://api.anthropic.com/v1/messages/batches/msgbatch_9/results",
        "http://api.test/v1/messages/batches/msgbatch_9/results",
        "https://api.test:8443/v1/messages/batches/msgbatch_9/results",
    ],
)
def test_a_foreign_origin_with_the_results_path_is_read_from_the_api(url: str) -> None:
    """Another host, scheme or port is never contacted; the documented path is read instead."""
    response, _ = jsonl_response([body()])
    script = Script(response)
    with make_client(script) as client:
        assert len(list(client.results_from(ended(url)))) == len(IDS)
    (request,) = script.requests
    assert str(request.url) == "https://api.test/v1/messages/batches/msgbatch_9/results"


def test_a_foreign_origin_keeps_the_query_of_the_results_path() -> None:
    """The beta form's `?beta=true` survives the move to the configured API."""
    response, _ = jsonl_response([body()])
    script = Script(response)
    url = "https://gateway.example/v1/messages/batches/msgbatch_9/results?beta=true"
    with make_client(script) as client:
        list(client.results_from(ended(url)))
    assert str(script.requests[0].url) == (
        "https://api.test/v1/messages/batches/msgbatch_9/results?beta=true"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/collect",
        "https://api.anthropic.com/v1/messages/batches/msgbatch_OTHER/results",
        "ftp://api.test/v1/messages/batches/msgbatch_9/results/x",
    ],
)
def test_any_other_foreign_url_is_refused_before_any_request(url: str) -> None:
    """A results_url that is neither on the API nor its results path raises, sends nothing."""
    script = Script()
    with make_client(script) as client, pytest.raises(errors.APIResponseError) as info:
        client.results_from(ended(url))
    assert "not followed" in str(info.value)
    assert script.requests == []


def test_results_from_a_batch_that_has_not_ended_is_refused() -> None:
    """An in-progress batch has no results: ValueError, no request."""
    script = Script()
    batch = MessageBatch.model_validate(batch_json(status="in_progress"))
    with make_client(script) as client, pytest.raises(ValueError):
        client.results_from(batch)
    assert script.requests == []


def test_an_ended_batch_without_results_url_uses_the_documented_path() -> None:
    """If the API leaves results_url empty on an ended batch, the documented path is read."""
    response, _ = jsonl_response([body()])
    script = Script(response)
    with make_client(script) as client:
        list(client.results_from(ended(None)))
    assert script.requests[0].url.path == "/v1/messages/batches/msgbatch_9/results"
