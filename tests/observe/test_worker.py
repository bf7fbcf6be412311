"""The stage worker with Redis gone: rq's bookkeeping notes it and the worker goes on; a job
that ended with Redis gone is a warning; any other failure is logged by rq as before."""

from __future__ import annotations

import logging
import sys
from typing import Any

import pytest
import redis
from rq.job import Job

from batchd.observe import worker as worker_module
from batchd.observe.worker import StageWorker
from tests.support.redis import RedisServer


class Recorder:
    def __init__(self) -> None:
        self.warnings: list[tuple[str, dict[str, Any]]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.warnings.append((event, fields))


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> Recorder:
    found = Recorder()
    monkeypatch.setattr(worker_module, "log", found)
    return found


def nothing() -> None:
    """A job's function (never run here)."""


def test_bookkeeping_with_redis_gone_carries_on(
    redis_server: RedisServer, recorder: Recorder
) -> None:
    """The worker's Redis stops: its state, heartbeat and suspension check each meet a real
    connection error, note it, and return."""
    client = redis.Redis.from_url(redis_server.url, socket_connect_timeout=0.5)
    worker = StageWorker(["q"], connection=client)
    redis_server.stop()
    worker.set_state("idle")
    worker.heartbeat()
    worker.check_for_suspension(burst=False)
    steps = [fields["step"] for _, fields in recorder.warnings]
    assert steps == ["state", "heartbeat", "suspension check"]


def rq_errors_after_failing(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture, failure: Exception
) -> list[logging.LogRecord]:
    """A real job handed to the worker's exception handling with `failure` raised; the
    error records rq logged for it."""
    client = redis.Redis.from_url(redis_server.url)
    worker = StageWorker(["q"], connection=client)
    job = Job.create(nothing, connection=client)
    try:
        raise failure
    except Exception:
        exc_info = sys.exc_info()
    with caplog.at_level(logging.DEBUG, logger="rq.worker"):
        worker.handle_exception(job, *exc_info)
    client.close()
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_job_ended_by_redis_gone_is_a_warning(
    redis_server: RedisServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    gone = redis.exceptions.ConnectionError("Connection reset by peer")
    assert not rq_errors_after_failing(redis_server, caplog, gone)
    assert [e for e, _ in recorder.warnings] == [
        "redis went away during a job; batchd's own state says what is left to do"
    ]


def test_any_other_job_failure_is_logged_by_rq(
    redis_server: RedisServer, recorder: Recorder, caplog: pytest.LogCaptureFixture
) -> None:
    errors = rq_errors_after_failing(redis_server, caplog, ValueError("a bug"))
    assert recorder.warnings == []
    assert errors and "ValueError: a bug" in errors[0].getMessage()
