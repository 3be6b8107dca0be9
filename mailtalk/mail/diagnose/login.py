"""``mailtalk diagnose login URL``: why does a POP3 or IMAP login, or SMTP AUTH, fail?

From the server's own answers: its capabilities (LOGINDISABLED, STLS, AUTH=...,
the EHLO's AUTH line), then one login. TLS comes first: where the server offers
STARTTLS/STLS the password goes only after it, and if TLS cannot be started the
password is not sent at all; only a server that offers no TLS gets it in plain
text, and the verdict says which way it went. The reply is classified by the
explain knowledge: a wrong password (or unknown user, which servers word the same
on purpose), plain-text login disabled, TLS required, no AUTH on this port (SMTP),
a locked maildrop ([IN-USE]), a login delay, or the service being down.

The conversation is the evidence: it stops where going on would tell nothing more or
would send the password where it should not go (:class:`LoginEvidence` says where),
then the rules decide; the verdicts' words are in ``knowledge/verdicts.toml``.

The user comes from the URL (``imap://alice@host``) or ``--user``; the password
from $MAILTALK_PASSWORD, ~/.netrc, or a prompt. GSSAPI, as send's and the REPL's
automatic choice: only when the server offers it and the ticket cache holds a
Kerberos ticket of that user, and then no password is asked; a server that offers
SASL GSSAPI alone, with no ticket, is a verdict of its own, with nothing sent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mailtalk.client.conversation import Conversation
from mailtalk.client.login import authenticate, offered_mechanisms
from mailtalk.errors import MailtalkError, UsageError, one_line
from mailtalk.exitcodes import ExitCode
from mailtalk.mail.diagnose import Report, Rule, ServerOptions, conclude, decide, run_report
from mailtalk.mail.smtp_steps import Listener
from mailtalk.net.target import Target
from mailtalk.protocols.common import ReplyClass, ServerEvent, last_line

if TYPE_CHECKING:
    from mailtalk.environment import Environment
    from mailtalk.knowledge.explain import Explanation

# Mailbox logins go by SASL (AUTHENTICATE, AUTH) only with these, chosen as send
# chooses (protocols.sasl.auto_mechanism); otherwise by LOGIN or USER/PASS, which is
# what PLAIN would send and what LOGINDISABLED speaks of.
STRONGER_THAN_LOGIN = (
    "SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "OAUTHBEARER", "XOAUTH2", "GSSAPI",
)


@dataclass(frozen=True, kw_only=True)
class LoginOptions(ServerOptions):
    """``mailtalk diagnose login``'s options, as mailtalk/commands/mail.py reads them."""

    url: str
    user: str | None = None  # else the URL's
    # XOAUTH2/OAUTHBEARER's bearer token ($MAILTALK_OAUTH2_TOKEN or --oauth2-token)
    oauth2_token: str | None = field(default=None, repr=False)


@dataclass
class LoginEvidence:
    """What the login diagnosis saw, up to where it stopped: TLS failing or missing, no
    login possible, or the answer (``reply``) to the login (or to the greeting or EHLO
    refused before it)."""

    server: str  # the URL's host and port
    user: str
    lines: list[str] = field(default_factory=list)  # the evidence, as the report says it
    facts: dict[str, object] = field(default_factory=dict)
    how: str = ""  # which way the password went (or would have): "over TLS", ...
    word: str = "STARTTLS"  # what starts TLS here: STARTTLS, or POP3's STLS
    tls_failure: str | None = None  # why TLS could not start ("certificate: ..." first)
    starttls_missing: bool = False  # submission:// asks for STARTTLS, not offered
    login_disabled: bool = False  # IMAP LOGINDISABLED, and no TLS to lift it
    mechanisms: list[str] | None = None  # SMTP AUTH mechanisms offered; None: not asked
    have_token: bool = False  # an OAuth 2 token was given: its mechanisms are usable too
    have_ticket: bool = False  # GSSAPI offered, and a Kerberos ticket of the user at hand
    no_ticket: bool = False  # SASL offered GSSAPI alone, and no ticket: nothing can be sent
    secret: str = "password"  # what was sent: "password", or "OAuth2 token" (or expired one)
    reply: ServerEvent | None = None  # the answer that decides
    explained: Explanation | None = None  # the explain knowledge on it, when a refusal
    # the language of the lines, of ``how`` and of ``secret`` (English for --json)
    gettext: Callable[[str], str] = field(default=str, repr=False)

    def answer(self, conv: Conversation, reply: ServerEvent, command: str) -> None:
        """The deciding answer, and what the knowledge base says of it if a refusal."""
        self.reply = reply
        if reply.reply_class is not ReplyClass.POSITIVE:
            self.explained = conv.explain_event(reply, command)

    @property
    def usable(self) -> list[str]:
        """The offered mechanisms mailtalk has a secret for, in no particular order."""
        from mailtalk.protocols.sasl import PASSWORD_MECHANISMS, TOKEN_MECHANISMS

        ours = (
            PASSWORD_MECHANISMS + (TOKEN_MECHANISMS if self.have_token else ())
            + (("GSSAPI",) if self.have_ticket else ())
        )
        return [m for m in (self.mechanisms or []) if m in ours]

    def look_for_ticket(self, offered: list[str] | None) -> None:
        """Whether GSSAPI can be used (offered, and a ticket of the user in the cache),
        and whether it is the only SASL mechanism offered while there is no ticket."""
        from mailtalk.mail.smtp_steps import has_ticket_for

        if not offered or "GSSAPI" not in offered:
            return
        self.have_ticket = has_ticket_for(self.user)
        self.no_ticket = not self.have_ticket and set(offered) == {"GSSAPI"}
        if self.no_ticket:
            self.lines.append(self.gettext(
                "no Kerberos ticket of {user} in the cache (klist): GSSAPI, all that is "
                "offered, cannot be used").format(user=self.user))
            self.facts["login"] = "not sent"

    @property
    def refusal(self) -> str | None:
        """The explain knowledge's category of the refusal ("auth_failed", ...)."""
        return self.explained.category if self.explained is not None else None


def _target(url: str, _: Callable[[str], str]) -> Target:
    from mailtalk.net.target import TargetError, parse_url

    if "://" not in url:
        raise UsageError(_(
            "{url!r} is not a URL: say what to log in to, e.g. imap://{host}, pop3://{host} "
            "or submission://{host} (SMTP AUTH)").format(url=url, host=url.strip() or "HOST"))
    try:
        return parse_url(url)
    except TargetError as error:
        raise UsageError(error.said(_)) from None


def _user(target: Target, option: str | None, _: Callable[[str], str]) -> str:
    if option and target.user and option != target.user:
        raise UsageError(_("the URL says user {url_user!r} and --user says {option!r}: give "
                           "one").format(url_user=target.user, option=option))
    user = option or target.user
    if not user:
        raise UsageError(_("no user to log in as: give --user NAME, or put it in the URL "
                           "({url})").format(url=target.url.replace("://", "://NAME@", 1)))
    return user


def _capabilities(conv: Conversation) -> list[str]:
    if conv.target.protocol == "pop3":
        conv.send_line("CAPA")
        conv.wait_final()
        return sorted(str(c) for c in (getattr(conv.core, "capabilities", None) or {}))
    conv.send_line("CAPABILITY")
    conv.wait_final()
    return sorted(str(c) for c in (getattr(conv.core, "capabilities", None) or set()))


def _login(conv: Conversation, user: str, secret: str) -> ServerEvent:
    if conv.target.protocol == "pop3":
        conv.send_line(f"USER {user}")
        reply = conv.wait_final()
        if reply.reply_class is not ReplyClass.POSITIVE:
            return reply
        conv.send_line(f"PASS {secret}")
        return conv.wait_final()
    quoted = '"' + secret.replace("\\", "\\\\").replace('"', '\\"') + '"'
    conv.send_line(f'LOGIN "{user}" {quoted}')
    return conv.wait_final()


def _ehlo(conv: Conversation) -> ServerEvent:
    from mailtalk.client.conversation import client_name

    conv.send_line(f"EHLO {client_name()}")
    reply = conv.wait_final()
    if reply.reply_class is ReplyClass.PERMANENT:
        conv.send_line(f"HELO {client_name()}")
        reply = conv.wait_final()
    return reply


def _start_tls(conv: Conversation, word: str, evidence: list[str]) -> str | None:
    """STARTTLS/STLS; None when TLS works, else why it did not (a certificate that
    is not trusted starts with "certificate: ")."""
    from mailtalk.net.transport import TLSVerificationError, TransportError

    _ = conv.gettext
    try:
        conv.starttls()
    except (MailtalkError, TransportError) as error:
        evidence.append(_("{word} failed: {error}").format(word=word, error=one_line(error, _)))
        prefix = "certificate: " if isinstance(error, TLSVerificationError) else ""
        return prefix + one_line(error, _)
    tls = conv.transport.tls if conv.transport is not None else None
    started = _("{word}: TLS started").format(word=word)
    evidence.append(started + (f" ({tls.summary(None, _)})" if tls else ""))
    return None


def gather(options: LoginOptions, listener: Listener) -> LoginEvidence:
    """Connect, look at what the server offers, start TLS where it can, and log in
    unless something already decides the verdict."""
    from mailtalk.mail.smtp_steps import password_for
    from mailtalk.protocols.sasl import NO_SECRET_MECHANISMS, TOKEN_MECHANISMS

    target = _target(options.url, options.gettext)
    user = _user(target, options.user, options.gettext)

    def secret(mechanism: str) -> str:  # asked only when a login is about to be tried
        if mechanism in NO_SECRET_MECHANISMS:  # GSSAPI: the Kerberos ticket, no password
            evidence.secret = _("Kerberos ticket")
            return ""
        if mechanism in TOKEN_MECHANISMS and options.oauth2_token is not None:
            evidence.secret = _("OAuth2 token (or an expired one)")
            return options.oauth2_token
        return password_for(user, target.host, _)

    _ = options.gettext
    session = options.session(target)
    conv = Conversation(session, listener)
    conv.recorder.enabled = False
    conv.explain_inline = False
    evidence = LoginEvidence(
        target.display, user, facts={"server": target.display, "protocol": target.protocol},
        have_token=options.oauth2_token is not None, secret=_("password"), gettext=_,
    )
    try:
        conv.open()
        conv.wait_greeting()
        if target.protocol == "smtp":
            _smtp(conv, target, secret, evidence)
        else:
            _mailbox(conv, target, secret, evidence)
        if not conv.closed:
            with contextlib.suppress(Exception):
                conv.send_line({"pop3": "QUIT", "imap": "LOGOUT"}.get(target.protocol, "QUIT"))
                conv.wait_final(timeout=3)
    finally:
        _keep_peer_chain(conv, evidence)
        conv.close()
    evidence.facts["transcript"] = listener.lines
    return evidence


def _keep_peer_chain(conv: Conversation, evidence: LoginEvidence) -> None:
    """The server's TLS chain in the facts (--json's "tls"), when TLS came up."""
    tls = conv.transport.tls if conv.transport is not None else None
    if tls is None or not tls.chain:
        return
    from mailtalk.net.certchain import chain_json, describe_session_chain

    host = conv.transport.server_hostname if conv.transport is not None else None
    reports = describe_session_chain(tls.chain, tls.verified, host, conv.options.cafile)
    evidence.facts["tls"] = chain_json(reports, tls.chain_source)


def _start_tls_or_stop(conv: Conversation, evidence: LoginEvidence) -> bool:
    """STARTTLS/STLS; False (and the password not to be sent) when it fails."""
    evidence.tls_failure = _start_tls(conv, evidence.word, evidence.lines)
    if evidence.tls_failure is not None:
        evidence.facts["login"] = "not sent"
        return False
    evidence.how = evidence.gettext("over TLS, after {word}").format(word=evidence.word)
    return True


def _mailbox(
    conv: Conversation, target: Target, secret: Callable[[str], str], evidence: LoginEvidence
) -> None:
    _ = evidence.gettext
    encrypted = target.tls == "implicit"
    caps = _capabilities(conv)
    evidence.lines.append(
        _("capabilities (TLS): {capabilities}" if encrypted else "capabilities: {capabilities}")
        .format(capabilities=" ".join(caps) or _("none listed"))
    )
    evidence.word = word = "STLS" if target.protocol == "pop3" else "STARTTLS"
    evidence.how = _("over TLS") if encrypted else _("in plain text")
    if not encrypted and word in caps:
        if not _start_tls_or_stop(conv, evidence):
            return
        caps = _capabilities(conv)
        evidence.lines.append(_("capabilities after {word}: {capabilities}").format(
            word=word, capabilities=" ".join(caps) or _("none listed")))
    elif not encrypted:
        evidence.lines.append(_("no {word} offered: the password goes in plain text").format(
            word=word))
    evidence.look_for_ticket(offered_mechanisms(conv))
    if evidence.no_ticket:
        return
    evidence.facts["login"] = evidence.how
    mechanism = _mailbox_mechanism(conv, evidence.have_token, evidence.have_ticket)
    if mechanism is not None:
        verb = "AUTHENTICATE" if target.protocol == "imap" else "AUTH"
        reply = authenticate(conv, mechanism, _login_name(mechanism, evidence.user),
                                  secret(mechanism))
        evidence.lines.append(f"{verb} {mechanism} {evidence.how}: {last_line(reply)}")
        evidence.answer(conv, reply, verb)
        return
    if "LOGINDISABLED" in caps:
        evidence.lines.append(_("LOGINDISABLED: the server refuses LOGIN in plain text"))
        evidence.login_disabled = True
        return
    reply = _login(conv, evidence.user, secret("PLAIN"))
    evidence.lines.append(_("login {how}: {reply}").format(how=evidence.how,
                                                          reply=last_line(reply)))
    evidence.answer(conv, reply, "PASS" if target.protocol == "pop3" else "LOGIN")


def _mailbox_mechanism(conv: Conversation, have_token: bool, have_ticket: bool) -> str | None:
    """The SASL mechanism a POP3/IMAP login uses, as send would choose it, when it is
    stronger than LOGIN or USER/PASS (SCRAM, CRAM-MD5, a token's, GSSAPI with a ticket);
    None: log in plainly."""
    from mailtalk.protocols.sasl import auto_mechanism

    offered = offered_mechanisms(conv)
    if not offered:
        return None
    mechanism = auto_mechanism(offered, have_token, have_ticket)
    return mechanism if mechanism in STRONGER_THAN_LOGIN and mechanism in offered else None


def _login_name(mechanism: str, user: str) -> str:
    """Who logs in, as the mechanism takes it: GSSAPI's ticket says who (a name given
    would be an identity to act as, which the user did not ask for), as in send."""
    return "" if mechanism == "GSSAPI" else user


def _smtp(
    conv: Conversation, target: Target, secret: Callable[[str], str], evidence: LoginEvidence
) -> None:
    _ = evidence.gettext
    greeting = conv.last_final
    if greeting is not None:
        evidence.lines.append(_("greeting: {greeting}").format(greeting=last_line(greeting)))
        if greeting.reply_class is not ReplyClass.POSITIVE:
            evidence.answer(conv, greeting, "greeting")
            return
    encrypted = target.tls == "implicit"
    ehlo = _ehlo(conv)
    if ehlo.reply_class is not ReplyClass.POSITIVE:
        evidence.answer(conv, ehlo, "EHLO")
        return

    def offered() -> list[str]:
        return [m.upper() for m in getattr(conv.core, "auth_mechanisms", []) or []]

    extensions = set(getattr(conv.core, "extensions", {}) or {})
    evidence.lines.append(
        ("EHLO (TLS): AUTH " if encrypted else "EHLO: AUTH ")
        + (" ".join(offered()) or _("not offered"))
        + ("" if encrypted else "; STARTTLS " + (_("offered") if "STARTTLS" in extensions else
                                                  _("not offered")))
    )
    evidence.how = _("over TLS") if encrypted else _("in plain text")
    if target.tls == "starttls" and "STARTTLS" not in extensions:
        # submission:// asks for STARTTLS: no password in plain text instead
        evidence.facts["login"] = "not sent"
        evidence.starttls_missing = True
        return
    if not encrypted and "STARTTLS" in extensions:
        if not _start_tls_or_stop(conv, evidence):
            return
        _ehlo(conv)
        evidence.lines.append(_("EHLO after STARTTLS: AUTH {mechanisms}").format(
            mechanisms=" ".join(offered()) or _("not offered")))
    evidence.mechanisms = offered()
    evidence.facts["auth_offered"] = evidence.mechanisms
    evidence.look_for_ticket(evidence.mechanisms)
    if evidence.no_ticket:
        return
    if not evidence.usable:
        evidence.facts["login"] = "not sent"
        return
    if not encrypted and "STARTTLS" not in extensions:
        evidence.lines.append(_("no {word} offered: the password goes in plain text").format(
            word="STARTTLS"))
    evidence.facts["login"] = evidence.how
    from mailtalk.protocols.sasl import auto_mechanism

    mechanism = auto_mechanism(evidence.usable, evidence.have_token, evidence.have_ticket)
    reply = authenticate(conv, mechanism, _login_name(mechanism, evidence.user),
                              secret(mechanism))
    evidence.lines.append(f"AUTH {mechanism} {evidence.how}: {last_line(reply)}")
    evidence.answer(conv, reply, "AUTH")


# The explain knowledge's category of a refused login, and the verdict it makes.
REFUSAL_VERDICTS = {
    "auth_failed": "wrong_password",
    "tls_required": "tls_required_no_tls",
    "mailbox_locked": "mailbox_locked",
    "login_delay": "login_delay",
    "service_unavailable": "service_unavailable",
    "mailbox_full_quota": "quota",
}



def _refused_as(category: str) -> Callable[[LoginEvidence], bool]:
    return lambda evidence: evidence.refusal == category


RULES: tuple[Rule[LoginEvidence], ...] = (
    # stopped before a login: TLS first, then whether any login can work
    Rule("tls_failed", lambda e: e.tls_failure is not None),
    Rule("tls_not_offered", lambda e: e.starttls_missing),
    Rule("no_kerberos_ticket", lambda e: e.no_ticket),
    Rule("plaintext_disabled_no_tls", lambda e: e.login_disabled),
    Rule("auth_not_offered", lambda e: e.mechanisms == []),
    Rule("no_usable_mechanism", lambda e: e.mechanisms is not None and not e.usable),
    # the answer to the login (or the greeting or EHLO refused)
    Rule("ok", lambda e: e.reply is not None and e.reply.reply_class is ReplyClass.POSITIVE),
    *(Rule(verdict, _refused_as(category)) for category, verdict in REFUSAL_VERDICTS.items()),
    Rule("login_refused", lambda e: True),
)


def wording_values(evidence: LoginEvidence) -> dict[str, object]:
    """What the verdicts' wording (verdicts.toml, [login]) may name."""
    explained = evidence.explained
    why = evidence.tls_failure or ""
    return {
        "server": evidence.server,
        "user": evidence.user,
        "secret": evidence.secret,
        "how": evidence.how,
        "word": evidence.word,
        "certificate": why.startswith("certificate: "),
        "why": why.removeprefix("certificate: ").split(". ")[0].rstrip("."),
        "mechanisms": " ".join(evidence.mechanisms or []),
        "tried_starttls": evidence.how.endswith("STARTTLS"),
        "reply": last_line(evidence.reply) if evidence.reply is not None else "",
        "reply_fix_user": explained.fixes_user[0] if explained and explained.fixes_user else "",
        "reply_fix_admin": explained.fixes_admin[0] if explained and explained.fixes_admin else "",
    }


def diagnose(options: LoginOptions, listener: Listener) -> tuple[Report, ExitCode]:
    """Gather the evidence, find the first rule that holds, and word its verdict."""
    evidence = gather(options, listener)
    key = decide(RULES, evidence)
    lines = evidence.lines
    if key == "login_refused" and evidence.explained is not None:
        # a refusal with no verdict of its own: the explain knowledge says what it means
        lines = [*lines, f"  ↳ {evidence.explained.one_line()}"]
    return conclude(
        "login", key, wording_values(evidence), lines, evidence.facts, options.gettext
    )


def run(options: LoginOptions, env: Environment) -> int:
    """``mailtalk diagnose login``: the report, and the exit status of its verdict."""
    listener = Listener(env.stdout, as_json=True)  # the transcript goes in the facts
    return run_report(lambda: diagnose(options, listener), options, env)
