"""deploy/Dockerfile: hadolint finds nothing, and the image has the shape operators expect.

Docker cannot run on the build machines, so the image itself is not built here.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.conftest import DEPLOY, DOCKERFILE, K8S, ROOT

HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


@pytest.mark.skipif(not Path(HADOLINT).exists(), reason="hadolint is not installed")
def test_hadolint_finds_nothing() -> None:
    """hadolint (every rule, info level included) reports no finding."""
    proc = subprocess.run([HADOLINT, "--format", "json", str(DOCKERFILE)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert json.loads(proc.stdout or "[]") == [], proc.stdout
    assert proc.returncode == 0, proc.stderr


def test_hadolint_would_catch_a_root_image(tmp_path: Path) -> None:
    """The lint is real: the same file ending as root fails it."""
    bad = tmp_path / "Dockerfile"
    bad.write_text(DOCKERFILE.read_text(encoding="utf-8") + "USER root\n", encoding="utf-8")
    proc = subprocess.run([HADOLINT, "--format", "json", str(bad)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "DL3002" in {finding["code"] for finding in json.loads(proc.stdout)}


def test_multi_stage_non_root_batchd_run() -> None:
    """Two stages, a numeric non-root user, SIGTERM to stop, `batchd run` by default."""
    ins = instructions()
    assert [i for i, _ in ins].count("FROM") >= 2
    users = [arg for i, arg in ins if i == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and not users[-1].startswith("0")
    last = dict(ins)
    assert last["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(last["ENTRYPOINT"]) == ["batchd"]
    assert json.loads(last["CMD"]) == ["run"]
    port = int(last["EXPOSE"])
    deployment = (K8S / "deployment.yaml").read_text(encoding="utf-8")
    assert f"containerPort: {port}" in deployment


def test_build_context_holds_what_copy_needs() -> None:
    """Each COPY source from the context survives Dockerfile.dockerignore and exists."""
    patterns = [
        line.strip()
        for line in (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for p in patterns:
            negate = p.startswith("!")
            pat = p.lstrip("!").rstrip("/")
            if fnmatch.fnmatch(path, pat) or path.startswith(pat + "/"):
                keep = negate
        return keep

    sources = [
        src
        for i, arg in instructions()
        if i == "COPY" and "--from" not in arg
        for src in arg.split()[:-1]
    ]
    assert sources
    for src in sources:
        assert (ROOT / src).exists(), src
        assert included(src.rstrip("/")), src
