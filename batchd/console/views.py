"""What each page of the console shows, read through the store, the snapshot and the client, as
plain data (the JSON the pages render). Times are epoch ms of Redis's clock; `now_ms` comes with
every view, so a page computes ages by the clock that stamped them.

Nothing here shows a secret: callback URLs lose their user information and query values, and
no setting but account names leaves the process.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import orjson
from rq.worker import BaseWorker, Worker

from batchd import aggregate
from batchd.client import Client
from batchd.observe import snapshot, throughput
from batchd.observe.health import Liveness
from batchd.observe.snapshot import AssemblyView, LaneState, Snapshot
from batchd.runtime import STAGES, Runtime
from batchd.settings import Settings
from batchd.store import AssemblyRecord, split_request_id
from batchd.store import assemblies as asm_store
from batchd.store import counters as counter_store
from batchd.store import lanes as lane_store
from batchd.store import requests as req_store
from batchd.store import webhooks as wh_store
from batchd.store.keys import is_token
from batchd.store.records import REQUEST_COUNTS, LaneId, RequestRecord
from batchd.store.requests import DeadLetter
from batchd.webhooks import outbox
from batchd.webhooks.outbox import DeliveryRecord

from .costs import cost_by_hour
from .history import History

#: Minutes of throughput the overview charts (Redis keeps KEEP_MINUTES of snapshots).
THROUGHPUT_MINUTES = 60
#: Minutes over which new dead letters raise the "dead letters growing" alert.
DEAD_WINDOW_MINUTES = 10
#: Seconds a lane's oldest request may wait past its window before it is an alert (a cut
#: takes a tick or two, a batch a moment to be claimed).
LANE_GRACE = 15.0
#: Rows a list page shows at most per page.
MAX_PAGE = 500
#: Dead letters read to count them by error type (for the filter).
DEAD_SUMMARY = 1000
#: Webhook dead deliveries listed at most.
MAX_DELIVERIES = 500
#: Bytes of a request's params the request page shows at most.
MAX_PARAMS_BYTES = 64 * 1024
#: Recent batches (closed ones included) read per account for the batches page.
RECENT_BATCHES = 200

_URL_IN_TEXT = re.compile(r"\bhttps?://[^\s\"'<>]+")


def safe_url(url: str | None) -> str | None:
    """A URL as the console shows it: no user information, no query values (either may hold a
    credential: `https://user:pass@host/hook?token=...`)."""
    if not url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unreadable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = "&".join(f"{k}=***" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def safe_text(text: str) -> str:
    """Free text (an error message) with every URL in it made safe."""
    return _URL_IN_TEXT.sub(lambda m: safe_url(m.group(0)) or "", text)


def _json_or_text(raw: bytes | None, limit: int = MAX_PARAMS_BYTES) -> Any:
    if raw is None:
        return None
    if len(raw) > limit:
        return {
            "truncated": True,
            "bytes": len(raw),
            "head": raw[:limit].decode("utf-8", "replace"),
        }
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw.decode("utf-8", "replace")


def batchd_batch_id(record: AssemblyRecord) -> str:
    """batchd's own name of a batch: `<account>.<assembly>`."""
    return f"{record.account}.{record.id}"


def batch_json(record: AssemblyRecord, now_ms: int) -> dict[str, Any]:
    since = record.submitted_ms or record.created_ms
    return {
        "id": batchd_batch_id(record),
        "account": record.account,
        "assembly": record.id,
        "lane": record.lane,
        "state": record.state.value if record.state is not None else "unknown",
        "batch_id": record.batch_id,
        "requests": record.count,
        "bytes": record.content_length or record.bytes,
        "counts": {k: record.counts.get(k, 0) for k in REQUEST_COUNTS},
        "polled": bool(record.counts),
        "finished": record.finished,
        "in_flight": record.in_flight,
        "polls": record.polls,
        "age_s": max(0.0, (now_ms - since) / 1000) if since else None,
        "operator_canceled": record.operator_canceled,
        "timeline": _timeline(record),
    }


def _timeline(r: AssemblyRecord) -> list[dict[str, Any]]:
    steps = [
        ("created", r.created_ms, "the first request was claimed into it"),
        ("sealed", r.sealed_ms, "its body was fixed"),
        ("intent", r.intent_ms, "its batch was being created at the API"),
        ("unsure", r.unsure_since_ms, "the create's outcome was not known yet"),
        ("submitted", r.submitted_ms, "its batch was created; polled since"),
        ("not found", r.not_found_since_ms, "the API answered 404 for it"),
        ("ended", r.ended_ms, "the batch ended at the API; results being applied"),
        ("closed", r.closed_ms, "every request ended or went round again"),
    ]
    return [{"step": s, "at_ms": at, "meaning": m} for s, at, m in steps if at]


def letter_json(x: DeadLetter) -> dict[str, Any]:
    etype, message = x.error
    return {
        "id": x.id,
        "account": x.account,
        "died_ms": x.died_ms,
        "attempts": x.attempts,
        "error": {"type": etype, "message": safe_text(message)},
        "lane": x.lane,
        "requeueable": x.requeueable,
    }


def delivery_json(d: DeliveryRecord) -> dict[str, Any]:
    return {
        "account": d.account,
        "request_id": d.request_id,
        "webhook_id": d.webhook_id,
        "url": safe_url(d.url),
        "state": d.state,
        "attempts": d.attempts,
        "last_status": d.last_status,
        "last_error": safe_text(d.last_error) or None,
        "created_ms": d.created_ms,
        "last_attempt_ms": d.last_ms,
        "ended_ms": d.ended_ms,
        "next_ms": d.next_ms,
    }


def _page(items: Sequence[Any], offset: int, limit: int) -> tuple[list[Any], dict[str, int]]:
    limit = max(1, min(limit, MAX_PAGE))
    offset = max(0, offset)
    return list(items[offset : offset + limit]), {
        "offset": offset,
        "limit": limit,
        "total": len(items),
    }


class Views:
    """The console's reads; every method is synchronous (the server runs them in threads)."""

    def __init__(
        self,
        settings: Settings,
        rt: Runtime,
        history: History,
        liveness: Liveness | None = None,
        identity: str | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity
        self.rt = rt
        self.store = rt.store
        self.keys = rt.keys
        self.client = Client(settings=settings, connection=rt.redis)
        self.history = history
        self.liveness = liveness
        self.accounts = list(settings.accounts)
        self._betas: dict[tuple[str, str], tuple[str, ...]] = {}

    # -- shared reads ------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        snap = snapshot.read(self.store, self.accounts)
        self.history.add(snap)
        return snap

    def sample(self) -> None:
        """Take one sample for the charts, if one is due (the sampler calls this)."""
        if self.history.due(self.store.now_ms()):
            self.snapshot()

    def _workers(self) -> list[BaseWorker]:
        if self.rt.rq_redis is None:
            return []
        mine = set(self.rt.queue_names())
        found: list[BaseWorker] = []
        for w in Worker.all(connection=self.rt.rq_redis):
            if mine & set(w.queue_names()):
                found.append(w)
        return found

    def _window(self, lane: str) -> float:
        return aggregate.window(self.rt, lane)

    def _lane_json(self, ln: LaneState, paused: dict[str, str]) -> dict[str, Any]:
        parsed = LaneId.parse(ln.lane)
        window = self._window(ln.lane)
        overdue = (
            ln.pending > 0 and ln.oldest_age_s is not None and ln.oldest_age_s > window + LANE_GRACE
        )
        return {
            "account": ln.account,
            "lane": ln.lane,
            "priority": ln.priority,
            "interactive": parsed.interactive if parsed else False,
            "beta_id": parsed.beta_id if parsed else "",
            "pending": ln.pending,
            "bytes": ln.bytes,
            "oldest_age_s": ln.oldest_age_s,
            "window_s": window,
            "overdue": overdue,
            "paused": ln.account in paused,
        }

    # -- overview ----------------------------------------------------------------------------

    def overview(self) -> dict[str, Any]:
        snap = self.snapshot()
        now = snap.now_ms
        minutes = throughput.recent(
            self.store, self.accounts, now, snap.counters, minutes=THROUGHPUT_MINUTES
        )
        workers = len(self._workers())
        lanes = [self._lane_json(ln, snap.paused) for ln in snap.lanes]
        in_flight = [a for a in snap.assemblies if a.in_flight]
        return {
            "now_ms": now,
            "alerts": self._alerts(snap, lanes, workers),
            "totals": {
                "daemons": len(snap.processes),
                "stage_workers": workers,
                "lanes": sum(1 for ln in lanes if ln["pending"] > 0),
                "pending": sum(ln["pending"] for ln in lanes),
                "batches_in_flight": len(in_flight),
                "batches_in_making": len(snap.assemblies) - len(in_flight),
                "requests_in_flight": sum(a.requests for a in in_flight),
                "dead": sum(snap.dead.values()),
                "webhooks_queued": sum(snap.webhooks_queued.values()),
                "webhooks_dead": sum(snap.webhooks_dead.values()),
                "paused": len(snap.paused),
                "submitted": snap.counter("submitted"),
                "ended": sum(v for k, v in snap.counters.items() if k.startswith("ended:")),
            },
            "throughput": [
                {"minute_ms": m.minute * 60_000, "partial": m.partial, **m.counts} for m in minutes
            ],
            "charts": self.history.charts(),
            "busiest_lanes": sorted(lanes, key=lambda ln: (-ln["pending"], ln["lane"]))[:10],
            "cost": cost_by_hour(self.store, self.settings, now),
        }

    def _alerts(
        self, snap: Snapshot, lanes: list[dict[str, Any]], workers: int
    ) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        if not snap.processes:
            alerts.append(
                {
                    "level": "error",
                    "kind": "no_daemon",
                    "title": "No batchd daemon is alive",
                    "detail": "no `batchd run` has sent a heartbeat lately: requests are kept "
                    "but nothing batches them",
                    "page": "daemons",
                }
            )
        pending = sum(ln["pending"] for ln in lanes)
        if workers == 0 and (pending or snap.assemblies):
            alerts.append(
                {
                    "level": "error",
                    "kind": "no_workers",
                    "title": "No stage worker is alive",
                    "detail": "batches are neither created, polled nor applied until a "
                    "`batchd run` with the worker role runs",
                    "page": "daemons",
                }
            )
        for account, why in sorted(snap.paused.items()):
            alerts.append(
                {
                    "level": "error",
                    "kind": "paused",
                    "title": f"Account {account} is paused",
                    "detail": safe_text(why) or "its API key was refused",
                    "page": "paused",
                    "account": account,
                }
            )
        died = self._recent_deaths(snap)
        if died > 0:
            alerts.append(
                {
                    "level": "warning",
                    "kind": "dead_growing",
                    "title": f"Dead letters growing: {died} in the last {DEAD_WINDOW_MINUTES} min",
                    "detail": f"{sum(snap.dead.values())} dead letters in all",
                    "page": "dead",
                }
            )
        late = [ln for ln in lanes if ln["overdue"] and not ln["paused"]]
        for ln in late[:5]:
            alerts.append(
                {
                    "level": "warning",
                    "kind": "lane_late",
                    "title": f"Lane {ln['account']}/{ln['lane']} is older than its window",
                    "detail": f"oldest request waited {ln['oldest_age_s']:.0f} s; its window is "
                    f"{ln['window_s']:g} s",
                    "page": "lanes",
                }
            )
        if len(late) > 5:
            alerts.append(
                {
                    "level": "warning",
                    "kind": "lane_late",
                    "title": f"{len(late) - 5} more lanes are older than their window",
                    "detail": "",
                    "page": "lanes",
                }
            )
        dead_hooks = sum(snap.webhooks_dead.values())
        if dead_hooks:
            alerts.append(
                {
                    "level": "warning",
                    "kind": "webhooks_dead",
                    "title": f"{dead_hooks} webhook deliveries gave up",
                    "detail": "retry them once the receiver is back",
                    "page": "webhooks",
                }
            )
        return alerts

    def _recent_deaths(self, snap: Snapshot) -> int:
        """Requests that ended dead in the last DEAD_WINDOW_MINUTES, by the minute snapshots
        of the counters (requeues do not hide them); the console's samples before those exist."""
        now_minute = snap.now_ms // 60_000
        per_minute = self.store.read(counter_store.minutes(self.keys, self.accounts))
        window = [m for m in per_minute if now_minute - DEAD_WINDOW_MINUTES <= m <= now_minute]
        if window:
            start = per_minute[min(window)].get("ended:dead", 0)
            return max(0, snap.counter("ended:dead") - start)
        since = snap.now_ms - DEAD_WINDOW_MINUTES * 60_000
        old = [s.dead for s in self.history.samples() if s.at_ms >= since]
        return max(0, sum(snap.dead.values()) - old[0]) if old else 0

    # -- lanes -------------------------------------------------------------------------------

    def _betas_of(self, account: str, beta_id: str) -> tuple[str, ...]:
        if not beta_id:
            return ()
        found = self._betas.get((account, beta_id))
        if found is None:
            found = self.store.read(lane_store.betas_of(self.keys, account, beta_id))
            self._betas[(account, beta_id)] = found
        return found

    def lanes(self) -> dict[str, Any]:
        snap = self.snapshot()
        out = []
        for ln in snap.lanes:
            row = self._lane_json(ln, snap.paused)
            row["betas"] = list(self._betas_of(ln.account, row["beta_id"]))
            out.append(row)
        return {"now_ms": snap.now_ms, "lanes": out, "paused": sorted(snap.paused)}

    # -- batches -----------------------------------------------------------------------------

    def batches(
        self, state: str = "live", account: str | None = None, offset: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        snap = self.snapshot()
        now = snap.now_ms
        records: dict[tuple[str, str], AssemblyRecord] = {
            (a.account, a.assembly): a.record for a in snap.assemblies
        }
        if state == "all":
            for acct in self.accounts:
                ids = self.store.read(asm_store.recent_batches(self.keys, acct, RECENT_BATCHES))
                missing = [(acct, a) for a in ids if (acct, a) not in records]
                if missing:
                    for r in self.store.read(asm_store.read_many(self.keys, missing)):
                        records[(r.account, r.id)] = r
        rows = [r for r in records.values() if account is None or r.account == account]
        if state == "in_flight":
            rows = [r for r in rows if r.in_flight]
        rows.sort(key=lambda r: (-(r.submitted_ms or r.created_ms or 0), r.id))
        page, paging = _page(rows, offset, limit)
        in_flight = [a for a in snap.assemblies if a.in_flight]
        return {
            "now_ms": now,
            "batches": [batch_json(r, now) for r in page],
            "page": paging,
            "summary": _summary(snap.assemblies, in_flight),
        }

    def batch(self, ref: str, offset: int = 0, limit: int = 100) -> dict[str, Any] | None:
        record = self.client.batch(ref)
        if record is None:
            return None
        now = self.store.now_ms()
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        entries = self.store.read(
            asm_store.entries(self.keys, record.account, record.id, offset, limit)
        )
        ids = [
            f"{record.account}.{e.split(b' ', 1)[0].decode('utf-8', 'replace')}" for e in entries
        ]
        ids = [i for i in ids if is_token(i.partition(".")[2])]
        states = self.store.read(req_store.read_many(self.keys, ids)) if ids else []
        requests = [
            {
                "id": rid,
                "status": str(r.status) if r is not None else "unknown",
                "attempts": r.attempts if r is not None else None,
            }
            for rid, r in zip(ids, states, strict=True)
        ]
        out: dict[str, Any] = {
            "now_ms": now,
            "batch": batch_json(record, now),
            "requests": requests,
            "page": {"offset": offset, "limit": limit, "total": record.count},
        }
        if not requests and record.closed_ms:
            out["note"] = (
                "the batch has closed: batchd keeps the list of a batch's requests only while it "
                "is in the making or in flight (its results at the API still name them)"
            )
        return out

    # -- requests ----------------------------------------------------------------------------

    def request(self, rid: str) -> dict[str, Any] | None:
        try:
            account, token = split_request_id(rid.strip())
        except ValueError:
            return None
        if account not in self.settings.accounts:
            return None
        try:
            record = self.store.read(req_store.read(self.keys, account, token))
        except Exception:  # foreign data under the request's key: nothing batchd can show
            return None
        if record is None:
            return None
        now = self.store.now_ms()
        return {"now_ms": now, "request": self._request_json(record)}

    def _request_json(self, record: RequestRecord) -> dict[str, Any]:
        account, token = record.account, record.token
        envelope = _json_or_text(record.envelope) if record.envelope is not None else None
        env = envelope if isinstance(envelope, dict) else {}
        batch: dict[str, Any] | None = None
        if record.assembly:
            asm = self.store.read(asm_store.read(self.keys, account, record.assembly))
            if asm is not None:
                batch = {
                    "id": batchd_batch_id(asm),
                    "batch_id": asm.batch_id,
                    "state": asm.state.value if asm.state else "unknown",
                }
        batch_id = env.get("batch_id") or (batch or {}).get("batch_id")
        if batch is None and isinstance(batch_id, str):
            where = self.store.read(asm_store.find_batch(self.keys, [account], batch_id))
            if where is not None:
                batch = {"id": f"{where[0]}.{where[1]}", "batch_id": batch_id, "state": None}
        [params] = self.store.read(asm_store.params_of(self.keys, account, [token]))
        delivery = outbox.read_delivery(self.store, account, token)
        letter: dict[str, Any] | None = None
        if str(record.status) == "dead":
            [x] = self.store.read(req_store.read_letters(self.keys, [(record.id, 0)]))
            letter = {"lane": x.lane, "attempts": x.attempts, "requeueable": x.requeueable}
        return {
            "id": record.id,
            "account": account,
            "status": str(record.status),
            "terminal": record.terminal,
            "attempts": record.attempts,
            "lane": record.lane,
            "key": record.key if record.key is not None else env.get("key"),
            "tag": record.tag,
            "reply_to": record.reply_to,
            "callback_url": safe_url(record.callback_url),
            "metadata": record.metadata if record.metadata is not None else env.get("metadata"),
            "submitted_ms": record.submitted_ms,
            "submitted_at": env.get("submitted_at"),
            "ended_at": env.get("ended_at"),
            "enqueued_ms": record.enqueued_ms,
            "deadline_ms": record.deadline_ms,
            "last_error": record.last_error,
            "batch": batch,
            "batch_id": batch_id,
            "envelope": envelope,
            "params": _json_or_text(params),
            "webhook": delivery_json(delivery) if delivery is not None else None,
            "dead_letter": letter,
        }

    def find(self, query: str, account: str | None = None) -> dict[str, Any]:
        """What a search names: a request by id or idempotency key, or a batch by the API's id
        or batchd's; `{kind: request|batch, id}` or `{kind: none}`."""
        q = query.strip()
        if not q:
            return {"kind": "none", "query": q}
        try:
            acct, token = split_request_id(q)
        except ValueError:
            acct = token = ""
        if acct in self.settings.accounts and is_token(token):
            if self.request(q) is not None:
                return {"kind": "request", "id": q}
        for a in [account] if account else self.accounts:
            if a not in self.settings.accounts:
                continue
            rid = self.store.read(req_store.find_by_key(self.keys, a, q))
            if rid is not None:
                return {"kind": "request", "id": rid, "via": "key", "account": a}
        record = self.client.batch(q)
        if record is not None:
            return {"kind": "batch", "id": batchd_batch_id(record)}
        return {"kind": "none", "query": q}

    # -- dead letters ------------------------------------------------------------------------

    def dead(
        self,
        account: str | None = None,
        error_type: str | None = None,
        offset: int = 0,
        limit: int = 100,
    ) -> dict[str, Any]:
        now = self.store.now_ms()
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        letters = self.client.dead(
            account=account, error_type=error_type, offset=offset, limit=limit
        )
        counts = {a: self.store.read(req_store.dead_count(self.keys, a)) for a in self.accounts}
        by_type: dict[str, int] = {}
        for x in self.client.dead(account=account, limit=DEAD_SUMMARY):
            by_type[x.error_type] = by_type.get(x.error_type, 0) + 1
        total = sum(counts.values()) if account is None else counts.get(account, 0)
        return {
            "now_ms": now,
            "letters": [letter_json(x) for x in letters],
            "counts": counts,
            "error_types": dict(sorted(by_type.items(), key=lambda kv: -kv[1])),
            "error_types_of": min(total, DEAD_SUMMARY),
            "page": {"offset": offset, "limit": limit, "total": total},
            "filtered": error_type is not None,
        }

    # -- webhooks ----------------------------------------------------------------------------

    def webhooks(self) -> dict[str, Any]:
        now = self.store.now_ms()
        dead = outbox.list_dead(self.store, self.accounts, MAX_DELIVERIES)
        gone = outbox.gone_endpoints(self.store, self.accounts)
        counts = self.store.read(wh_store.counts(self.keys, self.accounts))
        return {
            "now_ms": now,
            "deliveries": [delivery_json(d) for d in dead],
            "gone": [{"account": a, "url": safe_url(u), "at_ms": at} for a, u, at in gone],
            "queued": {a: q for a, (q, _) in counts.items()},
            "dead": {a: d for a, (_, d) in counts.items()},
        }

    # -- paused accounts ---------------------------------------------------------------------

    def paused(self) -> dict[str, Any]:
        now = self.store.now_ms()
        reasons = self.store.read(lane_store.paused_reasons(self.keys, self.accounts))
        out = []
        for account in self.accounts:
            if account in reasons:
                left = self.store.read(lane_store.paused_ms(self.keys, account))
                out.append(
                    {
                        "account": account,
                        "reason": safe_text(reasons[account]),
                        "resumes_in_s": left / 1000,
                    }
                )
        return {"now_ms": now, "paused": out, "accounts": self.accounts}

    # -- daemons and workers -----------------------------------------------------------------

    def daemons(self) -> dict[str, Any]:
        now = self.store.now_ms()
        alive = self.store.read(counter_store.alive(self.keys, now))
        workers = []
        for w in self._workers():
            job = w.get_current_job_id()
            beat = w.last_heartbeat
            born = w.birth_date
            workers.append(
                {
                    "name": w.name,
                    "hostname": w.hostname,
                    "pid": w.pid,
                    "state": str(w.get_state()),
                    "current_job": job,
                    "queues": w.queue_names(),
                    "successful_jobs": w.successful_job_count,
                    "failed_jobs": w.failed_job_count,
                    "last_heartbeat_ms": int(beat.timestamp() * 1000) if beat else None,
                    "born_ms": int(born.timestamp() * 1000) if born else None,
                }
            )
        queued = {}
        if self.rt.rq_redis is not None:
            queued = {s: self.rt.queue(s).count for s in STAGES}
        here = self.liveness.problems() if self.liveness is not None else []
        return {
            "now_ms": now,
            "daemons": [{"identity": i, "last_seen_s": age} for i, age in alive],
            "workers": sorted(workers, key=lambda w: str(w["name"])),
            "stage_jobs_queued": queued,
            "this_process": {"identity": self.identity, "problems": here},
        }


def _summary(assemblies: list[AssemblyView], in_flight: list[AssemblyView]) -> dict[str, Any]:
    states: dict[str, int] = {}
    for a in assemblies:
        states[a.state] = states.get(a.state, 0) + 1
    return {
        "live": len(assemblies),
        "in_flight": len(in_flight),
        "states": states,
        "requests_in_flight": sum(a.requests for a in in_flight),
        "finished_in_flight": sum(a.finished for a in in_flight),
    }
