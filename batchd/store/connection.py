"""Connections to batchd's Redis: standalone, Sentinel or Cluster, sync and asyncio.

One place turns a URL into a client and reads the server's persistence and eviction settings,
saying, naming the setting, where they can lose requests.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any, cast

import redis
import redis.asyncio as aredis
from redis.asyncio.cluster import ClusterNode as AsyncClusterNode
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.asyncio.sentinel import Sentinel as AsyncSentinel
from redis.cluster import ClusterNode, RedisCluster
from redis.sentinel import Sentinel

from batchd.defaults import (
    ASYNC_POOL_SIZE,
    ASYNC_POOL_WAIT,
    HEALTH_CHECK_INTERVAL,
    SOCKET_TIMEOUT,
    SYNC_POOL_SIZE,
)
from batchd.errors import ConfigError

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
SCHEMES = ("redis", "rediss", "unix", SENTINEL_SCHEME, *CLUSTER_SCHEMES)

#: A sync client batchd uses: one server (maybe found through Sentinel), or a cluster.
SyncRedis = redis.Redis | RedisCluster
AsyncRedis = aredis.Redis | AsyncRedisCluster


@dataclass(frozen=True)
class RedisURL:
    """A parsed Redis URL of any form batchd accepts."""

    scheme: str
    nodes: list[tuple[str, int]] = field(default_factory=list)
    service: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    raw: str = ""

    @property
    def cluster(self) -> bool:
        return self.scheme in CLUSTER_SCHEMES

    @property
    def sentinel(self) -> bool:
        return self.scheme == SENTINEL_SCHEME


def parse_url(url: str) -> RedisURL:
    """Parse and check a Redis URL; ConfigError (naming `redis_url`) when it cannot work.

    `redis://`, `rediss://`, `unix://`; `redis+sentinel://host:port[,host:port...]/service[/db]`
    (the master of that service, followed across fail-overs); `redis+cluster://host:port[,...]`
    and `rediss+cluster://` (a Redis Cluster, from any of its nodes).
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"redis_url: not a valid URL: {exc}", ["redis_url"]) from None
    scheme = parts.scheme
    if scheme not in SCHEMES:
        raise ConfigError(
            "redis_url: must start with " + ", ".join(f"{s}://" for s in SCHEMES),
            ["redis_url"],
        )
    if scheme in ("redis", "rediss", "unix"):
        if scheme == "unix" and not parts.path:
            raise ConfigError("redis_url: a unix:// URL needs the socket's path", ["redis_url"])
        try:
            parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
        except ValueError as exc:
            raise ConfigError(f"redis_url: not a valid URL: {exc}", ["redis_url"]) from None
        return RedisURL(scheme, raw=url)
    auth, _, hosts = parts.netloc.rpartition("@")
    default_port = "26379" if scheme == SENTINEL_SCHEME else "6379"
    nodes: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host:
            host, port = port, default_port
        if not host or not port.isdigit():
            raise ConfigError(f"redis_url: bad address {item!r}", ["redis_url"])
        nodes.append((host, int(port)))
    options: dict[str, Any] = {}
    if auth:
        user, _, password = auth.partition(":")
        if user:
            options["username"] = urllib.parse.unquote(user)
        if password:
            options["password"] = urllib.parse.unquote(password)
    path = [p for p in parts.path.split("/") if p]
    if scheme == SENTINEL_SCHEME:
        if not path:
            raise ConfigError("redis_url: a sentinel URL needs /<service name>", ["redis_url"])
        options["db"] = int(path[1]) if len(path) > 1 and path[1].isdigit() else 0
        return RedisURL(scheme, nodes, path[0], options, url)
    if path and path != ["0"]:
        raise ConfigError(
            "redis_url: a Redis Cluster has only database 0; drop the /<db> part", ["redis_url"]
        )
    return RedisURL(scheme, nodes, "", options, url)


def is_cluster_url(url: str | None) -> bool:
    return bool(url) and urllib.parse.urlsplit(url or "").scheme in CLUSTER_SCHEMES


def connect(url: str, **kwargs: Any) -> Any:
    """A sync client (`redis.Redis` or `RedisCluster`); connections are checked before reuse,
    so a Redis restart heals itself."""
    parsed = parse_url(url)
    kwargs.setdefault("health_check_interval", HEALTH_CHECK_INTERVAL)
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
    if parsed.sentinel:
        sentinel = Sentinel(parsed.nodes, socket_timeout=kwargs["socket_timeout"])  # type: ignore[no-untyped-call, unused-ignore]
        master = sentinel.master_for(parsed.service, **parsed.options, **kwargs)  # type: ignore[no-untyped-call, unused-ignore]
        return cast(redis.Redis, master)
    if parsed.cluster:
        kwargs.pop("health_check_interval", None)
        kwargs.setdefault("socket_keepalive", True)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in parsed.nodes],  # type: ignore[no-untyped-call, unused-ignore]
            ssl=parsed.scheme == "rediss+cluster",
            **parsed.options,
            **kwargs,
        )
    if not url.startswith("unix:"):
        kwargs.setdefault("socket_keepalive", True)
    # Callers beyond the pool's size wait for a connection (a thread per `wait`, say) rather
    # than fail.
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=kwargs.pop("max_connections", SYNC_POOL_SIZE),
        timeout=ASYNC_POOL_WAIT,
        **kwargs,
    )
    return redis.Redis.from_pool(pool)


def connect_async(url: str, **kwargs: Any) -> Any:
    """The asyncio twin of `connect`."""
    parsed = parse_url(url)
    kwargs.setdefault("health_check_interval", HEALTH_CHECK_INTERVAL)
    kwargs.setdefault("socket_timeout", SOCKET_TIMEOUT)
    if parsed.sentinel:
        sentinel = AsyncSentinel(parsed.nodes, socket_timeout=kwargs["socket_timeout"])  # type: ignore[no-untyped-call, unused-ignore]
        return cast(aredis.Redis, sentinel.master_for(parsed.service, **parsed.options, **kwargs))
    if parsed.cluster:
        kwargs.pop("health_check_interval", None)
        max_connections = kwargs.pop("max_connections", None)
        if max_connections is not None:
            kwargs["max_connections"] = max_connections
        return AsyncRedisCluster(
            startup_nodes=[AsyncClusterNode(h, p) for h, p in parsed.nodes],
            ssl=parsed.scheme == "rediss+cluster",
            **parsed.options,
            **kwargs,
        )
    # A pool that makes callers wait for a free connection (up to ASYNC_POOL_WAIT s) rather
    # than fail: a burst of concurrent calls queues instead of erroring.
    pool = aredis.BlockingConnectionPool.from_url(
        url,
        max_connections=kwargs.pop("max_connections", ASYNC_POOL_SIZE),
        timeout=ASYNC_POOL_WAIT,
        **kwargs,
    )
    return aredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it


def is_cluster(client: Any) -> bool:
    return isinstance(client, RedisCluster | AsyncRedisCluster)


def server_time_ms(client: Any) -> int:
    """Redis's clock (ms): the one clock batchd schedules, leases and compares by."""
    if isinstance(client, RedisCluster):
        answer = client.time(target_nodes=RedisCluster.RANDOM)
        if isinstance(answer, dict):  # one answer per node: any will do
            answer = next(iter(answer.values()))
        sec, usec = answer
    else:
        sec, usec = client.time()
    return int(sec) * 1000 + int(usec) // 1000


def node_clients(client: Any) -> list[redis.Redis]:
    """One client per master: the server itself, or each master of a cluster."""
    if isinstance(client, RedisCluster):
        return [
            cast(redis.Redis, n.redis_connection)
            for n in client.get_primaries()  # type: ignore[no-untyped-call, unused-ignore]
            if n.redis_connection is not None
        ]
    return [cast(redis.Redis, client)]


def durability_warnings(client: Any) -> list[str]:
    """Each way this Redis (each master of a cluster) can lose acknowledged requests, as a
    sentence naming the setting."""
    problems: list[str] = []
    for node in node_clients(client):
        try:
            conf: dict[str, Any] = {}
            for name in ("appendonly", "appendfsync", "maxmemory-policy", "save"):
                conf.update({text(k): v for k, v in node.config_get(name).items()})
        except redis.ResponseError:
            return [
                "cannot read the server's configuration (CONFIG is disabled); check by hand "
                "that appendonly is yes and maxmemory-policy is noeviction"
            ]
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            if not isinstance(client, RedisCluster):
                raise
            # A master down (its replica taking over, say) does not keep batchd from starting.
            problems.append(f"cannot read the configuration of a cluster node ({exc})")
            continue

        def val(name: str, conf: dict[str, Any] = conf) -> str:
            v = conf.get(name, "")
            return v.decode() if isinstance(v, bytes) else str(v)

        if val("appendonly") != "yes":
            problems.append(
                "appendonly is " + (val("appendonly") or "no") + ": a Redis crash or restart "
                "loses every request since the last snapshot; set `appendonly yes`"
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
    return sorted(set(problems))


def text(value: Any) -> str:
    """Redis bytes (or None) to str."""
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
