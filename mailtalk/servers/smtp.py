"""The reference SMTP server's session: the envelope commands (EHLO, MAIL, RCPT, RSET,
STARTTLS, ...) and the table of every command it answers.

The session is layered: ``smtp_session`` is the connection (greeting, the read loop,
replies, journal, faults), ``smtp_message`` the message's intake and delivery,
``smtp_auth`` AUTH; :class:`SMTPServerProtocol` is all of them.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from mailtalk.protocols.common import is_number
from mailtalk.protocols.dsn import parse_envid, parse_notify, parse_orcpt, parse_ret
from mailtalk.servers.sasl import extra_mechanisms
from mailtalk.servers.smtp_auth import SMTPAuthSession
from mailtalk.servers.smtp_message import SMTPMessageSession
from mailtalk.servers.smtp_session import PATH_ARGUMENT
from mailtalk.servers.transaction import Recipient, Transaction

if TYPE_CHECKING:
    from mailtalk.servers.context import RcptOutcome

log = logging.getLogger("mailtalk.smtp")

# local@domain; the domain may be UTF-8 (SMTPUTF8, RFC 6531) or an address literal.
_ATOMS = r"[^\s@<>()\[\],;:\\\"]+"
_ADDRESS = re.compile(
    rf"^{_ATOMS}(?:\.{_ATOMS})*@(?:{_ATOMS}|\[[0-9A-Fa-f.:IPv]+\])$"
)


# Extensions the server implements, so a personality cannot advertise one it lacks
# (a client offered CHUNKING would send BDAT, which this server does not speak).
IMPLEMENTED_EXTENSIONS: Final = frozenset(
    {"SIZE", "8BITMIME", "PIPELINING", "ENHANCEDSTATUSCODES", "STARTTLS", "AUTH", "SMTPUTF8",
     "HELP", "VRFY", "DSN", "CHUNKING"}
)

# RFC 6531 3.7.4.1 gives 553 5.6.7 for a UTF-8 address without SMTPUTF8; Postfix's words.
UTF8_UNDECLARED: Final = "5.6.7 Must declare SMTPUTF8 to send unicode address"


class SMTPServerProtocol(SMTPMessageSession, SMTPAuthSession):
    """One SMTP connection. ``kind`` is the listener: smtp, submission or smtps."""

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

        match = PATH_ARGUMENT.match(args)
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
        if self.context.settings.check_sender_domain and sender:
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
        if self._log_info:
            log.info("session %s: MAIL FROM:<%s>", self.session_id, transaction.sender)
        self._send_key("mail_ok", sender=transaction.sender)

    def _rcpt(self, args: str) -> None:
        if self.transaction is None:
            self._send_key("need_mail")
            return
        match = PATH_ARGUMENT.match(args)
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

    def _offers(self, keyword: str) -> bool:
        """Whether EHLO offers ``keyword`` on this session now."""
        return any(line.split()[0] == keyword for line in self._extensions())

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
        if not self._closing:  # the 221 closes (see _reply) unless a personality's is not
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
