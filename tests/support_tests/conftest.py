"""The cluster and Sentinel fixtures, for the tests of the fixtures themselves."""

from tests.support.cluster import (
    redis_cluster,
    redis_cluster_factory,
    redis_cluster_session,
    shared_redis_cluster,
)
from tests.support.sentinel import redis_sentinel, redis_sentinel_factory

__all__ = [
    "redis_cluster",
    "redis_cluster_factory",
    "redis_cluster_session",
    "redis_sentinel",
    "redis_sentinel_factory",
    "shared_redis_cluster",
]
