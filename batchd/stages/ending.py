"""Ending an assembly's requests in bulk, chunk by chunk: they go round again, end with one
status, or go back to their lane unsent; and the assembly closes."""

from __future__ import annotations

from collections.abc import Iterator

import orjson

from batchd.defaults import ENTRY_CHUNK, SWEEP_CHUNK
from batchd.logs import get_logger
from batchd.runtime import Runtime
from batchd.store import AssemblyRecord
from batchd.store import assemblies as asm_store
from batchd.store import lanes as lane_store
from batchd.store import replies as reply_store
from batchd.store.scripts import text

log = get_logger("batchd.stages")


def error_result(etype: str, message: str) -> bytes:
    """A result object of type `errored` carrying batchd's own reason."""
    return orjson.dumps(
        {
            "type": "errored",
            "error": {"type": "error", "error": {"type": etype, "message": message}},
        }
    )


def tokens(rt: Runtime, account: str, asm: str) -> Iterator[list[str]]:
    """The assembly's request tokens, SWEEP_CHUNK at a time."""
    start = 0
    while True:
        entries = rt.store.read(asm_store.entries(rt.keys, account, asm, start, ENTRY_CHUNK))
        if not entries:
            return
        start += len(entries)
        found = [text(e).split(" ", 1)[0] for e in entries]
        for i in range(0, len(found), SWEEP_CHUNK):
            yield found[i : i + SWEEP_CHUNK]


def retention_ms(rt: Runtime) -> int:
    return int(rt.settings.retention * 1000)


def requeue_missing(rt: Runtime, a: AssemblyRecord, result: bytes) -> int:
    """Send every request still in the assembly round again (or dead past the cap)."""
    n = 0
    replies = 0
    for part in tokens(rt, a.account, a.id):
        done, requeued, queued = rt.store.run(
            asm_store.missing(
                rt.keys,
                a.account,
                a.id,
                a.batch_id or "",
                a.lane,
                part,
                result,
                retention_ms=retention_ms(rt),
                max_attempts=rt.settings.retry.max_attempts,
            )
        )
        n += done + requeued
        replies += queued
    if replies:
        reply_store.drain_all(rt.store, a.account)
    return n


def release_all(rt: Runtime, a: AssemblyRecord, result: bytes) -> None:
    """The API refused the batch: its requests go round again (or dead past the cap)."""
    requeue_missing(rt, a, result)
    rt.store.run(asm_store.close(rt.keys, a.account, a.id, retention_ms=retention_ms(rt)))


def reject_and_unclaim(rt: Runtime, a: AssemblyRecord, token: str | None) -> None:
    """End one corrupt request `rejected` and put the rest of a never-sent assembly back."""
    if token is not None:
        result = error_result("rejected", "the request's stored record is missing or corrupted")
        _, queued = rt.store.run(
            asm_store.fail_all(
                rt.keys,
                a.account,
                a.id,
                "",
                [token],
                "rejected",
                result,
                retention_ms=retention_ms(rt),
            )
        )
        if queued:
            reply_store.drain_all(rt.store, a.account)
    for part in tokens(rt, a.account, a.id):
        rt.store.run(asm_store.unclaim(rt.keys, a.account, a.id, a.lane, part))
    rt.store.run(asm_store.close(rt.keys, a.account, a.id, retention_ms=retention_ms(rt)))
    # They were due already: cut their lane again at once rather than after max_wait.
    rt.store.read(lane_store.request_flush(rt.keys, a.account, a.lane))


def fail_all(rt: Runtime, a: AssemblyRecord, etype: str, message: str) -> None:
    """End every request still in the assembly `errored` (its batch's results cannot be had).

    They are not sent again: the batch may have been billed.
    """
    result = error_result(etype, message)
    replies = 0
    for part in tokens(rt, a.account, a.id):
        _, queued = rt.store.run(
            asm_store.fail_all(
                rt.keys,
                a.account,
                a.id,
                a.batch_id or "",
                part,
                "errored",
                result,
                retention_ms=retention_ms(rt),
            )
        )
        replies += queued
    if replies:
        reply_store.drain_all(rt.store, a.account)
    outcome = "archived" if etype == "results_archived" else "vanished"
    rt.store.run(
        asm_store.close(
            rt.keys,
            a.account,
            a.id,
            retention_ms=retention_ms(rt),
            outcome=outcome,
            batch_id=a.batch_id or "",
        )
    )


def seal_abandoned(rt: Runtime, account: str, asm: str) -> None:
    """An aggregator died mid-claim: seal what it had claimed and send it on."""
    clen = rt.store.run(asm_store.seal(rt.keys, account, asm))
    if clen > 0:
        log.info("sealed an abandoned assembly", account=account, assembly=asm)
        rt.enqueue("submit", account, asm)
