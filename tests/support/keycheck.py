"""Proof that Lua scripts touch only the keys they declare, read from what the server executed.

MONITOR records every command a script ran; COMMAND GETKEYS names their keys; a cluster needs both.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis
from redis.crc import key_slot

#: The commands that run a script or function, and so declare keys: `<name> <body> <n> k1..kn`.
SCRIPT_COMMANDS = frozenset({"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"})
#: How long to wait for MONITOR to deliver the end marker after the run finished.
DRAIN_TIMEOUT = 30.0
#: GETKEYS questions sent per round trip.
CHUNK = 500

_LINE = re.compile(r'^(\d+\.\d+) \[(\d+) (.*?)\] (".*)$', re.DOTALL)
_ESCAPES = {"n": b"\n", "r": b"\r", "t": b"\t", "a": b"\a", "b": b"\b", '"': b'"', "\\": b"\\"}


@dataclass(frozen=True)
class Command:
    """One command the server executed, as MONITOR showed it."""

    client: str
    args: tuple[bytes, ...]

    @property
    def name(self) -> str:
        return self.args[0].decode(errors="replace").lower()

    @property
    def from_script(self) -> bool:
        return self.client == "lua"

    def __str__(self) -> str:
        return " ".join(a.decode(errors="backslashreplace") for a in self.args)


@dataclass
class Executed:
    """A command a script ran and the keys COMMAND GETKEYS found in it."""

    command: Command
    keys: tuple[bytes, ...] = ()
    #: Why its keys could not be found, if they could not: counts as a failure.
    unresolved: str | None = None


@dataclass
class ScriptCall:
    """One EVAL, EVALSHA or FCALL: what it declared and what it then did."""

    command: str
    #: sha1 of the body (EVAL and EVALSHA alike) or the function's name; a friendly name if given.
    script: str
    declared: tuple[bytes, ...]
    executed: list[Executed] = field(default_factory=list)
    client: str = ""

    @property
    def touched(self) -> tuple[bytes, ...]:
        """Every key the script's commands named, first use first."""
        return tuple(dict.fromkeys(k for e in self.executed for k in e.keys))

    @property
    def undeclared(self) -> tuple[bytes, ...]:
        declared = set(self.declared)
        return tuple(k for k in self.touched if k not in declared)

    @property
    def unresolved(self) -> list[Executed]:
        return [e for e in self.executed if e.unresolved is not None]

    @property
    def slots(self) -> frozenset[int]:
        """The hash slots of the declared keys."""
        return frozenset(key_slot(k) for k in self.declared)

    def describe(self) -> str:
        keys = ", ".join(k.decode(errors="backslashreplace") for k in self.declared)
        return f"{self.command} {self.script} KEYS=[{keys}]"


@dataclass
class KeyReport:
    """Every script call seen during a run, in order, with what each touched."""

    calls: list[ScriptCall]

    def undeclared(self) -> list[ScriptCall]:
        """Calls whose commands touched a key not in their KEYS, or one that could not be read."""
        return [c for c in self.calls if c.undeclared or c.unresolved]

    def cross_slot(self) -> list[ScriptCall]:
        """Calls whose declared keys span more than one hash slot."""
        return [c for c in self.calls if len(c.slots) > 1]

    def scripts(self) -> set[str]:
        return {c.script for c in self.calls}

    def explain(self, calls: Iterable[ScriptCall] | None = None) -> str:
        lines: list[str] = []
        for call in self.undeclared() if calls is None else calls:
            lines.append(call.describe())
            for key in call.undeclared:
                first = next(e for e in call.executed if key in e.keys)
                lines.append(f"  undeclared {key!r}, first by: {first.command}")
            for e in call.unresolved:
                lines.append(f"  keys unknown for: {e.command} ({e.unresolved})")
            if len(call.slots) > 1:
                lines.append(f"  declared keys span slots {sorted(call.slots)}")
        return "\n".join(lines)


# -- reading MONITOR ------------------------------------------------------------------------
def parse_monitor_line(line: str) -> Command:
    """`<time> [<db> <client>] "arg" "arg" ...` with the escapes of sdscatrepr undone."""
    found = _LINE.match(line)
    if found is None:
        raise ValueError(f"not a MONITOR line: {line!r}")
    return Command(found[3], tuple(_unquote(found[4])))


def _unquote(text: str) -> list[bytes]:
    args: list[bytes] = []
    i, n = 0, len(text)
    while i < n:
        if text[i] == " ":
            i += 1
            continue
        if text[i] != '"':
            raise ValueError(f"expected a quoted argument at {i} in {text!r}")
        i += 1
        out = bytearray()
        while text[i] != '"':
            ch = text[i]
            if ch == "\\":
                nxt = text[i + 1]
                if nxt == "x":
                    out.append(int(text[i + 2 : i + 4], 16))
                    i += 4
                    continue
                out += _ESCAPES[nxt]
                i += 2
                continue
            out += ch.encode("latin-1")
            i += 1
        args.append(bytes(out))
        i += 1
    return args


def _execute(client: redis.Redis, *args: Any) -> Any:
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _send(conn: Any, *args: Any) -> None:
    """Send without reading the reply: many questions in one round trip, or MONITOR."""
    conn.send_command(*args)


def _as_text(reply: Any) -> str:
    return reply.decode(errors="backslashreplace") if isinstance(reply, bytes) else str(reply)


class _Monitor:
    """A MONITOR connection of its own, read raw so binary keys survive."""

    def __init__(self, client: redis.Redis) -> None:
        self.pool = client.connection_pool
        self.conn = self.pool.get_connection()
        _send(self.conn, "MONITOR")
        if _as_text(self.conn.read_response(disable_decoding=True)) != "OK":
            raise redis.RedisError("MONITOR was refused")

    def until(self, marker: bytes, deadline: float) -> list[Command]:
        """Every command up to the ECHO of `marker`, which is left out."""
        seen: list[Command] = []
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("MONITOR did not deliver the end marker")
            line = _as_text(self.conn.read_response(disable_decoding=True, timeout=remaining))
            command = parse_monitor_line(line)
            if command.args == (b"ECHO", marker) and not command.from_script:
                return seen
            seen.append(command)

    def close(self) -> None:
        # A connection that has been in MONITOR mode cannot go back to the pool as it is.
        self.conn.disconnect()  # type: ignore[no-untyped-call]
        self.pool.release(self.conn)


# -- finding keys ---------------------------------------------------------------------------
def command_keys(client: redis.Redis, commands: list[Command]) -> list[Executed]:
    """The key arguments of each command, by COMMAND GETKEYS, many per round trip."""
    found = [Executed(c) for c in commands]
    # A command of one word has no key argument; COMMAND GETKEYS refuses those.
    asked = [e for e in found if len(e.command.args) > 1]
    conn = client.connection_pool.get_connection()
    try:
        for start in range(0, len(asked), CHUNK):
            chunk = asked[start : start + CHUNK]
            for e in chunk:
                _send(conn, "COMMAND", "GETKEYS", *e.command.args)
            for e in chunk:
                try:
                    reply = conn.read_response(disable_decoding=True)
                except redis.ResponseError as exc:
                    if "no key arguments" not in str(exc):
                        e.unresolved = str(exc)
                    continue
                e.keys = tuple(bytes(k) for k in reply)
    finally:
        client.connection_pool.release(conn)
    return found


# -- pairing script commands with their call -----------------------------------------------
def _declared(command: Command) -> tuple[str, tuple[bytes, ...]]:
    args = command.args
    body = args[1]
    numkeys = int(args[2])
    if command.name in ("eval", "eval_ro"):
        script = hashlib.sha1(body).hexdigest()
    else:
        script = body.decode(errors="replace").lower()
    return script, args[3 : 3 + numkeys]


def _calibrate(client: redis.Redis, monitor: _Monitor, deadline: float) -> bool:
    """Whether this server shows a script call before the commands it ran (7.0 does)."""
    token = secrets.token_hex(8).encode()
    _execute(client, "EVAL", "return redis.call('ECHO', ARGV[1])", 0, token)
    _execute(client, "ECHO", token + b"!")
    lines = monitor.until(token + b"!", deadline)
    call = next(i for i, c in enumerate(lines) if c.name == "eval" and c.args[-1] == token)
    inner = next(i for i, c in enumerate(lines) if c.from_script and c.args[-1] == token)
    return call < inner


def pair(
    commands: list[Command], *, call_first: bool, names: Mapping[str, str] | None = None
) -> tuple[list[ScriptCall], list[Command]]:
    """Script calls with the script commands they ran, and any script command no call claims.

    Scripts run one at a time on a server, so its script commands sit next to their call:
    after it when `call_first`, else before it.
    """
    names = names or {}
    calls: list[ScriptCall] = []
    pending: list[Command] = []
    orphans: list[Command] = []
    current: ScriptCall | None = None
    for command in commands:
        if command.from_script:
            if call_first and current is not None:
                current.executed.append(Executed(command))
            else:
                pending.append(command)
            continue
        if not call_first and pending and command.name not in SCRIPT_COMMANDS:
            orphans.extend(pending)
            pending.clear()
        if calls and [a.lower() for a in command.args[:2]] == [b"script", b"load"]:
            # redis-py loads a script after a NOSCRIPT refusal and calls again: drop the refusal.
            sha = hashlib.sha1(command.args[2]).hexdigest()
            last = calls[-1]
            if (
                not last.executed
                and last.client == command.client
                and last.script == names.get(sha, sha)
            ):
                calls.pop()
        current = None
        if command.name in SCRIPT_COMMANDS:
            script, declared = _declared(command)
            current = ScriptCall(command.name, names.get(script, script), declared)
            current.client = command.client
            if not call_first:
                current.executed.extend(Executed(c) for c in pending)
                pending.clear()
            calls.append(current)
    orphans.extend(pending)
    return calls, orphans


# -- the checks -----------------------------------------------------------------------------
def record_script_keys(
    client: redis.Redis,
    run: Callable[[], object],
    *,
    names: Mapping[str, str] | None = None,
    timeout: float = DRAIN_TIMEOUT,
) -> KeyReport:
    """Run `run()` while MONITOR watches the server `client` talks to; report every script call.

    `names` maps a script's sha1 (or a function's name) to a name for the report. Scripts run by
    other clients of the server during `run()` are reported too: that is the server's truth.
    """
    monitor = _Monitor(client)
    try:
        call_first = _calibrate(client, monitor, time.monotonic() + timeout)
        run()
        marker = secrets.token_hex(8).encode()
        _execute(client, "ECHO", marker)
        commands = monitor.until(marker, time.monotonic() + timeout)
    finally:
        monitor.close()
    calls, orphans = pair(commands, call_first=call_first, names=names)
    if orphans:
        raise AssertionError(f"script commands without a script call: {orphans[:5]}")
    script_commands = [e.command for call in calls for e in call.executed]
    resolved = iter(command_keys(client, script_commands))
    for call in calls:
        call.executed = [next(resolved) for _ in call.executed]
    return KeyReport(calls)


def assert_scripts_declare_keys(
    client: redis.Redis,
    run: Callable[[], object],
    *,
    names: Mapping[str, str] | None = None,
    min_calls: int = 1,
    one_slot: bool = True,
) -> KeyReport:
    """Fail unless every script call during `run()` declared every key it touched.

    Also fails if fewer than `min_calls` script calls ran (a check of nothing proves nothing) and,
    with `one_slot`, if one call's declared keys span several hash slots.
    """
    report = record_script_keys(client, run, names=names)
    if len(report.calls) < min_calls:
        raise AssertionError(f"{len(report.calls)} script calls ran, expected >= {min_calls}")
    bad = report.undeclared()
    if bad:
        raise AssertionError(
            f"{len(bad)} of {len(report.calls)} script calls touched undeclared keys:\n"
            + report.explain(bad[:20])
        )
    if one_slot:
        assert_one_slot_per_call(report)
    return report


def assert_one_slot_per_call(report: KeyReport) -> None:
    """Fail if any call's declared keys lie in more than one hash slot (CROSSSLOT on a cluster)."""
    bad = report.cross_slot()
    if bad:
        raise AssertionError(
            f"{len(bad)} script calls declare keys in several slots:\n" + report.explain(bad[:20])
        )


def declared_in_one_slot(keys: Iterable[bytes | str]) -> bool:
    """True if every key lies in one hash slot (no keys counts as one slot)."""
    slots = {key_slot(k.encode() if isinstance(k, str) else k) for k in keys}
    return len(slots) <= 1
