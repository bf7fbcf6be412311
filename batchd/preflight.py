"""What `batchd run` checks before it starts anything, so that a mistake stops it at once (exit 2,
one line naming the fix) instead of leaving a daemon that runs, answers its probes and does nothing.
"""

from __future__ import annotations

import difflib
import socket
from typing import get_args

from batchd.errors import ConfigError
from batchd.settings import RunSettings, Settings

#: The roles `batchd run --roles` takes, as the settings model declares them.
ROLES: tuple[str, ...] = get_args(get_args(RunSettings.model_fields["roles"].annotation)[0])


def parse_roles(text: str) -> list[str]:
    """`--roles a,b` as a list of roles; ConfigError naming the valid roles for any other name."""
    names = [r.strip() for r in text.split(",") if r.strip()]
    valid = ", ".join(ROLES)
    if not names:
        raise ConfigError(f"--roles: give one or more of {valid}, comma-separated")
    for name in names:
        if name not in ROLES:
            guess = difflib.get_close_matches(name, ROLES, n=1)
            hint = f" (did you mean {guess[0]}?)" if guess else ""
            raise ConfigError(
                f"--roles: {name!r} is not a role{hint}; the roles are {valid}, comma-separated "
                "(e.g. --roles aggregator,worker)",
                [f"run.roles: {name!r}"],
            )
    return names


def check(settings: Settings, roles: list[str]) -> None:
    """Every check below, in the order an operator would fix them."""
    check_redis(settings)
    check_api_keys(settings, roles)
    check_ports(settings, roles)


def check_redis(settings: Settings) -> None:
    """rq's Redis without the data's Redis is half a configuration: never embed in that case."""
    if not settings.redis_url and settings.redis.rq_url:
        raise ConfigError(
            "redis.rq_url is set but redis_url is not: set redis_url (BATCHD_REDIS_URL) to the "
            "Redis that holds batchd's data too",
            ["redis_url: unset while redis.rq_url is set"],
        )


def _env(*parts: str) -> str:
    return "BATCHD_" + "__".join(p.upper() for p in parts)


def check_api_keys(settings: Settings, roles: list[str]) -> None:
    """Stage workers create batches, the real-time role sends requests: each account needs a
    key, or nothing would ever be sent."""
    if "worker" not in roles and "realtime" not in roles:
        return
    missing = [name for name, acct in settings.accounts.items() if acct.api_key is None]
    if not missing:
        return
    names = ", ".join(missing)
    fix = " and ".join(_env("accounts", name, "api_key") for name in missing)
    raise ConfigError(
        f"no API key for account{'s' if len(missing) > 1 else ''} {names}, so no batch could be "
        f"created: set {fix} (or api_key_file in [accounts.{missing[0]}]); to try batchd "
        "without a key, `batchd dev` runs it against the API emulator",
        [f"accounts.{name}.api_key: unset" for name in missing],
    )


def listeners(settings: Settings, roles: list[str]) -> list[tuple[str, str, str, int]]:
    """(what, its setting, host, port) of each listener this `batchd run` is told to serve."""
    found: list[tuple[str, str, str, int]] = []
    if settings.http.enabled:
        found.append(("the operations endpoints", "http", settings.http.host, settings.http.port))
    if "ingress" in roles and settings.ingress.enabled:
        from batchd.ingress.server import listen_host as ingress_host

        found.append(("the ingress", "ingress", ingress_host(settings), settings.ingress.port))
    if "console" in roles and settings.console.enabled:
        from batchd.console.server import listen_host as console_host

        found.append(("the console", "console", console_host(settings), settings.console.port))
    return found


def check_ports(settings: Settings, roles: list[str]) -> None:
    """A port already taken stops the start: a daemon whose roles list a listener it lacks would
    look healthy while producers or scrapers reach nothing (or another program)."""
    for what, section, host, port in listeners(settings, roles):
        if port == 0:
            continue
        problem = _bind_problem(host, port)
        if problem is not None:
            raise ConfigError(
                f"{what} cannot listen on {host}:{port} ({problem}): stop what holds the port, "
                f"or set {section}.port ({_env(section, 'port')}) to a free one, 0 for any",
                [f"{section}.port: {port} {problem}"],
            )


def _bind_problem(host: str, port: int) -> str | None:
    """Why a listener could not bind host:port now (None: it could)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return f"host not found: {exc.strerror}"
    family, type_, proto, _, address = infos[0]
    with socket.socket(family, type_, proto) as sock:
        # As the servers bind: SO_REUSEADDR, which still refuses a port another socket listens on.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            return exc.strerror or str(exc)
    return None
