"""Where webhooks may go: callback URL shape at submit time, addresses at connect time."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult

from batchd.errors import BlockedAddressError, ConfigError, InvalidRequestError
from batchd.settings import Settings
from batchd.store import Store
from batchd.webhooks.urls import AddressPolicy, check_callback_url
from tests.webhooks.support import Receiver, RunningSender, enqueue, make_settings, wait_state

StartSender = Callable[..., RunningSender]


@pytest.mark.parametrize(
    "url",
    ["https://hooks.example.com/batchd", "http://10.0.0.1:8080/x?y=1", "https://[2001:db8::1]/h"],
)
def test_good_callback_url_is_returned_unchanged(url: str) -> None:
    """An http(s) URL with a host passes the submit-time check as it is."""
    assert check_callback_url(url, Settings()) == url


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("example.com/hook", "http or https"),
        ("http:///path-only", "no host"),
        ("https://", "no host"),
        ("https://user:pw@example.com/hook", "user name or password"),
        ("https://user@example.com/hook", "user name or password"),
        ("https://example.com:99999/hook", "not a valid URL"),
        ("https://exa mple.com/hook", "spaces or control"),
        ("https://example.com/\nhook", "spaces or control"),
    ],
)
def test_bad_callback_url_is_refused(url: str, message: str) -> None:
    """Wrong scheme, no host, user info or junk is refused, naming the callback_url field."""
    with pytest.raises(InvalidRequestError, match=message) as caught:
        check_callback_url(url, Settings())
    assert caught.value.field == "callback_url"


def test_too_long_callback_url_is_refused() -> None:
    """A URL over submit.max_callback_url_length is refused."""
    settings = Settings(submit={"max_callback_url_length": 40})
    check_callback_url("https://example.com/" + "a" * 20, settings)
    with pytest.raises(InvalidRequestError, match="longer than 40") as caught:
        check_callback_url("https://example.com/" + "a" * 21, settings)
    assert caught.value.field == "callback_url"


BLOCKED = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.10", "private"),
    ("169.254.169.254", "link-local"),
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fd12:3456::1", "private"),
    ("fe80::1", "link-local"),
    ("224.0.0.251", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.0.0.1", "private"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "not globally routable"),
    ("2002:7f00:1::", "loopback"),
]


@pytest.mark.parametrize(("address", "reason"), BLOCKED)
def test_internal_address_is_blocked(address: str, reason: str) -> None:
    """Loopback, private, link-local, multicast, unspecified, reserved and mapped are refused."""
    with pytest.raises(BlockedAddressError, match=f"blocked address .*{reason}"):
        AddressPolicy().check(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_public_address_passes(address: str) -> None:
    """A globally routable address is allowed."""
    AddressPolicy().check(address)


def test_allowed_network_passes() -> None:
    """An address inside allow_networks is allowed; its neighbours are not."""
    policy = AddressPolicy(["127.0.0.1/32", "10.20.0.0/16"])
    policy.check("127.0.0.1")
    policy.check("10.20.3.4")
    policy.check("::ffff:127.0.0.1")
    with pytest.raises(BlockedAddressError):
        policy.check("127.0.0.2")
    with pytest.raises(BlockedAddressError):
        policy.check("10.21.0.1")


def test_bad_allowed_network_is_a_config_error() -> None:
    """A malformed allow_networks entry is reported as configuration."""
    with pytest.raises(ConfigError, match="allow_networks"):
        AddressPolicy(["10.0.0.0/33"])


def test_socket_factory_refuses_before_connecting() -> None:
    """The connector's socket factory refuses a blocked address instead of making a socket."""
    info: Any = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.8", 443))
    with pytest.raises(BlockedAddressError, match=r"10\.0\.0\.8"):
        AddressPolicy().socket_factory(info)


class FlipResolver(AbstractResolver):
    """Answers with `first` on the first lookup and 127.0.0.1 on every later one."""

    def __init__(self, first: str) -> None:
        self.first = first
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        address = self.first if self.calls == 1 else "127.0.0.1"
        return [
            {
                "hostname": host,
                "host": address,
                "port": port,
                "family": socket.AF_INET,
                "proto": 0,
                "flags": socket.AI_NUMERICHOST,
            }
        ]

    async def close(self) -> None:
        pass


def test_name_resolving_to_internal_address_is_refused(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """A public-looking host name whose DNS answer is loopback is refused at connect time."""
    resolver = FlipResolver("127.0.0.1")
    start_sender(make_settings(redis_url, allow_networks=[]), resolver=resolver)
    token = enqueue(store, f"http://hooks.example.com:{receiver.port}/hook")
    rec = wait_state(store, token, "dead")
    assert rec.last_error.startswith("blocked address 127.0.0.1")
    assert receiver.requests == []


def test_rebinding_between_check_and_connect_is_refused(
    redis_url: str, store: Store, receiver: Receiver, start_sender: StartSender
) -> None:
    """The connection goes to the address that was checked, not to a second, rebound answer.

    The name first resolves to 127.0.0.2 (allowed here, nothing listens there) and afterwards to
    127.0.0.1 (where the receiver is, and which is blocked): a sender that looked the name up
    again to connect would reach the receiver.
    """
    resolver = FlipResolver("127.0.0.2")
    settings = make_settings(redis_url, allow_networks=["127.0.0.2/32"], schedule=[0])
    start_sender(settings, resolver=resolver)
    token = enqueue(store, f"http://rebind.example.com:{receiver.port}/hook")
    rec = wait_state(store, token, "dead")
    assert "connection failed" in rec.last_error
    assert resolver.calls == 1
    assert receiver.requests == []
