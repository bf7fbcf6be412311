"""Fixtures of the console tests: the e2e stack (Redis, emulator, `batchd run`) with the console
on, and Debian's Chromium driven by Playwright, with a page that fails its test on any script
error. Screenshots go to a temporary directory; with UPDATE_CONSOLE_SHOTS=1 they replace the
docs' own in docs/console/.

Without Chromium or Playwright the browser tests skip, except under CI (`CI` set), where they
fail: `.ci/run` installs Chromium.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import httpx
import pytest

from batchd.console.auth import token_sha256
from tests.e2e.conftest import Stack, stack, submit
from tests.support.daemon import DaemonProcess, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page

__all__ = ["stack", "submit"]

ROOT = Path(__file__).resolve().parents[2]
DOC_SHOTS = ROOT / "docs" / "console"
_shots: Path | None = None
#: Flags for Chromium in a container: headless, no sandbox (root), nothing fetched from outside.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
WIDE = {"width": 1280, "height": 860}
NARROW = {"width": 375, "height": 800}

VIEWER_TOKEN = "bct_viewer-token-for-tests-0123456789abcdef"
OPERATOR_TOKEN = "bct_operator-token-for-tests-0123456789abcd"


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _unavailable(why: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"{why}: the browser tests must run under CI (.ci/run installs chromium)")
    pytest.skip(why)


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    path = chromium_path()
    if path is None:
        _unavailable("no chromium on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("playwright is not installed (pip install -e '.[dev]')")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=path, args=CHROMIUM_FLAGS)
        try:
            yield b
        finally:
            b.close()


def token_env(**roles: str) -> str:
    """BATCHD_CONSOLE__TOKENS for tokens given as name=token (role: the name's prefix)."""
    tokens = [
        {"name": name, "sha256": token_sha256(tok), "role": name.split("_")[0]}
        for name, tok in roles.items()
    ]
    return json.dumps(tokens)


@dataclass
class Console:
    """A `batchd run` with the console on, and where it listens."""

    daemon: DaemonProcess
    url: str
    stack: Stack
    errors: list[str] = field(default_factory=list)

    def api(self, path: str, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = httpx.get(self.url + path, headers=headers, timeout=20)
        response.raise_for_status()
        return response.json()


def console_url(daemon: DaemonProcess, timeout: float = 30.0) -> str:
    """The console's URL, from the daemon's `console.listening` log line."""

    def find() -> str | None:
        for line in daemon.log_text().splitlines():
            if '"console.listening"' in line:
                return str(json.loads(line)["url"])
        return None

    return str(wait_for(find, timeout, "the console to listen"))


StartConsole = Callable[..., Console]


@pytest.fixture
def start_console(stack: Stack) -> StartConsole:
    """Start a daemon with the console on a free port; extra environment as keywords."""

    def start(**env: str) -> Console:
        env = {"BATCHD_CONSOLE__ENABLED": "true", "BATCHD_CONSOLE__PORT": "0", **env}
        d = DaemonProcess(stack.tmp / f"daemon{len(stack.daemons)}", stack.env(**env))
        stack.daemons.append(d)
        d.start()
        return Console(d, console_url(d), stack)

    return start


@pytest.fixture
def console(start_console: StartConsole) -> Console:
    """An open console (no tokens, on loopback)."""
    return start_console()


def new_page(
    browser: Browser, url: str, errors: list[str], viewport: dict[str, int] = WIDE
) -> Page:
    context = browser.new_context(viewport=viewport, device_scale_factor=1)  # type: ignore[arg-type]
    page = context.new_page()

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error" and "401" not in msg.text:
            errors.append(msg.text)

    page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
    page.on("console", on_console)
    page.goto(url)
    return page


@pytest.fixture
def page(browser: Browser, console: Console) -> Iterator[Page]:
    """A wide browser page on the open console; fails the test on any script error."""
    p = new_page(browser, console.url, console.errors)
    try:
        yield p
    finally:
        p.context.close()
    assert console.errors == [], console.errors


def loaded(page: Page, name: str, timeout: float = 30_000) -> None:
    """Wait until the page `name` has rendered its data at least once."""
    page.wait_for_selector(f'#view[data-loaded="{name}"]', timeout=timeout)


def visit(page: Page, route: str, name: str) -> None:
    """Go to a page by its hash route and wait for its data."""
    page.evaluate("r => { location.hash = r }", f"#/{route}")
    loaded(page, name)


def shots_dir() -> Path:
    """Where screenshots go: the docs' own directory when asked to update it, else a temporary one
    (a test run leaves the working tree as it found it)."""
    global _shots
    if _shots is None:
        if os.environ.get("UPDATE_CONSOLE_SHOTS") == "1":
            DOC_SHOTS.mkdir(parents=True, exist_ok=True)
            _shots = DOC_SHOTS
        else:
            _shots = Path(tempfile.mkdtemp(prefix="batchd-console-shots-"))
    return _shots


def shoot(page: Page, name: str, *, full: bool = False) -> Path:
    """A screenshot for the docs: what the viewport shows, or the whole page."""
    path = shots_dir() / f"{name}.png"
    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    page.screenshot(path=str(path), full_page=full)
    return path


def no_horizontal_overflow(page: Page) -> bool:
    return bool(
        page.evaluate(
            "() => document.documentElement.scrollWidth <= window.innerWidth"
            " && document.body.scrollWidth <= window.innerWidth"
        )
    )
