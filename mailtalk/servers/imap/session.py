"""One IMAP connection: its greeting, the loop reading commands and literals, the state
table check, injected faults, the journal, and what every command answers with
(``untagged``, ``tagged``, ``done`` and the untagged updates); what each command does is
in the modules above it.

The session is layered as the SMTP and POP3 servers are: this module is the
connection, :mod:`mailtalk.servers.imap.login` logging in (LOGIN, AUTHENTICATE),
:mod:`mailtalk.servers.imap.server` the commands of any state, STARTTLS, ENABLE, IDLE
and the table of every command; :class:`~mailtalk.servers.imap.server.IMAPServerProtocol`
is all of them. The commands on mailboxes and on the selected mailbox are functions of
the session and the command (:mod:`mailtalk.servers.imap.mailboxes`,
:mod:`mailtalk.servers.imap.selected`).

**Literals.** The core keeps a command's literals in memory (up to its
``max_literal``, beyond which it reads and drops them); an APPEND literal over
``mailboxes.STREAM_LITERAL_OVER`` goes straight to the folder's tmp/ as it arrives
(a store error there, such as a full disk, ends the writing, not the connection), a
smaller one is buffered whole, then written to the folder in chunks through
:meth:`Mailbox.begin_append`. Memory stays bounded by
``settings.max_literal`` (64 KiB before login): a synchronizing literal that is
too large, or that would exceed the quota, is refused with ``NO [TOOBIG]`` /
``NO [OVERQUOTA]`` *before* the ``+``, so ``{999999999999}`` costs nothing. A
non-synchronizing one (``{n+}``) gives the server no chance to refuse early: the
core reads and drops what is beyond the cap, then the command gets
``NO [TOOBIG]``. Non-synchronizing literals under the cap are accepted even
beyond the 4096 octets LITERAL- promises (lenient, as Dovecot is).

**Untagged updates.** After each command (and every second, or on a delivery
notification, during IDLE) the selected mailbox is refreshed and changes made by
other sessions are announced: EXPUNGE, EXISTS, RECENT and FETCH FLAGS. Not after
FETCH, STORE and SEARCH, during which RFC 3501 7.4.1 forbids EXPUNGE; the
refresh waits for the next command that allows it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    NEED_DATA,
    Continuation,
    RemoteProtocolError,
    Role,
    printable,
)
from mailtalk.protocols.imap import VALID_COMMANDS, IMAPConnection, IMAPState
from mailtalk.protocols.imap_events import (
    Command,
    ContinuationResponse,
    LiteralRequested,
    Tagged,
    Untagged,
)
from mailtalk.servers.guard import SessionErrors
from mailtalk.servers.imap.output import astring_text
from mailtalk.servers.imap.qresync import vanished_line
from mailtalk.servers.imap.tokens import (
    Atom,
    IMAPSyntaxError,
    SearchCharsetError,
    parse_astrings,
    tokenize,
)
from mailtalk.servers.journal import REDACTED
from mailtalk.servers.sasl import extra_mechanisms
from mailtalk.servers.session import ServerSession
from mailtalk.store.mailbox import MailboxError
from mailtalk.store.maildir import StoreFullError

if TYPE_CHECKING:
    from mailtalk.servers.context import ServerContext
    from mailtalk.servers.faults import FaultAction
    from mailtalk.store.mailbox import Mailbox, MailboxWatch, UserMailboxes

log = logging.getLogger("mailtalk.imap")

# Before login a literal (a user name or password) has no reason to be large.
PREAUTH_MAX_LITERAL: Final = 64 * 1024
IDLE_POLL_SECONDS: Final = 1.0
IDLE_AUTOLOGOUT: Final = 30 * 60.0  # RFC 3501 5.4: at least 30 minutes while idling
# A command's text (its literals aside) up to the core's 1 MiB is read on the event
# loop: a megabyte of STORE flags took 0.6 s. One line (64 KiB) is all any command but
# SEARCH needs (a literal carries a name or a message, not more arguments); SEARCH is
# read on a worker thread.
MAX_ARGUMENTS_TEXT: Final = 66 * 1024
_LONG_ARGUMENTS: Final = frozenset(
    {"SEARCH", "UID SEARCH", "SORT", "UID SORT", "THREAD", "UID THREAD"}
)
# RFC 3501 7.4.1: no EXPUNGE while answering these (their sequence numbers must hold).
_NO_EXPUNGE: Final = frozenset({"FETCH", "STORE", "SEARCH", "SORT", "THREAD"})
# Which commands a client may send in each state: the IMAP core's table.
_VALID_IN: Final = {state: frozenset(verbs) for state, verbs in VALID_COMMANDS.items()}


def _clean(text: str) -> str:
    """Text fit for a response line: printable, and not ending like a literal marker."""
    text = printable(text)[:300]
    return text + "." if text.endswith("}") else text


def store_failure(error: OSError) -> tuple[str, str]:
    """The response code and text for a disk error: a full disk is OVERQUOTA (as Dovecot)."""
    if isinstance(error, StoreFullError):
        return "OVERQUOTA", "Not enough disk space"
    return "UNAVAILABLE", "The mail store failed; try later"


# A command's handler: a method of the session, or a function of it and the command
# (mailboxes, selected); server.COMMANDS types each against IMAPServerProtocol.
Handler = Callable[[Any, Command], None]
# What the journal keeps of a command until its tagged answer: verb, args, tls, user,
# the selected mailbox, whether it carries a secret, and a text to hide in the answer.
_Pending = tuple[str | None, str | None, bool, str | None, str | None, bool, str]
# The commands whose arguments hold a password (LOGIN) or its base64 (AUTHENTICATE).
_SECRET_VERBS: Final = frozenset({"LOGIN", "AUTHENTICATE"})


def journal_args(command: Command) -> str | None:
    """A command's arguments as the journal keeps them: without a password."""
    if command.verb not in _SECRET_VERBS:
        return command.args or None
    try:
        values = tokenize(command.args, command.literals)
    except IMAPSyntaxError:
        return REDACTED
    first = values[0] if values else None
    if command.verb == "LOGIN":
        try:
            name = parse_astrings(command.args, command.literals, 2)[0]
        except IMAPSyntaxError:
            return REDACTED
        return f"{astring_text(name)} {REDACTED}"
    if not isinstance(first, Atom):
        return REDACTED
    return first.value if len(values) == 1 else f"{first.value} {REDACTED}"


class IMAPSession(ServerSession):
    """One IMAP connection, but for what its commands do: logging in (``login``), the
    other commands (``server``, ``mailboxes``, ``selected``). ``kind`` is the listener:
    imap (STARTTLS) or imaps."""

    fault_protocol = "imap"
    # The handler of each verb (server.COMMANDS).
    command_table: ClassVar[Mapping[str, Handler]]

    def __init__(self, context: ServerContext, kind: str) -> None:
        super().__init__(context, kind)
        self.core = IMAPConnection(role=Role.SERVER, max_literal=PREAUTH_MAX_LITERAL)
        if kind == "imaps":
            self.core.tls_started()
        self.user: str | None = None
        self.mailboxes: UserMailboxes | None = None
        self.selected: Mailbox | None = None
        self.utf8 = False
        # RFC 7162: after a CONDSTORE enabling command every untagged FETCH carries MODSEQ.
        self.condstore = False
        self.qresync = False  # RFC 7162 3.2: VANISHED instead of EXPUNGE
        self._sasl_tag: str | None = None  # a SASL answer is awaited for this command
        self._auth_tag = ""  # the AUTHENTICATE command under way (its exchange: _exchange)
        self._idle_tag: str | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._watch: MailboxWatch | None = None
        self._literal_faults: dict[str, Any] = {}  # tag -> fault checked at its literal
        # tag -> (folder, stream) of an APPEND whose literal goes straight to disk
        self.append_streams: dict[str, Any] = {}
        # BADs in a row, and failed logins: at the limit the session ends with a BYE (as
        # Dovecot after 20 bad commands in a row). A NO is a well-formed command's answer:
        # a client syncing folders may get many, so it forgives like an OK.
        self.errors = SessionErrors(context.settings.error_limit)
        self._journaled: dict[str, _Pending] = {}  # tag -> command, with a journal

    # -- connection -----------------------------------------------------------

    def refuse(self) -> None:
        self.untagged("BYE [UNAVAILABLE] Too many connections, try again later")

    def greet(self) -> None:
        action = self._fault("connect")
        if action is not None:
            if action.kind == "delay":
                self.defer_tagged(self._later(action.seconds, self._greet))
            return
        self._greet()

    def _greet(self) -> None:
        # The host's name first, as Cyrus says it: in a practice world of several
        # servers the greeting tells which one answered.
        name = self.context.hostname
        self.untagged(f"OK [CAPABILITY {self._capabilities()}] {name} mailtalk IMAP server ready")

    def cleanup(self) -> None:
        self._stop_idle()
        for _, stream in self.append_streams.values():
            stream.appender.abort()  # the connection went mid-APPEND: nothing lands
        self.append_streams.clear()

    def idle_limit(self) -> float:
        # RFC 2177: clients re-issue IDLE every 29 minutes; let an idling one be for
        # 30 minutes whatever the (shorter) command timeout.
        limit = self.context.settings.idle_timeout
        return max(limit, IDLE_AUTOLOGOUT) if self._idle_tag is not None else limit

    def on_idle(self) -> None:
        self.untagged("BYE Disconnected for inactivity.")

    def _close(self, reason: str = "server") -> None:
        self._stop_idle()
        super()._close(reason)

    def close_fields(self) -> dict[str, Any]:
        return {"user": self.user}

    # -- the loop -------------------------------------------------------------

    def process(self) -> None:
        while not self._busy and not self._closing:
            try:
                event = self.core.next_command()
            except RemoteProtocolError as error:
                if "closed in the middle" in str(error):
                    self._close("dropped")
                    return
                self.errors.error()
                self.untagged(f"BAD {_clean(str(error))}")
                if self.journal is not None:
                    # Not a command: the line may be a password; only the kind of error.
                    what = str(error).partition(":")[0]
                    self.journal_command(None, REDACTED, "BAD", what, tls=bool(self.core.tls),
                                         user=self.user)
                if self.errors.exceeded:
                    self._too_many_errors()
                continue
            if event is NEED_DATA:
                return
            if event is CONNECTION_CLOSED:
                self._close("dropped")
                return
            if self.errors.exceeded:
                self._too_many_errors()
                return
            if isinstance(event, LiteralRequested):
                self._on_literal(event)
            elif isinstance(event, ContinuationResponse):
                self._on_continuation(event)
            else:
                assert isinstance(event, Command)
                self._on_command(event)

    # -- what command handlers answer with ----------------------------------------

    def defer_tagged(self, work: Awaitable[None], tag: str | None = None) -> None:
        """Deferred work for a command: its errors become that command's tagged NO."""

        def answer(error: Exception) -> None:
            if isinstance(error, MailboxError):
                if tag is not None:
                    self.tagged(tag, "NO", error.code, error.message)
            elif isinstance(error, OSError):
                log.warning("session %s: store error: %s", self.session_id, error)
                if tag is not None:
                    self.tagged(tag, "NO", *store_failure(error))
            else:
                log.error("session %s: internal error", self.session_id, exc_info=error)
                if tag is not None:
                    self.tagged(tag, "NO", "SERVERBUG", "Internal error; try again later")

        self._defer(work, answer)

    def write(self, data: bytes) -> None:
        """Bytes the core made (a continuation, FETCH responses), unless closing."""
        if not self._closing and self.transport is not None:
            self.transport.write(data)

    def untagged(self, text: str, literals: tuple[bytes, ...] = ()) -> None:
        """``* text``, with its literals."""
        if self._closing or self.transport is None:
            return
        self.transport.write(self.core.send(Untagged(text, literals)))
        if self.journal is not None and not self._journal_connected:
            status, _, rest = text.partition(" ")
            self.journal_connect(status, rest)  # the greeting, or a BYE instead of it

    def tagged(self, tag: str, status: str, code: str | None, text: str) -> None:
        """The command's completion: ``tag OK|NO|BAD [code] text``."""
        if self._closing or self.transport is None:
            return
        text = _clean(text)
        self.transport.write(self.core.send(Tagged(tag, status, code, text)))
        if status == "BAD":
            self.errors.error()
        else:
            self.errors.forgive()
        if self.journal is not None:
            self._journal_tagged(tag, status, code, text)

    def _journal_tagged(self, tag: str, status: str, code: str | None, text: str) -> None:
        pending = self._journaled.pop(tag, None)
        if pending is None:  # answered before it was a command (a literal refused)
            pending = (None, None, bool(self.core.tls), self.user, None, False, "")
        verb, args, tls, user, mailbox, secret, hide = pending
        if hide:
            text = text.replace(hide, REDACTED)
        if secret and status == "BAD":
            text = REDACTED  # a syntax error may quote the arguments
        self.journal_command(
            verb, args, status, text, tls=tls, user=user, response_code=code, mailbox=mailbox
        )

    def _journal_pending(self, command: Command) -> None:
        """Remember the command for the journal, its secrets out."""
        state = (bool(self.core.tls), self.user,
                 self.selected.name if self.selected is not None else None)
        if command.verb not in self.command_table:
            # Not a command we know: maybe a password typed at the wrong moment.
            self._journaled[command.tag] = (None, REDACTED, *state, True, command.verb[:30])
            return
        args = None if command.truncated else journal_args(command)
        self._journaled[command.tag] = (command.verb, args, *state,
                                        command.verb in _SECRET_VERBS, "")

    def done(self, command: Command, text: str, code: str | None = None) -> None:
        """Untagged updates (where allowed), then the tagged OK."""
        verb = command.verb
        self.updates(expunge_allowed=verb not in _NO_EXPUNGE)
        self.tagged(command.tag, "OK", code, text)

    def _too_many_errors(self) -> None:
        log.info("session %s: too many errors from %s", self.session_id, self.client_ip)
        self.untagged("BYE Too many invalid commands")
        self._close()

    def _fault(self, command: str, tag: str | None = None) -> FaultAction | None:
        """Apply an injected fault; returns it if it replaced (or delays) the answer."""
        action = self._fault_action(
            command, auth="yes" if self.user else "no", user=self.user or ""
        )
        if action is None or action.kind != "reply":
            return action
        status = action.status.upper()
        code, text = action.response_code_and_text()
        shown = f"[{code}] {text}" if code else text
        if status == "BYE":
            self.untagged(f"BYE {shown}".rstrip())
            self._close()
        elif tag is None:
            # The greeting: OK (or PREAUTH, shown as OK: nobody is logged in).
            self.untagged(f"{'OK' if status in ('OK', 'PREAUTH') else status} {shown}".rstrip())
        else:
            self.tagged(tag, status if status in ("OK", "NO", "BAD") else "NO", code, text)
        return action

    def _capabilities(self) -> str:
        caps = ["IMAP4rev1", "LITERAL-", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE",
                "UNSELECT", "UIDPLUS", "MOVE", "UTF8=ACCEPT", "BINARY", "SPECIAL-USE",
                "CREATE-SPECIAL-USE", "LIST-EXTENDED", "LIST-STATUS", "ESEARCH", "CONDSTORE",
                "QRESYNC", "SORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES"]
        if self.context.settings.quota_bytes is not None:
            caps += ["QUOTA", "QUOTA=RES-STORAGE"]
        if self.user is None:
            if self.context.ssl_context is not None and not self.core.tls:
                caps.append("STARTTLS")
            if self._plaintext_allowed():
                caps += [f"AUTH={name}" for name in ["PLAIN", *extra_mechanisms(self.context)]]
            else:
                caps.append("LOGINDISABLED")
        return " ".join(caps)

    def _plaintext_allowed(self) -> bool:
        """LOGIN and AUTHENTICATE PLAIN only over TLS, or from loopback (like Dovecot)."""
        return bool(self.core.tls) or self.is_loopback()

    # -- literals, continuations ----------------------------------------------

    def _on_literal(self, event: LiteralRequested) -> None:
        """A synchronizing literal is announced: refuse it now, or say ``+``."""
        head = self.core.command_so_far
        verb = head.split(" ", 2)[1].upper() if head.count(" ") >= 1 else ""
        limit = self.context.settings.max_literal if self.user else PREAUTH_MAX_LITERAL
        refusal: tuple[str, str, str] | None = None
        if event.size > limit:
            refusal = ("NO", "TOOBIG", f"Literal too large (limit {limit} octets)")
        elif verb == "APPEND" and self.user is not None:
            if event.tag not in self._literal_faults:
                action = self._fault("append", event.tag)
                if action is not None and action.kind != "delay":
                    self.core.reject_literal()
                    return
                self._literal_faults[event.tag] = action
            if self.mailboxes is not None and self.mailboxes.quota_bytes is not None:
                try:
                    self.mailboxes.check_quota(event.size)
                except MailboxError as error:
                    refusal = ("NO", error.code, "Quota exceeded (mailbox for user is full)")
        if refusal is not None:
            self._literal_faults.pop(event.tag, None)
            if self.journal is not None:
                known = verb if verb in self.command_table else None
                self._journaled[event.tag] = (known, None, bool(self.core.tls), self.user,
                                              None, known in _SECRET_VERBS, "")
            self.tagged(event.tag, *refusal)
            self.core.reject_literal()
            return
        self.write(self.core.send(Continuation("Ready for literal data")))

    def _on_continuation(self, event: ContinuationResponse) -> None:
        if self._sasl_tag is not None:
            self._sasl_tag = None
            self._sasl_answer(event.text)
        elif self._idle_tag is not None:
            tag, self._idle_tag = self._idle_tag, None
            self._stop_idle()
            if event.text.strip().upper() == "DONE":
                self.tagged(tag, "OK", None, "Idle completed")
            else:
                self.tagged(tag, "BAD", None, "Expected DONE")

    # -- commands -------------------------------------------------------------

    def _on_command(self, command: Command) -> None:
        tag = command.tag
        verb = command.verb
        if self.journal is not None:
            self._journal_pending(command)
        if command.truncated:
            if command.literals:
                self.tagged(tag, "NO", "TOOBIG", "Literal too large")
            else:
                self.tagged(tag, "BAD", None, "Command line too long")
            return
        if len(command.args) > MAX_ARGUMENTS_TEXT and verb not in _LONG_ARGUMENTS:
            self.tagged(tag, "BAD", None, "Command too long")
            return
        handler = self.command_table.get(verb)
        if handler is None:
            self.tagged(tag, "BAD", None, f"Unknown command {_clean(verb[:30])}")
            return
        if verb not in _VALID_IN[self.state]:
            self.tagged(tag, "BAD", "CLIENTBUG", "Command not valid in this state")
            return
        if tag in self._literal_faults:
            action = self._literal_faults.pop(tag)
        else:
            name = verb.lower()
            action = None
            if name.startswith("uid "):
                action = self._fault("uid", tag)
                name = name[4:]
            if action is None:
                action = self._fault(name, tag)
            if action is not None and action.kind != "delay" and verb in ("SELECT", "EXAMINE"):
                self.deselect()
        if action is not None and action.kind != "delay":
            return
        if action is not None:
            self.defer_tagged(self._later(action.seconds, lambda: self._run(handler, command)))
            return
        self._run(handler, command)

    @property
    def state(self) -> IMAPState:
        """The session's state (RFC 3501 3) as this server knows it.

        The core follows the tagged responses it sends; the server also knows when the
        selected mailbox went (deleted, or a SELECT refused by a fault).
        """
        if self.user is None:
            return IMAPState.NOT_AUTHENTICATED
        if self.selected is None:
            return IMAPState.AUTHENTICATED
        return IMAPState.SELECTED

    def _run(self, handler: Handler, command: Command) -> None:
        try:
            handler(self, command)
        except IMAPSyntaxError as error:
            self.tagged(command.tag, "BAD", None, str(error) or "Syntax error")
        except SearchCharsetError as error:
            self.tagged(command.tag, "NO", error.code, "Unsupported charset")
        except MailboxError as error:
            self.tagged(command.tag, "NO", error.code, error.message)
        except OSError as error:
            log.warning("session %s: store error: %s", self.session_id, error)
            self.tagged(command.tag, "NO", *store_failure(error))
        except Exception:
            log.exception("session %s: internal error in %s", self.session_id, command.verb)
            self.tagged(command.tag, "NO", "SERVERBUG", "Internal error; try again later")

    # -- authenticated --------------------------------------------------------

    @property
    def store(self) -> UserMailboxes:
        """The logged-in user's mailboxes."""
        assert self.mailboxes is not None
        return self.mailboxes

    def deselect(self) -> None:
        self.selected = None

    def _stop_idle(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._idle_task is not None:
            self._idle_task.cancel()
            self._idle_task = None

    # -- selected -------------------------------------------------------------

    @property
    def box(self) -> Mailbox:
        """The selected mailbox (the selected-state commands run only with one)."""
        assert self.selected is not None
        return self.selected

    def updates(self, *, expunge_allowed: bool) -> None:
        """Announce what other sessions changed in the selected mailbox."""
        mailbox = self.selected
        if mailbox is None or not expunge_allowed or self._closing:
            return
        try:
            changes = mailbox.refresh()
        except MailboxError:
            self.untagged("BYE [NONEXISTENT] The selected mailbox was deleted")
            self._close()
            return
        if changes.uidvalidity_changed:
            self.untagged("BYE [UNAVAILABLE] UIDVALIDITY changed; please reconnect")
            self._close()
            return
        if not changes:
            return
        if self.qresync and changes.expunged_uids:
            self.untagged(vanished_line(sorted(changes.expunged_uids), earlier=False))
        elif not self.qresync:
            for seq in changes.expunged_seqs:
                self.untagged(f"{seq} EXPUNGE")
        view = mailbox.view
        if changes.new_uids:
            self.untagged(f"{len(view)} EXISTS")
            self.untagged(f"{mailbox.recent_count} RECENT")
        for uid in sorted(changes.flag_changed_uids):
            position = view.position(uid)
            if position >= 0:
                extra = f" UID {uid} MODSEQ ({view.modseqs[position]})" if self.condstore else ""
                flags = " ".join(sorted(view.flags(position)))
                self.untagged(f"{position + 1} FETCH (FLAGS ({flags}){extra})")

    # -- what the layer above does (login) ------------------------------------

    def _sasl_answer(self, line: str) -> None:
        raise NotImplementedError
