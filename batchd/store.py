"""Connections to batchd's Redis and checks on how safely that Redis keeps data.

One place builds clients (sync and asyncio) from a URL, and one place reads the server's
persistence and eviction settings and says, naming the setting, where they can lose requests.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, cast

import redis
import redis.asyncio as aredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.sentinel import Sentinel

from batchd.errors import ConfigError
from batchd.keys import Keys
from batchd.logs import get_logger
from batchd.settings import Settings

log = get_logger("batchd.store")


#: Seconds a Redis reply may take before the connection counts as dead. Blocking commands
#: (`wait`, `replies`) block for at most BLOCK_SECONDS at a time, well inside it.
SOCKET_TIMEOUT = 30.0
BLOCK_SECONDS = 20.0
#: Seconds a `wait` caller's mark on a request lasts: longer than any one blocking call, so a
#: request ending while it blocks always sees the mark (it is renewed before each call).
WAITER_SECONDS = 3 * BLOCK_SECONDS


SENTINEL_SCHEME = "redis+sentinel"


def _sentinel_url(url: str) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """Parse `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`."""
    parts = urllib.parse.urlsplit(url)
    auth, _, hosts = parts.netloc.rpartition("@")
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, "26379"
        if not host or not port.isdigit():
            raise ConfigError(f"bad sentinel address {item!r} in redis_url", ["redis_url"])
        nodes.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ConfigError("redis_url: a sentinel URL needs /<service name>", ["redis_url"])
    options: dict[str, Any] = {"db": int(path[1]) if len(path) > 1 else 0}
    if auth:
        user, _, password = auth.partition(":")
        if user:
            options["username"] = urllib.parse.unquote(user)
        if password:
            options["password"] = urllib.parse.unquote(password)
    return nodes, path[0], options


def connect(url: str, **kwargs: Any) -> redis.Redis:
    """A sync client; connections are checked before reuse so a Redis restart heals itself.

    `redis://`, `rediss://`, `unix://`, or `redis+sentinel://host:port[,...]/service[/db]`
    (the master of that service, found through Sentinel and followed across fail-overs).
    """
    kwargs.setdefault("health_check_interval", 30)
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
    if url.startswith(SENTINEL_SCHEME + "://"):
        nodes, service, options = _sentinel_url(url)
        sentinel = Sentinel(nodes, socket_timeout=kwargs["socket_timeout"])  # type: ignore[no-untyped-call]
        master = sentinel.master_for(service, **options, **kwargs)  # type: ignore[no-untyped-call]
        return cast(redis.Redis, master)
    if not url.startswith("unix:"):
        kwargs.setdefault("socket_keepalive", True)
    return redis.Redis.from_url(url, **kwargs)


def connect_async(url: str, **kwargs: Any) -> aredis.Redis:
    """The asyncio twin of `connect`."""
    kwargs.setdefault("health_check_interval", 30)
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
    if url.startswith(SENTINEL_SCHEME + "://"):
        nodes, service, options = _sentinel_url(url)
        sentinel = AsyncSentinel(nodes, socket_timeout=kwargs["socket_timeout"])  # type: ignore[no-untyped-call]
        return cast(aredis.Redis, sentinel.master_for(service, **options, **kwargs))
    return aredis.Redis.from_url(url, **kwargs)


def durability_warnings(client: redis.Redis) -> list[str]:
    """Each way this Redis can lose acknowledged requests, as a sentence naming the setting."""
    problems: list[str] = []
    try:
        conf: dict[str, Any] = {}
        for name in ("appendonly", "appendfsync", "maxmemory-policy", "save"):
            conf.update({text(k): v for k, v in client.config_get(name).items()})
    except redis.ResponseError:
        return [
            "cannot read the server's configuration (CONFIG is disabled); check by hand that "
            "appendonly is yes and maxmemory-policy is noeviction"
        ]

    def val(name: str) -> str:
        v = conf.get(name, "")
        return v.decode() if isinstance(v, bytes) else str(v)

    if val("appendonly") != "yes":
        problems.append(
            "appendonly is " + (val("appendonly") or "no") + ": a Redis crash or restart loses "
            "every request since the last snapshot; set `appendonly yes`"
        )
    elif val("appendfsync") == "no":
        problems.append(
            "appendfsync is no: a crash can lose up to ~30 s of accepted requests; "
            "use `appendfsync everysec` (1 s) or `always` (none)"
        )
    policy = val("maxmemory-policy")
    if policy and policy != "noeviction":
        problems.append(
            f"maxmemory-policy is {policy}: Redis may evict requests and results "
            "under memory pressure; set `maxmemory-policy noeviction`"
        )
    return problems


def warn_durability(client: redis.Redis) -> list[str]:
    problems = durability_warnings(client)
    for p in problems:
        log.warning("redis may lose data", problem=p)
    return problems


def publish_accounts(client: redis.Redis, keys: Keys, settings: Settings) -> None:
    """Tell producers which accounts the daemon serves, so they can refuse unknown ones."""
    pipe = client.pipeline()
    pipe.delete(keys.accounts())
    pipe.sadd(keys.accounts(), *settings.accounts)
    # A pause marks a refused API key; a daemon starting with (maybe) new keys tries again.
    for account in settings.accounts:
        pipe.delete(keys.paused(account))
    pipe.execute()


def server_time_ms(client: redis.Redis) -> int:
    sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000


def text(value: Any) -> str:
    """Redis bytes (or None) to str."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
