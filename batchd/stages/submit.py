"""The submit stage: create the assembly's batch exactly once (design.md, "the one hard step").

Batch creation is serialised per account under a lock with a fencing token; the intent is
written (and has reached the replicas) before the POST; the body's closing bytes go out only
after re-checking the lock. After a crash or an unanswered POST, the account's batches are listed
and the one matching the intent is adopted; only when none shows within `run.create_settle`
is the assembly sent again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from batchd.api import MessageBatch
from batchd.defaults import CREATE_LOCK_POLL, CREATE_LOCK_WAIT, ENTRY_CHUNK, PAUSE_SECONDS
from batchd.errors import (
    APIError,
    APIRequestTooLargeError,
    AuthenticationError,
    BadRequestError,
    BillingError,
    BodyLengthError,
    CorruptRequest,
    DurabilityError,
    LostLease,
    PermissionDeniedError,
    RateLimitError,
)
from batchd.logs import get_logger
from batchd.overlap import ReadAhead
from batchd.runtime import Lease, Runtime, crash_point, jittered, lease
from batchd.stages.ending import error_result, reject_and_unclaim, release_all
from batchd.stages.poll import first_poll
from batchd.store import AssemblyRecord
from batchd.store import assemblies as asm_store
from batchd.store import lanes as lane_store
from batchd.store.records import LaneId
from batchd.store.scripts import text
from batchd.validate import FRAMING

log = get_logger("batchd.stages.submit")


def run(rt: Runtime, a: AssemblyRecord, asm_lease: Lease) -> str:
    """Create the assembly's batch, or adopt the one a crashed attempt created."""
    account, asm = a.account, a.id
    bound = log.bind(account=account, assembly=asm)
    paused = rt.store.read(lane_store.paused_ms(rt.keys, account))
    if paused > 0:
        rt.enqueue("submit", account, asm, delay=paused / 1000 + 1)
        return "paused"
    # Creates of one account go one at a time. One takes a fraction of a second, so a worker
    # that finds the lock taken waits here a little rather than come back a second later.
    until = time.monotonic() + CREATE_LOCK_WAIT
    while True:
        fence = str(rt.store.read(asm_store.next_fence(rt.keys, account)))
        with lease(rt, asm_store.create_lock_key(rt.keys, account), token=fence) as lock:
            if lock is not None:
                return locked(rt, a, lock, bound)
        if time.monotonic() >= until or asm_lease.lost.is_set():
            rt.enqueue("submit", account, asm, delay=jittered(1.0, 0.5))
            return "waiting for the create lock"
        time.sleep(CREATE_LOCK_POLL)


def locked(rt: Runtime, a: AssemblyRecord, lock: Lease, bound: Any) -> str:
    """The submit stage under the account's create lock."""
    account, asm = a.account, a.id
    state = rt.store.read(asm_store.read(rt.keys, account, asm))
    if state is None:
        return "gone"
    if state.batch_id:
        rt.enqueue("poll", account, asm)
        return "already submitted"
    if state.intent_ms and not state.posted_ms:
        # The process that wrote this intent stopped before its POST sent a byte: no batch
        # can exist, so a new intent goes ahead at once.
        bound.info("an earlier create stopped before its POST; creating now")
    elif state.intent_ms:
        adopted = adopt(rt, state, bound, "adopted a batch created before a crash")
        if adopted is not None:
            return adopted
        left = unsettled(rt, state)
        if left > 0:
            rt.enqueue("submit", account, asm, delay=left)
            return "waiting to be sure the last create made nothing"
    seen_open = rt.store.read(asm_store.open_intent(rt.keys, account))
    try:
        written = rt.store.durable(asm_store.intent(rt.keys, account, asm, lock.token, seen_open))
    except DurabilityError as exc:
        # The intent may not survive a failover: never POST on it. Withdraw and retry.
        rt.store.run(asm_store.clear_intent(rt.keys, account, asm, lock.token))
        bound.warning("submission intent not on the replicas yet; holding", error=str(exc))
        rt.enqueue("submit", account, asm, delay=jittered(2.0))
        return "intent not durable"
    if written == 0:
        rt.enqueue("submit", account, asm, delay=1)
        return "lost the create lock"
    if written == -2:
        rt.enqueue("submit", account, asm, delay=jittered(0.2, 0.5))
        return "open intent moved"
    if written < 0:
        nudge_open_intent(rt, account)
        rt.enqueue("submit", account, asm, delay=jittered(1.0, 0.5))
        return "waiting for an earlier create to be resolved"
    crash_point("after_intent")
    return create(rt, state, lock)


def create(rt: Runtime, a: AssemblyRecord, lock: Lease) -> str:
    """POST the batch (the intent is written) and record its id; every failure is sorted into
    created-nothing (withdraw the intent), maybe-created (look in the list), or refused."""
    account, asm = a.account, a.id
    bound = log.bind(account=account, assembly=asm)
    betas = lane_betas(rt, account, a.lane)
    try:
        posted = rt.store.durable(asm_store.posting(rt.keys, account, asm, lock.token))
    except DurabilityError as exc:
        rt.store.run(asm_store.clear_intent(rt.keys, account, asm, lock.token))
        bound.warning("posting mark not on the replicas yet; holding", error=str(exc))
        rt.enqueue("submit", account, asm, delay=jittered(2.0))
        return "posting not durable"
    if not posted:
        rt.enqueue("submit", account, asm, delay=1)
        return "lost the create lock"
    crash_point("before_post")
    try:
        batch = rt.api(account).create(
            body_chunks(rt, a, lock), a.content_length, retries=False, betas=betas
        )
    except LostLease:
        bound.warning("create lock lost mid-upload; upload aborted before its end")
        return "lost the create lock"
    except RateLimitError as exc:
        rt.store.run(asm_store.clear_intent(rt.keys, account, asm, lock.token))
        delay = exc.retry_after or 30.0
        bound.warning("batch creation rate limited; holding the assembly", retry_in=delay)
        rt.enqueue("submit", account, asm, delay=jittered(delay))
        return "rate limited"
    except (AuthenticationError, PermissionDeniedError, BillingError) as exc:
        rt.store.run(asm_store.clear_intent(rt.keys, account, asm, lock.token))
        rt.store.read(lane_store.pause(rt.keys, account, str(exc), int(PAUSE_SECONDS * 1000)))
        bound.error(
            "account paused: the API refused its key; requests are kept",
            status=exc.status,
            error=exc.message,
        )
        rt.enqueue("submit", account, asm, delay=PAUSE_SECONDS + 1)
        return "paused"
    except (BadRequestError, APIRequestTooLargeError) as exc:
        rt.store.run(asm_store.clear_intent(rt.keys, account, asm, lock.token))
        bound.error("the API refused the batch; its requests go round again", error=str(exc))
        release_all(rt, a, error_result(exc.error_type or "api_error", str(exc)))
        return "refused"
    except (CorruptRequest, BodyLengthError) as exc:
        # The upload was aborted before its end, so no batch exists. The bad request ends
        # `rejected`; the others go back to their lane untouched.
        rt.store.run(asm_store.clear_intent(rt.keys, account, asm, lock.token))
        token = exc.token if isinstance(exc, CorruptRequest) else None
        bound.error("cannot build the batch body", error=str(exc), bad_request=token)
        reject_and_unclaim(rt, a, token)
        return "corrupt request"
    except APIError as exc:
        # No answer, a 5xx, or garbage: the batch may exist. Look before trying again.
        bound.warning("batch creation ended without an answer; checking the list", error=str(exc))
        state = rt.store.read(asm_store.read(rt.keys, account, asm)) or a
        adopted = adopt(rt, state, bound, "adopted the batch a create without an answer made")
        if adopted is not None:
            return adopted
        # The API may finish a create after the connection broke, and its list may lag: the
        # intent stays, and the batch is sent again only if a list `create_settle` seconds on
        # finds nothing.
        rt.store.read(asm_store.mark_unsure(rt.keys, account, asm, rt.now_ms()))
        settle = rt.settings.run.create_settle
        rt.enqueue("submit", account, asm, delay=jittered(max(settle, exc.retry_after or 1.0)))
        return "retry"
    crash_point("after_create")
    if batch.total != a.count:
        bound.error("created batch has an unexpected size", expected=a.count, got=batch.total)
    return record(rt, a, batch)


def lane_betas(rt: Runtime, account: str, lane: str) -> tuple[str, ...]:
    """The betas a lane's batches are created with."""
    parsed = LaneId.parse(lane)
    if parsed is None or not parsed.beta_id:
        return ()
    return rt.store.read(lane_store.betas_of(rt.keys, account, parsed.beta_id))


def body_chunks(rt: Runtime, a: AssemblyRecord, lock: Lease) -> Iterator[bytes]:
    """The batch body, streamed from Redis a chunk of entries at a time.

    The closing bytes are sent only after checking that the create lock is still ours, so a
    process that lost it (paused past its lease) aborts with the body incomplete.
    """
    yield b'{"requests":['
    # The next chunk is read from Redis while this one goes out on the socket.
    with ReadAhead(_body_pieces(rt, a.account, a.id)) as pieces:
        for piece in pieces:
            yield piece
            if lock.lost.is_set():
                raise LostLease("create lock lost")
    if not lock.held():
        raise LostLease("create lock lost")
    yield b"]}"


def _body_pieces(rt: Runtime, account: str, asm: str) -> Iterator[bytes]:
    """The body's requests, joined by commas, one chunk of entries per piece."""
    opening = b'{"custom_id":"'  # the first request has no comma before it
    start = 0
    while True:
        entries = rt.store.read(asm_store.entries(rt.keys, account, asm, start, ENTRY_CHUNK))
        if not entries:
            return
        start += len(entries)
        tokens: list[bytes] = []
        sizes: list[int] = []
        for e in entries:
            token, size_text, _ = e.split(b" ", 2)
            tokens.append(token)
            sizes.append(int(size_text))
        found = rt.store.read(asm_store.params_of(rt.keys, account, [t.decode() for t in tokens]))
        # One join per chunk: each request's bytes are copied once, into the piece.
        parts: list[bytes] = []
        for token, size, params in zip(tokens, sizes, found, strict=True):
            if params is None or len(params) + FRAMING != size:
                raise CorruptRequest(token.decode())
            parts += (opening, token, b'","params":', params, b"}")
            opening = b',{"custom_id":"'
        yield b"".join(parts)
        del parts, found


def adopt(rt: Runtime, a: AssemblyRecord, bound: Any, adopted: str) -> str | None:
    """Look in the account's list for the batch the assembly's intent made, and record it
    (logging `adopted`); None when the list shows none. When the list cannot be read, the stage
    comes back later: a create is never sent again on a guess."""
    try:
        found = find_created(rt, a)
    except APIError as exc:
        bound.warning("cannot list batches yet", error=str(exc))
        rt.enqueue("submit", a.account, a.id, delay=jittered(5.0))
        return "unresolved"
    if found is None:
        return None
    bound.warning(adopted, batch_id=found.id)
    return record(rt, a, found)


def find_created(rt: Runtime, a: AssemblyRecord) -> MessageBatch | None:
    """After a crash or an unanswered create: the batch this assembly's intent made, if any.

    Lists the account's batches created since the intent (less the allowed clock offset
    between Redis's clock and the API's) and picks the oldest one batchd does not know whose
    size matches the assembly.
    """
    if not a.intent_ms:
        return None
    since = (a.intent_ms - rt.settings.run.intent_skew * 1000) / 1000
    candidates: list[MessageBatch] = []
    page: list[MessageBatch] = []

    def judge(batches: list[MessageBatch]) -> None:
        sized = [b for b in batches if b.total == a.count]
        if not sized:
            return
        known = rt.store.read(asm_store.known_batches(rt.keys, a.account, [b.id for b in sized]))
        candidates.extend(b for b, k in zip(sized, known, strict=True) if not k)

    for batch in rt.api(a.account).iter_batches(limit=100):
        if batch.created_at.timestamp() < since:
            break
        page.append(batch)
        if len(page) >= 100:
            judge(page)
            page = []
    judge(page)
    if not candidates:
        return None
    if len(candidates) > 1:
        log.warning(
            "several unknown batches could be this assembly's; taking the oldest",
            candidates=[b.id for b in candidates],
        )
    return min(candidates, key=lambda b: b.created_at)


def unsettled(rt: Runtime, a: AssemblyRecord) -> float:
    """Seconds left before a create whose outcome is unknown may be taken to have made nothing.

    The wait counts from when the outcome was first found unknown (an unanswered create, or a
    crash noticed later), so a batch the API creates late, or lists late, still shows before a
    second POST.
    """
    now = rt.now_ms()
    since = a.unsure_since_ms
    if not since:
        rt.store.read(asm_store.mark_unsure(rt.keys, a.account, a.id, now))
        since = now
    return max(0.0, rt.settings.run.create_settle - (now - since) / 1000)


def nudge_open_intent(rt: Runtime, account: str) -> None:
    """Another assembly's create is unresolved: make sure its stage runs soon to resolve it."""
    other = rt.store.read(asm_store.open_intent(rt.keys, account))
    if other and not rt.store.read(asm_store.leased(rt.keys, account, [other]))[0]:
        rt.enqueue("submit", account, other)


def record(rt: Runtime, a: AssemblyRecord, batch: MessageBatch) -> str:
    """Record the batch id (and that it reached the replicas); then poll it."""
    first_check = int(rt.settings.poll.min_interval * 1000)
    call = asm_store.record(
        rt.keys,
        a.account,
        a.id,
        batch.id,
        first_poll_ms=first_check,
        retention_ms=int(rt.settings.retention * 1000),
        results_url=batch.results_url,
    )
    try:
        out = rt.store.durable(call)
    except DurabilityError as exc:
        # Written on the master, not confirmed on the replicas: a failover could lose it. The
        # submit stage runs again: it finds the id (recorded), or adopts the batch from the list.
        log.warning(
            "batch id not on the replicas yet; checking again",
            account=a.account,
            assembly=a.id,
            batch_id=batch.id,
            error=str(exc),
        )
        rt.enqueue("submit", a.account, a.id, delay=jittered(2.0))
        return "record not durable"
    if out.code < 0:
        log.error(
            "assembly already holds another batch",
            account=a.account,
            assembly=a.id,
            batch_id=text(out.batch_id),
            other=batch.id,
        )
        return "conflict"
    log.info("batch recorded", account=a.account, assembly=a.id, batch_id=batch.id)
    rt.enqueue("poll", a.account, a.id, delay=first_poll(rt))
    return "submitted"
