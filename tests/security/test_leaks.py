"""Secrets never leak: after a whole pipeline run on a password-protected Redis, the API key,
the webhook secret and the Redis password appear in no log line, no Redis key or value, no
result and no webhook.

The run includes a proxy that echoes the API key into an error page, as some edges do.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from tests.catalogue.mangler import Answer, Mangler, Rule
from tests.security.conftest import AuthRedis, run_pipeline
from tests.security.scan import redis_values
from tests.support.emulator import EmulatorProcess
from tests.webhooks.support import SECRET as WEBHOOK_SECRET
from tests.webhooks.support import Receiver

PASSWORD = "leak-test-redis-passw0rd"


def test_no_secret_in_logs_redis_results_or_webhooks(
    tmp_path: Path, emulator: EmulatorProcess, receiver: Receiver
) -> None:
    """The pipeline works behind requirepass; then the daemon's log, a dump of every Redis key,
    every result and every webhook are scanned for each secret."""
    api_key = emulator.api_key
    mangler = Mangler(emulator.url)
    mangler.start()
    echo = f"<html><body>502 Bad Gateway<pre>x-api-key: {api_key}</pre></body></html>"
    echoing = mangler.add(
        Rule("create", Answer(status=502, body=echo.encode(), content_type="text/html"))
    )
    server = AuthRedis(tmp_path / "redis", f"redis://:{PASSWORD}@127.0.0.1:{{port}}/0",
                       ["--requirepass", PASSWORD])  # fmt: skip
    server.start()
    try:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=server.port).ping()
        for outcome in run_pipeline(tmp_path, server.url, emulator, receiver, api_url=mangler.url):
            assert echoing.hits == 1, "the echoing proxy was never met"
            assert sorted(r.status for r in outcome.results) == ["errored"] + ["succeeded"] * 5
            secrets = {"API key": api_key, "webhook secret": WEBHOOK_SECRET,
                       "Redis password": PASSWORD}  # fmt: skip
            found: list[str] = []
            log = outcome.daemon.log_text()
            assert "batch creation ended without an answer" in log
            for name, secret in secrets.items():
                if secret in log:
                    found.append(f"daemon log holds the {name}")
            # The scan must be able to find what it looks for: plant one, see it, remove it.
            counters = outcome.client.keys.counters(outcome.client.settings.default_account)
            outcome.client.redis.hset(counters, "planted", f"x{api_key}x")
            assert any(api_key.encode() in v for _, v in redis_values(outcome.client.redis))
            outcome.client.redis.hdel(counters, "planted")
            keys = 0
            for key, value in redis_values(outcome.client.redis):
                keys += 1
                for name, secret in secrets.items():
                    if secret.encode() in key or secret.encode() in value:
                        found.append(f"Redis key {key!r} holds the {name}")
            assert keys > 20, "the dump saw too little of Redis to mean anything"
            delivered = [r.raw for r in outcome.results + outcome.replies]
            delivered += [w.body + repr(w.headers).encode() for w in outcome.webhooks]
            for blob in delivered:
                for name, secret in secrets.items():
                    if secret.encode() in blob:
                        found.append(f"a result or webhook holds the {name}")
            assert found == []
    finally:
        server.kill()
        mangler.stop()
