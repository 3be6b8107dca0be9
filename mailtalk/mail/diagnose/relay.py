"""``mailtalk diagnose relay``: why does the server say "relaying denied"?

The picture behind the diagnosis (the course material's): a mail client hands a
message to its own provider's server, which looks up the recipient domain's MX and
hands it on. A server accepts mail for its own domains from anyone (it is their
MX), and mail for other domains only from clients it knows: by address (Postfix
mynetworks, qmail RELAYCLIENT, Exim relay_from_hosts) or by AUTH. "Relaying
denied" means the client asked a server that is neither.

The conversation goes up to RCPT and never sends a message: greeting, EHLO, MAIL,
RCPT as a stranger; RSET; STARTTLS and EHLO again (is AUTH offered only now?);
with --auth, AUTH and MAIL/RCPT once more.

A server that is not the domain's MX and refuses its recipient is refusing to
relay, whatever its words: it has no mailboxes there to know of (OpenSMTPD says
"550 Invalid recipient" for both). "No such user" is for the domain's own MX.

A server that takes a foreign recipient from a stranger may trust the client's
address (Postfix mynetworks, qmail RELAYCLIENT, Exim relay_from_hosts) or relay
for anyone. On this host it is asked again from every other address of this host
we can use (a second loopback address, the address toward the outside); where it
refuses one, it trusts by address. Where it relays for all, nothing seen from one
host tells "trusts this host" (Debian's mynetworks = 127.0.0.0/8, Postfix's
mynetworks_style = host, OpenSMTPD's "from local") from an open relay, and the
verdict says only what was shown. The open-relay finding (exit 7) needs a client
address the server cannot plausibly trust: one outside its host and its network.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

from mailtalk.client.conversation import Conversation
from mailtalk.client.options import SessionOptions
from mailtalk.errors import MailtalkError, one_line
from mailtalk.exitcodes import ExitCode
from mailtalk.mail.diagnose import Report
from mailtalk.mail.send import Listener, split_address
from mailtalk.net.target import Target
from mailtalk.protocols.common import ReplyClass, last_line

# A second loopback address to ask from: a server trusting 127.0.0.1 does not trust it.
SECOND_SOURCE = "127.0.0.254"
# Documentation addresses: "which of my addresses would reach them" finds the address
# this host uses toward the outside (a UDP connect() sends nothing).
OUTSIDE = {4: "198.51.100.1", 6: "2001:db8::1"}

ADMIN_RELAY_SETTINGS = (
    "Postfix: smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, "
    "reject_unauth_destination; qmail: control/rcpthosts for the domains it receives, "
    "RELAYCLIENT (tcp.smtp) or SMTP AUTH for its users; Exim: relay_to_domains, "
    "relay_from_hosts and an ACL accepting authenticated senders; Exchange: accepted "
    "domains and a receive connector for authenticated or listed clients."
)


@dataclass
class Step:
    command: str
    reply: str
    ok: bool
    category: str | None = None
    explanation: str | None = None


@dataclass
class Findings:
    peer: str | None = None  # the server's address we connected to
    greeting: str = ""
    extensions: list[str] = field(default_factory=list)
    auth_plain: list[str] = field(default_factory=list)  # AUTH offered before TLS
    starttls: bool = False
    tls_ok: bool | None = None
    tls_error: str | None = None
    auth_after_tls: list[str] = field(default_factory=list)
    stranger_mail: Step | None = None
    stranger_rcpt: Step | None = None
    plain_refusal: Step | None = None  # "530 Must issue STARTTLS first", before TLS
    auth_reply: Step | None = None
    auth_rcpt: Step | None = None
    auth_mail: Step | None = None


def _step(conv: Conversation, command: str, shown: str | None = None) -> Step:
    conv.send_line(command)
    event = conv.wait_final()
    ok = event.reply_class is ReplyClass.POSITIVE
    explained = conv.explain_event(event, command)
    return Step(
        shown or command,
        last_line(event),
        ok,
        explained.category,
        None if ok else explained.one_line(),
    )


def converse(
    target: Target,
    sender: str,
    recipient: str,
    options: dict[str, Any],
    listener: Listener,
    secret: str | None,
    source: str | None = None,
) -> Findings:
    from mailtalk.client.conversation import client_name

    session = SessionOptions(
        target=target,
        starttls=False,
        insecure=bool(options.get("insecure")),
        cafile=options.get("cafile"),
        timeout=float(options.get("timeout") or 15.0),
        source_address=source,
    )
    conv = Conversation(session, listener)
    conv.recorder.enabled = False
    conv.explain_inline = False
    found = Findings()
    try:
        conv.open()
        if conv.transport is not None and conv.transport.peer:
            found.peer = str(conv.transport.peer[0])
        conv.wait_greeting()
        found.greeting = last_line(conv.last_final) if conv.last_final else ""
        helo = client_name()
        ehlo = _step(conv, f"EHLO {helo}")
        if not ehlo.ok:
            ehlo = _step(conv, f"HELO {helo}")
        found.extensions = sorted(getattr(conv.core, "extensions", {}) or {})
        found.auth_plain = [m.upper() for m in getattr(conv.core, "auth_mechanisms", []) or []]
        found.starttls = "STARTTLS" in found.extensions
        found.stranger_mail = _step(conv, f"MAIL FROM:<{sender}>")
        if found.stranger_mail.ok:
            found.stranger_rcpt = _step(conv, f"RCPT TO:<{recipient}>")
        _step(conv, "RSET")
        asked = found.stranger_rcpt or found.stranger_mail
        wants_tls = asked is not None and asked.category == "tls_required"
        if found.starttls and (source is None or wants_tls):
            try:
                conv.starttls()
                found.tls_ok = True
                _step(conv, f"EHLO {helo}")
                found.auth_after_tls = [
                    m.upper() for m in getattr(conv.core, "auth_mechanisms", []) or []
                ]
                refusal = found.stranger_rcpt or found.stranger_mail
                if refusal is not None and refusal.category == "tls_required":
                    # it wants TLS first: ask again as a stranger, now encrypted
                    found.plain_refusal = refusal
                    found.stranger_rcpt = None
                    found.stranger_mail = _step(conv, f"MAIL FROM:<{sender}>")
                    if found.stranger_mail.ok:
                        found.stranger_rcpt = _step(conv, f"RCPT TO:<{recipient}>")
                    _step(conv, "RSET")
            except MailtalkError as error:
                found.tls_ok = False
                found.tls_error = str(error)
            except Exception as error:  # a TLS failure closes the connection
                found.tls_ok = False
                found.tls_error = one_line(error)
        user = options.get("auth_user")
        if user and secret is not None and not conv.closed and source is None:
            reply = conv.authenticate(options.get("auth_mechanism") or "plain", user, secret)
            ok = reply.reply_class is ReplyClass.POSITIVE
            found.auth_reply = Step(f"AUTH as {user}", last_line(reply), ok)
            if ok:
                found.auth_mail = _step(conv, f"MAIL FROM:<{sender}>")
                if found.auth_mail.ok:
                    found.auth_rcpt = _step(conv, f"RCPT TO:<{recipient}>")
                _step(conv, "RSET")
        if not conv.closed:
            with contextlib.suppress(Exception):
                conv.send_line("QUIT")
                conv.wait_final(timeout=3)
    finally:
        conv.close()
    return found


def _addresses_of(host: str, resolver: Any) -> set[str]:
    """The server's addresses: a literal, the resolver's answer, or the system's."""
    with contextlib.suppress(ValueError):
        return {str(ipaddress.ip_address(host.strip("[]")))}
    found: set[str] = set()
    if resolver is not None:
        from mailtalk.net.mx import _addresses

        with contextlib.suppress(Exception):
            found |= set(_addresses(resolver.resolver, host)[0])
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
    first_ip = _ip(first)
    loopback = ip.version == 4 and first_ip is not None and first_ip.is_loopback
    if loopback and first != SECOND_SOURCE:
        found.append(SECOND_SOURCE)
    outward = source_toward(OUTSIDE[ip.version])
    outward_ip = _ip(outward)
    if outward_ip is not None and not outward_ip.is_loopback and outward != first:
        found.append(str(outward_ip))
    return found


@dataclass
class RelayTry:
    """One client address the foreign recipient was asked from, and the answer."""

    source: str
    outcome: str  # "relays", "refused" (as relaying), or "other" (no answer to go by)
    reply: str


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text or "")
    except ValueError:
        return None


def _in_same_network(a: str, b: str) -> bool:
    ip_a, ip_b = _ip(a), _ip(b)
    if ip_a is None or ip_b is None or ip_a.version != ip_b.version:
        return False
    prefix = 24 if ip_a.version == 4 else 48
    return ip_b in ipaddress.ip_network(f"{ip_a}/{prefix}", strict=False)


def relay_scope(
    where: str, domain: str, server: str | None, here: bool, tries: list[RelayTry]
) -> tuple[str, str, list[str], list[str], str | None, ExitCode]:
    """The verdict on a server that relayed a foreign recipient for a stranger, from
    the client addresses it was asked from (``tries``, the first being the ordinary
    connection; ``here``: the server is on this host). Returns (verdict, summary,
    fixes for the user, fixes for the admin, security finding, exit status)."""
    relays = [t.source for t in tries if t.outcome == "relays"]
    refused = [t.source for t in tries if t.outcome == "refused"]
    by_address = (
        "Postfix mynetworks, qmail RELAYCLIENT in tcp.smtp (mailtalk: control/relayclients), "
        "Exim relay_from_hosts, an Exchange receive connector"
    )
    if refused:
        return (
            "trusted_client",
            f"{where} relays to {domain} without AUTH for {', '.join(relays)} but not for "
            f"{', '.join(refused)}: it trusts clients by address, and yours is among them.",
            ["Nothing to fix: this server relays for you."],
            [
                f"This is relaying by client address ({by_address}); keep that list to "
                "your own networks."
            ],
            None,
            ExitCode.OK,
        )
    ips = [_ip(source) for source in relays]
    if here:
        if all(ip is not None and ip.version == 4 and ip.is_loopback for ip in ips):
            shown, trusted = "all in 127.0.0.0/8", "all of 127.0.0.0/8"
        elif all(ip is not None and ip.is_loopback for ip in ips):
            shown, trusted = "all loopback addresses", "loopback"
        else:
            shown, trusted = "all this host's own", "this host"
        return (
            "relays_for_all_tried",
            f"{where} relays to {domain} without AUTH for every address we could try, "
            f"{shown} ({', '.join(relays)}): a server that trusts {trusted} does that, and "
            "so does an open relay; from this host the two cannot be told apart.",
            ["It relays for you from this host."],
            [
                f"Check whom it trusts by address ({by_address}, OpenSMTPD's \"from "
                "local\"): Debian's Postfix trusts 127.0.0.0/8, Postfix's mynetworks_style "
                "= host every address of this host. Whether it is an open relay only a "
                "client on another host can see: run `mailtalk diagnose relay` there."
            ],
            None,
            ExitCode.OK,
        )
    source = relays[0] if relays else None
    source_ip, server_ip = _ip(source), _ip(server)
    why = None
    if source is None or source_ip is None or server is None or server_ip is None:
        why = "an address we could not tell"
    elif not source_ip.is_global:
        why = "a private address, in a network it may trust"
    elif not server_ip.is_global:
        why = "its own network is private, and may include yours"
    elif _in_same_network(server, source):
        why = "in its own network"
    if why is not None:
        return (
            "relays_for_all_tried",
            f"{where} relays to {domain} without AUTH for this host ({source}, {why}): a "
            "server that trusts your network does that, and so does an open relay; only a "
            "client outside your network can tell them apart.",
            ["It relays for you from here."],
            [
                f"If it should relay only for some networks, check what it trusts ({by_address}); "
                "ask from outside them to see whether it is open."
            ],
            None,
            ExitCode.OK,
        )
    return (
        "open_relay",
        f"{where} relays to {domain}, a domain it does not serve, for {source}, an address "
        "outside its host and its network, without AUTH: it is an open relay (unless it "
        "trusts your address on purpose, as a provider may trust its own customers).",
        ["Do not rely on it: open relays are blocklisted quickly."],
        [
            "Close it: relay only for authenticated users and your own networks. "
            + ADMIN_RELAY_SETTINGS
        ],
        "OPEN RELAY: the server relays mail from anyone to anyone; spammers will "
        "find and use it, and it will be blocklisted.",
        ExitCode.OPEN_RELAY,
    )


def _ask_from(
    source: str,
    target: Target,
    sender: str,
    recipient: str,
    options: dict[str, Any],
    listener: Listener,
) -> RelayTry:
    """Ask the foreign recipient again as a stranger, from the local address ``source``."""
    try:
        found = converse(
            target, sender, recipient, options, Listener(listener.out, True), None, source=source
        )
    except Exception as error:  # cannot connect from there: no evidence either way
        return RelayTry(source, "other", f"no conversation ({one_line(error)})")
    asked = found.stranger_rcpt or found.stranger_mail
    if asked is None:
        return RelayTry(source, "other", "no answer")
    shown = f"{asked.command} -> {asked.reply}"
    if asked.ok and found.stranger_rcpt is not None:
        return RelayTry(source, "relays", shown)
    if asked.category in ("relay_denied", "auth_required", "unknown_user"):
        return RelayTry(source, "refused", shown)
    return RelayTry(source, "other", shown)


def diagnose(options: dict[str, Any], listener: Listener) -> tuple[Report, ExitCode]:
    from mailtalk.net.mx import Resolver, lookup_mx
    from mailtalk.net.target import split_host_port

    sender, recipient = options["sender"], options["recipient"]
    split_address(sender, "--from")
    domain = split_address(recipient, "--to")[1]
    resolver = Resolver(options.get("resolver"), min(float(options.get("timeout") or 15), 10.0))
    mx = lookup_mx(domain, resolver)
    evidence = [f"DNS ({mx.resolver}): {mx.message}"]
    for mx_host in mx.hosts:
        shown = " ".join(mx_host.addresses) or mx_host.error or ""
        evidence.append(f"  MX {mx_host.preference} {mx_host.host} {shown}".rstrip())
    mx_addresses = {a for mx_host in mx.hosts for a in mx_host.addresses}
    mx_names = {mx_host.host.lower() for mx_host in mx.hosts}

    if options.get("server"):
        host, port = split_host_port(options["server"], 25)
    elif mx.deliverable:
        first = next(h for h in mx.hosts if h.addresses)
        host, port = first.addresses[0], 25
        evidence.append(f"no --server given: asking the first MX, {first.host}")
    elif mx.status in ("timeout", "servfail"):
        from mailtalk.mail.send import SendFailed

        raise SendFailed(
            f"cannot find the MX of {domain}: {mx.message}; give --server to diagnose a "
            "server anyway",
            temporary=True,
            exit_code=ExitCode.CONNECT,
        )
    else:
        no_mx = Report(
            "relay",
            "no_mx",
            f"{domain} cannot receive mail: {mx.message}",
            evidence,
            ["Check the spelling of the domain after the @."],
            ["Publish MX (or A) records for the domain."],
        )
        return no_mx, ExitCode.FAILED
    server_addresses = _addresses_of(host, resolver)
    is_mx = host.lower().rstrip(".") in mx_names or bool(server_addresses & mx_addresses)
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"  # not 2001:db8::1:25
    if is_mx:
        evidence.append(
            f"{where} is an MX of {domain}: it receives mail for {domain} itself, "
            "so no relaying is involved"
        )
    elif mx.status in ("timeout", "servfail"):
        evidence.append(
            f"whether {where} is an MX of {domain} cannot be told (the DNS did not answer); "
            "taken as not"
        )
    else:
        evidence.append(
            f"{where} is not an MX of {domain}: it would have to relay "
            f"(pass the message on to {domain}'s MX)"
        )

    secret = None
    if options.get("auth_user"):
        from mailtalk.mail.send import password_for

        secret = password_for(options["auth_user"], host)
    target = Target("smtp", host, port, "none", None)
    found = converse(target, sender, recipient, options, listener, secret)
    evidence.append(f"greeting: {found.greeting}")
    evidence.append(
        "EHLO: AUTH "
        + (" ".join(found.auth_plain) if found.auth_plain else "not offered")
        + "; STARTTLS "
        + ("offered" if found.starttls else "not offered")
    )
    if found.tls_ok:
        evidence.append(
            "after STARTTLS: AUTH "
            + (" ".join(found.auth_after_tls) if found.auth_after_tls else "not offered")
        )
    elif found.tls_ok is False:
        evidence.append(f"STARTTLS failed: {found.tls_error}")
    if found.plain_refusal is not None:
        evidence.append(
            f"without TLS: {found.plain_refusal.command} -> "
            f"{found.plain_refusal.reply} (TLS required: asked again after STARTTLS)"
        )
    assert found.stranger_mail is not None
    # A server that is not the domain's MX has no users there: refusing the recipient
    # as unknown is how it refuses to relay (OpenSMTPD: "550 Invalid recipient: <...>").
    relay_reading = (
        not is_mx
        and found.stranger_rcpt is not None
        and not found.stranger_rcpt.ok
        and found.stranger_rcpt.reply.startswith("5")
        and found.stranger_rcpt.category == "unknown_user"
    )
    evidence.append(f"as a stranger (no AUTH): MAIL FROM:<{sender}> -> {found.stranger_mail.reply}")
    if found.stranger_rcpt is not None:
        evidence.append(f"as a stranger: RCPT TO:<{recipient}> -> {found.stranger_rcpt.reply}")
        if relay_reading:
            evidence.append(
                f"  ↳ a relay refusal, whatever the words: {where} is not an MX of {domain}, "
                f"so it has no users there to know of, and refusing <{recipient}> means it "
                "will not relay"
                + (
                    ""
                    if mx.status not in ("timeout", "servfail")
                    else f". If it is an MX of {domain} after all, the user is unknown there"
                )
            )
        elif found.stranger_rcpt.explanation:
            evidence.append(f"  ↳ {found.stranger_rcpt.explanation}")
    if found.auth_reply is not None:
        evidence.append(f"{found.auth_reply.command}: {found.auth_reply.reply}")
        if found.auth_rcpt is not None:
            evidence.append(f"authenticated: RCPT TO:<{recipient}> -> {found.auth_rcpt.reply}")
        elif found.auth_mail is not None and not found.auth_mail.ok:
            evidence.append(f"authenticated: MAIL FROM:<{sender}> -> {found.auth_mail.reply}")

    auth_offered = bool(found.auth_plain or found.auth_after_tls)
    auth_only_after_tls = bool(found.auth_after_tls) and not found.auth_plain
    port_note = (
        f"Port {port} is where MTAs deliver to MXs; mail clients submit on 587 (STARTTLS) or "
        "465 (TLS) with AUTH."
        if port == 25 and not is_mx
        else None
    )

    def report(
        verdict: str, summary: str, user: list[str], admin: list[str], security: str | None = None
    ) -> Report:
        facts = {
            "server": where,
            "recipient_domain": domain,
            "server_is_mx": is_mx,
            "auth_offered": found.auth_plain,
            "auth_offered_after_starttls": found.auth_after_tls,
            "starttls": found.starttls,
            "mx": mx.to_json(),
            "transcript": listener.lines,
        }
        return Report("relay", verdict, summary, evidence, user, admin, security, facts)

    if not found.stranger_mail.ok and found.stranger_mail.category in (
        "auth_required",
        "tls_required",
        "relay_denied",
    ):
        found.stranger_rcpt = found.stranger_mail  # refused at MAIL for want of AUTH/TLS
    elif not found.stranger_mail.ok:
        return report(
            "sender_rejected",
            f"the server refuses the sender before any relaying question: "
            f"{found.stranger_mail.reply}",
            [
                "Use a sender address the server accepts (your own, in a domain that exists); "
                "`mailtalk diagnose sender --from ADDRESS` checks its domain."
            ],
            ["Check the sender restrictions that matched (the reply text names them)."],
        ), ExitCode.FAILED
    rcpt = found.stranger_rcpt
    assert rcpt is not None

    if is_mx:
        if rcpt.ok:
            return report(
                "mx_accepts",
                f"{where} is {domain}'s own MX and accepts mail for {recipient}: no relaying is "
                "involved, and delivering here works without AUTH.",
                [
                    "Nothing to fix here; a mail client still sends through its own provider, "
                    "which delivers here."
                ],
                [],
            ), ExitCode.OK
        if rcpt.category == "relay_denied":
            return report(
                "mx_misconfigured",
                f"{where} is an MX of {domain} but answers as if {domain} were not its own: "
                "the domain is missing from the domains it receives for.",
                ["Tell the recipient's admin; meanwhile nothing you change will help."],
                [
                    f"List {domain} as local or relayed on {where} (Postfix mydestination, "
                    "relay_domains or virtual_mailbox_domains; qmail rcpthosts and locals or "
                    "virtualdomains; Exim local_domains), or fix the MX record."
                ],
            ), ExitCode.FAILED
        return report(
            "mx_refuses",
            f"{where} is {domain}'s own MX, so this is not about relaying; it refuses the "
            f"recipient: {rcpt.explanation or rcpt.reply}",
            ["Check the address; the explanation above says what the refusal means."],
            ["See the reply's explanation: `mailtalk explain '" + rcpt.reply + "'`."],
        ), ExitCode.FAILED

    if rcpt.ok:
        server = found.peer or (sorted(server_addresses)[0] if server_addresses else None)
        here = server is not None and on_this_host(server)
        client = source_toward(server) if server is not None else None
        tries = [RelayTry(client or "this host", "relays", rcpt.reply)]
        for source in other_sources(server, client) if here and server else []:
            tries.append(_ask_from(source, target, sender, recipient, options, listener))
            evidence.append(f"asked again from {source}: {tries[-1].reply}")
        relays = [t.source for t in tries if t.outcome == "relays"]
        refused = [t.source for t in tries if t.outcome == "refused"]
        evidence.append(
            "relays without AUTH for: "
            + ", ".join(relays)
            + (f"; refuses to relay for: {', '.join(refused)}" if refused else "")
        )
        verdict, summary, user_fixes, admin_fixes, security, code = relay_scope(
            where, domain, server, here, tries
        )
        return report(verdict, summary, user_fixes, admin_fixes, security), code

    if relay_reading:
        # refused as an unknown user by a server that is not the MX: its relay refusal
        rcpt.category = "relay_denied"
    if rcpt.category not in ("relay_denied", "auth_required", "tls_required"):
        return report(
            "refused_other",
            f"{where} refuses the recipient, but not as a relaying question: "
            f"{rcpt.explanation or rcpt.reply}",
            ["See the explanation of the reply."],
            ["See the explanation of the reply."],
        ), ExitCode.FAILED

    user = options.get("auth_user")
    if found.auth_reply is not None:
        if not found.auth_reply.ok:
            return report(
                "auth_failed",
                f"the server relays only for its users, and AUTH as {user} failed: "
                f"{found.auth_reply.reply}",
                ["Check the user name (often the whole address) and the password."],
                ["Check the account and the authentication back end (`doveadm auth test`)."],
            ), ExitCode.FAILED
        if found.auth_rcpt is not None and found.auth_rcpt.ok:
            return report(
                "relay_denied_auth_fixes",
                f"relaying was denied because you had not authenticated: after AUTH as {user} "
                f"the server takes {recipient}.",
                [
                    f"Authenticate before MAIL FROM (in your mail client: outgoing server requires "
                    f"authentication{', after STARTTLS' if auth_only_after_tls else ''})."
                ]
                + ([port_note] if port_note else []),
                ["Nothing to change: the server relays for its users, as it should."],
            ), ExitCode.OK
        return report(
            "relay_denied_even_with_auth",
            f"even after AUTH as {user} the server refuses {recipient}: "
            f"{(found.auth_rcpt or found.auth_mail or found.auth_reply).reply}",
            [
                "Your account may not relay, or not with this sender address: use the address "
                "of the account you logged in with."
            ],
            [
                "Check that authenticated users may relay (permit_sasl_authenticated before "
                "reject_unauth_destination) and the sender-login rules."
            ],
        ), ExitCode.FAILED

    if auth_offered:
        when = "only after STARTTLS" if auth_only_after_tls else "on this connection"
        return report(
            "relay_denied_needs_auth_after_tls"
            if auth_only_after_tls
            else "relay_denied_needs_auth",
            f"{where} is not {domain}'s MX and relays only for its own users; it offers AUTH "
            f"{when}, and you did not authenticate.",
            [
                f"Authenticate: {'STARTTLS, EHLO again, then ' if auth_only_after_tls else ''}"
                "AUTH before MAIL FROM (run again with --auth USER to test it)."
            ]
            + ([port_note] if port_note else [])
            + [
                "Or deliver straight to the recipient's MX, which needs no AUTH: "
                f"`mailtalk send --from {sender} --to {recipient}`."
            ],
            [
                "Nothing is wrong if the client is not yours. For your users: "
                + ADMIN_RELAY_SETTINGS
            ],
        ), ExitCode.FAILED
    return report(
        "relay_denied_no_auth",
        f"{where} is not {domain}'s MX and offers no AUTH here, so it will not relay for you "
        "on this port.",
        [
            "Send through your own provider's submission server (port 587 with STARTTLS and "
            "AUTH), or straight to the recipient's MX."
        ]
        + ([port_note] if port_note else []),
        [
            "If this client should relay, allow it by address or enable SMTP AUTH. "
            + ADMIN_RELAY_SETTINGS
        ],
    ), ExitCode.FAILED


def run_diagnose_relay(**options: Any) -> int:
    import sys

    from mailtalk.mail.diagnose import run_report

    listener = Listener(sys.stdout, as_json=True)  # the transcript goes in the facts
    return run_report(
        lambda: diagnose(options, listener),
        bool(options.get("as_json")),
        bool(options.get("brief")),
    )
