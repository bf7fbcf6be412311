"""Who is calling the ingress: producer tokens, kept only as SHA-256 digests, and their accounts.

A token arrives as `Authorization: Bearer <token>` or `x-api-key` (as Anthropic SDKs send it);
with no token configured every caller is let in, on loopback only.
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from batchd.ingress.errors import IngressError
from batchd.settings import Settings

#: Prefix of the tokens `batchd ingress token` makes, so a leaked one is recognisable.
TOKEN_PREFIX = "bdt_"
ALL_ACCOUNTS = "*"
#: The name of the one identity (and rate-limit bucket) when no token is configured.
ANONYMOUS = "anonymous"
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="batchd"'}


def new_token() -> str:
    """A fresh producer token: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    """The digest stored in settings. Tokens are random, so a fast hash suffices (no salt)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its token's name and the accounts it may use."""

    name: str
    accounts: frozenset[str] | None  # None: every account
    default_account: str

    def allows(self, account: str) -> bool:
        return self.accounts is None or account in self.accounts

    def visible(self, accounts: Iterable[str]) -> list[str]:
        return [a for a in accounts if self.allows(a)]

    def check(self, account: str) -> None:
        """Raise 403 unless this caller may use `account`."""
        if not self.allows(account):
            raise IngressError(
                403,
                f"token {self.name!r} may not use account {account!r}",
                field="account",
            )


class Authenticator:
    """Maps a request's credentials to a Principal, or raises 401."""

    def __init__(self, settings: Settings) -> None:
        self.open = not settings.ingress.tokens
        self._anonymous = Principal(ANONYMOUS, None, settings.default_account)
        self._by_digest: dict[str, Principal] = {}
        for tok in settings.ingress.tokens:
            every = ALL_ACCOUNTS in tok.accounts
            named = [a for a in tok.accounts if a != ALL_ACCOUNTS]
            default = named[0] if named else settings.default_account
            self._by_digest[tok.sha256] = Principal(
                tok.name, None if every else frozenset(named), default
            )

    def authenticate(self, headers: Mapping[str, str], *, api_key_header: bool) -> Principal:
        """The caller of a request with these headers; `x-api-key` counts if `api_key_header`."""
        if self.open:
            return self._anonymous
        token = None
        auth = headers.get("Authorization")
        if auth is not None:
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                token = value.strip()
        if token is None and api_key_header:
            token = headers.get("x-api-key") or None
        if token is None:
            where = "`Authorization: Bearer <token>`"
            if api_key_header:
                where += " or `x-api-key: <token>` (as Anthropic SDKs send their api_key)"
            raise IngressError(
                401,
                f"a producer token is required: send it as {where}; `batchd ingress token` "
                "makes one",
                headers=_CHALLENGE,
            )
        # The dict is keyed by digest: a look-up reveals nothing about stored tokens' bytes.
        principal = self._by_digest.get(token_sha256(token))
        if principal is None:
            raise IngressError(401, "the producer token is not valid", headers=_CHALLENGE)
        return principal
