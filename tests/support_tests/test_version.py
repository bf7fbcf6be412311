"""The redis-server version gate: a cluster needs 7.0; in CI a missing one fails, never skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import cluster
from tests.support.cluster import RedisTooOld, check_redis, redis_version, require_redis


def fake_server(tmp_path: Path, version: str) -> str:
    path = tmp_path / "redis-server"
    path.write_text(f"#!/bin/sh\necho 'Redis server v={version} sha=00000000:0 bits=64'\n")
    path.chmod(0o755)
    return str(path)


def test_version_is_read_from_the_binary(tmp_path: Path) -> None:
    """`redis-server --version` output is read as three numbers."""
    assert redis_version(fake_server(tmp_path, "6.2.14")) == (6, 2, 14)


def test_old_server_fails_in_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under CI an old redis-server is an error that names the version found."""
    monkeypatch.setattr(cluster, "redis_server_binary", lambda: fake_server(tmp_path, "6.2.14"))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(RedisTooOld, match=r"needs redis-server >= 7\.0\.0; .* is 6\.2\.14"):
        require_redis()


def test_old_server_skips_outside_ci(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a developer's machine an old redis-server skips the test, with the reason."""
    monkeypatch.setattr(cluster, "redis_server_binary", lambda: fake_server(tmp_path, "6.2.14"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"6\.2\.14"):
        require_redis()


def test_missing_server_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    """No redis-server at all is RedisTooOld too, saying none was usable."""

    def missing() -> str:
        raise RuntimeError("no redis-server on PATH")

    monkeypatch.setattr(cluster, "redis_server_binary", missing)
    with pytest.raises(RedisTooOld, match="none usable: no redis-server on PATH"):
        check_redis()


def test_new_enough_server_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """7.0.0 and later are accepted and the binary is returned."""
    binary = fake_server(tmp_path, "7.0.0")
    monkeypatch.setattr(cluster, "redis_server_binary", lambda: binary)
    assert check_redis() == binary
