"""The operator routes (dead requests, look-ups) and the ingress's metrics, on an ingress app
served from a thread with `operators.install` applied, against a real daemon's Redis.

The app is built as `batchd run` builds it (`make_ingress`, `build_app`), so these tests hold
whether or not `build_app` calls `install` itself.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web

from batchd import Settings
from batchd.ingress.app import Ingress
from batchd.ingress.openapi import build
from batchd.ingress.operators import install, openapi_paths
from batchd.ingress.routes import build_app
from batchd.ingress.server import make_ingress
from batchd.observe import metrics
from tests.e2e.conftest import Stack, params, stack
from tests.ingress.conftest import token_env
from tests.support.daemon import wait_for

__all__ = ["stack"]


@dataclass
class Served:
    """An ingress app with the operator routes, served on a loop of its own thread."""

    url: str
    tokens: dict[str, str]
    ctx: Ingress

    def http(self, token: str | None = "full") -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[token]}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)


def ingress_settings(stack: Stack, tokens: str, **ingress: Any) -> Settings:
    return Settings.load(
        redis_url=stack.redis.url,
        accounts={"default": {"api_key": stack.emulator.api_key}, "other": {}},
        ingress={"enabled": True, "tokens": json.loads(tokens), **ingress},
    )


@pytest.fixture
def serve(stack: Stack) -> Iterator[Callable[..., Served]]:
    """Start an ingress app (ingress settings as keywords); stopped after the test."""
    stops: list[Callable[[], None]] = []

    def start(**ingress: Any) -> Served:
        made, table = token_env({"full": ["*"], "other": ["other"]})
        settings = ingress_settings(stack, table, **ingress)
        box: dict[str, Any] = {}
        started = threading.Event()

        async def main() -> None:
            stop = asyncio.Event()
            ctx = make_ingress(settings)
            app = build_app(ctx)
            install(app)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            box.update(url=f"http://127.0.0.1:{port}", ctx=ctx, stop=stop,
                       loop=asyncio.get_running_loop())  # fmt: skip
            started.set()
            try:
                await stop.wait()
            finally:
                await runner.cleanup()
                await ctx.client.redis.aclose()

        thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
        thread.start()
        assert started.wait(10), "the ingress app did not start"

        def stop() -> None:
            box["loop"].call_soon_threadsafe(box["stop"].set)
            thread.join(10)

        stops.append(stop)
        return Served(box["url"], made, box["ctx"])

    try:
        yield start
    finally:
        for stop in stops:
            stop()
        metrics.watch_held(None)


@pytest.fixture
def dead(stack: Stack) -> list[str]:
    """Three requests of the default account that ended dead (a retryable error, one try)."""
    stack.emulator.set_profile({"result_api_error_rate": 1.0})
    stack.daemon(BATCHD_RETRY__MAX_ATTEMPTS="1")
    ids = [stack.client.submit(params(i)).id for i in range(3)]
    stack.wait_ended(3)
    stack.emulator.set_profile({})
    return ids


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


# -- dead requests ---------------------------------------------------------------------------


def test_dead_lists_each_dead_request(serve: Callable[..., Served], dead: list[str]) -> None:
    """GET /v1/dead gives every dead request with its error and whether it can go again."""
    with serve().http() as http:
        answer = http.get("/v1/dead")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert sorted(x["id"] for x in body["data"]) == sorted(dead)
    assert {x["error"]["type"] for x in body["data"]} == {"api_error"}
    assert all(x["requeueable"] and x["died_at"].endswith("Z") for x in body["data"])


def test_requeue_named_requests(
    stack: Stack, serve: Callable[..., Served], dead: list[str]
) -> None:
    """POST /v1/dead/requeue with ids sends those round again; they succeed."""
    with serve().http() as http:
        answer = http.post("/v1/dead/requeue", json={"ids": dead[:2]})
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"data": {rid: "requeued" for rid in dead[:2]}, "requeued": 2}
    assert [r.status for r in stack.client.wait_many(dead[:2], timeout=60)] == ["succeeded"] * 2
    assert [x.id for x in stack.client.dead()] == [dead[2]]


def test_requeue_by_error_type(stack: Stack, serve: Callable[..., Served], dead: list[str]) -> None:
    """A selection by error type requeues the dead requests whose last error has that type."""
    with serve().http() as http:
        none = http.post("/v1/dead/requeue", json={"error_type": "overloaded_error"})
        every = http.post("/v1/dead/requeue", json={"error_type": "api_error"})
    assert none.json() == {"data": {}, "requeued": 0}
    assert every.json()["requeued"] == 3
    assert stack.client.dead() == []


def test_requeue_needs_ids_or_a_selection(
    stack: Stack, serve: Callable[..., Served], dead: list[str]
) -> None:
    """An empty body, or ids with a selection, is a 400; nothing is requeued."""
    with serve().http() as http:
        empty = http.post("/v1/dead/requeue", json={})
        both = http.post("/v1/dead/requeue", json={"ids": dead, "all": True})
    assert (empty.status_code, both.status_code) == (400, 400)
    assert len(stack.client.dead()) == 3


def test_purge_all(stack: Stack, serve: Callable[..., Served], dead: list[str]) -> None:
    """POST /v1/dead/purge {"all": true} forgets every dead letter; results stay readable."""
    with serve().http() as http:
        answer = http.post("/v1/dead/purge", json={"all": True})
    assert answer.json() == {"purged": 3}
    assert stack.client.dead() == []
    assert stack.client.get(dead[0]).state == "dead"


def test_dead_requests_of_another_account_are_forbidden(
    serve: Callable[..., Served], dead: list[str]
) -> None:
    """A token of account `other` may neither list nor requeue the default account's."""
    with serve().http("other") as http:
        listed = http.get("/v1/dead", params={"account": "default"})
        requeued = http.post("/v1/dead/requeue", json={"ids": dead[:1]})
        mine = http.get("/v1/dead")
    assert (listed.status_code, requeued.status_code) == (403, 403)
    assert mine.json() == {"data": [], "count": 0}


# -- look-ups --------------------------------------------------------------------------------


def test_find_by_key(stack: Stack, serve: Callable[..., Served]) -> None:
    """GET /v1/requests?key=K gives the request submitted under K; an unknown key, none."""
    ticket = stack.client.submit(params(1), key="invoice-9")
    with serve().http() as http:
        found = http.get("/v1/requests", params={"key": "invoice-9"})
        unknown = http.get("/v1/requests", params={"key": "invoice-10"})
    assert [x["id"] for x in found.json()["data"]] == [ticket.id]
    assert unknown.json() == {"data": [], "count": 0}


def test_requests_of_a_batch(stack: Stack, serve: Callable[..., Served]) -> None:
    """GET /v1/requests?batch=ID gives the requests of a batch in flight."""
    stack.emulator.set_profile({"processing_time": [600, 600]})
    stack.daemon()
    ids = [stack.client.submit(params(i)).id for i in range(3)]
    wait_for(lambda: stack.client.get(ids[0]).batch_id, 30, "the batch to be created")
    batch_id = stack.client.get(ids[0]).batch_id
    with serve().http() as http:
        answer = http.get("/v1/requests", params={"batch": batch_id})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert sorted(x["id"] for x in body["data"]) == sorted(ids)
    assert body["batch"]["batch_id"] == batch_id


# -- metrics ---------------------------------------------------------------------------------


def test_answers_are_counted_by_route_and_status_class(serve: Callable[..., Served]) -> None:
    """Each answer counts under its route template and status class; a 401 also as a refusal."""
    route = "GET /v1/requests/{id}"

    def counts() -> tuple[float, float, float]:
        return (
            sample("batchd_ingress_requests_total", route=route, code="4xx"),
            sample("batchd_ingress_refusals_total", reason="unauthorized"),
            sample("batchd_ingress_request_duration_seconds_count", route="GET /v1/dead"),
        )

    before = counts()
    served = serve()
    with served.http() as http, served.http(None) as anonymous:
        assert http.get("/v1/requests/default.nope").status_code == 404
        assert anonymous.get("/v1/dead").status_code == 401
    after = counts()
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1]


def test_held_calls_are_read_live_and_a_full_house_refuses(
    stack: Stack, serve: Callable[..., Served]
) -> None:
    """A long-poll shows as a held call; with every slot taken the next one is a 429 counted as
    held_full."""
    served = serve(max_held=1)
    rid = stack.client.submit(params(1)).id  # no daemon: it stays pending

    def held() -> tuple[float, float]:
        families = {f.name: f.samples[0].value for f in metrics.LiveCollector().collect()}
        return families["batchd_ingress_held_calls"], families["batchd_ingress_held_limit"]

    before = sample("batchd_ingress_refusals_total", reason="held_full")
    with served.http() as first, served.http() as second:
        poll = threading.Thread(target=first.get, args=(f"/v1/requests/{rid}",),
                                kwargs={"params": {"wait": "5"}})  # fmt: skip
        poll.start()
        wait_for(lambda: held() == (1, 1), 10, "the long-poll to be held")
        refused = second.get(f"/v1/requests/{rid}", params={"wait": "5"})
        poll.join(10)
    assert refused.status_code == 429
    assert sample("batchd_ingress_refusals_total", reason="held_full") == before + 1
    assert held() == (0, 1)


# -- the route table -------------------------------------------------------------------------


def app_routes(settings: Settings) -> set[tuple[str, str]]:
    ctx = make_ingress(settings)
    try:
        app = build_app(ctx)
        install(app)
        return {(r.method, r.resource.canonical) for r in app.router.routes() if r.resource}
    finally:
        asyncio.run(ctx.client.redis.aclose())


SETTINGS = Settings(redis_url="redis://127.0.0.1:1/0", ingress={"enabled": True})


def test_route_label_values_are_the_apps_routes() -> None:
    """metrics.INGRESS_ROUTES names every route of the app (and `other`), nothing else."""
    served = {f"{m} {path}" for m, path in app_routes(SETTINGS)}
    assert served | {"other"} == set(metrics.INGRESS_ROUTES)


def test_operator_routes_are_documented() -> None:
    """The document with `openapi_paths` merged in describes exactly the app's routes."""
    doc = build(SETTINGS)
    for path, ops in openapi_paths(SETTINGS).items():
        doc["paths"].setdefault(path, {}).update(ops)
    documented = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
    assert documented == app_routes(SETTINGS)
