"""The reference POP3 server (RFC 1939, 2449, 2595, 3206, 5034) on the Maildir store.

One asyncio Protocol per connection around the POP3 core in the server role.
The maildrop is locked for the whole TRANSACTION state with a real ``flock``
(a second session gets ``-ERR [IN-USE]``; the lock goes with the process or the
connection), DELE only marks, and the files are removed in the UPDATE state
after QUIT, so a connection that drops deletes nothing.

**Which maildrop.** A user's maildrop is their INBOX (``ROOT/mail/USER/Maildir``),
unless ``ROOT/mail/USER/mbox`` is a file: then it is that mbox, served as qpopper
serves ``/var/mail/USER`` (:mod:`mailtalk.store.mbox`), under the same maildrop lock.
An mbox that does not begin with a ``From `` line cannot be split into messages: PASS
(the password being right) is answered in qpopper 4's words, ``-ERR [SYS/PERM] Unable
to process From lines (envelopes), change recognition modes or check for corrupted
mail drop.``, and the session stays unauthenticated. At QUIT the mbox is rewritten
without the messages DELE marked (whole or not at all). IMAP and SMTP delivery keep to
the Maildir.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, Protocol

from mailtalk.protocols import sasl, sasl_server
from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    NEED_DATA,
    Continuation,
    Role,
    is_number,
    printable,
)
from mailtalk.protocols.pop3 import AUTH_RESPONSE, VALID_COMMANDS, Command, POP3Connection, Response
from mailtalk.servers.guard import SessionErrors, Verdict
from mailtalk.servers.journal import REDACTED
from mailtalk.servers.sasl import extra_mechanisms, server_mechanism
from mailtalk.servers.session import ServerSession

if TYPE_CHECKING:
    from pathlib import Path

    from mailtalk.servers.context import ServerContext
    from mailtalk.servers.faults import FaultAction
    from mailtalk.store.mailbox import Mailbox, MaildropLock, UserMailboxes
    from mailtalk.store.mbox import MboxMaildrop

log = logging.getLogger("mailtalk.pop3")

# How much of a message is read and sent at a time by RETR/TOP.
CHUNK: Final = 64 * 1024

# qpopper 4.0.x popper/pop_dropcopy.c, do_drop_copy(), when the spool's first line is
# not a From line (qpopper 2.x said only "Unable to process From lines (envelopes),
# change recognition modes."): knowledge/replies_pop3.toml, qpopper-from-lines.
FROM_LINES: Final = ("Unable to process From lines (envelopes), change recognition modes or "
                     "check for corrupted mail drop.")
STORE_FAILED: Final = "The mail store failed; try later"
TOO_MANY_ERRORS: Final = "Too many bad commands."  # Dovecot's pop3, then it hangs up
QUOTA_EXCEEDED: Final = "Unable to copy mail spool file, quota exceeded"

Answer = tuple[bool, str, str | None]  # +OK or not, the text, the response code


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


class DotStuffer:
    """Maildir text (LF or CRLF lines) to POP3 wire form: CRLF, leading dots doubled."""

    def __init__(self) -> None:
        self._at_line_start = True
        self._held_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if not self._held_cr and b"\r" not in chunk:
            # LF-only text (what Maildir stores): whole-chunk replaces, no line loop.
            if not chunk:
                return b""
            stuffed = chunk.replace(b"\n.", b"\n..").replace(b"\n", b"\r\n")
            if self._at_line_start and chunk.startswith(b"."):
                stuffed = b"." + stuffed
            self._at_line_start = chunk.endswith(b"\n")
            return stuffed
        if self._held_cr:
            chunk = b"\r" + chunk
            self._held_cr = False
        if chunk.endswith(b"\r"):
            # It may be half of a CRLF that the next chunk completes.
            self._held_cr = True
            chunk = chunk[:-1]
        out = bytearray()
        for line in chunk.splitlines(keepends=True):
            if self._at_line_start and line.startswith(b"."):
                out += b"."
            if line.endswith(b"\n"):
                out += line.removesuffix(b"\r\n").removesuffix(b"\n") + b"\r\n"
                self._at_line_start = True
            else:
                out += line  # a bare CR, or the end of the chunk mid-line
                self._at_line_start = line.endswith(b"\r")
        return bytes(out)

    def finish(self) -> bytes:
        held = b"\r" if self._held_cr else b""
        self._held_cr = False
        tail = b"" if self._at_line_start and not held else b"\r\n"
        return held + tail + b".\r\n"


def wire_message(data: bytes) -> bytes:
    """A whole message as stored in POP3 wire form, its final dot line included: what a
    :class:`DotStuffer` fed ``data`` gives, by two ``replace`` calls and no object."""
    if b"\r" in data:
        stuffer = DotStuffer()
        return stuffer.feed(data) + stuffer.finish()
    if b"\n." in data:
        data = data.replace(b"\n.", b"\n..")
    if data.startswith(b"."):
        data = b"." + data
    end = b".\r\n" if not data or data.endswith(b"\n") else b"\r\n.\r\n"
    return data.replace(b"\n", b"\r\n") + end


class POP3ServerProtocol(ServerSession):
    """One POP3 connection; ``kind`` is the listener: pop3 (STLS) or pop3s."""

    fault_protocol = "pop3"

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
        if command.too_long or verb not in COMMANDS:
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
        handler = COMMANDS.get(verb)
        if handler is None:
            self._send(False, f"Unknown command: {printable(verb[:20])}")
            return
        state = self.core.state
        if verb not in VALID_COMMANDS[state]:
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

    def _plaintext_allowed(self) -> bool:
        """USER/PASS and AUTH PLAIN only over TLS, or from loopback (like Dovecot)."""
        return bool(self.core.tls) or self.is_loopback()

    def _capa(self, args: tuple[str, ...]) -> None:
        lines = ["TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING"]
        if self._plaintext_allowed():
            lines += ["USER", " ".join(["SASL", "PLAIN", *extra_mechanisms(self.context)])]
        tls_possible = self.context.ssl_context is not None and not self.core.tls
        if tls_possible and not self.authenticated_user:
            lines.append("STLS")
        if self.context.settings.login_delay:
            lines.append(f"LOGIN-DELAY {int(self.context.settings.login_delay)}")
        lines += ["EXPIRE NEVER", "IMPLEMENTATION mailtalk"]
        self._send(True, "Capability list follows", lines=tuple(x.encode() for x in lines))

    def _user(self, args: tuple[str, ...]) -> None:
        if not self._plaintext_allowed():
            self._send(False, "Plaintext authentication disallowed on non-secure connections",
                       "AUTH")
            return
        if len(args) != 1:
            self._send(False, "USER needs exactly one argument: the user name")
            return
        self.user = args[0]
        self._send(True, "")

    def _pass(self, args: tuple[str, ...]) -> None:
        if self.user is None:
            self._send(False, "No user name: send USER first")
            return
        self._defer(self._login(self.user, args[0] if args else "", "USER/PASS"))

    def _apop(self, args: tuple[str, ...]) -> None:
        if len(args) != 2:
            self._send(False, "APOP needs a user name and a digest")
            return
        name, digest = args
        secret = self.context.clear_password(name)
        if secret is None:
            self._send(False, "APOP is not available for this user (passwords are stored hashed)",
                       "AUTH")
            return
        expected = hashlib.md5((self.timestamp + secret).encode(), usedforsecurity=False)
        # A wrong digest is a guess like a wrong password: the same delay and budget.
        verdict = self.context.guard.check(
            self.client_ip, lambda: hmac.compare_digest(expected.hexdigest(), digest.lower())
        )
        self._defer(self._decided(verdict, name, "APOP"))

    def _auth(self, args: tuple[str, ...]) -> None:
        if not args:
            names = ["PLAIN", *extra_mechanisms(self.context)] if self._plaintext_allowed() else []
            self._send(True, "", lines=tuple(name.encode() for name in names))
            return
        mechanism = args[0].upper()
        exchange = server_mechanism(mechanism, self.context)
        if mechanism != "PLAIN" and exchange is None:
            self._send(False, f"Unsupported authentication mechanism {mechanism}")
            return
        if not self._plaintext_allowed():
            self._send(False, "Plaintext authentication disallowed on non-secure connections",
                       "AUTH")
            return
        if exchange is not None:
            self._exchange = exchange
            try:
                data = sasl.decode(args[1]) if len(args) > 1 else None
            except sasl.SASLError:
                self._exchange = None
                self._send(False, "Invalid base64 data in the answer")
                return
            self._sasl_step(exchange.start(data))
            return
        if len(args) > 1:
            self._sasl_answer(args[1])
            return
        if self.transport is not None:
            self._write(self.core.send(Continuation("")))

    def _sasl_answer(self, line: str) -> None:
        if line.strip() == "*":
            self._exchange = None
            self._send(False, "Authentication cancelled")
            return
        if self._exchange is not None:
            try:
                data = sasl.decode(line)
            except sasl.SASLError:
                self._exchange = None
                self._send(False, "Invalid base64 data in the answer")
                return
            self._sasl_step(self._exchange.respond(data))
            return
        try:
            decoded = base64.b64decode(line.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            self._send(False, "Invalid base64 data in the answer")
            return
        parts = decoded.split("\0")
        if len(parts) != 3:
            self._send(False, "Malformed PLAIN answer")
            return
        _, name, secret = parts
        self._defer(self._login(name, secret, "PLAIN"))

    def _sasl_step(self, step: sasl_server.ServerStep) -> None:
        """The next move of a CRAM-MD5, SCRAM or token exchange (servers.sasl)."""
        exchange = self._exchange
        assert exchange is not None
        if isinstance(step, sasl_server.Challenge):
            if self.transport is not None:
                self._write(self.core.send(Continuation(sasl.encode(step.data))))
        elif isinstance(step, sasl_server.Check):
            self._defer(self.sasl_verdict(
                step, self._sasl_step,
                lambda verdict, user, mechanism: self._decided(_resolved(verdict), user,
                                                               mechanism),
            ))
        else:
            self._exchange = None
            if step.malformed:
                self._send(False, step.malformed)
            else:
                verdict = Verdict.OK if step.ok else Verdict.FAILED
                self._defer(self._decided(_resolved(verdict), step.user, exchange.name))

    async def _login(self, name: str, secret: str, mechanism: str) -> None:
        context = self.context
        verdict = context.guard.check_password(context.users, name, secret, self.client_ip)
        await self._decided(verdict, name, mechanism)

    async def _decided(self, verdict: Awaitable[Verdict], name: str, mechanism: str) -> None:
        """The password (or APOP digest) check's answer; right: open the maildrop."""
        decided = await verdict
        if self._closing:
            return
        if decided is Verdict.OK:
            await self._open_maildrop(name, mechanism)
            return
        self.user = None
        if decided is Verdict.REFUSED:
            log.info("session %s: login refused: too many failures from %s", self.session_id,
                     self.client_ip)
            code = "SYS/TEMP"
            text = f"Too many failed logins from {self.client_ip}; try again later"
        else:
            log.info("session %s: authentication failed for %s", self.session_id, name)
            self.errors.auth_failed()
            text, code = "Authentication failed.", "AUTH"
        if self.journal is not None:
            self.journal_write("auth", user=name, mechanism=mechanism, ok=False, reason=code)
        self._send(False, text, code)

    async def _open_maildrop(self, name: str, mechanism: str) -> None:
        """The password was right: lock and open the maildrop, or say why not."""
        ok, text, code = await self._enter_maildrop(name)
        if self.journal is not None:
            self.journal_write("auth", user=name, mechanism=mechanism, ok=ok, reason=code)
        self._send(ok, text, code)

    async def _enter_maildrop(self, name: str) -> Answer:
        """Lock and open ``name``'s maildrop: the answer (ok, text, response code)."""
        from mailtalk.store.mailbox import MailboxError
        from mailtalk.store.mbox import MboxMaildrop
        from mailtalk.store.view import MessageList

        delay = self.context.login_delay_left(name)
        if delay > 0:
            return False, f"Logged in too recently; wait {delay:.0f} s", "LOGIN-DELAY"
        mailboxes = self.context.mailstore.user_mailboxes(
            name, quota_bytes=self.context.settings.quota_bytes
        )
        try:
            lock = mailboxes.lock_maildrop()
        except MailboxError as error:
            if error.code == "INUSE":
                busy = "Unable to lock maildrop: lock busy! Is another session active?"
                return False, busy, "IN-USE"
            raise
        try:
            opened = await self._open_store(mailboxes)
        except BaseException:
            lock.release()
            raise
        if isinstance(opened, tuple):
            lock.release()
            return opened
        if self._closing:  # the client went while the maildrop was being read
            lock.release()
            if isinstance(opened, MboxMaildrop):
                opened.close()
            return False, "", None
        self._lock = lock
        self._mailbox = opened
        self._mbox = isinstance(opened, MboxMaildrop)
        # A Maildir's messages are made one at a time when asked for; their sizes (for
        # LIST and STAT) come from the view's columns, without a message object each.
        self._messages = self._mailbox.messages()
        if isinstance(self._messages, MessageList):
            self._uids = self._messages.view.uids
            self._sizes = self._messages.view.pop3_sizes()
        else:
            self._uids = [m.uid for m in self._messages]
            self._sizes = [m.pop3_size for m in self._messages]
        self._deleted = set()
        self.authenticated_user = name
        self.context.record_login(name)
        self.core.start_transaction()
        log.info("session %s: %s logged in, %d messages", self.session_id, name,
                 len(self._messages))
        total = sum(self._sizes)
        return True, f"Logged in: {len(self._messages)} messages ({total} octets)", None

    async def _open_store(self, mailboxes: UserMailboxes) -> Mailbox | MboxMaildrop | Answer:
        """The maildrop opened (an mbox file if the user has one, else INBOX), or the
        answer that refuses it."""
        quota = self.context.settings.quota_bytes
        mbox = mailboxes.mbox_path
        if mbox.is_file():
            return await self._open_mbox(mbox, quota)
        if quota is not None and mailboxes.usage() > quota:
            return False, QUOTA_EXCEEDED, "SYS/TEMP"
        try:
            return mailboxes.open("INBOX")  # refreshed by open
        except OSError as error:
            return self._store_failed(error)

    async def _open_mbox(self, path: Path, quota: int | None) -> MboxMaildrop | Answer:
        """The mbox scanned (in a thread: it may be large), or the answer refusing it:
        qpopper's when it does not begin with a From line."""
        from mailtalk.store.mbox import MboxFormatError, MboxMaildrop

        try:
            if quota is not None and path.stat().st_size > quota:
                return False, QUOTA_EXCEEDED, "SYS/TEMP"
            return await asyncio.get_running_loop().run_in_executor(None, MboxMaildrop, path)
        except MboxFormatError as error:
            log.info("session %s: %s: %s", self.session_id, path, error)
            return False, FROM_LINES, "SYS/PERM"
        except OSError as error:
            return self._store_failed(error)

    def _store_failed(self, error: OSError) -> Answer:
        from mailtalk.store import StoreFullError

        log.warning("session %s: store error: %s", self.session_id, error)
        full = isinstance(error, StoreFullError)
        return False, "Not enough disk space" if full else STORE_FAILED, "SYS/TEMP"

    def _stls(self, args: tuple[str, ...]) -> None:
        if args:
            self._send(False, "STLS takes no arguments")
            return
        if self.context.ssl_context is None or self.core.tls:
            self._send(False, "STLS is not available here" if not self.core.tls
                       else "TLS is already active")
            return
        self._send(True, "Begin TLS negotiation now.")
        self._defer(self._handshake())

    async def _handshake(self) -> None:
        await self._start_tls()

    def tls_begun(self) -> None:
        self.user = None  # RFC 2595 4: the client starts over after STLS

    def _quit(self, args: tuple[str, ...]) -> None:
        # Arguments or not, QUIT ends the session (as Dovecot's): a -ERR to QUIT would
        # say that deletions failed and the session is over (RFC 1939 6).
        self.close_reason = self.close_reason or "quit"
        if self.authenticated_user is None:
            self._send(True, "Bye")
            self._close()
            return
        self.core.start_update()
        self._defer(self._update())

    async def _update(self) -> None:
        # UPDATE: the deletions happen now, and only now.
        uids = [self._uids[n - 1] for n in sorted(self._deleted)]
        failed = False
        if uids:
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(None, self._remove, uids)
            except OSError as error:
                log.warning("session %s: deleting failed: %s", self.session_id, error)
                failed = True
            else:
                self._removed = len(uids)
        self._release()
        if failed:
            self._send(False, "Some deleted messages were not removed", "SYS/TEMP")
        else:
            self._send(True, f"Logging out, {len(uids)} messages deleted.")
        self._close()

    def _remove(self, uids: list[int]) -> None:
        if self._mbox:
            self._mailbox.remove(uids)
            return
        self._mailbox.set_flags(uids, {"\\Deleted"}, mode="add")
        self._mailbox.expunge(uids)

    # -- TRANSACTION ----------------------------------------------------------

    def _message_number(self, text: str) -> int | None:
        if not is_number(text):
            self._send(False, f"Not a message number: {printable(text[:20])}")
            return None
        number = int(text)
        if not 1 <= number <= len(self._sizes):
            self._send(False, f"There's no message {number}.")
            return None
        if number in self._deleted:
            self._send(False, f"Message {number} is deleted.")
            return None
        return number

    def _stat(self, args: tuple[str, ...]) -> None:
        deleted = self._deleted
        live = [size for n, size in enumerate(self._sizes, 1) if n not in deleted]
        self._send(True, f"{len(live)} {sum(live)}")

    def _list(self, args: tuple[str, ...]) -> None:
        self._per_message(args, self._sizes, count=True)

    def _uidl(self, args: tuple[str, ...]) -> None:
        from mailtalk.store.view import MessageList, uidl_of

        messages = self._messages
        if isinstance(messages, MessageList):  # from the view's names, no message object each
            uidls: Sequence[str] = [uidl_of(base) for base in messages.view.bases]
        else:
            uidls = [m.uidl for m in messages]
        self._per_message(args, uidls, count=False)

    def _per_message(
        self, args: tuple[str, ...], values: Sequence[object], *, count: bool
    ) -> None:
        """LIST and UIDL (RFC 1939 5, 7): "n value" for the message asked for, or one line
        for each message not marked deleted (after "+OK N messages" when ``count``)."""
        if args:
            number = self._message_number(args[0])
            if number is not None:
                self._send(True, f"{number} {values[number - 1]}")
            return
        deleted = self._deleted
        lines = tuple(
            f"{n} {value}".encode() for n, value in enumerate(values, 1) if n not in deleted
        )
        self._send(True, f"{len(lines)} messages" if count else "", lines=lines)

    def _retr(self, args: tuple[str, ...]) -> None:
        if len(args) != 1:
            self._send(False, "RETR needs a message number")
            return
        number = self._message_number(args[0])
        if number is not None and not self._retr_small(number):
            self._defer(self._stream(number, None))

    def _top(self, args: tuple[str, ...]) -> None:
        if len(args) != 2 or not is_number(args[1]):
            self._send(False, "TOP needs a message number and a number of lines")
            return
        number = self._message_number(args[0])
        if number is not None:
            self._defer(self._stream(number, int(args[1])))

    def _retr_small(self, number: int) -> bool:
        """RETR of a message smaller than CHUNK: answered now, in one write (the same
        bytes as :meth:`_stream`'s), from the maildrop's columns: no message object.
        False if it is larger: the caller streams it."""
        from mailtalk.store.mailbox import MailboxError

        if self._closing or self.transport is None:
            return False
        try:
            data = self._mailbox.read_small(self._uids[number - 1], CHUNK)
        except (MailboxError, OSError):
            self._send(False, f"Message {number} is gone (deleted by another client?)", "SYS/PERM")
            return True
        if data is None:
            return False
        text = f"{self._sizes[number - 1]} octets"
        self._write(self.core.send_ok(text) + wire_message(data))
        if self.journal is not None:
            self._journal_reply(True, text, None)
        return True

    async def _stream(self, number: int, body_lines: int | None) -> None:
        """RETR (body_lines None) or TOP: send the message in chunks, dot-stuffed."""
        from mailtalk.store.mailbox import MailboxError

        info = self._messages[number - 1]
        try:
            handle = self._mailbox.open_message(info.uid)
        except (MailboxError, OSError):
            self._send(False, f"Message {number} is gone (deleted by another client?)", "SYS/PERM")
            return
        assert self.transport is not None
        self._send(True, f"{info.pop3_size} octets")
        stuffer = DotStuffer()
        with handle:
            if body_lines is None:
                while chunk := handle.read(CHUNK):
                    self.transport.write(stuffer.feed(chunk))
                    await self.drain()
                    if self._closing:
                        return  # dropped meanwhile (its output stalled): nothing to write to
            else:
                in_body = False
                remaining = body_lines
                # Lines leave in batches of about CHUNK, and wait for a slow reader as
                # RETR's chunks do: one write per line, never waiting, held a whole
                # message in memory for a client that did not read (issue 15).
                out = bytearray()
                for line in handle:
                    if in_body:
                        if remaining <= 0:
                            break
                        remaining -= 1
                    elif line in (b"\n", b"\r\n"):
                        in_body = True
                    out += stuffer.feed(line)
                    if len(out) >= CHUNK:
                        self.transport.write(bytes(out))
                        out.clear()
                        await self.drain()
                        if self._closing:
                            return
                if out:
                    self.transport.write(bytes(out))
        self.transport.write(stuffer.finish())

    def _dele(self, args: tuple[str, ...]) -> None:
        if len(args) != 1:
            self._send(False, "DELE needs a message number")
            return
        number = self._message_number(args[0])
        if number is not None:
            self._deleted.add(number)
            self._send(True, "Marked to be deleted.")

    def _rset(self, args: tuple[str, ...]) -> None:
        self._deleted.clear()
        self._send(True, f"{len(self._messages)} messages")

    def _noop(self, args: tuple[str, ...]) -> None:
        self._send(True, "")


# Every command this server answers; which of them the client may send now is the POP3
# core's table, VALID_COMMANDS, for the state the core is in (the one the client's
# completion reads). UTF8 (RFC 6856) is in that table but not served here: unknown.
COMMANDS: Final[dict[str, Callable[[POP3ServerProtocol, tuple[str, ...]], None]]] = {
    "CAPA": POP3ServerProtocol._capa,
    "USER": POP3ServerProtocol._user,
    "PASS": POP3ServerProtocol._pass,
    "APOP": POP3ServerProtocol._apop,
    "AUTH": POP3ServerProtocol._auth,
    "STLS": POP3ServerProtocol._stls,
    "QUIT": POP3ServerProtocol._quit,
    "STAT": POP3ServerProtocol._stat,
    "LIST": POP3ServerProtocol._list,
    "UIDL": POP3ServerProtocol._uidl,
    "RETR": POP3ServerProtocol._retr,
    "TOP": POP3ServerProtocol._top,
    "DELE": POP3ServerProtocol._dele,
    "RSET": POP3ServerProtocol._rset,
    "NOOP": POP3ServerProtocol._noop,
}


async def _resolved(verdict: Verdict) -> Verdict:
    """A verdict already reached, as ``_decided`` awaits one."""
    return verdict
