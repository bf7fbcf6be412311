"""Settings: the example file, the precedence of sources, secrets and invalid configuration."""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args, get_origin

import pytest
from pydantic import BaseModel

from batchd.errors import ConfigError
from batchd.settings import Settings

EXAMPLE = Path(__file__).resolve().parents[1] / "config.example.toml"

KEY = "sk-ant-api03-test-0123456789abcdef"
WEBHOOK_SECRET = "whsec_dGVzdC13ZWJob29rLXNlY3JldA=="

# `[table]`, `[[table]]` and `key = value`, commented out or not.
_HEADER = re.compile(r"^#?\s*\[\[?\s*([A-Za-z0-9_.]+)\s*\]\]?\s*$")
_KEY = re.compile(r"^(?:#\s?)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No BATCHD_ variable from the environment running the tests leaks into them."""
    for name in list(os.environ):
        if name.startswith("BATCHD_"):
            monkeypatch.delenv(name)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(exc_info: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return exc_info.value.problems


def named(problems: list[str], field: str) -> list[str]:
    """The problems about `field` (each problem starts with the dotted field name)."""
    return [p for p in problems if p.startswith(f"{field}:")]


def setting_names(model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """Every setting's dotted name, as written in TOML: dict sections under `default`."""
    for name, field in model.model_fields.items():
        dotted = f"{prefix}{name}"
        annotation = field.annotation
        origin = get_origin(annotation)
        inner: Any = None
        if origin is dict:
            inner, dotted = get_args(annotation)[1], f"{dotted}.default"
        elif origin is list:
            inner = get_args(annotation)[0]
        elif isinstance(annotation, type):
            inner = annotation
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            yield from setting_names(inner, f"{dotted}.")
        else:
            yield dotted


def documented(text: str) -> dict[str, int]:
    """Dotted name -> line number of every table and key in the file, commented out or not."""
    found: dict[str, int] = {}
    table = ""
    for n, raw in enumerate(text.splitlines()):
        line = raw.strip()
        header = _HEADER.match(line)
        if header:
            table = header.group(1)
            found.setdefault(table, n)
            continue
        key = _KEY.match(line)
        if key:
            found.setdefault(f"{table}.{key.group(1)}" if table else key.group(1), n)
    return found


# -- config.example.toml ------------------------------------------------------------------------


def test_example_loads_and_equals_the_defaults() -> None:
    """config.example.toml is valid and every value in it is the default."""
    loaded = Settings.load(EXAMPLE).model_dump(mode="json")
    defaults = Settings().model_dump(mode="json")
    assert loaded == defaults


def test_example_documents_every_setting() -> None:
    """Each field of every nested section appears in config.example.toml."""
    names = documented(EXAMPLE.read_text(encoding="utf-8"))
    missing = [name for name in setting_names(Settings) if name not in names]
    assert not missing, f"settings missing from config.example.toml: {missing}"


def test_example_says_what_each_setting_does_and_its_default() -> None:
    """Every setting in config.example.toml follows a comment that states its default."""
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    names = documented("\n".join(lines))
    undocumented = []
    for name in setting_names(Settings):
        if name not in names:
            continue  # test_example_documents_every_setting reports it
        n = names[name]
        comment = []
        while n > 0 and lines[n - 1].lstrip().startswith("#"):
            n -= 1
            comment.append(lines[n])
        if not any("Default" in c or "Required" in c for c in comment):
            undocumented.append(name)
    assert not undocumented, f"settings without a comment giving the default: {undocumented}"


def test_example_holds_no_secret_value() -> None:
    """Secrets in config.example.toml are commented out."""
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    assert "api_key" not in data["accounts"]["default"]
    assert "secret" not in data["webhooks"]
    assert "previous_secret" not in data["webhooks"]
    assert "redis_url" not in data


# -- precedence ---------------------------------------------------------------------------------


def test_defaults_apply_without_any_source() -> None:
    """With no file, environment or override, every setting has its default."""
    settings = Settings.load()
    assert settings.redis_url is None
    assert settings.batch.max_wait == 60.0
    assert list(settings.accounts) == ["default"]


def test_toml_overrides_defaults(tmp_path: Path) -> None:
    """A value in the TOML file replaces the default; the section's other fields keep theirs."""
    path = write(tmp_path / "c.toml", "prefix = 'fromtoml'\n[batch]\nmax_wait = 5\n")
    settings = Settings.load(path)
    assert settings.prefix == "fromtoml"
    assert settings.batch.max_wait == 5.0
    assert settings.batch.max_requests == 100_000


def test_environment_overrides_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BATCHD_ variables beat the file, nested with `__`, and leave the file's siblings alone."""
    path = write(
        tmp_path / "c.toml", "prefix = 'fromtoml'\n[batch]\nmax_wait = 5\nclaim_chunk = 7\n"
    )
    monkeypatch.setenv("BATCHD_PREFIX", "fromenv")
    monkeypatch.setenv("BATCHD_BATCH__MAX_WAIT", "30")
    settings = Settings.load(path)
    assert settings.prefix == "fromenv"
    assert settings.batch.max_wait == 30.0
    assert settings.batch.claim_chunk == 7


def test_overrides_beat_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keyword overrides (CLI flags) beat the environment, at the top level and nested."""
    path = write(
        tmp_path / "c.toml", "redis_url = 'redis://toml:6379/0'\n[batch]\nclaim_chunk = 7\n"
    )
    monkeypatch.setenv("BATCHD_REDIS_URL", "redis://env:6379/0")
    monkeypatch.setenv("BATCHD_BATCH__MAX_WAIT", "30")
    settings = Settings.load(path, redis_url="redis://flag:6379/0", batch={"max_wait": 1})
    assert settings.redis_url == "redis://flag:6379/0"
    assert settings.batch.max_wait == 1.0
    assert settings.batch.claim_chunk == 7


def test_batchd_config_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BATCHD_CONFIG is the TOML file read when no path is given."""
    path = write(tmp_path / "c.toml", "[poll]\nmin_interval = 2\n")
    monkeypatch.setenv("BATCHD_CONFIG", str(path))
    assert Settings.load().poll.min_interval == 2.0


def test_config_path_beats_batchd_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit path (--config) is read instead of BATCHD_CONFIG."""
    monkeypatch.setenv("BATCHD_CONFIG", str(write(tmp_path / "env.toml", "prefix = 'env'\n")))
    assert Settings.load(write(tmp_path / "flag.toml", "prefix = 'flag'\n")).prefix == "flag"


def test_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    """A config path that does not exist is reported, not silently skipped."""
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(tmp_path / "nope.toml")
    assert "nope.toml" in str(exc_info.value)


# -- secrets ------------------------------------------------------------------------------------


def test_api_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    """api_key_file's content, without surrounding whitespace, becomes the account's key."""
    key_file = write(tmp_path / "key", f"  {KEY}\n\n")
    settings = Settings.load(accounts={"default": {"api_key_file": str(key_file)}})
    assert settings.api_key("default") == KEY


def test_api_key_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """BATCHD_ACCOUNTS__DEFAULT__API_KEY_FILE points at the key file."""
    monkeypatch.setenv("BATCHD_ACCOUNTS__DEFAULT__API_KEY_FILE", str(write(tmp_path / "k", KEY)))
    assert Settings.load().api_key("default") == KEY


def test_api_key_wins_over_api_key_file(tmp_path: Path) -> None:
    """A key given directly is used and the file is not read."""
    settings = Settings.load(
        accounts={"default": {"api_key": KEY, "api_key_file": str(tmp_path / "absent")}}
    )
    assert settings.api_key("default") == KEY


@pytest.mark.parametrize("content", [None, "", "  \n"], ids=["missing", "empty", "blank"])
def test_unusable_api_key_file_names_the_field(tmp_path: Path, content: str | None) -> None:
    """A missing or empty api_key_file is a ConfigError naming the account and the field."""
    key_file = tmp_path / "key"
    if content is not None:
        write(key_file, content)
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(accounts={"default": {"api_key_file": str(key_file)}})
    [problem] = problems_of(exc_info)
    assert problem.startswith("accounts.default:")
    assert str(key_file) in problem
    assert "api_key_file" in problem.replace(str(key_file), "")


def test_webhook_secret_file_is_read(tmp_path: Path) -> None:
    """webhooks.secret_file and an endpoint's secret_file become their secrets."""
    path = write(tmp_path / "wh", WEBHOOK_SECRET + "\n")
    settings = Settings.load(
        webhooks={
            "secret_file": str(path),
            "endpoints": [{"url_prefix": "https://h.example/", "secret_file": str(path)}],
        }
    )
    assert settings.webhooks.secret is not None
    assert settings.webhooks.secret.get_secret_value() == WEBHOOK_SECRET
    assert settings.webhooks.endpoints[0].secret is not None
    assert settings.webhooks.endpoints[0].secret.get_secret_value() == WEBHOOK_SECRET


@pytest.mark.parametrize(
    "render",
    [repr, str, lambda s: s.model_dump_json(), lambda s: str(s.model_dump())],
    ids=["repr", "str", "model_dump_json", "model_dump"],
)
def test_secrets_never_shown(render: Any) -> None:
    """API keys and webhook secrets stay hidden however the settings are printed."""
    settings = Settings.load(
        accounts={"default": {"api_key": KEY}},
        webhooks={
            "secret": WEBHOOK_SECRET,
            "endpoints": [{"url_prefix": "https://h.example/", "secret": WEBHOOK_SECRET}],
        },
    )
    text = render(settings)
    assert KEY not in text
    assert WEBHOOK_SECRET not in text
    assert "**********" in text


def test_secrets_lists_every_secret() -> None:
    """settings.secrets() returns each configured key and webhook secret, for the redactor."""
    settings = Settings.load(
        accounts={"default": {"api_key": KEY}, "other": {"api_key": KEY + "-2"}},
        webhooks={
            "secret": WEBHOOK_SECRET,
            "previous_secret": "whsec_b2xk",
            "endpoints": [
                {
                    "url_prefix": "https://h/",
                    "secret": "whsec_ZXA=",
                    "previous_secret": "whsec_cA==",
                }
            ],
        },
    )
    assert sorted(settings.secrets()) == sorted(
        [KEY, KEY + "-2", WEBHOOK_SECRET, "whsec_b2xk", "whsec_ZXA=", "whsec_cA=="]
    )


def test_config_error_never_echoes_a_secret(tmp_path: Path) -> None:
    """A misspelled or invalid secret setting is named but its value is not printed."""
    path = write(
        tmp_path / "c.toml",
        f"[webhooks]\nscret = '{WEBHOOK_SECRET}'\n[accounts.default]\napi_key = 5\n",
    )
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(path)
    message = str(exc_info.value)
    assert "webhooks.scret" in message
    assert "accounts.default.api_key" in message
    assert WEBHOOK_SECRET not in message


# -- invalid configuration ----------------------------------------------------------------------


def test_every_bad_field_in_one_error(tmp_path: Path) -> None:
    """Several bad fields give one ConfigError with one problem naming each."""
    path = write(
        tmp_path / "bad.toml",
        "default_account = 'nope'\n"
        "colour = 'blue'\n"
        "[batch]\nmax_requests = 100001\n"
        "[poll]\nmin_interval = -1\n"
        "[run]\nroles = ['aggregator', 'cook']\n",
    )
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(path)
    problems = problems_of(exc_info)
    for field in ("default_account", "colour", "batch.max_requests", "poll.min_interval"):
        assert len(named(problems, field)) == 1, (field, problems)
    assert any(p.startswith("run.roles.") and "cook" in p for p in problems), problems
    assert "100001" in named(problems, "batch.max_requests")[0]
    message = str(exc_info.value)
    assert all(p in message for p in problems)


def test_bad_account_name(tmp_path: Path) -> None:
    """An account name outside [a-zA-Z0-9_-]{1,32} is named in the problem."""
    path = write(tmp_path / "bad.toml", "[accounts.'has space']\n[batch]\nmax_wait = 0\n")
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(path)
    problems = problems_of(exc_info)
    assert "has space" in named(problems, "accounts")[0]
    assert named(problems, "batch.max_wait")


def test_default_account_must_be_an_account() -> None:
    """default_account naming no configured account is reported as that field."""
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(accounts={"work": {}})
    [problem] = problems_of(exc_info)
    assert problem.startswith("default_account:")
    assert "'default'" in problem
    assert "work" in problem


def test_unknown_nested_key(tmp_path: Path) -> None:
    """An unknown key inside a section is named with its section."""
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(write(tmp_path / "bad.toml", "[batch]\nmax_wiat = 5\n"))
    assert named(problems_of(exc_info), "batch.max_wiat")


def test_poll_intervals_in_order() -> None:
    """poll.max_interval below poll.min_interval is refused."""
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(poll={"min_interval": 10, "max_interval": 5})
    assert "poll.max_interval" in str(exc_info.value)


def test_bad_toml_syntax_names_the_file(tmp_path: Path) -> None:
    """A TOML syntax error is a ConfigError naming the file and the place."""
    path = write(tmp_path / "broken.toml", "[batch]\nmax_wait = = 5\n")
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(path)
    [problem] = problems_of(exc_info)
    assert str(path) in problem
    assert "line 2" in problem


def test_bad_environment_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    """A BATCHD_ variable that does not parse is reported by its dotted field name."""
    monkeypatch.setenv("BATCHD_BATCH__MAX_WAIT", "soon")
    with pytest.raises(ConfigError) as exc_info:
        Settings.load()
    [problem] = problems_of(exc_info)
    assert problem.startswith("batch.max_wait:")
    assert "'soon'" in problem


def test_claim_chunk_is_bounded() -> None:
    """batch.claim_chunk above 500 is refused, naming the bound: one Redis call stays short."""
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(batch={"claim_chunk": 501})
    [problem] = problems_of(exc_info)
    assert problem.startswith("batch.claim_chunk:")
    assert "500" in problem


def test_rq_url_cannot_be_a_cluster() -> None:
    """redis.rq_url naming a Redis Cluster is refused: rq does not support one."""
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(redis={"rq_url": "redis+cluster://127.0.0.1:7000"})
    [problem] = problems_of(exc_info)
    assert problem.startswith("redis.rq_url:")
    assert "Cluster" in problem


def test_rq_url_is_checked_like_redis_url() -> None:
    """A redis.rq_url that is no Redis URL is refused, saying which schemes are accepted."""
    with pytest.raises(ConfigError) as exc_info:
        Settings.load(redis={"rq_url": "http://127.0.0.1:6379"})
    [problem] = problems_of(exc_info)
    assert problem.startswith("redis.rq_url:")
    assert "redis://" in problem
