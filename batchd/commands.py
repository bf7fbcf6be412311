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

from batchd.errors import BatchdError, ConfigError, RequestNotFoundError, SubmitError
from batchd.logs import configure

EXIT_USAGE = 2
EXIT_NOT_FOUND = 3


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
    from batchd.keys import new_token

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
                for result in client.replies(reply_to or "", timeout=2):
                    given = (result.metadata or {}).get("custom_id")
                    line = {"custom_id": given, "id": result.id, "status": result.status,
                            "result": result.result}  # fmt: skip
                    out.write(json.dumps(line) + "\n")
                    client.ack(reply_to or "", result)
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
    from batchd.aggregate import lane_stats, lanes
    from batchd.runtime import Runtime
    from batchd.store import text

    rt = Runtime(settings)
    try:
        now = rt.now_ms()
        out: dict[str, Any] = {"lanes": [], "assemblies": [], "dead": {}, "counters": {}}
        for account in settings.accounts:
            for prio in lanes(rt, account):
                s = lane_stats(rt, account, prio)
                out["lanes"].append(
                    {
                        "account": account,
                        "priority": prio,
                        "pending": s.count,
                        "bytes": s.bytes,
                        "oldest_age_s": None if s.oldest_ms is None else (now - s.oldest_ms) / 1000,
                    }
                )
            for raw in rt.redis.zrange(rt.keys.assemblies(account), 0, -1):
                a = rt.assembly(account, text(raw))
                if a:
                    out["assemblies"].append(
                        {"account": account, "assembly": text(raw), "state": a.get("st"),
                         "batch_id": a.get("bid"), "requests": int(a.get("cnt") or 0),
                         "bytes": int(a.get("clen") or 0), "polls": int(a.get("polls") or 0)}
                    )  # fmt: skip
            out["dead"][account] = rt.redis.zcard(rt.keys.dead(account))
            paused = rt.redis.get(rt.keys.paused(account))
            if paused:
                out.setdefault("paused", {})[account] = text(paused)
        out["counters"] = {text(k): int(v) for k, v in rt.redis.hgetall(rt.keys.counters()).items()}
        out["processes"] = len(rt.redis.zrangebyscore(rt.keys.processes(), now - 10_000, "+inf"))
        return out
    finally:
        rt.close()


def cmd_status(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    settings = _need_redis(load_settings(args))
    while True:
        status = gather_status(settings)
        if args.json:
            print(json.dumps(status, indent=2))
            return 0
        console = Console()
        lanes_t = Table(title="Lanes")
        for col in ("account", "priority", "pending", "bytes", "oldest age (s)"):
            lanes_t.add_column(col)
        for ln in status["lanes"]:
            age = ln["oldest_age_s"]
            lanes_t.add_row(ln["account"], str(ln["priority"]), str(ln["pending"]),
                            str(ln["bytes"]), "-" if age is None else f"{age:.1f}")  # fmt: skip
        batches_t = Table(title="Batches in flight")
        for col in ("account", "assembly", "state", "batch id", "requests", "polls"):
            batches_t.add_column(col)
        for a in status["assemblies"]:
            batches_t.add_row(a["account"], a["assembly"], a["state"] or "", a["batch_id"] or "-",
                              str(a["requests"]), str(a["polls"]))  # fmt: skip
        console.clear() if args.watch else None
        console.print(lanes_t)
        console.print(batches_t)
        console.print(f"dead letters: {status['dead']}   processes alive: {status['processes']}")
        if status.get("paused"):
            console.print(f"[red]paused accounts:[/red] {status['paused']}")
        console.print(f"counters: {status['counters']}")
        if not args.watch:
            return 0
        time.sleep(args.watch)


def cmd_batches(args: argparse.Namespace) -> int:
    from batchd.runtime import Runtime
    from batchd.store import text

    settings = _need_redis(load_settings(args))
    rt = Runtime(settings)
    try:
        if args.action == "list":
            rows = []
            for bid, where in rt.redis.hscan_iter(rt.keys.batch_index()):
                account, asm = text(where).split(" ", 1)
                a = rt.assembly(account, asm)
                row: dict[str, Any] = {"batch_id": text(bid), "account": account, "assembly": asm}
                rows.append(row | {"state": a.get("st", "expired"), "requests": a.get("cnt")})
            for row in rows:
                print(json.dumps(row))
            return 0
        where = rt.redis.hget(rt.keys.batch_index(), args.batch_id)
        if where is None:
            print(f"batchd: no batch {args.batch_id} known to batchd", file=sys.stderr)
            return EXIT_NOT_FOUND
        account, asm = text(where).split(" ", 1)
        if args.action == "show":
            info: dict[str, Any] = {
                "account": account,
                "assembly": asm,
                **rt.assembly(account, asm),
            }
            try:
                info["api"] = rt.api(account).retrieve(args.batch_id).model_dump(mode="json")
            except BatchdError as exc:
                info["api_error"] = str(exc)
            print(json.dumps(info, indent=2))
            return 0
        rt.redis.hset(rt.keys.assembly(account, asm), "opcancel", "1")
        batch = rt.api(account).cancel(args.batch_id)
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
    p.add_argument("--roles", help="comma-separated: aggregator,worker,webhooks,sweeper")
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
