"""The fan-out stage: stream the batch's results from its `results_url` and apply each line in
one atomic transition (result stored, reply queued, waiter woken, webhook queued, tokens
counted); resumable, since a line for a request that already ended is ignored.

A line that was paid for is never paid for again: a line whose JSON is damaged but whose
`custom_id` can be read ends its request with what could be recovered (flagged). The lines seen
are compared with the batch's request counts, and a download that ends short is fetched again
(up to RESULT_FETCHES times) before any request without a line goes round again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson

from batchd import deadlines
from batchd.api import ResultLine
from batchd.defaults import BAD_LINES_LOGGED, FANOUT_CHUNK, FANOUT_DEPTH, RESULT_FETCHES
from batchd.errors import APIError, LostLease, NotFoundError
from batchd.logs import get_logger
from batchd.observe import metrics
from batchd.overlap import WriteBehind
from batchd.runtime import Lease, Runtime, crash_point, jittered
from batchd.stages.ending import error_result, requeue_missing, retention_ms
from batchd.stages.poll import not_found
from batchd.stages.submit import lane_betas
from batchd.store import AssemblyRecord
from batchd.store import assemblies as asm_store
from batchd.store import replies as reply_store
from batchd.store.assemblies import Applied, Line
from batchd.store.keys import TOKEN_LENGTH

log = get_logger("batchd.stages.fanout")


def classify(
    rt: Runtime, result: Any, operator_canceled: bool, deadline_canceled: bool = False
) -> str:
    """ok | err | retry | canceled | expired | realtime, by the retry policy. A line canceled
    because batchd canceled its batch for a deadline goes round again (by its own deadline)."""
    policy = rt.settings.retry
    kind = result.get("type") if isinstance(result, dict) else None
    if kind == "succeeded":
        return "ok"
    if kind == "errored":
        err = result.get("error")
        if isinstance(err, dict) and isinstance(err.get("error"), dict):
            err = err["error"]
        etype = err.get("type") if isinstance(err, dict) else None
        return "retry" if etype in policy.retry_error_types else "err"
    if kind == "expired":
        return {"batch": "retry", "realtime": "realtime", "fail": "expired"}[policy.expired_policy]
    if kind == "canceled":
        if deadline_canceled:
            return "retry"
        return "retry" if policy.retry_canceled and not operator_canceled else "canceled"
    return "err"


def _n(v: Any) -> int:
    return v if type(v) is int and v > 0 else 0


def usage_of(result: Any) -> str:
    """`model|input|output|cache write 5m|cache write 1h|cache read` of a succeeded result,
    for the ledger; '' when it carries no usage (nothing billed)."""
    if type(result) is not dict or result.get("type") != "succeeded":
        return ""
    msg = result.get("message")
    if type(msg) is not dict:
        return ""
    u = msg.get("usage")
    if type(u) is not dict:
        return ""
    get = u.get
    created = _n(get("cache_creation_input_tokens"))
    detail = get("cache_creation")
    w1h = _n(detail.get("ephemeral_1h_input_tokens")) if type(detail) is dict else 0
    w5m = created - w1h if created > w1h else 0
    model = msg.get("model")
    model = (model if type(model) is str and model else str(model or "unknown")).replace("|", "_")
    return (
        f"{model}|{_n(get('input_tokens'))}|{_n(get('output_tokens'))}|{w5m}|{w1h}|"
        f"{_n(get('cache_read_input_tokens'))}"
    )


def recovered(line: ResultLine) -> tuple[str, bytes]:
    """The class and result to end a request whose line was damaged: the line's own result
    when it could be read after repair (flagged), else an `errored` result keeping the line."""
    result = line.result
    raw_text = line.raw.decode("utf-8", "replace")
    if isinstance(result, dict) and result.get("type") in ("succeeded", "errored"):
        fixed = dict(result)
        fixed["batchd_damaged_line"] = True
        return ("ok" if result.get("type") == "succeeded" else "err"), orjson.dumps(fixed)
    return "err", orjson.dumps(
        {
            "type": "errored",
            "error": {
                "type": "error",
                "error": {
                    "type": "unreadable_result",
                    "message": "the API's results line for this request could not be parsed; "
                    "it was billed and is kept as it came in `raw_line`",
                },
            },
            "raw_line": raw_text,
            "batchd_damaged_line": True,
        }
    )


def run(rt: Runtime, a: AssemblyRecord, held: Lease) -> str:
    """Stream the results and apply each line in one atomic transition; resumable."""
    account, asm, bid = a.account, a.id, a.batch_id or ""
    bound = log.bind(account=account, assembly=asm, batch_id=bid)
    totals = Applied(0, 0, 0, 0)
    counting = threading.Lock()
    applied_chunks = 0
    now = rt.now_ms()
    ledger = asm_store.ledger_keys(rt.keys, account, now)
    # Lines going round again whose deadline no new batch can make follow the account's policy.
    too_late = deadlines.too_late_ms(rt, account, now)
    policy = rt.settings.accounts[account].deadline_policy
    # Replies bound for the account's known queues are pushed in the same call where that is
    # safe; the rest go through the outbox, whose drain makes their queues known for the next.
    queues = reply_store.direct_queues(rt.store, account)

    def apply(lines: list[Line]) -> None:
        nonlocal applied_chunks, totals, queues
        out = rt.store.run(
            asm_store.fanout(
                rt.keys,
                account,
                asm,
                bid,
                a.lane,
                lines,
                retention_ms=retention_ms(rt),
                max_attempts=rt.settings.retry.max_attempts,
                ledger=ledger,
                too_late_ms=too_late,
                policy=policy,
                queues=queues,
            )
        )
        if out.replies:
            reply_store.drain_all(rt.store, account)
            queues = reply_store.direct_queues(rt.store, account)
        metrics.request_turnarounds(account, out.ends)
        with counting:
            totals = Applied(
                totals.done + out.done,
                totals.requeued + out.requeued,
                totals.ignored + out.ignored,
                totals.replies + out.replies,
                escalated=totals.escalated + out.escalated,
            )
            applied_chunks += 1
            first = applied_chunks == 1
        if first:
            crash_point("mid_fanout")
        if held.lost.is_set():
            raise LostLease("assembly lease lost during fan-out")

    bad_lines = 0
    damaged = 0
    unknown = 0

    def unreadable(lineno: int, exc: APIError) -> None:
        # No custom_id could be read from it: nothing to end with it. Counted, logged.
        nonlocal bad_lines
        bad_lines += 1
        if bad_lines <= BAD_LINES_LOGGED:
            bound.warning("unreadable results line skipped", line=lineno, error=str(exc))

    rt.store.read(asm_store.count_fetch(rt.keys, account, asm))
    expected = sum(a.counts.get(k, 0) for k in ("succeeded", "errored", "canceled", "expired"))
    expected = expected or a.count
    betas = lane_betas(rt, account, a.lane)
    stream = rt.api(account).results(
        bid,
        results_url=a.results_url,
        on_bad_line=unreadable,
        expected=expected,
        recover=True,
        betas=betas or None,
    )
    try:
        # Chunks go to Redis from threads while the next lines are parsed; two at a time, so
        # Redis has one to run while the other is sent. Lines are independent transitions.
        with WriteBehind(apply, depth=FANOUT_DEPTH, workers=2) as applier:
            chunk: list[Line] = []
            # The first chunk is applied here, before any other is sent, so a crash right
            # after it (the `mid_fanout` crash point) leaves the rest unapplied.
            send: Callable[[list[Line]], None] = apply
            for line in stream:
                token = line.custom_id
                if len(token) != TOKEN_LENGTH:
                    unknown += 1
                    continue
                if getattr(line, "damaged", False):
                    damaged += 1
                    cls, result = recovered(line)
                    chunk.append(Line(token, cls, result, usage_of(line.result)))
                else:
                    cls = classify(
                        rt, line.result, a.operator_canceled, bool(a.deadline_canceled_ms)
                    )
                    chunk.append(Line(token, cls, orjson.dumps(line.result), usage_of(line.result)))
                if len(chunk) >= FANOUT_CHUNK:
                    send(chunk)
                    send, chunk = applier.put, []
            if chunk:
                send(chunk)
    except NotFoundError:
        return not_found(rt, a, "results")
    except APIError as exc:
        bound.warning("results stream failed; fan-out resumes later", error=str(exc))
        rt.enqueue("fanout", account, asm, delay=jittered(exc.retry_after or 5.0))
        return "retry"
    finally:
        stream.close()  # release the connection at once, also when a LostLease interrupts
    lines_seen = stream.lines
    if totals.done + totals.requeued == a.count:
        missing = 0  # every request of the assembly had its line applied by this run
    elif stream.short and a.fetches + 1 < RESULT_FETCHES:
        bound.warning(
            "results download ended short of the batch's request counts; fetching again",
            lines=lines_seen,
            expected=expected,
            fetch=a.fetches + 1,
        )
        rt.enqueue("fanout", account, asm, delay=jittered(2.0 * (a.fetches + 1)))
        return "short download"
    else:
        missing = requeue_missing(
            rt, a, error_result("missing_result", "no line in the batch results")
        )
    outcome = "canceled" if a.operator_canceled or a.deadline_canceled_ms else "completed"
    rt.store.run(
        asm_store.close(
            rt.keys, account, asm, retention_ms=retention_ms(rt), outcome=outcome, batch_id=bid
        )
    )
    bound.info(
        "fan-out done",
        ended=totals.done,
        requeued=totals.requeued,
        to_realtime=totals.escalated,
        ignored_lines=totals.ignored + unknown,
        unreadable_lines=bad_lines,
        damaged_lines=damaged,
        missing=missing,
    )
    return "done"
