"""`python -m batchd.console token`: make a console token and print its settings table.

Prints the token once (give it to the person) and the `[[console.tokens]]` table holding only its
SHA-256 and role (put it in the configuration); batchd never stores the token itself.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from typing import Any

from batchd.errors import EXIT_USAGE

from .auth import new_token, token_sha256

_NAME = re.compile(r"^[A-Za-z0-9_.:@-]{1,64}$")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("console", help="the web console: people's tokens")
    sub = parser.add_subparsers(dest="console_command", metavar="SUBCOMMAND")
    sub.required = True
    token = sub.add_parser("token", help="make a console token and print its settings table")
    token.add_argument("--name", required=True, help="who will use it, e.g. alice (logged)")
    token.add_argument(
        "--role",
        choices=["viewer", "operator"],
        default="viewer",
        help="viewer: looks only; operator: also requeues, purges, retries (default viewer)",
    )
    token.add_argument("--json", action="store_true", help="print one JSON object instead")
    token.set_defaults(func=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    if not _NAME.fullmatch(args.name):
        print("batchd: --name must be 1 to 64 of [A-Za-z0-9_.:@-]", file=sys.stderr)
        return EXIT_USAGE
    token = new_token()
    digest = token_sha256(token)
    if args.json:
        print(json.dumps({"token": token, "name": args.name, "sha256": digest,
                          "role": args.role}))  # fmt: skip
        return 0
    print(f"# token (shown once; give it to {args.name}): {token}")
    print("[[console.tokens]]")
    print(f"name = {json.dumps(args.name)}")
    print(f'sha256 = "{digest}"')
    print(f'role = "{args.role}"')
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batchd.console")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    args = parser.parse_args(["console", *(argv if argv is not None else sys.argv[1:])])
    code: int = args.func(args)
    return code
