"""The stage jobs run by rq workers: submit a batch exactly once, poll it, fan out its results.

Each stage takes the assembly's lease, reads its state from Redis alone and is idempotent, so
any replica can finish another's work and a repeated job does no harm.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, cast

import orjson

from batchd.api import MessageBatch
from batchd.errors import (
    APIError,
    APIRequestTooLargeError,
    AuthenticationError,
    BadRequestError,
    BatchdError,
    BillingError,
    BodyLengthError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    StoreError,
)
from batchd.keys import split_request_id
from batchd.logs import get_logger
from batchd.overlap import ReadAhead, WriteBehind
from batchd.runtime import Lease, Runtime, crash_point, current, jittered, lease
from batchd.store import text
from batchd.validate import FRAMING

log = get_logger("batchd.stages")

#: Entries read from Redis per round trip while streaming a batch body or sweeping an assembly.
ENTRY_CHUNK = 1000
#: Result lines applied per Lua call during fan-out.
FANOUT_CHUNK = 500
#: Fan-out chunks parsed and waiting for Redis at most (memory: a chunk is ~1 MB of results).
FANOUT_DEPTH = 4
#: Seconds an account stays paused after its API key was refused, before trying again.
PAUSE_SECONDS = 60.0
#: Unreadable results lines logged one by one per fan-out; the rest are only counted.
BAD_LINES_LOGGED = 5


class LostLease(BatchdError):
    """This process no longer holds the lock it was working under; it must stop at once."""


class CorruptRequest(StoreError):
    """A request's record in Redis is missing or does not match its pending entry."""

    def __init__(self, token: str) -> None:
        super().__init__(f"request record {token} is missing or corrupted")
        self.token = token


def run_stage(stage: str, account: str, asm: str) -> str:
    """rq entry point: run one stage of one assembly."""
    rt = current()
    bound = log.bind(stage=stage, account=account, assembly=asm)
    with lease(rt, rt.keys.assembly_lease(account, asm)) as held:
        if held is None:
            bound.debug("stage busy elsewhere")
            return "busy"
        state = rt.assembly(account, asm)
        if not state:
            rt.redis.zrem(rt.keys.assemblies(account), asm)
            return "gone"
        st = state.get("st", "")
        if st == "assembling":
            seal_abandoned(rt, account, asm)
            return "sealed"
        if st in ("sealed", "submitting"):
            return submit(rt, account, asm, held)
        if st == "submitted":
            return poll(rt, account, asm, state)
        if st == "ended":
            return fanout(rt, account, asm, state, held)
        rt.redis.zrem(rt.keys.assemblies(account), asm)
        return st


def seal_abandoned(rt: Runtime, account: str, asm: str) -> None:
    """An aggregator died mid-claim: seal what it had claimed and send it on."""
    clen = int(rt.scripts.seal(args=[rt.keys.tag(account), asm]))
    if clen > 0:
        log.info("sealed an abandoned assembly", account=account, assembly=asm)
        rt.enqueue("submit", account, asm)


# -- submit ----------------------------------------------------------------------------------


def submit(rt: Runtime, account: str, asm: str, asm_lease: Lease) -> str:
    """Create the assembly's batch exactly once (see design.md, "the one hard step")."""
    bound = log.bind(account=account, assembly=asm)
    paused = rt.redis.pttl(rt.keys.paused(account))
    if paused > 0:
        rt.enqueue("submit", account, asm, delay=paused / 1000 + 1)
        return "paused"
    with lease(rt, rt.keys.create_lock(account), token=str(rt.redis.incr(rt.keys.fence(account)))) \
            as lock:  # fmt: skip
        if lock is None:
            rt.enqueue("submit", account, asm, delay=jittered(1.0, 0.5))
            return "waiting for the create lock"
        state = rt.assembly(account, asm)
        if state.get("bid"):
            rt.enqueue("poll", account, asm)
            return "already submitted"
        if state.get("intent"):
            try:
                found = find_created(rt, account, state)
            except APIError as exc:
                bound.warning("cannot list batches yet", error=str(exc))
                rt.enqueue("submit", account, asm, delay=jittered(5.0))
                return "unresolved"
            if found is not None:
                bound.warning("adopted a batch created before a crash", batch_id=found.id)
                return record(rt, account, asm, found)
            left = unsettled(rt, account, asm, state)
            if left > 0:
                rt.enqueue("submit", account, asm, delay=left)
                return "waiting to be sure the last create made nothing"
        tag = rt.keys.tag(account)
        written = int(rt.scripts.intent(args=[tag, lock.token, asm]))
        if written == 0:
            rt.enqueue("submit", account, asm, delay=1)
            return "lost the create lock"
        if written < 0:
            nudge_open_intent(rt, account)
            rt.enqueue("submit", account, asm, delay=jittered(1.0, 0.5))
            return "waiting for an earlier create to be resolved"
        crash_point("after_intent")
        count, clen = int(state["cnt"]), int(state["clen"])
        try:
            batch = rt.api(account).create(body_chunks(rt, account, asm, lock), clen, retries=False)
        except LostLease:
            bound.warning("create lock lost mid-upload; upload aborted before its end")
            return "lost the create lock"
        except RateLimitError as exc:
            rt.scripts.clear_intent(args=[tag, lock.token, asm])
            delay = exc.retry_after or 30.0
            bound.warning("batch creation rate limited; holding the assembly", retry_in=delay)
            rt.enqueue("submit", account, asm, delay=jittered(delay))
            return "rate limited"
        except (AuthenticationError, PermissionDeniedError, BillingError) as exc:
            rt.scripts.clear_intent(args=[tag, lock.token, asm])
            rt.redis.set(rt.keys.paused(account), str(exc), px=int(PAUSE_SECONDS * 1000))
            bound.error(
                "account paused: the API refused its key; requests are kept",
                status=exc.status,
                error=exc.message,
            )
            rt.enqueue("submit", account, asm, delay=PAUSE_SECONDS + 1)
            return "paused"
        except (BadRequestError, APIRequestTooLargeError) as exc:
            rt.scripts.clear_intent(args=[tag, lock.token, asm])
            bound.error("the API refused the batch; its requests go round again", error=str(exc))
            release_all(rt, account, asm, _error_result(exc.error_type or "api_error", str(exc)))
            return "refused"
        except (CorruptRequest, BodyLengthError) as exc:
            # The upload was aborted before its end, so no batch exists. The bad request ends
            # `rejected`; the others go back to their lane untouched.
            rt.scripts.clear_intent(args=[tag, lock.token, asm])
            token = exc.token if isinstance(exc, CorruptRequest) else None
            bound.error("cannot build the batch body", error=str(exc), bad_request=token)
            reject_and_unclaim(rt, account, asm, token)
            return "corrupt request"
        except APIError as exc:
            # No answer, a 5xx, or garbage: the batch may exist. Look before trying again.
            bound.warning(
                "batch creation ended without an answer; checking the list", error=str(exc)
            )
            state = rt.assembly(account, asm)
            try:
                found = find_created(rt, account, state)
            except APIError as list_exc:
                bound.warning("cannot list batches yet", error=str(list_exc))
                rt.enqueue("submit", account, asm, delay=jittered(5.0))
                return "unresolved"
            if found is not None:
                return record(rt, account, asm, found)
            # The API may finish a create after the connection broke: the intent stays, and
            # the batch is sent again only if a list `create_settle` seconds on finds nothing.
            rt.redis.hset(rt.keys.assembly(account, asm), "iunsure", rt.now_ms())
            settle = rt.settings.run.create_settle
            rt.enqueue("submit", account, asm, delay=jittered(max(settle, exc.retry_after or 1.0)))
            return "retry"
        crash_point("after_create")
        if batch.total != count:
            bound.error("created batch has an unexpected size", expected=count, got=batch.total)
        return record(rt, account, asm, batch)


def body_chunks(rt: Runtime, account: str, asm: str, lock: Lease) -> Iterator[bytes]:
    """The batch body, streamed from Redis a chunk of entries at a time.

    The closing bytes are sent only after checking that the create lock is still ours, so a
    process that lost it (paused past its lease) aborts with the body incomplete.
    """
    yield b'{"requests":['
    # The next chunk is read from Redis while this one goes out on the socket.
    with ReadAhead(_body_pieces(rt, account, asm)) as pieces:
        for piece in pieces:
            yield piece
            if lock.lost.is_set():
                raise LostLease("create lock lost")
    if not lock.held():
        raise LostLease("create lock lost")
    yield b"]}"


def _body_pieces(rt: Runtime, account: str, asm: str) -> Iterator[bytes]:
    """The body's requests, joined by commas, one chunk of entries per piece."""
    ek = rt.keys.assembly_entries(account, asm)
    opening = b'{"custom_id":"'  # the first request has no comma before it
    start = 0
    while True:
        entries = cast(list[bytes], rt.redis.lrange(ek, start, start + ENTRY_CHUNK - 1))
        if not entries:
            return
        start += len(entries)
        tokens: list[bytes] = []
        sizes: list[int] = []
        for e in entries:
            token, size_text, _ = e.split(b" ", 2)
            tokens.append(token)
            sizes.append(int(size_text))
        found = _params(rt, account, tokens)
        # One join per chunk: each request's bytes are copied once, into the piece.
        parts: list[bytes] = []
        for token, size, params in zip(tokens, sizes, found, strict=True):
            if params is None or len(params) + FRAMING != size:
                raise CorruptRequest(token.decode())
            parts += (opening, token, b'","params":', params, b"}")
            opening = b',{"custom_id":"'
        yield b"".join(parts)
        del parts, found


def _params(rt: Runtime, account: str, tokens: list[bytes]) -> list[bytes | None]:
    """The stored params of these requests, in order (None where a record has none)."""
    found = cast(list[bytes | None], rt.redis.hmget(rt.keys.params(account), tokens))
    missing = [i for i, params in enumerate(found) if params is None]
    if missing:
        # Records written before params had their own hash keep them in their field `p`.
        pipe = rt.redis.pipeline(transaction=False)
        for i in missing:
            pipe.hget(rt.keys.request(account, tokens[i].decode()), "p")
        for i, params in zip(missing, pipe.execute(), strict=True):
            found[i] = params
    return found


def find_created(rt: Runtime, account: str, state: dict[str, str]) -> MessageBatch | None:
    """After a crash or an unanswered create: the batch this assembly's intent made, if any.

    Lists the account's batches created since the intent (less the allowed clock skew) and
    picks the oldest one batchd does not know whose size matches the assembly.
    """
    intent = int(state.get("intent") or 0)
    if not intent:
        return None
    since = (intent - rt.settings.run.intent_skew * 1000) / 1000
    want = int(state.get("cnt") or 0)
    candidates: list[MessageBatch] = []
    for batch in rt.api(account).iter_batches(limit=100):
        if batch.created_at.timestamp() < since:
            break
        if batch.total != want:
            continue
        if rt.redis.sismember(rt.keys.known_batches(account), batch.id):
            continue
        candidates.append(batch)
    if not candidates:
        return None
    if len(candidates) > 1:
        log.warning(
            "several unknown batches could be this assembly's; taking the oldest",
            candidates=[b.id for b in candidates],
        )
    return min(candidates, key=lambda b: b.created_at)


def unsettled(rt: Runtime, account: str, asm: str, state: dict[str, str]) -> float:
    """Seconds left before a create whose outcome is unknown may be taken to have made nothing.

    The wait counts from when the outcome was first found unknown (an unanswered create, or a
    crash noticed later), so a batch the API creates late still shows before a second POST.
    """
    now = rt.now_ms()
    since = int(state.get("iunsure") or 0)
    if not since:
        rt.redis.hset(rt.keys.assembly(account, asm), "iunsure", now)
        since = now
    return max(0.0, rt.settings.run.create_settle - (now - since) / 1000)


def nudge_open_intent(rt: Runtime, account: str) -> None:
    """Another assembly's create is unresolved: make sure its stage runs soon to resolve it."""
    other = text(rt.redis.get(rt.keys.open_intent(account)))
    if other and not rt.redis.exists(rt.keys.assembly_lease(account, other)):
        rt.enqueue("submit", account, other)


def record(rt: Runtime, account: str, asm: str, batch: MessageBatch) -> str:
    first_poll = int(rt.settings.poll.min_interval * 1000)
    code, bid = rt.scripts.record(
        args=[rt.keys.tag(account), rt.keys.prefix, account, asm, batch.id, first_poll]
    )
    if int(code) < 0:
        log.error(
            "assembly already holds another batch",
            account=account,
            assembly=asm,
            batch_id=text(bid),
            other=batch.id,
        )
        return "conflict"
    log.info("batch recorded", account=account, assembly=asm, batch_id=batch.id)
    rt.enqueue("poll", account, asm, delay=jittered(rt.settings.poll.min_interval))
    return "submitted"


# -- poll ------------------------------------------------------------------------------------


def poll_interval(rt: Runtime, polls: int) -> float:
    p = rt.settings.poll
    return jittered(min(p.max_interval, p.min_interval * p.factor**polls), p.jitter)


def poll(rt: Runtime, account: str, asm: str, state: dict[str, str]) -> str:
    """Retrieve the batch; when it has ended, hand it to fan-out, else come back later."""
    bid = state["bid"]
    polls = int(state.get("polls") or 0)
    bound = log.bind(account=account, assembly=asm, batch_id=bid)
    try:
        batch = rt.api(account).retrieve(bid)
    except NotFoundError:
        bound.error("batch vanished from the API; its requests end errored")
        fail_all(rt, account, asm, bid, "not_found_error", "the batch vanished from the API")
        return "vanished"
    except APIError as exc:
        delay = exc.retry_after or poll_interval(rt, polls)
        bound.warning("poll failed; trying again", error=str(exc), retry_in=delay)
        rt.enqueue("poll", account, asm, delay=delay)
        return "retry"
    ak = rt.keys.assembly(account, asm)
    c = batch.request_counts
    if batch.processing_status != "ended":
        # The counts too, so `batchd status` shows progress without asking the API itself.
        rt.redis.hset(ak, mapping={"polls": polls + 1, "processing": c.processing,
                                   "succeeded": c.succeeded, "errored": c.errored,
                                   "canceled": c.canceled, "expired": c.expired})  # fmt: skip
        rt.enqueue("poll", account, asm, delay=poll_interval(rt, polls + 1))
        return batch.processing_status
    if batch.archived_at is not None:
        bound.error("batch results were archived before fan-out; its requests end errored")
        fail_all(rt, account, asm, bid, "results_archived", "the batch's results were archived")
        return "archived"
    rt.redis.hset(
        ak,
        mapping={
            "st": "ended",
            "succeeded": c.succeeded,
            "errored": c.errored,
            "canceled": c.canceled,
            "expired": c.expired,
        },
    )
    bound.info("batch ended", succeeded=c.succeeded, errored=c.errored, expired=c.expired)
    rt.enqueue("fanout", account, asm)
    return "ended"


# -- fan-out ---------------------------------------------------------------------------------


def classify(rt: Runtime, result: Any, operator_canceled: bool) -> str:
    """ok | err | retry | canceled | expired, by the retry policy."""
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
        return "retry" if policy.retry_expired else "expired"
    if kind == "canceled":
        return "retry" if policy.retry_canceled and not operator_canceled else "canceled"
    return "err"


def fanout(rt: Runtime, account: str, asm: str, state: dict[str, str], held: Lease) -> str:
    """Stream the results and apply each line in one atomic transition; resumable."""
    bid = state["bid"]
    bound = log.bind(account=account, assembly=asm, batch_id=bid)
    op_canceled = state.get("opcancel") == "1"
    head = [
        rt.keys.tag(account),
        rt.keys.prefix,
        account,
        asm,
        bid,
        int(rt.settings.retention * 1000),
        rt.settings.retry.max_attempts,
    ]
    totals = [0, 0, 0]
    unknown = 0
    applied_chunks = 0
    counting = threading.Lock()

    def apply(args: list[Any]) -> None:
        nonlocal applied_chunks
        out = rt.scripts.fanout(args=head + args)
        with counting:
            for i in range(3):
                totals[i] += int(out[i])
            applied_chunks += 1
            first = applied_chunks == 1
        if first:
            crash_point("mid_fanout")
        if held.lost.is_set():
            raise LostLease("assembly lease lost during fan-out")

    bad_lines = 0

    def unreadable(lineno: int, exc: APIError) -> None:
        # Reading the stream again would meet the same bytes: skip the line. Its request gets
        # no result from it, so it counts as missing and goes round again.
        nonlocal bad_lines
        bad_lines += 1
        if bad_lines <= BAD_LINES_LOGGED:
            bound.warning("unreadable results line skipped", line=lineno, error=str(exc))

    stream = rt.api(account).results(bid, on_bad_line=unreadable)
    try:
        # Chunks go to Redis from threads while the next lines are parsed; two at a time, so
        # Redis has one to run while the other is sent. Lines are independent transitions.
        with WriteBehind(apply, depth=FANOUT_DEPTH, workers=2) as applier:
            args: list[Any] = []
            # The first chunk is applied here, before any other is sent, so a crash right
            # after it (the `mid_fanout` crash point) leaves the rest unapplied.
            send: Callable[[list[Any]], None] = apply
            for line in stream:
                token = line.custom_id
                if len(token) != 26:
                    unknown += 1
                    continue
                cls = classify(rt, line.result, op_canceled)
                args += (token, cls, orjson.dumps(line.result))
                if len(args) >= FANOUT_CHUNK * 3:
                    send(args)
                    send, args = applier.put, []
            if args:
                send(args)
    except NotFoundError:
        bound.error("batch results are gone; its requests end errored")
        fail_all(rt, account, asm, bid, "not_found_error", "the batch's results are gone")
        return "vanished"
    except APIError as exc:
        bound.warning("results stream failed; fan-out resumes later", error=str(exc))
        rt.enqueue("fanout", account, asm, delay=jittered(exc.retry_after or 5.0))
        return "retry"
    finally:
        stream.close()  # release the connection at once, also when a LostLease interrupts
    if totals[0] + totals[1] == int(state.get("cnt") or -1):
        missing = 0  # every request of the assembly had its line applied by this run
    else:
        missing = sweep_assembly(
            rt, account, asm, "missing",
            _error_result("missing_result", "no line in the batch results"),
        )  # fmt: skip
    outcome = "canceled" if op_canceled else "completed"
    rt.scripts.close(
        args=[rt.keys.tag(account), asm, int(rt.settings.retention * 1000), rt.keys.prefix, outcome]
    )
    bound.info(
        "fan-out done",
        ended=totals[0],
        requeued=totals[1],
        ignored_lines=totals[2] + unknown,
        unreadable_lines=bad_lines,
        missing=missing,
    )
    return "done"


def _tokens(rt: Runtime, account: str, asm: str) -> Iterator[list[str]]:
    ek = rt.keys.assembly_entries(account, asm)
    start = 0
    while True:
        entries = rt.redis.lrange(ek, start, start + ENTRY_CHUNK - 1)
        if not entries:
            return
        start += len(entries)
        yield [text(e).split(" ", 1)[0] for e in entries]


def sweep_assembly(rt: Runtime, account: str, asm: str, script: str, result: bytes) -> int:
    """Send every request still in the assembly round again (or dead past the cap)."""
    bid = rt.redis.hget(rt.keys.assembly(account, asm), "bid")
    n = 0
    for tokens in _tokens(rt, account, asm):
        out = getattr(rt.scripts, script)(
            args=[
                rt.keys.tag(account),
                rt.keys.prefix,
                account,
                asm,
                text(bid),
                int(rt.settings.retention * 1000),
                rt.settings.retry.max_attempts,
                result,
                *tokens,
            ]
        )
        n += int(out[0]) + int(out[1])
    return n


def release_all(rt: Runtime, account: str, asm: str, result: bytes) -> None:
    """The API refused the batch: its requests go round again (or dead past the cap)."""
    sweep_assembly(rt, account, asm, "missing", result)
    rt.scripts.close(args=[rt.keys.tag(account), asm, int(rt.settings.retention * 1000)])


def reject_and_unclaim(rt: Runtime, account: str, asm: str, token: str | None) -> None:
    """End one corrupt request `rejected` and put the rest of a never-sent assembly back."""
    tag = rt.keys.tag(account)
    retention = int(rt.settings.retention * 1000)
    if token is not None:
        result = _error_result("rejected", "the request's stored record is missing or corrupted")
        rt.scripts.fail_all(
            args=[tag, rt.keys.prefix, account, asm, "", retention, "rejected", result, token]
        )
    for tokens in _tokens(rt, account, asm):
        rt.scripts.unclaim(args=[tag, rt.keys.prefix, asm, *tokens])
    rt.scripts.close(args=[tag, asm, retention])
    # They were due already: cut their lane again at once rather than after max_wait.
    priority = text(rt.redis.hget(rt.keys.assembly(account, asm), "pr")) or "0"
    rt.redis.sadd(rt.keys.flush(account), priority)


def fail_all(rt: Runtime, account: str, asm: str, bid: str, etype: str, message: str) -> None:
    """End every request still in the assembly `errored` (its batch's results cannot be had).

    They are not sent again: the batch may have been billed.
    """
    result = _error_result(etype, message)
    for tokens in _tokens(rt, account, asm):
        rt.scripts.fail_all(
            args=[
                rt.keys.tag(account),
                rt.keys.prefix,
                account,
                asm,
                bid,
                int(rt.settings.retention * 1000),
                "errored",
                result,
                *tokens,
            ]
        )
    outcome = "archived" if etype == "results_archived" else "vanished"
    retention = int(rt.settings.retention * 1000)
    rt.scripts.close(args=[rt.keys.tag(account), asm, retention, rt.keys.prefix, outcome])


def _error_result(etype: str, message: str) -> bytes:
    return orjson.dumps(
        {
            "type": "errored",
            "error": {"type": "error", "error": {"type": etype, "message": message}},
        }
    )


def request_account(rid: str) -> str:
    return split_request_id(rid)[0]
