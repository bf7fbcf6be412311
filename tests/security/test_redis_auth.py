"""batchd end to end on a Redis that asks who it is: an ACL user, TLS (a password alone is
test_leaks.py's Redis, where the same pipeline runs and the password is looked for everywhere).

Each runs the whole pipeline (daemon, stage workers, webhook sender, producer) on that Redis;
the URL carries the credentials (`redis://user:password@host`, `rediss://...?ssl_ca_certs=`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.security.conftest import AuthRedis, Certificates, redis_has_tls, run_pipeline
from tests.support.emulator import EmulatorProcess
from tests.support.redis import redis_server_binary
from tests.webhooks.support import Receiver

PASSWORD = "s3cret-redis-passw0rd"
# What batchd and rq need, and no more: their own keys and channels, no admin commands.
ACL_RULES = ["on", f">{PASSWORD}", "~batchd:*", "~rq:*", "&rq:*", "+@all", "-@dangerous",
             "+info", "+client|setname", "+client|getname"]  # fmt: skip


def assert_pipeline_works(
    tmp: Path, url: str, emulator: EmulatorProcess, receiver: Receiver
) -> str:
    for outcome in run_pipeline(tmp, url, emulator, receiver):
        statuses = sorted(r.status for r in outcome.results)
        assert statuses == ["errored"] + ["succeeded"] * 5
        assert len(outcome.replies) == 3 and len(outcome.webhooks) == 3
        assert outcome.daemon.alive()
        return outcome.daemon.log_text()
    raise AssertionError("the pipeline yielded nothing")


def test_acl_user_limited_to_batchd_keys(
    tmp_path: Path, emulator: EmulatorProcess, receiver: Receiver
) -> None:
    """An ACL user with only batchd's and rq's keys and no admin commands; default user off."""
    extra = ["--user", "default", "off", "--user", "batchd", *ACL_RULES]
    server = AuthRedis(tmp_path / "redis", f"redis://batchd:{PASSWORD}@127.0.0.1:{{port}}/0", extra)
    server.start()
    try:
        with pytest.raises(redis.RedisError):
            redis.Redis.from_url(server.url).set("elsewhere:key", "1")
        log = assert_pipeline_works(tmp_path, server.url, emulator, receiver)
        assert PASSWORD not in log
    finally:
        server.kill()


def test_tls_redis(
    tmp_path: Path, emulator: EmulatorProcess, receiver: Receiver, certificates: Certificates
) -> None:
    """rediss:// with a CA made for the test: every connection of batchd's speaks TLS."""
    if not redis_has_tls():
        pytest.skip(f"{redis_server_binary()} was built without TLS (--tls-port refused)")
    extra = ["--port", "0", "--tls-port", "{port}", "--tls-cert-file", str(certificates.cert),
             "--tls-key-file", str(certificates.key), "--tls-ca-cert-file", str(certificates.ca),
             "--tls-auth-clients", "no"]  # fmt: skip
    url = f"rediss://127.0.0.1:{{port}}/0?ssl_ca_certs={certificates.ca}"
    server = AuthRedis(tmp_path / "redis", url, extra)
    server.extra = [a.format(port=server.port) for a in extra]
    server.start()
    try:
        with pytest.raises(redis.ConnectionError):
            redis.Redis(port=server.port, socket_timeout=2).ping()  # plain TCP is refused
        assert_pipeline_works(tmp_path, server.url, emulator, receiver)
    finally:
        server.kill()
