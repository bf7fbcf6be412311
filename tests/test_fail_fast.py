"""Configuration that fails fast: `batchd run` and the other commands stop at once, exit 2, and
say in one line what to change; a daemon that would only look healthy is never started."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchd.client import Client
from batchd.errors import BatchdError, RedisUnavailableError
from batchd.preflight import ROLES
from tests.support.daemon import wait_for

KEY = "sk-ant-api03-fail-fast-test"


def batchd(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m batchd ARGS` in `cwd`, with no BATCHD_ variable but those in `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    return subprocess.run(
        [sys.executable, "-m", "batchd", *args],
        cwd=cwd, env=clean | (env or {}), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def one_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed (asserting there is exactly one)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_run_without_an_api_key_exits_2_naming_the_variable(tmp_path: Path) -> None:
    """Plain `batchd run` (no key, the real API's default) exits 2 and names the key variable."""
    line = one_line(batchd("run", cwd=tmp_path))
    assert "BATCHD_ACCOUNTS__DEFAULT__API_KEY" in line
    assert "batchd dev" in line
    assert not (tmp_path / "batchd-data").exists(), "an embedded Redis was started anyway"


def test_run_names_every_account_without_a_key(tmp_path: Path, redis_url: str) -> None:
    """With two accounts and one key, the account without one is named."""
    env = {
        "BATCHD_REDIS_URL": redis_url,
        "BATCHD_ACCOUNTS": json.dumps({"default": {"api_key": KEY}, "other": {}}),
    }
    line = one_line(batchd("run", cwd=tmp_path, env=env))
    assert "BATCHD_ACCOUNTS__OTHER__API_KEY" in line
    assert "DEFAULT__API_KEY" not in line


def test_unknown_variable_exits_2_with_did_you_mean(tmp_path: Path) -> None:
    """A misspelled BATCHD_REDIS_URI stops `batchd run` and suggests BATCHD_REDIS_URL."""
    env = {
        "BATCHD_REDIS_URI": "redis://redis.internal:6379/0",
        "BATCHD_ACCOUNTS__DEFAULT__API_KEY": KEY,
    }
    line = one_line(batchd("run", cwd=tmp_path, env=env))
    assert "BATCHD_REDIS_URI" in line
    assert "did you mean BATCHD_REDIS_URL?" in line
    assert not (tmp_path / "batchd-data").exists(), "an embedded Redis was started anyway"


def test_single_underscore_section_is_caught(tmp_path: Path) -> None:
    """BATCHD_BATCH_MAX_WAIT (one underscore) is refused, pointing at BATCHD_BATCH__MAX_WAIT."""
    env = {"BATCHD_BATCH_MAX_WAIT": "5", "BATCHD_ACCOUNTS__DEFAULT__API_KEY": KEY}
    line = one_line(batchd("run", cwd=tmp_path, env=env))
    assert "did you mean BATCHD_BATCH__MAX_WAIT?" in line


def test_producer_variables_are_not_settings_but_allowed(tmp_path: Path, redis_url: str) -> None:
    """BATCHD_URL and BATCHD_TOKEN (what `batchd dev` exports) do not stop a command."""
    env = {"BATCHD_REDIS_URL": redis_url, "BATCHD_URL": "http://127.0.0.1:1", "BATCHD_TOKEN": "t"}
    proc = batchd("status", "--json", cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize(
    ("listener", "setting"),
    [("ingress", "ingress.port"), ("console", "console.port"), ("http", "http.port")],
)
def test_taken_port_of_a_listener_exits_2(
    tmp_path: Path, redis_url: str, taken_port: int, listener: str, setting: str
) -> None:
    """A listener it was told to serve whose port is taken stops the start, naming the setting."""
    env = {
        "BATCHD_REDIS_URL": redis_url,
        "BATCHD_ACCOUNTS__DEFAULT__API_KEY": KEY,
        "BATCHD_HTTP__PORT": "0",
        f"BATCHD_{listener.upper()}__PORT": str(taken_port),
    }
    if listener != "http":
        env[f"BATCHD_{listener.upper()}__ENABLED"] = "true"
    line = one_line(batchd("run", cwd=tmp_path, env=env))
    assert f"127.0.0.1:{taken_port}" in line
    assert setting in line
    assert f"BATCHD_{listener.upper()}__PORT" in line


def test_embedded_redis_starts_with_a_warning_naming_the_setting(tmp_path: Path) -> None:
    """With no Redis configured, `batchd run` says it embeds one and names redis_url."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")} | {
        "BATCHD_ACCOUNTS__DEFAULT__API_KEY": KEY,
        "BATCHD_HTTP__PORT": "0",
        "BATCHD_RUN__WORKERS": "0",
        "BATCHD_LOG__FORMAT": "json",
        "BATCHD_DATA_DIR": str(tmp_path / "data"),
    }
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "batchd", "run"], env=env, stdout=log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for(lambda: "batchd running" in log_path.read_text(), 60, "the daemon to start")
    finally:
        proc.terminate()
        proc.wait(30)
    events = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    [warning] = [e for e in events if e.get("event", "").startswith("no Redis configured")]
    assert warning["level"] == "warning"
    assert "redis_url (BATCHD_REDIS_URL)" in warning["event"]


def test_rq_url_without_redis_url_does_not_embed(tmp_path: Path, redis_url: str) -> None:
    """redis.rq_url set but redis_url not: exit 2 naming redis_url, no embedded Redis."""
    env = {"BATCHD_REDIS__RQ_URL": redis_url, "BATCHD_ACCOUNTS__DEFAULT__API_KEY": KEY}
    line = one_line(batchd("run", cwd=tmp_path, env=env))
    assert "redis_url (BATCHD_REDIS_URL)" in line
    assert not (tmp_path / "batchd-data").exists()


def test_unknown_role_is_one_line_naming_the_roles(tmp_path: Path) -> None:
    """`--roles workers` prints one line with the valid roles and a guess, no pydantic text."""
    line = one_line(batchd("run", "--roles", "workers", cwd=tmp_path))
    assert "'workers' is not a role (did you mean worker?)" in line
    assert ", ".join(ROLES) in line
    assert "pydantic" not in line


def test_list_variable_without_quotes_says_how_to_quote_it(tmp_path: Path) -> None:
    """A list that lost its JSON quotes gets the quoted form back, not pydantic's source names."""
    env = {"BATCHD_RUN__ROLES": "[aggregator,worker]"}
    line = one_line(batchd("status", cwd=tmp_path, env=env))
    assert """BATCHD_RUN__ROLES='["aggregator","worker"]'""" in line
    assert "EnvSettingsSource" not in line


def test_config_naming_a_directory_says_so(tmp_path: Path) -> None:
    """`--config DIR` says the path is a directory, not that it was not found."""
    line = one_line(batchd("--config", str(tmp_path), "status", cwd=tmp_path))
    assert "is a directory" in line
    assert "not found" not in line


def test_client_raises_a_batchd_error_when_redis_is_unreachable() -> None:
    """The Python client turns an unreachable Redis into RedisUnavailableError naming redis_url."""
    client = Client(f"redis://127.0.0.1:{free_port()}/0")
    params = {"model": "claude-sonnet-4-5", "max_tokens": 16,
              "messages": [{"role": "user", "content": "hi"}]}  # fmt: skip
    try:
        with pytest.raises(RedisUnavailableError, match="redis_url") as caught:
            client.submit(params)
    finally:
        client.close()
    assert isinstance(caught.value, BatchdError)
