"""Bad files through `batchd submit FILE`: every bad line named with its number, nothing stored.

The command runs in-process through `batchd.cli.main`, its real entry point, against a real Redis.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from batchd import Client, Settings
from batchd.cli import main
from batchd.store import counters as counter_store

PARAMS = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hi"}],
}


def line(custom_id: object, params: object = PARAMS, **extra: object) -> bytes:
    return json.dumps({"custom_id": custom_id, "params": params, **extra}).encode()


GOOD = line("good-1")

# name: (file bytes, words the error must contain)
REFUSED: dict[str, tuple[bytes, list[str]]] = {
    "a line that is not JSON": (GOOD + b"\n{not json\n", ["line 2", "not valid JSON"]),
    "a line cut short": (GOOD + b'\n{"custom_id": "x", "params": {"mod\n', ["line 2"]),
    "a JSON array line": (GOOD + b"\n[1, 2]\n", ["line 2", "custom_id"]),
    "an extra field": (GOOD + b"\n" + line("b", extra=1) + b"\n", ["line 2", "nothing else"]),
    "custom_id missing": (GOOD + b'\n{"params": {}}\n', ["line 2", "custom_id"]),
    "custom_id a number": (GOOD + b"\n" + line(7) + b"\n", ["line 2", "custom_id"]),
    "duplicate custom_ids": (GOOD + b"\n" + line("good-1") + b"\n", ["line 2", "repeats line 1"]),
    "params missing max_tokens": (
        GOOD + b"\n" + line("b", {"model": "m", "messages": [{}]}) + b"\n",
        ["line 2", "max_tokens"],
    ),
    "params with stream true": (
        GOOD + b"\n" + line("b", {**PARAMS, "stream": True}) + b"\n",
        ["line 2", "stream"],
    ),
    "one line over the batch limit": (
        GOOD + b"\n" + line("big", {**PARAMS, "system": "x" * 5000}) + b"\n",
        ["line 2", "over the batch limit"],
    ),
    "invalid UTF-8": (GOOD + b'\n{"custom_id": "\xff\xfe", "params": {}}\n', ["line 2"]),
    "an escaped lone surrogate": (
        GOOD + b'\n{"custom_id": "s", "params": {"model": "\\ud800", "max_tokens": 1}}\n',
        ["line 2"],
    ),
    "NaN literal": (
        GOOD + b'\n{"custom_id": "n", "params": {"temperature": NaN}}\n',
        ["line 2", "not valid JSON"],
    ),
    "an empty file": (b"", ["no requests"]),
    "only blank lines": (b"\n\n  \n\r\n", ["no requests"]),
    "a BOM and nothing else": (b"\xef\xbb\xbf", ["no requests"]),
}

# name: file bytes that are accepted as they are
ACCEPTED: dict[str, bytes] = {
    "a BOM before the first line": b"\xef\xbb\xbf" + GOOD + b"\n" + line("good-2") + b"\n",
    "blank lines between lines": b"\n" + GOOD + b"\n\n   \n" + line("good-2") + b"\n\n",
    "CRLF line endings": GOOD + b"\r\n" + line("good-2") + b"\r\n",
    "no newline at the end": GOOD + b"\n" + line("good-2"),
}


def submitted(redis_url: str) -> int:
    """Requests the default account has stored, by its own counter."""
    with Client(settings=Settings.load(redis_url=redis_url)) as client:
        account = client.settings.default_account
        return client.store.read(counter_store.read(client.keys, [account]))[account].get(
            "submitted", 0
        )


def run_submit(path: Path, redis_url: str) -> int:
    return main(["--redis-url", redis_url, "--log-format", "json", "submit", str(path)])


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # A small batch, so "over the batch limit" needs only a few kilobytes.
    monkeypatch.setenv("BATCHD_BATCH__MAX_BYTES", "4096")


@pytest.mark.usefixtures("settings_env")
@pytest.mark.parametrize("case", list(REFUSED), ids=list(REFUSED))
def test_bad_file_is_refused_whole_naming_the_line(
    case: str,
    tmp_path: Path,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2, the bad line named in plain words, no traceback, nothing submitted."""
    data, words = REFUSED[case]
    path = tmp_path / "in.jsonl"
    path.write_bytes(data)
    assert run_submit(path, redis_url) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err
    assert submitted(redis_url) == 0


@pytest.mark.usefixtures("settings_env")
@pytest.mark.parametrize("case", list(ACCEPTED), ids=list(ACCEPTED))
def test_harmless_oddities_are_accepted(
    case: str,
    tmp_path: Path,
    redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A BOM, blank lines, CRLF and a missing final newline change nothing: both lines go in."""
    path = tmp_path / "in.jsonl"
    path.write_bytes(ACCEPTED[case])
    assert run_submit(path, redis_url) == 0, capsys.readouterr().err
    out = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert sorted(o["custom_id"] for o in out) == ["good-1", "good-2"]
    assert submitted(redis_url) == 2


def test_missing_file_is_a_clear_error(
    tmp_path: Path, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file that does not exist: exit 2 and its name, no traceback."""
    assert run_submit(tmp_path / "nope.jsonl", redis_url) == 2
    err = capsys.readouterr().err
    assert "nope.jsonl" in err and "Traceback" not in err
