"""The reference SMTP server: one asyncio Protocol per connection around the SMTP core.

The core (``mailtalk.protocols.smtp`` in the server role) parses commands and the
DATA stream and formats replies; this module decides what to answer. Policy
lives elsewhere: relay rules and users in ``policy``/``users``, wordings in the
personality, injected faults in ``faults``, delivery in ``mailtalk.store``.

Most commands are answered at once, in the same call that parsed them, which
keeps pipelined sessions fast. What must wait (a delay fault, a DNS lookup, a
password check, fsync before 250, the TLS handshake) pauses reading and
resumes the loop when done, so replies always leave in order.

With a greet pause (``ServerSettings.greet_pause``, Sendmail's FEATURE(greet_pause))
the greeting is held back for that many seconds. A client that sends anything in that
time is an early talker (a spam program that does not wait, or someone typing too fast
in telnet): at its first byte it gets the personality's ``early_talker_greeting``
instead of the banner (Sendmail: ``554 <host> ESMTP not accepting messages``), and
every command after that ``early_talker_rejected``, QUIT excepted (and what the
personality still allows); Exim and postscreen hang up instead. The journal's connect
event has that code, and each refused command its own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mailtalk.protocols.common import CONNECTION_CLOSED, NEED_DATA, Role, is_number
from mailtalk.protocols.dsn import parse_envid, parse_notify, parse_orcpt, parse_ret
from mailtalk.protocols.smtp import (
    AUTH_RESPONSE,
    Command,
    EndOfChunk,
    EndOfMessage,
    MessageData,
    Reply,
    SMTPConnection,
    SMTPState,
    parse_bdat,
)
from mailtalk.servers.guard import SessionErrors, Verdict
from mailtalk.servers.journal import REDACTED, HeadCollector, subject_of
from mailtalk.servers.sasl import extra_mechanisms, server_mechanism
from mailtalk.servers.session import ServerSession
from mailtalk.servers.transaction import Recipient, Transaction

if TYPE_CHECKING:
    from mailtalk.protocols import sasl_server
    from mailtalk.servers.context import RcptOutcome, ServerContext
    from mailtalk.servers.faults import FaultAction
    from mailtalk.store import CRLFToLF

log = logging.getLogger("mailtalk.smtp")

# "FROM:<addr> PARAMS" and "TO:<addr> PARAMS"; RFC 5321 4.1.1.2/4.1.1.3. A space
# after the colon is tolerated, as every real MTA does.
_PATH = re.compile(r"^(FROM|TO):\s*<([^<>]*)>\s*(.*)$", re.IGNORECASE)
# local@domain; the domain may be UTF-8 (SMTPUTF8, RFC 6531) or an address literal.
_ATOMS = r"[^\s@<>()\[\],;:\\\"]+"
_ADDRESS = re.compile(
    rf"^{_ATOMS}(?:\.{_ATOMS})*@(?:{_ATOMS}|\[[0-9A-Fa-f.:IPv]+\])$"
)

_ENHANCED: Final = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?=\s|$)")

LOGIN_USERNAME: Final = "VXNlcm5hbWU6"  # base64 "Username:"
LOGIN_PASSWORD: Final = "UGFzc3dvcmQ6"  # base64 "Password:"


# The longest greet pause: RFC 5321 4.5.3.2 gives a client 5 minutes for the greeting
# (Sendmail caps greet_pause there too).
MAX_GREET_PAUSE: Final = 300.0

# Extensions the server implements, so a personality cannot advertise one it lacks
# (a client offered CHUNKING would send BDAT, which this server does not speak).
IMPLEMENTED_EXTENSIONS: Final = frozenset(
    {"SIZE", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "STARTTLS", "AUTH", "SMTPUTF8",
     "HELP", "VRFY", "DSN", "CHUNKING"}
)

# RFC 6531 3.7.4.1 gives 553 5.6.7 for a UTF-8 address without SMTPUTF8; Postfix's words.
UTF8_UNDECLARED: Final = "5.6.7 Must declare SMTPUTF8 to send unicode address"


class SMTPServerProtocol(ServerSession):
    """One SMTP connection. ``kind`` is the listener: smtp, submission or smtps."""

    fault_protocol = "smtp"
    # The handler of each verb (COMMANDS below); the LMTP session has its own table.
    command_table: ClassVar[Mapping[str, Callable[[SMTPServerProtocol, str], None]]]

    def __init__(self, context: ServerContext, kind: str) -> None:
        super().__init__(context, kind)
        offered = {line.split()[0].upper() for line in context.personality.extensions}
        self.core = SMTPConnection(
            role=Role.SERVER, tls=kind == "smtps", chunking="CHUNKING" in offered
        )
        self.helo = ""
        self.user: str | None = None
        self.transaction: Transaction | None = None
        self._delivery: Any = None  # mailtalk.store Delivery, or None in sink mode
        self._message_size = 0
        self._message_too_big = False
        self._message_line_too_long = False
        self._store_error: OSError | None = None  # writing the message failed (disk full)
        self._queue_id = ""
        self._lf: CRLFToLF | None = None  # CRLF -> LF converter for the Maildir copy
        self._auth: tuple[str, list[str]] | None = None  # mechanism, answers so far
        self._exchange: sasl_server.ServerMechanism | None = None  # CRAM-MD5, SCRAM, the tokens
        # With a journal: the command waiting for its reply (verb, args, tls, user, and
        # a text to hide in the reply), and the head of the message being received.
        self._journaled: tuple[str | None, str | None, bool, str | None, str] | None = None
        self._head: HeadCollector | None = None
        # A BDAT chunk is being read (RFC 3030): its octets come before its reply. The
        # reply waits in _chunk_refusal when the chunk is refused (it is read all the
        # same); _chunk_taken says its octets belong to the message.
        self._chunk_open = False
        self._chunk_taken = False
        self._chunk_refusal: Callable[[], None] | None = None
        # A greet pause: the timer holding the greeting back; and whether the client
        # talked before the greeting (then its commands are refused, see _early_talk).
        self._held: asyncio.TimerHandle | None = None
        self.early_talker = False
        # 4xx and 5xx replies since the last delivered message, and failed logins: at
        # the limit the next command gets 421 (Postfix's smtpd_hard_error_limit).
        self.errors = SessionErrors(context.settings.error_limit)

    # -- connection -----------------------------------------------------------

    def refuse(self) -> None:
        self._send_key("too_many_connections", client=self.client_ip)

    def greet(self) -> None:
        log.info("session %s: connect from %s on %s", self.session_id, self.client_ip, self.kind)
        action = self._fault("connect")
        if action is not None and action.kind == "delay":
            self._defer(self._later(action.seconds, self._banner))
            return
        if action is not None:
            return
        self._banner()

    def _banner(self) -> None:
        """The greeting: now, or after the greet pause (not on smtps, where TLS comes
        first: Sendmail pauses only before a plain-text greeting)."""
        pause = min(self.context.settings.greet_pause, MAX_GREET_PAUSE)
        if pause > 0 and self.kind != "smtps":
            self._held = asyncio.get_running_loop().call_later(pause, self._pause_over)
            return
        self._send_key("banner")
        self.process()

    def _pause_over(self) -> None:
        """The client waited out the greet pause: the usual greeting, then its commands."""
        self._held = None
        if not self._closing:
            self._send_key("banner")
            self.process()

    def data_received(self, data: bytes) -> None:
        if self._held is not None and data:
            self._early_talk()
        super().data_received(data)

    def _early_talk(self) -> None:
        """Bytes came while the greeting was held back: the early talker's greeting now
        (as Sendmail's select() ends the pause at the first byte); its commands follow."""
        assert self._held is not None
        self._held.cancel()
        self._held = None
        self.early_talker = True
        log.info("session %s: %s talked before the greeting", self.session_id, self.client_ip)
        self._send_key("early_talker_greeting", client=self.client_ip)
        if self.context.personality.early_talker_closes:
            self._close()

    def _early_talker_answers(self) -> frozenset[str]:
        """What an early talker still gets answered: QUIT, and what the personality allows."""
        return self.context.personality.early_talker_allows | {"QUIT"}

    def cleanup(self) -> None:
        if self._held is not None:
            self._held.cancel()
            self._held = None
        self._abort_delivery()

    def on_idle(self) -> None:
        self._send_key("timeout", client=self.client_ip)

    def internal_error(self) -> None:
        self._reply(451, "4.3.0 Internal error; try again later")

    # -- the loop ---------------------------------------------------------------

    def process(self) -> None:
        if self._held is not None:  # the greeting is not out yet: nothing is answered
            return
        while not self._busy and not self._closing:
            event = self.core.next_command()
            if event is NEED_DATA:
                return
            if event is CONNECTION_CLOSED:
                self._abort_delivery()
                self._close("dropped")
                return
            if isinstance(event, MessageData):
                if not self._chunk_open or self._chunk_taken:
                    self._on_message_data(event)
            elif isinstance(event, EndOfChunk):
                self._on_end_of_chunk(event)
            elif isinstance(event, EndOfMessage):
                self._on_end_of_message(event)
            elif isinstance(event, Command):
                self._on_command(event)

    def _reply(self, code: int, *lines: str) -> None:
        if self._closing or self.transport is None:
            return
        data = self.core.send(Reply(code, lines or ("",)))
        self.transport.write(data)
        if code >= 400:
            self.errors.error()
        if self.journal is not None:
            self._journal_reply(code, lines)
        if code == 421 or (code == 221 and self.core.state is SMTPState.CLOSED):
            self._close()

    def _journal_reply(self, code: int, lines: tuple[str, ...]) -> None:
        """The reply in the journal: the greeting, or the final reply to a command."""
        text = " ".join(lines)
        if not self._journal_connected:
            self.journal_connect(code, text)
            return
        pending = self._journaled
        if pending is None or code == 334:  # 334: AUTH goes on; its end is its reply
            return
        self._journaled = None
        verb, args, tls, user, hide = pending
        if hide:
            text = text.replace(hide, REDACTED)
        enhanced = _ENHANCED.match(lines[0]) if lines else None
        self.journal_command(
            verb, args, code, text, tls=tls, user=user,
            enhanced=enhanced.group(0) if enhanced else None,
        )  # fmt: skip

    def _journal_pending(self, command: Command) -> None:
        """Remember the command for the journal, its secrets out."""
        verb: str | None = command.verb
        args: str | None = command.args
        hide = ""
        served = verb in self.command_table and (verb != "BDAT" or self.core.chunking)
        if command.too_long or not served:
            # Not a command: maybe a password typed at the wrong moment, or an AUTH
            # answer sent after AUTH was refused. Neither it nor its echo is kept.
            hide = (verb or "")[:20]
            verb, args = None, REDACTED
        elif verb == "AUTH":
            mechanism, _, initial = command.args.strip().partition(" ")
            args = f"{mechanism} {REDACTED}" if initial.strip() else mechanism
        self._journaled = (verb, args, bool(self.core.tls), self.user, hide)

    def close_fields(self) -> dict[str, Any]:
        return {"user": self.user}

    def _send_key(self, key: str, **values: str) -> None:
        code, text = self.context.reply(key, **values)
        self._reply(code, text)

    def _syntax_error(self, command: str, syntax: str, detail: str, argument: str) -> None:
        self._send_key(
            "syntax_error", command=command, syntax=syntax, detail=detail, argument=argument
        )

    def _fault(self, command: str, **fields: str) -> FaultAction | None:
        """Apply an injected fault for this command, if one fires; returns it (or None).

        A delay is for the caller: answer normally, later.
        """
        action = self._fault_action(
            command,
            helo=self.helo,
            auth="yes" if self.user else "no",
            user=self.user or "",
            **fields,
        )
        if action is None or action.kind == "delay":
            return action
        if action.kind == "disconnect":
            log.info("session %s: fault: disconnect at %s", self.session_id, command)
            self._abort_delivery()
            return action
        # Rules are checked for the protocol when parsed: an smtp rule has a code.
        self._reply(action.code or 451, action.text)
        return action

    # -- commands ---------------------------------------------------------------

    def _on_command(self, command: Command) -> None:
        if self.errors.exceeded:
            # Postfix checks before it reads the next command; so does this.
            log.info("session %s: too many errors from %s", self.session_id, self.client_ip)
            if self.journal is not None and command.verb != AUTH_RESPONSE:
                self._journal_pending(command)  # the 421 is this command's reply
            self._send_key("too_many_errors", client=self.client_ip)
            self._close()
            return
        if command.verb == AUTH_RESPONSE:
            self._on_auth_response(command.args)
            return
        if command.verb == "BDAT" and self.core.chunking and parse_bdat(command.args) is not None:
            # The core reads the chunk whatever is answered: nothing of it is taken
            # unless _bdat says so.
            self._chunk_open, self._chunk_taken, self._chunk_refusal = True, False, None
        if self.journal is not None:
            self._journal_pending(command)
        if self.early_talker and command.verb not in self._early_talker_answers():
            self._send_key("early_talker_rejected", command=command.verb[:20])
            return
        if command.too_long:
            self._send_key("line_too_long")
            return
        verb = command.verb
        if verb == "BDAT" and self.core.chunking:
            self._bdat(command.args)  # answered after its chunk, faults or not
            return
        handler = self.command_table.get(verb)
        if handler is None:
            self._send_key("unknown_command", command=verb[:20])
            return
        if self.faults is None:
            handler(self, command.args)
            return
        fields = self._fault_fields(verb, command.args)
        action = self._fault(verb.lower(), **fields)
        if action is not None:
            if action.kind == "delay":
                self._defer(self._later(action.seconds, lambda: handler(self, command.args)))
            return
        handler(self, command.args)

    def _fault_fields(self, verb: str, args: str) -> dict[str, str]:
        match = _PATH.match(args)
        if verb == "MAIL" and match:
            return {"from": match.group(2)}
        if verb == "RCPT" and match:
            return {"to": match.group(2)}
        return {}

    def _ehlo(self, args: str) -> None:
        name = args.strip()
        if not name:
            self._syntax_error("EHLO", "EHLO hostname", "EHLO needs a host name", args)
            return
        self.helo = name
        self._reset_transaction()
        code, first = self.context.reply("ehlo_greeting", helo=name, client=self.client_ip)
        self._reply(code, first, *self._extensions())

    def _helo(self, args: str) -> None:
        name = args.strip()
        if not name:
            self._syntax_error("HELO", "HELO hostname", "HELO needs a host name", args)
            return
        self.helo = name
        self._reset_transaction()
        self._send_key("helo", helo=name, client=self.client_ip)

    def _extensions(self) -> list[str]:
        """The EHLO keywords, in the personality's order, limited to what is available now."""
        settings = self.context.settings
        advertised = {line.split()[0].upper(): line for line in self.context.personality.extensions}
        if self.early_talker:  # Sendmail, to a session it refused: no service to offer
            return [key for key in advertised if key == "ENHANCEDSTATUSCODES"]
        # The personality's list is the truth: qmail, say, offers no ENHANCEDSTATUSCODES
        # because its replies carry none.
        order = list(advertised)
        lines = []
        for keyword in order:
            if keyword not in IMPLEMENTED_EXTENSIONS:
                continue
            if keyword == "SIZE":
                lines.append(f"SIZE {settings.max_size}")
            elif keyword == "STARTTLS":
                if self.context.ssl_context is not None and not self.core.tls:
                    lines.append("STARTTLS")
            elif keyword == "AUTH":
                if self._auth_allowed() and not self.user:
                    mechanisms = advertised.get("AUTH", "AUTH PLAIN LOGIN").split()[1:]
                    mechanisms = (mechanisms or ["PLAIN", "LOGIN"]) + extra_mechanisms(
                        self.context
                    )
                    lines.append("AUTH " + " ".join(mechanisms))
            else:
                lines.append(keyword)
        return lines

    def _auth_allowed(self) -> bool:
        """AUTH only over TLS, or from loopback (where nobody can listen in) unless
        --tls-auth-only says TLS always."""
        if self.context.settings.tls_auth_only:
            return bool(self.core.tls)
        return bool(self.core.tls) or self.is_loopback()

    def _mail(self, args: str) -> None:
        if not self.core.greeted and self.context.personality.requires_helo:
            self._send_key("need_helo")
            return
        if self.transaction is not None:
            code, text = self.context.reply("nested_mail")
            if code >= 400:
                self._reply(code, text)
                return
            self._reset_transaction()  # qmail: a second MAIL starts over

        match = _PATH.match(args)
        if match is None or match.group(1).upper() != "FROM":
            self._syntax_error("MAIL", "MAIL FROM:<address>", "use MAIL FROM:<address>", args)
            return
        sender = match.group(2)
        if sender and not _ADDRESS.match(sender):
            self._send_key("bad_sender_syntax", sender=sender)
            return
        transaction = Transaction(sender)
        for param in match.group(3).split():
            key, _, value = param.partition("=")
            key = key.upper()
            if key == "SIZE":
                if not is_number(value, max_digits=20):
                    self._syntax_error(
                        "MAIL", "MAIL FROM:<address> SIZE=n", "SIZE needs a number", args
                    )
                    return
                if int(value) > self.context.settings.max_size:
                    self._send_key("size_exceeded", max_size=str(self.context.settings.max_size))
                    return
            elif key == "BODY" and value.upper() in ("7BIT", "8BITMIME"):
                transaction.body_8bit = value.upper() == "8BITMIME"
            elif key == "SMTPUTF8" and not value and self._offers("SMTPUTF8"):
                transaction.smtputf8 = True
            elif key in ("RET", "ENVID") and self._offers("DSN"):
                if getattr(transaction, key.lower()) is not None:
                    self._syntax_error("MAIL", "MAIL FROM:<address>", f"{key} given twice", args)
                    return
                try:
                    if key == "RET":
                        transaction.ret = parse_ret(value)
                    else:
                        transaction.envid = parse_envid(value)
                except ValueError as error:
                    self._syntax_error("MAIL", f"MAIL FROM:<address> {key}=...", str(error), args)
                    return
            else:
                code, text = self.context.reply("unknown_parameter", parameter=param)
                if code >= 400:
                    self._reply(code, text)
                    return
                # A 2xx here is an MTA that ignores what it does not know (qmail).
        if not sender.isascii() and not transaction.smtputf8:
            self._reply(553, UTF8_UNDECLARED)
            return
        if self.context.check_sender_domain and sender:
            self._defer(self._check_sender_then_accept(transaction))
            return
        self._accept_sender(transaction)

    async def _check_sender_then_accept(self, transaction: Transaction) -> None:
        domain = transaction.sender.rpartition("@")[2]
        verdict = await self.context.sender_domain_verdict(domain)
        if self._closing:
            return
        if verdict == "ok":
            self._accept_sender(transaction)
        elif verdict == "tempfail":
            self._send_key("sender_domain_tempfail", sender=transaction.sender)
        else:
            self._send_key("sender_domain", sender=transaction.sender)

    def _accept_sender(self, transaction: Transaction) -> None:
        self.transaction = transaction
        log.info("session %s: MAIL FROM:<%s>", self.session_id, transaction.sender)
        self._send_key("mail_ok", sender=transaction.sender)

    def _rcpt(self, args: str) -> None:
        if self.transaction is None:
            self._send_key("need_mail")
            return
        match = _PATH.match(args)
        if match is None or match.group(1).upper() != "TO" or not match.group(2):
            self._syntax_error("RCPT", "RCPT TO:<address>", "use RCPT TO:<address>", args)
            return
        address = match.group(2)
        self.transaction.rcpt_attempts += 1
        # RFC 5321 4.1.1.3: "<Postmaster>" is the one recipient without a domain.
        if not _ADDRESS.match(address) and address.lower() != "postmaster":
            self._send_key("bad_recipient_syntax", rcpt=address)
            return
        if not address.isascii() and not self.transaction.smtputf8:
            self._reply(553, UTF8_UNDECLARED)
            return
        dsn: dict[str, str] = {}
        for param in match.group(3).split():
            key, _, value = param.partition("=")
            key = key.upper()
            if key in ("NOTIFY", "ORCPT") and self._offers("DSN"):
                if key in dsn:
                    self._syntax_error("RCPT", "RCPT TO:<address>", f"{key} given twice", args)
                    return
                try:
                    if key == "NOTIFY":
                        dsn[key] = parse_notify(value)
                    else:
                        dsn[key] = parse_orcpt(value, self.transaction.smtputf8)
                except ValueError as error:
                    self._syntax_error("RCPT", f"RCPT TO:<address> {key}=...", str(error), args)
                    return
                continue
            # RFC 5321 4.1.1.11: a parameter not supported gets 555.
            code, text = self.context.reply("unknown_parameter", parameter=param)
            if code >= 400:
                self._reply(code, text)
                return
        if len(self.transaction.recipients) >= self.context.settings.max_recipients:
            self._send_key("too_many_recipients")
            return
        decision = self.context.decide_rcpt(address, self.client_ip, self.user)
        refusal = self._rcpt_refusal(decision)
        if refusal is None:
            self.transaction.recipients.append(
                Recipient(address, decision.user, dsn.get("NOTIFY"), dsn.get("ORCPT"))
            )
            self._send_key("rcpt_ok", rcpt=address)
        else:
            log.info("session %s: RCPT TO:<%s> refused: %s", self.session_id, address, refusal)
            self._send_key(refusal, rcpt=address)

    def _rcpt_refusal(self, decision: RcptOutcome) -> str | None:
        """The reply key refusing a recipient, or None to accept it (locally or to relay)."""
        return None if decision.accepted else decision.reply_key

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
            from mailtalk.store import Envelope

            envelope = Envelope(
                self.transaction.sender, (), self.client_ip, self.helo, queue_id=self._queue_id,
                ret=self.transaction.ret, envid=self.transaction.envid,
            )
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

    def _offers(self, keyword: str) -> bool:
        """Whether EHLO offers ``keyword`` on this session now."""
        return any(line.split()[0] == keyword for line in self._extensions())

    def _trace_headers(self) -> bytes:
        from email.utils import formatdate  # not needed before the first message

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
            f"{for_clause};\n\t{formatdate(localtime=True)}\n"
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
        action = self._fault("data-end")
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
                # fsync can take a while: off the event loop, and before the 250;
                # in a pool of its own, so every session's fsyncs overlap.
                from mailtalk.store.maildir import commit_executor

                loop = asyncio.get_running_loop()
                paths = await loop.run_in_executor(commit_executor(), delivery.commit)
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
        if log.isEnabledFor(logging.INFO):
            log.info(
                "session %s: delivered %s (%d bytes) from <%s> to %s",
                self.session_id,
                self._queue_id,
                self._message_size,
                transaction.sender,
                ", ".join(f"<{r.address}>" for r in transaction.recipients),
            )
        self.context.message_delivered(self._message_size)
        self.errors.forgive()  # "errors without delivering mail", as Postfix counts them
        if not self.context.settings.sink:
            self.context.notify_delivered({r.user for r in transaction.recipients if r.user})
            if any(r.user is None for r in transaction.recipients):
                self.context.queue_changed()
        self._send_key("data_ok", queue_id=self._queue_id)

    def _abort_delivery(self) -> None:
        if self._delivery is not None:
            self._delivery.abort()
        self._delivery, self._lf = None, None

    def _reset_transaction(self) -> None:
        self._abort_delivery()
        self.transaction = None
        if self.faults is not None:
            self.faults.reset_transaction()

    def _rset(self, args: str) -> None:
        self._reset_transaction()
        self._send_key("rset")

    def _noop(self, args: str) -> None:
        self._send_key("noop")

    def _quit(self, args: str) -> None:
        if args.strip():
            self._syntax_error("QUIT", "QUIT", "QUIT takes no arguments", args)
            return
        self._reset_transaction()
        self.close_reason = self.close_reason or "quit"
        self._send_key("quit")
        self._close("quit")

    def _vrfy(self, args: str) -> None:
        if not args.strip():
            self._syntax_error("VRFY", "VRFY address", "VRFY needs an argument", args)
            return
        self._send_key("vrfy", argument=args.strip())

    def _help(self, args: str) -> None:
        self._send_key("help")

    def _expn(self, args: str) -> None:
        self._send_key("expn_disabled")

    # -- STARTTLS -----------------------------------------------------------------

    def _starttls(self, args: str) -> None:
        if args.strip():
            self._syntax_error("STARTTLS", "STARTTLS", "STARTTLS takes no arguments", args)
            return
        if self.context.ssl_context is None:
            self._send_key("tls_not_available")
            return
        if self.core.tls:
            self._reply(503, "5.5.1 TLS already active")
            return
        self._send_key("tls_ready")
        self._defer(self._handshake())

    async def _handshake(self) -> None:
        if await self._start_tls():
            log.info("session %s: TLS started", self.session_id)

    def tls_begun(self) -> None:
        # RFC 3207 4.2: forget everything learnt before TLS.
        self.helo = ""
        self.user = None
        self._reset_transaction()

    # -- AUTH ---------------------------------------------------------------------

    def _auth_command(self, args: str) -> None:
        if not self.core.greeted and self.context.personality.requires_helo:
            # AUTH is an ESMTP command: a client that has not said HELO or EHLO (again
            # after STARTTLS, RFC 3207 4.2) has not been offered it. Postfix with
            # smtpd_helo_required answers this way; HELO is enough, as for Postfix.
            self._send_key("auth_before_helo")
            return
        if not self._auth_allowed():
            self._send_key("auth_needs_tls")
            return
        if self.user:
            self._reply(503, "5.5.1 Already authenticated")
            return
        if self.transaction is not None:
            self._reply(503, "5.5.1 AUTH not allowed during a mail transaction")
            return
        mechanism, _, initial = args.strip().partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            from mailtalk.protocols import sasl  # CRAM-MD5, SCRAM, tokens: loaded when used

            exchange = server_mechanism(mechanism, self.context)
            if exchange is None:
                self._reply(504, "5.5.4 Unrecognized authentication type")
                return
            self._exchange = exchange
            initial = initial.strip()
            try:
                data = sasl.decode(initial) if initial else None
            except sasl.SASLError:
                self._exchange = None
                self._reply(501, "5.5.2 Cannot decode the base64 answer")
                return
            self._sasl_step(exchange.start(data))
            return
        self._auth = (mechanism, [])
        initial = initial.strip()
        if mechanism == "PLAIN":
            if initial and initial != "=":
                self._auth_answer(initial)
            else:
                self._reply(334, "")
        elif initial:
            self._auth_answer(initial)
        else:
            self._reply(334, LOGIN_USERNAME)

    def _on_auth_response(self, line: str) -> None:
        if self._exchange is not None:
            self._exchange_answer(line)
            return
        if self._auth is None:
            self._send_key("unknown_command", command="")
            return
        if line.strip() == "*":
            self._auth = None
            self._reply(501, "5.7.0 Authentication cancelled")
            return
        self._auth_answer(line.strip())

    def _auth_answer(self, encoded: str) -> None:
        assert self._auth is not None
        mechanism, answers = self._auth
        try:
            decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            self._auth = None
            self._reply(501, "5.5.2 Cannot decode the base64 answer")
            return
        answers.append(decoded)
        if mechanism == "LOGIN" and len(answers) == 1:
            self._reply(334, LOGIN_PASSWORD)
            return
        self._auth = None
        if mechanism == "PLAIN":
            parts = decoded.split("\0")
            if len(parts) != 3:
                self._reply(501, "5.5.2 Malformed PLAIN answer")
                return
            _, name, secret = parts
        else:
            name, secret = answers
        self._defer(self._verify(name, secret, mechanism))

    def _exchange_answer(self, line: str) -> None:
        """An answer in a CRAM-MD5, SCRAM or token exchange (servers.sasl)."""
        from mailtalk.protocols import sasl

        exchange = self._exchange
        assert exchange is not None
        if line.strip() == "*":
            self._exchange = None
            self._reply(501, "5.7.0 Authentication cancelled")
            return
        try:
            data = sasl.decode(line)
        except sasl.SASLError:
            self._exchange = None
            self._reply(501, "5.5.2 Cannot decode the base64 answer")
            return
        self._sasl_step(exchange.respond(data))

    def _sasl_step(self, step: sasl_server.ServerStep) -> None:
        from mailtalk.protocols import sasl, sasl_server

        exchange = self._exchange
        assert exchange is not None
        if isinstance(step, sasl_server.Challenge):
            self._reply(334, sasl.encode(step.data))
        elif isinstance(step, sasl_server.Check):
            self._defer(self._sasl_check(step))
        else:
            self._exchange = None
            if step.malformed:
                self._reply(501, f"5.5.2 {step.malformed}")
            else:
                self._decided(Verdict.OK if step.ok else Verdict.FAILED, step.user, exchange.name)

    async def _sasl_check(self, check: sasl_server.Check) -> None:
        """The secret checked as a password is: paced and budgeted by the guard."""
        exchange = self._exchange
        assert exchange is not None
        verdict = await self.context.guard.check(self.client_ip, check.verify)
        if self._closing:
            return
        if verdict is Verdict.REFUSED:
            self._exchange = None
            self._decided(verdict, check.user, exchange.name)
            return
        # A refused token is told as a challenge first; SCRAM's proof goes as one too.
        self._sasl_step(exchange.checked(verdict is Verdict.OK))

    async def _verify(self, name: str, secret: str, mechanism: str) -> None:
        context = self.context
        verdict = await context.guard.check_password(context.users, name, secret, self.client_ip)
        if self._closing:
            return
        self._decided(verdict, name, mechanism)

    def _decided(self, verdict: Verdict, name: str, mechanism: str) -> None:
        """A login's verdict, journaled and answered."""
        if self.journal is not None:
            self.journal_write("auth", user=name, mechanism=mechanism, ok=verdict is Verdict.OK)
        if verdict is Verdict.OK:
            self.user = name
            log.info("session %s: authenticated as %s", self.session_id, name)
            self._send_key("auth_ok")
        elif verdict is Verdict.REFUSED:
            log.info("session %s: login refused: too many failures from %s", self.session_id,
                     self.client_ip)
            self._send_key("too_many_auth_failures", client=self.client_ip)
        else:
            log.info("session %s: authentication failed for %s", self.session_id, name)
            self.errors.auth_failed()
            self._send_key("auth_failed")


# Every command this server answers, in any state: each handler answers a command out
# of sequence itself, in the personality's words (qmail takes MAIL before HELO, where
# Postfix says 503), so the SMTP core's VALID_COMMANDS table is not consulted here.
# tests/servers/test_state_tables.py holds the two side by side, differences listed.
COMMANDS: Final[dict[str, Callable[[SMTPServerProtocol, str], None]]] = {
    "EHLO": SMTPServerProtocol._ehlo,
    "HELO": SMTPServerProtocol._helo,
    "MAIL": SMTPServerProtocol._mail,
    "RCPT": SMTPServerProtocol._rcpt,
    "DATA": SMTPServerProtocol._data,
    # With CHUNKING offered BDAT never gets here (see _on_command): its reply waits for
    # its chunk. Without it, it is answered as an unknown command.
    "BDAT": SMTPServerProtocol._bdat_not_offered,
    "RSET": SMTPServerProtocol._rset,
    "NOOP": SMTPServerProtocol._noop,
    "QUIT": SMTPServerProtocol._quit,
    "VRFY": SMTPServerProtocol._vrfy,
    "EXPN": SMTPServerProtocol._expn,
    "HELP": SMTPServerProtocol._help,
    "STARTTLS": SMTPServerProtocol._starttls,
    "AUTH": SMTPServerProtocol._auth_command,
}
SMTPServerProtocol.command_table = COMMANDS
