"""Bad configuration, from the environment and from TOML: one clear error naming the field.

Every case goes through `Settings.load` (what every command calls) and through the CLI, which
must exit 2 with the field named and no traceback, and never echo a secret.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from batchd import Settings
from batchd.cli import main
from batchd.errors import ConfigError

SECRET = "whsec_c2VjcmV0LWluLWEtdHlwbw=="

# name: (environment variables, the field every problem line must name)
ENV_CASES: dict[str, tuple[dict[str, str], str]] = {
    "batch bigger than the API allows": (
        {"BATCHD_BATCH__MAX_REQUESTS": "200000"},
        "batch.max_requests",
    ),
    "batch of zero requests": ({"BATCHD_BATCH__MAX_REQUESTS": "0"}, "batch.max_requests"),
    "batch bytes below a kilobyte": ({"BATCHD_BATCH__MAX_BYTES": "10"}, "batch.max_bytes"),
    "negative max_wait": ({"BATCHD_BATCH__MAX_WAIT": "-1"}, "batch.max_wait"),
    "max_wait not a number": ({"BATCHD_BATCH__MAX_WAIT": "soon"}, "batch.max_wait"),
    "poll intervals the wrong way round": (
        {"BATCHD_POLL__MIN_INTERVAL": "10", "BATCHD_POLL__MAX_INTERVAL": "1"},
        "poll",
    ),
    "poll jitter over 1": ({"BATCHD_POLL__JITTER": "2"}, "poll.jitter"),
    "negative workers": ({"BATCHD_RUN__WORKERS": "-1"}, "run.workers"),
    "a thousand workers": ({"BATCHD_RUN__WORKERS": "1000"}, "run.workers"),
    "unknown role": ({"BATCHD_RUN__ROLES": '["aggregator", "janitor"]'}, "run.roles"),
    "roles not valid JSON": ({"BATCHD_RUN__ROLES": '["aggregator"'}, "run"),
    "lease of half a second": ({"BATCHD_RUN__LEASE": "0.5"}, "run.lease"),
    "negative create_settle": ({"BATCHD_RUN__CREATE_SETTLE": "-1"}, "run.create_settle"),
    "zero attempts": ({"BATCHD_RETRY__MAX_ATTEMPTS": "0"}, "retry.max_attempts"),
    "retry_expired not a bool": ({"BATCHD_RETRY__RETRY_EXPIRED": "maybe"}, "retry.retry_expired"),
    "unknown log level": ({"BATCHD_LOG__LEVEL": "loud"}, "log.level"),
    "prefix with spaces": ({"BATCHD_PREFIX": "my prefix"}, "prefix"),
    "zero retention": ({"BATCHD_RETENTION": "0"}, "retention"),
    "no accounts": ({"BATCHD_ACCOUNTS": "{}"}, "accounts"),
    "account name with a space": ({"BATCHD_ACCOUNTS": '{"my account": {}}'}, "accounts"),
    "default account not configured": ({"BATCHD_DEFAULT_ACCOUNT": "nobody"}, "default_account"),
    "api_key_file missing": (
        {"BATCHD_ACCOUNTS__DEFAULT__API_KEY_FILE": "/nonexistent/key"},
        "accounts.default",
    ),
    "redis_url of the wrong scheme": ({"BATCHD_REDIS_URL": "http://localhost:6379"}, "redis_url"),
    "redis_url with a port that is no number": (
        {"BATCHD_REDIS_URL": "redis://localhost:port/0"},
        "redis_url",
    ),
    "unix redis_url without a path": ({"BATCHD_REDIS_URL": "unix://"}, "redis_url"),
    "api base_url not a URL": ({"BATCHD_API__BASE_URL": "not-a-url"}, "api.base_url"),
    "account base_url over ftp": (
        {"BATCHD_ACCOUNTS__DEFAULT__BASE_URL": "ftp://api.example.com"},
        "accounts.default.base_url",
    ),
    "api retries beyond the cap": ({"BATCHD_API__MAX_RETRIES": "100"}, "api.max_retries"),
    "webhook schedule empty": ({"BATCHD_WEBHOOKS__SCHEDULE": "[]"}, "webhooks.schedule"),
    "webhook schedule negative": ({"BATCHD_WEBHOOKS__SCHEDULE": "[0, -5]"}, "webhooks.schedule"),
    "webhook jitter over 1": ({"BATCHD_WEBHOOKS__JITTER": "3"}, "webhooks.jitter"),
    "webhook concurrency zero": ({"BATCHD_WEBHOOKS__CONCURRENCY": "0"}, "webhooks.concurrency"),
    "zero priorities": ({"BATCHD_SUBMIT__PRIORITIES": "0"}, "submit.priorities"),
    "http port out of range": ({"BATCHD_HTTP__PORT": "70000"}, "http.port"),
    "claim chunk over the most one Redis call takes": (
        {"BATCHD_BATCH__CLAIM_CHUNK": "501"},
        "batch.claim_chunk",
    ),
    "idempotency keys kept for no time": (
        {"BATCHD_SUBMIT__IDEMPOTENCY_TTL": "0"},
        "submit.idempotency_ttl",
    ),
    "negative not_found_grace": ({"BATCHD_POLL__NOT_FOUND_GRACE": "-1"}, "poll.not_found_grace"),
    "zero drop_in_max_wait": (
        {"BATCHD_INGRESS__DROP_IN_MAX_WAIT": "0"},
        "ingress.drop_in_max_wait",
    ),
    "zero max_clock_skew": ({"BATCHD_RUN__MAX_CLOCK_SKEW": "0"}, "run.max_clock_skew"),
    "negative wait_replicas": ({"BATCHD_REDIS__WAIT_REPLICAS": "-1"}, "redis.wait_replicas"),
    "zero wait_timeout": ({"BATCHD_REDIS__WAIT_TIMEOUT": "0"}, "redis.wait_timeout"),
    "rq_url of the wrong scheme": (
        {"BATCHD_REDIS__RQ_URL": "http://localhost:6379"},
        "redis.rq_url",
    ),
    "rq_url a cluster": (
        {"BATCHD_REDIS__RQ_URL": "redis+cluster://127.0.0.1:7000"},
        "redis.rq_url",
    ),
    "cluster redis_url without rq_url": (
        {"BATCHD_REDIS_URL": "redis+cluster://127.0.0.1:7000"},
        "redis.rq_url",
    ),
    "known_betas not a list": ({"BATCHD_API__KNOWN_BETAS": "files-api"}, "api"),
}

# name: (TOML text, the field named)
TOML_CASES: dict[str, tuple[str, str]] = {
    "misspelled key": ("[batch]\nmax_wiat = 5\n", "batch.max_wiat"),
    "unknown section": ("[batches]\nmax_wait = 5\n", "batches"),
    "string where a number goes": ('[batch]\nmax_requests = "many"\n', "batch.max_requests"),
    "list where a table goes": ("poll = [1, 2]\n", "poll"),
    "TOML syntax error": ("[batch\nmax_wait = 5\n", "not valid TOML"),
}


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("BATCHD_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize("case", list(ENV_CASES), ids=list(ENV_CASES))
def test_bad_environment_value_is_a_config_error(
    case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Settings.load names the field; `batchd status` exits 2 saying so, no traceback."""
    env, field = ENV_CASES[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        Settings.load()
    assert any(field in p for p in caught.value.problems), caught.value.problems
    assert main(["status"]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


@pytest.mark.parametrize("case", list(TOML_CASES), ids=list(TOML_CASES))
def test_bad_toml_is_a_config_error(
    case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad config file: exit 2 naming the field (or the file), no traceback."""
    text, field = TOML_CASES[case]
    path = tmp_path / "batchd.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        Settings.load(path)
    assert field in str(caught.value)
    assert main(["--config", str(path), "status"]) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err


def test_empty_api_key_file_is_a_config_error(tmp_path: Path) -> None:
    """An api_key_file holding nothing is refused by name, not sent to the API as ''."""
    empty = tmp_path / "key"
    empty.write_text("\n")
    with pytest.raises(ConfigError) as caught:
        Settings.load(accounts={"default": {"api_key_file": str(empty)}})
    assert "api_key_file" in str(caught.value)


def test_misspelled_secret_key_is_not_echoed(tmp_path: Path) -> None:
    """`scret = "whsec_..."`: the unknown key is named, its value (a secret) is not shown."""
    path = tmp_path / "batchd.toml"
    path.write_text(f'[webhooks]\nscret = "{SECRET}"\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        Settings.load(path)
    assert "webhooks.scret" in str(caught.value)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value.problems)


def test_missing_config_file_is_a_config_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--config naming no file: exit 2, the path named."""
    assert main(["--config", str(tmp_path / "nope.toml"), "status"]) == 2
    assert "nope.toml" in capsys.readouterr().err


def test_unreachable_redis_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A command whose Redis does not answer: exit 1 with one line naming it, no traceback."""
    from tests.support.redis import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["--redis-url", url, "status", "--json"]) == 1
    err = capsys.readouterr().err
    assert "Redis" in err and url.split("//")[1].split("/")[0] in err
    assert "Traceback" not in err
