"""Following batches in flight until they end: by listing, and the poll stage as a fallback.

Every `poll.list_interval` seconds one replica lists each account's batches (newest first, a
page of up to LIST_PAGE covers every batch in flight), so API calls per minute depend on the
account, not on how many batches it has in flight; what the list shows ends or progresses
those batches, and pushes their own poll out. The poll stage retrieves one batch on its own,
when the list has not shown it (list lag, a batch older than the pages read, listing off).

A 404 for a batch batchd created is taken as possibly transient (the real API answers some):
polling goes on with backoff, cross-checked with the account's list, for `poll.not_found_grace`
seconds before the batch is taken as gone, its requests ended `errored` and never sent again
(it may have been billed).
"""

from __future__ import annotations

from batchd.api import MessageBatch
from batchd.errors import APIError, NotFoundError, RateLimitError
from batchd.logs import get_logger
from batchd.runtime import Runtime, jittered
from batchd.stages.ending import fail_all
from batchd.store import AssemblyRecord, AssemblyState, locks
from batchd.store import assemblies as asm_store

log = get_logger("batchd.stages.poll")

#: Batches one list call asks for (the API's largest page): one call covers them all.
LIST_PAGE = 1000
#: Pages one listing reads at most, newest first.
LIST_PAGES = 3


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


def seen(rt: Runtime, a: AssemblyRecord, batch: MessageBatch, *, listed: bool = False) -> str:
    """What a retrieve (or a list) said of the batch: still processing, or ended. A batch the
    list follows has its own poll pushed out to the fallback interval."""
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
        if listed:
            rt.enqueue("poll", a.account, a.id, delay=fallback(rt))
        else:
            rt.enqueue("poll", a.account, a.id, delay=interval(rt, a.polls + 1))
        return batch.processing_status
    if batch.archived_at is not None:
        bound.error("batch results were archived before fan-out; its requests end errored")
        fail_all(rt, a, "results_archived", "the batch's results were archived")
        return "archived"
    now = rt.now_ms()
    # How long it took from its cut, for deadline plans: not a batch canceled before its end.
    start = a.sealed_ms or a.created_ms
    took = None if a.operator_canceled or a.deadline_canceled_ms or not start else now - start
    rt.store.read(asm_store.ended(rt.keys, a.account, a.id, counts, batch.results_url, now, took))
    bound.info("batch ended", succeeded=c.succeeded, errored=c.errored, expired=c.expired)
    rt.enqueue("fanout", a.account, a.id)
    return "ended"


def fallback(rt: Runtime) -> float:
    """When a batch the list follows gets its own retrieve anyway (should the list stop)."""
    p = rt.settings.poll
    return jittered(max(p.max_interval, 4 * p.list_interval), p.jitter)


def first_poll(rt: Runtime) -> float:
    """When a new batch gets its first retrieve of its own: the list shows it before then."""
    p = rt.settings.poll
    if p.list_interval <= 0:
        return jittered(p.min_interval)
    return jittered(max(p.min_interval, 3 * p.list_interval))


def list_accounts(rt: Runtime) -> int:
    """One turn of the lister over every account; how many batches it saw end."""
    interval = rt.settings.poll.list_interval
    if interval <= 0:
        return 0
    ended = 0
    for account in rt.settings.accounts:
        if not rt.store.read(asm_store.take_list_turn(rt.keys, account, int(interval * 1000))):
            continue  # listed less than an interval ago, here or by another replica
        try:
            ended += list_account(rt, account)
        except RateLimitError as exc:
            # Hold every replica's listing of this account for as long as the API asks.
            wait = max(interval, exc.retry_after or interval)
            rt.store.read(asm_store.take_list_turn(rt.keys, account, int(wait * 1000)))
            log.warning("listing batches rate limited", account=account, retry_in=wait)
        except APIError as exc:
            log.warning("listing batches failed; batches are polled on their own", error=str(exc))
    return ended


def list_account(rt: Runtime, account: str) -> int:
    """List the account's batches and act on what the list says of each one in flight."""
    asms = rt.store.read(asm_store.live(rt.keys, account))
    flying = [
        a
        for a in rt.store.read(asm_store.read_many(rt.keys, [(account, x) for x in asms]))
        if a.state is AssemblyState.SUBMITTED and a.batch_id
    ]
    if not flying:
        return 0  # nothing in flight: no API call at all
    by_batch = {a.batch_id: a for a in flying}
    oldest_ms = min((a.submitted_ms or 0) for a in flying) - rt.settings.run.intent_skew * 1000
    ended = 0
    pages = 0
    after: str | None = None
    api = rt.api(account)
    while by_batch and pages < LIST_PAGES:
        page = api.list(after_id=after, limit=LIST_PAGE)
        pages += 1
        for batch in page.data:
            a = by_batch.pop(batch.id, None)
            if a is not None and follow(rt, a, batch) == "ended":
                ended += 1
        last = page.data[-1].created_at.timestamp() * 1000 if page.data else 0
        if not page.has_more or not page.data or last < oldest_ms:
            break
        after = page.last_id
    return ended


def follow(rt: Runtime, a: AssemblyRecord, batch: MessageBatch) -> str:
    """Act on what the list shows of one batch in flight, under its assembly's lease (a short
    one: this is quick); a stage running on it now is left to finish."""
    key = asm_store.lease_key(rt.keys, a.account, a.id)
    token = f"{rt.identity}:list"
    if not rt.store.read(locks.acquire(key, token, int(rt.settings.run.lease * 1000))):
        return "busy"
    try:
        fresh = rt.store.read(asm_store.read(rt.keys, a.account, a.id))
        if fresh is None or fresh.state is not AssemblyState.SUBMITTED:
            return "moved on"
        return seen(rt, fresh, batch, listed=True)
    finally:
        rt.store.run(locks.release(key, token))


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
