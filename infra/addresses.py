"""Whether a URL may be called from here: every address its host resolves to must be public (not private,
loopback, link-local, multicast, reserved or unspecified), so that a client's webhook URL cannot make this
service reach the cloud's metadata endpoint (169.254.169.254), the database or anything else inside the
network. The caller then connects to an address checked here, never resolving the name again: a DNS answer
that changes between the check and the connection (rebinding) cannot slip past."""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit


class UnsafeTarget(ValueError):
    """A URL this service will not call; the message says why, without the resolved addresses' details beyond
    their kind."""


# IPv6 prefixes whose addresses carry an IPv4 address in their last 32 bits, which a gateway (NAT64, SIIT) or
# an old host may reach: 64:ff9b::a00:1 is 10.0.0.1 behind a NAT64 gateway, as EKS or an AWS NAT gateway runs.
IPV4_CARRYING = [
    ipaddress.ip_network(prefix)
    for prefix in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0/96", "::ffff:0:0:0/96")
]
# Only global unicast (2000::/3) is taken from IPv6; fec0::/10 (site-local) and the rest are not.
IPV6_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


def is_public(address: str) -> bool:
    """Whether `address` reaches only the public internet: for IPv6, any IPv4 address it carries (mapped,
    compatible, NAT64, 6to4, Teredo) must be public too."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address):
        carried = [ip.ipv4_mapped, ip.sixtofour, ip.teredo[1] if ip.teredo else None]
        carried += [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) for net in IPV4_CARRYING if ip in net]
        carried = [v4 for v4 in carried if v4 is not None]
        if carried:  # reached through the IPv4 address it carries: that one decides
            return all(_public_v4(v4) for v4 in carried)
        return ip in IPV6_GLOBAL_UNICAST and ip.is_global
    return _public_v4(ip)


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not ip.is_multicast


def checked_addresses(url: str, *, allow_private: bool) -> tuple[str, int, list[str]]:
    """(host, port, addresses) for an http(s) URL whose every address may be called; raises UnsafeTarget.
    Resolves the host (a blocking DNS lookup)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:  # e.g. an unclosed "[" of an IPv6 host
        raise UnsafeTarget("The URL cannot be read: give an http:// or https:// URL with a host.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeTarget("Give an http:// or https:// URL with a host.")
    if parts.username or parts.password:
        raise UnsafeTarget("A URL with a user name or password in it is not taken: the receiver verifies signatures.")
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:  # urlsplit takes :0, which no receiver listens on (and `or` would make the default)
        raise UnsafeTarget("The URL's port is not a number from 1 to 65535.")
    port = port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        raise UnsafeTarget(f"The host {host[:100]!r} does not resolve.") from None
    addresses = sorted({info[4][0] for info in found})
    if not allow_private and not all(is_public(address) for address in addresses):
        raise UnsafeTarget(
            f"The host {host[:100]!r} resolves to a private, loopback or link-local address: refused (set "
            "MAIL_WEBHOOK_ALLOW_PRIVATE=1 to allow such receivers)."
        )
    return host, port, addresses
