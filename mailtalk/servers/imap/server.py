"""The reference IMAP server (RFC 3501, with RFC 9051 behaviour where it is a superset).

One asyncio Protocol per connection around the IMAP core in the server role, on
the Maildir++ store (:mod:`mailtalk.store.mailbox`). Extensions: LITERAL-
(RFC 7888), SASL-IR (RFC 4959), IDLE (RFC 2177), NAMESPACE (RFC 2342),
UNSELECT (RFC 3691), UIDPLUS (RFC 4315), MOVE (RFC 6851), ENABLE (RFC 5161),
ID (RFC 2971), UTF8=ACCEPT (RFC 6855, names only), BINARY (RFC 3516: FETCH
BINARY[...], BINARY.SIZE[...], APPEND with a ``~{n}`` literal8; see
:mod:`mailtalk.servers.imap.binary`), SPECIAL-USE (RFC 6154; the folders are made
at the first login), LIST-EXTENDED (RFC 5258), LIST-STATUS (RFC 5819), ESEARCH
(RFC 4731), QUOTA (RFC 9208, with ``--quota``: :mod:`mailtalk.servers.imap.quota`),
CONDSTORE (RFC 7162: MODSEQs kept in the folder index, HIGHESTMODSEQ, FETCH
CHANGEDSINCE, STORE UNCHANGEDSINCE, SEARCH MODSEQ), QRESYNC (RFC 7162 3.2:
:mod:`mailtalk.servers.imap.qresync`), SORT and
THREAD=ORDEREDSUBJECT/REFERENCES (RFC 5256, on the SEARCH worker threads; see
:mod:`mailtalk.servers.imap.sort`), STARTTLS and AUTH=PLAIN; response codes from
RFC 5530.

The session is layered: :mod:`mailtalk.servers.imap.session` is the connection (the
read loop, literals, faults, journal, the untagged updates),
:mod:`mailtalk.servers.imap.login` logging in, and this module the commands of any
state, STARTTLS, ENABLE and IDLE, and the table of every command the server answers;
:class:`IMAPServerProtocol` is all of them. The commands on mailboxes are
:mod:`mailtalk.servers.imap.mailboxes`, those on the selected mailbox
:mod:`mailtalk.servers.imap.selected`: functions of the session and the command,
which answer through the session's ``untagged``, ``tagged`` and ``done``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from mailtalk.protocols.common import Continuation
from mailtalk.protocols.imap_events import Command
from mailtalk.servers.imap import mailboxes, quota, selected
from mailtalk.servers.imap.login import IMAPLoginSession
from mailtalk.servers.imap.session import IDLE_POLL_SECONDS
from mailtalk.servers.imap.tokens import Atom, IMAPSyntaxError, tokenize

if TYPE_CHECKING:
    from mailtalk.servers.context import ServerContext

log = logging.getLogger("mailtalk.imap")

Handler = Callable[["IMAPServerProtocol", Command], None]


class IMAPServerProtocol(IMAPLoginSession):
    """One IMAP connection; ``kind`` is the listener: imap (STARTTLS) or imaps."""

    def __init__(self, context: ServerContext, kind: str) -> None:
        super().__init__(context, kind)
        # An APPEND's large literal goes straight to the folder (mailboxes).
        self.core.literal_sink = lambda head, size: mailboxes.open_append_stream(self, head, size)

    # -- any state ------------------------------------------------------------

    def _capability(self, command: Command) -> None:
        self.untagged(f"CAPABILITY {self._capabilities()}")
        self.done(command, "Capability completed")

    def _noop(self, command: Command) -> None:
        self.done(command, "NOOP completed")

    def _logout(self, command: Command) -> None:
        if command.args.strip():
            raise IMAPSyntaxError("LOGOUT takes no arguments")
        self.close_reason = self.close_reason or "quit"
        self.untagged("BYE Logging out")
        self.tagged(command.tag, "OK", None, "Logout completed")
        self._close("quit")

    def _id(self, command: Command) -> None:
        self.untagged('ID ("name" "mailtalk" "vendor" "mailtalk" "support-url" NIL)')
        self.done(command, "ID completed")

    # -- not authenticated ----------------------------------------------------

    def _starttls(self, command: Command) -> None:
        if command.args.strip():
            # Nothing may ride along with the switch to TLS (the STARTTLS injection).
            raise IMAPSyntaxError("STARTTLS takes no arguments")
        if self.context.ssl_context is None or self.core.tls:
            self.tagged(command.tag, "BAD", None, "TLS is already active" if self.core.tls
                         else "STARTTLS is not available here")
            return
        self.tagged(command.tag, "OK", None, "Begin TLS negotiation now")
        self.defer_tagged(self._handshake())

    async def _handshake(self) -> None:
        await self._start_tls()

    def _enable(self, command: Command) -> None:
        values = tokenize(command.args, command.literals)
        if not values:
            raise IMAPSyntaxError("ENABLE needs capability names")
        enabled = []
        for value in values:
            if isinstance(value, Atom) and value.value.upper() == "UTF8=ACCEPT" and not self.utf8:
                self.utf8 = True
                enabled.append("UTF8=ACCEPT")
            elif isinstance(value, Atom) and value.value.upper() == "CONDSTORE":
                if not self.condstore:
                    enabled.append("CONDSTORE")
                self.condstore = True
            elif isinstance(value, Atom) and value.value.upper() == "QRESYNC":
                if not self.qresync:
                    enabled.append("QRESYNC")  # CONDSTORE comes with it (RFC 7162 3.2.3);
                # Dovecot too lists only QRESYNC as enabled.
                self.qresync = self.condstore = True
        self.untagged(" ".join(["ENABLED", *enabled]))
        self.done(command, "Enabled")

    def _idle(self, command: Command) -> None:
        self._idle_tag = command.tag
        self.write(self.core.send(Continuation("idling")))
        self.updates(expunge_allowed=True)
        if self.selected is not None and self.user is not None:
            loop = asyncio.get_running_loop()
            wake = asyncio.Event()

            def notified() -> None:
                loop.call_soon_threadsafe(wake.set)

            self._watch = self.context.mailstore.watchers.watch(
                self.user, self.selected.name, notified
            )
            self._idle_task = loop.create_task(self._idle_loop(wake))

    async def _idle_loop(self, wake: asyncio.Event) -> None:
        while not self._closing and self._idle_tag is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), IDLE_POLL_SECONDS)
            woken = wake.is_set()
            wake.clear()
            mailbox = self.selected
            if mailbox is None or self._idle_tag is None:
                return
            try:
                if woken or mailbox.changed_since():
                    self.updates(expunge_allowed=True)
            except Exception:
                log.exception("session %s: IDLE update failed", self.session_id)
                return


# Every command this server answers. Which of them a client may send now is the IMAP
# core's table, VALID_COMMANDS, for the session's state: the table the client's
# completion reads. So ENABLE is refused once a mailbox is selected (RFC 5161 3.1).
COMMANDS: Final[dict[str, Handler]] = {
    # any state
    "CAPABILITY": IMAPServerProtocol._capability,
    "NOOP": IMAPServerProtocol._noop,
    "LOGOUT": IMAPServerProtocol._logout,
    "ID": IMAPServerProtocol._id,
    # not authenticated
    "STARTTLS": IMAPServerProtocol._starttls,
    "LOGIN": IMAPServerProtocol._login,
    "AUTHENTICATE": IMAPServerProtocol._authenticate,
    # authenticated
    "ENABLE": IMAPServerProtocol._enable,
    "IDLE": IMAPServerProtocol._idle,
    "NAMESPACE": mailboxes.namespace,
    "SELECT": mailboxes.select,
    "EXAMINE": mailboxes.select,
    "CREATE": mailboxes.create,
    "DELETE": mailboxes.delete,
    "RENAME": mailboxes.rename,
    "SUBSCRIBE": mailboxes.subscribe,
    "UNSUBSCRIBE": mailboxes.unsubscribe,
    "LIST": mailboxes.list_mailboxes,
    "LSUB": mailboxes.list_mailboxes,
    "STATUS": mailboxes.status,
    "APPEND": mailboxes.append,
    "GETQUOTAROOT": quota.get_quota_root,
    "GETQUOTA": quota.get_quota,
    "SETQUOTA": quota.set_quota,
    # selected
    "CHECK": selected.check,
    "CLOSE": selected.close_mailbox,
    "UNSELECT": selected.unselect,
    "EXPUNGE": selected.expunge,
    "UID EXPUNGE": selected.expunge,
    "SEARCH": selected.search_messages,
    "UID SEARCH": selected.search_messages,
    "SORT": selected.sort_or_thread,
    "UID SORT": selected.sort_or_thread,
    "THREAD": selected.sort_or_thread,
    "UID THREAD": selected.sort_or_thread,
    "FETCH": selected.fetch_messages,
    "UID FETCH": selected.fetch_messages,
    "STORE": selected.store_flags,
    "UID STORE": selected.store_flags,
    "COPY": selected.copy_or_move,
    "UID COPY": selected.copy_or_move,
    "MOVE": selected.copy_or_move,
    "UID MOVE": selected.copy_or_move,
}
IMAPServerProtocol.command_table = COMMANDS

__all__ = ["COMMANDS", "IMAPServerProtocol"]
