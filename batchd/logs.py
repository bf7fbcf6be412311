"""Structured logging: JSON lines in production, readable lines on a terminal, secrets redacted.

Context (`lane`, `batch_id`, `request_id`) is bound once with `log.bind(...)`; the redactor scrubs
every configured secret and anything shaped like an API key or webhook secret from every event.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"

# Shapes of secrets that must never be logged even when not configured (e.g. a key in a URL).
_SECRET_SHAPES = re.compile(r"(sk-ant-[A-Za-z0-9_\-]{8,}|whsec_[A-Za-z0-9+/=]{8,})")
_SECRET_FIELDS = frozenset(
    {"api_key", "x-api-key", "authorization", "secret", "password", "webhook_secret"}
)


class Redactor:
    """A structlog processor that replaces every known secret, wherever it appears."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for s in secrets:
            if s and s not in self._secrets:
                self._secrets.append(s)
        # Longest first, so a secret containing another is replaced whole.
        self._secrets.sort(key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for s in self._secrets:
                if s in value:
                    value = value.replace(s, REDACTED)
            return _SECRET_SHAPES.sub(REDACTED, value)
        if isinstance(value, bytes):
            return self.scrub(value.decode("utf-8", "replace"))
        if isinstance(value, dict):
            return {
                k: (REDACTED if str(k).lower() in _SECRET_FIELDS else self.scrub(v))
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        if isinstance(value, BaseException):
            return self.scrub(repr(value))
        if value is None or isinstance(value, bool | int | float):
            return value
        # Other objects are rendered with repr (a URL, a request): scrub that when it leaks.
        shown = repr(value)
        cleaned = self.scrub(shown)
        return value if cleaned == shown else cleaned

    def __call__(
        self, logger: Any, method: str, event_dict: MutableMapping[str, Any]
    ) -> MutableMapping[str, Any]:
        for key in list(event_dict):
            if key.lower() in _SECRET_FIELDS:
                event_dict[key] = REDACTED
            else:
                event_dict[key] = self.scrub(event_dict[key])
        return event_dict


redactor = Redactor()


class _Stderr:
    """Whatever `sys.stderr` is when a line is written, not when logging was configured: a stream
    swapped out and closed later (a test's captured output, a redirected CLI) never breaks a log
    call."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stdlib handler writing to the current `sys.stderr` (as `logging.lastResort` does)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


def configure(level: str = "info", fmt: str = "auto", secrets: Iterable[str] = ()) -> None:
    """Configure structlog (and the stdlib loggers of rq and friends) for this process."""
    redactor.add(secrets)
    use_console = fmt == "console" or (fmt == "auto" and sys.stderr.isatty())
    numeric = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if use_console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[*shared, redactor, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=_Stderr()),  # type: ignore[arg-type]
        cache_logger_on_first_use=False,
    )
    # rq and httpx log through the stdlib; route them through the same redactor and renderer.
    handler = _StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                redactor,
                renderer,
            ],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO) if level == "debug" else numeric)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def get_logger(name: str | None = None, **context: Any) -> Any:
    """A bound structlog logger; pass context to bind it once."""
    log = structlog.get_logger(name) if name else structlog.get_logger()
    return log.bind(**context) if context else log
