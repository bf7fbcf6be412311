"""The `batchd` command line: one subcommand per room of the daemon.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration, 3 a request or batch not
found, 4 timed out waiting.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from batchd.errors import BatchdError, ConfigError

# Each module registers its own subcommands with `register(subparsers)`.
COMMAND_MODULES = (
    "batchd.commands",
    "batchd.emulator.command",
    "batchd.webhooks.command",
)

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_TIMEOUT = 4


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="batchd",
        description="Run Claude Messages requests through the Message Batches API at half price.",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML configuration file (BATCHD_CONFIG)")
    parser.add_argument("--redis-url", metavar="URL", help="Redis URL (BATCHD_REDIS_URL)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--log-format", choices=["auto", "json", "console"])
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
    except KeyboardInterrupt:
        return 130
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
