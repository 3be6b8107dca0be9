"""An SMTP mail transaction as the reference server holds it (RFC 5321 3.3).

MAIL starts one, each accepted RCPT adds a :class:`Recipient`, and the end of DATA,
RSET, HELO/EHLO or STARTTLS ends it. The SMTP session builds it and the context
delivers it (``ServerContext.begin_delivery``), so it lives apart from both.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Recipient:
    address: str
    user: str | None  # local user for Maildir delivery; None: relayed to the queue


@dataclass
class Transaction:
    sender: str
    recipients: list[Recipient] = field(default_factory=list)
    body_8bit: bool = False
    smtputf8: bool = False
    rcpt_attempts: int = 0  # so DATA can tell "no valid recipients" from "no RCPT yet"
