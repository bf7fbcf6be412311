"""Logging: JSON lines or console lines, bound context, and secrets redacted everywhere."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from structlog.testing import capture_logs
from structlog.typing import EventDict

from batchd import logs
from batchd.logs import REDACTED, Redactor, configure, get_logger

KEY = "sk-ant-api03-configured-0123456789"
# Shaped like nothing in particular, so only configuration can make it a secret.
PLAIN_SECRET = "correct-horse-battery-staple"


@pytest.fixture(autouse=True)
def restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test configures logging afresh; the process's configuration is put back after."""
    monkeypatch.setattr(logs, "redactor", Redactor())
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def json_lines(err: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in err.splitlines() if line.strip()]


# -- output formats -----------------------------------------------------------------------------


def test_json_lines_when_not_a_terminal() -> None:
    """With format auto and stderr a pipe, every event is one JSON object on its own line."""
    code = (
        "from batchd.logs import configure, get_logger\n"
        "configure('info', 'auto')\n"
        "log = get_logger('t')\n"
        "log.info('first', n=1)\n"
        "log.warning('second', lane='default:0')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30, check=True
    )
    first, second = json_lines(proc.stderr)
    assert first["event"] == "first"
    assert first["n"] == 1
    assert first["level"] == "info"
    assert "timestamp" in first
    assert second["level"] == "warning"
    assert second["lane"] == "default:0"
    assert proc.stdout == ""


def test_console_format_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    """format console renders readable key=value lines, without colour codes off a terminal."""
    configure("info", "console")
    get_logger("t").info("batch created", batch_id="msgbatch_01")
    err = capsys.readouterr().err
    assert "batch created" in err
    assert "batch_id=msgbatch_01" in err
    assert "\x1b[" not in err
    assert not err.lstrip().startswith("{")


def test_level_filters_events(capsys: pytest.CaptureFixture[str]) -> None:
    """Events below the configured level are dropped."""
    configure("warning", "json")
    log = get_logger("t")
    log.info("quiet")
    log.warning("loud")
    assert [e["event"] for e in json_lines(capsys.readouterr().err)] == ["loud"]


def test_bound_context_appears_in_events() -> None:
    """Context bound once (lane, batch_id, request_id) is carried by every later event."""
    log = get_logger("t", lane="default:0").bind(batch_id="msgbatch_01")
    with capture_logs() as events:
        log.info("polled")
        log.bind(request_id="default.01ABC").info("fanned out")
    assert events[0] == {
        "event": "polled",
        "log_level": "info",
        "lane": "default:0",
        "batch_id": "msgbatch_01",
    }
    assert events[1]["request_id"] == "default.01ABC"
    assert events[1]["batch_id"] == "msgbatch_01"


# -- the redactor -------------------------------------------------------------------------------


def redacted(**event: Any) -> EventDict:
    """The event as logged through a redactor that knows KEY and PLAIN_SECRET."""
    with capture_logs(processors=[Redactor([KEY, PLAIN_SECRET])]) as events:
        structlog.get_logger().info(**event)
    [only] = events
    return only


def test_configured_secret_removed_from_event_text() -> None:
    """A configured secret inside the event message is replaced."""
    event = redacted(event=f"calling with {KEY} and {PLAIN_SECRET}")
    assert event["event"] == f"calling with {REDACTED} and {REDACTED}"


def test_configured_secret_removed_from_nested_dicts_and_lists() -> None:
    """Secrets are found at any depth of dicts, lists and tuples."""
    event = redacted(
        event="request",
        body={"outer": [{"inner": f"x{PLAIN_SECRET}x"}, (KEY,)]},
        items=[KEY, 3, None],
    )
    assert event["body"] == {"outer": [{"inner": f"x{REDACTED}x"}, [REDACTED]]}
    assert event["items"] == [REDACTED, 3, None]


def test_configured_secret_removed_from_exception_values() -> None:
    """An exception logged as a value is rendered with the secret replaced."""
    event = redacted(event="failed", error=RuntimeError(f"bad key {PLAIN_SECRET}"))
    assert PLAIN_SECRET not in event["error"]
    assert REDACTED in event["error"]


def test_configured_secret_removed_from_bytes() -> None:
    """Bytes are decoded and scrubbed."""
    event = redacted(event="raw", body=f'{{"k": "{PLAIN_SECRET}"}}'.encode())
    assert event["body"] == f'{{"k": "{REDACTED}"}}'


def test_configured_secret_removed_from_object_reprs() -> None:
    """An object whose repr would show a secret (a URL with a key in it) is scrubbed."""
    event = redacted(event="get", url=httpx.URL(f"https://api.example/?key={PLAIN_SECRET}"))
    assert PLAIN_SECRET not in repr(event["url"])


def test_values_without_secrets_are_kept_as_they_are() -> None:
    """Numbers, None and objects whose repr holds no secret pass through unchanged."""
    url = httpx.URL("https://api.example/v1")
    event = redacted(event="ok", n=3, ratio=0.5, none=None, flag=True, url=url)
    assert event["n"] == 3
    assert event["ratio"] == 0.5
    assert event["none"] is None
    assert event["flag"] is True
    assert event["url"] is url


@pytest.mark.parametrize(
    "field", ["api_key", "API_KEY", "authorization", "Authorization", "x-api-key"]
)
def test_secret_named_fields_redacted(field: str) -> None:
    """Fields named like credentials are replaced whatever they hold, top level or nested."""
    event = redacted(event="headers", **{field: "anything"}, headers={field: "anything"})
    assert event[field] == REDACTED
    assert event["headers"] == {field: REDACTED}


@pytest.mark.parametrize(
    "secret",
    ["sk-ant-api03-AbCdEf0123456789_-xyz", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"],
    ids=["api-key", "webhook-secret"],
)
def test_secret_shapes_redacted_without_configuration(secret: str) -> None:
    """API keys and webhook secrets are recognised by shape even when nobody configured them."""
    with capture_logs(processors=[Redactor()]) as events:
        structlog.get_logger().info(f"url https://h/?k={secret}", extra=[secret])
    assert events[0]["event"] == f"url https://h/?k={REDACTED}"
    assert events[0]["extra"] == [REDACTED]


def test_longer_secret_replaced_whole() -> None:
    """When one secret contains another, the longer one is replaced in one piece."""
    with capture_logs(processors=[Redactor(["abc123", "abc123-long-secret"])]) as events:
        structlog.get_logger().info("k=abc123-long-secret")
    assert events[0]["event"] == f"k={REDACTED}"


# -- the rendered output ------------------------------------------------------------------------


def test_configured_secret_absent_from_rendered_traceback(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """log.exception renders the traceback with the secret replaced."""
    configure("info", "json", [PLAIN_SECRET])
    try:
        raise ValueError(f"refused key {PLAIN_SECRET}")
    except ValueError:
        get_logger("t").exception("call failed")
    err = capsys.readouterr().err
    [event] = json_lines(err)
    assert f"ValueError: refused key {REDACTED}" in event["exception"]
    assert PLAIN_SECRET not in err


def test_stdlib_loggers_go_through_the_redactor(capsys: pytest.CaptureFixture[str]) -> None:
    """Records of stdlib loggers (rq's) are rendered as JSON with secrets replaced."""
    configure("info", "json", [PLAIN_SECRET])
    logging.getLogger("rq.worker").warning("job args %s %s", PLAIN_SECRET, KEY)
    err = capsys.readouterr().err
    [event] = json_lines(err)
    assert event["logger"] == "rq.worker"
    assert event["level"] == "warning"
    assert event["event"] == f"job args {REDACTED} {REDACTED}"
    assert PLAIN_SECRET not in err


def test_stdlib_exceptions_go_through_the_redactor(capsys: pytest.CaptureFixture[str]) -> None:
    """A stdlib logger's exception traceback is redacted too."""
    configure("info", "json", [PLAIN_SECRET])
    try:
        raise RuntimeError(f"work failed for {PLAIN_SECRET}")
    except RuntimeError:
        logging.getLogger("rq.worker").exception("job crashed")
    err = capsys.readouterr().err
    assert "RuntimeError: work failed for [REDACTED]" in json_lines(err)[0]["exception"]
    assert PLAIN_SECRET not in err


def test_console_output_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """The console renderer receives already-redacted events."""
    configure("info", "console", [PLAIN_SECRET])
    get_logger("t").info(f"using {PLAIN_SECRET}", api_key="whatever")
    err = capsys.readouterr().err
    assert PLAIN_SECRET not in err
    assert "whatever" not in err
    assert REDACTED in err


def test_a_closed_stderr_from_configure_time_never_breaks_a_log_call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Logging writes to the `sys.stderr` of the moment: a stream that was stderr when logging was
    configured, closed since (a test's captured output), breaks neither structlog nor the stdlib."""
    gone = io.StringIO()
    with monkeypatch.context() as swapped:
        swapped.setattr(sys, "stderr", gone)
        configure(fmt="json")
    gone.close()
    get_logger("t").warning("after the swap")
    logging.getLogger("rq.worker").warning("stdlib after the swap")
    lines = json_lines(capsys.readouterr().err)
    assert [x["event"] for x in lines] == ["after the swap", "stdlib after the swap"]
