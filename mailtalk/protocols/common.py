"""What the SMTP, POP3 and IMAP cores share: roles, errors, NoEvent and the line buffer.

The cores follow h11's shape: they never touch a socket. Bytes go in through
``receive_data()``, parsed events come out of ``next_event()``, and ``send()``
turns what we want to say into bytes for the transport to write.
"""

from __future__ import annotations

import enum
from typing import Final, NamedTuple, Protocol

# A reply or command line longer than this is cut: RFC 5321 allows 512 octets for
# commands and replies, IMAP lines can be longer, but nothing sane reaches 64 KiB.
MAX_LINE: Final = 64 * 1024


class Role(enum.Enum):
    """Which side of the conversation a core plays."""

    CLIENT = "client"
    SERVER = "server"


class ProtocolError(Exception):
    """Base of the errors a core raises.

    The message is a ``str.format`` template and its values, kept apart: ``str()`` is
    the English sentence (what logs, --json, a server's answer and a trace show), and
    the place that shows the error to a person says the template in the session's
    language and fills in the values (``mailtalk.errors.message_of``). The cores stay
    free of any translation; the templates are the msgids of the ``.po`` catalogues.
    """

    def __init__(self, template: str = "", /, **values: object) -> None:
        # No values, no formatting: a message made elsewhere may hold braces.
        super().__init__(template.format(**values) if values else template)
        self.template = template
        self.values = values


class LocalProtocolError(ProtocolError):
    """We tried to do something the protocol does not allow (a bug on our side)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something that cannot be parsed."""


class NoEvent(enum.Enum):
    """What ``next_event()`` and ``next_command()`` return when they have no event.

    NEED_DATA: no event can be made from what was received so far. CONNECTION_CLOSED:
    ``receive_data(b"")`` said the peer closed and every buffered event has been taken.
    """

    NEED_DATA = "NEED_DATA"
    CONNECTION_CLOSED = "CONNECTION_CLOSED"

    def __repr__(self) -> str:
        return self.value


NEED_DATA: Final = NoEvent.NEED_DATA
CONNECTION_CLOSED: Final = NoEvent.CONNECTION_CLOSED

# The roles as names for the cores' methods, which test them for every command: on
# Python 3.11 a read through the class (``Role.SERVER``) goes through
# ``EnumType.__getattr__``'s slot, a Python-level hook (some 850 instructions a read).
CLIENT_ROLE: Final = Role.CLIENT
SERVER_ROLE: Final = Role.SERVER


# Line and Continuation, and the other records a server makes as it starts, are
# NamedTuples rather than frozen dataclasses: as immutable, compared and shown the same
# way, but made in one step where Python 3.11 compiles six methods of a dataclass with
# exec() as its module is imported, 0.4-0.9 ms a class, paid by every ``mailtalk serve``
# before its first banner (issue 17). As tuples they also equal a plain tuple of their
# values, and unpack. Records that are never compared or printed are plain classes
# with ``__slots__`` instead (servers.transaction, servers.policy).


class Line(NamedTuple):
    """One line off the wire.

    ``content`` is the line without its end; ``ending`` is exactly what ended it
    (``b"\\r\\n"``, a bare ``b"\\n"``, or ``b""`` when the line was cut or the peer
    closed mid-line); ``truncated`` says the line was longer than the limit and
    the rest of it was dropped.
    """

    content: bytes
    ending: bytes
    truncated: bool = False

    @property
    def raw(self) -> bytes:
        return self.content + self.ending


# A NamedTuple made with ``new_record(Class, (field, ...))``, all fields given: the
# class's own ``__new__`` is a Python function (a frame for every line and command the
# servers parse); tuple's is C and makes the same object.
new_record: Final = tuple.__new__


class LineBuffer:
    """Accumulates bytes and hands out whole lines, with bounded memory.

    A line is ended by LF; a CR before the LF is part of the ending. A line longer
    than ``max_line`` is handed out cut, with ``truncated=True``, and the rest of
    it, up to the next LF, is dropped as it arrives, so memory stays bounded
    however much the peer sends without a line end.
    """

    def __init__(self, max_line: int = MAX_LINE) -> None:
        # The bytes not handed out yet. Public to read (not to change): a core tests it
        # for emptiness without a call, as it asks for the next line after every command.
        self.buffered = bytearray()
        self._max_line = max_line
        self._discarding = False  # dropping the tail of a cut line
        self._scan_from = 0  # where to resume looking for LF
        self.closed = False

    def feed(self, data: bytes) -> None:
        if self._discarding:
            nl = data.find(b"\n")
            if nl < 0:
                return
            self._discarding = False
            data = data[nl + 1 :]
        self.buffered += data

    def close(self) -> None:
        self.closed = True

    def __len__(self) -> int:
        return len(self.buffered)

    def next_line(self) -> Line | None:
        """The next complete line, or None if more data is needed."""
        nl = self.buffered.find(b"\n", self._scan_from)
        if nl < 0:
            if len(self.buffered) > self._max_line:
                content = bytes(self.buffered[: self._max_line])
                del self.buffered[:]
                self._scan_from = 0
                self._discarding = True
                return Line(content, b"", truncated=True)
            if self.closed and self.buffered:
                content = bytes(self.buffered)
                del self.buffered[:]
                self._scan_from = 0
                return Line(content, b"")
            self._scan_from = len(self.buffered)
            return None
        self._scan_from = 0
        end = nl + 1
        if nl > 0 and self.buffered[nl - 1] == 0x0D:
            content = bytes(self.buffered[: nl - 1])
            ending = b"\r\n"
        else:
            content = bytes(self.buffered[:nl])
            ending = b"\n"
        del self.buffered[:end]
        if len(content) > self._max_line:
            return Line(content[: self._max_line], b"", truncated=True)
        return new_record(Line, (content, ending, False))

    def take(self, n: int) -> bytes | None:
        """Exactly ``n`` raw bytes (an IMAP literal), or None if fewer are buffered."""
        if len(self.buffered) < n:
            return None
        chunk = bytes(self.buffered[:n])
        del self.buffered[:n]
        self._scan_from = 0
        return chunk

    def take_available(self, limit: int) -> bytes:
        """Up to ``limit`` raw bytes, whatever is buffered now."""
        chunk = bytes(self.buffered[:limit])
        del self.buffered[:limit]
        self._scan_from = 0
        return chunk


def decode_text(data: bytes) -> str:
    """Bytes from the wire as text: UTF-8 where valid, otherwise escaped, never an error."""
    return data.decode("utf-8", errors="backslashreplace")


def peer_text(data: bytes | str, limit: int = 80) -> str:
    """What the peer sent, for an error message: in double quotes, cut at ``limit``
    characters, undecodable bytes and control characters escaped the one way mailtalk
    shows them everywhere (``\\xff``, ``\\x1b``; see ``mailtalk.terminal.safe_text``)."""
    from mailtalk.terminal import safe_text

    text = data.decode("utf-8", "backslashreplace") if isinstance(data, bytes) else data
    cut = "..." if len(text) > limit else ""
    return f'"{safe_text(text[:limit])}{cut}"'


def is_number(text: str, max_digits: int = 4000) -> bool:
    """ASCII digits only, and not too many: ``str.isdigit()`` accepts "²", which ``int()``
    refuses, and ``int()`` refuses strings of more than 4300 digits."""
    return 0 < len(text) <= max_digits and text.isascii() and text.isdigit()


def first_line(event: ServerEvent) -> str:
    """The first line the server sent for ``event``, decoded, for messages."""
    return event.raw.split(b"\n", 1)[0].decode("utf-8", "backslashreplace").strip()


def last_line(event: ServerEvent) -> str:
    """The last line (the final one of a multi-line SMTP reply), decoded."""
    # LF ends a line; a bare CR (or a form feed) inside one is not a line end
    lines = event.raw.decode("utf-8", "backslashreplace").strip().split("\n")
    return lines[-1].strip() if lines else ""


def printable(text: str) -> str:
    """Text fit to echo back to a peer: every control or unprintable character becomes ``?``."""
    return text if text.isprintable() else "".join(c if c.isprintable() else "?" for c in text)


def escape_bytes(data: bytes) -> str:
    """Exact bytes shown printable, for ``:raw`` mode (CR, LF, TAB and controls escaped)."""
    out: list[str] = []
    for b in data:
        if b == 0x0D:
            out.append("\\r")
        elif b == 0x0A:
            out.append("\\n")
        elif b == 0x09:
            out.append("\\t")
        elif b == 0x5C:
            out.append("\\\\")
        elif 0x20 <= b < 0x7F:
            out.append(chr(b))
        else:
            out.append(f"\\x{b:02x}")
    return "".join(out)


def split_verb(line: str) -> tuple[str, str]:
    """A command line as (VERB upper-cased, rest).

    ``"mail FROM:<a>"`` gives ``("MAIL", "FROM:<a>")``.
    """
    stripped = line.strip()
    verb, _, rest = stripped.partition(" ")
    return verb.upper(), rest.strip()


# The verbs whose arguments carry a secret, each with how many of its arguments may be
# shown (the user name, the SASL mechanism), as the cores' redact() shows them.
_SECRET_VERBS: Final = {"LOGIN": 1, "USER": 1, "PASS": 0, "APOP": 1, "AUTH": 1,
                        "AUTHENTICATE": 1}
_MISTYPED: Final = 2  # at most this many letters wrong, missing or extra


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance: letters changed, added or removed to turn ``a`` into ``b``."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, start=1):
        current = [i]
        for j, char_b in enumerate(b, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]


def redact_mistyped_login(line: str, known: frozenset[str]) -> str:
    """``line`` with its secret hidden when its verb is a mistyped login (``LOGN alice
    secret``, ``PAS secret``, ``AUTH PLAN <base64>`` as ``AUTHH``): not a command of
    the protocol (``known``), but within two letters of LOGIN, USER, PASS, APOP, AUTH
    or AUTHENTICATE, or one of them in another protocol's session. The arguments are
    hidden as the real verb's are. The server refuses the line, but history and
    transcripts would keep the password typed in it.

    The verb may come second, after an IMAP tag the user typed."""
    words = line.split()
    for index in range(min(2, len(words))):
        verb = words[index].upper()
        if verb in known:
            return line  # a real command: the core's own redaction is the one
        shown = next((count for secret, count in _SECRET_VERBS.items()
                      if len(verb) >= 3 and _edit_distance(verb, secret) <= _MISTYPED), None)
        if shown is not None:
            keep = index + 1 + shown
            return " ".join([*words[:keep], "***"]) if len(words) > keep else line
    return line


class ReplyClass(enum.Enum):
    """How a reply is coloured and judged, across the three protocols."""

    POSITIVE = "positive"  # SMTP 2xx, POP3 +OK, IMAP OK
    INTERMEDIATE = "intermediate"  # SMTP 3xx, POP3/IMAP "+" continuation
    TRANSIENT = "transient"  # SMTP 4xx
    PERMANENT = "permanent"  # SMTP 5xx, POP3 -ERR, IMAP NO/BAD
    INFO = "info"  # IMAP untagged data (* FLAGS, * 3 EXISTS, ...)


class Continuation(NamedTuple):
    """A continuation request, ``+ text`` (POP3 and IMAP; SMTP uses 334 replies).

    The client's next line is a SASL answer, the rest of an IMAP literal, or DONE.
    """

    text: str = ""
    raw: bytes = b""

    @property
    def reply_class(self) -> ReplyClass:
        return ReplyClass.INTERMEDIATE

    @property
    def final(self) -> bool:
        return True


class ServerEvent(Protocol):
    """What every event a client core emits offers to the UI."""

    @property
    def raw(self) -> bytes:
        """The exact bytes the server sent for this event."""
        ...

    @property
    def reply_class(self) -> ReplyClass: ...

    @property
    def final(self) -> bool:
        """True if this event ends the wait for a command (or is a continuation request)."""
        ...


class ClientCore(Protocol):
    """The interface the REPL and the script runner use for every protocol's client role."""

    protocol: str  # "smtp", "pop3" or "imap"

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> ServerEvent | NoEvent: ...

    def send_line(self, line: str) -> bytes:
        """Bytes to write for a line the user typed (CRLF added; IMAP tag added if missing)."""
        ...

    def redact(self, line: str) -> str:
        """The line as it may be stored in history or a transcript: secrets replaced by ``***``.

        Call it before ``send_line()``: whether a line is secret depends on the state
        (a base64 line after SMTP ``334`` is a password, the same line elsewhere is not).
        """
        ...

    @property
    def state_name(self) -> str: ...

    @property
    def authenticated(self) -> bool: ...

    @property
    def awaiting_reply(self) -> bool:
        """Commands were sent and not all of them have their final reply yet."""
        ...

    @property
    def wants_tls_upgrade(self) -> bool:
        """STARTTLS/STLS was accepted: the transport must start TLS now, then call tls_started()."""
        ...

    def tls_started(self) -> None: ...

    def valid_commands(self) -> list[str]:
        """Commands valid in the current state, from the state table (feeds completion)."""
        ...

    def next_hint(self) -> str:
        """What usually comes next, for the toolbar."""
        ...
