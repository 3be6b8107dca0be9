"""The SMTP core (RFC 5321): bytes in, events out, with no I/O.

One ``SMTPConnection`` class plays either role. As a client it parses replies
(multi-line ``250-``/``250 `` with enhanced status codes split out) and tracks the
session state from the commands it sent and the replies they got. As a server it
parses command lines and the DATA stream, and formats replies. Both roles run
the same transition table, so the state a client believes in is the state the
server is in.

LMTP (RFC 2033) is a mode of the same core, ``SMTPConnection(lmtp=True)``: LHLO in
place of EHLO and HELO, and after the message's final dot (or BDAT ... LAST) one
reply per recipient accepted to RCPT, in RCPT's order. Each of those replies
carries its ``recipient``; the core tracks the accepted recipients of the
transaction in both roles, so a client knows how many replies are still owed and a
server is not given the next command before it has sent them all.

PRDR (Per-Recipient Data Response, draft-hall-prdr, as Exim implements it) is the
same idea in SMTP, for one transaction: a client that sent ``MAIL FROM:<...> PRDR``
may get ``353`` to the final dot; then one reply per accepted recipient follows, in
RCPT's order (each carries its ``recipient``, as with LMTP), and then one final
reply for the whole message. Without the 353 (one recipient, or no per-recipient
checks) the reply to the dot is the usual one.
"""

from __future__ import annotations

import enum
import re
from collections import deque
from typing import Final, NamedTuple

from mailtalk.protocols.common import (
    CLIENT_ROLE,
    CONNECTION_CLOSED,
    MAX_LINE,
    NEED_DATA,
    SERVER_ROLE,
    LineBuffer,
    LocalProtocolError,
    NoEvent,
    RemoteProtocolError,
    ReplyClass,
    Role,
    decode_text,
    new_record,
    peer_text,
    split_verb,
)

# RFC 5321 4.5.3.1: 512 octets for a command line, 1000 for a text line, CRLF included.
MAX_COMMAND_LINE: Final = 512
MAX_TEXT_LINE: Final = 1000
# An endless multi-line reply is cut after this many lines (the rest is dropped).
MAX_REPLY_LINES: Final = 1000

# Pseudo-commands: what a reply answers when it answers no typed command.
GREETING: Final = "<greeting>"
END_OF_DATA: Final = "<end-of-data>"
# PRDR: the reply to the final dot that says per-recipient replies follow (draft-hall-prdr)
PRDR_START: Final = 353
AUTH_RESPONSE: Final = "<auth-response>"


class SMTPState(enum.Enum):
    GREETING = "greeting"  # connected, waiting for the server's 220
    CONNECTED = "connected"  # greeted, no EHLO/HELO yet
    READY = "ready"  # after EHLO/HELO, no transaction
    MAIL = "mail"  # MAIL accepted, no recipient yet
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # 354 received: the message is being sent
    CLOSED = "closed"


# The members the methods below read, as module names: on Python 3.11 a read through
# the class (``SMTPState.DATA``) goes through ``EnumType.__getattr__``, a Python-level
# hook (about 150 ns a read, 40 times the read of a module name), and a server session
# reads them about 50 times a message.
_GREETING_STATE: Final = SMTPState.GREETING
_CONNECTED: Final = SMTPState.CONNECTED
_READY: Final = SMTPState.READY
_DATA: Final = SMTPState.DATA
_CLOSED: Final = SMTPState.CLOSED

# The commands valid in each state (RFC 5321 4.1.4 and 3.3). Extensions that only
# exist when advertised are narrowed further in valid_commands().
VALID_COMMANDS: Final[dict[SMTPState, tuple[str, ...]]] = {
    SMTPState.GREETING: ("QUIT",),
    SMTPState.CONNECTED: ("EHLO", "HELO", "LHLO", "NOOP", "RSET", "VRFY", "HELP", "QUIT"),
    SMTPState.READY: (
        "MAIL", "EHLO", "HELO", "LHLO", "STARTTLS", "AUTH", "NOOP", "RSET", "VRFY", "EXPN", "ETRN",
        "XCLIENT", "HELP", "QUIT",
    ),
    SMTPState.MAIL: ("RCPT", "RSET", "NOOP", "VRFY", "HELP", "QUIT"),
    SMTPState.RCPT: ("RCPT", "DATA", "BDAT", "RSET", "NOOP", "VRFY", "HELP", "QUIT"),
    SMTPState.DATA: (),
    SMTPState.CLOSED: (),
}

# Commands that exist only when EHLO advertised the keyword on the right.
EXTENSION_OF_COMMAND: Final[dict[str, str]] = {
    "STARTTLS": "STARTTLS",
    "AUTH": "AUTH",
    "EXPN": "EXPN",
    "BDAT": "CHUNKING",
    "ETRN": "ETRN",
    "XCLIENT": "XCLIENT",
}

# How a reply moves the session, keyed by (command answered, first digit of the
# reply). A missing key leaves the state as it is. ``None`` as the new state marks
# a reset: back to READY if the client has said EHLO/HELO, else CONNECTED.
_RESET: Final = None
TRANSITIONS: Final[dict[tuple[str, int], SMTPState | None]] = {
    (GREETING, 2): SMTPState.CONNECTED,
    ("EHLO", 2): SMTPState.READY,
    ("HELO", 2): SMTPState.READY,
    ("LHLO", 2): SMTPState.READY,  # LMTP's EHLO (RFC 2033 4.1)
    ("MAIL", 2): SMTPState.MAIL,
    ("RCPT", 2): SMTPState.RCPT,
    ("DATA", 3): SMTPState.DATA,
    (END_OF_DATA, 2): _RESET,
    (END_OF_DATA, 4): _RESET,
    (END_OF_DATA, 5): _RESET,
    ("RSET", 2): _RESET,
    ("STARTTLS", 2): SMTPState.CONNECTED,  # RFC 3207: forget everything, EHLO again
    # Postfix XCLIENT: the reply is a new 220 greeting; the EHLO is forgotten
    ("XCLIENT", 2): SMTPState.CONNECTED,
    ("QUIT", 2): SMTPState.CLOSED,
}

HINTS: Final[dict[SMTPState, str]] = {
    SMTPState.GREETING: "wait for the server's 220 greeting",
    SMTPState.CONNECTED: "EHLO your.host.name (HELO for very old servers)",
    SMTPState.READY: "MAIL FROM:<you@example.com>",
    SMTPState.MAIL: "RCPT TO:<someone@example.com>",
    SMTPState.RCPT: "DATA, or another RCPT TO:<...>",
    SMTPState.DATA: "a lone . ends the message (headers, an empty line, the body)",
    SMTPState.CLOSED: "the connection is closed: :reconnect or :quit",
}

# The greeting commands of each mode: LMTP has LHLO only (RFC 2033 4.1), SMTP never has it.
HELLO_VERBS: Final = ("EHLO", "HELO", "LHLO")
# The verbs the methods below test a command against for every command or reply, as
# sets: ``verb in ("EHLO", ...)`` compares the strings one by one (with a tuple those
# tests were 4 % of a sink message's instructions).
_HELLO_VERBS: Final = frozenset(HELLO_VERBS)
# A 2xx to these ends any transaction.
_RESETTING_VERBS: Final = frozenset({*HELLO_VERBS, "RSET", "STARTTLS"})
# After these the client must wait for the server's reply (AUTH: a 334 makes the next
# line SASL data, not a command), so nothing after them is parsed until then.
_PAUSING_VERBS: Final = frozenset({"DATA", "STARTTLS", "BDAT", "AUTH", "QUIT"})
_AUTH_VERBS: Final = frozenset({"AUTH", AUTH_RESPONSE})
_NOT_IN_MODE: Final = {False: ("LHLO",), True: ("EHLO", "HELO")}

_ENHANCED = re.compile(rb"^([245])\.(\d{1,3})\.(\d{1,3})(?=\s|$)")
_REPLY_LINE = re.compile(rb"^(\d{3})([ -]|$)")
_SIZE = re.compile(r"[0-9]{1,20}")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


# The events are NamedTuples, not frozen dataclasses: see protocols.common.Line.


class Reply(NamedTuple):
    """One complete reply, single- or multi-line.

    ``lines`` are the texts after ``250-``/``250 ``; ``enhanced`` is the RFC 3463
    status code of the first line (``"5.7.1"``) when the server sent one.
    """

    code: int
    lines: tuple[str, ...]
    enhanced: str | None = None
    # The reply's bytes: as received (client role), or as they will be sent when made
    # already (server role: ``send`` then formats nothing).
    raw: bytes = b""
    command: str | None = None
    truncated: bool = False
    # The server closed the connection before the reply's last line.
    incomplete: bool = False
    # LMTP: the recipient this reply to the final dot is for (RFC 2033 4.2)
    recipient: str | None = None

    @property
    def text(self) -> str:
        """The reply text without codes, lines joined by newlines."""
        return "\n".join(_strip_enhanced(line, self.enhanced) for line in self.lines)

    @property
    def reply_class(self) -> ReplyClass:
        return {
            2: ReplyClass.POSITIVE,
            3: ReplyClass.INTERMEDIATE,
            4: ReplyClass.TRANSIENT,
        }.get(self.code // 100, ReplyClass.PERMANENT)

    @property
    def final(self) -> bool:
        return True

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400


def _strip_enhanced(line: str, enhanced: str | None) -> str:
    if enhanced and line.startswith(enhanced):
        rest = line[len(enhanced) :]
        if not rest or rest[0].isspace():  # "5.7.10 x" does not start with "5.7.1"
            return rest.lstrip()
    return line


class Command(NamedTuple):
    """A command line as the server role parsed it."""

    verb: str
    args: str
    raw: bytes
    too_long: bool = False  # over RFC 5321's 512 octets


class MessageData(NamedTuple):
    """Part of the message after ``354``: dot-unstuffed, line ends kept as received.

    Usually one line; a line longer than ``MAX_LINE`` comes in several pieces, only
    the last of which has a line end.
    """

    data: bytes
    line_too_long: bool = False  # a text line over RFC 5321's 1000 octets


class EndOfMessage(NamedTuple):
    """The client sent ``<CRLF>.<CRLF>``.

    ``bare_newline`` says the message held a bare LF (a line ended without CR),
    which Postfix's ``smtpd_forbid_bare_newline`` rejects because it is how SMTP
    smuggling starts.
    """

    bare_newline: bool = False
    raw: bytes = b".\r\n"


class EndOfChunk(NamedTuple):
    """Server role: the last octet of a BDAT chunk came (RFC 3030 2); its reply is due.

    The chunk's octets came before it as ``MessageData``, exactly as sent: BDAT has no
    dot-stuffing and no end-of-data line. ``last`` is BDAT ... LAST: a 2xx to it ends
    the transaction as the reply to DATA's final dot does.
    """

    size: int
    last: bool


Event = Reply | Command | MessageData | EndOfMessage | EndOfChunk


def parse_extensions(reply: Reply) -> dict[str, str]:
    """EHLO keywords (upper-cased) mapped to their parameters, from a 250 EHLO reply."""
    extensions: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if not keyword:
            continue
        keyword = keyword.upper()
        # "AUTH=LOGIN PLAIN" is how some old servers (and Outlook) spell AUTH.
        if keyword.startswith("AUTH="):
            old = keyword[5:] + (" " + params if params else "")
            extensions.setdefault("AUTH", old.strip())
            continue
        extensions[keyword] = params.strip()
    return extensions


def dot_stuff(message: bytes) -> bytes:
    """A message ready for DATA: CRLF line ends, leading dots doubled, ``.`` line at the end."""
    text = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    if text and not text.endswith(b"\n"):
        text += b"\n"
    lines = text.split(b"\n")[:-1] if text else []
    out = bytearray()
    for line in lines:
        if line.startswith(b"."):
            out += b"."
        out += line + b"\r\n"
    out += b".\r\n"
    return bytes(out)


class _Pending:
    """A reply the session waits for: to which command, and what it will mean."""

    __slots__ = ("address", "after_recipients", "last", "recipient", "verb")

    def __init__(
        self,
        verb: str,
        last: bool = False,  # BDAT ... LAST: its 2xx ends the transaction (RFC 3030)
        address: str | None = None,  # RCPT: the recipient it names
        recipient: str | None = None,  # LMTP/PRDR, end of data: whom this reply is for
        # PRDR: the final reply for the whole message, after the per-recipient ones
        after_recipients: bool = False,
    ) -> None:
        self.verb = verb
        self.last = last
        self.address = address
        self.recipient = recipient
        self.after_recipients = after_recipients


# The waits that are only a verb (no address, recipient or LAST), made once and shared:
# nothing changes a _Pending after it is made, and the server role makes one for
# every command and message (an __init__ call each). Known verbs only, since a
# client's verb may be anything.
_BARE_PENDING: Final = {
    verb: _Pending(verb)
    for verb in (GREETING, END_OF_DATA, *HELLO_VERBS, "MAIL", "DATA", "RSET", "NOOP", "QUIT")
}


def rcpt_address(args: str) -> str:
    """The address of ``TO:<a@b> PARAMS`` (RCPT's arguments), without its brackets."""
    rest = args.partition(":")[2].strip() if ":" in args else args.strip()
    if rest.startswith("<"):
        return rest[1:].partition(">")[0]
    return rest.split(" ", 1)[0]

# "BDAT <chunk-size> [LAST]" (RFC 3030 2): the chunk's octets follow the command line.
_BDAT_ARGS = re.compile(r"([0-9]{1,18})(?:[ \t]+(LAST))?[ \t]*", re.IGNORECASE)


def parse_bdat(args: str) -> tuple[int, bool] | None:
    """``BDAT``'s arguments as (chunk size, LAST); None when they are not that."""
    match = _BDAT_ARGS.fullmatch(args)
    return None if match is None else (int(match.group(1)), bool(match.group(2)))


class SMTPConnection:
    """An SMTP session in one role; see the module docstring.

    A plain class, not a dataclass (see ``protocols.common.Line``), as ``_Pending``:
    nothing compares or prints a session."""

    protocol = "smtp"
    # Client role only, class defaults until set: CPython 3.11 keeps at most 30 of an
    # instance's attributes in the compact form instances of a class share (more, and
    # every session, server role too, gets a dict of its own, made and grown).
    # Octets of a BDAT chunk still to send before its reply is due:
    _chunk_left = 0
    # The transaction's MAIL carried PRDR, so a 353 to the final dot starts
    # per-recipient replies:
    _prdr = False

    def __init__(
        self,
        role: Role = CLIENT_ROLE,
        tls: bool = False,
        # Server role: CHUNKING is offered, so BDAT's chunk is read (RFC 3030); without
        # it BDAT is an unknown command and what follows it more commands.
        chunking: bool = False,
        lmtp: bool = False,  # RFC 2033: LHLO, and one reply per recipient after the message
    ) -> None:
        self.role = role
        self.tls = tls
        self.chunking = chunking
        self.lmtp = lmtp
        self.state = _GREETING_STATE
        self.extensions: dict[str, str] = {}
        self.authenticated = False
        self.wants_tls_upgrade = False
        self.greeted = False  # EHLO/HELO/LHLO accepted
        self.esmtp = False  # the accepted greeting was EHLO or LHLO
        self._buffer = LineBuffer()
        self._pending: deque[_Pending] = deque([_BARE_PENDING[GREETING]])
        self._reply_lines: list[bytes] = []  # raw lines of the reply being read
        self._reply_count = 0
        self._reply_cut = False
        self._closed = False
        # Server role: after DATA/STARTTLS the client must wait for our reply, so
        # nothing after them is parsed until we have sent it.
        self._paused = False
        self._data_prev_crlf = True
        self._bare_newline = False
        # Server role, DATA: the message is read from its own buffer, not the
        # LineBuffer, because a cut line would lose its tail and its line end (and
        # with it the <CRLF>.<CRLF> that follows it).
        self._data_buf = bytearray()
        self._data_line_start = True  # the next byte starts a line
        self._data_line_len = 0  # octets of the current line already handed out
        self._data_scan = 0  # where to resume looking for LF in _data_buf
        # Octets of _data_buf to hand out line by line before trying whole chunks again
        # (they held a bare LF or a long line; rescanning them per line would be slow).
        self._data_by_line = 0
        # Server role: the BDAT chunk being read, octets still to come, and its LAST.
        self._chunk_in: int | None = None
        self._chunk_size = 0
        self._chunk_last = False
        # Client role: an AUTH exchange is waiting for our next line (after 334).
        self._auth_continuation = False
        # The recipients accepted (2xx to RCPT) in this transaction, in order: LMTP
        # answers the end of the message once for each.
        self._recipients: list[str] = []

    # -- shared ---------------------------------------------------------------

    @property
    def state_name(self) -> str:
        return self.state.value

    @property
    def awaiting_reply(self) -> bool:
        return bool(self._pending)

    @property
    def pending_commands(self) -> tuple[str, ...]:
        return tuple(p.verb for p in self._pending)

    @property
    def hello_verb(self) -> str:
        """The command that greets: LHLO for LMTP, EHLO for SMTP."""
        return "LHLO" if self.lmtp else "EHLO"

    @property
    def owes_recipient_replies(self) -> bool:
        """LMTP or PRDR, client role: more replies to the message are due, one per
        recipient (and with PRDR the final one after them)."""
        if not self._pending:
            return False
        pending = self._pending[0]
        return pending.recipient is not None or pending.after_recipients

    @property
    def prdr(self) -> bool:
        """Client role: the transaction's MAIL FROM asked for PRDR."""
        return self._prdr

    @property
    def owed_recipients(self) -> tuple[str, ...]:
        """LMTP, either role: the recipients whose replies to the message are still due,
        in RCPT order (empty when the next reply due is not one of those)."""
        owed = []
        for pending in self._pending:
            if pending.verb != END_OF_DATA or pending.recipient is None:
                break
            owed.append(pending.recipient)
        return tuple(owed)

    @property
    def transaction_recipients(self) -> tuple[str, ...]:
        """The recipients accepted to RCPT in the transaction so far."""
        return tuple(self._recipients)

    @property
    def auth_mechanisms(self) -> list[str]:
        return self.extensions.get("AUTH", "").upper().split()

    @property
    def max_size(self) -> int | None:
        size = self.extensions.get("SIZE", "")
        # ASCII digits only, and not too many: str.isdigit() accepts "²", which int()
        # refuses, and int() refuses strings of more than 4300 digits.
        if _SIZE.fullmatch(size) is None:
            return None
        return int(size) or None

    def receive_data(self, data: bytes) -> None:
        if not data:
            self._buffer.close()
            self._closed = True
        elif self.role is SERVER_ROLE and self.state is _DATA:
            self._data_buf += data
        else:
            self._buffer.feed(data)

    def next_event(self) -> Reply | NoEvent:
        """Client role: the next reply from the server."""
        if self.role is not CLIENT_ROLE:
            raise LocalProtocolError("next_event() is for the client role; use next_command()")
        return self._next_reply()

    def next_command(self) -> Command | MessageData | EndOfMessage | EndOfChunk | NoEvent:
        """Server role: the next command, piece of message data, or end of message."""
        if self.role is not SERVER_ROLE:
            raise LocalProtocolError("next_command() is for the server role; use next_event()")
        # The parser itself, not a call to it: the session asks twice a command (the
        # command, then NEED_DATA).
        if self._paused:
            return NEED_DATA
        if self._chunk_in is not None:
            return self._next_chunk_data()
        if self.state is _DATA:
            return self._next_data()
        # Nothing buffered (the usual end of a read): no line, without asking for one.
        line = self._buffer.next_line() if self._buffer.buffered else None
        if line is None:
            if self._closed and not len(self._buffer):
                self.state = _CLOSED
                return CONNECTION_CLOSED
            return NEED_DATA
        if self._auth_continuation:
            self._auth_continuation = False
            self._pending.append(_Pending(AUTH_RESPONSE))
            return Command(AUTH_RESPONSE, decode_text(line.content), line.raw)
        content = line.content
        raw = content + line.ending  # (line.raw, without the property's call)
        too_long = line.truncated or len(raw) > MAX_COMMAND_LINE
        # (decode_text's decoding and split_verb, without calls for them)
        verb, _, args = content.decode("utf-8", "backslashreplace").strip().partition(" ")
        verb, args = verb.upper(), args.strip()
        bdat = None
        if verb == "BDAT" and self.chunking and not too_long:
            bdat = _BDAT_ARGS.fullmatch(args)
        if bdat is not None:
            # RFC 3030 2: the chunk's octets follow at once, whatever the reply will be,
            # so they are read (and handed out) before the reply, never as commands.
            self._pending.append(_Pending(verb, last=bool(bdat.group(2))))
            self._chunk_in = self._chunk_size = int(bdat.group(1))
            self._chunk_last = bool(bdat.group(2))
            return Command(verb, args, raw)
        if verb == "MAIL":
            self._recipients = []
        bare = _BARE_PENDING.get(verb)
        if bare is not None:
            self._pending.append(bare)
        else:
            address = rcpt_address(args) if verb == "RCPT" else None
            self._pending.append(_Pending(verb, address=address))
        if verb in _PAUSING_VERBS:
            self._paused = True
        return new_record(Command, (verb, args, raw, too_long))

    def tls_started(self) -> None:
        self.wants_tls_upgrade = False
        self.tls = True

    def _apply(self, verb: str, code: int, address: str | None = None) -> None:
        digit = code // 100
        if verb in _HELLO_VERBS and digit == 2:
            self.greeted = True
        if digit == 2 and verb in _RESETTING_VERBS:
            self._recipients = []  # a new session or a reset: no transaction
        if verb == "RCPT" and digit == 2 and address is not None:
            self._recipients.append(address)
        if code == 421:
            # The server is shutting the channel, whatever the command (RFC 5321
            # 3.8): even a 421 to the end of the message is not a reset.
            self.state = _CLOSED
            return
        key = (verb, digit)
        if key not in TRANSITIONS:
            return
        new_state = TRANSITIONS[key]
        if new_state is None:
            new_state = _READY if self.greeted else _CONNECTED
        if verb == "XCLIENT":
            # The session starts again as the client named (TLS stays): EHLO again.
            self.greeted = False
            self.esmtp = False
            self.authenticated = False
            self.extensions = {}
        if verb == "STARTTLS":
            # RFC 3207 4.2: all knowledge from before TLS is discarded.
            self.greeted = False
            self.esmtp = False
            self.authenticated = False
            self._auth_continuation = False
            self.extensions = {}
            self.wants_tls_upgrade = True
            # Bytes sent before TLS must not count after it (the STARTTLS command
            # injection, CVE-2011-0411), nor may commands pipelined after STARTTLS
            # wait for replies that will never come.
            self._buffer = LineBuffer()
            if self._closed:
                self._buffer.close()
            self._pending.clear()
        self.state = new_state

    # -- client role ------------------------------------------------------------

    def send_line(self, line: str) -> bytes:
        """Bytes for a line the user typed, CRLF added; tracks what it expects back."""
        if self.role is not CLIENT_ROLE:
            raise LocalProtocolError("send_line() is for the client role")
        if self.state is _CLOSED:
            raise LocalProtocolError("the SMTP session is closed")
        if self.state is _DATA:
            return self._send_data_line(line)
        if self._chunk_left:
            return self._send_chunk_line(line)
        if self._auth_continuation:
            self._auth_continuation = False
            self._pending.append(_Pending(AUTH_RESPONSE))
            return line.encode("utf-8") + b"\r\n"
        verb, rest = split_verb(line)
        bdat = _BDAT_ARGS.fullmatch(rest) if verb == "BDAT" else None
        address = rcpt_address(rest) if verb == "RCPT" else None
        if verb == "MAIL":
            self._recipients = []
            self._prdr = "PRDR" in rest.upper().split()[1:]
        self._pending.append(_Pending(verb, last=bool(bdat and bdat.group(2)), address=address))
        if bdat is not None:
            self._chunk_left = int(bdat.group(1))
        return line.encode("utf-8") + b"\r\n"

    def _send_chunk_line(self, line: str) -> bytes:
        """A line of a BDAT chunk: exactly its octets and CRLF, nothing stuffed."""
        data = line.encode("utf-8") + b"\r\n"
        if len(data) > self._chunk_left:
            raise LocalProtocolError(
                "the BDAT chunk has {left} bytes left and this line is {size} "
                "with its CRLF: not sent", left=self._chunk_left, size=len(data)
            )
        self._chunk_left -= len(data)
        return data

    def send_chunk(self, data: bytes) -> bytes:
        """Octets of the BDAT chunk just announced, as they are (RFC 3030: no stuffing)."""
        if self.role is not CLIENT_ROLE:
            raise LocalProtocolError("send_chunk() is for the client role")
        if len(data) > self._chunk_left:
            raise LocalProtocolError(
                "the BDAT chunk has {left} bytes left, not {size}",
                left=self._chunk_left, size=len(data)
            )
        self._chunk_left -= len(data)
        return data

    @property
    def chunk_left(self) -> int:
        """Octets of the BDAT chunk still to send; its reply comes after the last of them."""
        return self._chunk_left

    @property
    def in_command_continuation(self) -> bool:
        """The next line belongs to the command just sent (a BDAT chunk), not a new one."""
        return self._chunk_left > 0

    def send_message(self, message: bytes) -> bytes:
        """A whole message for DATA (after 354): CRLF, dot-stuffed, ended by ``.``."""
        if self.state is not _DATA:
            raise LocalProtocolError("a message can only be sent after 354")
        self._pending.append(_Pending(END_OF_DATA))
        self.state = _READY if self.greeted else _CONNECTED
        return dot_stuff(message)

    def _send_data_line(self, line: str) -> bytes:
        if line == ".":
            self._pending.append(_Pending(END_OF_DATA))
            self.state = _READY if self.greeted else _CONNECTED
            return b".\r\n"
        encoded = line.encode("utf-8")
        if encoded.startswith(b"."):
            encoded = b"." + encoded
        return encoded + b"\r\n"

    @property
    def in_data(self) -> bool:
        return self.state is _DATA

    @property
    def auth_continuation(self) -> bool:
        """The server sent 334: the next line is the client's SASL response."""
        return self._auth_continuation

    @property
    def sasl_pending(self) -> bool:
        """Same as ``auth_continuation``; the name the POP3 and IMAP cores use."""
        return self._auth_continuation

    def redact(self, line: str) -> str:
        if self._auth_continuation and self.state is not _DATA:
            return "***" if line.strip() != "*" else line
        if self.state is _DATA or self._chunk_left:
            return line
        verb, rest = split_verb(line)
        if verb == "AUTH":
            mechanism, _, initial = rest.partition(" ")
            if initial.strip():
                return f"{line.split()[0]} {mechanism} ***"
        return line

    def valid_commands(self) -> list[str]:
        commands = []
        for verb in VALID_COMMANDS[self.state]:
            if verb in _NOT_IN_MODE[self.lmtp]:
                continue
            needed = EXTENSION_OF_COMMAND.get(verb)
            if needed is not None:
                if needed not in self.extensions:
                    continue
                if verb == "STARTTLS" and self.tls:
                    continue
                if verb == "AUTH" and self.authenticated:
                    continue
            commands.append(verb)
        return commands

    def next_hint(self) -> str:
        if self._auth_continuation:
            return "the base64 answer to the server's 334 challenge (* cancels)"
        if self._chunk_left:
            return f"the chunk: {self._chunk_left} more bytes (each line end counts 2)"
        hint = HINTS[self.state]
        if self.lmtp and self.state is _CONNECTED:
            hint = "LHLO your.host.name (LMTP's EHLO)"
        if self.state is _READY:
            extra = []
            if "STARTTLS" in self.extensions and not self.tls:
                extra.append("STARTTLS")
            if "AUTH" in self.extensions and not self.authenticated:
                extra.append("AUTH " + (self.auth_mechanisms[0] if self.auth_mechanisms else ""))
            if extra:
                hint = " or ".join(e.strip() for e in extra) + ", then " + hint
        return hint

    def _next_reply(self) -> Reply | NoEvent:
        while True:
            line = self._buffer.next_line()
            if line is None:
                if self._closed and not len(self._buffer):
                    if self._reply_lines:
                        # Show what did come; the close itself follows as its own event.
                        return self._finish_reply(incomplete=True)
                    self.state = _CLOSED
                    self._pending.clear()
                    self._chunk_left = 0
                    return CONNECTION_CLOSED
                return NEED_DATA
            match = _REPLY_LINE.match(line.content)
            if match is None:
                raise RemoteProtocolError("not an SMTP reply line: {text}",
                                          text=peer_text(line.content))
            if self._reply_lines and match.group(1) != self._reply_lines[0][:3]:
                raise RemoteProtocolError(
                    "a multi-line reply changed its code from {first} to {then}",
                    first=decode_text(self._reply_lines[0][:3]),
                    then=decode_text(match.group(1)),
                )
            self._reply_count += 1
            if line.truncated:
                self._reply_cut = True
            if self._reply_count <= MAX_REPLY_LINES:
                self._reply_lines.append(line.raw)
            else:
                self._reply_cut = True
            if match.group(2) == b"-":
                continue
            return self._finish_reply()

    def _finish_reply(self, incomplete: bool = False) -> Reply:
        raw_lines = self._reply_lines
        truncated = self._reply_cut
        self._reply_lines = []
        self._reply_count = 0
        self._reply_cut = False
        code = int(raw_lines[0][:3])
        texts = []
        for raw in raw_lines:
            text = raw[4:].rstrip(b"\r\n")
            texts.append(decode_text(text))
        enhanced_match = _ENHANCED.match(raw_lines[0][4:])
        enhanced = None
        if enhanced_match and enhanced_match.group(1) == str(code // 100).encode():
            enhanced = decode_text(enhanced_match.group(0))
        pending = self._pending.popleft() if self._pending else None
        verb = pending.verb if pending else None
        after_last_chunk = pending is not None and pending.last and verb == "BDAT"
        prdr_start = self._prdr and code == PRDR_START
        if after_last_chunk and (code // 100 == 2 or self.lmtp or prdr_start):
            # The message is complete, as after DATA's final dot (LMTP answers BDAT
            # LAST per recipient whatever the answer, RFC 2033 4.3).
            shown_verb, verb = verb, END_OF_DATA
        else:
            shown_verb = verb
        recipient = None
        if self.lmtp and verb == END_OF_DATA and pending is not None:
            recipient = self._lmtp_recipient(pending, code)
        elif verb == END_OF_DATA and pending is not None:
            recipient = pending.recipient
            if recipient is None and prdr_start and not pending.after_recipients:
                self._owe_prdr_replies()
        reply = Reply(
            code=code,
            lines=tuple(texts),
            enhanced=enhanced,
            raw=b"".join(raw_lines),
            command=shown_verb,
            truncated=truncated,
            incomplete=incomplete,
            recipient=recipient,
        )
        if verb is not None:
            self._client_apply(verb, reply, pending.address if pending else None)
        elif code == 421:
            self.state = _CLOSED
        return reply

    def _lmtp_recipient(self, pending: _Pending, code: int) -> str | None:
        """LMTP: the recipient a reply to the end of the message is for. The first of
        those replies queues one more for each further accepted recipient (not
        after a 421: the server is closing)."""
        if pending.recipient is not None:
            return pending.recipient
        recipients, self._recipients = self._recipients, []
        if not recipients:
            return None
        if code != 421:
            for address in reversed(recipients[1:]):
                self._pending.appendleft(_Pending(END_OF_DATA, recipient=address))
        return recipients[0]

    def _owe_prdr_replies(self) -> None:
        """PRDR's 353 came: one reply per accepted recipient is due, then the final one."""
        recipients, self._recipients = self._recipients, []
        self._pending.appendleft(_Pending(END_OF_DATA, after_recipients=True))
        for address in reversed(recipients):
            self._pending.appendleft(_Pending(END_OF_DATA, recipient=address))

    def _client_apply(self, verb: str, reply: Reply, address: str | None = None) -> None:
        digit = reply.code // 100
        if verb in _HELLO_VERBS and digit == 2:
            self.esmtp = verb != "HELO"
            self.extensions = parse_extensions(reply) if verb != "HELO" else {}
        if verb in _AUTH_VERBS:
            if digit == 3:
                self._auth_continuation = True
            elif digit == 2:
                self.authenticated = True
        self._apply(verb, reply.code, address)

    # -- server role ------------------------------------------------------------

    def send(self, event: Reply) -> bytes:
        """Bytes for a reply (server role); moves the state as the client will see it."""
        if self.role is not SERVER_ROLE:
            raise LocalProtocolError("send() of a Reply is for the server role")
        data = event.raw or format_reply(event.code, event.lines, event.enhanced)
        pending = self._pending.popleft() if self._pending else None
        if pending is not None:
            verb = pending.verb
            if verb == "BDAT" and pending.last and event.code // 100 == 2:
                verb = END_OF_DATA  # the message is complete, as after DATA's final dot
            if verb in _HELLO_VERBS and event.code // 100 == 2:
                self.esmtp = verb != "HELO"
            if verb in _AUTH_VERBS:
                if event.code // 100 == 3:
                    self._auth_continuation = True
                elif event.code // 100 == 2:
                    self.authenticated = True
            self._apply(verb, event.code, pending.address)
            if verb == "DATA" and self.state is _DATA:
                self._start_data()
        elif event.code == 421:
            self.state = _CLOSED
        # Parsing resumes once the command that paused it (always the last one parsed)
        # has its reply: the 250 to a MAIL pipelined before DATA is not the 354.
        if not self._pending:
            self._paused = False
        return data

    def _next_chunk_data(self) -> MessageData | EndOfChunk | NoEvent:
        """The octets of the BDAT chunk being read, as they are, then its end."""
        left = self._chunk_in
        assert left is not None
        if left == 0:
            self._chunk_in = None
            if self._chunk_last and self.lmtp and self._recipients and self._pending and (
                self._pending[-1].verb == "BDAT"
            ):
                # LMTP (RFC 2033 4.3): BDAT LAST is answered once per accepted recipient,
                # as DATA's final dot is, whatever the answers are.
                self._pending.pop()
                self._owe_end_of_data()
            # What follows is parsed once the chunk is answered (unless it was already:
            # a server may refuse BDAT before reading its chunk).
            self._paused = bool(self._pending)
            return EndOfChunk(self._chunk_size, self._chunk_last)
        data = self._buffer.take_available(min(left, MAX_LINE))
        if not data:
            if self._closed:
                self._chunk_in = None
                self.state = _CLOSED
                return CONNECTION_CLOSED
            return NEED_DATA
        self._chunk_in = left - len(data)
        return MessageData(data)

    def _owe_end_of_data(self) -> None:
        """The message ended: one reply is owed, or with LMTP one per recipient."""
        recipients, self._recipients = self._recipients, []
        if not self.lmtp or not recipients:
            self._pending.append(_BARE_PENDING[END_OF_DATA])
            return
        for address in recipients:
            self._pending.append(_Pending(END_OF_DATA, recipient=address))

    def _start_data(self) -> None:
        """354 sent: what the client sent after DATA is the message."""
        self._data_buf = bytearray(self._buffer.take_available(len(self._buffer)))
        self._data_scan = 0
        self._buffer = LineBuffer()
        if self._closed:
            self._buffer.close()
        self._data_prev_crlf = True
        self._data_line_start = True
        self._data_line_len = 0
        self._bare_newline = False
        self._data_by_line = 0

    def _end_data(self) -> None:
        """The message ended: what follows it is commands again."""
        self._paused = True
        self.state = _READY if self.greeted else _CONNECTED
        rest = bytes(self._data_buf)
        self._data_buf = bytearray()
        if rest:
            self._buffer.feed(rest)

    def _next_data(self) -> MessageData | EndOfMessage | NoEvent:
        buf = self._data_buf
        if self._data_line_start and self._data_by_line <= 0:
            chunk = self._next_data_chunk()
            if chunk is not None:
                return chunk
        # A line longer than MAX_LINE comes out in pieces even when its end is here.
        nl = buf.find(b"\n", self._data_scan, MAX_LINE + 1)
        if nl < 0:
            self._data_scan = min(len(buf), MAX_LINE + 1)
            if len(buf) > MAX_LINE:
                # A line longer than any sane one: hand it out in pieces, so memory
                # stays bounded and nothing is lost. A CR at the cut stays, it may
                # be half of the CRLF that ends the line.
                cut = MAX_LINE - 1 if buf[MAX_LINE - 1] == 0x0D else MAX_LINE
                return self._data_piece(bytes(buf[:cut]), b"", cut)
            if self._closed and buf:
                return self._data_piece(bytes(buf), b"", len(buf))
            if self._closed:
                self.state = _CLOSED
                return CONNECTION_CLOSED
            return NEED_DATA
        if nl > 0 and buf[nl - 1] == 0x0D:
            content, ending = bytes(buf[: nl - 1]), b"\r\n"
        else:
            content, ending = bytes(buf[:nl]), b"\n"
        # RFC 5321 4.1.1.4: only <CRLF>.<CRLF> ends the message. A "." line after a
        # bare LF, or ended by a bare LF, is data: that is what defeats smuggling.
        if content == b"." and ending == b"\r\n" and self._data_line_start and self._data_prev_crlf:
            del buf[: nl + 1]
            self._data_scan = 0
            self._owe_end_of_data()
            self._end_data()
            return EndOfMessage(bare_newline=self._bare_newline)
        if ending == b"\n":
            self._bare_newline = True
        return self._data_piece(content, ending, nl + 1)

    def _next_data_chunk(self) -> MessageData | None:
        """Several whole lines in one piece, when none of them needs a look of its own.

        That is: every line ends in CRLF (no bare LF), none starts with a dot (no
        unstuffing, no end of message) and none is over ``MAX_TEXT_LINE``. The chunk
        is then exactly what handing its lines out one by one would give, joined.
        None: hand out the next line alone.
        """
        buf = self._data_buf
        end = buf.rfind(b"\n") + 1  # whole lines only
        if end == 0 or buf[0] == 0x2E:  # no whole line yet, or a dot line first
            return None
        dot = buf.find(b"\n.", 0, end)
        if dot >= 0:
            end = dot + 1  # up to the line that starts with a dot
        chunk = bytes(buf[:end])
        # One pass over the chunk: a bare LF is an LF left in the pieces between CRLFs,
        # and a line of MAX_TEXT_LINE or more (its CR counted) a piece one shorter.
        # (Two count()s and a split() were 3 % of a sink message of 1 KB.)
        pieces = chunk.split(b"\r\n")
        if b"\n" in b"".join(pieces) or (
            end > MAX_TEXT_LINE and max(map(len, pieces)) >= MAX_TEXT_LINE - 1
        ):
            self._data_by_line = end
            return None
        del buf[:end]
        self._data_scan = 0
        self._data_prev_crlf = True  # the chunk's last line ended in CRLF
        return new_record(MessageData, (chunk, False))

    def _data_piece(self, content: bytes, ending: bytes, consumed: int) -> MessageData:
        """Hand out ``consumed`` octets of the message: a line, or a piece of a long one."""
        del self._data_buf[:consumed]
        self._data_scan = 0
        self._data_by_line -= consumed
        stuffed = self._data_line_start and content.startswith(b".")
        if stuffed:
            content = content[1:]  # dot-unstuffing (RFC 5321 4.5.2)
        # RFC 5321 4.5.3.1.6: the stuffed dot does not count towards the line length.
        self._data_line_len += consumed - stuffed
        too_long = self._data_line_len > MAX_TEXT_LINE
        if ending:
            self._data_line_start = True
            self._data_line_len = 0
            self._data_prev_crlf = ending == b"\r\n"
        else:
            self._data_line_start = False
            self._data_prev_crlf = False
        return new_record(MessageData, (content + ending, too_long))


def format_reply(
    code: int, lines: tuple[str, ...] | list[str], enhanced: str | None = None
) -> bytes:
    """``250-first``/``250 last`` lines for a reply, the enhanced code on each line."""
    if len(lines) == 1:
        # The usual reply, one line with no line break: what the loop below makes of it.
        text = lines[0]
        if "\n" not in text and "\r" not in text:
            if enhanced and not text.startswith(enhanced):
                text = f"{enhanced} {text}"
            if not text and code == 334:
                return b"334 \r\n"  # RFC 4954 4: "334" SP, even with no challenge
            return f"{code} {text}".rstrip().encode("utf-8") + b"\r\n"
    # A line break inside a text would start a reply line of its own, with no code.
    lines = [part for text in lines for part in _LINE_BREAK.split(text)] or [""]
    out = bytearray()
    for index, text in enumerate(lines):
        separator = " " if index == len(lines) - 1 else "-"
        body = f"{enhanced} {text}" if enhanced and not text.startswith(enhanced) else text
        out += f"{code}{separator}{body}".rstrip().encode("utf-8") + b"\r\n"
    return bytes(out)
