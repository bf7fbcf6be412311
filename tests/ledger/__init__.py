"""The token and cost ledger, prices, reports and spend caps, on a real Redis.

`Books` moves requests through a cut and a fan-out by the same store calls the stages make, with
results that carry usage, so the ledger is written as the fan-out stage writes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from batchd import aggregate
from batchd.client import Client
from batchd.runtime import Runtime
from batchd.stages.fanout import usage_of
from batchd.store import assemblies as asm_store
from batchd.store import replies as reply_store
from batchd.store.assemblies import Applied, Line
from batchd.store.scripts import text

ACCOUNT = "default"
MODEL = "claude-sonnet-4-5"


def params(i: int = 0, *, model: str = MODEL, max_tokens: int = 64, **extra: Any) -> dict[str, Any]:
    """A valid Messages request."""
    return {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": f"Say hello #{i}"}],
        **extra,
    }


def usage(i: int = 100, o: int = 10, w5: int = 0, w1: int = 0, r: int = 0) -> dict[str, Any]:
    """A Usage object as the API reports it."""
    return {
        "input_tokens": i,
        "output_tokens": o,
        "cache_creation_input_tokens": w5 + w1,
        "cache_read_input_tokens": r,
        "cache_creation": {"ephemeral_5m_input_tokens": w5, "ephemeral_1h_input_tokens": w1},
        "service_tier": "batch",
    }


def succeeded(u: dict[str, Any], model: str = MODEL) -> dict[str, Any]:
    """A succeeded results line's `result` object with this usage."""
    return {
        "type": "succeeded",
        "message": {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [{"type": "text", "text": "Hi"}],
            "stop_reason": "end_turn",
            "usage": u,
        },
    }


class Books:
    """Submit, cut and fan out on a runtime, the ledger written as the fan-out stage writes it."""

    def __init__(self, rt: Runtime, client: Client) -> None:
        self.rt = rt
        self.client = client
        self.store = rt.store
        self.keys = rt.keys

    def submit(self, n: int, *, account: str = ACCOUNT, **kw: Any) -> list[str]:
        """Submit n requests (`tag`, `priority`, `model`, `max_tokens` as given); their ids."""
        model = kw.pop("model", MODEL)
        max_tokens = kw.pop("max_tokens", 64)
        items = [
            {"params": params(i, model=model, max_tokens=max_tokens), "account": account, **kw}
            for i in range(n)
        ]
        ids = []
        for outcome in self.client.submit_many(items):
            assert not isinstance(outcome, Exception), outcome
            ids.append(outcome.id)
        return ids

    def tick(self) -> int:
        """One aggregator pass with every lane due (flushed), as after its wait; cuts made."""
        for account in self.rt.settings.accounts:
            self.client.flush(account)
        return aggregate.tick(self.rt)

    def cut(self, account: str = ACCOUNT, lane: str = "0") -> str:
        asm = aggregate.cut(self.rt, account, lane, "test")
        assert asm is not None, "nothing to cut"
        return asm

    def tokens(self, asm: str, account: str = ACCOUNT) -> list[str]:
        raw = self.store.read(asm_store.entries(self.keys, account, asm, 0, 10**6))
        return [text(e).split(" ", 1)[0] for e in raw]

    def fan_out(
        self,
        asm: str,
        result: Callable[[int], dict[str, Any]],
        *,
        account: str = ACCOUNT,
        cls: str = "ok",
        now_ms: int | None = None,
    ) -> Applied:
        """Apply one line per request of the assembly, `result(i)` for the i-th, in the ledger
        buckets of `now_ms` (default: now)."""
        a = self.store.read(asm_store.read(self.keys, account, asm))
        assert a is not None
        lines = []
        for i, token in enumerate(self.tokens(asm, account)):
            r = result(i)
            lines.append(Line(token, cls, orjson.dumps(r), usage_of(r)))
        s = self.rt.settings
        when = self.store.now_ms() if now_ms is None else now_ms
        out = self.store.run(
            asm_store.fanout(
                self.keys,
                account,
                asm,
                "msgbatch_01Test",
                a.lane,
                lines,
                retention_ms=int(s.retention * 1000),
                max_attempts=s.retry.max_attempts,
                ledger=asm_store.ledger_keys(self.keys, account, when),
            )
        )
        reply_store.drain_all(self.store, account)
        return out

    def close(self, asm: str, account: str = ACCOUNT) -> None:
        """The assembly is done (its results all applied)."""
        self.store.run(
            asm_store.close(
                self.keys, account, asm, retention_ms=60_000, outcome="completed", batch_id=""
            )
        )
