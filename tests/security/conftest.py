"""Fixtures of the security tests: Redis behind a password, an ACL user or TLS (certificates made
here with the openssl CLI), and a whole pipeline run through a daemon on it."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from batchd import Client, Result, Settings
from tests.support.daemon import DaemonProcess, daemon_env
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer, redis_server_binary
from tests.webhooks.support import SECRET as WEBHOOK_SECRET
from tests.webhooks.support import Received, Receiver

PARAMS = {
    "model": "claude-sonnet-4-5",
    "max_tokens": 16,
    "messages": [{"role": "user", "content": "hello"}],
}


class AuthRedis(RedisServer):
    """A RedisServer reached through `url`, which may carry a user, a password or TLS options."""

    def __init__(self, directory: Path, url_template: str, extra: list[str]) -> None:
        super().__init__(directory, extra=extra)
        self.url_template = url_template

    @property
    def url(self) -> str:
        return self.url_template.format(port=self.port)


@dataclass
class Certificates:
    ca: Path
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    """A throwaway CA and a server certificate for 127.0.0.1, made with the openssl CLI."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: no certificates for the TLS test")
    d = tmp_path_factory.mktemp("tls")
    (d / "san.cnf").write_text(
        "[req]\ndistinguished_name = dn\n[dn]\n[ext]\n"
        "subjectAltName = IP:127.0.0.1,DNS:localhost\nbasicConstraints = CA:FALSE\n"
        "extendedKeyUsage = serverAuth\n"
    )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out",
             "ca.pem", "-days", "2", "-subj", "/CN=batchd test CA", cwd=d)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out",
             "server.csr", "-subj", "/CN=localhost", cwd=d)  # fmt: skip
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "san.cnf",
             "-extensions", "ext", cwd=d)  # fmt: skip
    return Certificates(d / "ca.pem", d / "server.pem", d / "server.key")


def redis_has_tls() -> bool:
    """Whether this redis-server was built with TLS: one without it calls `tls-port` a bad
    directive; one with it only complains that it was told to listen nowhere."""
    proc = subprocess.run(
        [redis_server_binary(), "--port", "0", "--tls-port", "0", "--save", ""],
        capture_output=True,
        text=True,
        timeout=20,
    )
    return "Bad directive" not in proc.stdout + proc.stderr


@dataclass
class Outcome:
    """What one pipeline run produced, for the tests to inspect."""

    results: list[Result]
    replies: list[Result]
    webhooks: list[Received]
    daemon: DaemonProcess
    client: Client
    extra: dict[str, Any] = field(default_factory=dict)


def run_pipeline(
    tmp: Path,
    redis_url: str,
    emulator: EmulatorProcess,
    receiver: Receiver,
    *,
    api_url: str | None = None,
    n: int = 6,
) -> Iterator[Outcome]:
    """Daemon + producer on `redis_url`: n requests, half to a reply queue, half by webhook,
    one of them refused by the API. Yields once everything has ended and arrived."""
    env = daemon_env(redis_url, api_url or emulator.url, emulator.api_key, {
        "BATCHD_HTTP__ENABLED": "false",
        "BATCHD_WEBHOOKS__SECRET": WEBHOOK_SECRET,
        "BATCHD_WEBHOOKS__ALLOW_NETWORKS": '["127.0.0.1/32"]',
        "BATCHD_LOG__LEVEL": "debug",
    })  # fmt: skip
    daemon = DaemonProcess(tmp / "daemon", env)
    daemon.start()
    client = Client(settings=Settings.load(redis_url=redis_url))
    try:
        items: list[dict[str, Any]] = []
        for i in range(n):
            params = dict(PARAMS, temperature=5) if i == 0 else PARAMS
            if i % 2:
                items.append({"params": params, "callback_url": receiver.url(f"/hook/{i}")})
            else:
                items.append({"params": params, "reply_to": "secure", "metadata": {"i": i}})
        ids = []
        for outcome in client.submit_many(items):
            assert not isinstance(outcome, Exception), outcome
            ids.append(outcome.id)
        client.flush()
        try:
            results = [client.wait(i, timeout=60) for i in ids]
        except Exception:
            print(daemon.log_text()[-5000:])
            raise
        webhooks = receiver.wait_for(n // 2, timeout=30)
        replies: list[Result] = []
        with client.replies("secure", timeout=10) as stream:
            for reply in stream:
                replies.append(reply)
                if len(replies) == (n + 1) // 2:
                    break
        yield Outcome(results, replies, webhooks, daemon, client)
    finally:
        client.close()
        daemon.kill()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    r.start()
    try:
        yield r
    finally:
        r.stop()
