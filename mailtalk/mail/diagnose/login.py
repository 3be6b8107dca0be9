"""``mailtalk diagnose login URL``: why does a POP3 or IMAP login, or SMTP AUTH, fail?

From the server's own answers: its capabilities (LOGINDISABLED, STLS, AUTH=...,
the EHLO's AUTH line), then one login. TLS comes first: where the server offers
STARTTLS/STLS the password goes only after it, and if TLS cannot be started the
password is not sent at all; only a server that offers no TLS gets it in plain
text, and the verdict says which way it went. The reply is classified by the
explain knowledge: a wrong password (or unknown user, which servers word the same
on purpose), plain-text login disabled, TLS required, no AUTH on this port (SMTP),
a locked maildrop ([IN-USE]), a login delay, or the service being down.

The user comes from the URL (``imap://alice@host``) or ``--user``; the password
from $MAILTALK_PASSWORD, ~/.netrc, or a prompt.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from mailtalk.client.conversation import Conversation
from mailtalk.client.options import SessionOptions
from mailtalk.errors import MailtalkError, UsageError, one_line
from mailtalk.exitcodes import ExitCode
from mailtalk.mail.diagnose import Report
from mailtalk.mail.send import Listener
from mailtalk.net.target import Target
from mailtalk.protocols.common import ReplyClass, ServerEvent, last_line

# What to do, by verdict: one piece of advice each, not the same advice twice.
WRONG_PASSWORD_USER = [
    "Check the user name (often the whole address) and the password; with two-step "
    "verification, the provider wants an app password here.",
]
WRONG_PASSWORD_ADMIN = [
    "The server's log tells an unknown user from a wrong password (Dovecot: "
    "auth_verbose = yes); test the account directly (`doveadm auth test USER`, "
    "`testsaslauthd`).",
]
TLS_HINT = (
    "Trust the certificate's CA with --cafile FILE (a PEM file), or look anyway with "
    "--insecure; your mail program needs the same."
)
SUBMISSION_HINT = (
    "Mail programs log in to send on the submission port: 587 with STARTTLS "
    "(submission://HOST) or 465 with TLS (smtps://HOST). Port 25 is where servers hand "
    "mail to each other, and usually offers no AUTH."
)


def _target(url: str) -> Target:
    from mailtalk.net.target import TargetError, parse_url

    if "://" not in url:
        host = url.strip() or "HOST"
        raise UsageError(
            f"{url!r} is not a URL: say what to log in to, e.g. imap://{host}, "
            f"pop3://{host} or submission://{host} (SMTP AUTH)"
        )
    try:
        return parse_url(url)
    except TargetError as error:
        raise UsageError(str(error)) from None


def _user(target: Target, option: str | None) -> str:
    if option and target.user and option != target.user:
        raise UsageError(
            f"the URL says user {target.user!r} and --user says {option!r}: give one"
        )
    user = option or target.user
    if not user:
        raise UsageError(
            f"no user to log in as: give --user NAME, or put it in the URL "
            f"({target.url.replace('://', '://NAME@', 1)})"
        )
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

    try:
        conv.starttls()
    except (MailtalkError, TransportError) as error:
        evidence.append(f"{word} failed: {one_line(error)}")
        prefix = "certificate: " if isinstance(error, TLSVerificationError) else ""
        return prefix + one_line(error)
    tls = conv.transport.tls if conv.transport is not None else None
    evidence.append(f"{word}: TLS started" + (f" ({tls.summary()})" if tls else ""))
    return None


def diagnose(url: str, options: dict[str, Any], listener: Listener) -> tuple[Report, ExitCode]:
    from mailtalk.mail.send import password_for

    target = _target(url)
    user = _user(target, options.get("user"))

    def secret() -> str:  # asked only when a login is about to be tried
        return password_for(user, target.host)

    session = SessionOptions(
        target=target,
        starttls=False,
        insecure=bool(options.get("insecure")),
        cafile=options.get("cafile"),
        timeout=float(options.get("timeout") or 15.0),
    )
    conv = Conversation(session, listener)
    conv.recorder.enabled = False
    conv.explain_inline = False
    evidence: list[str] = []
    facts: dict[str, object] = {"server": target.display, "protocol": target.protocol}
    try:
        conv.open()
        conv.wait_greeting()
        if target.protocol == "smtp":
            report = _smtp(conv, target, user, secret, evidence, facts)
        else:
            report = _mailbox(conv, target, user, secret, evidence, facts)
        if not conv.closed:
            with contextlib.suppress(Exception):
                conv.send_line({"pop3": "QUIT", "imap": "LOGOUT"}.get(target.protocol, "QUIT"))
                conv.wait_final(timeout=3)
    finally:
        conv.close()
    facts["transcript"] = listener.lines
    return report


def _tls_failed(
    target: Target, word: str, why: str, evidence: list[str], facts: dict[str, object]
) -> tuple[Report, ExitCode]:
    facts["login"] = "not sent"
    certificate = why.startswith("certificate: ")
    why = why.removeprefix("certificate: ").split(". ")[0].rstrip(".")
    return Report(
        "login",
        "tls_failed",
        f"{target.display} offers {word}, but TLS could not be started, so the password was "
        f"not sent: {why}.",
        evidence,
        [TLS_HINT if certificate else "Try again later, or ask the admin: the TLS handshake "
         "itself fails."],
        [
            "Check the certificate: its names, its dates, and that the chain is complete."
            if certificate
            else "Check the server's TLS settings and log: the handshake fails."
        ],
        facts=facts,
    ), ExitCode.TLS


def _mailbox(
    conv: Conversation,
    target: Target,
    user: str,
    secret: Callable[[], str],
    evidence: list[str],
    facts: dict[str, object],
) -> tuple[Report, ExitCode]:
    encrypted = target.tls == "implicit"
    caps = _capabilities(conv)
    evidence.append(
        ("capabilities (TLS): " if encrypted else "capabilities: ")
        + (" ".join(caps) or "none listed")
    )
    word = "STLS" if target.protocol == "pop3" else "STARTTLS"
    how = "over TLS" if encrypted else "in plain text"
    if not encrypted and word in caps:
        why = _start_tls(conv, word, evidence)
        if why is not None:
            return _tls_failed(target, word, why, evidence, facts)
        how = f"over TLS, after {word}"
        caps = _capabilities(conv)
        evidence.append(f"capabilities after {word}: " + (" ".join(caps) or "none listed"))
    elif not encrypted:
        evidence.append(f"no {word} offered: the password goes in plain text")
    facts["login"] = how
    if "LOGINDISABLED" in caps:
        evidence.append("LOGINDISABLED: the server refuses LOGIN in plain text")
        return Report(
            "login",
            "plaintext_disabled_no_tls",
            "the server disables plain-text login and offers no STARTTLS here: log in over "
            "implicit TLS (imaps:// on 993).",
            evidence,
            ["Use the TLS port: mailtalk diagnose login imaps://HOST."],
            ["Offer STARTTLS on this port, or tell users to use the TLS port."],
            facts=facts,
        ), ExitCode.FAILED
    reply = _login(conv, user, secret())
    evidence.append(f"login {how}: {last_line(reply)}")
    command = "PASS" if target.protocol == "pop3" else "LOGIN"
    return _verdict(conv, reply, command, user, how, evidence, facts)


def _smtp(
    conv: Conversation,
    target: Target,
    user: str,
    secret: Callable[[], str],
    evidence: list[str],
    facts: dict[str, object],
) -> tuple[Report, ExitCode]:
    greeting = conv.last_final
    if greeting is not None:
        evidence.append(f"greeting: {last_line(greeting)}")
        if greeting.reply_class is not ReplyClass.POSITIVE:
            return _verdict(conv, greeting, "greeting", user, "", evidence, facts)
    encrypted = target.tls == "implicit"
    ehlo = _ehlo(conv)
    if ehlo.reply_class is not ReplyClass.POSITIVE:
        return _verdict(conv, ehlo, "EHLO", user, "", evidence, facts)

    def offered() -> list[str]:
        return [m.upper() for m in getattr(conv.core, "auth_mechanisms", []) or []]

    extensions = set(getattr(conv.core, "extensions", {}) or {})
    evidence.append(
        ("EHLO (TLS): AUTH " if encrypted else "EHLO: AUTH ")
        + (" ".join(offered()) or "not offered")
        + ("" if encrypted else "; STARTTLS " + ("offered" if "STARTTLS" in extensions else
                                                  "not offered"))
    )
    how = "over TLS" if encrypted else "in plain text"
    if target.tls == "starttls" and "STARTTLS" not in extensions:
        # submission:// asks for STARTTLS: no password in plain text instead
        facts["login"] = "not sent"
        return Report(
            "login",
            "tls_not_offered",
            f"{target.display} offers no STARTTLS, which submission:// asks for, so the "
            "password was not sent.",
            evidence,
            [
                "Use the TLS port if it has one (smtps://HOST, 465); smtp://USER@HOST:PORT "
                "would send the password in plain text."
            ],
            ["Offer STARTTLS on the submission port (Postfix: smtpd_tls_security_level)."],
            facts=facts,
        ), ExitCode.TLS
    if not encrypted and "STARTTLS" in extensions:
        why = _start_tls(conv, "STARTTLS", evidence)
        if why is not None:
            return _tls_failed(target, "STARTTLS", why, evidence, facts)
        how = "over TLS, after STARTTLS"
        _ehlo(conv)
        evidence.append("EHLO after STARTTLS: AUTH " + (" ".join(offered()) or "not offered"))
    mechanisms = offered()
    facts["auth_offered"] = mechanisms
    if not mechanisms:
        facts["login"] = "not sent"
        return Report(
            "login",
            "auth_not_offered",
            f"{target.display} offers no AUTH"
            + (" (not even after STARTTLS)" if how.endswith("STARTTLS") else "")
            + ", so no login can work on this port; the password was not sent.",
            evidence,
            [SUBMISSION_HINT],
            [
                "Offer SMTP AUTH where users submit mail (Postfix: smtpd_sasl_auth_enable = "
                "yes on the submission service in master.cf; Exim: an authenticator; "
                "OpenSMTPD: listen ... auth)."
            ],
            facts=facts,
        ), ExitCode.FAILED
    usable = [m for m in ("PLAIN", "LOGIN") if m in mechanisms]
    if not usable:
        facts["login"] = "not sent"
        return Report(
            "login",
            "no_usable_mechanism",
            f"{target.display} offers AUTH {' '.join(mechanisms)} only; mailtalk logs in with "
            "PLAIN or LOGIN, so it cannot tell whether the password is right.",
            evidence,
            ["Use a mail program that speaks one of the offered mechanisms."],
            [],
            facts=facts,
        ), ExitCode.FAILED
    if not how.startswith("over TLS"):
        evidence.append("no STARTTLS offered: the password goes in plain text")
    facts["login"] = how
    reply = conv.authenticate(usable[0], user, secret())
    evidence.append(f"AUTH {usable[0]} {how}: {last_line(reply)}")
    return _verdict(conv, reply, "AUTH", user, how, evidence, facts)


def _verdict(
    conv: Conversation,
    reply: ServerEvent,
    command: str,
    user: str,
    how: str,
    evidence: list[str],
    facts: dict[str, object],
) -> tuple[Report, ExitCode]:
    if reply.reply_class is ReplyClass.POSITIVE:
        return Report(
            "login", "ok", f"the login as {user} works ({how}).", evidence, [], [], facts=facts
        ), ExitCode.OK
    explained = conv.explain_event(reply, command)
    verdicts: dict[str, tuple[str, str, list[str], list[str]]] = {
        "auth_failed": (
            "wrong_password",
            f"the server refuses the credentials of {user}: a wrong password, or a user name "
            "it does not know (servers say the same for both, on purpose).",
            WRONG_PASSWORD_USER,
            WRONG_PASSWORD_ADMIN,
        ),
        "tls_required": (
            "tls_required_no_tls",
            "the server wants TLS before a login, and offers no STARTTLS here.",
            ["Use the TLS port: imaps:// (993), pop3s:// (995) or smtps:// (465)."],
            ["Offer STARTTLS on this port, or tell users to use the TLS port."],
        ),
        "mailbox_locked": (
            "mailbox_locked",
            "the password is right but the mailbox is locked by another session: a POP3 "
            "maildrop takes one session at a time.",
            ["Close the other session (another mail program, a phone), then try again."],
            ["If no session is left, look for a stale lock on the maildrop."],
        ),
        "login_delay": (
            "login_delay",
            "logged in again too soon: the server enforces a minimum time between logins "
            "(LOGIN-DELAY).",
            ["Wait, and set your mail program to check less often."],
            [],
        ),
        "service_unavailable": (
            "service_unavailable",
            "the server is not taking logins now.",
            ["Try again later."],
            ["See the server's log for why it refuses service."],
        ),
        "mailbox_full_quota": (
            "quota",
            "the login fails because the user is over quota.",
            ["Ask for more space, or have old mail deleted."],
            ["Raise the quota or clean up the mailbox."],
        ),
    }
    found = verdicts.get(explained.category or "")
    if found is not None:
        verdict, summary, user_fixes, admin_fixes = found
        return Report(
            "login", verdict, summary, evidence, user_fixes, admin_fixes, facts=facts
        ), ExitCode.FAILED
    return Report(
        "login",
        "login_refused",
        f"the login is refused: {last_line(reply)}",
        [*evidence, f"  ↳ {explained.one_line()}"],
        explained.fixes_user[:1],
        explained.fixes_admin[:1],
        facts=facts,
    ), ExitCode.FAILED


def run_diagnose_login(url: str, **options: Any) -> int:
    import sys

    from mailtalk.mail.diagnose import run_report

    listener = Listener(sys.stdout, as_json=True)  # the transcript goes in the facts
    return run_report(
        lambda: diagnose(url, options, listener),
        bool(options.get("as_json")),
        bool(options.get("brief")),
    )
