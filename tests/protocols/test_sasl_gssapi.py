"""SASL GSSAPI's framing (RFC 4752 3.1), sans-IO: which token goes when, and the
security-layer octets. The Kerberos context here is a transparent one (its tokens
and wrapping are visible), so the octets the mechanism builds can be read back;
the real library, KDC and servers are in tests/interop/test_gssapi.py."""

from __future__ import annotations

import pytest

from mailtalk.protocols import sasl
from mailtalk.protocols.sasl import SASLError
from mailtalk.protocols.sasl_gssapi import Gssapi


class TransparentContext:
    """Established after the server's second token (AP-REP); wrap marks its input
    with ``W:`` and unwrap takes the mark off, so both are checked."""

    def __init__(self) -> None:
        self.established = False
        self.given: list[bytes | None] = []

    def step(self, token: bytes | None) -> bytes:
        self.given.append(token)
        if token is None:
            return b"AP-REQ"
        self.established = True
        return b""

    def wrap(self, message: bytes) -> bytes:
        return b"W:" + message

    def unwrap(self, token: bytes) -> bytes:
        assert token.startswith(b"W:"), token
        return token[2:]


def test_the_whole_exchange_chooses_no_security_layer() -> None:
    context = TransparentContext()
    client = sasl.client_mechanism("GSSAPI", "", "", context=context)
    assert client.initial() == b"AP-REQ"
    assert client.respond(b"AP-REP") == b""  # mutual authentication: nothing to add
    assert context.given == [None, b"AP-REP"]
    # the server offers no layer, integrity and privacy, up to 65535 octets
    answer = client.respond(b"W:" + bytes([0x07, 0x00, 0xFF, 0xFF]))
    assert answer == b"W:" + bytes([0x01, 0x00, 0x00, 0x00])  # none; 0: no buffer
    client.finish(None)


def test_the_authorization_identity_follows_the_four_octets() -> None:
    client = Gssapi(TransparentContext(), "bob@example.org")
    client.initial()
    client.respond(b"AP-REP")
    assert client.respond(b"W:\x01\x00\x10\x00") == b"W:\x01\x00\x00\x00bob@example.org"


@pytest.mark.parametrize(
    ("offer", "why"),
    [
        (b"\x06\x00\x10\x00", "requires a GSSAPI security layer"),  # integrity/privacy only
        (b"\x01\x00\x10", "3 octets, not 4"),
        (b"\x01\x00\x10\x00\x00", "5 octets, not 4"),
    ],
)
def test_an_offer_we_cannot_take_is_refused(offer: bytes, why: str) -> None:
    client = Gssapi(TransparentContext())
    client.initial()
    client.respond(b"AP-REP")
    with pytest.raises(SASLError, match=why):
        client.respond(b"W:" + offer)


def test_a_yes_before_the_security_layer_is_refused() -> None:
    client = Gssapi(TransparentContext())
    client.initial()
    client.respond(b"AP-REP")
    with pytest.raises(SASLError, match="before agreeing on a security layer"):
        client.finish(None)


def test_a_challenge_after_the_layer_is_refused() -> None:
    client = Gssapi(TransparentContext())
    client.initial()
    client.respond(b"AP-REP")
    client.respond(b"W:\x01\x00\x00\x00")
    with pytest.raises(SASLError, match="after the security layer"):
        client.respond(b"W:\x01\x00\x00\x00")


def test_gssapi_is_chosen_by_auto_only_with_a_ticket() -> None:
    offered = ["GSSAPI", "SCRAM-SHA-256", "PLAIN"]
    assert sasl.auto_mechanism(offered, have_token=False) == "SCRAM-SHA-256"
    assert sasl.auto_mechanism(offered, have_token=False, have_ticket=True) == "GSSAPI"
    assert sasl.auto_mechanism(["PLAIN"], have_token=False, have_ticket=True) == "PLAIN"
    assert "GSSAPI" in sasl.NO_SECRET_MECHANISMS and "GSSAPI" in sasl.MECHANISMS
