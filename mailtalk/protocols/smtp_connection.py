"""``SMTPConnection``: the SMTP core in either role (see ``protocols/smtp.py``).

The one class the REPL, the client sequence, the servers and onward delivery make,
``SMTPConnection(role=..., lmtp=...)``: the client role's methods
(``protocols/smtp_client_role.py``) and the server role's
(``protocols/smtp_server_role.py``) on one session state, so both roles run the same
transition table. Mixed in, not delegated to: a method of either role is found on
the class as fast as one of its own, with no call in between.
"""

from __future__ import annotations

from mailtalk.protocols.smtp import Reply
from mailtalk.protocols.smtp_client_role import SMTPClientRole
from mailtalk.protocols.smtp_server_role import (
    Command,
    EndOfChunk,
    EndOfMessage,
    MessageData,
    SMTPServerRole,
)

Event = Reply | Command | MessageData | EndOfMessage | EndOfChunk


class SMTPConnection(SMTPClientRole, SMTPServerRole):
    """An SMTP session in one role; see ``protocols/smtp.py``'s docstring."""

    protocol = "smtp"
