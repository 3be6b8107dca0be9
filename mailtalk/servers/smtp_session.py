"""One SMTP connection: its greeting, the loop reading commands, replies, the journal
and injected faults; what each command does is in the modules above it.

The core in the server role (``mailtalk.protocols.smtp_server_role``) parses commands
and the DATA stream and formats replies; the session decides what to answer. Policy
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
import logging
import re
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mailtalk.protocols.common import CONNECTION_CLOSED, NEED_DATA, Role
from mailtalk.protocols.smtp import AUTH_RESPONSE, Reply, SMTPState, parse_bdat
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.protocols.smtp_server_role import (
    Command,
    EndOfChunk,
    EndOfMessage,
    MessageData,
    format_reply,
)
from mailtalk.servers.guard import SessionErrors
from mailtalk.servers.journal import REDACTED
from mailtalk.servers.session import ServerSession

if TYPE_CHECKING:
    from mailtalk.servers.context import ServerContext
    from mailtalk.servers.faults import FaultAction
    from mailtalk.servers.transaction import Transaction
    from mailtalk.store import CRLFToLF

log = logging.getLogger("mailtalk.smtp")

# "FROM:<addr> PARAMS" and "TO:<addr> PARAMS"; RFC 5321 4.1.1.2/4.1.1.3. A space
# after the colon is tolerated, as every real MTA does.
PATH_ARGUMENT: Final = re.compile(r"^(FROM|TO):\s*<([^<>]*)>\s*(.*)$", re.IGNORECASE)

_ENHANCED: Final = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}(?=\s|$)")

# Enum members as module names (a read through the class is a Python-level hook on
# 3.11: see the SMTP core's _DATA).
_SERVER: Final = Role.SERVER
_CLOSED: Final = SMTPState.CLOSED

# The longest greet pause: RFC 5321 4.5.3.2 gives a client 5 minutes for the greeting
# (Sendmail caps greet_pause there too).
MAX_GREET_PAUSE: Final = 300.0

# Replies as they are sent, by code and lines: most replies are the same every time
# ("250 2.1.0 Ok"), so each is formatted and encoded once, not once a command. Bounded,
# since a reply may echo what a client sent.
_REPLY_EVENTS: dict[tuple[int, tuple[str, ...]], Reply] = {}
_REPLY_EVENTS_SIZE: Final = 1024


def _reply_event(code: int, lines: tuple[str, ...]) -> Reply:
    """The reply ``code lines`` with its bytes made (see ``_REPLY_EVENTS``)."""
    key = (code, lines)
    event = _REPLY_EVENTS.get(key)
    if event is None:
        lines = lines or ("",)
        event = Reply(code, lines, raw=format_reply(code, lines))
        if len(_REPLY_EVENTS) >= _REPLY_EVENTS_SIZE:
            _REPLY_EVENTS.clear()
        _REPLY_EVENTS[key] = event
    return event


# Replies by the personality's key, filled in: (key, personality, control files, the
# values given) -> the Reply with its bytes. The usual replies ("250 2.1.0 Ok", the
# banner, "354 End data with <CR><LF>.<CR><LF>") are then one dict lookup a command,
# not the template's cache and then the bytes' looked up in turn. The personality and
# the control files stand for what else goes into the text (the wording, control/me):
# a reload makes new objects, so a new key. A text with a {date} is never kept.
# Bounded, since a reply may echo what a client sent.
_KEY_EVENTS: dict[tuple[Any, ...], Reply] = {}


class SMTPSession(ServerSession):
    """One SMTP connection, but for what its commands do: the message's intake
    (``smtp_message``), AUTH (``smtp_auth``) and the envelope commands (``smtp``)."""

    fault_protocol = "smtp"
    # The handler of each verb (smtp.COMMANDS); the LMTP session has its own table.
    command_table: ClassVar[Mapping[str, Callable[[Any, str], None]]]

    def __init__(self, context: ServerContext, kind: str) -> None:
        ServerSession.__init__(self, context, kind)  # (no super object: one a connection)
        chunking = "CHUNKING" in context.personality.keywords
        self.core = SMTPConnection(role=_SERVER, tls=kind == "smtps", chunking=chunking)
        self.helo = ""
        self.user: str | None = None
        self.transaction: Transaction | None = None
        # The message being stored (aborted here when the session ends or resets).
        self._delivery: Any = None  # mailtalk.store Delivery, or None in sink mode
        self._lf: CRLFToLF | None = None  # CRLF -> LF converter for the Maildir copy
        # With a journal: the command waiting for its reply (verb, args, tls, user, and
        # a text to hide in the reply).
        self._journaled: tuple[str | None, str | None, bool, str | None, str] | None = None
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
        # Whether the INFO lines (connect, MAIL, delivered) go anywhere: asked once a
        # connection, not at each of them (two Python calls each when they do not).
        self._log_info = log.isEnabledFor(logging.INFO)

    # -- connection -----------------------------------------------------------

    def refuse(self) -> None:
        self._send_key("too_many_connections", client=self.client_ip)

    def greet(self) -> None:
        if self._log_info:
            log.info("session %s: connect from %s on %s", self.session_id, self.client_ip,
                     self.kind)
        if self.faults is None:  # no fault rules: nothing can fire at connect
            self._banner()
            return
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
        ServerSession.data_received(self, data)  # (no super object made for every read)

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
            # Commands first: the most frequent outside a message
            if isinstance(event, Command):
                self._on_command(event)
            elif isinstance(event, MessageData):
                if not self._chunk_open or self._chunk_taken:
                    self._on_message_data(event)
            elif isinstance(event, EndOfChunk):
                self._on_end_of_chunk(event)
            elif isinstance(event, EndOfMessage):
                self._on_end_of_message(event)

    def _reply(self, code: int, *lines: str) -> None:
        self._send(_REPLY_EVENTS.get((code, lines)) or _reply_event(code, lines))

    def _send(self, event: Reply) -> None:
        """Every reply goes out here (``_reply``, ``_send_key``; LMTP repeats some)."""
        if self._closing or self.transport is None:
            return
        self.transport.write(self.core.send(event))
        code = event.code
        if code >= 400:
            self.errors.error()
        if self.journal is not None:
            self._journal_reply(code, event.lines)
        if code == 421 or (code == 221 and self.core.state is _CLOSED):
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
        context = self.context
        event = _KEY_EVENTS.get((key, context.personality, context.control, *values.items()))
        if event is None:
            event = self._key_event(key, values)
        self._send(event)

    def _key_event(self, key: str, values: dict[str, str]) -> Reply:
        """The personality's reply ``key`` filled in, kept in ``_KEY_EVENTS`` if it can be."""
        context = self.context
        personality, control = context.personality, context.control
        code, text = context.reply(key, **values)
        event = _reply_event(code, (text,))
        if "date" not in personality.template(key).placeholders:
            if len(_KEY_EVENTS) >= _REPLY_EVENTS_SIZE:
                _KEY_EVENTS.clear()
            _KEY_EVENTS[(key, personality, control, *values.items())] = event
        return event

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
        verb = command.verb
        if self.errors.exceeded:
            # Postfix checks before it reads the next command; so does this.
            log.info("session %s: too many errors from %s", self.session_id, self.client_ip)
            if self.journal is not None and verb != AUTH_RESPONSE:
                self._journal_pending(command)  # the 421 is this command's reply
            self._send_key("too_many_errors", client=self.client_ip)
            self._close()
            return
        if verb == AUTH_RESPONSE:
            self._on_auth_response(command.args)
            return
        if verb == "BDAT" and self.core.chunking and parse_bdat(command.args) is not None:
            # The core reads the chunk whatever is answered: nothing of it is taken
            # unless _bdat says so.
            self._chunk_open, self._chunk_taken, self._chunk_refusal = True, False, None
        if self.journal is not None:
            self._journal_pending(command)
        if self.early_talker and verb not in self._early_talker_answers():
            self._send_key("early_talker_rejected", command=verb[:20])
            return
        if command.too_long:
            self._send_key("line_too_long")
            return
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
        match = PATH_ARGUMENT.match(args)
        if verb == "MAIL" and match:
            return {"from": match.group(2)}
        if verb == "RCPT" and match:
            return {"to": match.group(2)}
        return {}

    def _abort_delivery(self) -> None:
        if self._delivery is not None:
            self._delivery.abort()
        self._delivery, self._lf = None, None

    def _reset_transaction(self) -> None:
        if self._delivery is not None or self._lf is not None:
            self._abort_delivery()
        self.transaction = None
        if self.faults is not None:
            self.faults.reset_transaction()

    # -- what the layers above do (smtp_message, smtp_auth) ---------------------------

    def _bdat(self, args: str) -> None:
        """BDAT with CHUNKING offered: answered after its chunk."""
        raise NotImplementedError

    def _on_message_data(self, event: MessageData) -> None:
        raise NotImplementedError

    def _on_end_of_chunk(self, event: EndOfChunk) -> None:
        raise NotImplementedError

    def _on_end_of_message(self, event: EndOfMessage) -> None:
        raise NotImplementedError

    def _on_auth_response(self, line: str) -> None:
        raise NotImplementedError
