"""SASL GSSAPI (RFC 4752), the client side, sans-IO: Kerberos V5 as a SASL mechanism
for SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE.

The exchange has two parts. First the GSS-API context tokens go back and forth
(the client's AP-REQ, carrying its service ticket; the server's AP-REP, proving the
server holds the service key: mutual authentication), until the context is
established. Then the server sends one wrapped message of four octets: a bit mask
of the security layers it offers (1: none, 2: integrity, 4: privacy) and the
largest buffer it takes; the client answers, wrapped, with the layer it chose, its
own largest buffer (0 without a layer) and the authorization identity (RFC 4752
3.1). mailtalk chooses "no security layer" always: TLS protects the connection, and
after the exchange the protocols go on in clear as usual. A server that offers only
integrity or privacy layers is refused with a ``SASLError``.

The GSS-API itself (the library, the ticket cache) is I/O and lives in
:mod:`mailtalk.net.gssapi`; this module sees it only as a ``SecurityContext``: a
thing that turns tokens into tokens.
"""

from __future__ import annotations

from typing import Final, Protocol

from mailtalk.protocols.sasl import ClientMechanism, SASLError

# RFC 4752 3.1: the security layers, as bits of the first octet.
NO_SECURITY_LAYER: Final = 0x01
INTEGRITY_LAYER: Final = 0x02
PRIVACY_LAYER: Final = 0x04


class SecurityContext(Protocol):
    """The client's half of a GSS-API security context (Kerberos V5)."""

    established: bool

    def step(self, token: bytes | None) -> bytes:
        """The next token to send: the first for ``None``, then the answer to the
        server's ``token`` (empty once the context is established)."""
        ...

    def unwrap(self, token: bytes) -> bytes: ...

    def wrap(self, message: bytes) -> bytes:
        """``message`` with integrity protection, without confidentiality."""
        ...


class Gssapi(ClientMechanism):
    """RFC 4752 over ``context``; ``authzid``: the identity to act as (empty: the
    ticket's own, which is what servers expect)."""

    name = "GSSAPI"

    def __init__(self, context: SecurityContext, authzid: str = "") -> None:
        self._context = context
        self._authzid = authzid.encode("utf-8")
        self.layers_offered: int | None = None  # the server's bit mask, once seen

    def initial(self) -> bytes | None:
        return self._context.step(None)

    def respond(self, challenge: bytes) -> bytes:
        if self.layers_offered is not None:
            raise SASLError("the server sent a challenge after the security layer was agreed")
        if not self._context.established:
            return self._context.step(challenge)
        return self._choose_layer(self._context.unwrap(challenge))

    def _choose_layer(self, offer: bytes) -> bytes:
        if len(offer) != 4:
            raise SASLError(f"the server's security-layer offer is {len(offer)} octets, not 4")
        self.layers_offered = offer[0]
        if not offer[0] & NO_SECURITY_LAYER:
            raise SASLError(
                "the server requires a GSSAPI security layer (integrity or privacy): "
                "mailtalk does without one only"
            )
        return self._context.wrap(bytes([NO_SECURITY_LAYER, 0, 0, 0]) + self._authzid)

    def finish(self, data: bytes | None) -> None:
        if self.layers_offered is None:
            raise SASLError("the server said yes before agreeing on a security layer "
                            "(RFC 4752 3.1)")
