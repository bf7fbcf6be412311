"""The console's listener: its pages and static files (shipped in the package: no build step, no
CDN), the JSON API they poll, and the operators' actions, on an asyncio loop in a thread of
`batchd run` (the "console" role). `serve` runs it on the current loop, for tests.

Reads and actions are synchronous store calls, run on a small thread pool so a slow Redis never
stalls the loop. A sampler takes the charts' samples every few seconds, looked at or not.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import orjson
from aiohttp import web

from batchd import __version__
from batchd.errors import BatchdError
from batchd.ingress.auth import is_loopback
from batchd.logs import get_logger
from batchd.observe.health import Liveness
from batchd.runtime import Runtime
from batchd.settings import Settings

from . import actions
from .auth import (
    COOKIE,
    CSRF_HEADER,
    SESSION_SECONDS,
    Gate,
    Principal,
    loopback_host,
    same_origin,
)
from .history import SAMPLE_SECONDS, History
from .views import Views

log = get_logger("batchd.console")

#: The pages, styles and scripts, as shipped in the package.
STATIC = Path(__file__).parent / "static"
#: Milliseconds between two refreshes of a page (it polls the JSON API while visible).
REFRESH_MS = 2000
#: Largest body an action may send, bytes.
MAX_BODY = 1024 * 1024
#: Characters a search may have (ids, keys and batch ids are far shorter).
MAX_QUERY = 512
#: Threads running store reads and actions.
THREADS = 8
#: Seconds between looks at the daemon's stop event.
STOP_POLL = 0.1
#: Seconds answers in progress get to finish when the console stops.
SHUTDOWN_SECONDS = 3.0

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
#: No script, style or connection but the console's own; no framing; no referrer leaves it.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

T = TypeVar("T")


class Console:
    """The console's state: settings, its store connections, its views, its gate."""

    def __init__(
        self,
        settings: Settings,
        *,
        liveness: Liveness | None = None,
        identity: str | None = None,
        gate: Gate | None = None,
    ) -> None:
        if not settings.redis_url:
            raise ValueError("the console needs a Redis URL")
        self.settings = settings
        self.rt = Runtime(settings)
        self.history = History()
        self.views = Views(settings, self.rt, self.history, liveness, identity)
        self.gate = gate or Gate(settings)
        self.pool = ThreadPoolExecutor(THREADS, thread_name_prefix="console")
        self.files = {p.name: p for p in STATIC.iterdir() if p.suffix in _TYPES}
        self.listen = ""

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a synchronous read or action on the pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, partial(fn, *args, **kwargs))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.rt.close()


CONSOLE = web.AppKey("console", Console)


def listen_host(settings: Settings) -> str:
    """Where to bind: the configured host, or loopback when no token guards the console."""
    host = settings.console.host
    if settings.console.tokens or is_loopback(host):
        return host
    return "::1" if ":" in host else "127.0.0.1"


# -- answers -----------------------------------------------------------------------------------


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


def _scheme(request: web.Request) -> str:
    forwarded = request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip().lower()
    return "https" if request.secure or forwarded == "https" else "http"


def _query_int(request: web.Request, name: str, default: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or int(raw) > high:
        raise web.HTTPBadRequest(
            text=orjson.dumps({"error": f"{name}: an integer from 0 to {high}"}).decode(),
            content_type="application/json",
        )
    return int(raw)


def _account(request: web.Request, console: Console) -> str | None:
    account = request.query.get("account") or None
    if account is not None and account not in console.settings.accounts:
        raise web.HTTPBadRequest(
            text=orjson.dumps({"error": f"account: {account!r} is not configured"}).decode(),
            content_type="application/json",
        )
    return account


def _set_session(
    response: web.StreamResponse, request: web.Request, console: Console, who: Principal
) -> None:
    response.set_cookie(
        COOKIE,
        console.gate.cookie(who, time.time()),
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=_scheme(request) == "https",
    )


def principal(request: web.Request) -> Principal | None:
    """Who makes this request: a bearer token, else the session cookie."""
    gate = request.app[CONSOLE].gate
    return gate.bearer(request.headers) or gate.session(request.cookies.get(COOKIE), time.time())


# -- the middleware: where a request may come from, and who may do what --------------------------


@web.middleware
async def guard(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    console = request.app[CONSOLE]
    response: web.StreamResponse
    if console.gate.open and not loopback_host(request.host):
        # An open console answers only requests addressed to loopback: a page elsewhere that
        # points its own name at 127.0.0.1 (DNS rebinding) gets nothing.
        response = web.Response(
            status=421, text="this console answers only requests to a loopback address\n"
        )
    else:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            _harden(exc, request)
            raise
        except BatchdError as exc:
            log.warning("console.redis_failed", path=request.path, error=str(exc))
            response = _error(503, f"Redis cannot be read: {exc}")
        except Exception:  # a page failing must answer 500, never take the console down
            log.exception("console.failed", path=request.path)
            response = _error(500, "internal error (see the daemon's log)")
    _harden(response, request)
    return response


def _harden(response: web.StreamResponse, request: web.Request) -> None:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if request.path.startswith("/api/") or request.path == "/":
        response.headers["Cache-Control"] = "no-store"


def _need(request: web.Request) -> Principal:
    """Who makes this request, or 401. On an open console anyone may look: a visitor without a
    session is anonymous (and may not act: an action needs its session's CSRF token)."""
    gate = request.app[CONSOLE].gate
    who = principal(request) or (gate.anonymous() if gate.open else None)
    if who is None:
        raise web.HTTPUnauthorized(
            text=orjson.dumps({"error": "sign in with a console token"}).decode(),
            content_type="application/json",
        )
    return who


def _forbidden(message: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(
        text=orjson.dumps({"error": message}).decode(), content_type="application/json"
    )


def _check_origin(request: web.Request) -> None:
    if not same_origin(request.headers, _scheme(request), request.host):
        raise _forbidden("this request does not come from the console's own pages")


async def _action_body(request: web.Request) -> tuple[Principal, dict[str, Any]]:
    """The operator acting and the action's JSON body, once every check passed."""
    who = _need(request)
    if not who.can_act:
        log.warning("console.refused", who=who.name, role=who.role, path=request.path,
                    why="viewer")  # fmt: skip
        raise _forbidden(f"{who.name} has the {who.role} role: only operators may act")
    if who.by_cookie:
        _check_origin(request)
        if not request.app[CONSOLE].gate.csrf_ok(who, request.headers.get(CSRF_HEADER)):
            log.warning("console.refused", who=who.name, path=request.path, why="csrf")
            raise _forbidden("missing or stale CSRF token: reload the page")
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(text="send application/json")
    raw = await request.read()
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return who, body


# -- pages and static files --------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    return await static_file(request, "index.html")


async def static(request: web.Request) -> web.StreamResponse:
    return await static_file(request, request.match_info["name"])


async def static_file(request: web.Request, name: str) -> web.StreamResponse:
    console = request.app[CONSOLE]
    path = console.files.get(name)
    if path is None:
        raise web.HTTPNotFound(text="no such file")
    body = await console.call(path.read_bytes)
    return web.Response(body=body, headers={"Content-Type": _TYPES[path.suffix]})


# -- the session -------------------------------------------------------------------------------


async def session(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    gate = console.gate
    who = principal(request)
    fresh = who is None and gate.open
    if fresh:
        who = gate.anonymous()
    if who is None:
        return _json({"signed_in": False, "open": False, "version": __version__})
    response = _json(
        {
            "signed_in": True,
            "open": gate.open,
            "who": who.name,
            "role": who.role,
            "can_act": who.can_act,
            "csrf": gate.csrf(who),
            "refresh_ms": REFRESH_MS,
            "accounts": list(console.settings.accounts),
            "listen": console.listen,
            "version": __version__,
        }
    )
    if fresh:
        _set_session(response, request, console, who)
    return response


async def login(request: web.Request) -> web.StreamResponse:
    console = request.app[CONSOLE]
    _check_origin(request)
    raw = await request.read()
    try:
        body = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        body = {}
    token = body.get("token") if isinstance(body, dict) else None
    who = console.gate.login(token) if isinstance(token, str) and token.strip() else None
    if who is None:
        log.warning("console.login_failed", remote=request.remote)
        return _error(401, "that is not a console token")
    log.info("console.login", who=who.name, role=who.role, remote=request.remote)
    response = _json({"signed_in": True, "who": who.name, "role": who.role})
    _set_session(response, request, console, who)
    return response


async def logout(request: web.Request) -> web.StreamResponse:
    _check_origin(request)
    who = principal(request)
    if who is not None:
        log.info("console.logout", who=who.name, remote=request.remote)
    response = _json({"signed_in": False})
    response.del_cookie(COOKIE, path="/")
    return response


# -- the pages' data ---------------------------------------------------------------------------


async def overview(request: web.Request) -> web.StreamResponse:
    _need(request)
    return _json(await request.app[CONSOLE].call(request.app[CONSOLE].views.overview))


async def lanes(request: web.Request) -> web.StreamResponse:
    _need(request)
    return _json(await request.app[CONSOLE].call(request.app[CONSOLE].views.lanes))


async def batches(request: web.Request) -> web.StreamResponse:
    _need(request)
    console = request.app[CONSOLE]
    state = request.query.get("state", "live")
    if state not in ("live", "in_flight", "all"):
        return _error(400, "state: live, in_flight or all")
    data = await console.call(
        console.views.batches,
        state,
        _account(request, console),
        _query_int(request, "offset", 0, 10**9),
        _query_int(request, "limit", 100, 500),
    )
    return _json(data)


async def batch(request: web.Request) -> web.StreamResponse:
    _need(request)
    console = request.app[CONSOLE]
    ref = request.match_info["ref"]
    data = await console.call(
        console.views.batch,
        ref,
        _query_int(request, "offset", 0, 10**9),
        _query_int(request, "limit", 100, 500),
    )
    if data is None:
        return _error(404, f"batchd knows no batch {ref!r} (or it is past retention)")
    return _json(data)


async def request_page(request: web.Request) -> web.StreamResponse:
    _need(request)
    console = request.app[CONSOLE]
    rid = request.match_info["id"]
    data = await console.call(console.views.request, rid)
    if data is None:
        return _error(404, f"no request {rid!r} (or it is past retention)")
    return _json(data)


async def find(request: web.Request) -> web.StreamResponse:
    _need(request)
    console = request.app[CONSOLE]
    q = request.query.get("q", "")
    if len(q) > MAX_QUERY:
        return _error(400, f"q: at most {MAX_QUERY} characters")
    return _json(await console.call(console.views.find, q, _account(request, console)))


async def dead(request: web.Request) -> web.StreamResponse:
    _need(request)
    console = request.app[CONSOLE]
    data = await console.call(
        console.views.dead,
        _account(request, console),
        request.query.get("error_type") or None,
        _query_int(request, "offset", 0, 10**9),
        _query_int(request, "limit", 100, 500),
    )
    return _json(data)


async def webhooks(request: web.Request) -> web.StreamResponse:
    _need(request)
    return _json(await request.app[CONSOLE].call(request.app[CONSOLE].views.webhooks))


async def paused(request: web.Request) -> web.StreamResponse:
    _need(request)
    return _json(await request.app[CONSOLE].call(request.app[CONSOLE].views.paused))


async def daemons(request: web.Request) -> web.StreamResponse:
    _need(request)
    return _json(await request.app[CONSOLE].call(request.app[CONSOLE].views.daemons))


# -- actions -----------------------------------------------------------------------------------


def _action(
    run: Callable[[Console, Principal, str | None, dict[str, Any]], dict[str, Any]],
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handler(request: web.Request) -> web.StreamResponse:
        console = request.app[CONSOLE]
        who, body = await _action_body(request)
        try:
            return _json(await console.call(run, console, who, request.remote, body))
        except actions.Refused as exc:
            return _error(400, str(exc))

    return handler


def _requeue(c: Console, who: Principal, remote: str | None, body: dict[str, Any]) -> Any:
    return actions.requeue_dead(c.views.client, c.settings, who, remote, body)


def _purge(c: Console, who: Principal, remote: str | None, body: dict[str, Any]) -> Any:
    return actions.purge_dead(c.views.client, c.settings, who, remote, body)


def _retry(c: Console, who: Principal, remote: str | None, body: dict[str, Any]) -> Any:
    return actions.retry_webhooks(c.rt.store, c.settings, who, remote, body)


def _resume(c: Console, who: Principal, remote: str | None, body: dict[str, Any]) -> Any:
    return actions.resume(c.rt.store, c.settings, who, remote, body)


def build_app(console: Console) -> web.Application:
    app = web.Application(middlewares=[guard], client_max_size=MAX_BODY)
    app[CONSOLE] = console
    r = app.router
    r.add_get("/", index)
    r.add_get("/static/{name}", static)
    r.add_get("/api/session", session)
    r.add_post("/api/login", login)
    r.add_post("/api/logout", logout)
    r.add_get("/api/overview", overview)
    r.add_get("/api/lanes", lanes)
    r.add_get("/api/batches", batches)
    r.add_get("/api/batches/{ref}", batch)
    r.add_get("/api/requests/{id}", request_page)
    r.add_get("/api/find", find)
    r.add_get("/api/dead", dead)
    r.add_post("/api/dead/requeue", _action(_requeue))
    r.add_post("/api/dead/purge", _action(_purge))
    r.add_get("/api/webhooks", webhooks)
    r.add_post("/api/webhooks/retry", _action(_retry))
    r.add_get("/api/paused", paused)
    r.add_post("/api/paused/resume", _action(_resume))
    r.add_get("/api/daemons", daemons)
    return app


# -- running -----------------------------------------------------------------------------------


async def _sampler(console: Console, stop: asyncio.Event) -> None:
    """Take the charts' samples while the console runs, looked at or not."""
    while not stop.is_set():
        try:
            await console.call(console.views.sample)
        except BatchdError as exc:
            log.debug("console.sample_failed", error=str(exc))
        except Exception:
            log.exception("console.sample_failed")
        try:
            await asyncio.wait_for(stop.wait(), SAMPLE_SECONDS)
        except TimeoutError:
            pass


async def serve(
    settings: Settings,
    stop: asyncio.Event,
    ready: Callable[[str], Any] | None = None,
    *,
    liveness: Liveness | None = None,
    identity: str | None = None,
) -> None:
    """Serve until `stop` is set; `ready(url)` once listening. Listen failures are logged."""
    cfg = settings.console
    host = listen_host(settings)
    console = Console(settings, liveness=liveness, identity=identity)
    runner = web.AppRunner(build_app(console), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS)
    await runner.setup()
    sampler: asyncio.Task[None] | None = None
    try:
        site = web.TCPSite(runner, host, cfg.port)
        try:
            await site.start()
        except OSError as exc:
            log.error("console.listen_failed", host=host, port=cfg.port,
                      error=exc.strerror or str(exc))  # fmt: skip
            return
        bound_host, port = runner.addresses[0][:2]
        url = (
            f"http://[{bound_host}]:{port}" if ":" in bound_host else f"http://{bound_host}:{port}"
        )
        console.listen = url
        if cfg.tokens:
            log.info("console.listening", url=url, tokens=len(cfg.tokens), open=False)
            if not is_loopback(host):
                log.warning(
                    "console.plain_http",
                    url=url,
                    detail="tokens and session cookies cross the network: put the console "
                    "behind TLS (a reverse proxy that sets X-Forwarded-Proto: https)",
                )
        else:
            log.warning(
                "console.listening",
                url=url,
                tokens=0,
                open=True,
                detail="no console.tokens configured: whoever reaches this loopback address may "
                "look and act, so the console listens on loopback only"
                + (f" (not {cfg.host})" if host != cfg.host else ""),
            )
        sampler = asyncio.create_task(_sampler(console, stop))
        if ready is not None:
            ready(url)
        await stop.wait()
    finally:
        if sampler is not None:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
        await runner.cleanup()
        console.close()
        log.info("console.stopped")


def run(daemon: Any, stop: threading.Event) -> None:
    """The daemon's entry point: serve on a loop of this thread until `stop` is set."""
    from batchd.runtime import current

    asyncio.run(
        _serve_until(daemon.settings, stop, liveness=daemon.liveness, identity=current().identity)
    )


async def _serve_until(
    settings: Settings, stop: threading.Event, *, liveness: Liveness, identity: str
) -> None:
    stopping = asyncio.Event()

    async def watch() -> None:
        while not stop.is_set():
            await asyncio.sleep(STOP_POLL)
        stopping.set()

    watcher = asyncio.create_task(watch())
    try:
        await serve(settings, stopping, liveness=liveness, identity=identity)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
