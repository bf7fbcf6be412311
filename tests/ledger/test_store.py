"""The ledger's buckets as the fan-out writes them, and the reads over them: bounded, by range."""

from __future__ import annotations

from batchd.defaults import LEDGER_DAY_KEEP_MS, LEDGER_HOUR_KEEP_MS
from batchd.store import ledger as ledger_store
from batchd.store.ledger import DAY_MS, HOUR_MS, Usage
from tests.ledger import ACCOUNT, MODEL, Books, succeeded, usage

NOW = 20_000 * DAY_MS + 13 * HOUR_MS + 1234  # a fixed "now": 13:00 UTC on some day


def merged(books: Books, since_ms: int, until_ms: int) -> dict[tuple[str, str, str, str], Usage]:
    now = books.store.now_ms()
    entries = books.store.read(
        ledger_store.read(books.keys, [ACCOUNT, "team"], since_ms, until_ms, now)
    )
    return ledger_store.merge(entries)


def test_fanout_usage_is_summed_per_model_tag_and_lane(books: Books) -> None:
    """Every applied result line's usage is summed by model, tag and lane, requests counted."""
    books.submit(3, tag="nightly")
    asm = books.cut()
    books.fan_out(asm, lambda i: succeeded(usage(100 + i, 10, w5=5, r=7)))
    now = books.store.now_ms()
    assert merged(books, now - HOUR_MS, now + 1) == {
        (ACCOUNT, MODEL, "nightly", "0"): Usage(3, 303, 30, 15, 0, 21)
    }


def test_errored_lines_add_no_tokens(books: Books) -> None:
    """An errored line carries no usage: the ledger is not written for it."""
    books.submit(2)
    asm = books.cut()
    error = {"type": "errored", "error": {"type": "error", "error": {"type": "x", "message": "m"}}}
    books.fan_out(asm, lambda i: error, cls="err")
    now = books.store.now_ms()
    assert merged(books, now - HOUR_MS, now + 1) == {}


def test_a_line_applied_twice_counts_once(books: Books) -> None:
    """A resumed fan-out that sends the same lines again adds nothing: they are ignored."""
    books.submit(2)
    asm = books.cut()
    books.fan_out(asm, lambda i: succeeded(usage(50, 5)))
    again = books.fan_out(asm, lambda i: succeeded(usage(50, 5)))
    assert again.ignored == 2
    now = books.store.now_ms()
    assert merged(books, now - HOUR_MS, now + 1)[(ACCOUNT, MODEL, "", "0")] == Usage(2, 100, 10)


def test_buckets_expire_after_their_retention(books: Books) -> None:
    """Hour and day buckets carry an expiry: the ledger does not grow for ever."""
    books.submit(1)
    books.fan_out(books.cut(), lambda i: succeeded(usage()))
    now = books.store.now_ms()
    r = books.rt.redis
    hour_ttl = r.pttl(books.keys.ledger_hour(ACCOUNT, now // HOUR_MS))
    day_ttl = r.pttl(books.keys.ledger_day(ACCOUNT, now // DAY_MS))
    assert 0 < hour_ttl <= LEDGER_HOUR_KEEP_MS + HOUR_MS
    assert 0 < day_ttl <= LEDGER_DAY_KEEP_MS + DAY_MS


def test_plan_reads_hours_at_the_ends_and_days_between() -> None:
    """A range over several days reads hour buckets at its partial ends, day buckets between."""
    since, until = NOW - 2 * DAY_MS - 3 * HOUR_MS, NOW  # 10:00 two days ago to 13:00 today
    buckets = ledger_store.plan(since, until, NOW)
    days = [b.index for b in buckets if not b.hourly]
    hours = [b.index for b in buckets if b.hourly]
    assert days == [NOW // DAY_MS - 1]
    assert len(hours) == 14 + 14  # 10:00-23:59 two days ago, and 00:00-13:59 today
    assert sum(HOUR_MS if b.hourly else DAY_MS for b in buckets) == DAY_MS + 28 * HOUR_MS


def test_plan_is_bounded_whatever_the_range() -> None:
    """From the epoch to now the plan reads at most 48 hours and every retained day once."""
    buckets = ledger_store.plan(0, NOW, NOW)
    assert sum(b.hourly for b in buckets) <= 48
    assert sum(not b.hourly for b in buckets) <= LEDGER_DAY_KEEP_MS // DAY_MS + 2


def test_hours_past_their_retention_count_through_their_day() -> None:
    """A partial day older than the hour buckets' retention is read from its day bucket."""
    day = NOW // DAY_MS - 20
    buckets = ledger_store.plan(day * DAY_MS, day * DAY_MS + 5 * HOUR_MS, NOW)
    assert [(b.hourly, b.index) for b in buckets] == [(False, day)]


def test_a_foreign_field_in_a_bucket_is_ignored(books: Books) -> None:
    """Fields batchd did not write (or values that are no numbers) are left out of reads."""
    now = books.store.now_ms()
    key = books.keys.ledger_hour(ACCOUNT, now // HOUR_MS)
    books.rt.redis.hset(key, mapping={"junk": "1", f"{MODEL}|||in": "x", f"{MODEL}|||out": "4"})
    assert merged(books, now - HOUR_MS, now + 1) == {(ACCOUNT, MODEL, "", ""): Usage(output=4)}


def test_record_counts_a_realtime_call_in_its_own_lane(books: Books) -> None:
    """Usage recorded for a real-time call lands in lane `realtime`, whose mode is realtime."""
    now = books.store.now_ms()
    assert books.store.run(
        ledger_store.record(books.keys, ACCOUNT, MODEL, Usage(1, 40, 8), now, tag="chat")
    )
    [entry] = books.store.read(ledger_store.read(books.keys, [ACCOUNT], now - 1, now + 1, now))
    assert (entry.lane, entry.mode, entry.tag, entry.usage) == (
        "realtime",
        "realtime",
        "chat",
        Usage(1, 40, 8),
    )


def test_record_with_an_id_counts_once(books: Books) -> None:
    """A real-time record repeated with the same id (a retry) is counted once."""
    now = books.store.now_ms()
    first = ledger_store.record(books.keys, ACCOUNT, MODEL, Usage(1, 40, 8), now, once="msg_1")
    assert books.store.run(first) is True
    assert books.store.run(first) is False
    assert merged(books, now - 1, now + 1)[(ACCOUNT, MODEL, "", "realtime")] == Usage(1, 40, 8)


def test_fold_adds_each_final_day_once(books: Books) -> None:
    """Folding the same days twice (two replicas, a retry) adds each day to the total once."""
    now = books.store.now_ms()
    today = now // DAY_MS
    for d in (3, 4, 5):
        when = (today - d) * DAY_MS + HOUR_MS
        books.store.run(ledger_store.record(books.keys, ACCOUNT, MODEL, Usage(1, d, 1), when))
    days = ledger_store.days_to_fold(None, now)
    for _ in range(2):
        books.store.run_all(ledger_store.fold(books.keys, ACCOUNT, days))
    folded = books.store.read(ledger_store.folded(books.keys, [ACCOUNT]))
    assert folded == {ACCOUNT: today - 2}
    total = books.store.read(ledger_store.totals(books.keys, [ACCOUNT], folded, now))
    assert ledger_store.merge(total) == {(ACCOUNT, MODEL, "", "realtime"): Usage(3, 12, 3)}


def test_totals_add_the_days_not_folded_yet(books: Books) -> None:
    """The all-time total counts today's usage too, before its day is final."""
    now = books.store.now_ms()
    books.store.run(ledger_store.record(books.keys, ACCOUNT, MODEL, Usage(1, 9, 1), now))
    books.store.run_all(
        ledger_store.fold(books.keys, ACCOUNT, ledger_store.days_to_fold(None, now))
    )
    folded = books.store.read(ledger_store.folded(books.keys, [ACCOUNT]))
    total = books.store.read(ledger_store.totals(books.keys, [ACCOUNT], folded, now))
    assert ledger_store.merge(total) == {(ACCOUNT, MODEL, "", "realtime"): Usage(1, 9, 1)}


def test_usage_from_the_api_splits_cache_writes_by_their_lifetime() -> None:
    """A real-time Message's usage reads as the fan-out counts a batch result's."""
    u = ledger_store.usage_from_api(usage(100, 7, w5=30, w1=20, r=11))
    assert u == Usage(1, 100, 7, 30, 20, 11)
    assert ledger_store.usage_from_api(None) == Usage()
