"""What producers get back: the `Ticket` of a submit and the `Result` envelope of a request.

The envelope is the same on every path (reply queue, `wait`, `get`, webhook body):
`{"id", "key", "account", "status", "result", "batch_id", "attempts", "metadata",
"submitted_at", "ended_at", "mode"}`, with `result` the Anthropic result object unchanged and
`mode` the route that produced it (`batch`, or `realtime` when a deadline sent it through the
Messages API); a request with a deadline adds `deadline`, `deadline_met` and, when missed,
`deadline_missed` (why: `late`, `unreachable`, or how it ended).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import orjson

try:  # the typed Message, when the official SDK is installed
    from anthropic.types import Message as _SDKMessage
except ImportError:  # pragma: no cover - the SDK is optional
    _SDKMessage = None  # type: ignore[assignment,misc]

TerminalStatus = Literal["succeeded", "errored", "canceled", "expired", "rejected", "dead"]
TERMINAL_STATUSES: frozenset[str] = frozenset(
    {"succeeded", "errored", "canceled", "expired", "rejected", "dead"}
)
#: States a request passes through before its terminal one.
LIVE_STATES: frozenset[str] = frozenset({"pending", "batched", "realtime"})


@dataclass(frozen=True, slots=True)
class Ticket:
    """The receipt of a submit: the request's id, and whether its idempotency key was seen.

    A ticket from `Client.submit` is a handle: `ticket.wait()`, `ticket.get()`,
    `ticket.cancel()` (awaited, from `AsyncClient.submit`). Every client call takes a ticket
    or a request id alike.
    """

    id: str
    key: str | None = None
    duplicate: bool = False
    _client: Any = field(default=None, repr=False, compare=False)

    def _bound(self) -> Any:
        if self._client is None:
            raise RuntimeError(
                "this ticket is not bound to a client; call client.wait(ticket.id) instead"
            )
        return self._client

    def wait(self, timeout: float | None = None) -> Any:
        """The request's result, once it has ended (see `Client.wait`)."""
        return self._bound().wait(self.id, timeout=timeout)

    def get(self) -> Any:
        """The request's state now (see `Client.get`)."""
        return self._bound().get(self.id)

    def cancel(self) -> Any:
        """Cancel the request while it is pending (see `Client.cancel`)."""
        return self._bound().cancel(self.id)

    def __str__(self) -> str:
        return self.id


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
    mode: Literal["batch", "realtime"] = "batch"
    """The route that produced the result: a batch, or the real-time Messages API."""
    deadline: datetime | None = None
    deadline_met: bool | None = None
    """For a request with a deadline: whether it succeeded by then."""
    deadline_missed: str | None = None
    """Why a deadline was missed: `late` (succeeded after it), `unreachable` (no batch could
    make it and the account's policy is `fail`), or how the request ended."""
    raw: bytes = field(default=b"", repr=False, compare=False)
    reply_to: str | None = field(default=None, repr=False, compare=False)
    """The reply queue this result was read from, and the consumer that read it (for `ack`)."""
    consumer: str | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_json(
        cls, data: bytes | str, *, reply_to: str | None = None, consumer: str | None = None
    ) -> Result:
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
            mode="realtime" if obj.get("mode") == "realtime" else "batch",
            deadline=_parse_time(obj.get("deadline")),
            deadline_met=obj.get("deadline_met"),
            deadline_missed=obj.get("deadline_missed"),
            raw=raw,
            reply_to=reply_to,
            consumer=consumer,
        )

    @property
    def succeeded(self) -> bool:
        return self.status == "succeeded"

    @property
    def message_dict(self) -> dict[str, Any] | None:
        """The Anthropic Message as the API sent it (a dict), when the request succeeded."""
        msg = self.result.get("message")
        return msg if isinstance(msg, dict) else None

    @property
    def message(self) -> Any:
        """The Message, when the request succeeded: the SDK's typed `anthropic.types.Message`
        when the `anthropic` package is installed, else the dict the API sent."""
        msg = self.message_dict
        if msg is None or _SDKMessage is None:
            return msg
        return _SDKMessage.model_validate(msg)

    @property
    def text(self) -> str:
        """The text of the Message's text blocks, joined; "" when it has none or failed."""
        msg = self.message_dict
        if msg is None:
            return ""
        blocks = msg.get("content")
        if not isinstance(blocks, list):
            return ""
        return "".join(
            b["text"]
            for b in blocks
            if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
        )

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
    def status(self) -> str:
        """The state, named as a Result names it."""
        return self.state

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
