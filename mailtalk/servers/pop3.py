"""The reference POP3 server (RFC 1939, 2449, 2595, 3206, 5034) on the Maildir store:
the TRANSACTION and UPDATE states (STAT, LIST, UIDL, RETR, TOP, DELE, RSET, NOOP, QUIT),
CAPA and STLS, and the table of every command it answers.

One asyncio Protocol per connection around the POP3 core in the server role, layered
as the SMTP server is: ``pop3_session`` is the connection (the read loop, replies,
journal, faults), ``pop3_auth`` the AUTHORIZATION state (the login, the maildrop
opened); :class:`POP3ServerProtocol` is all of them. The maildrop is locked for the
whole TRANSACTION state with a real ``flock`` (a second session gets ``-ERR
[IN-USE]``; the lock goes with the process or the connection), DELE only marks, and the
files are removed in the UPDATE state after QUIT, so a connection that drops deletes
nothing. A maildrop that is an mbox (``pop3_auth``) is rewritten at QUIT without the
messages DELE marked (whole or not at all).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Final

from mailtalk.protocols.common import is_number, printable
from mailtalk.servers.pop3_auth import POP3AuthSession
from mailtalk.servers.pop3_session import CHUNK
from mailtalk.servers.sasl import extra_mechanisms

# Here, not in _retr_small: on Python 3.11 a ``from M import N`` in a function costs some
# 6,000 instructions a call (the import looks for M.__path__, and the AttributeError's
# message is formatted to be dropped), 6% of a RETR. store.errors is stdlib only.
from mailtalk.store.errors import MailboxError

log = logging.getLogger("mailtalk.pop3")


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


class POP3ServerProtocol(POP3AuthSession):
    """One POP3 connection; ``kind`` is the listener: pop3 (STLS) or pop3s."""

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


POP3ServerProtocol.command_table = COMMANDS
