"""`batchd ingress token`: make a producer token for the HTTP ingress.

Prints the token once (give it to the producer) and the `[[ingress.tokens]]` table holding only
its SHA-256 (put it in the configuration); batchd never stores the token itself.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from typing import Any

from batchd.errors import EXIT_USAGE
from batchd.ingress.auth import new_token, token_sha256

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("ingress", help="the HTTP ingress: producer tokens")
    sub = parser.add_subparsers(dest="ingress_command", metavar="SUBCOMMAND")
    sub.required = True
    token = sub.add_parser("token", help="make a producer token and print its settings table")
    token.add_argument("--name", required=True, help="a name for logs, e.g. orders-service")
    token.add_argument(
        "--accounts", default="*", help='comma-separated accounts it may use (default "*": all)'
    )
    token.add_argument("--json", action="store_true", help="print one JSON object instead")
    token.set_defaults(func=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    accounts = [a.strip() for a in args.accounts.split(",") if a.strip()]
    if not _NAME.fullmatch(args.name) or not accounts:
        print(
            "batchd: --name must be 1 to 64 of [A-Za-z0-9_.:-] and --accounts not empty",
            file=sys.stderr,
        )
        return EXIT_USAGE
    token = new_token()
    digest = token_sha256(token)
    if args.json:
        print(json.dumps({"token": token, "name": args.name, "sha256": digest,
                          "accounts": accounts}))  # fmt: skip
        return 0
    print(f"# token (shown once; give it to the producer): {token}")
    print("[[ingress.tokens]]")
    print(f"name = {json.dumps(args.name)}")
    print(f'sha256 = "{digest}"')
    print(f"accounts = {json.dumps(accounts)}")
    return 0
