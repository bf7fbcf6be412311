"""Who is using the console and what they may do: tokens kept as SHA-256 digests, each with a
role, signed session cookies, and the checks that stop another site acting through a browser.

With no token configured the console is open (it then listens on loopback only, and answers only
requests addressed to a loopback name, so a rebound DNS name cannot reach it); every visitor is
`anonymous` with the operator role. Actions need the operator role, and, when the caller is known
by its cookie, a same-origin `Origin` and the session's CSRF token in a header.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import orjson

from batchd.ingress.auth import is_loopback
from batchd.settings import Settings

Role = Literal["viewer", "operator"]
VIEWER: Role = "viewer"
OPERATOR: Role = "operator"
#: Prefix of the tokens `python -m batchd.console token` makes, so a leaked one is recognisable.
TOKEN_PREFIX = "bct_"
#: The session cookie: HttpOnly, SameSite=Strict, signed with this process's own key.
COOKIE = "batchd_console"
#: Seconds a session lasts before its holder signs in again.
SESSION_SECONDS = 12 * 3600
#: The header actions carry the session's CSRF token in.
CSRF_HEADER = "X-Batchd-CSRF"
#: Who acts on an open console (no token configured).
ANONYMOUS = "anonymous"


def new_token() -> str:
    """A fresh console token: 256 random bits."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_sha256(token: str) -> str:
    """The digest kept in settings. Tokens are random, so a fast hash suffices (no salt)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """A signed-in person (or the anonymous visitor of an open console)."""

    name: str
    role: Role
    session: str
    """The session's random id; its CSRF token is derived from it."""
    by_cookie: bool = True
    """Known by the session cookie (a browser), rather than an `Authorization` header."""

    @property
    def can_act(self) -> bool:
        return self.role == OPERATOR


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class Gate:
    """Maps tokens and cookies to principals; signs sessions and their CSRF tokens."""

    def __init__(self, settings: Settings, key: bytes | None = None) -> None:
        tokens = settings.console.tokens
        self.open = not tokens
        self._by_digest: dict[str, tuple[str, Role]] = {t.sha256: (t.name, t.role) for t in tokens}
        self._by_name: dict[str, tuple[str, Role]] = {t.name: (t.sha256, t.role) for t in tokens}
        # A key of this process alone: sessions end when it restarts (sign in again).
        self._key = key if key is not None else secrets.token_bytes(32)

    def _mac(self, purpose: bytes, payload: bytes) -> bytes:
        return hmac.new(self._key, purpose + b"\x1f" + payload, hashlib.sha256).digest()

    # -- signing in ------------------------------------------------------------------------

    def login(self, token: str) -> Principal | None:
        """The principal of a token, or None when it is not one of the configured tokens."""
        if self.open:
            return self.anonymous()
        found = self._by_digest.get(token_sha256(token.strip()))
        if found is None:
            return None
        return Principal(found[0], found[1], secrets.token_urlsafe(16))

    def anonymous(self) -> Principal:
        return Principal(ANONYMOUS, OPERATOR, secrets.token_urlsafe(16))

    def bearer(self, headers: Mapping[str, str]) -> Principal | None:
        """The principal of `Authorization: Bearer <token>`, for scripts; None without one."""
        auth = headers.get("Authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer" or not value.strip() or self.open:
            return None
        found = self.login(value)
        if found is None:
            return None
        return Principal(found.name, found.role, "bearer", by_cookie=False)

    # -- sessions ----------------------------------------------------------------------------

    def cookie(self, principal: Principal, now_s: float) -> str:
        """The signed cookie value of a session that lasts SESSION_SECONDS from now."""
        payload = orjson.dumps(
            [principal.name, principal.role, int(now_s) + SESSION_SECONDS, principal.session]
        )
        return f"{_b64(payload)}.{_b64(self._mac(b'session', payload))}"

    def session(self, value: str | None, now_s: float) -> Principal | None:
        """The principal of a cookie: signed by this process, not expired, and (with tokens)
        its token still configured with the same role; else None."""
        if not value or "." not in value:
            return None
        body, _, mac = value.partition(".")
        try:
            payload = _unb64(body)
            if not hmac.compare_digest(_unb64(mac), self._mac(b"session", payload)):
                return None
            name, role, expires, session = orjson.loads(payload)
        except (ValueError, TypeError, orjson.JSONDecodeError):
            return None
        if not isinstance(expires, int) or expires < now_s:
            return None
        if self.open:
            return Principal(ANONYMOUS, OPERATOR, str(session)) if name == ANONYMOUS else None
        current = self._by_name.get(str(name))
        if current is None or current[1] != role:
            return None  # the token was removed, or its role changed: sign in again
        return Principal(str(name), current[1], str(session))

    def csrf(self, principal: Principal) -> str:
        """The CSRF token of a session: the page sends it back in CSRF_HEADER with each action."""
        return _b64(self._mac(b"csrf", principal.session.encode()))

    def csrf_ok(self, principal: Principal, value: str | None) -> bool:
        return bool(value) and hmac.compare_digest(str(value), self.csrf(principal))


# -- where a request comes from ----------------------------------------------------------------


def host_name(host_header: str) -> str:
    """The host of a `Host` header, without its port (`[::1]:9465` -> `::1`)."""
    host = host_header.strip()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def loopback_host(host_header: str) -> bool:
    """Whether a request was addressed to a loopback name (an open console answers only such:
    a page on another site cannot rebind its own name to 127.0.0.1 and read the console)."""
    return bool(host_header) and is_loopback(host_name(host_header))


def same_origin(headers: Mapping[str, str], scheme: str, host: str) -> bool:
    """Whether a browser says this request comes from the console's own pages: `Origin` (or,
    without it, `Referer`) is this scheme and host, and `Sec-Fetch-Site`, if sent, agrees."""
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = headers.get("Origin")
    own = f"{scheme}://{host}"
    if origin is not None:
        return origin == own
    referer = headers.get("Referer")
    return referer is not None and (referer == own or referer.startswith(own + "/"))
