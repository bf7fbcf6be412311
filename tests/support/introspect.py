"""What the data Redis says about itself, summed over every master when it is a cluster.

Tests read INFO, DBSIZE, COMMANDSTATS and CLIENT LIST to pin behaviour (a waiter blocks, a
submit is one call, nothing was stored); on a cluster each of those is one node's answer only.
"""

from __future__ import annotations

from typing import Any, cast

import redis
import redis.asyncio as aredis
import redis.asyncio.cluster as acluster
import redis.cluster


def masters(client: Any) -> list[redis.Redis]:
    """A connection to each master: the server itself, or every primary of a cluster."""
    if isinstance(client, redis.cluster.RedisCluster):
        return [
            client.get_redis_connection(node)
            for node in client.get_primaries()  # type: ignore[no-untyped-call]
        ]
    return [cast(redis.Redis, client)]


def blocked_clients(client: Any) -> int:
    """Clients blocked in a command (BLMOVE, BLMPOP) on any master."""
    return sum(int(m.info("clients")["blocked_clients"]) for m in masters(client))


async def ablocked_clients(client: aredis.Redis | acluster.RedisCluster) -> int:
    """The asyncio twin of `blocked_clients`."""
    if isinstance(client, acluster.RedisCluster):
        answers = await client.info("clients", target_nodes=client.get_primaries())
        return sum(int(info["blocked_clients"]) for info in answers.values())
    return int((await client.info("clients"))["blocked_clients"])


def dbsize(client: Any) -> int:
    """Keys on every master."""
    return sum(int(m.dbsize()) for m in masters(client))


def command_calls(client: Any) -> dict[str, int]:
    """Calls per command every master has run so far (commands run by scripts included)."""
    calls: dict[str, int] = {}
    for m in masters(client):
        for name, stats in m.info("commandstats").items():
            command = name.removeprefix("cmdstat_")
            calls[command] = calls.get(command, 0) + int(stats["calls"])
    return calls


def reset_stats(client: Any) -> None:
    """CONFIG RESETSTAT on every master."""
    for m in masters(client):
        m.config_resetstat()


def clients_named(client: Any, name: str) -> list[int]:
    """Per master, how many connections carry this client name."""
    return [sum(1 for c in m.client_list() if c["name"] == name) for m in masters(client)]
