"""The operator's subcommands: run, demo, submit, status, batches, requests, flush.

Each command loads settings (flags > environment > TOML > defaults), does one thing, and exits
0 on success, 1 on a runtime failure, 2 on bad usage or input, 3 when something is not found.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from batchd.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_TIMEOUT,
    EXIT_USAGE,
    ConfigError,
    RequestNotFoundError,
    SubmitError,
    WaitTimeoutError,
)
from batchd.logs import configure
from batchd.options import _child_args, _need_redis, load_settings

# -- run / worker ------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from batchd import daemon, preflight

    run_overrides: dict[str, Any] = {}
    if args.roles:
        run_overrides["roles"] = preflight.parse_roles(args.roles)
    if args.workers is not None:
        run_overrides["workers"] = args.workers
    settings = load_settings(args)
    if run_overrides:
        try:
            run = settings.run.model_validate({**settings.run.model_dump(), **run_overrides})
        except ValidationError as exc:
            problems = [
                f"--{err['loc'][0]}: {err['msg']} (got {err.get('input')!r})"
                for err in exc.errors()
            ]
            raise ConfigError("; ".join(problems), problems) from None
        settings = settings.model_copy(update={"run": run})
    preflight.check(settings, list(settings.run.roles))
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


#: Idempotency keys `submit FILE` derives from its lines start so; the rest is a digest.
LINE_KEY_PREFIX = "batchd-line:"


def line_key(custom_id: str, params: Any, prefix: str | None = None) -> str:
    """The idempotency key of one line of a file: `prefix` + custom_id when a prefix is given,
    else a digest of the line's custom_id and params. The same line submitted again (the file
    run a second time) re-attaches to its first request instead of queuing another."""
    if prefix:
        return f"{prefix}{custom_id}"
    body = orjson.dumps(params, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(custom_id.encode("utf-8") + b"\x1f" + body).hexdigest()
    return LINE_KEY_PREFIX + digest


def sidecar(path: str) -> Path:
    """Where `submit --wait` writes the id mapping: beside --out (or the input file)."""
    p = Path(path)
    stem = p.name[: -len(p.suffix)] if p.suffix else p.name
    return p.with_name(f"{stem}.ids.jsonl")


def _stderr_progress() -> Any:
    from rich.console import Console
    from rich.progress import Progress

    return Progress(console=Console(stderr=True), transient=False)


def _warn_no_daemon(client: Any) -> None:
    if client.daemons_alive() == 0:
        print(
            "batchd: warning: no batchd daemon is alive (`batchd status` shows daemons alive 0): "
            "the requests are stored, but nothing batches them until `batchd run` starts",
            file=sys.stderr,
        )


def cmd_submit(args: argparse.Namespace) -> int:
    from batchd.client import Client

    settings = _need_redis(load_settings(args))
    # Log lines go to stderr: stdout carries the ids (or the results) only.
    configure(settings.log.level, settings.log.format, settings.secrets())
    try:
        items = read_batch_file(Path(args.file), settings)
    except ConfigError as exc:
        print(f"batchd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    mapping: list[tuple[str, str]] = []
    again = 0
    with Client(settings=settings) as client:
        _warn_no_daemon(client)
        with _stderr_progress() as progress:
            task = progress.add_task("submitting", total=len(items))
            for start in range(0, len(items), 1000):
                part = items[start : start + 1000]
                outcomes = client.submit_many(
                    [
                        {
                            "params": params,
                            "metadata": {"custom_id": cid},
                            "account": args.account,
                            "priority": args.priority,
                            "key": line_key(cid, params, args.key_prefix),
                            "tag": args.tag,
                            "deadline": args.deadline,
                        }
                        for cid, params in part
                    ]
                )
                for (cid, _), outcome in zip(part, outcomes, strict=True):
                    if isinstance(outcome, SubmitError):
                        print(f"batchd: {cid}: {outcome}", file=sys.stderr)
                    else:
                        mapping.append((cid, outcome.id))
                        again += outcome.duplicate
                progress.advance(task, len(part))
        if args.flush:
            client.flush(args.account)
        complete = len(mapping) == len(items)
        if not args.wait:
            for cid, rid in mapping:
                sys.stdout.write(json.dumps({"custom_id": cid, "id": rid}) + "\n")
            return 0 if complete else EXIT_FAILURE
        # The mapping is on disk before the first wait: however this run ends, every result
        # can be collected later.
        map_path = Path(args.ids) if args.ids else sidecar(args.out or args.file)
        write_mapping(map_path, mapping)
        try:  # from the moment the ids are said to be on disk, Ctrl-C says how to collect
            print(
                f"batchd: {len(mapping) - again} requests queued"
                + (f", {again} re-attached (queued before, by an earlier run)" if again else "")
                + f"; their ids are in {map_path}",
                file=sys.stderr,
            )
            code = collect(client, mapping, args.out, args.timeout, map_path)
        except KeyboardInterrupt:
            say_later("interrupted", 0, len(mapping), args.out, map_path)
            return EXIT_INTERRUPTED
    return code if code or complete else EXIT_FAILURE


def write_mapping(path: Path, mapping: list[tuple[str, str]]) -> None:
    """custom_id -> request id, one JSON object a line (what `submit` prints without --wait)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for cid, rid in mapping:
            f.write(json.dumps({"custom_id": cid, "id": rid}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_mapping(path: Path) -> list[tuple[str | None, str]]:
    """The (custom_id, request id) pairs of a mapping file (`{"custom_id", "id"}` lines)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", [str(path)]) from None
    pairs: list[tuple[str | None, str]] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise ConfigError(f'{path}: line {n}: expected {{"custom_id", "id"}}', [f"line {n}"])
        cid = obj.get("custom_id")
        pairs.append((cid if isinstance(cid, str) else None, obj["id"]))
    return pairs


def say_later(why: str, got: int, total: int, out_path: str | None, map_path: Path) -> None:
    """Say why a wait for results ended early, and the command that collects them all."""
    written = f"{got} of {total} results written" + (f" to {out_path}" if out_path else "")
    again = f"batchd collect {map_path}" + (f" --out {out_path}" if out_path else "")
    print(
        f"batchd: {why}: {written}; the other requests go on. Collect every result later "
        f"(those written included) with: {again}",
        file=sys.stderr,
    )


def collect(
    client: Any,
    mapping: list[tuple[str | None, str]] | list[tuple[str, str]],
    out_path: str | None,
    timeout: float | None,
    map_path: Path,
) -> int:
    """Write each request's result line to `out_path` (stdout) as it ends: `as_completed` over
    one connection, no reply queue (nothing to expire or to leave behind). An interrupted or
    timed-out run says how to collect the rest."""
    custom_ids = {rid: cid for cid, rid in mapping}
    got = 0

    def later(why: str) -> None:
        say_later(why, got, len(custom_ids), out_path, map_path)

    out: Any = sys.stdout
    try:
        if out_path:
            out = open(out_path, "w", encoding="utf-8")  # noqa: SIM115
        with _stderr_progress() as progress:
            task = progress.add_task("waiting for results", total=len(custom_ids))
            for result in client.as_completed(list(custom_ids), timeout):
                line = {"custom_id": custom_ids.get(result.id), "id": result.id,
                        "status": result.status, "result": result.result}  # fmt: skip
                out.write(json.dumps(line) + "\n")
                got += 1
                progress.advance(task)
    except WaitTimeoutError:
        later(f"timed out after {timeout:g} s")
        return EXIT_TIMEOUT
    except KeyboardInterrupt:
        later("interrupted")
        return EXIT_INTERRUPTED
    except RequestNotFoundError as exc:
        print(f"batchd: {exc}; no result to collect for it", file=sys.stderr)
        return EXIT_NOT_FOUND
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_collect(args: argparse.Namespace) -> int:
    from batchd.client import Client

    settings = _need_redis(load_settings(args))
    configure(settings.log.level, settings.log.format, settings.secrets())
    map_path = Path(args.mapfile)
    mapping = read_mapping(map_path)
    with Client(settings=settings) as client:
        return collect(client, mapping, args.out, args.timeout, map_path)


# -- status / batches / requests / flush --------------------------------------------------------


def gather_status(settings: Any) -> dict[str, Any]:
    """Everything `batchd status` shows, as plain data (what `--json` prints)."""
    from rq import Queue, Worker

    from batchd import budgets, deadlines
    from batchd.observe import snapshot, throughput
    from batchd.runtime import STAGES, Runtime
    from batchd.store import deadlines as dl_store

    rt = Runtime(settings)
    try:
        snap = snapshot.read(rt.store, settings.accounts)
        accounts = list(settings.accounts)
        samples = rt.store.read(dl_store.durations(rt.keys, accounts))
        backlog = rt.store.read(dl_store.backlog(rt.keys, accounts))
        minutes = throughput.recent(rt.store, list(settings.accounts), snap.now_ms, snap.counters)
        queues = {s: Queue(f"{settings.prefix}-{s}", connection=rt.rq_redis) for s in STAGES}
        stage_queued = {s: q.count for s, q in queues.items()}
        # rq drops a worker from its registry once the worker's key expires.
        stage_workers = len(Worker.all(queue=queues["fanout"]))
    finally:
        holds = budgets.held(rt.store, list(settings.accounts))
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
        "replies": {"waiting": snap.replies_waiting, "parked": snap.replies_parked,
                    "queues": snap.reply_queues},
    }  # fmt: skip
    out["deadlines"] = [
        {
            "account": a,
            "policy": settings.accounts[a].deadline_policy,
            "pending": backlog[a].pending,
            "realtime_queued": backlog[a].realtime_queued,
            "realtime_sending": backlog[a].realtime_sending,
            "batch_duration": deadlines.estimate(settings, samples[a]).as_dict(),
            "counters": {
                k: v
                for k, v in snap.by_account.get(a, {}).items()
                if k.startswith(DEADLINE_COUNTERS)
            },
        }
        for a in accounts
    ]
    if snap.paused:
        out["paused"] = snap.paused
    if holds:
        out["holds"] = holds
    return out


#: Counters `status` shows per account in its deadlines section.
DEADLINE_COUNTERS = ("deadlines_", "escalated:", "realtime:", "batches_canceled:deadline")


def _deadline_row(d: dict[str, Any]) -> tuple[str, ...]:
    c = d["counters"]
    est = d["batch_duration"]
    if est["source"] == "observed":
        took = f"p50 {_age(est['median_s'])}, planned {_age(est['planned_s'])} ({est['samples']})"
    else:
        took = f"default {_age(est['planned_s'])} ({est['samples']} seen)"
    sent = ", ".join(f"{k.split(':', 1)[1]} {v}" for k, v in sorted(c.items())
                     if k.startswith("realtime:")) or "0"  # fmt: skip
    return (
        d["account"],
        d["policy"],
        str(d["pending"]),
        f"{d['realtime_queued']} / {d['realtime_sending']}",
        took,
        f"{c.get('deadlines_met', 0)} / {c.get('deadlines_missed', 0)}",
        str(sum(v for k, v in c.items() if k.startswith("escalated:"))),
        sent,
    )


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

    from batchd import budgets

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
        f"webhooks dead: {_per_account(status['webhooks']['dead'])}   "
        f"waiting on reply queues: {_per_account(status['replies'].get('queues', {}))}"
    )
    totals = (
        f"totals: submitted {c.get('submitted', 0)}   ended {_per_account(ended)}   "
        f"retries {c.get('retries', 0)}   batches created {c.get('batches_created', 0)}"
    )
    dl = Table(title="Deadlines", title_justify="left")
    for col in ("account", "policy", "pending", "real-time queued / sending", "batch duration",
                "met / missed", "left the batch route", "real-time sends"):  # fmt: skip
        dl.add_column(col, justify="left" if col in ("account", "policy") else "right")
    for d in status.get("deadlines", []):
        dl.add_row(*_deadline_row(d))
    lines: list[RenderableType] = [head, lanes, batches, tp, dl, Text(letters), Text(totals)]
    if status.get("paused"):
        lines.append(Text(f"paused accounts: {status['paused']}", style="red"))
    if status.get("holds"):
        held = "; ".join(budgets.describe(h) for h in status["holds"])
        lines.append(Text("held at a spend cap: " + held, style="yellow"))
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


def cmd_dev(args: argparse.Namespace) -> int:
    from batchd.dev import run_dev

    return run_dev(args)


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run the daemon (aggregator, stage workers, webhooks, sweeper)")
    p.add_argument(
        "--roles",
        help="comma-separated: aggregator,worker,webhooks,sweeper,ingress,console,realtime",
    )
    p.add_argument("--workers", type=int, help="stage worker processes (default 2)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("worker", help="one stage-job worker process (batchd run starts these)")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("demo", help="offline end-to-end demo: embedded Redis, emulator, daemon")
    p.add_argument("--requests", type=int, default=1000, help="sample requests (default 1000)")
    p.add_argument("--data-dir", help="where the embedded Redis keeps its data")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "dev",
        help="a dev loop: Redis on TCP, the emulator and batchd run with short windows, and the "
        "exports that point a producer at them; Ctrl-C stops all",
    )
    p.add_argument("--data-dir", help="where Redis keeps its data and the daemon its log")
    p.set_defaults(func=cmd_dev)

    p = sub.add_parser(
        "submit",
        help="submit a JSONL file of {custom_id, params} lines (running it again re-attaches)",
    )
    p.add_argument("file")
    p.add_argument("--wait", action="store_true", help="wait for every result")
    p.add_argument("--out", help="write results JSONL here (default stdout)")
    p.add_argument(
        "--ids",
        metavar="MAPFILE",
        help="with --wait: write the custom_id -> request id mapping here, before waiting "
        "(default: OUT.ids.jsonl, or FILE.ids.jsonl without --out)",
    )
    p.add_argument("--account")
    p.add_argument("--priority", type=int, default=0)
    p.add_argument(
        "--key-prefix",
        help="idempotency key = prefix + custom_id (default: a digest of custom_id and params)",
    )
    p.add_argument("--flush", action="store_true", help="cut the lane at once")
    p.add_argument("--tag", help="ledger tag of every request (a tenant, feature or team)")
    p.add_argument(
        "--deadline",
        help="when every result is needed by: an ISO 8601 time with its offset, or epoch "
        "seconds (past what a batch can make, the account's deadline_policy decides)",
    )
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser(
        "collect", help="write the results of the requests in a mapping file (submit's ids)"
    )
    p.add_argument("mapfile", help='{"custom_id", "id"} lines: `submit --wait`\'s MAPFILE')
    p.add_argument("--out", help="write results JSONL here (default stdout)")
    p.add_argument("--timeout", type=float, help="give up waiting after this many seconds")
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("status", help="lanes, batches in flight, dead letters")
    p.add_argument("--json", action="store_true")
    p.add_argument("--watch", type=float, nargs="?", const=2.0, help="refresh every N seconds")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("flush", help="cut lanes now instead of waiting")
    p.add_argument("--lane", help="ACCOUNT or ACCOUNT/PRIORITY")
    p.add_argument("--account")
    p.add_argument("--priority", type=int)
    p.set_defaults(func=cmd_flush)
