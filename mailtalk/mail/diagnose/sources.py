"""Which client addresses ``mailtalk diagnose relay`` asks a server from, and what an
address says about whom a server may trust.

A server that relays for a stranger may trust the client's address rather than relay
for anyone. A server on this host is asked again from this host's other addresses (a
second loopback address, the address toward the outside); a server elsewhere that
relays for a client in a private network, or in its own network, may trust that
network. Only a client outside both can show an open relay.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailtalk.net.mx import Resolver

# A second loopback address to ask from: a server trusting 127.0.0.1 does not trust it.
SECOND_SOURCE = "127.0.0.254"
# Documentation addresses: "which of my addresses would reach them" finds the address
# this host uses toward the outside (a UDP connect() sends nothing).
OUTSIDE = {4: "198.51.100.1", 6: "2001:db8::1"}


def server_addresses(host: str, resolver: Resolver | None) -> set[str]:
    """The server's addresses: a literal, the resolver's answer, or the system's."""
    with contextlib.suppress(ValueError):
        return {str(ipaddress.ip_address(host.strip("[]")))}
    found: set[str] = set()
    if resolver is not None:
        from mailtalk.net.mx import host_addresses

        with contextlib.suppress(Exception):
            found |= set(host_addresses(resolver.resolver, host)[0])
    if not found:
        with contextlib.suppress(OSError):
            found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    return found



def source_toward(address: str) -> str | None:
    """The local address this host would use to reach ``address``, or None when it has
    no route there. A UDP connect() picks the address and sends nothing."""
    try:
        ip = ipaddress.ip_address(address.strip("[]").split("%", 1)[0])
    except ValueError:
        return None
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.connect((str(ip), 9))
            return str(sock.getsockname()[0]).split("%", 1)[0]
    except OSError:
        return None


def on_this_host(server: str) -> bool:
    """Is ``server`` (an IP address) one of this host's own addresses?"""
    ip = ipaddress.ip_address(server)
    return ip.is_loopback or source_toward(server) == str(ip)


def other_sources(server: str, first: str | None) -> list[str]:
    """This host's other addresses to ask a server on this host from: a second loopback
    address and the address toward the outside, in the server's address family."""
    ip = ipaddress.ip_address(server)
    found: list[str] = []
    first_ip = ip_or_none(first)
    loopback = ip.version == 4 and first_ip is not None and first_ip.is_loopback
    if loopback and first != SECOND_SOURCE:
        found.append(SECOND_SOURCE)
    outward = source_toward(OUTSIDE[ip.version])
    outward_ip = ip_or_none(outward)
    if outward_ip is not None and not outward_ip.is_loopback and outward != first:
        found.append(str(outward_ip))
    return found


def ip_or_none(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """``text`` as an IP address, or None when it is not one."""
    try:
        return ipaddress.ip_address(text or "")
    except ValueError:
        return None


def in_same_network(a: str, b: str) -> bool:
    """Are ``a`` and ``b`` in one /24 (IPv4) or /48 (IPv6): a network that may be one
    provider's or one organisation's?"""
    ip_a, ip_b = ip_or_none(a), ip_or_none(b)
    if ip_a is None or ip_b is None or ip_a.version != ip_b.version:
        return False
    prefix = 24 if ip_a.version == 4 else 48
    return ip_b in ipaddress.ip_network(f"{ip_a}/{prefix}", strict=False)

