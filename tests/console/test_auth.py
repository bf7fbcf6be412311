"""Safe by default: open only on loopback (and only to loopback names), tokens with roles elsewhere,
actions only from the console's own pages, no secret in any answer, every action logged."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from batchd.console.auth import COOKIE, CSRF_HEADER
from tests.console.conftest import (
    OPERATOR_TOKEN,
    VIEWER_TOKEN,
    Console,
    StartConsole,
    token_env,
)
from tests.e2e.conftest import SubmitFn, params

TOKENS = token_env(viewer_vic=VIEWER_TOKEN, operator_olga=OPERATOR_TOKEN)
API_KEY_MARK = "sk-ant-emulator"
WEBHOOK_SECRET = "whsec_dGVzdC13ZWJob29rLXNlY3JldC1jb25zb2xl"


@contextmanager
def signed_in(console: Console, token: str) -> Iterator[httpx.Client]:
    """A client holding a session cookie, as a browser would after signing in."""
    with httpx.Client(base_url=console.url, timeout=20, headers={"Origin": console.url}) as c:
        response = c.post("/api/login", json={"token": token})
        assert response.status_code == 200, response.text
        assert COOKIE in response.cookies
        yield c


def csrf(client: httpx.Client) -> str:
    return str(client.get("/api/session").json()["csrf"])


def log_events(console: Console, event: str) -> list[dict[str, object]]:
    out = []
    for line in console.daemon.log_text().splitlines():
        if f'"{event}"' in line:
            out.append(json.loads(line))
    return out


def test_open_console_says_so_and_lets_anyone_on_loopback_act(console: Console) -> None:
    """With no tokens: an anonymous operator session, flagged open, with a CSRF token."""
    with httpx.Client(base_url=console.url, timeout=20) as client:
        session = client.get("/api/session").json()
        assert session["open"] is True and session["signed_in"] is True
        assert session["who"] == "anonymous" and session["can_act"] is True
        assert session["csrf"]
        cookie = client.cookies.get(COOKIE)
        assert cookie
    headers = {"set-cookie"}
    raw = httpx.get(console.url + "/api/session", timeout=20).headers
    assert headers <= set(raw) and "HttpOnly" in raw["set-cookie"]
    assert "SameSite=Strict" in raw["set-cookie"]


def test_open_console_answers_only_requests_addressed_to_loopback(console: Console) -> None:
    """A request whose Host is not a loopback name (a rebound DNS name) gets 421 and no data."""
    response = httpx.get(
        console.url + "/api/overview", headers={"Host": "evil.example:80"}, timeout=20
    )
    assert response.status_code == 421
    assert "totals" not in response.text
    ok = httpx.get(console.url + "/api/overview", headers={"Host": "localhost"}, timeout=20)
    assert ok.status_code == 200


def test_without_tokens_a_public_host_binds_loopback(start_console: StartConsole) -> None:
    """console.host 0.0.0.0 with no tokens listens on 127.0.0.1 only, and logs why."""
    console = start_console(BATCHD_CONSOLE__HOST="0.0.0.0")
    assert console.url.startswith("http://127.0.0.1:")
    [event] = log_events(console, "console.listening")
    assert event["open"] is True and "loopback only" in str(event["detail"])


def test_with_tokens_every_page_needs_a_token(start_console: StartConsole) -> None:
    """Tokens configured: no session, no data (401); a wrong token cannot sign in."""
    console = start_console(BATCHD_CONSOLE__TOKENS=TOKENS)
    with httpx.Client(base_url=console.url, timeout=20, headers={"Origin": console.url}) as c:
        assert c.get("/api/session").json() == {
            "signed_in": False,
            "open": False,
            "version": c.get("/api/session").json()["version"],
        }
        for path in ("/api/overview", "/api/lanes", "/api/dead", "/api/daemons"):
            assert c.get(path).status_code == 401, path
        assert c.post("/api/login", json={"token": "bct_wrong"}).status_code == 401
        assert c.post("/api/dead/purge", json={"all": True}).status_code == 401
    assert log_events(console, "console.login_failed")


def test_viewer_may_look_but_not_act(start_console: StartConsole, submit: SubmitFn) -> None:
    """A viewer's session reads every page; each action answers 403 and changes nothing."""
    console = start_console(BATCHD_CONSOLE__TOKENS=TOKENS)
    with signed_in(console, VIEWER_TOKEN) as client:
        session = client.get("/api/session").json()
        assert session["role"] == "viewer" and session["can_act"] is False
        assert client.get("/api/overview").status_code == 200
        token = csrf(client)
        for path, body in [
            ("/api/dead/requeue", {"all": True}),
            ("/api/dead/purge", {"all": True}),
            ("/api/webhooks/retry", {"all": True}),
            ("/api/paused/resume", {"account": "default"}),
        ]:
            response = client.post(path, json=body, headers={CSRF_HEADER: token})
            assert response.status_code == 403, path
            assert "only operators may act" in response.json()["error"]
    bearer = httpx.post(
        console.url + "/api/dead/purge",
        json={"all": True},
        headers={"Authorization": f"Bearer {VIEWER_TOKEN}"},
        timeout=20,
    )
    assert bearer.status_code == 403
    assert log_events(console, "console.action") == []


def test_actions_need_the_csrf_token_and_the_consoles_own_origin(
    start_console: StartConsole,
) -> None:
    """An operator's cookie alone does not act: another Origin, a missing or wrong CSRF token, or
    a form post are refused; the console's own page (Origin + token + JSON) acts."""
    console = start_console(BATCHD_CONSOLE__TOKENS=TOKENS)
    with signed_in(console, OPERATOR_TOKEN) as client:
        token = csrf(client)
        body = {"account": "default"}
        path = "/api/paused/resume"
        assert client.post(path, json=body).status_code == 403  # no CSRF token
        assert client.post(path, json=body, headers={CSRF_HEADER: "x" + token}).status_code == 403
        evil = {CSRF_HEADER: token, "Origin": "http://evil.example"}
        assert client.post(path, json=body, headers=evil).status_code == 403
        cross = {CSRF_HEADER: token, "Sec-Fetch-Site": "cross-site"}
        assert client.post(path, json=body, headers=cross).status_code == 403
        form = client.post(path, data=body, headers={CSRF_HEADER: token})
        assert form.status_code == 415
        ok = client.post(path, json=body, headers={CSRF_HEADER: token})
        assert ok.status_code == 200, ok.text
        assert ok.json() == {"account": "default", "resumed": False}
    [event] = log_events(console, "console.action")
    assert event["who"] == "operator_olga" and event["role"] == "operator"
    assert event["action"] == "resume" and event["account"] == "default"
    assert event["remote"] == "127.0.0.1"


def test_an_altered_session_cookie_is_refused(start_console: StartConsole) -> None:
    """A session cookie changed by its holder (to claim another name or role) signs nobody in."""
    console = start_console(BATCHD_CONSOLE__TOKENS=TOKENS)
    with signed_in(console, OPERATOR_TOKEN) as client:
        cookie = client.cookies.get(COOKIE) or ""
        assert client.get("/api/lanes").status_code == 200
        forged = cookie.replace(cookie.split(".")[0], cookie.split(".")[0][:-2] + "AA")
        client.cookies.set(COOKIE, forged)
        assert client.get("/api/lanes").status_code == 401


def test_no_secret_is_ever_shown(
    start_console: StartConsole, submit: SubmitFn, tmp_path: object
) -> None:
    """The API key, the webhook secret, the tokens and a callback URL's credentials appear in no
    page or answer of the console."""
    console = start_console(
        BATCHD_CONSOLE__TOKENS=TOKENS,
        BATCHD_WEBHOOKS__SECRET=WEBHOOK_SECRET,
        BATCHD_WEBHOOKS__SCHEDULE="[0]",
    )
    stack = console.stack
    ticket = stack.client.submit(
        params(1), callback_url="http://127.0.0.1:9/hook?token=s3cr3t&sig=hookpass"
    )
    stack.client.wait(ticket.id, timeout=60)
    stack.wait_ended(1)
    api_key = stack.emulator.api_key
    secrets = [api_key, WEBHOOK_SECRET, VIEWER_TOKEN, OPERATOR_TOKEN, "hookpass", "s3cr3t"]
    seen = []
    with signed_in(console, OPERATOR_TOKEN) as client:
        batch = stack.client.get(ticket.id).batch_id or ""
        for path in [
            "/",
            "/static/app.js",
            "/api/session",
            "/api/overview",
            "/api/lanes",
            "/api/batches?state=all",
            f"/api/batches/{batch}",
            f"/api/requests/{ticket.id}",
            "/api/dead",
            "/api/webhooks",
            "/api/paused",
            "/api/daemons",
        ]:
            response = client.get(path)
            assert response.status_code == 200, (path, response.text)
            seen.append(response.text)
    page = "\n".join(seen)
    assert "127.0.0.1:9/hook?token=***&sig=***" in page
    for secret in secrets:
        assert secret not in page
    assert API_KEY_MARK not in page


def test_pages_forbid_foreign_scripts_and_framing(console: Console) -> None:
    """Every answer carries a CSP allowing only the console's own scripts, styles and
    connections, and forbids framing; API answers are not cached."""
    for path in ("/", "/static/app.js", "/api/overview", "/api/nope"):
        response = httpx.get(console.url + path, timeout=20)
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp, path
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert httpx.get(console.url + "/api/lanes", timeout=20).headers["Cache-Control"] == "no-store"
    assert httpx.get(console.url + "/static/../server.py", timeout=20).status_code == 404
