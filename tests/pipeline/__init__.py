"""The producer side of the pipeline against a real Redis: submit, cut, fan-out, results.

`Flow` ends requests the way the stage jobs do, by calling the Lua scripts, with no API at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from typing import Any, cast

import orjson

from batchd import aggregate
from batchd.client import Replies
from batchd.runtime import Runtime
from batchd.store import AssemblyRecord, Lane, Store, replies, requests, split_request_id
from batchd.store import assemblies as asm_store
from batchd.store import lanes as lane_store
from batchd.store.assemblies import Line
from batchd.store.scripts import text

ACCOUNT = "default"
BATCH_ID = "msgbatch_01TestBatch"
#: Bytes a request adds to a batch body besides its params: `{"custom_id":"<26>","params":}`.
FRAMING = 52


def params(content: str = "Hello", **extra: Any) -> dict[str, Any]:
    """A minimal valid Messages request."""
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def compact(value: Any) -> bytes:
    """The exact bytes batchd stores for a JSON value."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def framed(p: Any) -> int:
    """A request's size in a batch body."""
    return len(compact(p)) + FRAMING


def succeeded(reply: str = "Hi") -> bytes:
    """A succeeded result line's `result` object, as the API sends it."""
    return orjson.dumps(
        {
            "type": "succeeded",
            "message": {
                "id": "msg_01",
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5",
                "content": [{"type": "text", "text": reply}],
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 3, "output_tokens": 1},
            },
        }
    )


def errored(etype: str = "invalid_request_error", message: str = "bad") -> bytes:
    """An errored result line's `result` object."""
    return orjson.dumps(
        {
            "type": "errored",
            "error": {"type": "error", "error": {"type": etype, "message": message}},
        }
    )


def stop(stream: Replies) -> None:
    """Stop reading a `replies` stream, as a consumer that leaves its loop does (what it was
    handed is acknowledged)."""
    stream.close()


async def astop(stream: AsyncIterator[Any]) -> None:
    """Close an async `replies` generator."""
    await cast(AsyncGenerator[Any, None], stream).aclose()


class Crash(Exception):
    """Raised inside `with client.replies(...)`: a consumer failing while it handles an item."""


def token_of(rid: str) -> str:
    return split_request_id(rid)[1]


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


class Flow:
    """Moves requests through a lane cut and a fan-out by the same store calls the stages make."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.keys = rt.keys
        self.store = rt.store

    def cut(self, account: str = ACCOUNT, priority: int | str = 0) -> str:
        asm = aggregate.cut(self.rt, account, str(priority), "test")
        assert asm is not None, "nothing to cut"
        return asm

    def assembly(self, asm: str, account: str = ACCOUNT) -> AssemblyRecord:
        a = self.store.read(asm_store.read(self.keys, account, asm))
        assert a is not None, f"no assembly {asm}"
        return a

    def entries(self, asm: str, account: str = ACCOUNT) -> list[str]:
        return [
            text(e) for e in self.store.read(asm_store.entries(self.keys, account, asm, 0, 10**6))
        ]

    def tokens(self, asm: str, account: str = ACCOUNT) -> list[str]:
        return [e.split(" ", 1)[0] for e in self.entries(asm, account)]

    def body(self, asm: str, account: str = ACCOUNT) -> bytes:
        """The batch body built from the assembly's entries and params, as the submit stage."""
        tokens = self.tokens(asm, account)
        found = self.store.read(asm_store.params_of(self.keys, account, tokens))
        parts = []
        for token, p in zip(tokens, found, strict=True):
            assert isinstance(p, bytes)
            parts.append(b'{"custom_id":"' + token.encode() + b'","params":' + p + b"}")
        return b'{"requests":[' + b",".join(parts) + b"]}"

    def record(self, asm: str, batch_id: str = BATCH_ID, account: str = ACCOUNT) -> None:
        self.store.run(
            asm_store.record(
                self.keys, account, asm, batch_id, first_poll_ms=60_000, retention_ms=60_000
            )
        )

    def fanout(
        self,
        asm: str,
        lines: Iterable[tuple[str, str, bytes]],
        batch_id: str = BATCH_ID,
        account: str = ACCOUNT,
    ) -> list[int]:
        """Apply result lines `(token, class, result JSON)` as the fan-out stage does (replies
        pushed at once where that is safe); returns [done, requeued, ignored]."""
        s = self.rt.settings
        lane = self.assembly(asm, account).lane
        out = self.store.run(
            asm_store.fanout(
                self.keys,
                account,
                asm,
                batch_id,
                lane,
                [Line(t, c, r) for t, c, r in lines],
                retention_ms=int(s.retention * 1000),
                max_attempts=s.retry.max_attempts,
                ledger=asm_store.ledger_keys(self.keys, account, self.store.now_ms()),
                queues=replies.direct_queues(self.store, account),
            )
        )
        if out.replies:
            replies.drain_all(self.store, account)
        return [out.done, out.requeued, out.ignored]

    def missing(
        self, asm: str, tokens: list[str], batch_id: str = BATCH_ID, account: str = ACCOUNT
    ) -> list[int]:
        """Send requests that got no line round again; returns [done, requeued]."""
        s = self.rt.settings
        lane = self.assembly(asm, account).lane
        done, requeued, queued = self.store.run(
            asm_store.missing(
                self.keys,
                account,
                asm,
                batch_id,
                lane,
                tokens,
                errored("missing_result", "no line"),
                retention_ms=int(s.retention * 1000),
                max_attempts=s.retry.max_attempts,
            )
        )
        if queued:
            replies.drain_all(self.store, account)
        return [done, requeued]

    def lane_of(self, rid: str) -> str:
        account, token = split_request_id(rid)
        record = self.store.read(requests.read(self.keys, account, token))
        assert record is not None and record.lane is not None
        return record.lane

    def end(self, *rids: str, cls: str = "ok", result: bytes | None = None) -> str:
        """Cut the lane of these requests and fan out one line each, in the order given.

        Returns the assembly id. The requests must share a lane and be pending.
        """
        account, _ = split_request_id(rids[0])
        asm = self.cut(account, self.lane_of(rids[0]))
        tokens = [split_request_id(rid)[1] for rid in rids]
        assert set(tokens) <= set(self.tokens(asm, account))
        self.record(asm, account=account)
        lines = [(t, cls, result or succeeded()) for t in tokens]
        out = self.fanout(asm, lines, account=account)
        assert out[2] == 0, "a line was ignored"
        return asm


def lane(priority: int = 0, **kw: Any) -> str:
    """A lane's id, as the store names it."""
    return Lane.of(priority, **kw).id


def lane_stats(store: Store, lane_id: str = "0", account: str = ACCOUNT) -> tuple[int, int]:
    """(count, bytes) of a lane's counters."""
    [counted] = store.read(lane_store.stats(store.keys, account, [lane_id]))
    assert not counted.spoiled
    return counted.stats.count, counted.stats.bytes


def pending(store: Store, lane_id: str = "0", account: str = ACCOUNT) -> list[str]:
    """Tokens in a lane's pending list, head first."""
    entries = store.read(lane_store.head(store.keys, account, lane_id, 1_000_000))
    return [text(e).split(" ")[0] for e in entries]
