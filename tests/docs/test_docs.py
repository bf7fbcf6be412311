"""The README and the getting-started page run as written, and the reference is current.

Each page's marked blocks run in order in a scratch copy of the checkout, against the fresh
Redis, emulator and daemon that its own `make dev` block starts; a broken example fails here.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.docs.blocks import ROOT, Workspace, blocks
from tests.support.daemon import wait_for

PAGES = [ROOT / "README.md", ROOT / "docs" / "getting-started.md"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_block_is_marked_run_or_not_run(page: Path) -> None:
    """Each code block of the page says whether the docs test runs it (and why not)."""
    unmarked = [b.where for b in blocks(page) if b.lang != "text" and b.mark is None]
    assert not unmarked, f"blocks with neither <!-- run --> nor <!-- not run: why -->: {unmarked}"
    skipped = [b.where for b in blocks(page) if b.mark == "not run" and not b.how]
    assert not skipped, f"<!-- not run --> needs a reason: {skipped}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_page_runs_as_written(page: Path, tmp_path: Path) -> None:
    """Every block marked run runs in order, as written, and exits 0; Ctrl-C stops the dev loop."""
    runnable = [b for b in blocks(page) if b.mark == "run"]
    assert any("background" in b.how for b in runnable), "the page starts no dev loop"
    work = Workspace(tmp_path / "checkout")
    try:
        for block in runnable:
            work.run(block)
    finally:
        codes = work.interrupt()
    # `make` itself ends by SIGINT on Ctrl-C, as in a terminal; what matters is that the dev
    # loop under it stopped everything it started.
    assert all(code in (0, -signal.SIGINT) for code in codes), f"{codes}\n{work.logs()}"
    wait_for(lambda: "batchd dev: stopped" in work.logs(), 30, "the dev loop to stop")
    assert not (work.cwd / "batchd-data" / "dev" / "env.sh").exists()


def test_getting_started_prints_a_result_within_seconds(tmp_path: Path) -> None:
    """The getting-started Python example prints `succeeded` and its reply in seconds: well under
    the 60 s the default window alone would take."""
    page = ROOT / "docs" / "getting-started.md"
    work = Workspace(tmp_path / "checkout")
    try:
        for block in blocks(page):
            if block.mark != "run":
                continue
            started = time.monotonic()
            out = work.run(block)
            if block.code.strip() == "python hello.py":
                elapsed = time.monotonic() - started
                assert out.startswith("succeeded "), out
                # Seconds, not the minute and more of the default windows (a 60 s cut + polls);
                # generous, as the machine may be busy with other tests (a quiet one: under 10 s).
                assert elapsed < 55, f"first result after {elapsed:.1f} s"
                return
    finally:
        work.interrupt()
    pytest.fail("no `python hello.py` block on the page")


def test_configuration_reference_is_current() -> None:
    """docs/configuration.md is what scripts/config_reference.py makes from the settings now."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "config_reference.py")],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert proc.stdout == page, (
        "docs/configuration.md is out of date: run `python scripts/config_reference.py --write`"
    )
