"""The Lua scripts, loaded from the package's `lua/` folder, and the typed call that runs one.

Each script is one atomic state change; its file's header documents its KEYS, ARGV and reply.
Scripts that end requests get `common.lua` in front of their body. Every script declares in KEYS
each key it touches (tests check this against what Redis saw it touch), all in one hash slot.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Generic, TypeVar

from batchd.defaults import MAX_COMMAND_ARGS as MAX_ARGS

T = TypeVar("T")

#: Scripts that use the helpers of `common.lua`.
_WITH_COMMON = frozenset(
    {
        "submit",
        "cancel",
        "claim",
        "seal",
        "intent",
        "record",
        "fanout",
        "missing",
        "fail_all",
        "unclaim",
        "close",
        "requeue_dead",
        "escalate",
        "rt_claim",
        "rt_settle",
    }
)


@dataclass(frozen=True, slots=True)
class Script:
    """One script's source as Redis runs it, and its SHA-1 for EVALSHA."""

    name: str
    source: str
    sha: str


def _load(name: str) -> Script:
    folder = resources.files("batchd.store") / "lua"
    body = (folder / f"{name}.lua").read_text(encoding="utf-8")
    if name in _WITH_COMMON:
        shebang, _, rest = body.partition("\n")
        common = (folder / "common.lua").read_text(encoding="utf-8")
        body = f"{shebang}\n{common}\n{rest}"
    return Script(name, body, hashlib.sha1(body.encode("utf-8")).hexdigest())


NAMES = (
    "submit",
    "cancel",
    "claim",
    "seal",
    "intent",
    "clear_intent",
    "record",
    "fanout",
    "missing",
    "fail_all",
    "unclaim",
    "close",
    "renew",
    "release",
    "take",
    "ack",
    "restore",
    "push_replies",
    "trim_outbox",
    "trim_parked",
    "requeue_dead",
    "purge_dead",
    "wh_claim",
    "wh_succeed",
    "wh_fail",
    "wh_release",
    "wh_retry",
    "schedule",
    "posting",
    "ledger_record",
    "ledger_fold",
    "escalate",
    "rt_claim",
    "rt_settle",
)
SCRIPTS: dict[str, Script] = {name: _load(name) for name in NAMES}


def _same(reply: Any) -> Any:
    return reply


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One script call: the keys it declares, its arguments, and how its reply is read.

    Built by the store's typed functions; run by `Store.run` or `AsyncStore.run`.
    """

    script: Script
    keys: Sequence[str]
    args: Sequence[str | bytes | int | float]
    parse: Callable[[Any], T] = _same

    def __post_init__(self) -> None:
        if len(self.keys) + len(self.args) + 3 > MAX_ARGS:
            raise ValueError(
                f"{self.script.name}: {len(self.keys) + len(self.args)} arguments in one call "
                f"(at most {MAX_ARGS}); the caller must send smaller chunks"
            )


def call(
    name: str,
    keys: Sequence[str],
    args: Sequence[str | bytes | int | float],
    parse: Callable[[Any], T],
) -> Call[T]:
    return Call(SCRIPTS[name], keys, args, parse)


def text(value: Any) -> str:
    """Redis bytes (or None) to str."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


def ints(reply: Any) -> list[int]:
    return [int(v) for v in reply]
