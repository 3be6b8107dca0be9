"""Delivery status notifications as ``mailtalk serve`` sends them (RFC 3464, RFC 3461 6).

Which notifications a recipient gets is the sender's choice on RCPT (NOTIFY=): a failure
DSN unless NOTIFY leaves FAILURE out (NEVER, or SUCCESS/DELAY alone), a delay DSN only
when NOTIFY names DELAY, a success DSN only when it names SUCCESS ("relayed" to a next
hop that took no DSN parameters, "delivered" into a local Maildir). RET=FULL returns
the whole message in a failure DSN; otherwise, and always for the other actions, only
its header (RFC 3461 4.3 leaves success and delay DSNs to the MTA; full content there
would only repeat what arrived). ENVID and ORCPT are returned, xtext-decoded, as
Original-Envelope-Id and Original-Recipient (RFC 3461 6.3, RFC 3464 2.2.1 and 2.3.1).

``build_report`` is a pure function (LF line ends); ``send_report`` puts a report where
the sender reads it: the sender's Maildir when the sender is a local user, else the
relay queue, from ``<>`` like every DSN, and never to ``<>`` (RFC 3461 6.1: a DSN
is not sent for a message with a null reverse-path).
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from mailtalk.protocols.common import printable
from mailtalk.protocols.dsn import decode_xtext

if TYPE_CHECKING:
    from mailtalk.servers.context import ServerContext

Action = Literal["failed", "delayed", "delivered", "relayed"]

# What NOTIFY word asks for each action (RFC 3461 4.1).
_WORD: Final[dict[str, str]] = {
    "failed": "FAILURE", "delayed": "DELAY", "delivered": "SUCCESS", "relayed": "SUCCESS",
}  # fmt: skip

_SUBJECT: Final[dict[str, str]] = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "delivered": "Successful Mail Delivery Report",
    "relayed": "Successful Mail Delivery Report",
}

_SAYS: Final[dict[str, tuple[str, ...]]] = {
    "failed": (
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. Its header is attached below.",
    ),
    "delayed": (
        "Your message could not be delivered yet to one or more recipients.",
        "It will be tried again; you do not need to send it again.",
    ),
    "delivered": ("Your message was delivered to the mailbox of the recipients below.",),
    "relayed": (
        "Your message was passed on to the recipients' mail system, which does not",
        "offer delivery notifications: you may not hear of it again.",
    ),
}


@dataclass(frozen=True)
class ReportRecipient:
    """One recipient's per-recipient fields (RFC 3464 2.3)."""

    address: str
    action: Action
    status: str  # RFC 3463: 5.x.x failed, 4.x.x delayed, 2.x.x delivered or relayed
    text: str = ""  # one line for the human-readable part
    orcpt: str | None = None  # ORCPT= as sent (addr-type;xtext)
    remote: str = ""  # Remote-MTA
    diagnostic: str = ""  # the remote reply, for Diagnostic-Code
    retry_until: float | None = None  # Will-Retry-Until, for delayed
    diagnostic_type: str = "smtp"  # RFC 3464 2.3.6: "smtp" for a reply, X-... for our own words


def wants(notify: str | None, action: Action) -> bool:
    """Whether NOTIFY= asks for a DSN with this action; without NOTIFY, failures only."""
    if notify is None:
        return action == "failed"
    return _WORD[action] in notify.split(",")


def original_recipient(orcpt: str) -> str:
    """The Original-Recipient value: the addr-type and the address, xtext decoded (an
    ORCPT that is not xtext, utf-8 under SMTPUTF8, is kept as sent)."""
    kind, _, address = orcpt.partition(";")
    with contextlib.suppress(ValueError):
        address = decode_xtext(address)
    return f"{kind}; {address}"


def build_report(
    me: str,
    sender: str,
    recipients: Sequence[ReportRecipient],
    data: bytes,
    *,
    arrival: datetime,
    queue_id: str = "",
    envid: str | None = None,
    ret: str | None = None,
) -> bytes:
    """An RFC 3464 multipart/report for ``recipients`` (one action per report)."""
    action = recipients[0].action
    assert all(r.action == action for r in recipients), "one action per report"
    boundary = f"{queue_id.replace('/', '_') or 'dsn'}.{time.time_ns()}/{me}"
    now = formatdate(localtime=True)
    message = data.replace(b"\r\n", b"\n")
    if message.startswith(b"Return-Path:"):
        message = message.partition(b"\n")[2]
    full = action == "failed" and ret == "FULL"
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{me}>",
        f"To: <{sender}>",
        f"Subject: {_SUBJECT[action]}",
        f"Date: {now}",
        f"Message-ID: {make_msgid(domain=me)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"This is the mail system at host {me}.",
        "",
        *_SAYS[action],
        "",
    ]
    for rcpt in recipients:
        lines += [f"<{rcpt.address}>: {printable(rcpt.text or rcpt.action)}", ""]
    lines += [
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
    ]
    if envid:
        lines.append(f"Original-Envelope-Id: {printable(decode_xtext(envid))}")
    lines.append(f"Reporting-MTA: dns; {me}")
    if queue_id:
        lines.append(f"X-Mailtalk-Queue-ID: {queue_id}")
    lines.append(f"Arrival-Date: {formatdate(arrival.timestamp(), localtime=True)}")
    for rcpt in recipients:
        lines.append("")
        if rcpt.orcpt:
            lines.append(f"Original-Recipient: {printable(original_recipient(rcpt.orcpt))}")
        lines += [
            f"Final-Recipient: rfc822; {rcpt.address}",
            f"Action: {rcpt.action}",
            f"Status: {rcpt.status}",
        ]
        if rcpt.remote:
            lines.append(f"Remote-MTA: dns; {rcpt.remote}")
        if rcpt.diagnostic:
            lines.append(f"Diagnostic-Code: {rcpt.diagnostic_type}; {printable(rcpt.diagnostic)}")
        lines.append(f"Last-Attempt-Date: {now}")
        if rcpt.retry_until is not None:
            lines.append(f"Will-Retry-Until: {formatdate(rcpt.retry_until, localtime=True)}")
    lines += ["", f"--{boundary}"]
    if full:
        lines += ["Content-Description: Undelivered Message", "Content-Type: message/rfc822", ""]
        body = message if message.endswith(b"\n") else message + b"\n"
    else:
        description = "Undelivered Message Headers" if action == "failed" else "Message Headers"
        lines += [f"Content-Description: {description}", "Content-Type: text/rfc822-headers", ""]
        body = message.partition(b"\n\n")[0] + b"\n"
    text = "\n".join(lines).encode("utf-8") + b"\n"
    return text + body + f"\n--{boundary}--\n".encode()


@dataclass(frozen=True)
class Sent:
    """Where a report went: ``delivered`` into ``user``'s Maildir, or ``queued``."""

    outcome: Literal["delivered", "queued"]
    paths: list[Path]
    content: bytes
    user: str | None = None


def send_report(context: ServerContext, sender: str, report: bytes) -> Sent | None:
    """Put ``report`` where ``sender`` reads it (blocking: file writes); None for ``<>``.
    The caller wakes IMAP sessions (``notify_delivered``) from the event loop."""
    if not sender:
        return None
    from mailtalk.store import Delivery, Envelope

    user = local_user(context, sender)
    if user is not None:
        maildir = context.store.maildir(user)
        maildir.create()
        content = b"Return-Path: <>\n" + report
        delivery = Delivery([maildir], hostname=socket.gethostname())
        delivery.write(content)
        paths = delivery.commit()
        return Sent("delivered", paths, content, user)
    queue = context.store.queue
    queue.create()
    envelope = Envelope("", (sender,), client="127.0.0.1", helo=context.hostname)
    delivery = queue.begin(envelope, hostname=socket.gethostname())
    delivery.write(report)
    return Sent("queued", delivery.commit(), report)


def local_user(context: ServerContext, address: str) -> str | None:
    """The local user whose Maildir ``address`` is delivered to, or None (remote)."""
    from mailtalk.servers.policy import RouteKind

    context.refresh_control()
    try:
        route = context.control.route(address, context.users)
    except ValueError:
        return None
    return route.user if route.kind is RouteKind.LOCAL else None
