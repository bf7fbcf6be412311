"""`batchd webhooks dead` and `batchd webhooks retry`: the operator's view of failed deliveries.

Deliveries that ran out of attempts, hit a blocked address or a 410 Gone endpoint wait in each
account's dead-letter set until they are re-sent or their retention ends.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from batchd.errors import (
    EXIT_FAILURE,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    BatchdError,
    ConfigError,
)
from batchd.settings import Settings
from batchd.store import Keys, Store, connect
from batchd.webhooks.outbox import (
    DeliveryRecord,
    find_delivery,
    gone_endpoints,
    list_dead,
    retry_all_dead,
    retry_delivery,
)


def register(subparsers: Any) -> None:
    """Add `webhooks dead` and `webhooks retry` to the `batchd` command line."""
    parser = subparsers.add_parser("webhooks", help="inspect and re-send failed webhook deliveries")
    sub = parser.add_subparsers(dest="webhooks_command", metavar="SUBCOMMAND")
    sub.required = True

    dead = sub.add_parser("dead", help="list deliveries that failed for good (newest first)")
    dead.add_argument("--account", action="append", help="only this account (repeatable)")
    dead.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    dead.add_argument("--json", action="store_true", help="one JSON document instead of a table")
    dead.set_defaults(func=cmd_dead)

    retry = sub.add_parser(
        "retry",
        help="send deliveries again from their first attempt; re-enables endpoints marked gone",
    )
    retry.add_argument("ids", nargs="*", metavar="ID", help="request id or webhook-id (msg_...)")
    retry.add_argument("--all", action="store_true", help="every dead or gone delivery")
    retry.add_argument("--account", action="append", help="with --all: only this account")
    retry.set_defaults(func=cmd_retry)


def _connect(args: argparse.Namespace) -> tuple[Settings, Store]:
    overrides = {"redis_url": args.redis_url} if getattr(args, "redis_url", None) else {}
    settings = Settings.load(getattr(args, "config", None), **overrides)
    if not settings.redis_url:
        raise ConfigError(
            "the webhooks commands need a Redis URL: pass --redis-url or set BATCHD_REDIS_URL",
            ["redis_url: not set"],
        )
    return settings, Store(connect(settings.redis_url), Keys(settings.prefix))


def _accounts(settings: Settings, wanted: list[str] | None) -> list[str]:
    if not wanted:
        return list(settings.accounts)
    unknown = [a for a in wanted if a not in settings.accounts]
    if unknown:
        raise ConfigError(f"unknown account: {', '.join(unknown)}", [f"account: {unknown}"])
    return wanted


def cmd_dead(args: argparse.Namespace) -> int:
    return _redis_errors(_dead, args)


def cmd_retry(args: argparse.Namespace) -> int:
    return _redis_errors(_retry, args)


def _redis_errors(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    try:
        return command(args)
    except ConfigError:
        raise
    except BatchdError as exc:
        print(f"batchd: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE


def _dead(args: argparse.Namespace) -> int:
    settings, store = _connect(args)
    try:
        accounts = _accounts(settings, args.account)
        records = list_dead(store, accounts, limit=args.limit)
        gone = gone_endpoints(store, accounts)
    finally:
        store.close()
    if args.json:
        doc = {
            "deliveries": [r.as_json() for r in records],
            "gone_endpoints": [{"account": a, "url": url, "since_ms": at} for a, url, at in gone],
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    _print_table(records)
    for account, url, at in gone:
        print(f"endpoint gone since {_when(at)} ({account}): {url}")
    return EXIT_OK


def _retry(args: argparse.Namespace) -> int:
    if bool(args.ids) == bool(args.all):
        print("batchd: webhooks retry needs delivery ids or --all (not both)", file=sys.stderr)
        return EXIT_USAGE
    settings, store = _connect(args)
    try:
        accounts = _accounts(settings, args.account)
        if args.all:
            counts = retry_all_dead(store, accounts)
            sent = sum(n for state, n in counts.items() if state not in ("missing", "pending"))
            print(f"re-sending {sent} deliveries; gone endpoints re-enabled")
            return EXIT_OK
        missing = 0
        for ident in args.ids:
            found = find_delivery(store, list(settings.accounts), ident)
            state = "missing" if found is None else retry_delivery(store, *found)
            if state == "missing":
                missing += 1
                print(f"{ident}: no such delivery (unknown, or past its retention)")
            elif state == "pending":
                print(f"{ident}: still being tried; left as it is")
            else:
                print(f"{ident}: re-sending (was {state})")
        return EXIT_NOT_FOUND if missing else EXIT_OK
    finally:
        store.close()


def _print_table(records: list[DeliveryRecord]) -> None:
    if not records:
        print("no dead webhook deliveries")
        return
    rows = [
        (
            r.request_id,
            r.state,
            str(r.attempts),
            str(r.last_status) if r.last_status is not None else "-",
            _when(r.ended_ms),
            r.url,
            r.last_error or "-",
        )
        for r in records
    ]
    header = ("REQUEST ID", "STATE", "ATTEMPTS", "STATUS", "ENDED", "URL", "LAST ERROR")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]))


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
