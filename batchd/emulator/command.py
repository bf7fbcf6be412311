"""`batchd emulator`: an offline HTTP emulator of the Anthropic API, with faults on demand.

Flags override a `--profile` file; the profile can change at runtime via `/_emulator/profile`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from batchd.emulator.config import (
    DEFAULT_API_KEY,
    EXPIRY_SECONDS,
    MAX_BATCH_REQUESTS,
    MAX_BODY_BYTES,
    RETENTION_SECONDS,
    EmulatorConfig,
)
from batchd.emulator.faults import FaultProfile, load_profile
from batchd.emulator.server import serve
from batchd.emulator.state import Emulator
from batchd.errors import ConfigError
from batchd.logs import configure, get_logger

# (flag, profile key, metavar or None for a switch, help)
FAULT_FLAGS: tuple[tuple[str, str, str | None, str], ...] = (
    ("--seed", "seed", "N", "seed of every fault draw, for reproducible runs"),
    (
        "--processing-time",
        "processing_time",
        "SECONDS|MIN:MAX",
        "emulated time each request takes (default 1)",
    ),
    ("--cancel-time", "cancel_time", "SECONDS", "emulated time from cancel to ended (default 1)"),
    ("--fail-429", "http_429_rate", "RATE", "fraction of calls answered 429 with retry-after"),
    ("--fail-500", "http_500_rate", "RATE", "fraction of calls answered 500 api_error"),
    ("--fail-529", "http_529_rate", "RATE", "fraction of calls answered 529 overloaded_error"),
    ("--retry-after", "retry_after", "SECONDS", "retry-after of injected 429s (default 1)"),
    ("--slow", "slow_rate", "RATE", "fraction of calls stalled before the answer"),
    ("--slow-seconds", "slow_seconds", "SECONDS", "real seconds a slow call stalls (default 2)"),
    (
        "--fault-operations",
        "fault_operations",
        "OP,OP",
        "operations the call faults apply to (default all: create,retrieve,list,cancel,"
        "delete,results)",
    ),
    (
        "--lose-create",
        "create_lost_response_rate",
        "RATE",
        "fraction of creates that make the batch but lose the answer",
    ),
    (
        "--lose-create-status",
        "create_lost_response_status",
        "STATUS",
        "how a lost create answers: 0 resets the connection (default), or 500/502/503/504/529",
    ),
    ("--reset-results", "results_reset_rate", "RATE", "fraction of results downloads cut off"),
    ("--reset-after", "results_reset_after", "FRACTION", "part of the body sent before a cut"),
    ("--reset-mode", "results_reset_mode", "close|rst", "cut with FIN (close) or TCP RST"),
    ("--crlf", "results_crlf", None, "end results lines with CRLF"),
    ("--split-crlf", "results_split_crlf", None, "with --crlf, split CR and LF across chunks"),
    ("--long-lines", "results_long_line_rate", "RATE", "fraction of result lines over 64 KiB"),
    ("--errored-api", "result_api_error_rate", "RATE", "fraction of requests errored api_error"),
    (
        "--errored-overloaded",
        "result_overloaded_rate",
        "RATE",
        "fraction of requests errored overloaded_error",
    ),
    ("--expired", "result_expired_rate", "RATE", "fraction of requests that end expired"),
    (
        "--max-processing",
        "max_processing_requests",
        "N",
        "cap on requests processing per workspace; a create past it is 429",
    ),
    ("--rpm", "requests_per_minute", "N", "batch API calls per minute per workspace"),
    (
        "--tier",
        "tier",
        "1-4",
        "usage tier: its batch RPM and processing-queue cap, and real-time limits",
    ),
    (
        "--transient-404",
        "transient_404_rate",
        "RATE",
        "fraction of batches whose retrieve and results answer 404 for a while",
    ),
    (
        "--transient-404-seconds",
        "transient_404_seconds",
        "SECONDS",
        "real seconds each transient 404 window lasts (default 2)",
    ),
    (
        "--transient-404-phases",
        "transient_404_phases",
        "PHASE,PHASE",
        "when: create (right after it), midlife, results (default all three)",
    ),
    ("--list-lag", "list_lag", "SECONDS", "real seconds a new batch stays out of list"),
    (
        "--clock-offset",
        "clock_offset",
        "SECONDS",
        "seconds added to every time the emulator reports; may be negative",
    ),
    (
        "--realtime-latency",
        "realtime_latency",
        "SECONDS|MIN:MAX",
        "real seconds a real-time POST /v1/messages takes (default 0)",
    ),
    (
        "--realtime-lost-response",
        "realtime_lost_response_rate",
        "RATE",
        "fraction of real-time calls billed, then answered with a reset connection",
    ),
    (
        "--opaque-results-url",
        "opaque_results_url",
        None,
        "results_url names an opaque download path instead of the documented one",
    ),
)


def register(subparsers: Any) -> None:
    """Add the `emulator` subcommand to the `batchd` command line."""
    parser = subparsers.add_parser(
        "emulator",
        help="run an offline emulator of the Message Batches API (and messages, models)",
        description=__doc__,
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument("--profile", type=Path, metavar="FILE", help="fault profile, JSON or TOML")
    parser.add_argument(
        "--api-key",
        dest="api_keys",
        action="append",
        metavar="KEY",
        help=f"accepted API key, one workspace each; repeatable (default {DEFAULT_API_KEY})",
    )
    parser.add_argument(
        "--clock-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="emulated seconds per real second; 3600 makes an hour pass each second, 0 stops it",
    )
    parser.add_argument("--max-body-bytes", type=int, default=MAX_BODY_BYTES, metavar="N")
    parser.add_argument("--max-batch-requests", type=int, default=MAX_BATCH_REQUESTS, metavar="N")
    parser.add_argument(
        "--expiry", type=float, default=EXPIRY_SECONDS, metavar="SECONDS", help="default 24 h"
    )
    parser.add_argument(
        "--retention",
        type=float,
        default=RETENTION_SECONDS,
        metavar="SECONDS",
        help="time from creation until results are archived (default 29 days)",
    )
    parser.add_argument("--public-url", metavar="URL", help="base of results_url")
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request")
    faults = parser.add_argument_group("faults (override the profile file)")
    for flag, key, metavar, text in FAULT_FLAGS:
        if metavar is None:
            faults.add_argument(flag, dest=key, action="store_const", const=True, help=text)
        else:
            faults.add_argument(flag, dest=key, metavar=metavar, help=text)
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> EmulatorConfig:
    """The emulator configuration the parsed flags describe."""
    profile = load_profile(args.profile) if args.profile else FaultProfile()
    overrides: dict[str, Any] = {}
    for _flag, key, metavar, _text in FAULT_FLAGS:
        value = getattr(args, key)
        if value is None:
            continue
        overrides[key] = value if metavar is None else _flag_value(key, value)
    profile = FaultProfile.from_mapping(overrides, profile)
    if args.clock_scale < 0:
        raise ConfigError("--clock-scale must not be negative")
    if args.max_body_bytes < 1 or args.max_batch_requests < 1:
        raise ConfigError("--max-body-bytes and --max-batch-requests must be positive")
    keys = tuple(dict.fromkeys(args.api_keys or [DEFAULT_API_KEY]))
    return EmulatorConfig(
        host=args.host,
        port=args.port,
        api_keys=keys,
        clock_scale=args.clock_scale,
        max_body_bytes=args.max_body_bytes,
        max_batch_requests=args.max_batch_requests,
        expiry_seconds=args.expiry,
        retention_seconds=args.retention,
        profile=profile,
        public_url=args.public_url.rstrip("/") if args.public_url else None,
        access_log=args.access_log,
    )


def _flag_value(key: str, text: str) -> Any:
    """A flag's text as the JSON value the profile expects for `key`."""
    if key in (
        "processing_time",
        "fault_operations",
        "results_reset_mode",
        "transient_404_phases",
        "realtime_latency",
    ):
        return text
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a number") from None
    return int(number) if number.is_integer() and not key.endswith("_rate") else number


def _raise_file_limit() -> None:
    # Hundreds of concurrent clients each hold a descriptor; lift the soft limit to the hard one.
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and (hard == resource.RLIM_INFINITY or soft < hard):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    configure(
        level=getattr(args, "log_level", None) or "info",
        fmt=getattr(args, "log_format", None) or "auto",
    )
    _raise_file_limit()
    log = get_logger("batchd.emulator")

    def ready(url: str, emulator: Emulator) -> None:
        # Plain lines on stdout: people read them, and test helpers wait for the first one.
        print(f"batchd emulator listening on {url}", flush=True)
        for key in config.api_keys:
            print(f"api key: {key}", flush=True)
        print(f"admin: {url}/_emulator/profile (seed {emulator.injector.seed})", flush=True)
        log.info(
            "emulator_started",
            url=url,
            workspaces=len(config.api_keys),
            clock_scale=config.clock_scale,
            profile=emulator.profile.to_dict(),
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await serve(config, stop=stop, ready=ready)

    try:
        asyncio.run(main())
    except OSError as exc:
        print(
            f"batchd emulator: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr
        )
        return 1
    log.info("emulator_stopped")
    return 0
