"""The code blocks of a Markdown page and the marks that say which to run, and a runner that runs
them in order, as written, in a scratch copy of the checkout.

A fenced block is preceded by one of (an HTML comment, so neither GitHub nor the site shows it):
`<!-- run -->`, `<!-- run: background, ready when PATH exists -->`, `<!-- run: save as FILE -->`,
or `<!-- not run: why -->`. Blocks of `text` are shown output, never run.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^```(\w*)\s*$")
_MARK = re.compile(r"^<!--\s*(run|not run)\s*(?::\s*(.*?))?\s*-->$")
_READY = re.compile(r"^background, ready when (\S+) exists$")
_SAVE = re.compile(r"^save as (\S+)$")
#: Entries of the checkout the scratch copy leaves out: state of earlier runs, and the project
#: file, which is copied (see Workspace) rather than linked.
_LEFT_OUT = {".git", "batchd-data", "site", "pyproject.toml", ".pytest_cache", ".hypothesis"}
BLOCK_TIMEOUT = 120.0
READY_TIMEOUT = 180.0


@dataclass(frozen=True)
class Block:
    """One fenced block: where it starts, its language, its text and how it is marked."""

    page: str
    line: int
    lang: str
    code: str
    mark: str | None  # "run", "not run", or None when unmarked
    how: str  # the mark's detail: "background, ready when ...", "save as ...", a reason

    @property
    def where(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of the page, in order, with the mark just above it."""
    found: list[Block] = []
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start, lang = i, fence.group(1)
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        i += 1
        above = next((ln.strip() for ln in reversed(lines[:start]) if ln.strip()), "")
        mark = _MARK.match(above)
        found.append(
            Block(
                page=path.name,
                line=start + 1,
                lang=lang,
                code="\n".join(body) + "\n",
                mark=mark.group(1) if mark else None,
                how=(mark.group(2) or "") if mark else "",
            )
        )
    return found


def _without_venv(path: str) -> str:
    """PATH without this virtualenv's bin: the page's own steps must put batchd on PATH."""
    venv_bin = str(Path(sys.prefix) / "bin")
    return os.pathsep.join(p for p in path.split(os.pathsep) if p and p != venv_bin)


class Workspace:
    """A scratch copy of the checkout (links to its files, a fresh batchd-data) in which a page
    runs as a new user would run it, each block in order, the shell's state carried along."""

    def __init__(self, directory: Path) -> None:
        self.cwd = directory
        directory.mkdir(parents=True, exist_ok=True)
        for entry in ROOT.iterdir():
            if entry.name not in _LEFT_OUT:
                (directory / entry.name).symlink_to(entry)
        # The project file is copied with an old time, so `make` finds the virtualenv's stamps
        # current and installs nothing into the scratch copy; the stamps say what the test
        # environment has (the dev extra holds the demo's).
        project = directory / "pyproject.toml"
        project.write_bytes((ROOT / "pyproject.toml").read_bytes())
        os.utime(project, (0, 0))
        venv = ROOT / ".venv"
        if venv.resolve() == Path(sys.prefix).resolve():
            for stamp in (venv / ".installed-stamp", venv / ".demo-stamp"):
                if not stamp.exists():
                    stamp.touch()
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("BATCHD_", "ANTHROPIC_", "VIRTUAL_ENV", "PYTEST_"))
        }
        self.env["PATH"] = _without_venv(os.environ.get("PATH", ""))
        self._state = directory.parent / f"{directory.name}.env"
        self.background: list[tuple[Block, subprocess.Popen[bytes], Path]] = []

    def run(self, block: Block) -> str:
        """Run one marked block; returns its output. AssertionError, with the output, when it
        fails or runs too long."""
        assert block.mark == "run", block
        save = _SAVE.match(block.how)
        if save:
            (self.cwd / save.group(1)).write_text(block.code, encoding="utf-8")
            return ""
        ready = _READY.match(block.how)
        if ready:
            self._start(block, self.cwd / ready.group(1))
            return ""
        assert block.how == "", f"{block.where}: unknown mark detail {block.how!r}"
        return self._shell(block)

    def _shell(self, block: Block) -> str:
        script = f"set -eo pipefail\n{block.code}\nenv -0 > {self._state}\n"
        started = time.monotonic()
        try:
            proc = subprocess.run(
                ["bash", "-c", script], cwd=self.cwd, env=self.env, capture_output=True,
                timeout=BLOCK_TIMEOUT,
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(
                f"{block.where}: still running after {BLOCK_TIMEOUT:g} s\n{self.logs()}"
            ) from exc
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        if proc.returncode != 0:
            raise AssertionError(
                f"{block.where}: exit {proc.returncode} after {time.monotonic() - started:.1f} s"
                f"\n--- block\n{block.code}--- output\n{out}\n{self.logs()}"
            )
        raw = self._state.read_bytes()
        self.env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
        return out

    def _start(self, block: Block, ready: Path) -> None:
        log = self.cwd.parent / f"{self.cwd.name}.background-{block.line}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                ["bash", "-c", block.code], cwd=self.cwd, env=self.env, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        self.background.append((block, proc, log))
        deadline = time.monotonic() + READY_TIMEOUT
        while not ready.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"{block.where}: {ready.name} never appeared (exit {proc.poll()})\n"
                    f"{self.logs()}"
                )
            time.sleep(0.1)

    def logs(self) -> str:
        """What the background blocks printed, and the dev loop's daemon log, for a failure."""
        parts: list[str] = []
        for block, _, log in self.background:
            parts.append(f"--- {block.where} (background)\n{log.read_text(errors='replace')}")
        daemon_log = self.cwd / "batchd-data" / "dev" / "daemon.log"
        if daemon_log.exists():
            parts.append("--- daemon.log (tail)\n" + daemon_log.read_text(errors="replace")[-4000:])
        return "\n".join(parts)

    def interrupt(self, timeout: float = 60.0) -> list[int | None]:
        """Ctrl-C to every background block, as a terminal sends it; their exit codes."""
        codes: list[int | None] = []
        for _, proc, _ in self.background:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGINT)
            try:
                codes.append(proc.wait(timeout))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                codes.append(None)
        return codes
