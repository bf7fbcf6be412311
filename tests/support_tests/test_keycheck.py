"""The key-declaration checker: it passes honest scripts and catches every key built inside Lua."""

from __future__ import annotations

import hashlib

import pytest
import redis

from tests.support.keycheck import (
    Command,
    assert_one_slot_per_call,
    assert_scripts_declare_keys,
    declared_in_one_slot,
    pair,
    parse_monitor_line,
    record_script_keys,
)

DECLARES = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])"
BUILDS = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[1] .. ':shadow')"
KEYLESS = "redis.call('PING'); redis.call('ECHO', 'x'); return redis.call('TIME')"


def sha(body: str) -> str:
    return hashlib.sha1(body.encode()).hexdigest()


def test_script_that_declares_its_keys_passes(redis_client: redis.Redis) -> None:
    """Every key touched is in KEYS: the check passes and records what each call touched."""
    script = redis_client.register_script(DECLARES)
    report = assert_scripts_declare_keys(
        redis_client, lambda: script(keys=["{a}x", "{a}y"], args=[1])
    )
    (call,) = report.calls
    assert call.command == "evalsha" and call.script == sha(DECLARES)
    assert call.declared == call.touched == (b"{a}x", b"{a}y")
    assert [e.command.name for e in call.executed] == ["set", "incr"]


def test_key_built_inside_lua_is_reported(redis_client: redis.Redis) -> None:
    """A key name made by concatenation in Lua is reported as touched and not declared."""
    script = redis_client.register_script(BUILDS)
    run = lambda: script(keys=["{a}x"], args=[1])  # noqa: E731
    report = record_script_keys(redis_client, run)
    assert [c.undeclared for c in report.calls] == [(b"{a}x:shadow",)]
    with pytest.raises(AssertionError, match=r"undeclared b'\{a\}x:shadow', first by: INCR"):
        assert_scripts_declare_keys(redis_client, run)


def test_each_key_is_charged_to_the_call_that_touched_it(redis_client: redis.Redis) -> None:
    """In a pipeline of three calls only the one that built a key is reported, by its name."""
    good, bad = redis_client.register_script(DECLARES), redis_client.register_script(BUILDS)
    good(keys=["{a}x", "{a}y"], args=[0])  # loaded, so the pipeline is pure EVALSHA
    bad(keys=["{b}x"], args=[0])

    def run() -> None:
        with redis_client.pipeline(transaction=True) as pipe:
            good(keys=["{a}x", "{a}y"], args=[1], client=pipe)
            bad(keys=["{b}x"], args=[2], client=pipe)
            good(keys=["{c}x", "{c}y"], args=[3], client=pipe)
            pipe.execute()

    names = {sha(DECLARES): "declares", sha(BUILDS): "builds"}
    report = record_script_keys(redis_client, run, names=names)
    assert [c.script for c in report.calls] == ["declares", "builds", "declares"]
    assert [c.undeclared for c in report.calls] == [(), (b"{b}x:shadow",), ()]
    assert report.undeclared() == [report.calls[1]]


def test_keyless_commands_need_no_declaration(redis_client: redis.Redis) -> None:
    """PING, ECHO and TIME inside a script touch no key and need none declared."""
    report = assert_scripts_declare_keys(redis_client, lambda: redis_client.eval(KEYLESS, 0))
    assert [e.keys for e in report.calls[0].executed] == [(), (), ()]


def test_eval_and_fcall_are_checked_too(redis_client: redis.Redis) -> None:
    """EVAL is named by its body's sha1 and FCALL by its function; both are checked."""
    redis_client.function_load(
        "#!lua name=lib\n"
        "redis.register_function('f', function(keys, args)"
        " return redis.call('SET', keys[1] .. '!', 1) end)"
    )

    def run() -> None:
        redis_client.eval(DECLARES, 2, "{a}x", "{a}y", 1)
        redis_client.fcall("f", 1, "{a}z")

    report = record_script_keys(redis_client, run)
    assert [(c.command, c.script) for c in report.calls] == [
        ("eval", sha(DECLARES)),
        ("fcall", "f"),
    ]
    assert [c.undeclared for c in report.calls] == [(), (b"{a}z!",)]


def test_a_refused_evalsha_and_its_retry_count_once(redis_client: redis.Redis) -> None:
    """redis-py's NOSCRIPT, SCRIPT LOAD, EVALSHA dance is one call, not a call that did nothing."""
    script = redis_client.register_script(DECLARES)
    redis_client.script_flush()
    report = record_script_keys(redis_client, lambda: script(keys=["{a}x", "{a}y"], args=[1]))
    assert len(report.calls) == 1 and report.calls[0].touched == (b"{a}x", b"{a}y")


def test_binary_keys_survive_monitor(redis_client: redis.Redis) -> None:
    """Keys with quotes, spaces, newlines and non-UTF-8 bytes are read back exactly."""
    key = b'{k}we"ird \n\\ \xff\x00key'
    script = redis_client.register_script(BUILDS)
    report = record_script_keys(redis_client, lambda: script(keys=[key], args=[1]))
    assert report.calls[0].declared == (key,)
    assert report.calls[0].undeclared == (key + b":shadow",)


def test_a_run_without_scripts_fails_the_check(redis_client: redis.Redis) -> None:
    """A check that saw no script call fails: it proved nothing."""
    with pytest.raises(AssertionError, match="0 script calls ran"):
        assert_scripts_declare_keys(redis_client, lambda: redis_client.set("k", 1))


def test_declared_keys_in_several_slots_are_reported(redis_client: redis.Redis) -> None:
    """A call declaring keys of two hash slots fails the one-slot check."""
    script = redis_client.register_script(DECLARES)
    report = record_script_keys(redis_client, lambda: script(keys=["{a}x", "{b}y"], args=[1]))
    assert report.undeclared() == [] and report.cross_slot() == report.calls
    with pytest.raises(AssertionError, match="declare keys in several slots"):
        assert_one_slot_per_call(report)
    assert declared_in_one_slot(["{a}x", b"{a}y"]) and not declared_in_one_slot(["a", "b"])


def test_monitor_lines_are_unescaped() -> None:
    """sdscatrepr's escapes are undone and the lua client is recognised."""
    line = r'1796231335.225249 [0 lua] "set" "a\"b" "x\n\\y\xff"'
    command = parse_monitor_line(line)
    assert command.from_script and command.args == (b"set", b'a"b', b"x\n\\y\xff")
    ipv6 = parse_monitor_line('1.5 [3 [::1]:6379] "GET" "k"')
    assert ipv6.client == "[::1]:6379" and not ipv6.from_script


@pytest.mark.parametrize("call_first", [True, False])
def test_pairing_follows_the_servers_order(call_first: bool) -> None:
    """Script commands go to their call whether the server shows the call before or after them."""
    one = Command("127.0.0.1:1", (b"EVALSHA", b"aa", b"1", b"k1"))
    two = Command("127.0.0.1:2", (b"EVALSHA", b"bb", b"1", b"k2"))
    inner = [Command("lua", (b"get", b"k1"))], [Command("lua", (b"get", b"x"))]
    other = Command("127.0.0.1:3", (b"GET", b"z"))
    if call_first:
        stream = [one, *inner[0], other, two, *inner[1]]
    else:
        stream = [*inner[0], one, other, *inner[1], two]
    calls, orphans = pair(stream, call_first=call_first)
    assert orphans == []
    assert [[e.command.args[1] for e in c.executed] for c in calls] == [[b"k1"], [b"x"]]
