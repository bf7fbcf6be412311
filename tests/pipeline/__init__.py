"""The producer side of the pipeline against a real Redis: submit, cut, fan-out, results.

`Flow` ends requests the way the stage jobs do, by calling the Lua scripts, with no API at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Generator, Iterable, Iterator
from typing import Any, cast

import orjson

from batchd import aggregate
from batchd.keys import split_request_id
from batchd.runtime import Runtime
from batchd.store import text

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


def stop(replies: Iterator[Any]) -> None:
    """Close a `replies` generator, as a consumer that stops reading does."""
    cast(Generator[Any, None, None], replies).close()


async def astop(replies: AsyncIterator[Any]) -> None:
    """Close an async `replies` generator."""
    await cast(Any, replies).aclose()


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
    """Moves requests through a lane cut and a fan-out by the same scripts the stages run."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.keys = rt.keys

    def cut(self, account: str = ACCOUNT, priority: int = 0) -> str:
        asm = aggregate.cut(self.rt, account, priority, "test")
        assert asm is not None, "nothing to cut"
        return asm

    def entries(self, asm: str, account: str = ACCOUNT) -> list[str]:
        return [
            text(e) for e in self.rt.redis.lrange(self.keys.assembly_entries(account, asm), 0, -1)
        ]

    def tokens(self, asm: str, account: str = ACCOUNT) -> list[str]:
        return [e.split(" ", 1)[0] for e in self.entries(asm, account)]

    def body(self, asm: str, account: str = ACCOUNT) -> bytes:
        """The batch body built from the assembly's entries and records, as the submit stage."""
        parts = []
        for token in self.tokens(asm, account):
            p = self.rt.redis.hget(self.keys.params(account), token)
            assert isinstance(p, bytes)
            parts.append(b'{"custom_id":"' + token.encode() + b'","params":' + p + b"}")
        return b'{"requests":[' + b",".join(parts) + b"]}"

    def record(self, asm: str, batch_id: str = BATCH_ID, account: str = ACCOUNT) -> None:
        self.rt.scripts.record(
            args=[self.keys.tag(account), self.keys.prefix, account, asm, batch_id, 60_000]
        )

    def head(self, asm: str, batch_id: str, account: str) -> list[Any]:
        s = self.rt.settings
        return [
            self.keys.tag(account),
            self.keys.prefix,
            account,
            asm,
            batch_id,
            int(s.retention * 1000),
            s.retry.max_attempts,
        ]

    def fanout(
        self,
        asm: str,
        lines: Iterable[tuple[str, str, bytes]],
        batch_id: str = BATCH_ID,
        account: str = ACCOUNT,
    ) -> list[int]:
        """Apply result lines `(token, class, result JSON)`; returns [done, requeued, ignored]."""
        args: list[Any] = self.head(asm, batch_id, account)
        for line in lines:
            args.extend(line)
        return [int(n) for n in self.rt.scripts.fanout(args=args)]

    def missing(
        self, asm: str, tokens: list[str], batch_id: str = BATCH_ID, account: str = ACCOUNT
    ) -> list[int]:
        """Send requests that got no result line round again; returns [done, requeued]."""
        args = [*self.head(asm, batch_id, account), errored("missing_result", "no line"), *tokens]
        return [int(n) for n in self.rt.scripts.missing(args=args)]

    def end(self, *rids: str, cls: str = "ok", result: bytes | None = None) -> str:
        """Cut the lane of these requests and fan out one line each, in the order given.

        Returns the assembly id. The requests must share a lane and be pending.
        """
        account, token = split_request_id(rids[0])
        priority = int(text(self.rt.redis.hget(self.keys.request(account, token), "pr")))
        asm = self.cut(account, priority)
        tokens = [split_request_id(rid)[1] for rid in rids]
        assert set(tokens) <= set(self.tokens(asm, account))
        self.record(asm, account=account)
        lines = [(t, cls, result or succeeded()) for t in tokens]
        out = self.fanout(asm, lines, account=account)
        assert out[2] == 0, "a line was ignored"
        return asm
