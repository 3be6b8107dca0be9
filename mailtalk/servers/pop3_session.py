"""One POP3 connection: its greeting, the loop reading commands, the replies (gathered
for pipelined commands), the journal and injected faults; what each command does is in
the modules above it.

The session is layered as the SMTP server's is: this module is the connection,
``pop3_auth`` the AUTHORIZATION state (USER/PASS, APOP, AUTH, then the maildrop locked
and opened), ``pop3`` the TRANSACTION and UPDATE states and the table of every command;
:class:`mailtalk.servers.pop3.POP3ServerProtocol` is all of them. The session's state
(the maildrop, its messages, what DELE marked) is set up here, because closing the
connection releases the maildrop lock whichever state it is in.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Final, Protocol

from mailtalk.protocols.common import CONNECTION_CLOSED, NEED_DATA, Role, printable
from mailtalk.protocols.pop3 import (
    AUTH_RESPONSE,
    VALID_COMMANDS,
    Command,
    POP3Connection,
    POP3State,
    Response,
)
from mailtalk.servers.guard import SessionErrors
from mailtalk.servers.journal import REDACTED
from mailtalk.servers.session import ServerSession

if TYPE_CHECKING:
    from mailtalk.servers.context import ServerContext
    from mailtalk.servers.faults import FaultAction
    from mailtalk.store.mailbox import MaildropLock

log = logging.getLogger("mailtalk.pop3")

# How much of a message is read and sent at a time by RETR/TOP.
CHUNK: Final = 64 * 1024

TOO_MANY_ERRORS: Final = "Too many bad commands."  # Dovecot's pop3, then it hangs up


class Pop3Message(Protocol):
    """A message as the session lists and sends it: a Maildir's MessageInfo, or an
    mbox's MboxMessage."""

    @property
    def uid(self) -> int: ...

    @property
    def size(self) -> int: ...

    @property
    def pop3_size(self) -> int: ...

    @property
    def uidl(self) -> str: ...


class POP3Session(ServerSession):
    """One POP3 connection, but for what its commands do: the AUTHORIZATION state
    (``pop3_auth``), the TRANSACTION and UPDATE states (``pop3``). ``kind`` is the
    listener: pop3 (STLS) or pop3s."""

    fault_protocol = "pop3"
    # The handler of each verb (pop3.COMMANDS).
    command_table: ClassVar[Mapping[str, Callable[[Any, tuple[str, ...]], None]]]

    def __init__(self, context: ServerContext, kind: str) -> None:
        super().__init__(context, kind)
        self.core = POP3Connection(role=Role.SERVER)
        if kind == "pop3s":
            self.core.tls_started()
        self.user: str | None = None  # after USER
        self.authenticated_user: str | None = None
        self.timestamp = f"<{os.getpid()}.{time.time_ns()}@{context.hostname}>"
        self._lock: MaildropLock | None = None
        self._messages: Sequence[Pop3Message] = ()
        self._uids: Sequence[int] = ()  # each message's UID, in order
        self._sizes: Sequence[int] = []  # each message's POP3 size (LIST, STAT), in order
        self._deleted: set[int] = set()
        self._removed = 0  # messages removed at QUIT (UPDATE)
        self._mailbox: Any = None  # a Mailbox (INBOX), or an MboxMaildrop
        self._mbox = False  # the maildrop is an mbox file
        # With a journal: the command waiting for its reply (verb, args, tls, user, and
        # a text to hide in the reply); AUTH's mechanism while its answer is awaited.
        self._journaled: tuple[str | None, str | None, bool, str | None, str] | None = None
        # -ERR replies in a row, and failed logins: at the limit the next command gets
        # TOO_MANY_ERRORS and the connection is closed (Dovecot counts 20 in a row).
        self.errors = SessionErrors(context.settings.error_limit)
        # The answers to pipelined commands leave together: while ``process`` runs they
        # gather here and go out when it stops, or each CHUNK (one send() for a window
        # of RETRs, not one each, as Dovecot's corked output does); None: write at once.
        self._gathered: bytearray | None = None
        # The core's state at the last command, and its VALID_COMMANDS: a dict looked up
        # by an enum member calls Enum.__hash__, Python code, for each of thousands of
        # pipelined RETRs; the state seldom changes, and ``is`` compares it for free.
        self._checked_state: POP3State | None = None
        self._valid_verbs: tuple[str, ...] = ()

    # -- connection -----------------------------------------------------------

    def refuse(self) -> None:
        self._send(False, "Too many connections, try again later", "SYS/TEMP")

    def greet(self) -> None:
        action = self._fault("connect")
        if action is not None and action.kind == "delay":
            self._defer(self._later(action.seconds, lambda: self._greet(())))
            return
        if action is None:
            self._greet(())
        elif action.kind == "reply" and action.status != "+OK":
            self._close()  # no session after a negative greeting: the core is closed

    def _greet(self, args: tuple[str, ...]) -> None:
        self._send(True, f"mailtalk POP3 server ready {self.timestamp}")

    def cleanup(self) -> None:
        self._release()

    def on_idle(self) -> None:
        # RFC 1939 3: the autologout timer closes the connection "without sending any
        # response to the client" and without entering UPDATE (nothing is deleted).
        log.info("session %s: autologout", self.session_id)

    def internal_error(self) -> None:
        self._send(False, "Internal error; try again later", "SYS/TEMP")

    def _release(self) -> None:
        if self._mbox:
            self._mailbox.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- the loop -------------------------------------------------------------

    def process(self) -> None:
        self._gathered = bytearray()
        try:
            while not self._busy and not self._closing:
                command = self.core.next_command()
                if command is NEED_DATA:
                    return
                if command is CONNECTION_CLOSED:
                    self._close("dropped")
                    return
                assert isinstance(command, Command)
                self._on_command(command)
        finally:
            self._write_gathered()
            self._gathered = None

    def _write(self, data: bytes) -> None:
        """Send ``data`` after what was sent before: now, or with the answers gathered."""
        gathered = self._gathered
        if gathered is None:
            if self.transport is not None:
                self.transport.write(data)
            return
        gathered += data
        if len(gathered) >= CHUNK:
            self._write_gathered()  # the transport's flow control sees it (_busy)

    def _write_gathered(self) -> None:
        gathered = self._gathered
        if gathered and self.transport is not None:
            self.transport.write(bytes(gathered))
            gathered.clear()

    def _close(self, reason: str = "server") -> None:
        self._write_gathered()  # the goodbye (QUIT, too many errors) before the close
        super()._close(reason)

    def _send(
        self, ok: bool, text: str, code: str | None = None, lines: tuple[bytes, ...] | None = None
    ) -> None:
        if self._closing or self.transport is None:
            return
        self._write(self.core.send(Response(ok, text, code, lines)))
        if ok:
            self.errors.forgive()
        else:
            self.errors.error()
        if self.journal is not None:
            self._journal_reply(ok, text, code)

    def _journal_reply(self, ok: bool, text: str, code: str | None) -> None:
        """The reply in the journal: the greeting, or the reply to a command."""
        status = "+OK" if ok else "-ERR"
        if not self._journal_connected:
            self.journal_connect(status, text)
            return
        pending, self._journaled = self._journaled, None
        if pending is None:
            return
        verb, args, tls, user, hide = pending
        if hide:
            text = text.replace(hide, REDACTED)
        self.journal_command(verb, args, status, text, tls=tls, user=user, response_code=code)

    def _journal_pending(self, command: Command) -> None:
        """Remember the command for the journal, its secrets out."""
        verb: str | None = command.verb
        args: str | None = " ".join(command.args)
        hide = ""
        if command.too_long or verb not in self.command_table:
            hide = (verb or "")[:20]  # maybe a password typed at the wrong moment
            verb, args = None, REDACTED
        elif verb == "PASS":
            args = REDACTED
        elif verb == "APOP":
            args = f"{command.args[0]} {REDACTED}" if command.args else None
        elif verb == "AUTH" and len(command.args) > 1:
            args = f"{command.args[0]} {REDACTED}"
        self._journaled = (verb, args or None, bool(self.core.tls), self.authenticated_user,
                           hide)

    def close_fields(self) -> dict[str, Any]:
        """Who was logged in, how many messages DELE marked and how many QUIT removed:
        a session that ends without QUIT removes none."""
        if self.authenticated_user is None:
            return {"user": None}
        return {"user": self.authenticated_user, "marked": len(self._deleted),
                "deleted": self._removed}

    def _fault(self, command: str) -> FaultAction | None:
        """Apply an injected fault; returns it if it replaced (or delays) the answer."""
        action = self._fault_action(
            command,
            auth="yes" if self.authenticated_user else "no",
            user=self.authenticated_user or self.user or "",
        )
        if action is not None and action.kind == "reply":
            code, text = action.response_code_and_text()
            self._send(action.status == "+OK", text, code)
        return action

    # -- commands -------------------------------------------------------------

    def _on_command(self, command: Command) -> None:
        if self.errors.exceeded:
            log.info("session %s: too many errors from %s", self.session_id, self.client_ip)
            if self.journal is not None and command.verb != AUTH_RESPONSE:
                self._journal_pending(command)  # the goodbye is this command's reply
            self._send(False, TOO_MANY_ERRORS)
            self._close()
            return
        if command.verb == AUTH_RESPONSE:
            self._sasl_answer(command.args[0] if command.args else "")
            return
        if self.journal is not None:
            self._journal_pending(command)
        if command.too_long:
            self._send(False, "Command line too long")
            return
        verb = command.verb
        handler = self.command_table.get(verb)
        if handler is None:
            self._send(False, f"Unknown command: {printable(verb[:20])}")
            return
        state = self.core.state
        if state is not self._checked_state:
            self._checked_state, self._valid_verbs = state, VALID_COMMANDS[state]
        if verb not in self._valid_verbs:
            self._send(False, f"{verb} is not valid in the {state.name} state")
            return
        if verb == "PASS":
            # RFC 1939 7: the password is the rest of the line, spaces and all.
            line = command.raw.decode("utf-8", "replace").rstrip("\r\n")
            command = Command(verb, (line[5:],) if len(line) > 5 else (), command.raw)
        # No fault rules (the usual case): no fault to look up for each command.
        action = self._fault(verb.lower()) if self.faults is not None else None
        if action is not None:
            if action.kind == "delay":
                args = command.args
                self._defer(self._later(action.seconds, lambda: handler(self, args)))
            return
        handler(self, command.args)

    # -- what the layer above does (pop3_auth) ----------------------------------------

    def _sasl_answer(self, line: str) -> None:
        raise NotImplementedError
