"""`batchd cost`: tokens, cost as billed, the same tokens at real-time prices, and the saving,
from the ledger, over a time range and grouped as asked; a table, or JSON with `--json`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from batchd.errors import ConfigError
from batchd.logs import configure


def _money(usd: float) -> str:
    return f"${usd:,.2f}" if abs(usd) >= 1 or usd == 0 else f"${usd:,.4f}"


def _tokens(n: int) -> str:
    return f"{n:,}"


def render(report: Any) -> Any:
    """The report as a rich table, its total last, and a line naming unpriced models."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    span = report.as_dict()
    table = Table(title=f"Cost from {span['since']} to {span['until']}", title_justify="left")
    for g in report.by:
        table.add_column(g)
    numbers = ("requests", "input", "output", "cache write", "cache read", "cost",
               "at real-time prices", "saved")  # fmt: skip
    for col in numbers:
        table.add_column(col, justify="right")

    def cells(row: Any) -> list[str]:
        u, c = row.usage, row.cost
        cost = _money(c.billed) + (" *" if row.unpriced else "")
        return [
            _tokens(u.requests),
            _tokens(u.input),
            _tokens(u.output),
            _tokens(u.cache_write_5m + u.cache_write_1h),
            _tokens(u.cache_read),
            cost,
            _money(c.list),
            _money(c.saved),
        ]

    for row in report.rows:
        table.add_row(*[row.key[g] or "-" for g in report.by], *cells(row))
    table.add_section()
    table.add_row(*(["total"] + [""] * (len(report.by) - 1) if report.by else []),
                  *cells(report.total), style="bold")  # fmt: skip
    parts: list[Any] = [table]
    if report.total.unpriced:
        parts.append(
            Text(
                "* no price for "
                + ", ".join(sorted(report.total.unpriced))
                + ": their tokens are counted, their cost is not (add them under "
                "[[prices.models]])",
                style="yellow",
            )
        )
    return Group(*parts)


def cmd_cost(args: argparse.Namespace) -> int:
    from rich.console import Console

    from batchd.cost import check_groups, parse_time, report
    from batchd.options import _need_redis, load_settings
    from batchd.store import Keys, Store, connect

    settings = _need_redis(load_settings(args))
    # warnings (a model without a price) go to stderr, never into the report
    configure(settings.log.level, settings.log.format, settings.secrets())
    try:
        by = check_groups(args.by.split(","))
    except ValueError as exc:
        raise ConfigError(f"--by: {exc}", [str(exc)]) from None
    if args.account is not None and args.account not in settings.accounts:
        raise ConfigError(f"--account: unknown account {args.account!r}", [args.account])
    redis = connect(settings.redis_url)
    try:
        store = Store(redis, Keys(settings.prefix))
        now = store.time_ms()
        try:
            since = parse_time(args.since, now) if args.since else None
            until = parse_time(args.until, now) if args.until else None
            result = report(
                store,
                settings,
                since_ms=since,
                until_ms=until,
                by=by,
                accounts=[args.account] if args.account else None,
                tag=args.tag,
            )
        except ValueError as exc:
            raise ConfigError(f"--since/--until: {exc}", [str(exc)]) from None
    finally:
        redis.close()
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        Console().print(render(result))
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "cost", help="tokens, cost and the saving against real-time prices, from the ledger"
    )
    p.add_argument("--since", help="start: 7d, 24h, 2026-12-01, 2026-12-01T10:00 (default: 7d)")
    p.add_argument("--until", help="end (default: now)")
    p.add_argument(
        "--by",
        default="account",
        help="group by account, model, tag, lane, mode, day or hour (comma-separated for "
        "several; default: account)",
    )
    p.add_argument("--account", help="only this account")
    p.add_argument("--tag", help="only requests with this tag")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_cost)
