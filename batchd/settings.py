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

from batchd import envvars
from batchd.defaults import CLAIM_CHUNK, CLAIM_CHUNK_MAX
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
    """One Anthropic account (workspace): its API key, optionally its own base URL, and what
    becomes of a request whose deadline no batch can make."""

    api_key: SecretStr | None = None
    api_key_file: Path | None = None
    base_url: str | None = None
    deadline_policy: Literal["realtime", "batch", "fail"] = Field(
        "realtime",
        description="a request whose deadline no batch can make: realtime (sent through the "
        "Messages API at its price), batch (kept in batches, its result marked late) or fail "
        "(ended errored, deadline_exceeded)",
    )

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
        CLAIM_CHUNK, ge=1, le=CLAIM_CHUNK_MAX, description="requests claimed per Redis call"
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
    expired: Literal["batch", "realtime", "fail"] | None = Field(
        None,
        description="a request whose batch expired before it ran: batch (round again in a "
        "batch), realtime (sent through the Messages API) or fail (ends expired); unset: batch "
        "when retry_expired is true, else fail",
    )
    retry_canceled: bool = True

    @model_validator(mode="after")
    def _one_expired_policy(self) -> RetrySettings:
        legacy = "batch" if self.retry_expired else "fail"
        if self.expired is not None and "retry_expired" in self.model_fields_set:
            if self.expired != legacy and not (self.expired == "realtime" and self.retry_expired):
                raise ValueError(
                    f"retry.expired = {self.expired!r} contradicts retry.retry_expired = "
                    f"{str(self.retry_expired).lower()}; set only retry.expired"
                )
        return self

    @property
    def expired_policy(self) -> Literal["batch", "realtime", "fail"]:
        """What becomes of an expired request: `expired`, else what `retry_expired` says."""
        if self.expired is not None:
            return self.expired
        return "batch" if self.retry_expired else "fail"


class DeadlineSettings(_Section):
    """Planning for requests with a deadline: when their lanes are cut, when they leave the
    batch route (see accounts.<name>.deadline_policy)."""

    default_duration: float = Field(
        3600.0,
        gt=0,
        description="seconds a batch is taken to need, from its cut to its end, until enough of "
        "the account's own have been observed",
    )
    min_samples: int = Field(
        5, ge=1, description="observed batch durations needed before they replace the default"
    )
    percentile: float = Field(
        0.9,
        gt=0,
        le=1,
        description="which of the observed durations plans a deadline (0.9: nine batches in "
        "ten were that quick)",
    )
    margin: float = Field(
        60.0, ge=0, description="seconds added to a batch's duration for its fan-out and polling"
    )
    realtime_reserve: float = Field(
        300.0,
        ge=0,
        description="seconds before a batch's earliest deadline at which, still unfinished, it "
        "is canceled (policies realtime and fail): time left for the cancel and the real-time "
        "route",
    )


class RealtimeSettings(_Section):
    """The real-time route (the "realtime" role): requests whose deadline no batch can make,
    sent through the Messages API at its price."""

    concurrency: int = Field(8, ge=1, le=1024, description="calls in flight at once per process")
    requests_per_minute: int = Field(
        50, ge=0, description="real-time calls per minute per account, all replicas (0: no limit)"
    )
    tokens_per_minute: int = Field(
        0,
        ge=0,
        description="input (estimated) and max output tokens per minute per account, all "
        "replicas (0: no limit)",
    )
    max_attempts: int = Field(
        4, ge=1, le=100, description="calls per request the API answered with a retryable error"
    )
    timeout: float = Field(600.0, gt=0, description="seconds one real-time call may take")


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

    roles: list[
        Literal["aggregator", "worker", "webhooks", "sweeper", "ingress", "console", "realtime"]
    ] = [
        "aggregator",
        "worker",
        "webhooks",
        "sweeper",
        "ingress",
        "console",
        "realtime",
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


class ConsoleToken(_Section):
    """One person's token for the web console, stored as its SHA-256, with what it may do."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.:@-]{1,64}$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="hex SHA-256 of the token")
    role: Literal["viewer", "operator"] = Field(
        "viewer", description="viewer: looks only; operator: also requeues, purges, retries"
    )


class ConsoleSettings(_Section):
    """The web console of `batchd run` (its "console" role): see and steer batchd in a browser."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = Field(9465, ge=0, le=65535, description="0 picks a free port")
    tokens: list[ConsoleToken] = []

    @field_validator("tokens")
    @classmethod
    def _unique_tokens(cls, value: list[ConsoleToken]) -> list[ConsoleToken]:
        for attr in ("name", "sha256"):
            seen = [getattr(t, attr) for t in value]
            dup = sorted({v for v in seen if seen.count(v) > 1})
            if dup:
                raise ValueError(f"each token needs its own {attr}; repeated: {dup}")
        return value


class ModelPrice(_Section):
    """One model's list (real-time) prices in USD per million tokens; `model` is its id or the
    id a dated snapshot starts with (`claude-sonnet-4-5` prices `claude-sonnet-4-5-20250929`)."""

    model: str = Field(min_length=1)
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cache_write_5m: float = Field(ge=0)
    cache_write_1h: float = Field(ge=0)
    cache_read: float = Field(ge=0)


class PriceSettings(_Section):
    """What tokens cost: the built-in table (`batchd.pricing`), amended by `models`."""

    batch_discount: float = Field(
        0.5, ge=0, lt=1, description="fraction of the list price the Batches API takes off"
    )
    models: list[ModelPrice] = Field(
        default_factory=list,
        description="prices added to the built-in table, or replacing its row of the same model",
    )

    @field_validator("models")
    @classmethod
    def _unique_models(cls, value: list[ModelPrice]) -> list[ModelPrice]:
        seen = [m.model for m in value]
        dup = sorted({m for m in seen if seen.count(m) > 1})
        if dup:
            raise ValueError(f"each model needs one price; repeated: {dup}")
        return value


class LedgerSettings(_Section):
    """The token and cost ledger's reports."""

    metric_tags: list[str] = Field(
        default_factory=list,
        description="tags that get their own `tag` label on the cost metrics (others: `other`); "
        "empty: no tag label, so producers' tags cannot multiply the series",
    )


class BudgetCap(_Section):
    """A spend cap (USD, at the prices billed) on an account, a tag, or a tag within an account.

    Days and months are UTC. A cap without `account` covers the tag across every account.
    """

    account: str | None = None
    tag: str | None = Field(None, pattern=r"^[A-Za-z0-9_.:/@-]{1,64}$")
    daily: float | None = Field(None, gt=0)
    monthly: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _has_scope_and_limit(self) -> BudgetCap:
        if self.account is None and self.tag is None:
            raise ValueError("a cap needs an account, a tag, or both")
        if self.daily is None and self.monthly is None:
            raise ValueError("a cap needs a daily or a monthly limit (USD)")
        return self

    @property
    def scope(self) -> str:
        """`account`, `tag:<tag>` or `account/tag:<tag>`, as holds and metrics name it."""
        if self.tag is None:
            return str(self.account)
        return f"{self.account}/tag:{self.tag}" if self.account else f"tag:{self.tag}"


class BudgetSettings(_Section):
    """Spend caps: at a cap, lanes holding the capped requests stay pending (never lost)."""

    caps: list[BudgetCap] = Field(default_factory=list)
    refuse_submits: bool = Field(
        False, description="also refuse new submits of a capped account or tag until it frees"
    )


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
        False,
        description="also WAIT for replicas before a producer's submit, or a consumer's ack, "
        "returns (DurabilityError when they do not confirm: submit again under the same key)",
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
    deadlines: DeadlineSettings = DeadlineSettings()
    realtime: RealtimeSettings = RealtimeSettings()
    submit: SubmitSettings = SubmitSettings()
    run: RunSettings = RunSettings()
    log: LogSettings = LogSettings()
    webhooks: WebhookSettings = WebhookSettings()
    ingress: IngressSettings = IngressSettings()
    console: ConsoleSettings = ConsoleSettings()
    http: HttpSettings = HttpSettings()
    redis: RedisSettings = RedisSettings()
    prices: PriceSettings = PriceSettings()
    ledger: LedgerSettings = LedgerSettings()
    budgets: BudgetSettings = BudgetSettings()

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

    @field_validator("budgets")
    @classmethod
    def _cap_accounts_exist(cls, value: BudgetSettings, info: ValidationInfo) -> BudgetSettings:
        accounts = info.data.get("accounts")
        if accounts is None:
            return value
        unknown = sorted({c.account for c in value.caps if c.account} - set(accounts))
        if unknown:
            raise ValueError(
                f"caps name accounts {unknown} that are not configured (accounts: "
                f"{sorted(accounts)})"
            )
        scopes = [c.scope for c in value.caps]
        dup = sorted({s for s in scopes if scopes.count(s) > 1})
        if dup:
            raise ValueError(f"one cap per scope; repeated: {dup}")
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
        if path is not None and Path(path).is_dir():
            raise ConfigError(
                f"config file {path} is a directory: give the path of a TOML file in it "
                f"(--config {Path(path) / 'batchd.toml'})",
                [f"config: {path} is a directory"],
            )
        if path is not None and not Path(path).is_file():
            raise ConfigError(f"config file {path} not found", [f"config: {path} not found"])
        unparsable = envvars.unparsable(cls, os.environ)
        if unparsable:
            raise ConfigError("invalid configuration: " + "\n  ".join(unparsable), unparsable)
        _CONFIG_PATH["path"] = Path(path) if path is not None else None
        try:
            return cls(**overrides)
        except ValidationError as exc:
            problems = [_describe(err) for err in exc.errors()]
            # One bad field is one line; several are a line each under the heading.
            sep = " " if len(problems) == 1 else "\n  "
            raise ConfigError(
                "invalid configuration:" + sep + "\n  ".join(problems), problems
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
