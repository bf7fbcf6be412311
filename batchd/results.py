"""What producers get back: the `Ticket` of a submit and the `Result` envelope of a request.

The envelope is the same on every path (reply queue, `wait`, `get`, webhook body):
`{"id", "key", "account", "status", "result", "batch_id", "attempts", "metadata",
"submitted_at", "ended_at"}`, with `result` the Anthropic result object unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

TerminalStatus = Literal["succeeded", "errored", "canceled", "expired", "rejected", "dead"]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"succeeded", "errored", "canceled", "expired", "rejected", "dead"}
)
#: States a request passes through before its terminal one.
LIVE_STATES: frozenset[str] = frozenset({"pending", "batched"})


@dataclass(frozen=True, slots=True)
class Ticket:
    """The receipt of a submit: the request's id, and whether its idempotency key was seen."""

    id: str
    key: str | None = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """A request's terminal result envelope."""

    id: str
    status: TerminalStatus
    result: dict[str, Any]
    key: str | None = None
    account: str = "default"
    batch_id: str | None = None
    attempts: int = 0
    metadata: dict[str, Any] | None = None
    submitted_at: datetime | None = None
    ended_at: datetime | None = None
    raw: bytes = field(default=b"", repr=False, compare=False)

    @classmethod
    def from_json(cls, data: bytes | str) -> Result:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        obj = orjson.loads(raw)
        return cls(
            id=obj["id"],
            status=obj["status"],
            result=obj.get("result") or {},
            key=obj.get("key"),
            account=obj.get("account", "default"),
            batch_id=obj.get("batch_id"),
            attempts=int(obj.get("attempts") or 0),
            metadata=obj.get("metadata"),
            submitted_at=_parse_time(obj.get("submitted_at")),
            ended_at=_parse_time(obj.get("ended_at")),
            raw=raw,
        )

    @property
    def message(self) -> dict[str, Any] | None:
        """The Anthropic Message, when the request succeeded."""
        msg = self.result.get("message")
        return msg if isinstance(msg, dict) else None

    @property
    def error(self) -> dict[str, Any] | None:
        """The error object (`{"type", "message"}`), when the request did not succeed."""
        err = self.result.get("error")
        if isinstance(err, dict):
            inner = err.get("error")
            return inner if isinstance(inner, dict) else err
        return None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = orjson.loads(self.raw) if self.raw else {}
        return out


@dataclass(frozen=True, slots=True)
class RequestState:
    """What `get` returns: the request's state now, and its result once terminal."""

    id: str
    state: str
    attempts: int
    batch_id: str | None = None
    result: Result | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATUSES


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
