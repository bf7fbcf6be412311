"""The install steps the deploy files and docs give can be followed: the Kubernetes base pulls
no placeholder image, the documented overlay names the pushed one, and systemd installs a built
wheel rather than a package no index holds."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "deploying.md"
_OVERLAY = re.compile(
    r"cat > deploy/overlays/prod/kustomization.yaml <<'EOF'\n(.*?)\nEOF\n", re.DOTALL
)

kubectl = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(kubectl is None, reason="kubectl renders kustomizations")


def images(directory: Path) -> set[str]:
    """The images the kustomization at `directory` runs, rendered offline by kubectl."""
    assert kubectl is not None
    proc = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    found: set[str] = set()
    for doc in yaml.safe_load_all(proc.stdout):
        if doc and doc.get("kind") == "Deployment":
            for c in doc["spec"]["template"]["spec"]["containers"]:
                found.add(c["image"])
    return found


@needs_kubectl
def test_base_runs_the_image_the_build_step_tags() -> None:
    """`kubectl apply -k deploy/k8s` runs `batchd:0.1.0`, what `docker build -t` makes."""
    assert images(ROOT / "deploy" / "k8s") == {"batchd:0.1.0"}
    assert "docker build -f deploy/Dockerfile -t batchd:0.1.0 ." in DOC.read_text()


@needs_kubectl
def test_documented_overlay_runs_the_pushed_image(tmp_path: Path) -> None:
    """The overlay deploying.md writes renders with the registry image the doc pushes."""
    found = _OVERLAY.search(DOC.read_text())
    assert found, "no overlay heredoc in docs/deploying.md"
    (tmp_path / "k8s").symlink_to(ROOT / "deploy" / "k8s")
    overlay = tmp_path / "overlays" / "prod"
    overlay.mkdir(parents=True)
    (overlay / "kustomization.yaml").write_text(found.group(1) + "\n")
    [image] = images(overlay)
    assert f"docker push {image}" in DOC.read_text()


def test_systemd_unit_installs_a_built_wheel() -> None:
    """The unit's install steps build and install a wheel, not `pip install batchd`."""
    unit = (ROOT / "deploy" / "systemd" / "batchd.service").read_text()
    head = [line for line in unit.splitlines() if line.startswith("#")]
    steps = "\n".join(head)
    assert "pip wheel" in steps
    assert not re.search(r"pip install batchd\b", steps)
