"""Postfix XCLIENT: "treat this session as if it came from this client".

A trusted proxy or content filter sends it after EHLO (Postfix's
``smtpd_authorized_xclient_hosts``), and the server then applies its policies to the
client named: address, host name, HELO name, login. ``--xclient NAME=VALUE`` sends one,
to test what a server does for a given client. The server answers with a new 220
greeting and forgets the EHLO, so the client says EHLO again.

Spec: https://www.postfix.org/XCLIENT_README.html. Pure: text in, the command line
out; the SMTP core (``protocols/smtp.py``) keeps the state change, the client sequence
(``protocols/smtp_sequence.py``) decides when to send it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from typing import Final

from mailtalk.language import N_, WordedError

# The attributes --xclient accepts, in the order Postfix documents them.
ATTRIBUTES: Final = ("ADDR", "NAME", "PORT", "PROTO", "HELO", "LOGIN", "DESTADDR", "DESTPORT")


class XClientError(WordedError):
    """An --xclient value that cannot be sent; the message says why in one line."""


def parse_attribute(text: str, given_as: str = "--xclient") -> tuple[str, str]:
    """``NAME=VALUE`` as (the attribute upper-cased, its value), checked; errors name
    it as ``given_as`` (the option, or ``:xclient`` in a session)."""
    said = {"given": given_as, "text": text}
    name, equals, value = text.partition("=")
    name = name.strip().upper()
    if not equals or not name:
        raise XClientError(N_("{given} {text!r}: give NAME=VALUE, e.g. ADDR=192.0.2.1"), **said)
    if name not in ATTRIBUTES:
        raise XClientError(N_("{given} {text!r}: {name} is not one of {names}"), **said,
                           name=name, names=", ".join(ATTRIBUTES))
    if not value:
        raise XClientError(
            N_("{given} {text!r}: no value (Postfix says [UNAVAILABLE] for none)"), **said)
    if name in ("PORT", "DESTPORT") and not (value.isdigit() and 0 < int(value) < 65536):
        raise XClientError(N_("{given} {text!r}: not a port (1-65535)"), **said)
    if name in ("ADDR", "DESTADDR") and not value.startswith("["):
        bare = value[5:] if value.upper().startswith("IPV6:") else value
        try:
            address = ipaddress.ip_address(bare)
        except ValueError:
            raise XClientError(N_("{given} {text!r}: not an IP address"), **said) from None
        # Postfix wants IPv6 addresses marked so (XCLIENT_README: "IPV6:" prefix).
        value = f"IPV6:{address}" if address.version == 6 else str(address)
    return name, value


def offered_attributes(extensions: Mapping[str, str]) -> frozenset[str] | None:
    """The attributes the EHLO reply's ``XCLIENT`` keyword lists; None: not offered."""
    if "XCLIENT" not in extensions:
        return None
    return frozenset(word.upper() for word in extensions["XCLIENT"].split())


def missing_attributes(
    attributes: Iterable[tuple[str, str]], extensions: Mapping[str, str]
) -> tuple[str, dict[str, object]] | None:
    """Why these attributes cannot be sent to this server, as a sentence's template (a
    msgid: the caller says it in its language) and its values; None if they can."""
    offered = offered_attributes(extensions)
    if offered is None:
        return N_(
            "the server did not offer XCLIENT in its EHLO reply (Postfix offers it only to "
            "smtpd_authorized_xclient_hosts)"
        ), {}
    missing = ", ".join(name for name, _ in attributes if name not in offered)
    if missing and not offered:
        return N_("the server's XCLIENT does not take {missing} (it takes none)"), {
            "missing": missing}
    if missing:
        return N_("the server's XCLIENT does not take {missing} (it takes {offered})"), {
            "missing": missing, "offered": " ".join(sorted(offered))}
    return None


def xclient_line(attributes: Iterable[tuple[str, str]]) -> str:
    """The XCLIENT command for these attributes, each value xtext-encoded."""
    # RFC 3461 xtext, the one encoder DSN uses too (imported here: smtp_plan loads the SMTP
    # core, which checking an --xclient option does not need)
    from mailtalk.protocols.smtp_plan import xtext

    pairs = [f"{name}={xtext(value)}" for name, value in attributes]
    if not pairs:
        raise XClientError(N_("XCLIENT needs at least one attribute"))
    return "XCLIENT " + " ".join(pairs)
