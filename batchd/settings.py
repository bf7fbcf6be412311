"""batchd's configuration: one `Settings` model, from CLI flags > environment > TOML > defaults.

Environment variables are `BATCHD_<FIELD>`, nested with `__` (`BATCHD_BATCH__MAX_WAIT=30`). The
TOML file comes from `--config PATH` or `BATCHD_CONFIG`. Secrets are `SecretStr` and may be read
from a file (`api_key_file`, `secret_file`) for Kubernetes secrets and systemd credentials.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from batchd.defaults import CLAIM_CHUNK
from batchd.errors import ConfigError
from batchd.store.connection import parse_url

#: Hard limits of the Message Batches API; settings may only go lower.
API_MAX_REQUESTS = 100_000
API_MAX_BYTES = 256_000_000

ACCOUNT_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,32}$")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _read_secret_file(path: Path | None, what: str) -> SecretStr | None:
    if path is None:
        return None
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"{what} {path} cannot be read: {exc.strerror}") from exc
    if not text:
        raise ValueError(f"{what} {path} is empty")
    return SecretStr(text)


def _http_url(value: str | None) -> str | None:
    """An http(s) URL with a host, or ValueError saying what is wrong with it."""
    if value is None:
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return value


class AccountSettings(_Section):
    """One Anthropic account (workspace): its API key and, optionally, its own base URL."""

    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    base_url: str | None = None

    _base_url = field_validator("base_url")(_http_url)

    @model_validator(mode="after")
    def _load_key_file(self) -> AccountSettings:
        if self.api_key is None and self.api_key_file is not None:
            self.api_key = _read_secret_file(self.api_key_file, "api_key_file")
        return self


#: Beta names the Messages API knows (the `anthropic-beta` header); `api.known_betas` extends it.
KNOWN_BETAS = (
    "message-batches-2024-09-24",
    "prompt-caching-2024-07-31",
    "pdfs-2024-09-25",
    "token-counting-2024-11-01",
    "token-efficient-tools-2025-02-19",
    "output-128k-2025-02-19",
    "interleaved-thinking-2025-05-14",
    "extended-cache-ttl-2025-04-11",
    "files-api-2025-04-14",
    "context-1m-2025-08-07",
    "context-management-2025-06-27",
    "model-context-window-exceeded-2025-08-26",
    "fine-grained-tool-streaming-2025-05-14",
    "search-results-2025-06-09",
    "code-execution-2025-05-22",
    "code-execution-2025-08-25",
    "web-fetch-2025-09-10",
    "mcp-client-2025-04-04",
    "computer-use-2025-01-24",
    "skills-2025-10-02",
    "structured-outputs-2025-11-13",
    "effort-2025-11-24",
)


class ApiSettings(_Section):
    """How batchd talks to the Message Batches API."""

    base_url: str = "https://api.anthropic.com"
    anthropic_version: str = "2023-06-01"
    connect_timeout: float = Field(10.0, gt=0)
    read_timeout: float = Field(600.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    backoff_initial: float = Field(0.5, gt=0)
    backoff_max: float = Field(8.0, gt=0)
    retry_after_max: float = Field(60.0, gt=0)
    known_betas: list[str] = Field(
        default_factory=lambda: list(KNOWN_BETAS),
        description="anthropic-beta values producers may ask for; others are refused at submit",
    )

    _base_url = field_validator("base_url")(_http_url)


class BatchSettings(_Section):
    """When a lane is cut into a batch."""

    max_requests: int = Field(API_MAX_REQUESTS, ge=1, le=API_MAX_REQUESTS)
    max_bytes: int = Field(API_MAX_BYTES, ge=1024, le=API_MAX_BYTES)
    max_wait: float = Field(60.0, gt=0, description="seconds the oldest pending request may wait")
    claim_chunk: int = Field(
        CLAIM_CHUNK, ge=1, le=CLAIM_CHUNK, description="requests claimed per Redis call"
    )


class PollSettings(_Section):
    """How often a batch in flight is polled."""

    min_interval: float = Field(5.0, gt=0)
    max_interval: float = Field(60.0, gt=0)
    factor: float = Field(1.5, ge=1.0)
    jitter: float = Field(0.1, ge=0, le=1)
    list_interval: float = Field(
        3.0,
        ge=0,
        description="seconds between listings of an account's batches, which follow every "
        "batch in flight in one call (0: poll each batch on its own)",
    )
    not_found_grace: float = Field(
        900.0,
        ge=0,
        description="seconds a batch batchd created may answer 404 (the API's are sometimes "
        "transient) before it is taken as gone and its requests end errored",
    )

    @model_validator(mode="after")
    def _ordered(self) -> PollSettings:
        if self.max_interval < self.min_interval:
            raise ValueError("poll.max_interval must be >= poll.min_interval")
        return self


class RetrySettings(_Section):
    """Which errored results go round again, and how many times."""

    max_attempts: int = Field(3, ge=1, le=100)
    retry_error_types: list[str] = ["api_error", "overloaded_error", "rate_limit_error"]
    retry_expired: bool = True
    retry_canceled: bool = True


class SubmitSettings(_Section):
    """What producers may submit."""

    max_metadata_bytes: int = Field(4096, ge=0)
    max_key_length: int = Field(256, ge=1)
    max_reply_to_length: int = Field(200, ge=1)
    max_callback_url_length: int = Field(2048, ge=10)
    priorities: int = Field(10, ge=1, le=100, description="priorities are 0 .. priorities-1")
    idempotency_ttl: float = Field(
        8 * 86400.0, gt=0, description="seconds an idempotency key is remembered from first use"
    )


class RunSettings(_Section):
    """The daemon process."""

    roles: list[Literal["aggregator", "worker", "webhooks", "sweeper", "ingress"]] = [
        "aggregator",
        "worker",
        "webhooks",
        "sweeper",
        "ingress",
    ]
    workers: int = Field(2, ge=0, le=64)
    grace: float = Field(30.0, ge=0)
    tick: float = Field(0.5, gt=0, description="aggregator and sweeper loop period, seconds")
    lease: float = Field(
        6.0,
        gt=1,
        description="seconds a lease (stage, lane cut, create lock) lasts unrenewed; work a "
        "crashed process held resumes elsewhere within about this long",
    )
    stale_after: float = Field(
        15.0, gt=0, description="seconds between checks that a queued stage job still waits"
    )
    intent_skew: float = Field(
        300.0, ge=0, description="clock offset allowed between Redis and the API when adopting"
    )
    max_clock_skew: float = Field(
        5.0,
        gt=0,
        description="seconds this host's clock may differ from Redis's before /readyz fails",
    )
    create_settle: float = Field(
        30.0, ge=0, description="seconds an unanswered create may take to show in the list"
    )


class LogSettings(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class WebhookEndpoint(_Section):
    """Per-endpoint webhook settings, matched by URL prefix."""

    url_prefix: str
    secret: SecretStr | None = None
    secret_file: Path | None = None
    previous_secret: SecretStr | None = None
    previous_until: float | None = None

    @model_validator(mode="after")
    def _load_secret_file(self) -> WebhookEndpoint:
        if self.secret is None and self.secret_file is not None:
            self.secret = _read_secret_file(self.secret_file, "secret_file")
        return self


class WebhookSettings(_Section):
    """Signed result callbacks."""

    enabled: bool = True
    secret: SecretStr | None = None
    secret_file: Path | None = None
    previous_secret: SecretStr | None = None
    previous_until: float | None = Field(
        None, description="unix time until which the previous secret also signs"
    )
    endpoints: list[WebhookEndpoint] = []
    schedule: list[float] = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
    jitter: float = Field(0.1, ge=0, le=1)
    timeout: float = Field(10.0, gt=0, description="whole-attempt deadline, seconds")
    concurrency: int = Field(256, ge=1)
    per_host: int = Field(32, ge=1)
    allow_hosts: list[str] = []
    allow_networks: list[str] = []
    max_response_bytes: int = Field(65536, ge=0)

    @model_validator(mode="after")
    def _load_secret_file(self) -> WebhookSettings:
        if self.secret is None and self.secret_file is not None:
            self.secret = _read_secret_file(self.secret_file, "secret_file")
        return self

    @field_validator("schedule")
    @classmethod
    def _schedule_nonempty(cls, value: list[float]) -> list[float]:
        if not value or any(v < 0 for v in value):
            raise ValueError("schedule needs at least one delay, none negative")
        return value


class IngressToken(_Section):
    """One producer token of the HTTP ingress: stored as its SHA-256, allowed some accounts."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token")
    accounts: list[str] = Field(min_length=1, description='account names, or "*" for all')


class IngressSettings(_Section):
    """The HTTP ingress for producers in any language, and the drop-in Messages endpoint."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tokens: list[IngressToken] = []
    max_body_bytes: int = Field(32 * 1024 * 1024, ge=1024)
    max_bulk_items: int = Field(10_000, ge=1)
    rate_limit: float = Field(2000.0, ge=0, description="requests per second per token; 0 = off")
    rate_burst: int = Field(4000, ge=1)
    max_held: int = Field(1000, ge=1, description="long-polls and drop-in calls held at once")
    max_connections: int = Field(10_000, ge=1)
    max_poll_wait: float = Field(60.0, ge=0)
    drop_in_max_hold: float = Field(540.0, gt=0)
    drop_in_max_wait: float = Field(
        2.0, gt=0, description="seconds a drop-in call waits for others before its batch is cut"
    )
    drop_in_reattach: float = Field(
        86400.0,
        gt=0,
        description="seconds an SDK's retry of a drop-in call re-attaches to the request its "
        "first attempt queued (instead of queuing and paying for another)",
    )
    idle_timeout: float = Field(15.0, gt=0)
    body_timeout: float = Field(30.0, gt=0)

    @field_validator("tokens")
    @classmethod
    def _unique_tokens(cls, value: list[IngressToken]) -> list[IngressToken]:
        for attr in ("name", "sha256"):
            seen = [getattr(t, attr) for t in value]
            dup = sorted({v for v in seen if seen.count(v) > 1})
            if dup:
                raise ValueError(f"each token needs its own {attr}; repeated: {dup}")
        return value


class HttpSettings(_Section):
    """The operations endpoints: /metrics, /healthz, /readyz."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535, description="0 picks a free port")
    metrics_dir: Path | None = Field(
        None, description="parent of each daemon's multiprocess metrics directory; unset: temp"
    )


class RedisSettings(_Section):
    """Where rq's control plane lives, and how far a payment-deciding write must reach."""

    rq_url: str | None = Field(
        None,
        description="standalone or Sentinel Redis for rq's queues; unset: the data Redis "
        "(required when redis_url is a cluster: rq does not support Redis Cluster)",
    )
    wait_replicas: int | None = Field(
        None,
        ge=0,
        description="replicas a submission intent or batch id must reach before batchd acts; "
        "unset: 1 when the master has a replica connected, else 0",
    )
    wait_timeout: float = Field(1.0, gt=0, description="seconds one WAIT for replicas may take")
    wait_submits: bool = Field(
        False, description="also WAIT for replicas before a producer's submit returns"
    )

    @field_validator("rq_url")
    @classmethod
    def _rq_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parsed = parse_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc).replace("redis_url: ", "")) from None
        if parsed.cluster:
            raise ValueError("rq does not support Redis Cluster: give a standalone or Sentinel URL")
        return value


class Settings(BaseSettings):
    """Everything batchd can be told. See config.example.toml for each field's meaning."""

    model_config = SettingsConfigDict(
        env_prefix="BATCHD_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    redis_url: str | None = Field(
        None,
        description="redis://, rediss://, unix://, redis+sentinel:// or redis+cluster://; "
        "unset starts an embedded Redis",
    )
    data_dir: Path = Path("batchd-data")
    prefix: str = Field("batchd", pattern=r"^[a-zA-Z0-9_.-]{1,32}$")
    retention: float = Field(7 * 86400.0, gt=0, description="seconds results are kept")
    accounts: dict[str, AccountSettings] = {"default": AccountSettings()}
    default_account: str = "default"
    api: ApiSettings = ApiSettings()
    batch: BatchSettings = BatchSettings()
    poll: PollSettings = PollSettings()
    retry: RetrySettings = RetrySettings()
    submit: SubmitSettings = SubmitSettings()
    run: RunSettings = RunSettings()
    log: LogSettings = LogSettings()
    webhooks: WebhookSettings = WebhookSettings()
    ingress: IngressSettings = IngressSettings()
    http: HttpSettings = HttpSettings()
    redis: RedisSettings = RedisSettings()

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            parse_url(value)
        except ConfigError as exc:
            raise ValueError(str(exc).replace("redis_url: ", "")) from None
        return value

    @field_validator("accounts")
    @classmethod
    def _account_names(cls, value: dict[str, AccountSettings]) -> dict[str, AccountSettings]:
        if not value:
            raise ValueError("at least one account is needed")
        for name in value:
            if not ACCOUNT_NAME.fullmatch(name):
                raise ValueError(f"account name {name!r} must match {ACCOUNT_NAME.pattern}")
        return value

    # A field validator (not a model one) so the problem is reported alongside any other bad
    # field; `accounts` is declared first, so it is in `info.data` whenever it was valid.
    @field_validator("default_account")
    @classmethod
    def _default_account_exists(cls, value: str, info: ValidationInfo) -> str:
        accounts = info.data.get("accounts")
        if accounts is not None and value not in accounts:
            raise ValueError(f"{value!r} is not one of the accounts {sorted(accounts)}")
        return value

    @field_validator("ingress")
    @classmethod
    def _token_accounts_exist(cls, value: IngressSettings, info: ValidationInfo) -> IngressSettings:
        accounts = info.data.get("accounts")
        if accounts is None:
            return value
        for token in value.tokens:
            unknown = sorted(set(token.accounts) - set(accounts) - {"*"})
            if unknown:
                raise ValueError(
                    f"token {token.name!r} names accounts {unknown} that are not configured "
                    f"(accounts: {sorted(accounts)})"
                )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml_path = _CONFIG_PATH.get("path")
        if toml_path is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml_path))
        return tuple(sources)

    @classmethod
    def load(cls, config: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
        """Load settings: `overrides` (CLI flags) > environment > TOML `config` > defaults.

        Raises ConfigError naming every invalid field.
        """
        path = config if config is not None else os.environ.get("BATCHD_CONFIG")
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"config file {path} not found", [f"config: {path} not found"])
        _CONFIG_PATH["path"] = Path(path) if path is not None else None
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = [_describe(err) for err in exc.errors()]
            raise ConfigError(
                "invalid configuration:\n  " + "\n  ".join(problems), problems
            ) from None
        except tomllib.TOMLDecodeError as exc:
            problem = f"config: {path} is not valid TOML: {exc}"
            raise ConfigError(f"invalid configuration: {problem}", [problem]) from None
        except ValueError as exc:  # environment values that do not parse, and the like
            raise ConfigError(f"invalid configuration: {exc}", [str(exc)]) from None
        finally:
            _CONFIG_PATH["path"] = None

    @model_validator(mode="after")
    def _rq_needs_standalone(self) -> Settings:
        if self.redis.rq_url is None and self.redis_url and parse_url(self.redis_url).cluster:
            raise ValueError(
                "redis.rq_url: required when redis_url is a Redis Cluster (rq, which runs the "
                "stage jobs, does not support Cluster); give it a standalone or Sentinel URL, "
                "e.g. BATCHD_REDIS__RQ_URL=redis://rq-host:6379/0"
            )
        return self

    @property
    def rq_url(self) -> str | None:
        """The Redis rq's queues live on."""
        return self.redis.rq_url or self.redis_url

    def account(self, name: str | None = None) -> AccountSettings:
        return self.accounts[name or self.default_account]

    def api_key(self, account: str) -> str | None:
        key = self.accounts[account].api_key
        return key.get_secret_value() if key is not None else None

    def base_url(self, account: str) -> str:
        return self.accounts[account].base_url or self.api.base_url

    def secrets(self) -> list[str]:
        """Every secret value configured, for the log redactor and the leak tests."""
        found: list[str] = []
        for acct in self.accounts.values():
            if acct.api_key is not None:
                found.append(acct.api_key.get_secret_value())
        wh = self.webhooks
        for s in (wh.secret, wh.previous_secret):
            if s is not None:
                found.append(s.get_secret_value())
        for ep in wh.endpoints:
            for s in (ep.secret, ep.previous_secret):
                if s is not None:
                    found.append(s.get_secret_value())
        return [s for s in found if s]


# The TOML path is handed to settings_customise_sources through this slot; `load` sets and clears
# it around the model's construction.
_CONFIG_PATH: dict[str, Path | None] = {"path": None}


def _describe(err: Any) -> str:
    loc = ".".join(str(p) for p in err.get("loc", ())) or "(settings)"
    msg = str(err.get("msg", "invalid"))
    value = err.get("input")
    # An unknown key may be a misspelled secret (`scret = "whsec_..."`): never echo its value.
    hidden = "secret" in loc or "key" in loc or err.get("type") == "extra_forbidden"
    if isinstance(value, str) and "://" in value and "@" in value:
        # A URL's user information may hold a password (redis://user:password@host).
        scheme, rest = value.split("://", 1)
        value = f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    if isinstance(value, str | int | float | bool) and not hidden:
        return f"{loc}: {msg} (got {value!r})"
    return f"{loc}: {msg}"
