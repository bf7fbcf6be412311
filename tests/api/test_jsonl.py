"""The JSONL splitter and line parser: chunk boundaries, CRLF, huge lines, blanks, bad lines."""

from __future__ import annotations

import time

import orjson
import pytest

from batchd.api import (
    LineDecoder,
    find_custom_id,
    iter_lines,
    parse_result_line,
    read_result_line,
)
from batchd.errors import APIResponseError

from .helpers import result_line

STREAM = b'{"custom_id":"a","result":{"type":"canceled"}}\r\n\r\n{"custom_id":"b","result":{}}\r\n'
EXPECTED = [
    (1, b'{"custom_id":"a","result":{"type":"canceled"}}'),
    (3, b'{"custom_id":"b","result":{}}'),
]


def decode(chunks: list[bytes]) -> list[tuple[int, bytes]]:
    return list(iter_lines(chunks))


@pytest.mark.parametrize("cut", range(len(STREAM) + 1))
def test_crlf_stream_split_in_two_at_every_point(cut: int) -> None:
    """However a CRLF stream is cut in two, the same lines come out, without `\\r` or blanks."""
    assert decode([STREAM[:cut], STREAM[cut:]]) == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_crlf_stream_split_in_three_around_every_point(cut: int) -> None:
    """A one-byte middle chunk (the lone `\\r` or `\\n` case) anywhere gives the same lines."""
    assert decode([STREAM[: cut - 1], STREAM[cut - 1 : cut], STREAM[cut:]]) == EXPECTED


def test_stream_fed_one_byte_at_a_time() -> None:
    """Byte-sized chunks are the worst case for a splitter and still give the same lines."""
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_cr_at_chunk_end_then_lf_yields_one_line_without_cr() -> None:
    """`\\r` closing one read and `\\n` opening the next end exactly one line."""
    decoder = LineDecoder()
    assert decoder.feed(b'{"x":1}\r') == []
    assert decoder.feed(b'\n{"y"') == [(1, b'{"x":1}')]
    assert decoder.flush() == (2, b'{"y"')


def test_lf_only_endings() -> None:
    """Plain `\\n` endings work as well as CRLF."""
    assert decode([b"a\nb\n", b"c\n"]) == [(1, b"a"), (2, b"b"), (3, b"c")]


def test_blank_and_whitespace_lines_are_skipped_but_counted() -> None:
    """Blank lines are not delivered; line numbers still match the file."""
    assert decode([b"\n\n  \r\n\ta\n\r\n", b"\t \nb"]) == [(4, b"\ta"), (7, b"b")]


def test_five_megabyte_line_in_small_chunks() -> None:
    """A line of several MB (far above 64 KB) arrives whole, fed in 16 KB reads."""
    big = b'{"custom_id":"big","result":{"type":"succeeded","pad":"' + b"x" * 5_000_000 + b'"}}'
    data = big + b"\r\n" + result_line("next") + b"\n"
    chunks = [data[i : i + 16384] for i in range(0, len(data), 16384)]
    lines = decode(chunks)
    assert [n for n, _ in lines] == [1, 2]
    assert lines[0][1] == big
    assert parse_result_line(lines[0][1], 1).custom_id == "big"


def test_five_megabyte_line_is_linear_not_quadratic() -> None:
    """Pieces of a long line are joined once: 5 MB in 1 KB reads takes well under a second of CPU
    (CPU time: a busy machine slows the clock on the wall, not this)."""
    data = b"y" * 5_000_000 + b"\n"
    chunks = [data[i : i + 1024] for i in range(0, len(data), 1024)]
    started = time.process_time()
    lines = decode(chunks)
    assert time.process_time() - started < 1.0
    assert len(lines[0][1]) == 5_000_000


def test_unterminated_last_line_is_returned_by_flush() -> None:
    """A last line without a newline is not lost: flush hands it over."""
    decoder = LineDecoder()
    assert decoder.feed(b"a\nb") == [(1, b"a")]
    assert decoder.has_partial
    assert decoder.flush() == (2, b"b")
    assert not decoder.has_partial
    assert decoder.flush() is None


def test_flush_drops_a_trailing_cr_and_blank_tail() -> None:
    """A stream ending in `\\r` or in whitespace gives no extra line."""
    assert decode([b"a\r"]) == [(1, b"a")]
    assert decode([b"a\n  "]) == [(1, b"a")]


def test_empty_chunks_are_harmless() -> None:
    """Zero-length reads change nothing."""
    assert decode([b"", b"a", b"", b"\n", b""]) == [(1, b"a")]


def test_parse_result_line_keeps_the_raw_line() -> None:
    """A good line gives custom_id, the result object and the exact bytes."""
    raw = result_line("req-1", "errored")
    item = parse_result_line(raw, 1)
    assert item.custom_id == "req-1"
    assert item.result is not None and item.result["type"] == "errored"
    assert item.type == "errored"
    assert item.raw == raw
    assert orjson.loads(item.raw) == {"custom_id": "req-1", "result": item.result}


@pytest.mark.parametrize(
    ("line", "words"),
    [
        (b"<html>oops</html>", "not valid JSON"),
        (b'{"custom_id":"a","result":', "not valid JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'{"result":{"type":"canceled"}}', "no custom_id"),
        (b'{"custom_id":7,"result":{}}', "no custom_id"),
        (b'{"custom_id":"a"}', "no result"),
        (b'{"custom_id":"a","result":"succeeded"}', "no result"),
    ],
)
def test_bad_lines_raise_naming_the_line_number(line: bytes, words: str) -> None:
    """A line that is not a result is an APIResponseError naming its line, never dropped."""
    with pytest.raises(APIResponseError, match=f"line 42.*{words}|line 42 .*{words}") as info:
        parse_result_line(line, 42)
    assert "line 42" in str(info.value)


def test_decoder_and_parser_keep_up_with_the_fan_out() -> None:
    """100,000 lines of about 1 KB split and parse at well over 20,000 lines/s."""
    pad = "x" * 900
    line = b'{"custom_id":"req-%06d","result":{"type":"succeeded","text":"' + pad.encode() + b'"}}'
    data = b"\r\n".join(line % i for i in range(100_000)) + b"\r\n"
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    started = time.perf_counter()
    decoder = LineDecoder()
    count = 0
    for chunk in chunks:
        for lineno, raw in decoder.feed(chunk):
            parse_result_line(raw, lineno)
            count += 1
    elapsed = time.perf_counter() - started
    assert count == 100_000
    assert count / elapsed > 20_000


# -- damaged lines: recovered, flagged, never silently dropped --------------------------------

GOOD = result_line("req-7")


def test_a_good_line_is_not_damaged() -> None:
    """read_result_line gives the same as the strict parser for a good line."""
    item = read_result_line(GOOD, 1)
    assert item == parse_result_line(GOOD, 1)
    assert not item.damaged and item.problem is None


def test_invalid_utf8_keeps_custom_id_and_recovers_the_result() -> None:
    """Raw invalid UTF-8 inside a string is replaced with U+FFFD; the line is flagged damaged."""
    line = GOOD.replace(b"answer to", b"answer \xff\xfe to")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)
    item = read_result_line(line, 3)
    assert item.custom_id == "req-7"
    assert item.damaged and item.problem is not None and "UTF-8" in item.problem
    assert item.raw == line
    assert item.type == "succeeded"
    assert item.result is not None
    text = item.result["message"]["content"][0]["text"]
    assert text == "answer \ufffd\ufffd to req-7"
    orjson.dumps(item.result)  # what is recovered can be stored again


def test_a_lone_surrogate_escape_is_replaced_and_flagged() -> None:
    """A lone `\\ud800` escape (which orjson refuses) becomes U+FFFD; the line is damaged."""
    line = GOOD.replace(b"answer to", b"answer \\ud800 to")
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(line)
    item = read_result_line(line, 3)
    assert item.custom_id == "req-7" and item.damaged
    assert item.result is not None
    assert item.result["message"]["content"][0]["text"] == "answer \ufffd to req-7"
    assert orjson.loads(orjson.dumps(item.result)) == item.result


def test_a_paired_surrogate_escape_is_not_damage() -> None:
    """A proper surrogate pair is valid JSON: the line reads normally."""
    line = GOOD.replace(b"answer to", b"answer \\ud83d\\ude00 to")
    item = read_result_line(line, 1)
    assert not item.damaged
    assert item.result is not None
    assert item.result["message"]["content"][0]["text"] == "answer \U0001f600 to req-7"


def test_broken_json_with_a_readable_custom_id_is_damaged_without_result() -> None:
    """A line that is not JSON at all still gives its custom_id, result None, raw kept."""
    line = b'{"custom_id":"req-9","result":{"type":"succeeded","message":{"id":"msg_1",,,'
    item = read_result_line(line, 5)
    assert (item.custom_id, item.result, item.raw, item.damaged) == ("req-9", None, line, True)
    assert item.type == ""


def test_broken_json_and_invalid_utf8_together() -> None:
    """Invalid bytes and broken structure: the custom_id is still read from the raw bytes."""
    line = b'{"custom_id":"req-9","result":{"type":"succ\xc3\x28eeded"' + b"\x00\xff"
    item = read_result_line(line, 5)
    assert item.custom_id == "req-9" and item.damaged and item.result is None


def test_valid_json_without_a_result_object_is_damaged() -> None:
    """custom_id present but result missing or not an object: damaged, not unreadable."""
    for line in (b'{"custom_id":"a"}', b'{"custom_id":"a","result":"succeeded"}'):
        item = read_result_line(line, 1)
        assert item.custom_id == "a" and item.damaged and item.result is None
        assert item.problem is not None and "no result object" in item.problem


@pytest.mark.parametrize(
    "line",
    [
        b"<html>oops</html>",
        b"[1,2]",
        b'{"result":{"type":"canceled"}}',
        b'{"custom_id":7,"result":{}}',
        b'{"custom_id":"\xff\xfe","result":{}}',
        b'{"custom_id":"has space","result":{"type":"x"},,}',
        b'{"custom_id":"a","custom_id":"b","result":',
        b'{"result":{"input":{"custom_id":"inner"}},',
    ],
)
def test_lines_without_a_readable_custom_id_are_errors(line: bytes) -> None:
    """Only a line whose custom_id cannot be read (or is ambiguous) raises."""
    with pytest.raises(APIResponseError, match="line 8"):
        read_result_line(line, 8)


def test_find_custom_id_ignores_nested_and_escaped_ones() -> None:
    """Only the outermost object's member counts; keys deeper or inside strings do not."""
    line = (
        b'{"result":{"message":{"content":[{"type":"tool_use","input":{"custom_id":"deep"}},'
        b'{"type":"text","text":"say \\"custom_id\\":\\"fake\\""}]}},"custom_id":"real",\xff'
    )
    assert find_custom_id(line) == "real"
    assert find_custom_id(b'{"custom_id" : "x-1_"') == "x-1_"
    assert find_custom_id(b'{"custom_id":"x"') == "x"
    assert find_custom_id(b'{"custom_id":"x') is None  # the value is cut before its quote
    assert find_custom_id(b"") is None


def test_find_custom_id_is_fast_on_a_long_damaged_line() -> None:
    """A 5 MB damaged line is scanned well under a second of CPU (CPU time: a busy machine slows
    the clock on the wall, not this)."""
    pad = b'"x\\"y",' * 700_000
    line = b'{"custom_id":"big","result":{"pad":[' + pad + b"\xff"
    started = time.process_time()
    assert find_custom_id(line) == "big"
    assert time.process_time() - started < 1.0
