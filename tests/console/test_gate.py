"""The console's gate on its own: tokens to principals, signed sessions, CSRF tokens, origins."""

from __future__ import annotations

from batchd.console.auth import Gate, loopback_host, same_origin, token_sha256
from batchd.settings import Settings

KEY = b"k" * 32


def settings(**roles: str) -> Settings:
    tokens = [
        {"name": n, "sha256": token_sha256(t), "role": n.split("_")[0]} for n, t in roles.items()
    ]
    return Settings(console={"tokens": tokens})


def test_a_token_signs_in_with_its_role() -> None:
    gate = Gate(settings(viewer_v="tok-v", operator_o="tok-o"), KEY)
    v, o = gate.login("tok-v"), gate.login(" tok-o\n")
    assert v is not None and v.name == "viewer_v" and not v.can_act
    assert o is not None and o.name == "operator_o" and o.can_act
    assert gate.login("tok-x") is None


def test_a_session_lasts_until_it_expires() -> None:
    gate = Gate(settings(operator_o="tok-o"), KEY)
    who = gate.login("tok-o")
    assert who is not None
    cookie = gate.cookie(who, 1000.0)
    back = gate.session(cookie, 2000.0)
    assert back is not None and back.name == "operator_o" and back.session == who.session
    assert gate.session(cookie, 1000.0 + 13 * 3600) is None


def test_a_session_ends_when_its_token_goes_or_its_role_changes() -> None:
    """Sessions name their token: removed from the settings, or demoted, it signs nobody in."""
    who = Gate(settings(operator_o="tok-o"), KEY).login("tok-o")
    assert who is not None
    cookie = Gate(settings(operator_o="tok-o"), KEY).cookie(who, 1000.0)
    assert Gate(settings(viewer_x="tok-x"), KEY).session(cookie, 1001.0) is None
    demoted = settings(operator_o="tok-o")
    demoted.console.tokens[0].role = "viewer"
    assert Gate(demoted, KEY).session(cookie, 1001.0) is None


def test_another_processes_key_or_an_edit_breaks_the_seal() -> None:
    who = Gate(settings(operator_o="tok-o"), KEY).login("tok-o")
    assert who is not None
    cookie = Gate(settings(operator_o="tok-o"), KEY).cookie(who, 1000.0)
    assert Gate(settings(operator_o="tok-o"), b"x" * 32).session(cookie, 1001.0) is None
    body, mac = cookie.split(".")
    assert Gate(settings(operator_o="tok-o"), KEY).session(body[:-1] + "A." + mac, 1001.0) is None


def test_csrf_token_is_the_sessions_own() -> None:
    gate = Gate(settings(operator_o="tok-o"), KEY)
    a, b = gate.login("tok-o"), gate.login("tok-o")
    assert a is not None and b is not None
    assert gate.csrf_ok(a, gate.csrf(a))
    assert not gate.csrf_ok(a, gate.csrf(b)) and not gate.csrf_ok(a, None)


def test_an_open_gate_makes_everyone_an_anonymous_operator_but_takes_no_bearer() -> None:
    gate = Gate(Settings(), KEY)
    assert gate.open
    who = gate.anonymous()
    assert who.name == "anonymous" and who.can_act
    assert gate.bearer({"Authorization": "Bearer anything"}) is None


def test_loopback_names_and_origins() -> None:
    assert (
        loopback_host("127.0.0.1:9465") and loopback_host("localhost") and loopback_host("[::1]:80")
    )
    assert not loopback_host("evil.example:9465") and not loopback_host("")
    own = {"Origin": "http://127.0.0.1:9465", "Sec-Fetch-Site": "same-origin"}
    assert same_origin(own, "http", "127.0.0.1:9465")
    assert not same_origin({"Origin": "http://evil.example"}, "http", "127.0.0.1:9465")
    assert not same_origin({**own, "Sec-Fetch-Site": "cross-site"}, "http", "127.0.0.1:9465")
    assert same_origin({"Referer": "http://h:1/#/dead"}, "http", "h:1")
    assert not same_origin({}, "http", "h:1")
