"""``mailtalk diagnose login URL --user U``: why does a POP3 or IMAP login fail?

From the server's own answers: its capabilities before and after STARTTLS/STLS
(LOGINDISABLED, STLS, AUTH=...), then a login in plain text, and again over TLS
when plain text is refused. The reply is classified by the explain knowledge:
a wrong password (or unknown user, which servers word the same on purpose), plain
text login disabled, TLS required, a locked maildrop ([IN-USE]), a login delay,
or the service being down.
"""

from __future__ import annotations

import contextlib
from typing import Any

from mailtalk.conversation import Conversation
from mailtalk.diagnose import Report
from mailtalk.errors import MailtalkError, UsageError
from mailtalk.exitcodes import ExitCode
from mailtalk.protocols.common import ReplyClass, ServerEvent, last_line
from mailtalk.send import Listener
from mailtalk.session_options import SessionOptions


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


def diagnose(url: str, options: dict[str, Any], listener: Listener) -> tuple[Report, ExitCode]:
    from mailtalk.send import password_for
    from mailtalk.target import TargetError, parse_url

    try:
        target = parse_url(url)
    except TargetError as error:
        raise UsageError(str(error)) from None
    if target.protocol == "smtp":
        raise UsageError("diagnose login is for POP3 and IMAP URLs (pop3://, imap://, ...)")
    user = options["user"] or target.user
    if not user:
        raise UsageError("give the user to log in as: --user NAME")
    secret = password_for(user, target.host)
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
        encrypted = target.tls == "implicit"
        caps = _capabilities(conv)
        evidence.append(
            ("capabilities: " if not encrypted else "capabilities (TLS): ")
            + (" ".join(caps) or "none listed")
        )
        tls_word = "STLS" if target.protocol == "pop3" else "STARTTLS"
        offers_tls = tls_word in caps
        disabled = "LOGINDISABLED" in caps
        if disabled:
            evidence.append("LOGINDISABLED: the server refuses LOGIN in plain text")
        attempts = []
        if not disabled or encrypted:
            reply = _login(conv, user, secret)
            explained = conv.explain_event(reply, "PASS" if target.protocol == "pop3" else "LOGIN")
            attempts.append(("TLS" if encrypted else "plain text", reply, explained))
            evidence.append(
                f"login {'over TLS' if encrypted else 'in plain text'}: {last_line(reply)}"
            )
        last = attempts[-1] if attempts else None
        needs_tls = disabled or (
            last is not None
            and last[1].reply_class is not ReplyClass.POSITIVE
            and last[2].category == "tls_required"
        )
        if needs_tls and not encrypted and offers_tls and not conv.closed:
            try:
                conv.starttls()
                caps = _capabilities(conv)
                evidence.append(f"after {tls_word}: capabilities " + " ".join(caps))
                reply = _login(conv, user, secret)
                explained = conv.explain_event(
                    reply, "PASS" if target.protocol == "pop3" else "LOGIN"
                )
                attempts.append(("TLS", reply, explained))
                evidence.append(f"login after {tls_word}: {last_line(reply)}")
            except MailtalkError as error:
                evidence.append(f"{tls_word} failed: {error}")
        if not conv.closed:
            with contextlib.suppress(Exception):
                conv.send_line("QUIT" if target.protocol == "pop3" else "LOGOUT")
                conv.wait_final(timeout=3)
    finally:
        conv.close()
    facts["transcript"] = listener.lines

    if not attempts:
        return Report(
            "login",
            "plaintext_disabled_no_tls",
            "the server disables plain-text login and offers no STARTTLS here: log in over "
            "implicit TLS (pop3s:// on 995, imaps:// on 993).",
            evidence,
            ["Use the TLS port: mailtalk connect imaps://HOST or pop3s://HOST."],
            ["Offer STARTTLS on this port, or tell users to use the TLS port."],
            facts=facts,
        ), ExitCode.FAILED
    how, reply, explained = attempts[-1]
    if reply.reply_class is ReplyClass.POSITIVE:
        if len(attempts) > 1 or disabled:
            return Report(
                "login",
                "tls_required",
                "the login works, but only over TLS: plain text is refused ("
                + (last_line(attempts[0][1]) if len(attempts) > 1 else "LOGINDISABLED")
                + ").",
                evidence,
                ["Set your mail client to STARTTLS, or SSL/TLS on the TLS port."],
                ["Nothing to fix: refusing plain-text passwords is right."],
                facts=facts,
            ), ExitCode.OK
        return Report(
            "login",
            "ok",
            f"the login as {user} works ({how}).",
            evidence,
            [],
            [],
            facts=facts,
        ), ExitCode.OK
    category = explained.category
    verdicts = {
        "auth_failed": (
            "wrong_password",
            f"the server refuses the credentials of {user}: a wrong password, or a "
            "user name it does not know (servers say the same for both, on "
            "purpose).",
        ),
        "tls_required": (
            "tls_required_no_tls",
            "the server wants TLS before a login, and TLS could not be started.",
        ),
        "mailbox_locked": (
            "mailbox_locked",
            "the password is right but the mailbox is locked by another "
            "session: a POP3 maildrop takes one session at a time.",
        ),
        "login_delay": (
            "login_delay",
            "logged in again too soon: the server enforces a "
            "minimum time between logins (LOGIN-DELAY).",
        ),
        "service_unavailable": ("service_unavailable", "the server is not taking logins now."),
        "mailbox_full_quota": ("quota", "the login fails because the user is over quota."),
    }
    verdict, summary = verdicts.get(
        category, ("login_refused", f"the login is refused: {last_line(reply)}")
    )
    return Report(
        "login",
        verdict,
        summary,
        [*evidence, f"  ↳ {explained.one_line()}"],
        explained.fixes_user[:3],
        explained.fixes_admin[:3],
        facts=facts,
    ), ExitCode.FAILED


def run_diagnose_login(url: str, **options: Any) -> int:
    import sys

    from mailtalk.diagnose import run_report

    listener = Listener(sys.stdout, as_json=True)  # the transcript goes in the facts
    return run_report(
        lambda: diagnose(url, options, listener),
        bool(options.get("as_json")),
        bool(options.get("brief")),
    )
