"""The `batchd` command line: one subcommand per room of the daemon.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration, 3 a request or batch not
found, 4 timed out waiting.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

import redis

from batchd.errors import EXIT_FAILURE, EXIT_USAGE, BatchdError, ConfigError
from batchd.store.runner import translate

# Each module registers its own subcommands with `register(subparsers)`.
COMMAND_MODULES = (
    "batchd.commands",
    "batchd.emulator.command",
    "batchd.webhooks.command",
    "batchd.ingress.command",
)


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
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
