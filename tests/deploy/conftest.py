"""Paths of the deployment files the tests check."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import stack

__all__ = ["stack"]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "batchd.service"
UNIT_ENV = DEPLOY / "systemd" / "batchd.env"
K8S = DEPLOY / "k8s"
DOCKERFILE = DEPLOY / "Dockerfile"


def unit_directives(path: Path) -> dict[str, list[str]]:
    """`Key` -> every value it is given in the unit (a key may repeat), across sections."""
    found: dict[str, list[str]] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def env_setting(name: str) -> str:
    """BATCHD_ACCOUNTS__DEFAULT__API_KEY_FILE -> accounts.default.api_key_file."""
    return name.removeprefix("BATCHD_").lower().replace("__", ".")
