"""deploy/systemd/batchd.service: verified by systemd-analyze, and its environment starts batchd."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from batchd.settings import Settings
from tests.deploy.conftest import UNIT, UNIT_ENV, env_setting, unit_directives
from tests.e2e.conftest import Stack
from tests.support.daemon import DaemonProcess
from tests.support.notify import NotifySocket
from tests.test_settings import setting_names

SYSTEMD_ANALYZE = shutil.which("systemd-analyze") or "/usr/bin/systemd-analyze"
needs_systemd = pytest.mark.skipif(
    not os.path.exists(SYSTEMD_ANALYZE), reason="systemd-analyze is not installed"
)
BATCHD = str(Path(sys.executable).with_name("batchd"))


def installed_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at this checkout's batchd (verify wants a real file)."""
    text = UNIT.read_text(encoding="utf-8")
    text, n = re.subn(r"^ExecStart=\S+", f"ExecStart={BATCHD}", text, flags=re.M)
    assert n == 1
    copy = tmp_path / "batchd.service"
    copy.write_text(text, encoding="utf-8")
    return copy


@needs_systemd
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    """`systemd-analyze verify` finds nothing wrong with the unit."""
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", str(installed_copy(tmp_path))],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "batchd.service" not in proc.stderr, proc.stderr


@needs_systemd
def test_sandboxing_exposure_is_low(tmp_path: Path) -> None:
    """`systemd-analyze security` rates the unit's exposure at 2.0 or better (of 10)."""
    proc = subprocess.run(
        [SYSTEMD_ANALYZE, "security", "--offline=yes", "--threshold=20",
         str(installed_copy(tmp_path))],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr


def test_unit_has_the_service_contract() -> None:
    """notify with a watchdog, restart on failure, a sandbox, the key as a credential."""
    d = unit_directives(UNIT)
    assert d["Type"] == ["notify"] and d["NotifyAccess"] == ["main"]
    assert int(d["WatchdogSec"][0]) >= 10
    assert d["Restart"] == ["on-failure"]
    assert d["KillSignal"] == ["SIGTERM"]
    assert int(d["TimeoutStopSec"][0]) > Settings().run.grace
    for key, want in (("DynamicUser", "yes"), ("ProtectSystem", "strict"),
                      ("NoNewPrivileges", "yes"), ("StateDirectory", "batchd"),
                      ("PrivateTmp", "yes"), ("ProtectHome", "yes")):  # fmt: skip
        assert d[key] == [want], key
    [credential] = d["LoadCredential"]
    name = credential.split(":", 1)[0]
    assert f"BATCHD_ACCOUNTS__DEFAULT__API_KEY_FILE=%d/{name}" in d["Environment"]
    assert d["EnvironmentFile"] == ["-/etc/batchd/batchd.env"]
    assert d["ExecStart"][0].endswith("batchd run")


def test_environment_names_real_settings() -> None:
    """Every BATCHD_ variable in the unit and the example env file is a setting batchd knows."""
    known = set(setting_names(Settings)) | {"config"}
    text = UNIT.read_text(encoding="utf-8") + UNIT_ENV.read_text(encoding="utf-8")
    names = set(re.findall(r"\b(BATCHD_[A-Z0-9_]+)=", text))
    assert len(names) >= 6
    unknown = sorted(n for n in names if env_setting(n) not in known)
    assert not unknown, unknown


def test_unit_environment_starts_a_daemon(stack: Stack, tmp_path: Path) -> None:
    """With the unit's Environment= lines (%d, %S, %t as systemd fills them), the API key read
    from the credential file, batchd announces READY=1 and gets a request through."""
    creds, state, runtime = tmp_path / "creds", tmp_path / "state", tmp_path / "run"
    for directory in (creds, state, runtime):
        directory.mkdir()
    specifiers = {"%d": str(creds), "%S": str(state), "%t": str(runtime)}
    d = unit_directives(UNIT)
    env = {k: v for k, v in stack.env().items() if k != "BATCHD_ACCOUNTS__DEFAULT__API_KEY"}
    for line in d["Environment"]:
        key, _, value = line.partition("=")
        for spec, path in specifiers.items():
            value = value.replace(spec, path)
        env[key] = value
    cred_name = d["LoadCredential"][0].split(":", 1)[0]
    (creds / cred_name).write_text(stack.emulator.api_key + "\n", encoding="utf-8")
    notify_dir = Path(os.path.realpath("/tmp")) / f"sd-{os.getpid()}-{tmp_path.name[-8:]}"
    notify_dir.mkdir()
    sock = NotifySocket(str(notify_dir / "n"))
    daemon = DaemonProcess(tmp_path / "daemon", {**env, "NOTIFY_SOCKET": str(notify_dir / "n")})
    stack.daemons.append(daemon)
    try:
        daemon.start()
        sock.until("READY=1", 30)
        ticket = stack.client.submit({"model": "claude-haiku-4-5", "max_tokens": 8,
                                      "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
        assert stack.client.wait(ticket.id, timeout=60).status == "succeeded"
        assert list(runtime.iterdir())  # the metrics directory lives in RuntimeDirectory
    finally:
        daemon.stop()
        sock.close()
        shutil.rmtree(notify_dir)
