"""SASL logins over a live conversation: what the server offers, and one exchange.

``prepare_auth`` learns the mechanisms the server offers (EHLO, CAPA or CAPABILITY when
not known yet) and refuses, before anyone is asked for a password, a login that could
not work; ``authenticate`` runs one SASL exchange (the command with its initial
response where the protocol takes one, then an answer to each challenge, each shown
as ***) and records it as an ``auth`` directive; ``offered_mechanisms`` is what the
server has said so far. The REPL's :auth, send, diagnose and ``mailtalk run`` log in
through here; the conversation below knows nothing of SASL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailtalk.client.conversation import Conversation
from mailtalk.errors import AuthError, MailtalkError, ServerClosedError, ServerProtocolError
from mailtalk.protocols.common import ReplyClass, ServerEvent

if TYPE_CHECKING:
    from mailtalk.net.gssapi import KerberosContext


def _ours() -> str:
    from mailtalk.protocols.sasl import MECHANISMS

    return ", ".join(MECHANISMS)


def prepare_auth(conv: Conversation, mechanism: str) -> None:
    """Before asking anyone for a password: learn what the server offers (EHLO,
    CAPA or CAPABILITY when not known yet) and refuse, saying what it does offer,
    when the login could not work. Lines it sends are recorded as typed ones."""
    from mailtalk.protocols.sasl import MECHANISMS

    mechanism = mechanism.upper()
    if mechanism not in MECHANISMS:
        raise MailtalkError(conv.gettext(
            "mailtalk does SASL {mechanisms} only, not {mechanism}").format(
                mechanisms=_ours(), mechanism=mechanism))
    if conv.closed:
        raise ServerClosedError(conv.gettext("the connection is closed: use :reconnect"))
    if conv.core.authenticated:
        raise MailtalkError(conv.gettext("already authenticated on this connection"))
    host = conv.target.host
    tls = bool(getattr(conv.core, "tls", False))
    protocol = conv.target.protocol
    if protocol == "smtp":
        offered: list[str] | None = _smtp_auth_offer(conv, host, tls)
    elif protocol == "pop3":
        offered = _pop3_auth_offer(conv, host, tls)
    else:
        offered = _imap_auth_offer(conv, host, tls)
    if offered is None:
        return  # the server does not say what it offers: only trying tells
    if mechanism not in offered:
        verb = "AUTHENTICATE" if protocol == "imap" else "AUTH"
        ours = [m for m in MECHANISMS if m in offered]
        advice = f": :auth {ours[0].lower()}" if ours else f"; mailtalk does {_ours()} only"
        raise MailtalkError(
            f"{host} does not offer {verb} {mechanism}; it offers {' '.join(offered)}{advice}"
        )

def offered_mechanisms(conv: Conversation) -> list[str] | None:
    """The SASL mechanisms the server has said it offers (upper case), None when it
    has not said (no EHLO, CAPA or CAPABILITY seen yet, or none of them)."""
    protocol = conv.target.protocol
    if protocol == "smtp":
        if "AUTH" not in getattr(conv.core, "extensions", {}):
            return None
        return [m.upper() for m in getattr(conv.core, "auth_mechanisms", [])]
    if not getattr(conv.core, "capabilities_known", False):
        return None
    name = "sasl_mechanisms" if protocol == "pop3" else "auth_mechanisms"
    return [m.upper() for m in getattr(conv.core, name, [])] or None

def _smtp_auth_offer(conv: Conversation, host: str, tls: bool) -> list[str]:
    """The SASL mechanisms of the EHLO reply (saying EHLO first if need be); raises,
    with the ways to a login, when there is no AUTH line."""
    conv.ehlo_if_needed()
    extensions = getattr(conv.core, "extensions", {})
    if "AUTH" not in extensions:
        ways = []
        if "STARTTLS" in extensions and not tls:
            ways.append(
                "it offers STARTTLS, and many servers offer AUTH only after it "
                "(:starttls, then :auth)"
            )
        if conv.target.port not in (465, 587):
            url_host = f"[{host}]" if ":" in host else host
            ways.append(
                f"logins usually go to the submission port 587 (submission://{url_host})"
            )
        raise _no_auth(f"{host} does not offer AUTH here (its EHLO reply has no AUTH line)",
                       ways)
    return [m.upper() for m in getattr(conv.core, "auth_mechanisms", [])]

def _pop3_auth_offer(conv: Conversation, host: str, tls: bool) -> list[str] | None:
    """The SASL mechanisms of the CAPA reply (sending CAPA if need be); None for a
    server without CAPA (RFC 1939); raises when CAPA has no SASL line."""
    if not _capabilities_asked(conv, "CAPA"):
        return None
    capabilities = getattr(conv.core, "capabilities", {})
    if "SASL" not in capabilities:
        others = []
        if "USER" in capabilities:
            others.append("it offers USER and PASS")
        if "STLS" in capabilities and not tls:
            others.append("it may offer more after STLS (:starttls)")
        raise _no_auth(f"{host} does not offer AUTH (its CAPA reply has no SASL line)",
                       others)
    return [m.upper() for m in getattr(conv.core, "sasl_mechanisms", [])]

def _imap_auth_offer(conv: Conversation, host: str, tls: bool) -> list[str] | None:
    """The AUTH= capabilities (asking CAPABILITY if need be); None when the server
    never said them; raises when there is none."""
    if not _capabilities_asked(conv, "CAPABILITY"):
        return None
    offered = [m.upper() for m in getattr(conv.core, "auth_mechanisms", [])]
    if not offered:
        capabilities: set[str] = getattr(conv.core, "capabilities", set())
        others = []
        if "LOGINDISABLED" not in capabilities:
            others.append("LOGIN user password may work")
        if "STARTTLS" in capabilities and not tls:
            others.append("it may offer more after STARTTLS (:starttls)")
        raise _no_auth(
            f"{host} does not offer AUTHENTICATE (no AUTH= in its capabilities)", others
        )
    return offered

def _capabilities_asked(conv: Conversation, command: str) -> bool:
    """Ask with ``command`` (CAPA, CAPABILITY) unless the server has told its
    capabilities already; whether it has told them now."""
    if not getattr(conv.core, "capabilities_known", False):
        conv.send_line(command, typed=False)
        conv.wait_final()
    return bool(getattr(conv.core, "capabilities_known", False))

def authenticate(conv: Conversation, mechanism: str, user: str, secret: str) -> ServerEvent:
    with conv.recorder.suspended():
        reply = _authenticate(conv, mechanism, user, secret)
    said = f"auth {mechanism.lower()} {user}".rstrip()  # EXTERNAL may have no user
    if reply.reply_class is ReplyClass.POSITIVE:
        conv.recorder.directive(said)
    else:
        conv.recorder.comment(f"{said} failed here")
    return reply

def _authenticate(conv: Conversation, mechanism: str, user: str, secret: str) -> ServerEvent:
    """One SASL exchange: the command (with the initial response where the protocol
    takes one), then an answer to each challenge; every answer is masked as ***.
    A server that breaks the mechanism (SCRAM's signature wrong) is an error; so is,
    for GSSAPI, a missing Kerberos ticket (before anything is sent)."""
    from mailtalk.protocols.sasl import (
        MECHANISMS,
        WEAK_PASSWORD_MECHANISMS,
        SASLError,
        client_mechanism,
        decode,
    )
    from mailtalk.protocols.sasl import encode as sasl_encode

    mechanism = mechanism.upper()
    if mechanism not in MECHANISMS:
        raise MailtalkError(conv.gettext(
            "mailtalk does SASL {mechanisms} only, not {mechanism}").format(
                mechanisms=_ours(), mechanism=mechanism))
    protocol = conv.target.protocol
    kerberos = _kerberos_context(conv) if mechanism == "GSSAPI" else None
    # The library's own failures (GSSAPI's): ours to report, not the server's.
    local_errors = kerberos.errors if kerberos is not None else ()
    try:
        client = client_mechanism(
            mechanism, user, secret, conv.target.host, conv.target.port,
            protocol=protocol, context=kerberos.context if kerberos else None,
        )
        try:
            pending = client.initial()
        except local_errors as error:
            raise AuthError(f"{mechanism}: {error}") from None
        verb = "AUTHENTICATE" if protocol == "imap" else "AUTH"
        # The initial response goes with the command for the client-first mechanisms
        # beyond PLAIN (SCRAM, the tokens, GSSAPI): in SMTP (RFC 4954 always allows
        # it) and in IMAP with SASL-IR; PLAIN keeps its classic two steps, which
        # every server takes.
        capabilities: set[str] = getattr(conv.core, "capabilities", set())
        with_initial = (
            pending is not None
            and mechanism != "PLAIN"
            and (protocol == "smtp" or (protocol == "imap" and "SASL-IR" in capabilities))
        )
        if with_initial and pending is not None:
            conv.send_line(f"{verb} {mechanism} {sasl_encode(pending) or '='}", typed=False)
            pending = None
        else:
            conv.send_line(f"{verb} {mechanism}", typed=False)
        reply = conv.wait_final()
        try:
            while reply.reply_class is ReplyClass.INTERMEDIATE and not conv.closed:
                challenge = decode(_challenge_text(reply))
                if pending is not None:
                    answer, pending = pending, None
                else:
                    answer = client.respond(challenge)
                refusal = getattr(client, "error", None)
                if refusal is not None and not answer.strip(b"\x01"):
                    conv.listener.note(conv.gettext(
                        "the server refused the token: {error}").format(
                            error=_json_text(refusal)))
                conv.send_line(sasl_encode(answer), typed=False)
                reply = conv.wait_final()
            if reply.reply_class is ReplyClass.POSITIVE:
                client.finish(None)
        except SASLError as error:
            _cancel_exchange(conv, reply)
            raise ServerProtocolError(f"{mechanism}: {error}") from None
        except local_errors as error:
            _cancel_exchange(conv, reply)
            raise AuthError(f"{mechanism}: {error}") from None
    finally:
        if kerberos is not None:
            kerberos.context.close()
    if getattr(client, "verified", False):
        conv.listener.note(conv.gettext(
            "{mechanism}: the server proved it knows the password").format(
                mechanism=mechanism))
    if kerberos is not None and reply.reply_class is ReplyClass.POSITIVE:
        context = kerberos.context
        conv.listener.note(conv.gettext(
            "GSSAPI: logged in with the Kerberos ticket of {principal}; "
            "the server proved it is {service} (mutual authentication)").format(
                principal=context.client_principal, service=context.shown))
    if mechanism in WEAK_PASSWORD_MECHANISMS:
        conv.listener.note(conv.gettext(
            "{mechanism} is {weakness}: use SCRAM where the server offers it").format(
                mechanism=mechanism,
                weakness=conv.gettext(WEAK_PASSWORD_MECHANISMS[mechanism])), "warning")
    return reply

def _kerberos_context(conv: Conversation) -> _Kerberos:
    """GSSAPI's security context with this server's service (``imap@HOST``, HOST as
    given: Kerberos names the service by the server's host name); AuthError when
    there is no library."""
    from mailtalk.net.gssapi import GSSAPIError, KerberosContext
    from mailtalk.protocols.sasl import SASL_SERVICES

    protocol = conv.target.protocol
    try:
        context = KerberosContext(
            SASL_SERVICES.get(protocol, protocol), conv.target.host, conv.gettext)
    except GSSAPIError as error:
        raise AuthError(f"GSSAPI: {error}") from None
    return _Kerberos(context, (GSSAPIError,))

def _cancel_exchange(conv: Conversation, reply: ServerEvent) -> None:
    """The exchange cannot go on: ``*`` (the protocols' cancel) while the server
    still waits for an answer, and its refusal read."""
    if reply.reply_class is ReplyClass.INTERMEDIATE and not conv.closed:
        conv.send_line("*", typed=False)
        conv.wait_final()

@dataclass(frozen=True)
class _Kerberos:
    """GSSAPI's context, and the library's error types, caught around the exchange."""

    context: KerberosContext
    errors: tuple[type[Exception], ...]


def _challenge_text(reply: ServerEvent) -> str:
    """The base64 of a challenge: after ``334 `` (SMTP) or ``+ `` (POP3, IMAP)."""
    lines = getattr(reply, "lines", None)
    if lines is not None:
        return str(lines[0]) if lines else ""
    return str(getattr(reply, "text", ""))


def _json_text(value: object) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))


def _no_auth(why: str, hints: list[str]) -> MailtalkError:
    """No login is possible: why, then what may work instead."""
    return MailtalkError(why + "".join(f"; {hint}" for hint in hints))
