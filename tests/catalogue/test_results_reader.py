"""The results reader fed lines that are not results: with `on_bad_line`, each is reported by
number and skipped, and every good line around it still arrives, once."""

from __future__ import annotations

from batchd import errors
from tests.api.helpers import Script, jsonl_response, make_client, result_line

BAD_LINES = [
    b"not json at all",
    b'{"custom_id": "x"}',
    b'{"result": {"type": "succeeded"}}',
    b'{"custom_id": "y", "result": "ok"}',
    b"[1, 2, 3]",
    b'{"custom_id": "\xff\xfe", "result": {}}',
]


def test_bad_lines_are_reported_and_skipped() -> None:
    """Every kind of non-result line is handed to on_bad_line with its number; the rest flow."""
    data = result_line("a") + b"\n" + b"\n".join(BAD_LINES) + b"\n" + result_line("b") + b"\n"
    response, stream = jsonl_response([data])
    bad: list[tuple[int, errors.APIResponseError]] = []
    with make_client(Script(response)) as client:
        got = [
            r.custom_id for r in client.results("b1", on_bad_line=lambda n, e: bad.append((n, e)))
        ]
    assert got == ["a", "b"]
    assert [n for n, _ in bad] == list(range(2, 2 + len(BAD_LINES)))
    assert all(isinstance(e, errors.APIResponseError) for _, e in bad)
    assert stream.closed


def test_a_bad_unterminated_last_line_is_reported() -> None:
    """A last line without a newline that is JSON but no result is reported, not raised."""
    data = result_line("a") + b'\n{"custom_id": "z"}'
    response, _ = jsonl_response([data])
    bad: list[int] = []
    with make_client(Script(response)) as client:
        got = [r.custom_id for r in client.results("b1", on_bad_line=lambda n, e: bad.append(n))]
    assert got == ["a"] and bad == [2]
