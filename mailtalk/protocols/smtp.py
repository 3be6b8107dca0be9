"""The SMTP core (RFC 5321): bytes in, events out, with no I/O.

One ``SMTPConnection`` class plays either role. As a client it parses replies
(multi-line ``250-``/``250 `` with enhanced status codes split out) and tracks the
session state from the commands it sent and the replies they got. As a server it
parses command lines and the DATA stream, and formats replies. Both roles run
the same transition table, so the state a client believes in is the state the
server is in.

This module is what both roles share: the states and their table (the commands
valid in each, what a reply moves, the hints), the ``Reply`` event, the replies a
session waits for, and ``SMTPSessionState``, the session's state with the one
method that moves it by a reply. Each role is a module of its own on top of it:
``protocols/smtp_client_role.py`` sends commands and reads replies,
``protocols/smtp_server_role.py`` reads commands and the message and sends replies,
and ``protocols/smtp_connection.py`` puts the two together as ``SMTPConnection``.

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

from mailtalk.protocols.common import CLIENT_ROLE, SERVER_ROLE, LineBuffer, ReplyClass, Role

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


# The members the methods of both roles read, as module names: on Python 3.11 a read
# through the class (``SMTPState.DATA``) goes through ``EnumType.__getattr__``, a
# Python-level hook (about 150 ns a read, 40 times the read of a module name), and a
# server session reads them about 50 times a message. (A name imported from here
# reads as fast as a module's own.)
_GREETING_STATE: Final = SMTPState.GREETING
CONNECTED_STATE: Final = SMTPState.CONNECTED
READY_STATE: Final = SMTPState.READY
DATA_STATE: Final = SMTPState.DATA
CLOSED_STATE: Final = SMTPState.CLOSED


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

# Every command mailtalk knows, in whatever state (a mistyped login is none of them).
KNOWN_VERBS: Final = frozenset(verb for verbs in VALID_COMMANDS.values() for verb in verbs)

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
# The verbs the methods of both roles test a command against for every command or
# reply, as sets: ``verb in ("EHLO", ...)`` compares the strings one by one (with a tuple those
# tests were 4 % of a sink message's instructions).
HELLO_VERB_SET: Final = frozenset(HELLO_VERBS)
# A 2xx to these ends any transaction.
_RESETTING_VERBS: Final = frozenset({*HELLO_VERBS, "RSET", "STARTTLS"})
AUTH_VERBS: Final = frozenset({"AUTH", AUTH_RESPONSE})
_SIZE = re.compile(r"[0-9]{1,20}")


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



class Pending:
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
# nothing changes a Pending after it is made, and the server role makes one for
# every command and message (an __init__ call each). Known verbs only, since a
# client's verb may be anything.
BARE_PENDING: Final = {
    verb: Pending(verb)
    for verb in (GREETING, END_OF_DATA, *HELLO_VERBS, "MAIL", "DATA", "RSET", "NOOP", "QUIT")
}


def rcpt_address(args: str) -> str:
    """The address of ``TO:<a@b> PARAMS`` (RCPT's arguments), without its brackets."""
    rest = args.partition(":")[2].strip() if ":" in args else args.strip()
    if rest.startswith("<"):
        return rest[1:].partition(">")[0]
    return rest.split(" ", 1)[0]

# "BDAT <chunk-size> [LAST]" (RFC 3030 2): the chunk's octets follow the command line.
BDAT_ARGS = re.compile(r"([0-9]{1,18})(?:[ \t]+(LAST))?[ \t]*", re.IGNORECASE)


def parse_bdat(args: str) -> tuple[int, bool] | None:
    """``BDAT``'s arguments as (chunk size, LAST); None when they are not that."""
    match = BDAT_ARGS.fullmatch(args)
    return None if match is None else (int(match.group(1)), bool(match.group(2)))


class SMTPSessionState:
    """What an SMTP session keeps in either role, and how a reply moves it.

    The base of both roles (``SMTPClientRole``, ``SMTPServerRole``): one
    ``__init__`` for every field, the client's and the server's too, so that a
    session is made with one call and its fields keep one shared layout. A plain
    class, not a dataclass (see ``protocols.common.Line``), as ``Pending``: nothing
    compares or prints a session."""

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
        self._pending: deque[Pending] = deque([BARE_PENDING[GREETING]])
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
        elif self.role is SERVER_ROLE and self.state is DATA_STATE:
            self._data_buf += data
        else:
            self._buffer.feed(data)

    def tls_started(self) -> None:
        self.wants_tls_upgrade = False
        self.tls = True

    def _apply(self, verb: str, code: int, address: str | None = None) -> None:
        digit = code // 100
        if verb in HELLO_VERB_SET and digit == 2:
            self.greeted = True
        if digit == 2 and verb in _RESETTING_VERBS:
            self._recipients = []  # a new session or a reset: no transaction
        if verb == "RCPT" and digit == 2 and address is not None:
            self._recipients.append(address)
        if code == 421:
            # The server is shutting the channel, whatever the command (RFC 5321
            # 3.8): even a 421 to the end of the message is not a reset.
            self.state = CLOSED_STATE
            return
        key = (verb, digit)
        if key not in TRANSITIONS:
            return
        new_state = TRANSITIONS[key]
        if new_state is None:
            new_state = READY_STATE if self.greeted else CONNECTED_STATE
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
