"""The cluster and Sentinel fixtures, for the tests of the fixtures themselves."""

from tests.support.cluster import (
    redis_cluster,
    redis_cluster_factory,
    redis_cluster_session,
    shared_redis_cluster,
)

__all__ = [
    "redis_cluster",
    "redis_cluster_factory",
    "redis_cluster_session",
    "shared_redis_cluster",
]
