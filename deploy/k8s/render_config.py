"""Render deploy/k8s/batchd.toml from config.example.toml: every setting, a few set for a cluster.

Usage: python deploy/k8s/render_config.py > deploy/k8s/batchd.toml   (or `make k8s-config`)
A test checks that the file in the repository is what this prints.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config.example.toml"
SECRETS = "/var/run/secrets/batchd"

#: (table, key, TOML value): what a pod needs that the defaults do not give. The Redis URL comes
#: from the Secret through BATCHD_REDIS_URL, since it may carry a password.
OVERRIDES = [
    ("", "data_dir", '"/tmp/batchd-data"'),
    ("accounts.default", "api_key_file", f'"{SECRETS}/anthropic-api-key"'),
    ("log", "format", '"json"'),
    ("http", "host", '"0.0.0.0"'),
    ("webhooks", "secret_file", f'"{SECRETS}/webhook-secret"'),
]

HEADER = """\
# batchd.toml for Kubernetes (the batchd-config ConfigMap), rendered from config.example.toml by
# deploy/k8s/render_config.py: edit those, then `make k8s-config`. Changed from the defaults:
{changes}
#
"""

_TABLE = re.compile(r"^\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?\s*$")


def render(example: str) -> str:
    lines = example.splitlines()
    table = ""
    done: set[tuple[str, str]] = set()
    for i, line in enumerate(lines):
        header = _TABLE.match(line.strip())
        if header:
            table = header.group(1)
            continue
        for want_table, key, value in OVERRIDES:
            pattern = rf"^#?\s?{re.escape(key)}\s*="
            if table == want_table and (want_table, key) not in done and re.match(pattern, line):
                lines[i] = f"{key} = {value}"
                done.add((want_table, key))
    missing = [f"{t}.{k}".lstrip(".") for t, k, _ in OVERRIDES if (t, k) not in done]
    if missing:
        raise SystemExit(f"config.example.toml no longer has {missing}: update render_config.py")
    changes = "\n".join(f"#   {f'{t}.{k}'.lstrip('.')} = {v}" for t, k, v in OVERRIDES)
    body = "\n".join(lines) + "\n"
    # The example's own first paragraph talks about loading the file; keep the rest as it is.
    return HEADER.format(changes=changes) + body


def main() -> int:
    sys.stdout.write(render(EXAMPLE.read_text(encoding="utf-8")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
