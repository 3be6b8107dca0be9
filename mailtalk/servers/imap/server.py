"""The reference IMAP server (RFC 3501, with RFC 9051 behaviour where it is a superset).

One asyncio Protocol per connection around the IMAP core in the server role, on
the Maildir++ store (:mod:`mailtalk.store.mailbox`). Extensions: LITERAL-
(RFC 7888), SASL-IR (RFC 4959), IDLE (RFC 2177), NAMESPACE (RFC 2342),
UNSELECT (RFC 3691), UIDPLUS (RFC 4315), MOVE (RFC 6851), ENABLE (RFC 5161),
ID (RFC 2971), UTF8=ACCEPT (RFC 6855, names only), BINARY (RFC 3516: FETCH
BINARY[...], BINARY.SIZE[...], APPEND with a ``~{n}`` literal8; see
:mod:`mailtalk.servers.imap.binary`), STARTTLS and AUTH=PLAIN; response codes
from RFC 5530.

**Literals.** The core keeps a command's literals in memory (up to its
``max_literal``, beyond which it reads and drops them); an APPEND literal over
``STREAM_LITERAL_OVER`` goes straight to the folder's tmp/ as it arrives (a store
error there, such as a full disk, ends the writing, not the connection), a
smaller one is buffered whole, then written to the
folder in chunks through :meth:`Mailbox.begin_append`. Memory stays bounded by
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
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Final

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
from mailtalk.servers.imap.binary import CorruptTransferEncoding, UnknownTransferEncoding
from mailtalk.servers.imap.fetch import FetchRenderer, format_internaldate, render_fetch
from mailtalk.servers.imap.message import FetchMessage
from mailtalk.servers.imap.parse import (
    FetchItem,
    decode_mailbox_name,
    encode_mailbox_name,
    list_pattern_matches,
    parse_append,
    parse_astrings,
    parse_fetch,
    parse_list,
    parse_mailbox,
    parse_sequence_set,
    parse_status,
    parse_store,
)
from mailtalk.servers.imap.search import SearchCharsetError, parse_search, search
from mailtalk.servers.imap.tokens import Atom, IMAPSyntaxError, tokenize
from mailtalk.servers.session import ServerSession
from mailtalk.store.mailbox import PERMANENT_FLAGS, MailboxError
from mailtalk.store.maildir import StoreFullError

if TYPE_CHECKING:
    from datetime import datetime

    from mailtalk.servers.context import ServerContext
    from mailtalk.servers.faults import FaultAction
    from mailtalk.servers.imap.parse import SequenceSet
    from mailtalk.store.mailbox import Mailbox, MailboxWatch, MessageInfo, UserMailboxes

log = logging.getLogger("mailtalk.imap")

DELIMITER: Final = "."
CHUNK: Final = 64 * 1024
# Before login a literal (a user name or password) has no reason to be large.
PREAUTH_MAX_LITERAL: Final = 64 * 1024
# An APPEND literal larger than this goes straight to the folder's tmp/ as it
# arrives, so a 200 MB message never sits in memory.
STREAM_LITERAL_OVER: Final = 256 * 1024
IDLE_POLL_SECONDS: Final = 1.0
IDLE_AUTOLOGOUT: Final = 30 * 60.0  # RFC 3501 5.4: at least 30 minutes while idling
MAX_BAD_COMMANDS: Final = 50
SYSTEM_FLAGS: Final = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
_DATA_FREE_ITEMS: Final = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE"})
# RFC 3501 7.4.1: no EXPUNGE while answering these (their sequence numbers must hold).
_NO_EXPUNGE: Final = frozenset({"FETCH", "STORE", "SEARCH"})
_UID_VERBS: Final = frozenset({"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE"})


def _header_only(item: FetchItem) -> bool:
    """Whether the item needs no more of the message than its top-level header block."""
    name = item.name
    section = item.section
    if section is None:
        return name in _DATA_FREE_ITEMS or name in ("ENVELOPE", "RFC822.HEADER")
    return (
        name == "BODY"
        and not section.part
        and section.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
    )


def _clean(text: str) -> str:
    """Text fit for a response line: printable, and not ending like a literal marker."""
    text = printable(text)[:300]
    return text + "." if text.endswith("}") else text


def store_failure(error: OSError) -> tuple[str, str]:
    """The response code and text for a disk error: a full disk is OVERQUOTA (as Dovecot)."""
    if isinstance(error, StoreFullError):
        return "OVERQUOTA", "Not enough disk space"
    return "UNAVAILABLE", "The mail store failed; try later"


class _AppendStream:
    """Where a streamed APPEND literal goes: a store error (disk full, quota) stops the
    writing, not the connection; the command's answer says what went wrong."""

    def __init__(self, appender: Any) -> None:
        self.appender = appender
        self.error: Exception | None = None

    def write(self, data: bytes) -> None:
        if self.error is not None:
            return  # the rest of the literal is read and dropped
        try:
            self.appender.write(data)
        except Exception as error:
            self.error = error
            self.appender.abort()


def quote(value: str) -> str:
    """An IMAP quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def uid_set(uids: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1:3,7`` (order kept: COPYUID pairs the two sets by position)."""
    parts: list[str] = []
    start = prev = None
    for uid in uids:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


class _SearchView:
    """A message as SEARCH sees it; the file is read only if a key needs its text."""

    def __init__(self, mailbox: Mailbox, info: MessageInfo, seq: int) -> None:
        self._mailbox = mailbox
        self._info = info
        self.seq = seq
        self.uid = info.uid
        self.flags = info.flags - {"\\Recent"}
        self.recent = "\\Recent" in info.flags
        self.size = info.rfc822_size
        self._message: FetchMessage | None = None

    @property
    def internaldate_datetime(self) -> datetime:
        return self._info.internaldate

    def _loaded(self) -> FetchMessage:
        if self._message is None:
            try:
                raw = self._mailbox.read_message(self.uid)
            except (MailboxError, OSError):
                raw = b""
            self._message = FetchMessage(raw, uid=self.uid, flags=self.flags,
                                         internaldate=self._info.internaldate,
                                         rfc822_size=self.size, seq=self.seq)
        return self._message

    def header_values(self, name: str) -> list[str]:
        return self._loaded().header_values(name)

    def has_header(self, name: str) -> bool:
        return self._loaded().has_header(name)

    def header_text(self) -> str:
        return self._loaded().header_text()

    def body_text(self) -> str:
        return self._loaded().body_text()


Handler = Callable[["IMAPServerProtocol", Command], None]


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
        self._sasl_tag: str | None = None
        self._idle_tag: str | None = None
        self._idle_task: asyncio.Task[None] | None = None
        self._idle_wake: asyncio.Event | None = None
        self._watch: MailboxWatch | None = None
        self._literal_faults: dict[str, Any] = {}  # tag -> fault checked at its literal
        self._streams: dict[str, Any] = {}  # tag -> (folder, Appender) of a streamed APPEND
        self.core.literal_sink = self._append_sink
        self._bad_commands = 0

    # -- connection -----------------------------------------------------------

    def refuse(self) -> None:
        self._untagged("BYE [UNAVAILABLE] Too many connections, try again later")

    def greet(self) -> None:
        action = self._fault("connect")
        if action is not None:
            if action.kind == "delay":
                self._defer_tagged(self._later(action.seconds, self._greet))
            return
        self._greet()

    def _greet(self) -> None:
        self._untagged(f"OK [CAPABILITY {self._capabilities()}] mailtalk IMAP server ready")

    def cleanup(self) -> None:
        self._stop_idle()
        for _, stream in self._streams.values():
            stream.appender.abort()  # the connection went mid-APPEND: nothing lands
        self._streams.clear()

    def _append_sink(self, head: str, size: int) -> Any:
        """Open the APPEND's target for a large literal, so it streams to disk."""
        if self.user is None or size <= STREAM_LITERAL_OVER:
            return None
        if size > self.context.settings.max_literal:
            return None  # refused before "+" (or dropped, for LITERAL+): TOOBIG
        tag, _, rest = head.partition(" ")
        verb, _, args = rest.partition(" ")
        if verb.upper() != "APPEND" or "{" not in args:
            return None
        try:
            request = parse_append(args[: args.rfind("{")] + "{0}", (b"",), utf8=True)
            name = request.mailbox
            if self.utf8 and name != "INBOX":
                name = encode_mailbox_name(name)
            target = self._store.target(name)
            appender = target.begin_append(
                request.flags, request.internaldate, expected_size=size, crlf_to_lf=True
            )
        except Exception:
            # TRYCREATE, OVERQUOTA, a syntax error: the usual path answers it.
            return None
        stream = _AppendStream(appender)
        self._streams[tag] = (target, stream)
        return stream

    def idle_limit(self) -> float:
        # RFC 2177: clients re-issue IDLE every 29 minutes; let an idling one be for
        # 30 minutes whatever the (shorter) command timeout.
        limit = self.context.settings.idle_timeout
        return max(limit, IDLE_AUTOLOGOUT) if self._idle_tag is not None else limit

    def on_idle(self) -> None:
        self._untagged("BYE Disconnected for inactivity.")

    def _close(self) -> None:
        self._stop_idle()
        super()._close()

    # -- the loop -------------------------------------------------------------

    def process(self) -> None:
        while not self._busy and not self._closing:
            try:
                event = self.core.next_command()
            except RemoteProtocolError as error:
                if "closed in the middle" in str(error):
                    self._close()
                    return
                self._bad()
                self._untagged(f"BAD {_clean(str(error))}")
                continue
            if event is NEED_DATA:
                return
            if event is CONNECTION_CLOSED:
                self._close()
                return
            if isinstance(event, LiteralRequested):
                self._on_literal(event)
            elif isinstance(event, ContinuationResponse):
                self._on_continuation(event)
            else:
                assert isinstance(event, Command)
                self._on_command(event)

    def _defer_tagged(self, work: Awaitable[None], tag: str | None = None) -> None:
        """Deferred work for a command: its errors become that command's tagged NO."""

        def answer(error: Exception) -> None:
            if isinstance(error, MailboxError):
                if tag is not None:
                    self._tagged(tag, "NO", error.code, error.message)
            elif isinstance(error, OSError):
                log.warning("session %s: store error: %s", self.session_id, error)
                if tag is not None:
                    self._tagged(tag, "NO", *store_failure(error))
            else:
                log.error("session %s: internal error", self.session_id, exc_info=error)
                if tag is not None:
                    self._tagged(tag, "NO", "SERVERBUG", "Internal error; try again later")

        self._defer(work, answer)

    def _write(self, data: bytes) -> None:
        if not self._closing and self.transport is not None:
            self.transport.write(data)

    def _untagged(self, text: str, literals: tuple[bytes, ...] = ()) -> None:
        if self._closing or self.transport is None:
            return
        self.transport.write(self.core.send(Untagged(text, literals)))

    def _tagged(self, tag: str, status: str, code: str | None, text: str) -> None:
        if self._closing or self.transport is None:
            return
        self.transport.write(self.core.send(Tagged(tag, status, code, _clean(text))))

    def _bad(self) -> None:
        self._bad_commands += 1
        if self._bad_commands >= MAX_BAD_COMMANDS:
            self._untagged("BYE Too many invalid commands")
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
            self._untagged(f"BYE {shown}".rstrip())
            self._close()
        elif tag is None:
            # The greeting: OK (or PREAUTH, shown as OK: nobody is logged in).
            self._untagged(f"{'OK' if status in ('OK', 'PREAUTH') else status} {shown}".rstrip())
        else:
            self._tagged(tag, status if status in ("OK", "NO", "BAD") else "NO", code, text)
        return action

    def _capabilities(self) -> str:
        caps = ["IMAP4rev1", "LITERAL-", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE",
                "UNSELECT", "UIDPLUS", "MOVE", "UTF8=ACCEPT", "BINARY"]
        if self.user is None:
            if self.context.ssl_context is not None and not self.core.tls:
                caps.append("STARTTLS")
            if self._plaintext_allowed():
                caps.append("AUTH=PLAIN")
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
            self._tagged(event.tag, *refusal)
            self.core.reject_literal()
            return
        self._write(self.core.send(Continuation("Ready for literal data")))

    def _on_continuation(self, event: ContinuationResponse) -> None:
        if self._sasl_tag is not None:
            tag, self._sasl_tag = self._sasl_tag, None
            self._sasl_answer(tag, event.text)
        elif self._idle_tag is not None:
            tag, self._idle_tag = self._idle_tag, None
            self._stop_idle()
            if event.text.strip().upper() == "DONE":
                self._tagged(tag, "OK", None, "Idle completed")
            else:
                self._tagged(tag, "BAD", None, "Expected DONE")

    # -- commands -------------------------------------------------------------

    def _on_command(self, command: Command) -> None:
        tag = command.tag
        verb = command.verb
        if command.truncated:
            self._bad()
            if command.literals:
                self._tagged(tag, "NO", "TOOBIG", "Literal too large")
            else:
                self._tagged(tag, "BAD", None, "Command line too long")
            return
        handler = COMMANDS.get(verb)
        if handler is None:
            self._bad()
            self._tagged(tag, "BAD", None, f"Unknown command {_clean(verb[:30])}")
            return
        if verb not in _VALID_IN[self.state]:
            self._bad()
            self._tagged(tag, "BAD", "CLIENTBUG", "Command not valid in this state")
            return
        self._bad_commands = 0
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
                self._deselect()
        if action is not None and action.kind != "delay":
            return
        if action is not None:
            self._defer_tagged(self._later(action.seconds, lambda: self._run(handler, command)))
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
            self._tagged(command.tag, "BAD", None, str(error) or "Syntax error")
        except SearchCharsetError as error:
            self._tagged(command.tag, "NO", error.code, "Unsupported charset")
        except MailboxError as error:
            self._tagged(command.tag, "NO", error.code, error.message)
        except OSError as error:
            log.warning("session %s: store error: %s", self.session_id, error)
            self._tagged(command.tag, "NO", *store_failure(error))
        except Exception:
            log.exception("session %s: internal error in %s", self.session_id, command.verb)
            self._tagged(command.tag, "NO", "SERVERBUG", "Internal error; try again later")

    def _done(self, command: Command, text: str, code: str | None = None) -> None:
        """Untagged updates (where allowed), then the tagged OK."""
        verb = command.verb
        self._updates(expunge_allowed=verb not in _NO_EXPUNGE)
        self._tagged(command.tag, "OK", code, text)

    # -- any state ------------------------------------------------------------

    def _capability(self, command: Command) -> None:
        self._untagged(f"CAPABILITY {self._capabilities()}")
        self._done(command, "Capability completed")

    def _noop(self, command: Command) -> None:
        self._done(command, "NOOP completed")

    def _logout(self, command: Command) -> None:
        self._untagged("BYE Logging out")
        self._tagged(command.tag, "OK", None, "Logout completed")
        self._close()

    def _id(self, command: Command) -> None:
        self._untagged('ID ("name" "mailtalk" "vendor" "mailtalk" "support-url" NIL)')
        self._done(command, "ID completed")

    # -- not authenticated ----------------------------------------------------

    def _starttls(self, command: Command) -> None:
        if self.context.ssl_context is None or self.core.tls:
            self._tagged(command.tag, "BAD", None, "TLS is already active" if self.core.tls
                         else "STARTTLS is not available here")
            return
        self._tagged(command.tag, "OK", None, "Begin TLS negotiation now")
        self._defer_tagged(self._handshake())

    async def _handshake(self) -> None:
        await self._start_tls()

    def _login(self, command: Command) -> None:
        if not self._plaintext_allowed():
            self._tagged(command.tag, "NO", "PRIVACYREQUIRED",
                         "Plaintext authentication disallowed on non-secure connections")
            return
        name, secret = parse_astrings(command.args, command.literals, 2)
        self._defer_tagged(self._verify(command.tag, name, secret), command.tag)

    def _authenticate(self, command: Command) -> None:
        values = tokenize(command.args, command.literals)
        if not values or not isinstance(values[0], Atom) or len(values) > 2:
            raise IMAPSyntaxError("AUTHENTICATE takes a mechanism and an optional initial response")
        if values[0].value.upper() != "PLAIN":
            self._tagged(command.tag, "NO", None, "Unsupported authentication mechanism")
            return
        if not self._plaintext_allowed():
            self._tagged(command.tag, "NO", "PRIVACYREQUIRED",
                         "Plaintext authentication disallowed on non-secure connections")
            return
        if len(values) == 2:
            initial = values[1]
            self._sasl_answer(command.tag, initial.value if isinstance(initial, Atom) else "")
            return
        self._sasl_tag = command.tag
        self._write(self.core.send(Continuation("")))

    def _sasl_answer(self, tag: str, line: str) -> None:
        line = line.strip()
        if line == "*":
            self._tagged(tag, "BAD", None, "Authentication cancelled")
            return
        try:
            decoded = base64.b64decode("" if line == "=" else line, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            self._tagged(tag, "BAD", None, "Invalid base64 data")
            return
        parts = decoded.split("\0")
        if len(parts) != 3:
            self._tagged(tag, "BAD", None, "Malformed PLAIN response")
            return
        authzid, name, secret = parts
        if authzid and authzid != name:
            self._tagged(tag, "NO", "AUTHORIZATIONFAILED", "Cannot act as another user")
            return
        self._defer_tagged(self._verify(tag, name, secret), tag)

    async def _verify(self, tag: str, name: str, secret: str) -> None:
        ok = await self.context.verify_password(name, secret)
        if self._closing:
            return
        if ok:
            try:
                mailboxes = self.context.mailstore.user_mailboxes(
                    name, quota_bytes=self.context.settings.quota_bytes
                )
            except ValueError:
                ok = False
        if not ok:
            log.info("session %s: authentication failed for %s", self.session_id, name)
            self._tagged(tag, "NO", "AUTHENTICATIONFAILED", "Authentication failed.")
            return
        self.user = name
        self.mailboxes = mailboxes
        self.core.max_literal = self.context.settings.max_literal
        log.info("session %s: %s logged in", self.session_id, name)
        self._tagged(tag, "OK", f"CAPABILITY {self._capabilities()}", "Logged in")

    # -- authenticated --------------------------------------------------------

    @property
    def _store(self) -> UserMailboxes:
        assert self.mailboxes is not None
        return self.mailboxes

    def _mailbox_arg(self, value: Any) -> str:
        name = parse_mailbox(value, utf8=True)
        if self.utf8 and name != "INBOX":
            name = encode_mailbox_name(name)
        return name

    def _show(self, name: str) -> str:
        return quote(decode_mailbox_name(name) if self.utf8 else name)

    def _one_mailbox(self, command: Command) -> str:
        values = tokenize(command.args, command.literals)
        if len(values) != 1:
            raise IMAPSyntaxError(f"{command.verb} takes one mailbox name")
        return self._mailbox_arg(values[0])

    def _enable(self, command: Command) -> None:
        values = tokenize(command.args, command.literals)
        if not values:
            raise IMAPSyntaxError("ENABLE needs capability names")
        enabled = []
        for value in values:
            if isinstance(value, Atom) and value.value.upper() == "UTF8=ACCEPT" and not self.utf8:
                self.utf8 = True
                enabled.append("UTF8=ACCEPT")
        self._untagged(" ".join(["ENABLED", *enabled]))
        self._done(command, "Enabled")

    def _namespace(self, command: Command) -> None:
        self._untagged(f'NAMESPACE (("" "{DELIMITER}")) NIL NIL')
        self._done(command, "Namespace completed")

    def _select(self, command: Command) -> None:
        self._deselect()
        name = self._one_mailbox(command)
        read_only = command.verb == "EXAMINE"
        mailbox = self._store.open(name, read_only=read_only)
        self.selected = mailbox
        messages = mailbox.messages()
        keywords = sorted({f for m in messages for f in m.flags if not f.startswith("\\")})
        flags = " ".join([*SYSTEM_FLAGS, *keywords])
        self._untagged(f"FLAGS ({flags})")
        permanent = "" if read_only else " ".join([*PERMANENT_FLAGS, *keywords])
        self._untagged(f"OK [PERMANENTFLAGS ({permanent})] Flags permitted")
        self._untagged(f"{len(messages)} EXISTS")
        self._untagged(f"{mailbox.recent_count} RECENT")
        unseen = next((n for n, m in enumerate(messages, 1) if "\\Seen" not in m.flags), None)
        if unseen is not None:
            self._untagged(f"OK [UNSEEN {unseen}] First unseen")
        self._untagged(f"OK [UIDVALIDITY {mailbox.uidvalidity}] UIDs valid")
        self._untagged(f"OK [UIDNEXT {mailbox.uidnext}] Predicted next UID")
        self._tagged(command.tag, "OK", "READ-ONLY" if read_only else "READ-WRITE",
                     f"{command.verb.capitalize()} completed")

    def _deselect(self) -> None:
        self.selected = None

    def _create(self, command: Command) -> None:
        self._store.create(self._one_mailbox(command))
        self._done(command, "Create completed")

    def _delete(self, command: Command) -> None:
        name = self._one_mailbox(command)
        self._store.delete(name)
        if self.selected is not None and self.selected.name == name:
            self._deselect()
        self._done(command, "Delete completed")

    def _rename(self, command: Command) -> None:
        values = tokenize(command.args, command.literals)
        if len(values) != 2:
            raise IMAPSyntaxError("RENAME takes two mailbox names")
        self._store.rename(self._mailbox_arg(values[0]), self._mailbox_arg(values[1]))
        self._done(command, "Rename completed")

    def _subscribe(self, command: Command) -> None:
        self._store.subscribe(self._one_mailbox(command))
        self._done(command, "Subscribe completed")

    def _unsubscribe(self, command: Command) -> None:
        self._store.unsubscribe(self._one_mailbox(command))
        self._done(command, "Unsubscribe completed")

    def _list(self, command: Command) -> None:
        reference, pattern = parse_list(command.args, command.literals)
        if self.utf8:
            reference, pattern = encode_mailbox_name(reference), encode_mailbox_name(pattern)
        kind = command.verb
        if kind == "LIST" and pattern == "":
            self._untagged(f'LIST (\\Noselect) "{DELIMITER}" ""')
            self._done(command, "List completed")
            return
        names = self._store.list_folders()
        existing = set(names)
        if kind == "LSUB":
            candidates = self._store.subscriptions
        else:
            # Parents missing after a DELETE still show, as \Noselect (RFC 3501 6.3.8).
            candidates = list(names)
            for name in names:
                parts = name.split(DELIMITER)
                for i in range(1, len(parts)):
                    parent = DELIMITER.join(parts[:i])
                    if parent not in existing and parent not in candidates:
                        candidates.append(parent)
        for name in candidates:
            if not list_pattern_matches(reference, pattern, name, DELIMITER):
                continue
            attributes = []
            if kind == "LIST":
                if name not in existing:
                    attributes.append("\\Noselect")
                children = any(n.startswith(name + DELIMITER) for n in names)
                attributes.append("\\HasChildren" if children else "\\HasNoChildren")
            self._untagged(f'{kind} ({" ".join(attributes)}) "{DELIMITER}" {self._show(name)}')
        self._done(command, f"{kind.capitalize()} completed")

    def _status(self, command: Command) -> None:
        name, items = parse_status(command.args, command.literals, utf8=True)
        if self.utf8 and name != "INBOX":
            name = encode_mailbox_name(name)
        if self.selected is not None and self.selected.name == name:
            mailbox = self.selected
            messages = mailbox.messages()
        else:
            mailbox = self._store.open(name, read_only=True)
            messages = mailbox.messages()
        values = {
            "MESSAGES": len(messages),
            "RECENT": mailbox.recent_count,
            "UIDNEXT": mailbox.uidnext,
            "UIDVALIDITY": mailbox.uidvalidity,
            "UNSEEN": sum(1 for m in messages if "\\Seen" not in m.flags),
            "SIZE": sum(m.rfc822_size for m in messages),
            "DELETED": sum(1 for m in messages if "\\Deleted" in m.flags),
        }
        shown = " ".join(f"{item} {values[item]}" for item in items if item in values)
        self._untagged(f"STATUS {self._show(name)} ({shown})")
        self._done(command, "Status completed")

    def _append(self, command: Command) -> None:
        stream = self._streams.pop(command.tag, None)
        if stream is not None:
            target, sink = stream
            if command.streamed and not command.truncated:
                if sink.error is not None:
                    raise sink.error  # answered as any store error (NO [OVERQUOTA] ...)
                if command.args[command.args.rfind("}") + 1 :].strip():
                    sink.appender.abort()  # something after the message: not an APPEND we know
                    raise IMAPSyntaxError("unexpected data after the APPEND literal")
                uid = sink.appender.commit()
                self._done(command, "Append completed", f"APPENDUID {target.uidvalidity} {uid}")
                return
            sink.appender.abort()
        request = parse_append(command.args, command.literals, utf8=True)
        name = request.mailbox
        if self.utf8 and name != "INBOX":
            name = encode_mailbox_name(name)
        target = self._store.target(name)
        message = request.message
        with target.begin_append(request.flags, request.internaldate,
                                 expected_size=len(message), crlf_to_lf=True) as appender:
            view = memoryview(message)
            for start in range(0, len(view), CHUNK):
                appender.write(view[start : start + CHUNK])
            uid = appender.commit()
        self._done(command, "Append completed", f"APPENDUID {target.uidvalidity} {uid}")

    def _idle(self, command: Command) -> None:
        self._idle_tag = command.tag
        self._write(self.core.send(Continuation("idling")))
        self._updates(expunge_allowed=True)
        if self.selected is not None and self.user is not None:
            loop = asyncio.get_running_loop()
            wake = self._idle_wake = asyncio.Event()

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
                    self._updates(expunge_allowed=True)
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
    def _box(self) -> Mailbox:
        assert self.selected is not None
        return self.selected

    def _updates(self, *, expunge_allowed: bool) -> None:
        """Announce what other sessions changed in the selected mailbox."""
        mailbox = self.selected
        if mailbox is None or not expunge_allowed or self._closing:
            return
        try:
            changes = mailbox.refresh()
        except MailboxError:
            self._untagged("BYE [NONEXISTENT] The selected mailbox was deleted")
            self._close()
            return
        if changes.uidvalidity_changed:
            self._untagged("BYE [UNAVAILABLE] UIDVALIDITY changed; please reconnect")
            self._close()
            return
        if not changes:
            return
        for seq in changes.expunged_seqs:
            self._untagged(f"{seq} EXPUNGE")
        messages = mailbox.messages()
        if changes.new_uids:
            self._untagged(f"{len(messages)} EXISTS")
            self._untagged(f"{mailbox.recent_count} RECENT")
        if changes.flag_changed_uids:
            changed = set(changes.flag_changed_uids)
            for seq, info in enumerate(messages, 1):
                if info.uid in changed:
                    self._untagged(f"{seq} FETCH (FLAGS ({' '.join(sorted(info.flags))}))")

    def _targets(self, sequence_set: SequenceSet, uid: bool) -> list[tuple[int, MessageInfo]]:
        """(sequence number, message) for a sequence set or UID set, ascending."""
        messages = self._box.messages()
        if uid:
            wanted = set(sequence_set.select_uids([m.uid for m in messages]))
            return [(n, m) for n, m in enumerate(messages, 1) if m.uid in wanted]
        largest = sequence_set.max_number()
        if largest is not None and largest > len(messages):
            raise IMAPSyntaxError("Invalid message sequence number")
        return [(n, messages[n - 1]) for n in sequence_set.numbers(len(messages))]

    def _check(self, command: Command) -> None:
        self._done(command, "Check completed")

    def _close_mailbox(self, command: Command) -> None:
        mailbox = self._box
        self._deselect()
        if not mailbox.read_only:
            mailbox.expunge()
        self._tagged(command.tag, "OK", None, "Close completed")

    def _unselect(self, command: Command) -> None:
        self._deselect()
        self._tagged(command.tag, "OK", None, "Unselect completed")

    def _writable(self, command: Command) -> bool:
        if self._box.read_only:
            self._tagged(command.tag, "NO", "CANNOT", "The mailbox is read-only (EXAMINE)")
            return False
        return True

    def _expunge(self, command: Command) -> None:
        if not self._writable(command):
            return
        uids: list[int] | None = None
        if command.verb == "UID EXPUNGE":
            values = tokenize(command.args, command.literals)
            if len(values) != 1:
                raise IMAPSyntaxError("UID EXPUNGE takes a UID set")
            uids = [m.uid for _, m in self._targets(parse_sequence_set(values[0]), True)]
        self._send_expunges(self._box.messages(), self._box.expunge(uids))
        self._done(command, "Expunge completed")

    def _send_expunges(self, before: list[MessageInfo], uids: Iterable[int]) -> None:
        gone = set(uids)
        for seq in sorted((n for n, m in enumerate(before, 1) if m.uid in gone), reverse=True):
            self._untagged(f"{seq} EXPUNGE")

    def _search(self, command: Command) -> None:
        uid = command.verb == "UID SEARCH"
        query = parse_search(command.args, command.literals)
        mailbox = self._box
        views = [_SearchView(mailbox, m, n) for n, m in enumerate(mailbox.messages(), 1)]
        found = search(query, views, uid=uid)
        self._untagged(" ".join(["SEARCH", *map(str, found)]))
        self._done(command, "Search completed")

    def _fetch(self, command: Command) -> None:
        uid = command.verb == "UID FETCH"
        request = parse_fetch(command.args, command.literals)
        targets = self._targets(request.sequence_set, uid)
        self._defer_tagged(self._fetch_messages(command, request.items, targets, uid), command.tag)

    async def _fetch_messages(
        self, command: Command, items: list[FetchItem], targets: list[tuple[int, MessageInfo]],
        uid: bool,
    ) -> None:
        mailbox = self._box
        needs_data = any(i.section is not None or i.name not in _DATA_FREE_ITEMS for i in items)
        # Only header fields wanted: read the header block (through the store's cache).
        header_only = needs_data and all(_header_only(i) for i in items)
        read_header = mailbox.header_reader() if header_only else None
        renderer = FetchRenderer(items, uid=uid)
        marks_seen = not mailbox.read_only and any(i.sets_seen for i in items)
        has_flags = any(i.name == "FLAGS" for i in items)
        missing = False
        undecodable: tuple[str, str] | None = None  # BINARY of a part that does not decode
        # The responses leave in batches of about CHUNK bytes, not one write each.
        out = bytearray()
        try:
            for seq, info in targets:
                if self._closing:
                    return
                try:
                    if read_header is not None:
                        raw = read_header(info.uid)
                    else:
                        raw = mailbox.read_message(info.uid) if needs_data else b""
                except (MailboxError, OSError):
                    missing = True
                    continue
                shown = items
                if marks_seen and "\\Seen" not in info.flags:
                    changed = mailbox.set_flags([info.uid], ["\\Seen"], "add")
                    info = mailbox.message(info.uid) if info.uid in changed else info
                    if not has_flags:
                        shown = [*items, FetchItem("FLAGS")]
                message = FetchMessage(raw, uid=info.uid, flags=sorted(info.flags),
                                       internaldate=info.internaldate_seconds,
                                       rfc822_size=info.rfc822_size, seq=seq,
                                       header_only=header_only)
                if shown is items and renderer.simple:
                    # The same bytes as core.send(Untagged(...)); a FETCH moves no state.
                    out += renderer.wire(message)
                else:
                    try:
                        rendering = render_fetch(shown, message, uid=uid)
                    except UnknownTransferEncoding as error:
                        undecodable = ("UNKNOWN-CTE", f"Unknown Content-Transfer-Encoding {error}")
                        continue
                    except CorruptTransferEncoding as error:
                        undecodable = ("PARSE", f"Invalid data in MIME part: {error}")
                        continue
                    out += self.core.send(
                        Untagged(f"{seq} FETCH ({rendering.text})", tuple(rendering.literals))
                    )
                if len(out) >= CHUNK:
                    self._write(bytes(out))
                    out.clear()
                    await self._drain()
        finally:
            if out:
                self._write(bytes(out))
        if undecodable is not None:
            # RFC 3516 4.2: the request fails; the other messages' data went out.
            self._tagged(command.tag, "NO", *undecodable)
            return
        if missing:
            self._tagged(command.tag, "NO", "EXPUNGEISSUED",
                         "Some of the requested messages no longer exist")
            return
        self._done(command, "Fetch completed")

    def _store_flags(self, command: Command) -> None:
        uid = command.verb == "UID STORE"
        request = parse_store(command.args, command.literals)
        targets = self._targets(request.sequence_set, uid)
        if not self._writable(command):
            return
        mode = "replace" if request.mode == "set" else request.mode
        self._box.set_flags([m.uid for _, m in targets], request.flags, mode)
        if not request.silent:
            current = {m.uid: m for m in self._box.messages()}
            for seq, info in targets:
                now = current.get(info.uid)
                if now is None:
                    continue
                uid_part = f"UID {info.uid} " if uid else ""
                self._untagged(f"{seq} FETCH ({uid_part}FLAGS ({' '.join(sorted(now.flags))}))")
        self._done(command, "Store completed")

    def _copy_or_move(self, command: Command) -> None:
        uid = command.verb.startswith("UID ")
        move = command.verb.endswith("MOVE")
        values = tokenize(command.args, command.literals)
        if len(values) != 2:
            raise IMAPSyntaxError(f"{command.verb} takes a sequence set and a mailbox")
        targets = self._targets(parse_sequence_set(values[0]), uid)
        name = self._mailbox_arg(values[1])
        if move and not self._writable(command):
            return
        destination = self._store.target(name)
        uids = [m.uid for _, m in targets]
        before = self._box.messages()
        pairs = self._box.move(uids, destination) if move else self._box.copy(uids, destination)
        code = None
        if pairs:
            code = (f"COPYUID {destination.uidvalidity} {uid_set([a for a, _ in pairs])} "
                    f"{uid_set([b for _, b in pairs])}")
        if move:
            if code is not None:
                self._untagged(f"OK [{code}] Moved UIDs")
            self._send_expunges(before, [a for a, _ in pairs])
            self._done(command, "Move completed")
        else:
            self._done(command, "Copy completed", code)


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
    "NAMESPACE": IMAPServerProtocol._namespace,
    "SELECT": IMAPServerProtocol._select,
    "EXAMINE": IMAPServerProtocol._select,
    "CREATE": IMAPServerProtocol._create,
    "DELETE": IMAPServerProtocol._delete,
    "RENAME": IMAPServerProtocol._rename,
    "SUBSCRIBE": IMAPServerProtocol._subscribe,
    "UNSUBSCRIBE": IMAPServerProtocol._unsubscribe,
    "LIST": IMAPServerProtocol._list,
    "LSUB": IMAPServerProtocol._list,
    "STATUS": IMAPServerProtocol._status,
    "APPEND": IMAPServerProtocol._append,
    "IDLE": IMAPServerProtocol._idle,
    # selected
    "CHECK": IMAPServerProtocol._check,
    "CLOSE": IMAPServerProtocol._close_mailbox,
    "UNSELECT": IMAPServerProtocol._unselect,
    "EXPUNGE": IMAPServerProtocol._expunge,
    "UID EXPUNGE": IMAPServerProtocol._expunge,
    "SEARCH": IMAPServerProtocol._search,
    "UID SEARCH": IMAPServerProtocol._search,
    "FETCH": IMAPServerProtocol._fetch,
    "UID FETCH": IMAPServerProtocol._fetch,
    "STORE": IMAPServerProtocol._store_flags,
    "UID STORE": IMAPServerProtocol._store_flags,
    "COPY": IMAPServerProtocol._copy_or_move,
    "UID COPY": IMAPServerProtocol._copy_or_move,
    "MOVE": IMAPServerProtocol._copy_or_move,
    "UID MOVE": IMAPServerProtocol._copy_or_move,
}
_VALID_IN: Final = {state: frozenset(verbs) for state, verbs in VALID_COMMANDS.items()}

__all__ = ["IMAPServerProtocol", "format_internaldate", "quote", "uid_set"]
