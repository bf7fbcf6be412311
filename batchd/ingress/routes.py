"""The ingress's route table: the producer routes of `app` and the drop-in Messages route."""

from __future__ import annotations

from aiohttp import web

from batchd.ingress.app import (
    INGRESS,
    MESSAGES_PATH,
    Ingress,
    cancel_request,
    get_batch,
    get_request,
    guard,
    list_batches,
    openapi,
    submit,
    submit_bulk,
)
from batchd.ingress.ledger import COST_PATH, get_cost
from batchd.ingress.messages import count_tokens, create_message, list_models, retrieve_model
from batchd.ingress.operators import install


def build_app(ctx: Ingress) -> web.Application:
    app = web.Application(middlewares=[guard])
    app[INGRESS] = ctx
    app.router.add_get("/openapi.json", openapi, allow_head=False)
    app.router.add_post("/v1/requests", submit)
    app.router.add_post("/v1/requests/bulk", submit_bulk)
    app.router.add_get("/v1/requests/{id}", get_request, allow_head=False)
    app.router.add_delete("/v1/requests/{id}", cancel_request)
    app.router.add_get("/v1/batches", list_batches, allow_head=False)
    app.router.add_get("/v1/batches/{id}", get_batch, allow_head=False)
    app.router.add_post(MESSAGES_PATH, create_message)
    app.router.add_post(MESSAGES_PATH + "/count_tokens", count_tokens)
    app.router.add_get("/v1/models", list_models, allow_head=False)
    app.router.add_get("/v1/models/{id}", retrieve_model, allow_head=False)
    app.router.add_get(COST_PATH, get_cost, allow_head=False)
    install(app)
    return app
