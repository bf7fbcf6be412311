"""Where webhooks may go: the shape of a callback URL at submit time, the address at connect time.

The sender checks the exact address each socket is about to connect to, after resolution, so a
name that resolves to an internal address (now or only later) never reaches it.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from batchd.errors import BlockedAddressError, ConfigError, InvalidRequestError

if TYPE_CHECKING:
    from aiohappyeyeballs import AddrInfoType

    from batchd.settings import Settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_FIELD = "callback_url"

# IPv6 prefixes that carry an IPv4 address in their low 32 bits (NAT64 well-known and local-use).
_NAT64 = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)


def check_callback_url(url: str, settings: Settings) -> str:
    """The callback URL as given, if its shape is acceptable; InvalidRequestError otherwise.

    Only the shape is checked here: where the name points is checked when the webhook is sent,
    because DNS may change between now and then.
    """
    if not isinstance(url, str):
        raise InvalidRequestError("callback_url must be a string", field=_FIELD)
    limit = settings.submit.max_callback_url_length
    if len(url) > limit:
        raise InvalidRequestError(f"callback_url is longer than {limit} characters", field=_FIELD)
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in url):
        raise InvalidRequestError(
            "callback_url must not contain spaces or control characters", field=_FIELD
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidRequestError(f"callback_url is not a valid URL: {exc}", field=_FIELD) from None
    if parts.scheme.lower() not in ("http", "https"):
        raise InvalidRequestError("callback_url must be an http or https URL", field=_FIELD)
    if "@" in parts.netloc:
        raise InvalidRequestError(
            "callback_url must not contain a user name or password", field=_FIELD
        )
    if not parts.hostname:
        raise InvalidRequestError("callback_url has no host", field=_FIELD)
    if port == 0:
        raise InvalidRequestError("callback_url has port 0", field=_FIELD)
    return url


def url_host(url: str) -> str:
    """The host of a URL, lower-cased, for logs and per-host limits ('' when there is none)."""
    try:
        return (urlsplit(url).hostname or "").rstrip(".")
    except ValueError:
        return ""


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why webhooks may not go to `ip` by default (None when it is a public address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            # ::ffff:a.b.c.d is the IPv4 host itself, reached through a dual-stack socket.
            inner = forbidden_reason(ip.ipv4_mapped)
            return None if inner is None else f"{inner} (IPv4-mapped {ip})"
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = forbidden_reason(embedded)
            if inner is not None:
                return f"{inner} (embedded in {ip})"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return "site-local"
    if not ip.is_global:
        # Shared address space (100.64/10) and other special-purpose blocks.
        return "not globally routable"
    return None


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if any(ip in net for net in _NAT64):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    # IPv4-compatible addresses (::a.b.c.d, deprecated) still route to IPv4 on some stacks.
    if int(ip) >> 32 == 0 and int(ip) > 0xFFFF:
        return ipaddress.IPv4Address(int(ip))
    return None


class AddressPolicy:
    """Refuses internal addresses unless an operator allowed their network explicitly."""

    def __init__(self, allow_networks: Iterable[str] = ()) -> None:
        networks: list[IPNetwork] = []
        for text in allow_networks:
            try:
                networks.append(ipaddress.ip_network(text, strict=False))
            except ValueError as exc:
                raise ConfigError(
                    f"webhooks.allow_networks: {text!r} is not a network: {exc}",
                    [f"webhooks.allow_networks: {text!r} is not a network"],
                ) from None
        self.allow_networks = tuple(networks)

    def allowed(self, ip: IPAddress) -> bool:
        candidates: list[IPAddress] = [ip]
        if isinstance(ip, ipaddress.IPv6Address):
            embedded = _embedded_ipv4(ip)
            if embedded is not None:
                candidates.append(embedded)
        return any(c in net for c in candidates for net in self.allow_networks)

    def check(self, address: str) -> None:
        """Raise BlockedAddressError unless webhooks may connect to `address` (an IP literal)."""
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            raise BlockedAddressError(f"blocked address {address!r}: not an IP address") from None
        if self.allowed(ip):
            return
        reason = forbidden_reason(ip)
        if reason is not None:
            net = f"{ip}/{ip.max_prefixlen}"
            raise BlockedAddressError(
                f"blocked address {ip}: {reason}; to let webhooks reach it, list its host name "
                f"in webhooks.allow_hosts or its network in webhooks.allow_networks "
                f"(e.g. BATCHD_WEBHOOKS__ALLOW_NETWORKS='[\"{net}\"]')"
            )

    def socket_factory(self, addr_info: AddrInfoType) -> socket.socket:
        """Make the socket for one resolved address, or refuse the address.

        The connector calls this with the very address it is about to connect to, after any DNS
        lookup or cache, so what is checked is what is reached.
        """
        family, type_, proto, _, sockaddr = addr_info
        self.check(str(sockaddr[0]))
        return socket.socket(family=family, type=type_, proto=proto)


def host_allowed(host: str, allow_hosts: Iterable[str]) -> bool:
    """True when `host` is one of the operator's trusted names (exact match, case-insensitive)."""
    wanted = host.lower().rstrip(".").strip("[]")
    return any(wanted == h.lower().rstrip(".").strip("[]") for h in allow_hosts)
