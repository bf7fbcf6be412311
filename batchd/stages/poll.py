"""The poll stage: retrieve the batch; when it has ended, hand it to fan-out, else come back.

A 404 for a batch batchd created is taken as possibly transient (the real API answers some):
polling goes on with backoff, cross-checked with the account's list, for `poll.not_found_grace`
seconds before the batch is taken as gone, its requests ended `errored` and never sent again
(it may have been billed).
"""

from __future__ import annotations

from batchd.api import MessageBatch
from batchd.errors import APIError, NotFoundError
from batchd.logs import get_logger
from batchd.runtime import Runtime, jittered
from batchd.stages.ending import fail_all
from batchd.store import AssemblyRecord
from batchd.store import assemblies as asm_store

log = get_logger("batchd.stages.poll")


def interval(rt: Runtime, polls: int) -> float:
    p = rt.settings.poll
    return jittered(min(p.max_interval, p.min_interval * p.factor**polls), p.jitter)


def run(rt: Runtime, a: AssemblyRecord) -> str:
    """Retrieve the batch once and act on what it says."""
    bid = a.batch_id or ""
    bound = log.bind(account=a.account, assembly=a.id, batch_id=bid)
    try:
        batch = rt.api(a.account).retrieve(bid)
    except NotFoundError:
        return not_found(rt, a, "retrieve")
    except APIError as exc:
        delay = exc.retry_after or interval(rt, a.polls)
        bound.warning("poll failed; trying again", error=str(exc), retry_in=delay)
        rt.enqueue("poll", a.account, a.id, delay=delay)
        return "retry"
    return seen(rt, a, batch)


def seen(rt: Runtime, a: AssemblyRecord, batch: MessageBatch) -> str:
    """What a retrieve (or a list) said of the batch: still processing, or ended."""
    bound = log.bind(account=a.account, assembly=a.id, batch_id=batch.id)
    if a.not_found_since_ms:
        bound.info("batch answered again after a 404")
        rt.store.read(asm_store.found_again(rt.keys, a.account, a.id))
    c = batch.request_counts
    counts = {
        "processing": c.processing,
        "succeeded": c.succeeded,
        "errored": c.errored,
        "canceled": c.canceled,
        "expired": c.expired,
    }
    if batch.processing_status != "ended":
        # The counts too, so `batchd status` shows progress without asking the API itself.
        rt.store.read(asm_store.progress(rt.keys, a.account, a.id, a.polls + 1, counts))
        rt.enqueue("poll", a.account, a.id, delay=interval(rt, a.polls + 1))
        return batch.processing_status
    if batch.archived_at is not None:
        bound.error("batch results were archived before fan-out; its requests end errored")
        fail_all(rt, a, "results_archived", "the batch's results were archived")
        return "archived"
    rt.store.read(asm_store.ended(rt.keys, a.account, a.id, counts, batch.results_url, rt.now_ms()))
    bound.info("batch ended", succeeded=c.succeeded, errored=c.errored, expired=c.expired)
    rt.enqueue("fanout", a.account, a.id)
    return "ended"


def listed(rt: Runtime, a: AssemblyRecord) -> MessageBatch | None:
    """The batch as the account's list shows it, looking back to its creation (less the allowed
    clock offset); None when the list does not show it."""
    since_ms = (a.submitted_ms or a.intent_ms or 0) - int(rt.settings.run.intent_skew * 1000)
    for batch in rt.api(a.account).iter_batches(limit=100):
        if batch.id == a.batch_id:
            return batch
        if batch.created_at.timestamp() * 1000 < since_ms:
            return None
    return None


def not_found(rt: Runtime, a: AssemblyRecord, what: str) -> str:
    """A 404 for a batch batchd created: keep looking for a while before calling it gone."""
    bound = log.bind(account=a.account, assembly=a.id, batch_id=a.batch_id)
    now = rt.now_ms()
    since = rt.store.read(asm_store.not_found_since(rt.keys, a.account, a.id, now))
    try:
        shown = listed(rt, a)
    except APIError as exc:
        bound.warning("cannot list batches to check a 404", error=str(exc))
        shown = None
    grace = rt.settings.poll.not_found_grace
    stage = "poll" if what == "retrieve" else "fanout"
    delay = interval(rt, max(1, a.polls))
    if shown is not None:
        bound.warning(f"{what} answered 404 but the list shows the batch; trying again")
        rt.enqueue(stage, a.account, a.id, delay=delay)
        return "transient 404"
    if (now - since) / 1000 < grace:
        bound.warning(
            f"{what} answered 404; trying again before calling the batch gone",
            for_s=round((now - since) / 1000, 1),
            grace_s=grace,
        )
        rt.enqueue(stage, a.account, a.id, delay=min(delay, max(1.0, grace / 10)))
        return "404, still looking"
    if what == "retrieve":
        bound.error("batch vanished from the API; its requests end errored")
        fail_all(rt, a, "not_found_error", "the batch vanished from the API")
    else:
        bound.error("batch results are gone; its requests end errored")
        fail_all(rt, a, "not_found_error", "the batch's results are gone")
    return "vanished"
