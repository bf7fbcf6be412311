"""The OpenAPI document matches the implementation: a property-based run of schemathesis against
the live ingress, and the document's routes against the app's."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.generation.case import Case
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

from batchd.ingress.openapi import build
from batchd.ingress.routes import build_app
from batchd.ingress.server import make_ingress
from batchd.settings import Settings
from tests.ingress.conftest import Ingress

#: Examples per operation: enough to find a mismatch, few enough for ~30 s in all.
EXAMPLES = 12


OPERATIONS = [
    ("POST", "/v1/requests"),
    ("POST", "/v1/requests/bulk"),
    ("GET", "/v1/requests/{id}"),
    ("DELETE", "/v1/requests/{id}"),
    ("GET", "/v1/batches"),
    ("GET", "/v1/batches/{id}"),
    ("POST", "/v1/messages"),
    ("POST", "/v1/messages/count_tokens"),
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{id}"),
]
CASES = [
    pytest.param(method, path, mode, id=f"{method} {path} {mode.value}")
    for method, path in OPERATIONS
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
] + [pytest.param("GET", "/openapi.json", GenerationMode.POSITIVE, id="GET /openapi.json")]

# Valid-looking data may still be refused for what a schema cannot say (metadata over its
# byte limit, a callback host that is private, an account the token may not use): every other
# check runs. The drop-in's 5xx answers are the Messages API's own (504 past the hold here).
EXCLUDED: list[Any] = [positive_data_acceptance]
# Invalid data must be refused with one of the statuses the document gives for it: 400, and 413
# for a bulk call over ingress.max_bulk_items (and what auth and limits answer first).
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": ["400", "401", "403", "404",
                                                                  "405", "413", "429"]}}}
)  # fmt: skip
EXCLUDED_DROP_IN: list[Any] = [*EXCLUDED, not_a_server_error]


@pytest.mark.parametrize(("method", "path", "mode"), CASES)
def test_operation_answers_as_documented(
    held: Ingress, method: str, path: str, mode: GenerationMode
) -> None:
    """Generated requests (valid, or not) get the statuses, headers and bodies documented."""
    schema = schemathesis.openapi.from_url(f"{held.url}/openapi.json", config=CONFIG)
    operation = schema[path][method]
    auth = {"Authorization": f"Bearer {held.tokens['spare']}"}
    excluded = EXCLUDED_DROP_IN if path == "/v1/messages" else EXCLUDED

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case[Any]) -> None:
        case.call_and_validate(
            headers={**dict(case.headers or {}), **auth}, excluded_checks=excluded, timeout=10
        )

    run()


def test_document_routes_are_the_apps_routes() -> None:
    """Every (method, path) the app serves is in the document, and nothing else."""
    settings_ = Settings(redis_url="redis://127.0.0.1:1/0", ingress={"enabled": True})
    ctx = make_ingress(settings_)
    try:
        app = build_app(ctx)
        served = {
            (route.method.lower(), route.resource.canonical)
            for route in app.router.routes()
            if route.resource is not None
        }
        doc = build(settings_)
        documented = {(m, path) for path, ops in doc["paths"].items() for m in ops}
        assert served == documented
    finally:
        asyncio.run(ctx.client.redis.aclose())


def test_document_follows_the_settings() -> None:
    """Accounts, priorities and limits in the document are the configured ones."""
    settings_ = Settings(
        accounts={"a": {}, "b": {}},
        default_account="a",
        submit={"priorities": 3, "max_key_length": 40},
        ingress={"max_bulk_items": 7},
    )
    doc = build(settings_)
    submit = doc["components"]["schemas"]["SubmitRequest"]["properties"]
    assert submit["account"]["enum"] == ["a", "b", None]
    assert submit["priority"]["maximum"] == 2
    assert submit["key"]["maxLength"] == 40
    bulk = doc["paths"]["/v1/requests/bulk"]["post"]["requestBody"]["content"]
    assert bulk["application/json"]["schema"]["maxItems"] == 7
    assert doc["security"] == []  # no tokens configured


def test_document_betas_are_the_known_betas() -> None:
    """A request's `betas` may be any of api.known_betas, and only those."""
    settings_ = Settings(api={"known_betas": ["beta-one-2030-01-01", "beta-two-2030-01-01"]})
    submit = build(settings_)["components"]["schemas"]["SubmitRequest"]["properties"]
    assert submit["betas"]["items"]["enum"] == ["beta-one-2030-01-01", "beta-two-2030-01-01"]


def test_document_gives_409_where_a_reused_key_can_conflict() -> None:
    """POST /v1/requests and the drop-in document 409 for a key reused with another body."""
    paths = build(Settings())["paths"]
    assert "409" in paths["/v1/requests"]["post"]["responses"]
    assert "409" in paths["/v1/messages"]["post"]["responses"]
