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
    notify: str | None = None  # RFC 3461 NOTIFY=, as checked
    orcpt: str | None = None  # RFC 3461 ORCPT=, as sent (addr-type;xtext)


@dataclass
class Transaction:
    sender: str
    recipients: list[Recipient] = field(default_factory=list)
    body_8bit: bool = False
    smtputf8: bool = False
    rcpt_attempts: int = 0  # so DATA can tell "no valid recipients" from "no RCPT yet"
    ret: str | None = None  # RFC 3461 RET= (FULL or HDRS)
    envid: str | None = None  # RFC 3461 ENVID=, as sent (xtext)
    bdat: bool = False  # a BDAT chunk was taken: DATA may not follow (RFC 3030 2)

    @property
    def dsn(self) -> dict[str, object] | None:
        """The DSN parameters of the transaction, for the journal; None without any."""
        recipients = [
            {"address": r.address, "notify": r.notify, "orcpt": r.orcpt}
            for r in self.recipients
            if r.notify or r.orcpt
        ]
        if not (self.ret or self.envid or recipients):
            return None
        return {"ret": self.ret, "envid": self.envid, "recipients": recipients}
