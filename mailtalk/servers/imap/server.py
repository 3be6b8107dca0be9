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

The session (this module) reads commands, checks them against the IMAP core's
state table, applies injected faults and answers the commands of any state, of
logging in, ENABLE and IDLE; the commands on mailboxes are
:mod:`mailtalk.servers.imap.mailboxes`, those on the selected mailbox
:mod:`mailtalk.servers.imap.selected`: functions of the session and the command,
which answer through the session's ``untagged``, ``tagged`` and ``done``.

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
import base64
import binascii
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from mailtalk.protocols import sasl, sasl_server
from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    NEED_DATA,
    Continuation,
    RemoteProtocolError,
    Role,
    printable,
)
from mailtalk.protocols.imap import (
    VALID_COMMANDS,
    Command,
    ContinuationResponse,
    IMAPConnection,
    IMAPState,
    LiteralRequested,
    Tagged,
    Untagged,
)
from mailtalk.servers.guard import SessionErrors, Verdict
from mailtalk.servers.imap import mailboxes, quota, selected
from mailtalk.servers.imap.mailboxes import SPECIAL_USE
from mailtalk.servers.imap.output import astring_text
from mailtalk.servers.imap.parse import parse_astrings
from mailtalk.servers.imap.qresync import vanished_line
from mailtalk.servers.imap.tokens import Atom, IMAPSyntaxError, SearchCharsetError, tokenize
from mailtalk.servers.journal import REDACTED
from mailtalk.servers.sasl import extra_mechanisms, server_mechanism
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


def _clean(text: str) -> str:
    """Text fit for a response line: printable, and not ending like a literal marker."""
    text = printable(text)[:300]
    return text + "." if text.endswith("}") else text


def store_failure(error: OSError) -> tuple[str, str]:
    """The response code and text for a disk error: a full disk is OVERQUOTA (as Dovecot)."""
    if isinstance(error, StoreFullError):
        return "OVERQUOTA", "Not enough disk space"
    return "UNAVAILABLE", "The mail store failed; try later"


Handler = Callable[["IMAPServerProtocol", Command], None]
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


class IMAPServerProtocol(ServerSession):
    """One IMAP connection; ``kind`` is the listener: imap (STARTTLS) or imaps."""

    fault_protocol = "imap"

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
        self._sasl_tag: str | None = None
        self._idle_tag: str | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._watch: MailboxWatch | None = None
        self._literal_faults: dict[str, Any] = {}  # tag -> fault checked at its literal
        # tag -> (folder, stream) of an APPEND whose literal goes straight to disk
        self.append_streams: dict[str, Any] = {}
        self.core.literal_sink = lambda head, size: mailboxes.open_append_stream(self, head, size)
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
        if command.verb not in COMMANDS:
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
                known = verb if verb in COMMANDS else None
                self._journaled[event.tag] = (known, None, bool(self.core.tls), self.user,
                                              None, known in _SECRET_VERBS, "")
            self.tagged(event.tag, *refusal)
            self.core.reject_literal()
            return
        self.write(self.core.send(Continuation("Ready for literal data")))

    def _on_continuation(self, event: ContinuationResponse) -> None:
        if self._sasl_tag is not None:
            tag, self._sasl_tag = self._sasl_tag, None
            self._sasl_answer(tag, event.text)
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
        handler = COMMANDS.get(verb)
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

    def _login(self, command: Command) -> None:
        if not self._plaintext_allowed():
            self.tagged(command.tag, "NO", "PRIVACYREQUIRED",
                         "Plaintext authentication disallowed on non-secure connections")
            return
        name, secret = parse_astrings(command.args, command.literals, 2)
        self.defer_tagged(self._verify(command.tag, name, secret, "LOGIN"), command.tag)

    def _authenticate(self, command: Command) -> None:
        values = tokenize(command.args, command.literals)
        if not values or not isinstance(values[0], Atom) or len(values) > 2:
            raise IMAPSyntaxError("AUTHENTICATE takes a mechanism and an optional initial response")
        mechanism = values[0].value.upper()
        exchange = server_mechanism(mechanism, self.context)
        if mechanism != "PLAIN" and exchange is None:
            self.tagged(command.tag, "NO", None, "Unsupported authentication mechanism")
            return
        if not self._plaintext_allowed():
            self.tagged(command.tag, "NO", "PRIVACYREQUIRED",
                         "Plaintext authentication disallowed on non-secure connections")
            return
        if exchange is not None:
            self._exchange = exchange
            data: bytes | None = None
            if len(values) == 2:  # SASL-IR
                initial = values[1]
                try:
                    data = sasl.decode(initial.value if isinstance(initial, Atom) else "")
                except sasl.SASLError:
                    self._exchange = None
                    self.tagged(command.tag, "BAD", None, "Invalid base64 data")
                    return
            self._sasl_step(command.tag, exchange.start(data))
            return
        if len(values) == 2:
            initial = values[1]
            self._sasl_answer(command.tag, initial.value if isinstance(initial, Atom) else "")
            return
        self._sasl_tag = command.tag
        self.write(self.core.send(Continuation("")))

    def _sasl_answer(self, tag: str, line: str) -> None:
        line = line.strip()
        if line == "*":
            self._exchange = None
            self.tagged(tag, "BAD", None, "Authentication cancelled")
            return
        if self._exchange is not None:
            try:
                data = sasl.decode(line)
            except sasl.SASLError:
                self._exchange = None
                self.tagged(tag, "BAD", None, "Invalid base64 data")
                return
            self._sasl_step(tag, self._exchange.respond(data))
            return
        try:
            decoded = base64.b64decode("" if line == "=" else line, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            self.tagged(tag, "BAD", None, "Invalid base64 data")
            return
        parts = decoded.split("\0")
        if len(parts) != 3:
            self.tagged(tag, "BAD", None, "Malformed PLAIN response")
            return
        authzid, name, secret = parts
        if authzid and authzid != name:
            self.tagged(tag, "NO", "AUTHORIZATIONFAILED", "Cannot act as another user")
            return
        self.defer_tagged(self._verify(tag, name, secret, "PLAIN"), tag)

    def _sasl_step(self, tag: str, step: sasl_server.ServerStep) -> None:
        """The next move of a CRAM-MD5, SCRAM or token exchange (servers.sasl)."""
        exchange = self._exchange
        assert exchange is not None
        if isinstance(step, sasl_server.Challenge):
            self._sasl_tag = tag
            self.write(self.core.send(Continuation(sasl.encode(step.data))))
        elif isinstance(step, sasl_server.Check):
            self.defer_tagged(self.sasl_verdict(step, functools.partial(self._sasl_step, tag),
                                                functools.partial(self._decided, tag)), tag)
        else:
            self._exchange = None
            if step.malformed:
                self.tagged(tag, "BAD", None, step.malformed)
            else:
                verdict = Verdict.OK if step.ok else Verdict.FAILED
                self._decided(tag, verdict, step.user, exchange.name)

    async def _verify(self, tag: str, name: str, secret: str, mechanism: str) -> None:
        context = self.context
        verdict = await context.guard.check_password(context.users, name, secret, self.client_ip)
        if self._closing:
            return
        self._decided(tag, verdict, name, mechanism)

    def _decided(self, tag: str, verdict: Verdict, name: str, mechanism: str) -> None:
        """A login's verdict, journaled and answered."""
        if verdict is Verdict.REFUSED:
            log.info("session %s: login refused: too many failures from %s", self.session_id,
                     self.client_ip)
            if self.journal is not None:
                self.journal_write("auth", user=name, mechanism=mechanism, ok=False)
            self.tagged(tag, "NO", "UNAVAILABLE",
                        f"Too many failed logins from {self.client_ip}; try again later")
            return
        ok = verdict is Verdict.OK
        if ok:
            try:
                mailboxes = self.context.mailstore.user_mailboxes(
                    name, quota_bytes=self.context.settings.quota_bytes
                )
            except ValueError:
                ok = False
            else:
                try:
                    mailboxes.create_default_folders(SPECIAL_USE)
                except OSError as error:
                    # A full disk must not keep a user from logging in to delete
                    # mail: the folders are made at a later login.
                    log.warning("session %s: default folders not made: %s",
                                self.session_id, error)
        if self.journal is not None:
            self.journal_write("auth", user=name, mechanism=mechanism, ok=ok)
        if not ok:
            log.info("session %s: authentication failed for %s", self.session_id, name)
            self.errors.auth_failed()
            self.tagged(tag, "NO", "AUTHENTICATIONFAILED", "Authentication failed.")
            return
        self.user = name
        self.mailboxes = mailboxes
        self.core.max_literal = self.context.settings.max_literal
        log.info("session %s: %s logged in", self.session_id, name)
        self.tagged(tag, "OK", f"CAPABILITY {self._capabilities()}", "Logged in")

    # -- authenticated --------------------------------------------------------

    @property
    def store(self) -> UserMailboxes:
        """The logged-in user's mailboxes."""
        assert self.mailboxes is not None
        return self.mailboxes

    def deselect(self) -> None:
        self.selected = None

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
_VALID_IN: Final = {state: frozenset(verbs) for state, verbs in VALID_COMMANDS.items()}

__all__ = ["COMMANDS", "IMAPServerProtocol", "store_failure"]
