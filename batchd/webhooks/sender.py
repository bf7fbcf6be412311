"""The webhook sender: drains the outbox with signed POSTs, many in flight on kept-alive sockets.

One loop claims due deliveries (leased in Redis), one task per delivery sends it, and the loop
writes every outcome back in batches; a crash loses nothing, since a lease that is never settled
makes its delivery due again.
"""

from __future__ import annotations

import asyncio
import collections
import email.utils
import itertools
import math
import os
import random
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver

from batchd.errors import BatchdError, BlockedAddressError
from batchd.logs import get_logger
from batchd.settings import Settings
from batchd.store import Durability, Keys, connect_async
from batchd.webhooks.outbox import AsyncOutbox, Delivery, Lease, Outcome, Settle
from batchd.webhooks.signing import Signer
from batchd.webhooks.urls import AddressPolicy, host_allowed, url_host

#: How many deliveries one claim takes at most (one Lua call, one reply carrying their bodies).
CLAIM_BATCH = 500
#: Idle polling backs off from MIN_IDLE to MAX_IDLE seconds, and resets once work appears.
MIN_IDLE = 0.05
MAX_IDLE = 0.5
#: Slack added to a lease beyond the longest an attempt may take (queueing included).
LEASE_MARGIN = 10.0
#: A host with this many times `per_host` deliveries queued here gets no more until some end;
#: the extra ones go back to the outbox, so one slow receiver cannot take every slot.
HOST_BACKLOG_FACTOR = 2
#: When a delivery handed back for a saturated host is due again, milliseconds.
HOST_BACKOFF_MS = 1000
#: A host that answers fast may have more queued here: what it takes within HOST_BACKOFF_MS at
#: its recent pace (all `per_host` connections busy), so handing its surplus back never leaves
#: it idle while the surplus waits; never more than this.
HOST_QUEUE_MAX = 4096
#: Weight of the newest attempt in a host's running mean of attempt time.
LATENCY_WEIGHT = 0.05
#: Hosts whose attempt time is remembered, at most (beyond it the memory starts again).
HOST_MEMORY = 10_000
#: Retry-After is honoured up to the schedule's longest delay, and never less than this.
RETRY_AFTER_FLOOR_CAP = 60.0
#: How much of a receiver's error answer is kept in `last_error`.
ERROR_SNIPPET = 200
#: How long to wait for a Redis that does not answer before trying again.
REDIS_BACKOFF = 1.0
USER_AGENT = "batchd-webhooks/1"

OnResult = Callable[[str, float], None]


@dataclass(frozen=True)
class _Answer:
    """What one POST came to, before it is turned into an outcome."""

    status: int | None = None
    retry_after: str | None = None
    error: str = ""
    final: bool = False  # no point in trying again (blocked address, unusable URL)


def default_lease(timeout: float) -> float:
    """Seconds a claimed delivery stays leased: a queued wait plus the attempt, plus slack."""
    return HOST_BACKLOG_FACTOR * timeout + LEASE_MARGIN


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or HTTP date); None if unusable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - now)


class WebhookSender:
    """Sends the outbox's deliveries of every configured account until told to stop."""

    def __init__(
        self,
        settings: Settings,
        redis_url: str,
        *,
        lease: float | None = None,
        on_result: OnResult | None = None,
        resolver: AbstractResolver | None = None,
    ) -> None:
        self.settings = settings
        self.webhooks = settings.webhooks
        self.redis_url = redis_url
        self.keys = Keys(settings.prefix)
        # Both raise ConfigError now, not at the first delivery.
        self.signer = Signer(self.webhooks)
        self.policy = AddressPolicy(self.webhooks.allow_networks)
        self.lease = lease if lease is not None else default_lease(self.webhooks.timeout)
        self.on_result = on_result
        self.counters: collections.Counter[str] = collections.Counter()
        self.log = get_logger("batchd.webhooks")
        self._resolver = resolver
        self._name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._claims = itertools.count()
        schedule = self.webhooks.schedule
        self._retry_after_cap = max(RETRY_AFTER_FLOOR_CAP, max(schedule))
        # State of one run; reset by `run`.
        self._tasks: set[asyncio.Task[None]] = set()
        self._settled: list[Settle] = []
        self._abandoned: list[Delivery] = []
        self._host_load: dict[str, int] = {}
        self._host_slots: dict[str, asyncio.Semaphore] = {}
        self._host_latency: dict[str, float] = {}
        self._wake = asyncio.Event()
        # Redis's clock minus this host's (s): webhook timestamps are Redis's time, so a replica
        # with a wrong clock still signs what a receiver with a true one accepts.
        self._offset = 0.0

    def now(self) -> float:
        """Redis's clock (s), as last measured against this host's."""
        return time.time() + self._offset

    # -- lifecycle ------------------------------------------------------------------------------

    def run_in_thread(self, stop: threading.Event) -> None:
        """Run on a loop of its own until `stop` is set (the daemon calls this in a thread)."""
        asyncio.run(self._run_until_set(stop))

    async def _run_until_set(self, stop: threading.Event) -> None:
        stopping = asyncio.Event()

        async def watch() -> None:
            while not stop.is_set():
                await asyncio.sleep(MIN_IDLE)
            stopping.set()

        watcher = asyncio.create_task(watch())
        try:
            await self.run(stopping)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def run(self, stop: asyncio.Event) -> None:
        """Send deliveries until `stop` is set, then let those in flight finish (or hand back)."""
        if not self.webhooks.enabled:
            self.log.info("webhooks.disabled")
            return
        if not self.signer.has_default:
            self.log.warning(
                "webhooks.unsigned",
                detail="no webhooks.secret configured: deliveries outside the configured "
                "endpoints are sent without a webhook-signature header",
            )
        self._tasks, self._settled, self._abandoned = set(), [], []
        self._host_load, self._host_slots = {}, {}
        self._wake = asyncio.Event()
        client = connect_async(self.redis_url)
        r = self.settings.redis
        durability = Durability(r.wait_replicas, int(r.wait_timeout * 1000))
        outbox = AsyncOutbox(client, self.keys, self.settings.retention, durability)
        checked, trusted = self._sessions()
        self.log.info(
            "webhooks.started",
            sender=self._name,
            concurrency=self.webhooks.concurrency,
            per_host=self.webhooks.per_host,
            lease=self.lease,
        )
        try:
            await self._loop(stop, outbox, checked, trusted)
        finally:
            try:
                await self._drain(outbox)
            finally:
                await checked.close()
                await trusted.close()
                await client.aclose()
            self.log.info("webhooks.stopped", sender=self._name, **dict(self.counters))

    def _sessions(self) -> tuple[aiohttp.ClientSession, aiohttp.ClientSession]:
        """A session whose every socket is checked, and one for the operator's trusted hosts."""

        def session(checked: bool) -> aiohttp.ClientSession:
            connector = aiohttp.TCPConnector(
                limit=self.webhooks.concurrency,
                limit_per_host=self.webhooks.per_host,
                resolver=self._resolver,
                socket_factory=self.policy.socket_factory if checked else None,
            )
            return aiohttp.ClientSession(
                connector=connector,
                # The whole-attempt deadline is asyncio.timeout in _post; these bound each phase.
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=self.webhooks.timeout, sock_read=self.webhooks.timeout
                ),
                # Answers are read raw and only a bounded prefix is kept: no decompression bombs.
                auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),
                trust_env=False,  # a proxy from the environment would bypass the address checks
                headers={"user-agent": USER_AGENT},
                skip_auto_headers=("accept-encoding",),
            )

        return session(True), session(False)

    async def _drain(self, outbox: AsyncOutbox) -> None:
        """Give deliveries in flight one attempt's time, then write back whatever is known."""
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=self.webhooks.timeout + 1.0)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        try:
            await self._flush(outbox)
            # Cancelled attempts go back due now instead of waiting for their lease to run out.
            abandoned, self._abandoned = self._abandoned, []
            await outbox.release(abandoned, 0)
        except BatchdError as exc:
            self.log.warning("webhooks.redis_error", error=str(exc), during="shutdown")

    # -- the loop -------------------------------------------------------------------------------

    async def _loop(
        self,
        stop: asyncio.Event,
        outbox: AsyncOutbox,
        checked: aiohttp.ClientSession,
        trusted: aiohttp.ClientSession,
    ) -> None:
        accounts = list(self.settings.accounts)
        lease_ms = int(self.lease * 1000)
        idle = MIN_IDLE
        turn = 0
        while not stop.is_set():
            self._wake.clear()
            moved = 0  # deliveries started or handed back this round
            saturated = False
            next_due: int | None = None
            try:
                await self._flush(outbox)
                # Accounts take turns going first, so none is starved by another's backlog.
                turn = (turn + 1) % len(accounts)
                for account in accounts[turn:] + accounts[:turn]:
                    free = self.webhooks.concurrency - len(self._tasks)
                    if free <= 0:
                        saturated = True
                        break
                    limit = min(free, CLAIM_BATCH)
                    claim_id = f"{self._name}:{next(self._claims)}"
                    claimed = await outbox.claim(account, limit, lease_ms, claim_id)
                    self._offset = claimed.now_ms / 1000 - time.time()
                    for s in claimed.stopped:
                        self.log.warning(
                            "webhook.gone",
                            request_id=s.request_id,
                            host=url_host(s.url),
                            detail="endpoint answered 410 Gone earlier; not sent",
                        )
                        self._count("gone", 0.0)
                    start, backlog = self._admit(claimed.leases)
                    if backlog:
                        await outbox.release(backlog, HOST_BACKOFF_MS)
                    for d in await outbox.load(start):
                        self._start(d, checked, trusted)
                    moved += len(claimed.leases)
                    saturated |= len(claimed.leases) == limit
                    if claimed.next_due_ms is not None:
                        next_due = min(next_due or claimed.next_due_ms, claimed.next_due_ms)
            except BatchdError as exc:
                self.log.warning("webhooks.redis_error", error=str(exc))
                await self._sleep(stop, REDIS_BACKOFF)
                continue
            if saturated and moved and len(self._tasks) < self.webhooks.concurrency:
                continue  # more is due right now and there is room for it
            idle = MIN_IDLE if moved else min(idle * 2, MAX_IDLE)
            wait = idle
            if next_due is not None:
                wait = min(wait, max(0.0, next_due / 1000 - self.now()))
            await self._sleep(stop, wait)

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        """Sleep until `seconds` pass, `stop` is set, or a delivery ends (its result is waiting)."""
        if stop.is_set() or self._wake.is_set():
            return
        waiters = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(self._wake.wait())]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)

    async def _flush(self, outbox: AsyncOutbox) -> None:
        if not self._settled:
            return
        settled, self._settled = self._settled, []
        try:
            answers = await outbox.settle(settled)
        except BatchdError:
            # Keep them for the next round; if this process dies first, the leases run out.
            self._settled = settled + self._settled
            raise
        for result, answer in zip(settled, answers, strict=True):
            if answer == 0 and result.outcome != "delivered":
                self.log.info(
                    "webhook.lease_lost",
                    request_id=result.delivery.request_id,
                    webhook_id=result.delivery.webhook_id,
                    detail="another sender took this delivery over; its outcome stands",
                )

    def _admit(self, leases: list[Lease]) -> tuple[list[Lease], list[Lease]]:
        """Split claimed deliveries into those to send now and those whose host is backed up."""
        load = dict(self._host_load)
        start: list[Lease] = []
        backlog: list[Lease] = []
        for lease in leases:
            host = url_host(lease.url)
            if load.get(host, 0) >= self._host_cap(host):
                backlog.append(lease)
            else:
                load[host] = load.get(host, 0) + 1
                start.append(lease)
        return start, backlog

    def _host_cap(self, host: str) -> int:
        """How many of a host's deliveries may be queued here (sending or waiting for a slot)."""
        per_host = self.webhooks.per_host
        cap = HOST_BACKLOG_FACTOR * per_host
        latency = self._host_latency.get(host)
        if latency:
            pace = per_host / latency  # deliveries per second with every connection busy
            cap = max(cap, min(int(pace * HOST_BACKOFF_MS / 1000), HOST_QUEUE_MAX))
        return cap

    def _note_latency(self, host: str, seconds: float) -> None:
        mean = self._host_latency.get(host)
        if mean is None and len(self._host_latency) >= HOST_MEMORY:
            self._host_latency.clear()
        self._host_latency[host] = (
            seconds if mean is None else mean + LATENCY_WEIGHT * (seconds - mean)
        )

    def _start(
        self, d: Delivery, checked: aiohttp.ClientSession, trusted: aiohttp.ClientSession
    ) -> None:
        host = url_host(d.url)
        self._host_load[host] = self._host_load.get(host, 0) + 1
        session = trusted if host_allowed(host, self.webhooks.allow_hosts) else checked
        task = asyncio.create_task(self._deliver(d, host, session))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one delivery -----------------------------------------------------------------------

    async def _deliver(self, d: Delivery, host: str, session: aiohttp.ClientSession) -> None:
        slots = self._host_slots.get(host)
        if slots is None:
            slots = self._host_slots[host] = asyncio.Semaphore(self.webhooks.per_host)
        try:
            async with slots:
                started = time.monotonic()
                try:
                    answer = await self._post(d, session)
                except Exception as exc:  # every claimed delivery must be settled, whatever broke
                    self.log.exception("webhook.send_failed", request_id=d.request_id)
                    answer = _Answer(error=f"{type(exc).__name__}: {exc}")
                elapsed = time.monotonic() - started
                self._note_latency(host, elapsed)
        except asyncio.CancelledError:
            self._abandoned.append(d)
            raise
        finally:
            left = self._host_load[host] - 1
            if left:
                self._host_load[host] = left
            else:
                del self._host_load[host]
                self._host_slots.pop(host, None)
        result = self._judge(d, answer)
        self._settled.append(result)
        self._wake.set()
        self._report(d, host, answer, result)
        self._count(result.outcome, elapsed)

    async def _post(self, d: Delivery, session: aiohttp.ClientSession) -> _Answer:
        timestamp = int(self.now())
        headers = {
            "content-type": "application/json",
            "webhook-id": d.webhook_id,
            "webhook-timestamp": str(timestamp),
        }
        sig = self.signer.sign(d.url, d.webhook_id, timestamp, d.body)
        if sig is not None:
            headers["webhook-signature"] = sig
        timeout = self.webhooks.timeout
        try:
            async with (
                asyncio.timeout(timeout),
                session.post(d.url, data=d.body, headers=headers, allow_redirects=False) as resp,
            ):
                status = resp.status
                answer = await _read_prefix(resp, self.webhooks.max_response_bytes)
                if 200 <= status < 300:
                    return _Answer(status=status)
                return _Answer(
                    status=status,
                    retry_after=resp.headers.get("retry-after"),
                    error=_describe_status(status, resp.headers.get("location"), answer),
                )
        except BlockedAddressError as exc:
            return _Answer(error=str(exc), final=True)
        except TimeoutError:
            return _Answer(error=f"no complete answer within {timeout:g}s")
        except aiohttp.InvalidURL as exc:
            return _Answer(error=f"unusable URL: {exc}", final=True)
        except aiohttp.ClientConnectorError as exc:
            return _Answer(error=f"connection failed: {exc.os_error}")
        except (aiohttp.ClientError, OSError) as exc:
            return _Answer(error=f"{type(exc).__name__}: {exc}")

    def _judge(self, d: Delivery, answer: _Answer) -> Settle:
        """Turn an answer into an outcome: delivered, gone, retry (with its due time) or dead."""
        now = self.now()
        status = answer.status
        if status is not None and 200 <= status < 300:
            return Settle(d, "delivered", status=status)
        if status == 410:
            return Settle(d, "gone", status=status, error=answer.error)
        attempts = d.attempts + 1
        schedule = self.webhooks.schedule
        if answer.final or attempts >= len(schedule):
            return Settle(d, "dead", status=status, error=answer.error)
        delay = schedule[attempts]
        jitter = self.webhooks.jitter
        if jitter and delay:
            delay *= 1 + random.uniform(-jitter, jitter)
        if status in (429, 503):
            asked = parse_retry_after(answer.retry_after, now)
            if asked is not None:
                delay = min(asked, self._retry_after_cap)
        return Settle(
            d, "retry", status=status, error=answer.error, delay_ms=math.ceil(delay * 1000)
        )

    def _report(self, d: Delivery, host: str, answer: _Answer, result: Settle) -> None:
        if result.outcome == "delivered":
            return
        log = self.log.bind(
            request_id=d.request_id,
            webhook_id=d.webhook_id,
            host=host,
            attempt=d.attempts + 1,
            status=answer.status,
            error=answer.error,
        )
        if result.outcome == "retry":
            assert result.delay_ms is not None
            log.info("webhook.retry", retry_in=round(result.delay_ms / 1000, 3))
        elif result.outcome == "gone":
            log.warning(
                "webhook.gone",
                detail="endpoint answered 410 Gone: this and later deliveries to the URL stop "
                "until `batchd webhooks retry`",
            )
        else:
            log.warning("webhook.dead", detail="no more attempts; see `batchd webhooks dead`")

    def _count(self, outcome: Outcome, seconds: float) -> None:
        self.counters[outcome] += 1
        if self.on_result is not None:
            try:
                self.on_result(outcome, seconds)
            except Exception as exc:  # a metrics hook must never stop deliveries
                self.log.warning("webhooks.on_result_failed", error=repr(exc))


async def _read_prefix(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """Read at most `limit` bytes of the answer; if more follows, drop the connection instead."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await resp.content.read(min(65536, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    if not resp.content.at_eof():
        resp.close()
    return b"".join(chunks)


def _describe_status(status: int, location: str | None, body: bytes) -> str:
    text = f"HTTP {status}"
    if 300 <= status < 400:
        text += " (redirects are not followed)"
        if location:
            text += f" to {url_host(location) or location[:100]}"
    snippet = body[:ERROR_SNIPPET].decode("utf-8", "replace").strip()
    if snippet:
        text += f": {' '.join(snippet.split())}"
    return text
