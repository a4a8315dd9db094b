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


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:  # ::ffff:127.0.0.1 is 127.0.0.1
        ip = ip.ipv4_mapped
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
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UnsafeTarget("The URL's port is not a number from 1 to 65535.") from None
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
