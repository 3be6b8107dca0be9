"""The HAProxy PROXY header, byte for byte as the spec's examples lay it out."""

from __future__ import annotations

import pytest

from mailtalk.protocols.proxy import ProxyHeaderError, parse_source, proxy_header


def test_v1_tcp4() -> None:
    header = proxy_header(1, ("192.0.2.7", 4711), ("127.0.0.1", 25))
    assert header == b"PROXY TCP4 192.0.2.7 127.0.0.1 4711 25\r\n"


def test_v1_ipv4_client_to_ipv6_server_is_mapped() -> None:
    header = proxy_header(1, ("192.0.2.7", 4711), ("::1", 25))
    assert header == b"PROXY TCP6 ::ffff:c000:207 ::1 4711 25\r\n"


def test_v2_tcp4() -> None:
    header = proxy_header(2, ("192.0.2.7", 4711), ("127.0.0.1", 25))
    assert header == (
        b"\r\n\r\n\x00\r\nQUIT\n"  # signature
        b"\x21\x11\x00\x0c"  # v2 PROXY, TCP over IPv4, 12 bytes of addresses
        b"\xc0\x00\x02\x07\x7f\x00\x00\x01\x12\x67\x00\x19"
    )


def test_v2_tcp6_length() -> None:
    header = proxy_header(2, ("2001:db8::1", 1), ("::1", 25))
    assert header[12:16] == b"\x21\x21\x00\x24" and len(header) == 16 + 36


def test_ipv6_client_to_ipv4_server_is_refused() -> None:
    with pytest.raises(ProxyHeaderError, match="connect with -6"):
        proxy_header(1, ("2001:db8::1", 1), ("127.0.0.1", 25))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("192.0.2.1", ("192.0.2.1", 40000)),
        ("192.0.2.1:25", ("192.0.2.1", 25)),
        ("[2001:db8::1]:7", ("2001:db8::1", 7)),
        ("2001:db8::1", ("2001:db8::1", 40000)),
    ],
)
def test_parse_source(text: str, expected: tuple[str, int]) -> None:
    assert parse_source(text) == expected


@pytest.mark.parametrize("text", ["mx.example.org", "192.0.2.1:0", "192.0.2.1:x"])
def test_parse_source_refuses(text: str) -> None:
    with pytest.raises(ProxyHeaderError):
        parse_source(text)
