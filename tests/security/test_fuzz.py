"""Fuzzing, for a bounded time: the results JSONL reader and the submit validator meet
arbitrary input and fail only with their documented errors.

Each property runs a fixed number of examples (seeded by hypothesis's database-free default),
so `make test` stays quick; raise FUZZ_EXAMPLES to search longer.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from batchd import Settings
from batchd.api.jsonl import CUSTOM_ID, LineDecoder, iter_lines, parse_result_line, read_result_line
from batchd.errors import APIResponseError, ResultsStreamError, SubmitError
from batchd.store.records import LaneId
from batchd.validate import prepare
from tests.api.helpers import Script, jsonl_response, make_client

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- the JSONL results reader --------------------------------------------------------------------

RESULT_LINE = st.fixed_dictionaries(
    {"custom_id": st.text(min_size=1, max_size=30), "result": st.dictionaries(
        st.text(max_size=8), st.none() | st.integers() | st.text(max_size=20), max_size=4)}
)  # fmt: skip
LINES = st.lists(
    st.one_of(
        RESULT_LINE.map(lambda o: json.dumps(o).encode()),
        st.binary(max_size=120),
        st.sampled_from([b"", b"\r", b" ", b"{", b"[]", b'"x"', b"null", b'{"custom_id": 1}']),
    ),
    max_size=20,
)


def cut(data: bytes, points: list[int]) -> list[bytes]:
    """`data` split at the given offsets, so a line (or a CRLF) may straddle two chunks."""
    edges = sorted({p % (len(data) + 1) for p in points})
    pieces, last = [], 0
    for edge in [*edges, len(data)]:
        pieces.append(data[last:edge])
        last = edge
    return pieces


@FUZZ
@given(LINES, st.sampled_from([b"\n", b"\r\n"]), st.lists(st.integers(0, 10_000), max_size=12))
def test_line_decoder_returns_exactly_the_lines(
    lines: list[bytes], ending: bytes, points: list[int]
) -> None:
    """However the stream is chunked, the decoder returns its non-blank lines, in order."""
    data = ending.join(lines) + ending
    got = [line for _, line in iter_lines(cut(data, points))]
    expected = []
    for line in data.split(b"\n")[:-1]:
        line = line[:-1] if line.endswith(b"\r") else line
        if line and not line.isspace():
            expected.append(line)
    assert got == expected


@FUZZ
@given(st.binary(max_size=400), st.lists(st.integers(0, 1000), max_size=8))
def test_parse_fails_only_with_the_documented_error(data: bytes, points: list[int]) -> None:
    """Arbitrary bytes: each line parses or raises APIResponseError naming its number."""
    decoder = LineDecoder()
    for chunk in cut(data, points):
        for lineno, line in decoder.feed(chunk):
            try:
                parsed = parse_result_line(line, lineno)
            except APIResponseError as exc:
                assert f"line {lineno}" in str(exc)
            else:
                assert isinstance(parsed.custom_id, str) and isinstance(parsed.result, dict)


@FUZZ
@given(st.binary(max_size=400) | LINES.map(b"".join))
def test_recovering_read_fails_only_for_a_line_without_a_custom_id(line: bytes) -> None:
    """Arbitrary bytes read as fan-out does: a line, a damaged line, or an error naming it."""
    try:
        parsed = read_result_line(line, 7)
    except APIResponseError as exc:
        assert "line 7" in str(exc)
    else:
        assert CUSTOM_ID.fullmatch(parsed.custom_id) or not parsed.damaged
        assert parsed.damaged or isinstance(parsed.result, dict)
        assert parsed.result is None or isinstance(parsed.result, dict)


@FUZZ
@given(LINES, st.lists(st.integers(0, 10_000), max_size=6), st.booleans(), st.booleans())
def test_results_stream_fails_only_with_documented_errors(
    lines: list[bytes], points: list[int], report: bool, recover: bool
) -> None:
    """The results iterator over arbitrary bodies yields lines or raises documented errors."""
    data = b"\n".join(lines) + b"\n"
    response, _ = jsonl_response(cut(data, points))
    bad: list[int] = []
    with make_client(Script(response)) as client:
        try:
            hook = (lambda n, e: bad.append(n)) if report else None
            stream = client.results("msgbatch_fuzz", resume=False, on_bad_line=hook,
                                    recover=recover)  # fmt: skip
            got = list(stream)
        except (APIResponseError, ResultsStreamError, httpx.HTTPError) as exc:
            assert not report or isinstance(exc, ResultsStreamError | httpx.HTTPError)
        else:
            for r in got:
                assert isinstance(r.result, dict) or (recover and r.damaged)
                assert recover or not r.damaged


# -- the submit validator ------------------------------------------------------------------------

SETTINGS = Settings(redis_url="redis://127.0.0.1:1/0", batch={"max_bytes": 20_000})
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.binary(max_size=10)
    | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF).map(lambda c: "x" + c)
    | st.builds(object)
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=4)
        | st.frozensets(st.integers(), max_size=3)
        | st.tuples(inner, inner)
    ),
    max_leaves=20,
)
PARAMS = st.one_of(
    VALUES,
    st.fixed_dictionaries(
        {"model": VALUES | st.just("claude-sonnet-4-5"), "max_tokens": VALUES | st.just(16),
         "messages": VALUES | st.just([{"role": "user", "content": "hi"}])},
        optional={"stream": VALUES, "system": VALUES, "temperature": VALUES},
    ),
)  # fmt: skip


def plain_json(value: Any) -> bool:
    """Whether json can encode `value` exactly as it is (no NaN, no surrogates, no odd types)."""
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return not any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, list):
        return all(plain_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and plain_json(k) and plain_json(v) for k, v in value.items())
    return False


@FUZZ
@given(
    params=PARAMS,
    metadata=st.none() | VALUES,
    key=st.none() | VALUES,
    reply_to=st.none() | VALUES,
    callback_url=st.none() | VALUES | st.text(max_size=60).map(lambda t: "https://" + t),
    priority=VALUES | st.integers(-3, 12),
    account=st.none() | VALUES,
    tag=st.none() | VALUES | st.from_regex(r"[A-Za-z0-9_.:/@-]{1,70}", fullmatch=True),
    betas=st.none() | VALUES | st.lists(st.sampled_from([*SETTINGS.api.known_betas, "x y",
                                                         "Nope", "", "a" * 70]), max_size=3),
    deadline_ms=st.none() | VALUES,
    interactive=st.booleans(),
)  # fmt: skip
def test_validator_fails_only_with_submit_errors(**submit: Any) -> None:
    """Any submit is refused naming a field, or prepared into JSON that reads back, in its lane."""
    params = submit.pop("params")
    try:
        prepared = prepare(SETTINGS, params, **submit)
    except SubmitError as exc:
        assert exc.field, str(exc)
        return
    lane = LaneId.parse(prepared.lane.id)
    assert lane is not None and lane.priority == submit["priority"]
    assert lane.interactive == submit["interactive"]
    assert set(prepared.lane.betas) <= set(SETTINGS.api.known_betas)
    assert json.loads(prepared.params) == json.loads(json.dumps(params, default=dict))
    if plain_json(params):
        assert json.loads(prepared.params) == params
    if prepared.metadata:
        json.loads(prepared.metadata)
