"""Producer tokens: stored hashed, each allowed some accounts; 401 and 403; loopback without any."""

from __future__ import annotations

import json
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from batchd.errors import ConfigError
from batchd.ingress.auth import ANONYMOUS, Authenticator, new_token, token_sha256
from batchd.ingress.errors import IngressError
from batchd.settings import Settings
from tests.ingress.conftest import Ingress, params, start_ingress
from tests.ingress.test_routes import assert_error
from tests.support.emulator import EmulatorProcess
from tests.support.redis import RedisServer

# -- the Authenticator on its own ------------------------------------------------------------------


def settings_with(tokens: dict[str, list[str]]) -> tuple[Settings, dict[str, str]]:
    made = {name: new_token() for name in tokens}
    table = [{"name": n, "sha256": token_sha256(made[n]), "accounts": a} for n, a in tokens.items()]
    accounts: dict[str, dict[str, str]] = {"default": {}, "other": {}, "third": {}}
    return Settings(accounts=accounts, ingress={"tokens": table}), made


def test_tokens_are_random_and_stored_only_as_their_digest() -> None:
    """A token is 256 random bits; settings hold its SHA-256 hex, not the token."""
    settings, made = settings_with({"svc": ["*"]})
    token = made["svc"]
    assert token.startswith("bdt_") and len(token) > 40
    assert new_token() != new_token()
    dumped = json.dumps(settings.model_dump(mode="json"))
    assert token not in dumped
    assert token_sha256(token) in dumped


def test_bearer_token_names_its_principal_and_accounts() -> None:
    """A known bearer token maps to its name, accounts and first account as default."""
    settings, made = settings_with({"svc": ["other", "third"]})
    auth = Authenticator(settings)
    who = auth.authenticate({"Authorization": f"bearer {made['svc']}"}, api_key_header=False)
    assert who.name == "svc"
    assert who.default_account == "other"
    assert who.allows("third") and not who.allows("default")


def test_star_allows_every_account_and_defaults_to_the_default_one() -> None:
    """accounts = ["*"]: every account, and requests naming none go to default_account."""
    settings, made = settings_with({"svc": ["*"]})
    who = Authenticator(settings).authenticate(
        {"Authorization": f"Bearer {made['svc']}"}, api_key_header=False
    )
    assert who.allows("third") and who.default_account == "default"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer "}, {"Authorization": "Basic abc"},
     {"Authorization": "Bearer bdt_wrong"}],
)  # fmt: skip
def test_missing_or_unknown_token_is_401(headers: dict[str, str]) -> None:
    """No token, another scheme or an unknown token raise 401 with a Bearer challenge."""
    settings, _ = settings_with({"svc": ["*"]})
    with pytest.raises(IngressError) as exc:
        Authenticator(settings).authenticate(headers, api_key_header=False)
    assert exc.value.status == 401
    assert exc.value.error_type == "authentication_error"
    assert exc.value.headers["WWW-Authenticate"].startswith("Bearer")


def test_x_api_key_counts_only_where_allowed() -> None:
    """x-api-key is a token on the drop-in endpoint only."""
    settings, made = settings_with({"svc": ["*"]})
    auth = Authenticator(settings)
    assert auth.authenticate({"x-api-key": made["svc"]}, api_key_header=True).name == "svc"
    with pytest.raises(IngressError):
        auth.authenticate({"x-api-key": made["svc"]}, api_key_header=False)


def test_without_tokens_everyone_is_the_anonymous_principal() -> None:
    """No token configured: every request is let in, for every account."""
    auth = Authenticator(Settings())
    who = auth.authenticate({}, api_key_header=False)
    assert auth.open and who.name == ANONYMOUS and who.allows("anything")


def test_principal_refuses_an_account_with_403() -> None:
    """Using an account the token is not allowed raises 403 permission_error naming account."""
    settings, made = settings_with({"svc": ["other"]})
    who = Authenticator(settings).authenticate(
        {"Authorization": f"Bearer {made['svc']}"}, api_key_header=False
    )
    with pytest.raises(IngressError) as exc:
        who.check("default")
    assert (exc.value.status, exc.value.error_type, exc.value.field) == (
        403, "permission_error", "account",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ({"name": "a", "sha256": "not-hex", "accounts": ["*"]}, "ingress.tokens.0.sha256"),
        ({"name": "a", "sha256": "a" * 64, "accounts": []}, "ingress.tokens.0.accounts"),
        ({"name": "a", "sha256": "a" * 64, "accounts": ["ghost"]}, "ingress:"),
        ({"name": "a b", "sha256": "a" * 64, "accounts": ["*"]}, "ingress.tokens.0.name"),
    ],
)
def test_bad_token_settings_are_refused(token: dict[str, object], problem: str) -> None:
    """A digest that is not SHA-256 hex, no accounts, unknown accounts, a bad name: refused."""
    with pytest.raises(ConfigError) as exc:
        Settings.load(ingress={"tokens": [token]})
    assert any(p.startswith(problem) for p in exc.value.problems), exc.value.problems


def test_repeated_token_digests_are_refused() -> None:
    """Two entries with one digest (or one name) are a configuration error."""
    digest = "b" * 64
    tokens = [{"name": "a", "sha256": digest, "accounts": ["*"]},
              {"name": "b", "sha256": digest, "accounts": ["*"]}]  # fmt: skip
    with pytest.raises(ConfigError) as exc:
        Settings.load(ingress={"tokens": tokens})
    assert "repeated" in str(exc.value)


# -- against the daemon ----------------------------------------------------------------------------

ROUTES = [
    ("POST", "/v1/requests"),
    ("POST", "/v1/requests/bulk"),
    ("GET", "/v1/requests/default.01J0000000000000000000000A"),
    ("DELETE", "/v1/requests/default.01J0000000000000000000000A"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/batches/msgbatch_x"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/claude-sonnet-4-5"),
]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_every_route_needs_a_token(held: Ingress, method: str, path: str) -> None:
    """Without a token every route answers 401 authentication_error naming both headers."""
    response = held.http(token=None).request(method, path, json={"params": params()})
    body = assert_error(response, 401, "authentication_error")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Authorization: Bearer" in body["error"]["message"]
    assert "x-api-key" in body["error"]["message"]


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_x_api_key_is_a_token_on_every_route(held: Ingress, method: str, path: str) -> None:
    """The token sent as x-api-key (as SDKs and curl users do) passes auth on every route."""
    http = held.http(token=None, headers={"x-api-key": held.tokens["full"]})
    response = http.request(method, path, json={"params": params()})
    assert response.status_code not in (401, 403), response.text


def test_wrong_token_is_401(held: Ingress) -> None:
    """A token batchd does not know gets 401."""
    http = held.http(token=None, headers={"Authorization": "Bearer bdt_not-a-real-token"})
    assert_error(http.post("/v1/requests", json={"params": params()}), 401, "authentication_error")


def test_x_api_key_submits_like_a_bearer_token(held: Ingress) -> None:
    """POST /v1/requests with x-api-key queues under that token's account."""
    http = held.http(token=None, headers={"x-api-key": held.tokens["other"]})
    response = http.post("/v1/requests", json={"params": params()})
    assert response.status_code == 202, response.text
    assert response.json()["account"] == "other"


def test_wrong_x_api_key_is_401(held: Ingress) -> None:
    """An unknown token sent as x-api-key gets 401, as a wrong bearer token does."""
    http = held.http(token=None, headers={"x-api-key": "bdt_not-a-real-token"})
    assert_error(http.get("/v1/models"), 401, "authentication_error")


def test_token_submits_to_its_first_account_by_default(held: Ingress) -> None:
    """A request naming no account goes to the token's first account."""
    body = held.http("other").post("/v1/requests", json={"params": params()}).json()
    assert body["account"] == "other" and body["id"].startswith("other.")


def test_token_cannot_submit_to_another_account(held: Ingress) -> None:
    """Naming an account the token may not use gets 403 permission_error; nothing stored."""
    before = held.counter("submitted")
    response = held.http("other").post(
        "/v1/requests", json={"params": params(), "account": "default"}
    )
    assert_error(response, 403, "permission_error", "account")
    assert held.counter("submitted") == before


def test_token_cannot_read_or_cancel_another_accounts_request(held: Ingress) -> None:
    """GET and DELETE of a request in an account the token may not use get 403."""
    rid = held.http().post("/v1/requests", json={"params": params()}).json()["id"]
    narrow = held.http("other")
    assert_error(narrow.get(f"/v1/requests/{rid}"), 403, "permission_error")
    assert_error(narrow.delete(f"/v1/requests/{rid}"), 403, "permission_error")
    assert held.http().get(f"/v1/requests/{rid}").json()["status"] == "pending"


def test_tokens_never_reach_the_log(held: Ingress) -> None:
    """Neither a valid nor a refused token appears in the daemon's log."""
    held.http().post("/v1/requests", json={"params": params()})
    held.http(token=None, headers={"Authorization": "Bearer bdt_refused-token-xyz"}).get(
        "/v1/batches"
    )
    log = held.daemon.log_text()
    assert "ingress.listening" in log
    assert held.tokens["full"] not in log
    assert "bdt_refused-token-xyz" not in log


# -- no token configured ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def open_ingress(
    tmp_path_factory: pytest.TempPathFactory,
    module_redis: RedisServer,
    emulator_server: EmulatorProcess,
) -> Iterator[Ingress]:
    """No token configured and host 0.0.0.0 asked for."""
    ing = start_ingress(
        tmp_path_factory.mktemp("open"),
        module_redis,
        emulator_server,
        None,
        BATCHD_PREFIX="open",
        BATCHD_RUN__ROLES='["ingress"]',
        BATCHD_INGRESS__HOST="0.0.0.0",
    )
    try:
        yield ing
    finally:
        ing.close()


def listening_addresses(port: int) -> set[str]:
    """The local addresses of TCP sockets listening on `port` (Linux /proc/net/tcp{,6})."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        path = Path(table)
        if not path.exists():
            continue
        for row in path.read_text().splitlines()[1:]:
            cols = row.split()
            address, hexport = cols[1].split(":")
            if int(hexport, 16) == port and cols[3] == "0A":  # 0A: LISTEN
                found.add(address)
    return found


def test_without_tokens_the_listener_binds_loopback_only(open_ingress: Ingress) -> None:
    """Asked for 0.0.0.0 with no token, the ingress listens on 127.0.0.1 alone."""
    port = int(open_ingress.url.rsplit(":", 1)[1])
    assert listening_addresses(port) == {"0100007F"}  # 127.0.0.1, little-endian hex
    host = socket.gethostbyname("localhost")
    assert httpx.get(f"http://{host}:{port}/openapi.json").status_code == 200


def test_without_tokens_the_start_up_log_says_so(open_ingress: Ingress) -> None:
    """The start-up line says no token is configured and the ingress is loopback only."""
    lines = [
        json.loads(x) for x in open_ingress.daemon.log_text().splitlines() if x.startswith("{")
    ]
    [line] = [x for x in lines if x.get("event") == "ingress.listening"]
    assert line["level"] == "warning"
    assert line["tokens"] == 0
    assert "loopback only" in line["detail"] and "not 0.0.0.0" in line["detail"]
    assert line["url"].startswith("http://127.0.0.1:")


def test_without_tokens_requests_need_no_token(open_ingress: Ingress) -> None:
    """With no token configured a request without credentials is accepted."""
    response = open_ingress.http(token=None).post("/v1/requests", json={"params": params()})
    assert response.status_code == 202


# -- batchd ingress token --------------------------------------------------------------------------


def test_token_command_prints_a_token_and_its_settings_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`batchd ingress token` prints the token once and a table that authenticates it."""
    from batchd.cli import main

    assert main(["ingress", "token", "--name", "orders", "--accounts", "default,other"]) == 0
    out = capsys.readouterr().out
    token = out.splitlines()[0].rsplit(" ", 1)[1]
    table = tomllib.loads(out)["ingress"]["tokens"][0]
    assert table == {"name": "orders", "sha256": token_sha256(token),
                     "accounts": ["default", "other"]}  # fmt: skip
    settings = Settings(accounts={"default": {}, "other": {}}, ingress={"tokens": [table]})
    who = Authenticator(settings).authenticate(
        {"Authorization": f"Bearer {token}"}, api_key_header=False
    )
    assert who.name == "orders"


def test_token_command_refuses_a_bad_name(capsys: pytest.CaptureFixture[str]) -> None:
    """A name that settings would refuse exits 2 before any token is made."""
    from batchd.cli import main

    assert main(["ingress", "token", "--name", "has space"]) == 2
    assert "bdt_" not in capsys.readouterr().out
