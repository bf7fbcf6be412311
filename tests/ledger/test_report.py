"""Cost reports from the ledger: by account, model, tag and day; `batchd cost`; GET /v1/cost; the
cost metrics."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from aiohttp import web
from jsonschema import Draft202012Validator
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from batchd import cost
from batchd.cli import main
from batchd.ingress.auth import new_token, token_sha256
from batchd.ingress.ledger import COST_PATH, get_cost, openapi_paths, openapi_schemas
from batchd.ingress.routes import build_app
from batchd.ingress.server import make_ingress
from batchd.observe.ledger import LedgerCollector
from batchd.settings import Settings
from batchd.store.ledger import DAY_MS
from tests.ledger import ACCOUNT, Books, succeeded, usage
from tests.ledger.conftest import MakeSettings

HAIKU = "claude-haiku-4-5"


@pytest.fixture
def spent(books: Books) -> Books:
    """A ledger with: 2 Sonnet requests of `default` tagged `a` today, 1 Haiku request of
    `team` untagged today, and 1 Sonnet request of `default` tagged `b` yesterday."""
    now = books.store.now_ms()
    books.submit(2, tag="a")
    books.fan_out(books.cut(), lambda i: succeeded(usage(1_000_000, 100_000)))
    books.submit(1, account="team", model=HAIKU)
    books.fan_out(
        books.cut("team"), lambda i: succeeded(usage(2_000_000, 0), HAIKU), account="team"
    )
    books.submit(1, tag="b")
    books.fan_out(books.cut(), lambda i: succeeded(usage(0, 1_000_000)), now_ms=now - DAY_MS)
    return books


def rows(books: Books, *by: str) -> dict[tuple[str, ...], dict[str, Any]]:
    r = cost.report(books.store, books.rt.settings, since_ms=books.store.now_ms() - 3 * DAY_MS,
                    by=by)  # fmt: skip
    return {tuple(row.key[g] for g in by): row.as_dict() for row in r.rows}


def test_report_by_account(spent: Books) -> None:
    """Each account's tokens and cost as billed, at half the real-time cost."""
    got = rows(spent, "account")
    # default: 2 M input and 200 k output + 1 M output of Sonnet 4.5 ($3 / $15 a million)
    assert got[(ACCOUNT,)]["realtime_cost_usd"] == pytest.approx(6 + 3 + 15)
    assert got[(ACCOUNT,)]["cost_usd"] == pytest.approx(12)
    assert got[(ACCOUNT,)]["saved_usd"] == pytest.approx(12)
    assert got[("team",)]["tokens"]["input"] == 2_000_000
    assert got[("team",)]["cost_usd"] == pytest.approx(1.0)


def test_report_by_model(spent: Books) -> None:
    """Each model's requests and cost."""
    got = rows(spent, "model")
    assert got[("claude-sonnet-4-5",)]["requests"] == 3
    assert got[(HAIKU,)]["requests"] == 1
    assert got[(HAIKU,)]["realtime_cost_usd"] == pytest.approx(2.0)


def test_report_by_tag(spent: Books) -> None:
    """Each tag's cost; untagged requests have the tag ''."""
    got = rows(spent, "tag")
    assert got[("a",)]["cost_usd"] == pytest.approx((6 + 3) / 2)
    assert got[("b",)]["cost_usd"] == pytest.approx(15 / 2)
    assert got[("",)]["cost_usd"] == pytest.approx(1.0)


def test_report_by_day(spent: Books) -> None:
    """Yesterday's and today's usage apart."""
    got = rows(spent, "day")
    assert [v["requests"] for _, v in sorted(got.items())] == [1, 3]


def test_report_total_is_the_sum_of_its_rows(spent: Books) -> None:
    """The total row adds up every group."""
    r = cost.report(spent.store, spent.rt.settings, since_ms=spent.store.now_ms() - 3 * DAY_MS,
                    by=("account", "tag"))  # fmt: skip
    assert r.total.cost.billed == pytest.approx(sum(row.cost.billed for row in r.rows))
    assert r.total.usage.requests == 4


def test_a_range_leaves_out_what_lies_outside_it(spent: Books) -> None:
    """Since an hour ago, yesterday's request is not counted."""
    r = cost.report(spent.store, spent.rt.settings, since_ms=spent.store.now_ms() - 3_600_000)
    assert r.total.usage.requests == 3


def test_parse_time_takes_spans_dates_and_times() -> None:
    """`7d`, an ISO date and an ISO time (UTC unless it says otherwise)."""
    now = 1_800_000_000_000
    assert cost.parse_time("7d", now) == now - 7 * DAY_MS
    assert cost.parse_time("2026-12-01", now) == 1_796_083_200_000
    assert cost.parse_time("2026-12-01T01:00+01:00", now) == 1_796_083_200_000
    with pytest.raises(ValueError, match="not a time"):
        cost.parse_time("last tuesday", now)


@pytest.fixture
def cli(settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """The global options of a `batchd` command on the test's Redis and both its accounts (a
    wide terminal, so tables are not cut short); the logging a command sets up is put back
    after."""
    config = tmp_path / "batchd.toml"
    config.write_text("[accounts.default]\n[accounts.team]\n", encoding="utf-8")
    monkeypatch.setenv("COLUMNS", "200")
    saved = structlog.get_config()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield ["--config", str(config), "--redis-url", str(settings.redis_url)]
    finally:
        structlog.configure(**saved)
        root.handlers[:] = handlers
        root.setLevel(level)


def test_cli_prints_the_report_as_json(
    spent: Books, cli: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """`batchd cost --by model --json`: rows and the total, costs in USD."""
    assert main([*cli, "cost", "--by", "model", "--json", "--since", "3d"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["by"] == ["model"] and out["currency"] == "USD"
    assert {r["model"] for r in out["rows"]} == {"claude-sonnet-4-5", HAIKU}
    assert out["total"]["saved_usd"] == pytest.approx(out["total"]["cost_usd"])


def test_cli_prints_a_table_with_cost_and_saving(
    spent: Books, cli: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The table has the cost, the real-time cost and the saving, and a total."""
    assert main([*cli, "cost", "--by", "tag", "--since", "3d"]) == 0
    out = capsys.readouterr().out
    for word in ("cost", "at real-time prices", "saved", "total", "$13.00"):
        assert word in out, word


def test_cli_flags_an_unpriced_model_and_keeps_its_json_whole(
    books: Books, cli: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A model without a price is flagged in the rows; its warning goes to stderr."""
    books.submit(1, model="claude-unheard-of-3")
    books.fan_out(books.cut(), lambda i: succeeded(usage(10, 10), "claude-unheard-of-3"))
    capsys.readouterr()  # what the producer logged
    assert main([*cli, "cost", "--json"]) == 0
    out, err = capsys.readouterr()
    total = json.loads(out)["total"]
    assert (total["priced"], total["unpriced_models"]) == (False, ["claude-unheard-of-3"])
    assert "no price" in err


def test_cli_refuses_an_unknown_group(cli: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`--by colour` exits 2 naming the groups it knows."""
    assert main([*cli, "cost", "--by", "colour"]) == 2
    assert "account, model, tag" in capsys.readouterr().err


def serve_cost(settings: Settings, call: Callable[[httpx.AsyncClient], Any]) -> Any:
    """Run the ingress app with the cost route in this process and `call` it."""

    async def go() -> Any:
        ctx = make_ingress(settings)
        app = build_app(ctx)
        app.router.add_get(COST_PATH, get_cost, allow_head=False)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                return await call(http)
        finally:
            await runner.cleanup()
            await ctx.client.aclose()

    return asyncio.run(go())


def test_http_route_reports_the_accounts_a_token_may_see(
    spent: Books, make_settings: MakeSettings
) -> None:
    """GET /v1/cost with a token for `team` only: only `team`'s rows."""
    token = new_token()
    settings = make_settings(ingress={"enabled": True, "tokens": [
        {"name": "t", "sha256": token_sha256(token), "accounts": ["team"]}]})  # fmt: skip

    async def call(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get(COST_PATH, params={"by": "account,model", "since": "3d"},
                              headers={"Authorization": f"Bearer {token}"})  # fmt: skip

    r = serve_cost(settings, call)
    assert r.status_code == 200, r.text
    body = r.json()
    assert [(row["account"], row["model"]) for row in body["rows"]] == [("team", HAIKU)]


def test_http_route_refuses_a_bad_time(spent: Books, make_settings: MakeSettings) -> None:
    """An unreadable `since` is a 400 naming the parameter."""
    settings = make_settings(ingress={"enabled": True})

    async def call(http: httpx.AsyncClient) -> httpx.Response:
        return await http.get(COST_PATH, params={"since": "soon"})

    r = serve_cost(settings, call)
    assert r.status_code == 400
    assert "since" in r.text


def test_a_report_follows_the_routes_documented_schema(spent: Books) -> None:
    """The report the route answers is a valid CostReport of its OpenAPI entry."""
    document = {"components": {"schemas": openapi_schemas()}, "paths": openapi_paths([ACCOUNT])}
    resource = DRAFT202012.create_resource(document)
    registry: Registry[Any] = Registry().with_resource("urn:cost", resource)
    ref = document["paths"][COST_PATH]["get"]["responses"]["200"]["content"]
    name = ref["application/json"]["schema"]["$ref"]
    validator = Draft202012Validator({"$ref": "urn:cost" + name}, registry=registry)
    r = cost.report(spent.store, spent.rt.settings, by=("account", "day"))
    validator.validate(r.as_dict())


def test_metrics_count_tokens_cost_and_saving(spent: Books, settings: Settings) -> None:
    """/metrics: tokens by kind, cost and saving by account, model and mode; no tag label."""
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in LedgerCollector(spent.store, settings).collect()
        for s in f.samples
    }
    team = (("account", "team"), ("mode", "batch"), ("model", HAIKU))
    assert samples[("batchd_cost_usd_total", team)] == pytest.approx(1.0)
    assert samples[("batchd_cost_saved_usd_total", team)] == pytest.approx(1.0)
    tokens = (("account", "team"), ("kind", "input"), ("mode", "batch"), ("model", HAIKU))
    assert samples[("batchd_ledger_tokens_total", tokens)] == 2_000_000
    assert all("tag" not in dict(labels) for _, labels in samples)


def test_metrics_give_listed_tags_their_own_label(
    spent: Books, make_settings: MakeSettings, make_books: Callable[..., Books]
) -> None:
    """With ledger.metric_tags = ["a"], tag `a` has its label value and `b` counts as other."""
    settings = make_settings(ledger={"metric_tags": ["a"]})
    found = {
        dict(s.labels).get("tag")
        for f in LedgerCollector(spent.store, settings).collect()
        if f.name == "batchd_cost_usd"
        for s in f.samples
    }
    assert found == {"a", "other", ""}
