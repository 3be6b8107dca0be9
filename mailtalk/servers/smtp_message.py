"""The message of an SMTP transaction: DATA and BDAT (RFC 3030) read into the store,
the trace headers, the hand-off to the commit threads (the file fsynced in ``new/``,
``new/`` fsynced, then 250), success DSNs and the journal's ``message`` events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mailtalk.protocols.common import new_record
from mailtalk.protocols.smtp import Reply, parse_bdat
from mailtalk.protocols.smtp_server_role import EndOfChunk, EndOfMessage, MessageData
from mailtalk.servers.journal import HeadCollector, subject_of
from mailtalk.servers.smtp_session import SMTPSession
from mailtalk.servers.transaction import Transaction

log = logging.getLogger("mailtalk.smtp")


def _received_date() -> str:
    """The date of a Received: field, now (RFC 5322, local time): made once a second,
    not once a message."""
    global _received_dates
    second = int(time.time())
    made_at, date = _received_dates
    if second != made_at:
        from email.utils import formatdate  # not needed before the first message

        date = formatdate(second, localtime=True)
        _received_dates = (second, date)
    return date


_received_dates = (-1, "")  # the last second a date was made for, and that date

# The 250 after the message differs every time (its queue id), so no cache of filled-in
# replies helps it: its text is made from the template's halves around the queue id,
# kept by (personality, control files), code first. None: a template this cannot do
# (a {date}, more lines, the id twice); it is filled in as any other reply then.
_QUEUED_HALVES: dict[tuple[Any, Any], tuple[int, str, str] | None] = {}
_QUEUE_ID_MARK = "QUEUEIDQUEUEID"  # printable (a reply's values are made printable)


class SMTPMessageSession(SMTPSession):
    """DATA and BDAT: the message received, stored, committed and answered."""

    # The message under way. Class defaults, set on the session by _begin_message (an
    # __init__ for them was a call and six attributes more a connection).
    _queue_id = ""
    _message_size = 0
    _message_too_big = False
    _message_line_too_long = False
    _store_error: OSError | None = None  # writing the message failed (disk full)
    _head: HeadCollector | None = None  # with a journal: the message's head

    def _data(self, args: str) -> None:
        if args.strip():
            self._syntax_error("DATA", "DATA", "DATA takes no arguments", args)
            return
        if self.transaction is None:
            self._send_key("need_mail")
            return
        if not self.transaction.recipients:
            refused = self.transaction.rcpt_attempts > 0
            self._send_key("no_valid_recipients" if refused else "need_rcpt")
            return
        if self.transaction.bdat:
            self._reply(503, "5.5.1 DATA cannot follow BDAT in one transaction (RFC 3030)")
            return
        if self._begin_message():
            self._send_key("data_start")
        else:
            self._answer_store_error()

    def _begin_message(self) -> bool:
        """Start storing the transaction's message (DATA's 354, or its first BDAT chunk);
        False when the store cannot take even the message file (_store_error says why)."""
        assert self.transaction is not None
        self._queue_id = self.context.new_queue_id()
        self._message_size = 0
        self._message_too_big = False
        self._message_line_too_long = False
        self._store_error = None
        self._head = HeadCollector() if self.journal is not None else None
        if self.context.settings.sink:
            # begin_delivery() would throw the trace headers away: skip making them.
            self._delivery, self._lf = None, None
        else:
            envelope = None
            if any(r.user is None for r in self.transaction.recipients):  # a copy to relay
                from mailtalk.store import Envelope

                envelope = Envelope(
                    self.transaction.sender, (), self.client_ip, self.helo,
                    queue_id=self._queue_id, ret=self.transaction.ret,
                    envid=self.transaction.envid,
                )  # fmt: skip
            try:
                self._delivery, self._lf = self.context.begin_delivery(
                    self.transaction.recipients, self._trace_headers(), envelope
                )
            except OSError as error:  # no room even for the message file
                self._store_failed(error)
                return False
        return True

    # -- BDAT (RFC 3030) ------------------------------------------------------------

    def _bdat(self, args: str) -> None:
        """BDAT: the chunk is read before it is answered, taken or not."""
        parsed = parse_bdat(args)
        if parsed is None:  # no size: nothing to read, answered now
            self._syntax_error("BDAT", "BDAT size [LAST]", "BDAT needs a chunk size", args)
            return
        refusal = self._bdat_refusal()
        if refusal is not None:
            self._chunk_refusal = refusal
            return
        transaction = self.transaction
        assert transaction is not None
        if not transaction.bdat:
            transaction.bdat = True
            if not self._begin_message():
                return  # the store error is the chunk's answer; the chunk is dropped
        self._chunk_taken = True

    def _bdat_not_offered(self, args: str) -> None:
        self._send_key("unknown_command", command="BDAT")

    def _bdat_refusal(self) -> Callable[[], None] | None:
        """How the chunk about to be read is refused, if it is."""
        if not self.core.greeted and self.context.personality.requires_helo:
            return lambda: self._send_key("need_helo")
        if self.transaction is None:
            return lambda: self._send_key("need_mail")
        if not self.transaction.recipients:
            refused = self.transaction.rcpt_attempts > 0
            key = "no_valid_recipients" if refused else "need_rcpt"
            return lambda: self._send_key(key)
        return None

    def _on_end_of_chunk(self, event: EndOfChunk) -> None:
        taken, refusal = self._chunk_taken, self._chunk_refusal
        self._chunk_open, self._chunk_taken, self._chunk_refusal = False, False, None
        if refusal is not None:
            refusal()
            return
        if not taken:
            if self._store_error is not None and self.transaction is not None:
                self._reset_transaction()  # RFC 3030 2: a refused chunk ends the transaction
                self._answer_store_error()
            return  # otherwise answered already (an early talker)
        if self._message_too_big or self._store_error is not None:
            transaction, self.transaction = self.transaction, None
            if event.last and transaction is not None:
                self._on_end_of_message(EndOfMessage(), transaction, verb="BDAT")
                return
            self._abort_delivery()
            if self._message_too_big:
                self._send_key("message_too_big", max_size=str(self.context.settings.max_size))
            else:
                self._answer_store_error()
            return
        if event.last:
            transaction, self.transaction = self.transaction, None
            self._on_end_of_message(EndOfMessage(), transaction, verb="BDAT")
            return
        self._reply(250, f"2.0.0 {event.size} octets received")

    def _trace_headers(self) -> bytes:
        assert self.transaction is not None
        # RFC 3848's names: ESMTP, ESMTPS, ESMTPA, ESMTPSA; LMTP, LMTPS
        protocol = "LMTP" if self.core.lmtp else "ESMTP" if self.core.esmtp else "SMTP"
        if self.core.tls:
            protocol += "S"
        if self.user:
            protocol += "A"
        recipients = self.transaction.recipients
        for_clause = f"\n\tfor <{recipients[0].address}>" if len(recipients) == 1 else ""
        # a Unix-domain socket's client has no address to give
        address = f" ([{self.client_ip}])" if self.client_ip else ""
        received = (
            f"Received: from {self.helo or 'unknown'}{address}\n"
            f"\tby {self.context.hostname} (mailtalk) with {protocol} id {self._queue_id}"
            f"{for_clause};\n\t{_received_date()}\n"
        )
        return (f"Return-Path: <{self.transaction.sender}>\n{self._dsn_headers()}{received}"
                ).encode()

    def _dsn_headers(self) -> str:
        """The RFC 3461 envelope parameters, beside Return-Path, so a test can read them in
        the delivered copy: ENVID and RET of the transaction, NOTIFY and ORCPT of each
        recipient (the same copy goes to every local recipient)."""
        transaction = self.transaction
        assert transaction is not None
        lines = []
        if transaction.envid or transaction.ret:
            params = [f"ENVID={transaction.envid}"] if transaction.envid else []
            params += [f"RET={transaction.ret}"] if transaction.ret else []
            lines.append(f"X-Mailtalk-DSN: {' '.join(params)}\n")
        for recipient in transaction.recipients:
            if recipient.notify or recipient.orcpt:
                params = [f"NOTIFY={recipient.notify}"] if recipient.notify else []
                params += [f"ORCPT={recipient.orcpt}"] if recipient.orcpt else []
                params.insert(0, f"<{recipient.address}>")
                lines.append(f"X-Mailtalk-DSN-Recipient: {' '.join(params)}\n")
        return "".join(lines)

    def _on_message_data(self, event: MessageData) -> None:
        self._message_size += len(event.data)
        if self._head is not None:
            self._head.feed(event.data)
        if event.line_too_long:
            self._message_line_too_long = True
        if self._message_too_big:
            return
        if self._message_size > self.context.settings.max_size:
            self._message_too_big = True
            self._abort_delivery()
            return
        if self._delivery is not None and self._lf is not None:
            try:
                self._delivery.write(self._lf.feed(event.data))
            except OSError as error:
                # The rest of DATA is still read (and dropped): the answer comes after the dot.
                self._store_failed(error)

    def _store_failed(self, error: OSError) -> None:
        """Storing the message failed (the Delivery removed its files): log it, drop the rest."""
        from mailtalk.store import StoreFullError

        kind = "store full" if isinstance(error, StoreFullError) else "store error"
        log.warning("session %s: %s: %s", self.session_id, kind, error)
        self._abort_delivery()
        self._store_error = error

    def _answer_store_error(self) -> None:
        """452 4.3.1 for a full disk or quota, 451 for any other disk error."""
        from mailtalk.store import StoreFullError

        error, self._store_error = self._store_error, None
        if isinstance(error, StoreFullError):
            self._send_key("storage_full")
        else:
            self.internal_error()

    def _on_end_of_message(
        self, event: EndOfMessage, transaction: Transaction | None = None, verb: str = "."
    ) -> None:
        """The message is complete: DATA's final dot, or (``verb`` BDAT) its LAST chunk."""
        if verb == "." and self.journal is not None:
            self._journaled = (".", None, bool(self.core.tls), self.user, "")
        if verb == ".":
            transaction = self.transaction
        self.transaction = None
        if self.faults is not None:
            self.faults.reset_transaction()
        if transaction is None:  # cannot happen: DATA needs a transaction
            self._reply(503, "5.5.1 No transaction")
            return
        if event.bare_newline and self.context.settings.bare_newline == "reject":
            self._abort_delivery()
            self._send_key("bare_newline")
            self._close()
            return
        if self._message_too_big:
            self._send_key("message_too_big", max_size=str(self.context.settings.max_size))
            return
        if self._message_line_too_long:
            self._abort_delivery()
            self._send_key("line_too_long")
            return
        if self._store_error is not None:
            self._answer_store_error()
            return
        # (no fault rules: nothing to ask, not even with the fields _fault makes)
        action = self._fault("data-end") if self.faults is not None else None
        if action is not None and action.kind != "delay":
            self._abort_delivery()
            return
        delay = action.seconds if action is not None else 0.0
        if not delay and self._delivery is None:
            # Nothing to wait for (sink mode): answer now, without pausing the reads.
            try:
                self._delivered(transaction)
            except Exception:
                log.exception("session %s: internal error", self.session_id)
                if not self._closing:
                    self._reply(451, "4.3.0 Internal error; try again later")
            return
        self._defer(self._commit(transaction, delay))

    async def _commit(self, transaction: Transaction, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        delivery, converter = self._delivery, self._lf
        self._delivery, self._lf = None, None
        paths = []
        if delivery is not None and converter is not None:
            try:
                delivery.write(converter.finish())
                # fsync can take a while: off the event loop, and before the 250; in
                # the commit threads, with the deliveries of other sessions ending now.
                from mailtalk.store.commits import commit_in_batch

                paths = await commit_in_batch(delivery)
            except OSError as error:
                self._store_failed(error)
                delivery.abort()
                self._answer_store_error()
                return
            except Exception:
                delivery.abort()
                raise
            if self.journal is not None:
                self._journal_stored(transaction, paths, delivery.size)
            if paths:
                await self._report_delivered(transaction, paths[0])
        self._delivered(transaction)

    async def _report_delivered(
        self, transaction: Transaction, path: Path, delivered: Collection[str] | None = None
    ) -> None:
        """A success DSN ("delivered", RFC 3461 4.1) for the local recipients whose RCPT
        said NOTIFY=SUCCESS; ``path`` is a local copy (Maildirs come first). LMTP
        delivers each mailbox on its own: ``delivered`` names the users who got theirs
        (None: every local user)."""
        if not transaction.sender or not any(r.notify for r in transaction.recipients):
            return  # what nearly every message takes: no NOTIFY, no success DSN
        from mailtalk.servers.dsn_report import ReportRecipient, build_report, send_report, wants

        asked = [r for r in transaction.recipients
                 if r.user and (delivered is None or r.user in delivered)
                 and wants(r.notify, "delivered")]  # fmt: skip
        if not asked or not transaction.sender:
            return
        loop = asyncio.get_running_loop()
        try:
            data = await loop.run_in_executor(None, path.read_bytes)
            recipients = [
                ReportRecipient(r.address, "delivered", "2.0.0",
                                f"delivered to the mailbox of {r.user}", r.orcpt,
                                diagnostic="delivered to maildir", diagnostic_type="X-Mailtalk")
                for r in asked
            ]  # fmt: skip
            report = build_report(
                self.context.hostname, transaction.sender, recipients, data,
                arrival=datetime.now(UTC), queue_id=self._queue_id,
                envid=transaction.envid, ret=transaction.ret,
            )  # fmt: skip
            sent = await loop.run_in_executor(
                None, send_report, self.context, transaction.sender, report
            )
        except OSError as error:  # the message is delivered: a lost DSN is only logged
            log.warning("session %s: success DSN not sent: %s", self.session_id, error)
            return
        if sent is not None and sent.user is not None:
            self.context.notify_delivered({sent.user})
        elif sent is not None:
            self.context.queue_changed()
        if sent is not None:
            log.info("session %s: success DSN for %s %s", self.session_id, self._queue_id,
                     sent.outcome)  # fmt: skip

    def _journal_stored(self, transaction: Transaction, paths: list[Any], size: int) -> None:
        """``message`` events: each local user's Maildir file, then the queued copy."""
        subject = subject_of(self._head.head) if self._head is not None else None
        self._head = None
        users: dict[str, list[str]] = {}
        relayed = []
        for recipient in transaction.recipients:
            if recipient.user is None:
                relayed.append(recipient.address)
            else:
                users.setdefault(recipient.user, []).append(recipient.address)
        common = {"queue_id": self._queue_id, "sender": transaction.sender, "size": size,
                  "subject": subject}
        if transaction.dsn is not None:
            common["dsn"] = transaction.dsn
        if transaction.bdat:
            common["chunking"] = True
        for (user, addresses), path in zip(users.items(), paths, strict=False):
            self.journal_write(
                "message", outcome="delivered", user=user, mailbox="INBOX", file=path.name,
                recipients=addresses, **common,
            )  # fmt: skip
        if relayed and len(paths) > len(users):
            self.journal_write(
                "message", outcome="queued", file=paths[len(users)].name, recipients=relayed,
                **common,
            )  # fmt: skip

    def _delivered(self, transaction: Transaction) -> None:
        if self._log_info:
            log.info(
                "session %s: delivered %s (%d bytes) from <%s> to %s",
                self.session_id,
                self._queue_id,
                self._message_size,
                transaction.sender,
                ", ".join(f"<{r.address}>" for r in transaction.recipients),
            )
        self.context.message_delivered(self._message_size)
        if self.errors.errors:  # "errors without delivering mail", as Postfix counts them
            self.errors.forgive()
        if not self.context.settings.sink:
            self.context.notify_delivered({r.user for r in transaction.recipients if r.user})
            if any(r.user is None for r in transaction.recipients):
                self.context.queue_changed()
        self._send_queued(self._queue_id)

    def _send_queued(self, queue_id: str) -> None:
        """The personality's ``data_ok`` for ``queue_id``, as ``_send_key`` would send it."""
        context = self.context
        key = (context.personality, context.control)
        halves = _QUEUED_HALVES[key] if key in _QUEUED_HALVES else self._queued_halves(key)
        if halves is None or not queue_id.isprintable():
            self._send_key("data_ok", queue_id=queue_id)
            return
        code, head, tail = halves
        text = head + queue_id + tail
        # (format_reply of one line, with no enhanced code given)
        raw = f"{code} {text}".rstrip().encode() + b"\r\n"
        self._send(new_record(Reply, (code, (text,), None, raw, None, False, False)))

    def _queued_halves(self, key: tuple[Any, Any]) -> tuple[int, str, str] | None:
        context = self.context
        halves = None
        if "date" not in context.personality.template("data_ok").placeholders:
            code, text = context.reply("data_ok", queue_id=_QUEUE_ID_MARK)
            head, mark, tail = text.partition(_QUEUE_ID_MARK)
            if mark and _QUEUE_ID_MARK not in tail and "\n" not in text and "\r" not in text:
                halves = (code, head, tail)
        if len(_QUEUED_HALVES) >= 64:  # personalities and control files made over time
            _QUEUED_HALVES.clear()
        _QUEUED_HALVES[key] = halves
        return halves
