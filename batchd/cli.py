"""The `batchd` command line: one subcommand per room of the daemon.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration, 3 a request or batch not
found, 4 timed out waiting.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence
from importlib import metadata

import redis

from batchd.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    BatchdError,
    ConfigError,
)
from batchd.store.runner import translate

# Each module registers its own subcommands with `register(subparsers)`.
COMMAND_MODULES = (
    "batchd.commands",
    "batchd.operate",
    "batchd.emulator.command",
    "batchd.webhooks.command",
    "batchd.ingress.command",
    "batchd.ledger_command",
)


def version() -> str:
    """The installed batchd's version."""
    try:
        return metadata.version("batchd")
    except metadata.PackageNotFoundError:
        return "unknown"


def _add_globals(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument(
        "--config", metavar="PATH", default=default, help="TOML configuration file (BATCHD_CONFIG)"
    )
    parser.add_argument(
        "--redis-url", metavar="URL", default=default, help="Redis URL (BATCHD_REDIS_URL)"
    )
    parser.add_argument(
        "--log-level", choices=["debug", "info", "warning", "error"], default=default
    )
    parser.add_argument("--log-format", choices=["auto", "json", "console"], default=default)


def _globals_everywhere(parser: argparse.ArgumentParser) -> None:
    """Accept the global options after any subcommand too (`batchd status --config F`)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                if "--config" not in child._option_string_actions:
                    _add_globals(child, default=argparse.SUPPRESS)
                _globals_everywhere(child)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchd",
        description="Run Claude Messages requests through the Message Batches API at half price.",
    )
    _add_globals(parser)
    parser.add_argument("--version", action="version", version=f"batchd {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        module.register(sub)
    _globals_everywhere(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        code = _run(argv)
        # What is still buffered goes out now, where a reader that left can be handled.
        sys.stdout.flush()
    except BrokenPipeError:
        # `batchd ... | head`: the reader has what it wanted. Point stdout at /dev/null so the
        # interpreter's last flush finds nowhere to fail, and end as tools killed by SIGPIPE do
        # (batchd keeps SIGPIPE ignored: a daemon must never die of a peer hanging up).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_BROKEN_PIPE
    return code


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except ConfigError as exc:
        print(f"batchd: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BatchdError as exc:
        print(f"batchd: error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except redis.RedisError as exc:
        # An unreachable or refusing Redis is the operator's to fix: say so, no traceback.
        print(f"batchd: error: {translate(exc)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
