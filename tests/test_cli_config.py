"""The command line as an operator meets it: help, usage errors, bad configuration, not found."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BAD_CONFIG = """\
default_account = "nope"
colour = "blue"

[batch]
max_requests = 100001

[poll]
min_interval = -1
"""
BAD_FIELDS = ("default_account", "colour", "batch.max_requests", "poll.min_interval")


def batchd(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`python -m batchd ARGS` in `cwd`, with no BATCHD_ variable but those in `env`."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    return subprocess.run(
        [sys.executable, "-m", "batchd", *args],
        cwd=cwd,
        env=clean | (env or {}),
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_names_every_bad_field(stderr: str) -> None:
    assert "Traceback" not in stderr
    lines = [line.strip() for line in stderr.splitlines()]
    for field in BAD_FIELDS:
        assert any(line.startswith(f"{field}:") for line in lines), (field, stderr)


@pytest.fixture
def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(BAD_CONFIG, encoding="utf-8")
    return path


def test_help_lists_subcommands(tmp_path: Path) -> None:
    """batchd --help exits 0 and names the operator's subcommands."""
    proc = batchd("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for command in ("run", "submit", "status", "batches", "requests", "flush", "webhooks"):
        assert f"\n    {command} " in proc.stdout, command


def test_unknown_subcommand_exits_2(tmp_path: Path) -> None:
    """An unknown subcommand is a usage error: exit 2 and a message saying so."""
    proc = batchd("frobnicate", cwd=tmp_path)
    assert proc.returncode == 2
    assert "frobnicate" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_config_exits_2_naming_every_bad_field(tmp_path: Path, bad_config: Path) -> None:
    """batchd --config bad.toml status exits 2 with one message naming each bad field."""
    proc = batchd("--config", str(bad_config), "status", cwd=tmp_path)
    assert proc.returncode == 2
    assert_names_every_bad_field(proc.stderr)
    assert proc.stderr.count("batchd:") == 1
    assert proc.stdout == ""


def test_config_after_subcommand_is_read(tmp_path: Path, bad_config: Path) -> None:
    """batchd status --config bad.toml reads the file like the flag before the subcommand."""
    proc = batchd("status", "--config", str(bad_config), cwd=tmp_path)
    assert proc.returncode == 2
    assert_names_every_bad_field(proc.stderr)


def test_bad_config_from_batchd_config_exits_2(tmp_path: Path, bad_config: Path) -> None:
    """A bad file named by BATCHD_CONFIG is reported the same way."""
    proc = batchd("status", cwd=tmp_path, env={"BATCHD_CONFIG": str(bad_config)})
    assert proc.returncode == 2
    assert_names_every_bad_field(proc.stderr)


def test_bad_toml_syntax_exits_2(tmp_path: Path) -> None:
    """A config file that is not TOML exits 2 naming the file, without a traceback."""
    path = tmp_path / "broken.toml"
    path.write_text("[batch\nmax_wait = 5\n", encoding="utf-8")
    proc = batchd("--config", str(path), "status", cwd=tmp_path)
    assert proc.returncode == 2
    assert str(path) in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_environment_value_exits_2(tmp_path: Path) -> None:
    """A BATCHD_ variable that does not parse exits 2 naming its field."""
    proc = batchd("status", cwd=tmp_path, env={"BATCHD_BATCH__MAX_WAIT": "soon"})
    assert proc.returncode == 2
    assert "batch.max_wait" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_requests_show_unknown_id_exits_3(tmp_path: Path, redis_url: str) -> None:
    """batchd requests show with an id batchd does not know exits 3 (not found)."""
    proc = batchd("--redis-url", redis_url, "requests", "show", "not-an-id", cwd=tmp_path)
    assert proc.returncode == 3
    assert "not-an-id" in proc.stderr
    assert "Traceback" not in proc.stderr
