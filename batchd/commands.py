"""The operator's subcommands: run, demo, submit, status, batches, requests, flush.

Each command loads settings (flags > environment > TOML > defaults), does one thing, and exits
0 on success, 1 on a runtime failure, 2 on bad usage or input, 3 when something is not found.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from batchd.errors import (
    EXIT_NOT_FOUND,
    EXIT_USAGE,
    BatchdError,
    ConfigError,
    RequestNotFoundError,
    SubmitError,
)
from batchd.logs import configure


def load_settings(args: argparse.Namespace, **extra: Any) -> Any:
    from batchd.settings import Settings

    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "redis_url", None):
        overrides["redis_url"] = args.redis_url
    log: dict[str, Any] = {}
    if getattr(args, "log_level", None):
        log["level"] = args.log_level
    if getattr(args, "log_format", None):
        log["format"] = args.log_format
    settings = Settings.load(getattr(args, "config", None), **overrides)
    if log:
        settings = settings.model_copy(update={"log": settings.log.model_copy(update=log)})
    return settings


def _child_args(args: argparse.Namespace) -> list[str]:
    out: list[str] = []
    for flag, attr in (("--config", "config"), ("--log-level", "log_level"),
                       ("--log-format", "log_format")):  # fmt: skip
        value = getattr(args, attr, None)
        if value:
            out += [flag, str(value)]
    return out


def _need_redis(settings: Any) -> Any:
    if not settings.redis_url:
        raise ConfigError(
            "this command needs the daemon's Redis: set --redis-url or BATCHD_REDIS_URL",
            ["redis_url: unset"],
        )
    return settings


# -- run / worker ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from batchd import daemon

    run_overrides: dict[str, Any] = {}
    if args.roles:
        run_overrides["roles"] = [r.strip() for r in args.roles.split(",") if r.strip()]
    if args.workers is not None:
        run_overrides["workers"] = args.workers
    settings = load_settings(args)
    if run_overrides:
        try:
            run = settings.run.model_validate({**settings.run.model_dump(), **run_overrides})
        except Exception as exc:
            raise ConfigError(f"invalid --roles/--workers: {exc}", [str(exc)]) from None
        settings = settings.model_copy(update={"run": run})
    return daemon.run(settings, list(settings.run.roles), _child_args(args))


def cmd_worker(args: argparse.Namespace) -> int:
    from batchd import daemon

    settings = _need_redis(load_settings(args))
    configure(settings.log.level, settings.log.format, settings.secrets())
    return daemon.worker_main(settings)


# -- submit FILE ---------------------------------------------------------------------------------


def read_batch_file(path: Path, settings: Any) -> list[tuple[str, dict[str, Any]]]:
    """Lines of `{"custom_id", "params"}`; every problem found is reported with its line number."""
    from batchd.validate import check_params, encode_json

    problems: list[str] = []
    seen: dict[str, int] = {}
    items: list[tuple[str, dict[str, Any]]] = []
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", [str(path)]) from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    limit = settings.batch.max_bytes
    for n, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            problems.append(f"line {n}: not valid JSON ({exc})")
            continue
        if not isinstance(obj, dict) or set(obj) - {"custom_id", "params"}:
            problems.append(f'line {n}: expected {{"custom_id", "params"}} and nothing else')
            continue
        cid = obj.get("custom_id")
        if not isinstance(cid, str) or not cid:
            problems.append(f"line {n}: custom_id must be a non-empty string")
            continue
        if cid in seen:
            problems.append(f"line {n}: custom_id {cid!r} repeats line {seen[cid]}")
            continue
        seen[cid] = n
        try:
            check_params(obj.get("params"))
            size = len(encode_json(obj["params"], "params"))
        except SubmitError as exc:
            problems.append(f"line {n}: {exc}")
            continue
        if size > limit:
            problems.append(f"line {n}: params are {size} bytes, over the batch limit {limit}")
            continue
        items.append((cid, obj["params"]))
        if len(problems) > 50:
            break
    if problems:
        shown = problems[:50]
        more = "\n  ... and more" if len(problems) > 50 else ""
        raise ConfigError(f"{path}: nothing submitted:\n  " + "\n  ".join(shown) + more, problems)
    if not items:
        raise ConfigError(f"{path}: no requests in the file", [])
    return items


def cmd_submit(args: argparse.Namespace) -> int:
    from rich.progress import Progress

    from batchd.client import Client
    from batchd.store import new_token

    settings = _need_redis(load_settings(args))
    try:
        items = read_batch_file(Path(args.file), settings)
    except ConfigError as exc:
        print(f"batchd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    reply_to = f"cli-{new_token()}" if args.wait else None
    ids: dict[str, str] = {}
    with Client(settings=settings) as client, Progress(transient=False) as progress:
        task = progress.add_task("submitting", total=len(items))
        for start in range(0, len(items), 1000):
            part = items[start : start + 1000]
            outcomes = client.submit_many(
                [
                    {
                        "params": params,
                        "metadata": {"custom_id": cid},
                        "reply_to": reply_to,
                        "account": args.account,
                        "priority": args.priority,
                        "key": f"{args.key_prefix}{cid}" if args.key_prefix else None,
                    }
                    for cid, params in part
                ]
            )
            for (cid, _), outcome in zip(part, outcomes, strict=True):
                if isinstance(outcome, SubmitError):
                    print(f"batchd: {cid}: {outcome}", file=sys.stderr)
                else:
                    ids[cid] = outcome.id
            progress.advance(task, len(part))
        if args.flush:
            client.flush(args.account)
        if not args.wait:
            for cid, rid in ids.items():
                sys.stdout.write(json.dumps({"custom_id": cid, "id": rid}) + "\n")
            return 0 if len(ids) == len(items) else 1
        out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout  # noqa: SIM115
        task2 = progress.add_task("waiting for results", total=len(ids))
        got = 0
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        try:
            while got < len(ids):
                if deadline is not None and time.monotonic() > deadline:
                    print(f"batchd: timed out, {len(ids) - got} results missing", file=sys.stderr)
                    return 4
                for result in client.replies(
                    reply_to or "", timeout=2, prefetch=100, consumer="cli"
                ):
                    given = (result.metadata or {}).get("custom_id")
                    line = {"custom_id": given, "id": result.id, "status": result.status,
                            "result": result.result}  # fmt: skip
                    out.write(json.dumps(line) + "\n")
                    got += 1
                    progress.advance(task2)
                    if got >= len(ids):
                        break
        finally:
            if out is not sys.stdout:
                out.close()
    return 0


# -- status / batches / requests / flush --------------------------------------------------------


def gather_status(settings: Any) -> dict[str, Any]:
    """Everything `batchd status` shows, as plain data (what `--json` prints)."""
    from rq import Queue, Worker

    from batchd.observe import snapshot, throughput
    from batchd.runtime import STAGES, Runtime

    rt = Runtime(settings)
    try:
        snap = snapshot.read(rt.store, settings.accounts)
        minutes = throughput.recent(rt.store, list(settings.accounts), snap.now_ms, snap.counters)
        queues = {s: Queue(f"{settings.prefix}-{s}", connection=rt.rq_redis) for s in STAGES}
        stage_queued = {s: q.count for s, q in queues.items()}
        # rq drops a worker from its registry once the worker's key expires.
        stage_workers = len(Worker.all(queue=queues["fanout"]))
    finally:
        rt.close()
    out: dict[str, Any] = {
        "lanes": [
            {"account": ln.account, "lane": ln.lane, "priority": ln.priority,
             "pending": ln.pending, "bytes": ln.bytes, "oldest_age_s": ln.oldest_age_s}
            for ln in snap.lanes
        ],
        "assemblies": [
            {"account": a.account, "assembly": a.assembly, "state": a.state,
             "batch_id": a.batch_id, "requests": a.requests, "bytes": a.bytes, "polls": a.polls,
             "age_s": a.age_s, "in_flight": a.in_flight, "request_counts": a.counts,
             "finished": a.finished}
            for a in snap.assemblies
        ],
        "dead": snap.dead,
        "counters": snap.counters,
        "processes": len(snap.processes),
        "workers": {
            "daemons": [{"identity": p.identity, "last_seen_s": p.age_s} for p in snap.processes],
            "stage_workers": stage_workers,
            "stage_jobs_queued": stage_queued,
        },
        "throughput": [
            {"minute": _minute_iso(m.minute), "partial": m.partial, **m.counts} for m in minutes
        ],
        "webhooks": {"queued": snap.webhooks_queued, "dead": snap.webhooks_dead},
        "replies": {"waiting": snap.replies_waiting, "parked": snap.replies_parked},
    }  # fmt: skip
    if snap.paused:
        out["paused"] = snap.paused
    return out


def _minute_iso(minute: int) -> str:
    import datetime

    stamp = datetime.datetime.fromtimestamp(minute * 60, tz=datetime.UTC)
    return stamp.strftime("%Y-%m-%dT%H:%MZ")


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} GB"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{seconds:.1f}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _bar(done: int, total: int, width: int = 20) -> Any:
    """A progress bar that reads the same with or without colour: `━━━━────── 40/100`."""
    from rich.text import Text

    filled = round(width * done / total) if total > 0 else 0
    return Text.assemble(("━" * filled, "green"), ("─" * (width - filled), "dim"),
                         f" {done}/{total}")  # fmt: skip


def render_status(status: dict[str, Any]) -> Any:
    """The status as rich renderables: a headline, then lanes, batches, throughput, totals."""
    from rich.console import Group, RenderableType
    from rich.table import Table
    from rich.text import Text

    w = status["workers"]
    queued = "  ".join(f"{s} {n}" for s, n in w["stage_jobs_queued"].items())
    head = Text.assemble(
        ("batchd  ", "bold"),
        f"daemons alive {len(w['daemons'])}   stage workers {w['stage_workers']}   ",
        f"stage jobs queued: {queued}",
    )

    lanes = Table(title="Lanes", title_justify="left", expand=False)
    for col in ("account", "priority", "pending", "bytes", "oldest age"):
        lanes.add_column(col, justify="left" if col == "account" else "right")
    for ln in status["lanes"]:
        lanes.add_row(ln["account"], str(ln["priority"]), str(ln["pending"]),
                      _size(ln["bytes"]), _age(ln["oldest_age_s"]))  # fmt: skip
    if not status["lanes"]:
        lanes.add_row("-", "", "0", "", "")

    batches = Table(title="Batches in flight", title_justify="left")
    for col in ("account", "batch id", "state", "requests", "progress (API)", "age", "polls"):
        batches.add_column(col, justify="right" if col in ("requests", "age", "polls") else "left")
    for a in status["assemblies"]:
        done, total = a["finished"], a["requests"]
        bar = _bar(done, total)
        batches.add_row(a["account"], a["batch_id"] or f"({a['assembly']})", a["state"],
                        str(total), bar, _age(a["age_s"]), str(a["polls"]))  # fmt: skip
    if not status["assemblies"]:
        batches.add_row("-", "none", "", "", "", "", "")

    tp = Table(title="Throughput per minute (UTC)", title_justify="left")
    for col in ("minute", "submitted", "ended", "succeeded", "retries", "batches created"):
        tp.add_column(col, justify="left" if col == "minute" else "right")
    for m in status["throughput"]:
        label = m["minute"][11:16] + (" (so far)" if m["partial"] else "")
        tp.add_row(label, str(m["submitted"]), str(m["ended"]), str(m["succeeded"]),
                   str(m["retries"]), str(m["batches_created"]))  # fmt: skip
    if not status["throughput"]:
        tp.add_row("(no samples yet: a running daemon takes one each minute)", "", "", "", "", "")

    c = status["counters"]
    ended = {k.split(":", 1)[1]: v for k, v in c.items() if k.startswith("ended:")}
    letters = (
        f"dead letters: {_per_account(status['dead'])}   "
        f"webhooks queued: {_per_account(status['webhooks']['queued'])}   "
        f"webhooks dead: {_per_account(status['webhooks']['dead'])}"
    )
    totals = (
        f"totals: submitted {c.get('submitted', 0)}   ended {_per_account(ended)}   "
        f"retries {c.get('retries', 0)}   batches created {c.get('batches_created', 0)}"
    )
    lines: list[RenderableType] = [head, lanes, batches, tp, Text(letters), Text(totals)]
    if status.get("paused"):
        lines.append(Text(f"paused accounts: {status['paused']}", style="red"))
    return Group(*lines)


def _per_account(values: dict[str, int]) -> str:
    """`a 1, b 2`: a count per account (or per status), `0` when there is none."""
    return ", ".join(f"{k} {v}" for k, v in values.items()) or "0"


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.live import Live

    settings = _need_redis(load_settings(args))
    if args.json:
        if not args.watch:
            print(json.dumps(gather_status(settings), indent=2))
            return 0
        try:  # one JSON object per line and refresh, for scripts that follow it
            while True:
                print(json.dumps(gather_status(settings)), flush=True)
                time.sleep(args.watch)
        except KeyboardInterrupt:
            return 0
    console = Console()
    if not args.watch:
        console.print(render_status(gather_status(settings)))
        return 0
    try:
        if console.is_terminal:
            with Live(render_status(gather_status(settings)), console=console,
                      auto_refresh=False, screen=False) as live:  # fmt: skip
                while True:
                    time.sleep(args.watch)
                    live.update(render_status(gather_status(settings)), refresh=True)
        while True:  # not a terminal: one frame after another
            console.print(render_status(gather_status(settings)))
            console.print()
            console.file.flush()
            time.sleep(args.watch)
    except KeyboardInterrupt:
        return 0


def cmd_batches(args: argparse.Namespace) -> int:
    from batchd.runtime import Runtime
    from batchd.store import assemblies as asm_store

    settings = _need_redis(load_settings(args))
    rt = Runtime(settings)
    accounts = list(settings.accounts)
    try:
        if args.action == "list":
            for account in accounts:
                asms = rt.store.read(asm_store.recent_batches(rt.keys, account))
                records = rt.store.read(asm_store.read_many(rt.keys, [(account, a) for a in asms]))
                for a in records:
                    row = {"batch_id": a.batch_id, "account": account, "assembly": a.id,
                           "state": a.state.value if a.state else "unknown",
                           "requests": a.count}  # fmt: skip
                    print(json.dumps(row))
            return 0
        where = rt.store.read(asm_store.find_batch(rt.keys, accounts, args.batch_id))
        if where is None:
            print(f"batchd: no batch {args.batch_id} known to batchd", file=sys.stderr)
            return EXIT_NOT_FOUND
        account, asm = where
        found = rt.store.read(asm_store.read(rt.keys, account, asm))
        if args.action == "show":
            info: dict[str, Any] = {"account": account, "assembly": asm}
            if found is not None:
                info |= {"state": found.state.value if found.state else "unknown",
                         "requests": found.count, "request_counts": found.counts,
                         "polls": found.polls}  # fmt: skip
            try:
                info["api"] = rt.api(account).retrieve(args.batch_id).model_dump(mode="json")
            except BatchdError as exc:
                info["api_error"] = str(exc)
            print(json.dumps(info, indent=2))
            return 0
        rt.store.read(asm_store.operator_cancel(rt.keys, account, asm, True))
        try:
            batch = rt.api(account).cancel(args.batch_id)
        except BatchdError:
            rt.store.read(asm_store.operator_cancel(rt.keys, account, asm, False))
            raise
        print(json.dumps(batch.model_dump(mode="json"), indent=2))
        return 0
    finally:
        rt.close()


def cmd_requests(args: argparse.Namespace) -> int:
    from batchd.client import Client

    settings = _need_redis(load_settings(args))
    with Client(settings=settings) as client:
        try:
            state = client.get(args.request_id)
        except RequestNotFoundError as exc:
            print(f"batchd: {exc}", file=sys.stderr)
            return EXIT_NOT_FOUND
        out = {"id": state.id, "state": state.state, "attempts": state.attempts,
               "batch_id": state.batch_id,
               "result": state.result.to_dict() if state.result else None}  # fmt: skip
        print(json.dumps(out, indent=2))
    return 0


def cmd_flush(args: argparse.Namespace) -> int:
    from batchd.client import Client

    settings = _need_redis(load_settings(args))
    account, priority = args.account, args.priority
    if args.lane:
        name, _, prio = args.lane.partition("/")
        if not name or (prio and not prio.isdigit()):
            print("batchd: --lane takes ACCOUNT or ACCOUNT/PRIORITY", file=sys.stderr)
            return EXIT_USAGE
        account, priority = name, int(prio) if prio else None
    if account is not None and account not in settings.accounts:
        print(f"batchd: unknown account {account!r}", file=sys.stderr)
        return EXIT_USAGE
    with Client(settings=settings) as client:
        accounts = [account] if account else list(settings.accounts)
        for name in accounts:
            client.flush(name, priority)
    print(f"flush requested for {', '.join(accounts)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from batchd.demo import run_demo

    return run_demo(args)


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon (aggregator, stage workers, webhooks, sweeper)")
    p.add_argument("--roles", help="comma-separated: aggregator,worker,webhooks,sweeper,ingress")
    p.add_argument("--workers", type=int, help="stage worker processes (default 2)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="one stage-job worker process (batchd run starts these)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("demo", help="offline end-to-end demo: embedded Redis, emulator, daemon")
    p.add_argument("--requests", type=int, default=1000, help="sample requests (default 1000)")
    p.add_argument("--data-dir", help="where the embedded Redis keeps its data")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("submit", help="submit a JSONL file of {custom_id, params} lines")
    p.add_argument("file")
    p.add_argument("--wait", action="store_true", help="wait for every result")
    p.add_argument("--out", help="write results JSONL here (default stdout)")
    p.add_argument("--account")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument("--key-prefix", help="idempotency key = prefix + custom_id")
    p.add_argument("--flush", action="store_true", help="cut the lane at once")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="lanes, batches in flight, dead letters")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", type=float, nargs="?", const=2.0, help="refresh every N seconds")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("batches", help="batches batchd created: list, show, cancel")
    bsub = p.add_subparsers(dest="action", required=True)
    bsub.add_parser("list").set_defaults(func=cmd_batches)
    for action in ("show", "cancel"):
        bp = bsub.add_parser(action)
        bp.add_argument("batch_id")
        bp.set_defaults(func=cmd_batches)

    p = sub.add_parser("requests", help="look at one request")
    rsub = p.add_subparsers(dest="action", required=True)
    rp = rsub.add_parser("show")
    rp.add_argument("request_id")
    rp.set_defaults(func=cmd_requests)

    p = sub.add_parser("flush", help="cut lanes now instead of waiting")
    p.add_argument("--lane", help="ACCOUNT or ACCOUNT/PRIORITY")
    p.add_argument("--account")
    p.add_argument("--priority", type=int)
    p.set_defaults(func=cmd_flush)
