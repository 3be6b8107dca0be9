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
address the server cannot plausibly trust: one outside its host and its network
(``sources.py`` picks the addresses and says what they show).

The diagnosis runs in three steps: :func:`gather` puts everything seen into a
:class:`RelayEvidence`; :data:`RULES`, in order, decide the verdict; the verdict's
words come from ``knowledge/verdicts.toml`` (``[relay.*]``) and the evidence lines
and facts are rendered from the record.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from mailtalk.client import login
from mailtalk.client.conversation import Conversation
from mailtalk.errors import MailtalkError, one_line
from mailtalk.exitcodes import ExitCode
from mailtalk.mail.diagnose import (
    Report,
    Rule,
    ServerOptions,
    conclude,
    decide,
    dns_lines,
    run_report,
)
from mailtalk.mail.diagnose.sources import (
    in_same_network,
    ip_or_none,
    on_this_host,
    other_sources,
    server_addresses,
    source_toward,
)
from mailtalk.mail.smtp_steps import (
    Listener,
    drive,
    job_conversation,
    quit_politely,
    refusal_error,
    split_address,
)
from mailtalk.net.target import Target
from mailtalk.protocols.common import ReplyClass, ServerEvent, last_line
from mailtalk.protocols.smtp_plan import Ending, Exchange, Plan, Result, Stage, TLSPolicy
from mailtalk.protocols.smtp_sequence import ClientSequence

if TYPE_CHECKING:
    from mailtalk.environment import Environment
    from mailtalk.knowledge.verdicts import Verdict
    from mailtalk.net.mx import MXResult


@dataclass(frozen=True, kw_only=True)
class RelayOptions(ServerOptions):
    """``mailtalk diagnose relay``'s options, as mailtalk/commands/mail.py reads them."""

    sender: str
    recipient: str
    server: str | None = None  # HOST[:PORT]; None: the recipient domain's first MX
    auth_user: str | None = None  # also try with AUTH as this user
    resolver: str | None = None  # HOST[:PORT] of a DNS server; None: the system's


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


def _step(conv: Conversation, exchange: Exchange) -> Step:
    reply = exchange.reply
    ok = reply.reply_class is ReplyClass.POSITIVE
    explained = conv.explain_event(reply, exchange.command)
    return Step(
        exchange.command,
        last_line(reply),
        ok,
        explained.category,
        None if ok else explained.one_line(),
    )


def _transaction(conv: Conversation, result: Result) -> tuple[Step | None, Step | None]:
    """The MAIL and RCPT of one plan's transaction, as steps (None: not asked)."""
    mail = [_step(conv, exchange) for exchange in result.exchanges_of(Stage.MAIL)]
    rcpt = [_step(conv, exchange) for exchange in result.exchanges_of(Stage.RCPT)]
    return (mail[-1] if mail else None), (rcpt[-1] if rcpt else None)


def converse(
    target: Target,
    sender: str,
    recipient: str,
    options: RelayOptions,
    listener: Listener,
    secret: str | None,
    source: str | None = None,
) -> Findings:
    """The conversation behind the verdict, up to RCPT and never DATA: the SMTP client
    sequence, asked in turn on one connection (as a stranger; after STARTTLS; after
    AUTH), each plan ending with RSET."""
    from mailtalk.client.conversation import client_name

    session = options.session(target, source_address=source)
    conv = job_conversation(session, listener)
    found = Findings()
    helo = client_name()
    # MAIL and RCPT, then RSET; asked past a refused greeting or HELO too
    ask = Plan(helo, sender, (recipient,), stop_after=Stage.RCPT, ending=Ending.RSET, persist=True)
    encrypt = Plan(helo, starttls=TLSPolicy.REQUIRED, stop_after=Stage.TLS, ending=Ending.OPEN)

    def run(plan: Plan, user: str | None = None) -> Result:
        def authenticate(_offer: object) -> ServerEvent:
            assert user is not None and secret is not None
            return login.authenticate(conv, "plain", user, secret)

        return drive(conv, ClientSequence(conv.core, plan), authenticate)

    try:
        conv.open()
        if conv.transport is not None and conv.transport.peer:
            found.peer = str(conv.transport.peer[0])
        stranger = run(ask)
        greeting = stranger.reply(Stage.CONNECT)
        found.greeting = last_line(greeting) if greeting is not None else ""
        core = conv.core
        found.extensions = sorted(getattr(core, "extensions", {}) or {})
        found.auth_plain = [m.upper() for m in getattr(core, "auth_mechanisms", []) or []]
        found.starttls = "STARTTLS" in found.extensions
        found.stranger_mail, found.stranger_rcpt = _transaction(conv, stranger)
        asked = found.stranger_rcpt or found.stranger_mail
        wants_tls = asked is not None and asked.category == "tls_required"
        if found.starttls and (source is None or wants_tls):
            try:
                tls = run(encrypt)
                if tls.refusal is not None and tls.refusal.verb == "STARTTLS":
                    raise refusal_error(tls.refusal, tls, conv.gettext)
                found.tls_ok = True
                found.auth_after_tls = [
                    m.upper() for m in getattr(conv.core, "auth_mechanisms", []) or []
                ]
                refusal = found.stranger_rcpt or found.stranger_mail
                if refusal is not None and refusal.category == "tls_required":
                    # it wants TLS first: ask again as a stranger, now encrypted
                    found.plain_refusal = refusal
                    found.stranger_mail, found.stranger_rcpt = _transaction(conv, run(ask))
            except MailtalkError as error:
                found.tls_ok = False
                found.tls_error = str(error)
            except Exception as error:  # a TLS failure closes the connection
                found.tls_ok = False
                found.tls_error = one_line(error, conv.gettext)
        user = options.auth_user
        if user and secret is not None and not conv.closed and source is None:
            authed = run(replace(ask, auth=True), user)
            reply = authed.reply(Stage.AUTH)
            assert reply is not None
            ok = reply.reply_class is ReplyClass.POSITIVE
            found.auth_reply = Step(options.gettext("AUTH as {user}").format(user=user),
                                   last_line(reply), ok)
            if ok:
                found.auth_mail, found.auth_rcpt = _transaction(conv, authed)
        quit_politely(conv)
    finally:
        conv.close()
    return found


@dataclass
class RelayTry:
    """One client address the foreign recipient was asked from, and the answer."""

    source: str
    outcome: str  # "relays", "refused" (as relaying), or "other" (no answer to go by)
    reply: str


def _ask_from(
    source: str,
    target: Target,
    sender: str,
    recipient: str,
    options: RelayOptions,
    listener: Listener,
) -> RelayTry:
    """Ask the foreign recipient again as a stranger, from the local address ``source``."""
    try:
        found = converse(
            target, sender, recipient, options, Listener(listener.out, True), None, source=source
        )
    except Exception as error:  # cannot connect from there: no evidence either way
        return RelayTry(source, "other", options.gettext("no conversation ({error})").format(
            error=one_line(error, options.gettext)))
    asked = found.stranger_rcpt or found.stranger_mail
    if asked is None:
        return RelayTry(source, "other", options.gettext("no answer"))
    shown = f"{asked.command} -> {asked.reply}"
    if asked.ok and found.stranger_rcpt is not None:
        return RelayTry(source, "relays", shown)
    if asked.category in ("relay_denied", "auth_required", "unknown_user"):
        return RelayTry(source, "refused", shown)
    return RelayTry(source, "other", shown)


# --- the evidence --------------------------------------------------------------------

# The refusals that answer the relaying question: not allowed, or not without AUTH/TLS.
RELAY_REFUSALS = ("relay_denied", "auth_required", "tls_required")


@dataclass
class RelayEvidence:
    """All a relay diagnosis goes by: the recipient domain's MX, the server asked and
    whether it is one of them, its replies as a stranger, after STARTTLS and with AUTH
    (``found``), and, when it relays for a stranger, for which of this host's addresses
    (``tries``)."""

    where: str = ""  # the server asked, as HOST:PORT
    domain: str = ""  # the recipient's
    sender: str = ""
    recipient: str = ""
    auth_user: str | None = None
    port: int = 25
    mx: MXResult | None = None
    first_mx: str | None = None  # no --server: the MX host asked
    is_mx: bool = False
    found: Findings | None = None  # None: no server to ask (the domain has no MX)
    server: str | None = None  # the server's address
    here: bool = False  # the server is on this host
    tries: list[RelayTry] = field(default_factory=list)  # only when it relays for a stranger

    @property
    def conversation(self) -> Findings:
        assert self.found is not None, "a rule before this one holds without a conversation"
        return self.found

    @property
    def dns_failed(self) -> bool:
        return self.mx is not None and self.mx.status in ("timeout", "servfail")

    @property
    def asked(self) -> Step:
        """The stranger's answer: the RCPT, or the MAIL when it was refused there."""
        found = self.conversation
        assert found.stranger_mail is not None
        if found.stranger_mail.ok and found.stranger_rcpt is not None:
            return found.stranger_rcpt
        return found.stranger_mail

    @property
    def sender_refused(self) -> bool:
        """MAIL FROM refused, and not for want of AUTH, TLS or relaying."""
        mail = self.conversation.stranger_mail
        assert mail is not None
        return not mail.ok and mail.category not in RELAY_REFUSALS

    @property
    def relay_reading(self) -> bool:
        """A server that is not the domain's MX has no users there: refusing the recipient
        as unknown is how it refuses to relay (OpenSMTPD: "550 Invalid recipient: <...>")."""
        rcpt = self.conversation.stranger_rcpt
        return (
            not self.is_mx
            and rcpt is not None
            and not rcpt.ok
            and rcpt.reply.startswith("5")
            and rcpt.category == "unknown_user"
        )

    @property
    def refusal_category(self) -> str | None:
        return "relay_denied" if self.relay_reading else self.asked.category

    @property
    def relayed_for_stranger(self) -> bool:
        """The tries are asked exactly when a server that is not the MX took the
        stranger's foreign recipient."""
        return bool(self.tries)

    @property
    def relays(self) -> list[str]:
        return [t.source for t in self.tries if t.outcome == "relays"]

    @property
    def refused(self) -> list[str]:
        return [t.source for t in self.tries if t.outcome == "refused"]

    @property
    def scope(self) -> str:
        """Which of this host's addresses it relays for, all of them being: "ipv4_loopback"
        (all in 127.0.0.0/8), "loopback" or "host"."""
        ips = [ip_or_none(source) for source in self.relays]
        if all(ip is not None and ip.version == 4 and ip.is_loopback for ip in ips):
            return "ipv4_loopback"
        if all(ip is not None and ip.is_loopback for ip in ips):
            return "loopback"
        return "host"

    @property
    def why_it_may_trust_us(self) -> str | None:
        """Why a server elsewhere relaying for this host may trust it rather than be
        open: "unknown", "private_client", "private_server", "same_network"; None when
        the client is outside the server's host and network."""
        source = self.relays[0] if self.relays else None
        source_ip, server_ip = ip_or_none(source), ip_or_none(self.server)
        if source is None or source_ip is None or self.server is None or server_ip is None:
            return "unknown"
        if not source_ip.is_global:
            return "private_client"
        if not server_ip.is_global:
            return "private_server"
        if in_same_network(self.server, source):
            return "same_network"
        return None

    @property
    def auth_offered(self) -> bool:
        return bool(self.conversation.auth_plain or self.conversation.auth_after_tls)

    @property
    def auth_only_after_tls(self) -> bool:
        return bool(self.conversation.auth_after_tls) and not self.conversation.auth_plain

    @property
    def authenticated_rcpt_ok(self) -> bool:
        rcpt = self.conversation.auth_rcpt
        return rcpt is not None and rcpt.ok


def gather(options: RelayOptions, listener: Listener) -> RelayEvidence:
    """Ask the DNS for the recipient domain's MX, then the server (``--server``, else the
    first MX) up to RCPT, and, when it relays for a stranger, again from this host's
    other addresses."""
    from mailtalk.net.mx import Resolver, lookup_mx

    split_address(options.sender, "--from", options.gettext)
    domain = split_address(options.recipient, "--to", options.gettext)[1]
    resolver = Resolver(options.resolver, min(options.timeout, 10.0), options.gettext)
    evidence = RelayEvidence(
        domain=domain,
        sender=options.sender,
        recipient=options.recipient,
        auth_user=options.auth_user,
        mx=lookup_mx(domain, resolver, options.gettext),
    )
    asked = _server_to_ask(options, evidence)
    if asked is None:
        return evidence
    host, evidence.port = asked
    evidence.where = f"[{host}]:{evidence.port}" if ":" in host else f"{host}:{evidence.port}"
    addresses = server_addresses(host, resolver)
    assert evidence.mx is not None
    mx_addresses = {a for mx_host in evidence.mx.hosts for a in mx_host.addresses}
    mx_names = {mx_host.host.lower() for mx_host in evidence.mx.hosts}
    evidence.is_mx = host.lower().rstrip(".") in mx_names or bool(addresses & mx_addresses)
    secret = None
    if options.auth_user:
        from mailtalk.mail.smtp_steps import password_for

        secret = password_for(options.auth_user, host, options.gettext)
    target = Target("smtp", host, evidence.port, "none", None)
    evidence.found = converse(target, options.sender, options.recipient, options, listener, secret)
    assert evidence.found.stranger_mail is not None
    if not evidence.is_mx and not evidence.sender_refused and evidence.asked.ok:
        server = evidence.found.peer or (sorted(addresses)[0] if addresses else None)
        _ask_around(evidence, server, target, options, listener)
    return evidence


def _server_to_ask(options: RelayOptions, evidence: RelayEvidence) -> tuple[str, int] | None:
    """``--server``, else the first MX with an address; None when the domain has no MX."""
    from mailtalk.net.target import split_host_port

    mx = evidence.mx
    assert mx is not None
    if options.server:
        return split_host_port(options.server, 25)
    if mx.deliverable:
        first = next(h for h in mx.hosts if h.addresses)
        evidence.first_mx = first.host
        return first.addresses[0], 25
    if evidence.dns_failed:
        from mailtalk.mail.smtp_steps import SendFailed

        raise SendFailed(
            options.gettext("cannot find the MX of {domain}: {reason}; give --server to "
                            "diagnose a server anyway").format(
                domain=evidence.domain, reason=mx.message),
            temporary=True,
            exit_code=ExitCode.CONNECT,
        )
    return None


def _ask_around(
    evidence: RelayEvidence,
    server: str | None,
    target: Target,
    options: RelayOptions,
    listener: Listener,
) -> None:
    """It relayed for us as a stranger: from which of this host's addresses does it?"""
    evidence.server = server
    evidence.here = server is not None and on_this_host(server)
    client = source_toward(server) if server is not None else None
    here = client or options.gettext("this host")
    evidence.tries = [RelayTry(here, "relays", evidence.asked.reply)]
    for source in other_sources(server, client) if evidence.here and server else []:
        evidence.tries.append(
            _ask_from(source, target, options.sender, options.recipient, options, listener)
        )


# --- the verdict ---------------------------------------------------------------------

# The verdict on a server that relayed a foreign recipient for a stranger, from the
# client addresses it was asked from. An open relay only from a client outside the
# server's host and network: nothing seen from one host tells "trusts this host" from
# "relays for all".
SCOPE_RULES: tuple[Rule[RelayEvidence], ...] = (
    Rule("trusted_client", lambda e: e.relayed_for_stranger and bool(e.refused)),
    Rule("relays_for_all_tried_here", lambda e: e.relayed_for_stranger and e.here),
    Rule(
        "relays_for_all_tried_network",
        lambda e: e.relayed_for_stranger and e.why_it_may_trust_us is not None,
    ),
    Rule("open_relay", lambda e: e.relayed_for_stranger),
)

RULES: tuple[Rule[RelayEvidence], ...] = (
    Rule("no_mx", lambda e: e.found is None),
    Rule("sender_rejected", lambda e: e.sender_refused),
    # the domain's own MX: no relaying involved
    Rule("mx_accepts", lambda e: e.is_mx and e.asked.ok),
    Rule("mx_misconfigured", lambda e: e.is_mx and e.asked.category == "relay_denied"),
    Rule("mx_refuses", lambda e: e.is_mx),
    *SCOPE_RULES,
    # refused, by a server that is not the MX
    Rule("refused_other", lambda e: e.refusal_category not in RELAY_REFUSALS),
    Rule(
        "auth_failed",
        lambda e: e.conversation.auth_reply is not None and not e.conversation.auth_reply.ok,
    ),
    Rule("relay_denied_auth_fixes", lambda e: e.authenticated_rcpt_ok),
    Rule("relay_denied_even_with_auth", lambda e: e.conversation.auth_reply is not None),
    Rule("relay_denied_needs_auth_after_tls", lambda e: e.auth_only_after_tls),
    Rule("relay_denied_needs_auth", lambda e: e.auth_offered),
    Rule("relay_denied_no_auth", lambda e: True),
)


def relay_scope(
    where: str, domain: str, server: str | None, here: bool, tries: list[RelayTry]
) -> Verdict:
    """The verdict on a server that relayed a foreign recipient for a stranger, from
    the client addresses it was asked from (``tries``, the first being the ordinary
    connection; ``here``: the server is on this host)."""
    from mailtalk.knowledge.verdicts import verdict

    evidence = RelayEvidence(where=where, domain=domain, server=server, here=here, tries=tries)
    return verdict("relay", decide(SCOPE_RULES, evidence), wording_values(evidence))


def wording_values(evidence: RelayEvidence) -> dict[str, object]:
    """What the verdicts' wording (verdicts.toml, [relay]) may name."""
    values: dict[str, object] = {
        "where": evidence.where,
        "domain": evidence.domain,
        "sender": evidence.sender,
        "recipient": evidence.recipient,
        "port": evidence.port,
        "port_25": evidence.port == 25 and not evidence.is_mx,
        "mx_message": evidence.mx.message if evidence.mx is not None else "",
        "auth_user": evidence.auth_user,
        "relays": ", ".join(evidence.relays),
        "refused": ", ".join(evidence.refused),
        "source": evidence.relays[0] if evidence.relays else None,
        "scope": evidence.scope,
        "why": evidence.why_it_may_trust_us,
    }
    found = evidence.found
    if found is not None:
        assert found.stranger_mail is not None
        asked = evidence.asked
        auth_last = found.auth_rcpt or found.auth_mail or found.auth_reply
        values.update(
            sender_refusal=found.stranger_mail.reply,
            refusal=asked.explanation or asked.reply,
            rcpt_reply=asked.reply,
            auth_refusal=auth_last.reply if auth_last is not None else "",
            auth_only_after_tls=evidence.auth_only_after_tls,
        )
    return values


def evidence_lines(evidence: RelayEvidence, gettext: Callable[[str], str] = str) -> list[str]:
    """The evidence as the report says it: the DNS, the server, what it answered; in the
    language of ``gettext``."""
    _ = gettext
    assert evidence.mx is not None
    mx = evidence.mx
    lines = dns_lines(mx, _)
    if evidence.found is None:
        return lines
    if evidence.first_mx is not None:
        lines.append(_("no --server given: asking the first MX, {host}").format(
            host=evidence.first_mx))
    if evidence.is_mx:
        said = _("{where} is an MX of {domain}: it receives mail for {domain} itself, so no "
                 "relaying is involved")
    elif evidence.dns_failed:
        said = _("whether {where} is an MX of {domain} cannot be told (the DNS did not "
                 "answer); taken as not")
    else:
        said = _("{where} is not an MX of {domain}: it would have to relay (pass the message "
                 "on to {domain}'s MX)")
    lines.append(said.format(where=evidence.where, domain=evidence.domain))
    return lines + _conversation_lines(evidence, _) + _tries_lines(evidence, _)


def _conversation_lines(evidence: RelayEvidence, _: Callable[[str], str]) -> list[str]:
    found = evidence.conversation
    not_offered = _("not offered")
    lines = [
        _("greeting: {greeting}").format(greeting=found.greeting),
        "EHLO: AUTH "
        + (" ".join(found.auth_plain) if found.auth_plain else not_offered)
        + "; STARTTLS "
        + (_("offered") if found.starttls else not_offered),
    ]
    if found.tls_ok:
        lines.append(
            _("after STARTTLS: AUTH {mechanisms}").format(
                mechanisms=" ".join(found.auth_after_tls) if found.auth_after_tls
                else not_offered)
        )
    elif found.tls_ok is False:
        lines.append(_("STARTTLS failed: {error}").format(error=found.tls_error))
    if found.plain_refusal is not None:
        lines.append(
            _("without TLS: {command} -> {reply} (TLS required: asked again after STARTTLS)")
            .format(command=found.plain_refusal.command, reply=found.plain_refusal.reply)
        )
    assert found.stranger_mail is not None
    sender, recipient = evidence.sender, evidence.recipient
    lines.append(_("as a stranger (no AUTH): MAIL FROM:<{sender}> -> {reply}").format(
        sender=sender, reply=found.stranger_mail.reply))
    if found.stranger_rcpt is not None:
        lines.append(_("as a stranger: RCPT TO:<{recipient}> -> {reply}").format(
            recipient=recipient, reply=found.stranger_rcpt.reply))
        if evidence.relay_reading:
            reading = _(
                "a relay refusal, whatever the words: {where} is not an MX of {domain}, so it "
                "has no users there to know of, and refusing <{recipient}> means it will not "
                "relay")
            if evidence.dns_failed:
                reading += _(". If it is an MX of {domain} after all, the user is unknown there")
            lines.append("  ↳ " + reading.format(
                where=evidence.where, domain=evidence.domain, recipient=recipient))
        elif found.stranger_rcpt.explanation:
            lines.append(f"  ↳ {found.stranger_rcpt.explanation}")
    if found.auth_reply is not None:
        lines.append(f"{found.auth_reply.command}: {found.auth_reply.reply}")
        if found.auth_rcpt is not None:
            lines.append(_("authenticated: RCPT TO:<{recipient}> -> {reply}").format(
                recipient=recipient, reply=found.auth_rcpt.reply))
        elif found.auth_mail is not None and not found.auth_mail.ok:
            lines.append(_("authenticated: MAIL FROM:<{sender}> -> {reply}").format(
                sender=sender, reply=found.auth_mail.reply))
    return lines


def _tries_lines(evidence: RelayEvidence, _: Callable[[str], str]) -> list[str]:
    if not evidence.tries:
        return []
    lines = [_("asked again from {source}: {reply}").format(source=t.source, reply=t.reply)
             for t in evidence.tries[1:]]
    refused = evidence.refused
    said = _("relays without AUTH for: {relays}").format(relays=", ".join(evidence.relays))
    if refused:
        said += _("; refuses to relay for: {refused}").format(refused=", ".join(refused))
    lines.append(said)
    return lines


def report_facts(evidence: RelayEvidence, listener: Listener) -> dict[str, object]:
    """The machine-readable facts of the report (--json); none without a conversation."""
    found = evidence.found
    if found is None:
        return {}
    assert evidence.mx is not None
    return {
        "server": evidence.where,
        "recipient_domain": evidence.domain,
        "server_is_mx": evidence.is_mx,
        "auth_offered": found.auth_plain,
        "auth_offered_after_starttls": found.auth_after_tls,
        "starttls": found.starttls,
        "mx": evidence.mx.to_json(),
        "transcript": listener.lines,
    }


def diagnose(options: RelayOptions, listener: Listener) -> tuple[Report, ExitCode]:
    """Gather the evidence, find the first rule that holds, and word its verdict."""
    evidence = gather(options, listener)
    return conclude(
        "relay",
        decide(RULES, evidence),
        wording_values(evidence),
        evidence_lines(evidence, options.gettext),
        report_facts(evidence, listener),
        options.gettext,
    )


def run(options: RelayOptions, env: Environment) -> int:
    """``mailtalk diagnose relay``: the report, and the exit status of its verdict."""
    from mailtalk.errors import one_line
    from mailtalk.net.target import TargetError, split_host_port

    if options.server:  # a bad --server is a bad argument, said before any DNS question
        try:
            split_host_port(options.server, 25)
        except TargetError as error:
            env.stderr.write(f"mailtalk: --server: {one_line(error, options.gettext)}\n")
            return int(ExitCode.USAGE)
    listener = Listener(env.stdout, as_json=True)  # the transcript goes in the facts
    return run_report(lambda: diagnose(options, listener), options, env)
