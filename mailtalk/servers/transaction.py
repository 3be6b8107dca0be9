"""An SMTP mail transaction as the reference server holds it (RFC 5321 3.3).

MAIL starts one, each accepted RCPT adds a :class:`Recipient`, and the end of DATA,
RSET, HELO/EHLO or STARTTLS ends it. The SMTP session builds it and the context
delivers it (``ServerContext.begin_delivery``), so it lives apart from both.
"""

from __future__ import annotations

# Plain classes with __slots__, not dataclasses (see protocols.common.Line): nothing
# compares or prints these.


class Recipient:
    """An accepted RCPT: its address, and where it goes."""

    __slots__ = ("address", "notify", "orcpt", "user")

    def __init__(
        self, address: str, user: str | None, notify: str | None = None, orcpt: str | None = None
    ) -> None:
        self.address = address
        self.user = user  # local user for Maildir delivery; None: relayed to the queue
        self.notify = notify  # RFC 3461 NOTIFY=, as checked
        self.orcpt = orcpt  # RFC 3461 ORCPT=, as sent (addr-type;xtext)


class Transaction:
    """From MAIL to the end of the message: the sender, the recipients so far."""

    __slots__ = (
        "bdat", "body_8bit", "envid", "rcpt_attempts", "recipients", "ret", "sender", "smtputf8",
    )  # fmt: skip

    def __init__(self, sender: str) -> None:
        self.sender = sender
        self.recipients: list[Recipient] = []
        self.body_8bit = False
        self.smtputf8 = False
        self.rcpt_attempts = 0  # so DATA can tell "no valid recipients" from "no RCPT yet"
        self.ret: str | None = None  # RFC 3461 RET= (FULL or HDRS)
        self.envid: str | None = None  # RFC 3461 ENVID=, as sent (xtext)
        self.bdat = False  # a BDAT chunk was taken: DATA may not follow (RFC 3030 2)

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
