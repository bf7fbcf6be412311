"""The ingress's metrics: every answer counted by route and status class with its latency, the
calls turned away by reason, and the held calls read live (see `observe.metrics`).

`install(app)` puts `meter` outermost, so it sees every answer the `guard` middleware makes, and
`mark` innermost, so it knows whether a 429 came before any handler ran (a token's rate limit) or
from one that found every held slot taken.
"""

from __future__ import annotations

import asyncio
import time

from aiohttp import web

from batchd.errors import IngressError
from batchd.ingress.app import INGRESS, Handler
from batchd.observe import metrics

#: Set by `mark`: the call got past authentication and rate limits to its handler.
ENTERED = web.RequestKey("batchd_entered", bool)
#: Set by `mark`: the handler answered 429 with every held slot taken.
HELD_FULL = web.RequestKey("batchd_held_full", bool)
#: The status counted for a call whose client went away before it was answered (nginx's).
CLIENT_GONE = 499
_INSTALLED = web.AppKey("batchd_metering", bool)


def route_of(request: web.Request) -> str:
    """`<METHOD> <path template>` of the route that served the call; `other` for none."""
    info = request.match_info
    resource = info.route.resource if info is not None and info.http_exception is None else None
    if resource is None:
        return "other"
    name = f"{request.method} {resource.canonical}"
    return name if name in metrics.INGRESS_ROUTES else "other"


def refusal(request: web.Request, status: int) -> str | None:
    if status == 401:
        return "unauthorized"
    if status == 403:
        return "forbidden"
    if status == 429:
        if not request.get(ENTERED, False):
            return "rate_limited"
        if request.get(HELD_FULL, False):
            return "held_full"
    return None


@web.middleware
async def meter(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count the answer (whatever it is) by route and status class, and time it."""
    started = time.monotonic()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_GONE
        raise
    finally:
        metrics.ingress_answer(
            route_of(request), status, time.monotonic() - started, refusal(request, status)
        )


@web.middleware
async def mark(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Note that the call reached its handler, and why a 429 from it came."""
    request[ENTERED] = True
    try:
        return await handler(request)
    except IngressError as exc:
        if exc.status == 429:
            held = request.app[INGRESS].held
            request[HELD_FULL] = held.held >= held.limit
        raise


def install(app: web.Application) -> None:
    """Meter this app's calls and let /metrics read its held calls; once per app."""
    if app.get(_INSTALLED):
        return
    app[_INSTALLED] = True
    app.middlewares.insert(0, meter)
    app.middlewares.append(mark)
    held = app[INGRESS].held
    metrics.watch_held(lambda: (held.held, held.limit))
