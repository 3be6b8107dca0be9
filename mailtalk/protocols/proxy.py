"""The HAProxy PROXY protocol header (v1 text, v2 binary): "this client, not me".

A load balancer sends it before the mail protocol starts, and a server configured for
it (Postfix's ``smtpd_upstream_proxy_protocol = haproxy``, Dovecot's
``haproxy_trusted_networks``) takes the client address from it. ``--proxy-from ADDR``
sends one, to test what a server does for a given client address.

Spec: https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt. Pure: bytes out.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from mailtalk.language import N_, WordedError

V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_PROXY_COMMAND: Final = 0x21  # version 2, command PROXY
_V2_TCP4: Final = 0x11
_V2_TCP6: Final = 0x21


class ProxyHeaderError(WordedError):
    """The addresses cannot go in a PROXY header; the message says why in one line."""


def parse_source(text: str) -> tuple[str, int]:
    """``ADDR``, ``ADDR:PORT`` or ``[V6]:PORT`` as (address, port); the port defaults to
    a made-up client port, as the real one would be."""
    text = text.strip()
    port_text = ""
    if text.startswith("["):
        address, _, rest = text[1:].partition("]")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        address, _, port_text = text.partition(":")
    else:
        address = text
    try:
        ipaddress.ip_address(address)
    except ValueError:
        raise ProxyHeaderError(N_("--proxy-from {text!r}: not an IP address"), text=text) from None
    if not port_text:
        return address, 40000
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ProxyHeaderError(N_("--proxy-from {text!r}: {port!r} is not a port (1-65535)"),
                               text=text, port=port_text)
    return address, int(port_text)


def proxy_header(version: int, source: tuple[str, int], destination: tuple[str, int]) -> bytes:
    """The header saying a connection from ``source`` to ``destination`` (address, port).

    The two addresses must be of one family; an IPv4 source to an IPv6 destination
    becomes its IPv4-mapped IPv6 form, as a dual-stack proxy would send it.
    """
    src = ipaddress.ip_address(source[0])
    dst = ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        if src.version == 4:
            src = ipaddress.IPv6Address(f"::ffff:{src}")
        else:
            raise ProxyHeaderError(
                N_("--proxy-from {source}: an IPv6 client cannot be proxied to an IPv4 server "
                   "address (connect with -6)"), source=src
            )
    if version == 1:
        family = "TCP4" if src.version == 4 else "TCP6"
        return f"PROXY {family} {src} {dst} {source[1]} {destination[1]}\r\n".encode("ascii")
    if version != 2:
        raise ProxyHeaderError(N_("--proxy-version {version}: give 1 or 2"), version=version)
    addresses = src.packed + dst.packed + struct.pack("!HH", source[1], destination[1])
    family_byte = _V2_TCP4 if src.version == 4 else _V2_TCP6
    return (
        V2_SIGNATURE
        + bytes([_V2_PROXY_COMMAND, family_byte])
        + struct.pack("!H", len(addresses))
        + addresses
    )
