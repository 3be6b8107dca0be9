"""The reference LMTP server (RFC 2033): the SMTP session in the core's LMTP mode.

``mailtalk serve --lmtp PORT`` is the last hop of a mail system, the way Postfix hands
mail to Dovecot: LHLO instead of EHLO (EHLO and HELO are refused, RFC 2033 4.1), no
relaying at all (a recipient that is not a local user gets ``550 5.1.1`` at RCPT), and
after the message (DATA's final dot or BDAT ... LAST) one reply per accepted recipient,
in RCPT order (RFC 2033 4.2). Each mailbox is delivered on its own, fsynced before its
250, so one mailbox over ``--quota`` gets its own ``552 5.2.2`` and one whose store
fails its own ``451`` (or ``452`` for a full disk) while the others get 250. A reply
about the whole message (too big, a fault, a full disk before any mailbox) is said
once per recipient, as the core owes.

Everything else is the SMTP session (``mailtalk.servers.smtp``): the same core,
personalities, faults, journal and Maildirs. The per-recipient wordings are Dovecot
LMTP's, the LMTP server this one stands in for.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from mailtalk.protocols.common import Role
from mailtalk.protocols.smtp import Reply
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.servers.journal import subject_of
from mailtalk.servers.smtp import COMMANDS, SMTPServerProtocol

if TYPE_CHECKING:
    from mailtalk.servers.context import RcptOutcome, ServerContext
    from mailtalk.servers.transaction import Transaction
    from mailtalk.store.errors import MailboxError, StoreError

log = logging.getLogger("mailtalk.lmtp")

# RFC 2033 4.1: "the LHLO command is used instead of EHLO and HELO".
USE_LHLO: Final = "5.5.1 This is LMTP: say LHLO (RFC 2033 4.1)"
# Dovecot LMTP's replies to the end of the message, one per recipient
# (src/lmtp/lmtp-local.c; lda_deliver's quota and temporary failures).
SAVED: Final = "2.0.0 <{rcpt}> {queue_id} Saved"
OVER_QUOTA: Final = (552, "5.2.2 <{rcpt}> Quota exceeded (mailbox for user is full)")
STORE_FULL: Final = (452, "4.3.1 <{rcpt}> Insufficient system storage")
STORE_FAILED: Final = (451, "4.3.0 <{rcpt}> Temporary internal error")


class LMTPServerProtocol(SMTPServerProtocol):
    """One LMTP connection (the ``lmtp`` listener)."""

    def __init__(self, context: ServerContext, kind: str) -> None:
        super().__init__(context, kind)
        self.core = SMTPConnection(role=Role.SERVER, lmtp=True, chunking=self.core.chunking)
        # Replies are being given one per recipient: do not repeat them (see _send).
        self._each_recipient = False

    def _send(self, event: Reply) -> None:
        """A reply about the whole message is owed once per recipient (RFC 2033 4.2)."""
        owed = len(self.core.owed_recipients)
        for _ in range(1 if self._each_recipient else max(owed, 1)):
            super()._send(event)

    def _send_key(self, key: str, **values: str) -> None:
        if key != "banner":
            super()._send_key(key, **values)
            return
        # the personality's greeting, saying what this listener speaks (RFC 2033 4.1's
        # example: "220 foo.edu LMTP server ready")
        code, text = self.context.reply(key, **values)
        self._reply(code, text.replace(" ESMTP ", " LMTP ", 1))

    def _lhlo(self, args: str) -> None:
        name = args.strip()
        if not name:
            self._syntax_error("LHLO", "LHLO hostname", "LHLO needs a host name", args)
            return
        self._ehlo(name)

    def _not_lmtp(self, args: str) -> None:
        self._reply(500, USE_LHLO)

    def _extensions(self) -> list[str]:
        # LMTP is a local hand-over: no AUTH (nothing to relay, nobody to log in).
        return [line for line in super()._extensions() if not line.startswith("AUTH")]

    def _rcpt_refusal(self, decision: RcptOutcome) -> str | None:
        """Local users only: what SMTP would relay is an unknown user here."""
        if decision.accepted and (decision.user is not None or self.context.settings.sink):
            return None
        if decision.reply_key == "bad_recipient_syntax":
            return decision.reply_key
        return "unknown_user"

    async def _commit(self, transaction: Transaction, delay: float) -> None:
        """Each mailbox on its own, quota checked under its user lock; then a reply for
        each recipient, in RCPT order."""
        if delay:
            await asyncio.sleep(delay)
        delivery, converter = self._delivery, self._lf
        self._delivery, self._lf = None, None
        if delivery is None or converter is None:
            self._delivered(transaction)
            return
        users = list(dict.fromkeys(r.user for r in transaction.recipients if r.user))
        quota = self.context.settings.quota_bytes
        mailboxes = [self.context.mailstore.user_mailboxes(u, quota_bytes=quota) for u in users]

        def admit(index: int, size: int) -> Any:
            return mailboxes[index].quota_reserved(size)

        try:
            delivery.write(converter.finish())
            loop = asyncio.get_running_loop()
            outcomes = await loop.run_in_executor(None, delivery.commit_each, admit)
        except OSError as error:  # the message could not even be staged: no mailbox has it
            self._store_failed(error)
            delivery.abort()
            self._answer_store_error()
            return
        by_user = dict(zip(users, outcomes, strict=True))
        if self.journal is not None:
            self._journal_each(transaction, by_user, delivery.size)
        delivered = {user for user, outcome in by_user.items() if isinstance(outcome, Path)}
        if delivered:
            self.context.message_delivered(self._message_size)
            self.errors.forgive()
            self.context.notify_delivered(delivered)
            # This server said DSN at LHLO, so the client passed NOTIFY on and leaves
            # the success DSN to it (Postfix's smtp_rcpt_done: a next hop that offers
            # DSN reports from then on): the final delivery is ours to report.
            copy = next(o for o in outcomes if isinstance(o, Path))
            await self._report_delivered(transaction, copy, delivered)
        self._each_recipient = True
        try:
            for recipient in transaction.recipients:
                assert recipient.user is not None
                code, text = _reply_for(by_user[recipient.user])
                self._reply(code, text.format(rcpt=recipient.address, queue_id=self._queue_id))
        finally:
            self._each_recipient = False

    def _journal_each(
        self,
        transaction: Transaction,
        by_user: Mapping[str, Path | StoreError | MailboxError],
        size: int,
    ) -> None:
        """A ``message`` event per recipient: delivered (its file), or refused (its code)."""
        subject = subject_of(self._head.head) if self._head is not None else None
        self._head = None
        for recipient in transaction.recipients:
            assert recipient.user is not None
            outcome = by_user[recipient.user]
            code, _ = _reply_for(outcome)
            fields: dict[str, Any] = {
                "queue_id": self._queue_id, "sender": transaction.sender, "size": size,
                "subject": subject, "user": recipient.user, "mailbox": "INBOX",
                "recipients": [recipient.address], "code": code, "lmtp": True,
            }  # fmt: skip
            if transaction.bdat:
                fields["chunking"] = True
            if isinstance(outcome, Path):
                self.journal_write("message", outcome="delivered", file=outcome.name, **fields)
            else:
                log.info("session %s: <%s> not delivered: %s", self.session_id,
                         recipient.address, outcome)  # fmt: skip
                self.journal_write(
                    "message", outcome="deferred" if code < 500 else "refused", **fields
                )


def _reply_for(outcome: Path | StoreError | MailboxError) -> tuple[int, str]:
    from mailtalk.store.errors import StoreFullError

    if isinstance(outcome, Path):
        return 250, SAVED
    if isinstance(outcome, StoreFullError):
        return STORE_FULL
    if isinstance(outcome, OSError):
        return STORE_FAILED
    return OVER_QUOTA  # MailboxError: OVERQUOTA is the one admit() raises


LMTP_COMMANDS: Final[dict[str, Callable[[SMTPServerProtocol, str], None]]] = {
    **{verb: handler for verb, handler in COMMANDS.items() if verb not in ("EHLO", "HELO", "AUTH")},
    "LHLO": LMTPServerProtocol._lhlo,  # type: ignore[dict-item]
    "EHLO": LMTPServerProtocol._not_lmtp,  # type: ignore[dict-item]
    "HELO": LMTPServerProtocol._not_lmtp,  # type: ignore[dict-item]
}
LMTPServerProtocol.command_table = LMTP_COMMANDS
