"""What the IMAP core hands out, and the small parsers of its text (no I/O).

The events of ``protocols/imap.py``: a server's untagged and tagged responses as the
client role reads them, and a client's commands, literal requests and continuation
lines as the server role reads them; each is one frozen record, its literals
included. With them, the parsers of the strings inside a response (quoted strings,
literals, ``LIST``'s mailbox name, ``CAPABILITY``), which read events and nothing of
the session's state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from mailtalk.protocols.common import Continuation, ReplyClass, decode_text
from mailtalk.protocols.imap_framing import LITERAL_MARKER

STATUS_KINDS: Final = frozenset({"OK", "NO", "BAD", "BYE", "PREAUTH"})

_NUMBER_KIND = re.compile(r"(\d{1,20}) +(\S+)")


def split_code(text: str) -> tuple[str | None, str]:
    """``"[UIDVALIDITY 1] UIDs valid"`` as ``("UIDVALIDITY 1", "UIDs valid")``."""
    if text.startswith("["):
        end = text.find("]")
        if end > 0:
            return text[1:end], text[end + 1 :].strip()
    return None, text


@dataclass(frozen=True, slots=True)
class Untagged:
    """An untagged response (``* ...``), literals included.

    ``text`` is the response after ``"* "`` with line ends removed and each literal
    left as its ``{n}`` marker as sent; ``literals`` are the literal bytes in order.
    As the server role's ``send()`` argument, only ``text`` and ``literals`` matter.
    """

    text: str
    literals: tuple[bytes, ...] = ()
    raw: bytes = b""
    truncated: bool = False

    @property
    def number(self) -> int | None:
        """The message number or count of ``* 3 EXISTS``, ``* 1 FETCH ...``."""
        match = _NUMBER_KIND.match(self.text)
        return int(match.group(1)) if match else None

    @property
    def kind(self) -> str:
        """The response name upper-cased: OK, BYE, CAPABILITY, LIST, EXISTS, FETCH..."""
        match = _NUMBER_KIND.match(self.text)
        word = match.group(2) if match else self.text.split(" ", 1)[0]
        return word.upper()

    @property
    def _after_kind(self) -> str:
        match = _NUMBER_KIND.match(self.text)
        if match:
            return self.text[match.end() :].strip()
        return self.text.partition(" ")[2].strip()

    @property
    def code(self) -> str | None:
        """The bracketed response code of a status response: ``"UIDVALIDITY 1"``, ``"ALERT"``."""
        if self.kind not in STATUS_KINDS:
            return None
        return split_code(self._after_kind)[0]

    @property
    def message(self) -> str:
        """Human text of a status response, or the data after the response name."""
        rest = self._after_kind
        if self.kind in STATUS_KINDS:
            return split_code(rest)[1]
        return rest

    @property
    def reply_class(self) -> ReplyClass:
        if self.kind in ("NO", "BAD", "BYE"):
            return ReplyClass.PERMANENT
        return ReplyClass.INFO

    @property
    def final(self) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class Tagged:
    """A tagged completion: ``a001 OK [READ-WRITE] SELECT completed``.

    ``command`` is the verb of the command it completes (``"UID FETCH"``), when
    this core sent that command.
    """

    tag: str
    status: str  # "OK", "NO" or "BAD"
    code: str | None
    text: str
    command: str | None = None
    raw: bytes = b""
    literals: tuple[bytes, ...] = ()  # only from broken servers; text keeps the markers
    truncated: bool = False

    @property
    def reply_class(self) -> ReplyClass:
        return ReplyClass.POSITIVE if self.status == "OK" else ReplyClass.PERMANENT

    @property
    def final(self) -> bool:
        return True

    @property
    def ok(self) -> bool:
        return self.status == "OK"


@dataclass(frozen=True, slots=True)
class Command:
    """A command as the server role parsed it.

    ``verb`` is upper-cased with the UID prefix combined (``"UID FETCH"``); ``args``
    is the rest as text with each literal left as its ``{n}`` marker.
    """

    tag: str
    verb: str
    args: str
    literals: tuple[bytes, ...] = ()
    raw: bytes = b""
    truncated: bool = False
    # Server role: literals that went to a ``literal_sink`` instead of memory (their
    # slot in ``literals`` is b""), in order.
    streamed: tuple[object, ...] = ()


@dataclass(frozen=True, slots=True)
class LiteralRequested:
    """Server role: the client announced a synchronizing literal and waits for ``+``.

    Answer with ``send(Continuation("Ready"))``, or refuse with a tagged NO/BAD and
    ``reject_literal()``.
    """

    tag: str
    size: int


@dataclass(frozen=True, slots=True)
class ContinuationResponse:
    """Server role: the line a client sent after our ``+`` (SASL data, or IDLE's DONE)."""

    text: str
    raw: bytes = b""


ServerResponse = Untagged | Tagged | Continuation
ClientInput = Command | LiteralRequested | ContinuationResponse
Event = ServerResponse | ClientInput


# -- small parsers ------------------------------------------------------------------


def _unquote(quoted: str) -> str:
    r"""The value of a quoted string without its quotes, ``\"`` and ``\\`` resolved."""
    # Only the two quoted-specials are escaped (RFC 3501 9); any other backslash is
    # text, such as the "\\xfc" that decode_text() writes for a byte that is not UTF-8.
    return re.sub(r'\\(["\\])', r"\1", quoted[1:-1])


def token_spans(text: str) -> list[tuple[int, int]]:
    """Where each space-separated argument is, quoted strings kept whole."""
    spans: list[tuple[int, int]] = []
    pos = 0
    length = len(text)
    while pos < length:
        if text[pos] == " ":
            pos += 1
            continue
        start = pos
        if text[pos] == '"':
            pos += 1
            while pos < length and text[pos] != '"':
                pos += 2 if text[pos] == "\\" else 1
            pos = min(pos + 1, length)
        else:
            while pos < length and text[pos] != " ":
                pos += 1
        spans.append((start, pos))
    return spans


def read_string(text: str, pos: int, literals: tuple[bytes, ...], literal_index: int
                 ) -> tuple[str | None, int, int]:
    """One astring/nstring at ``pos``: (value or None, position after, next literal index)."""
    while pos < len(text) and text[pos] == " ":
        pos += 1
    if pos >= len(text):
        return None, pos, literal_index
    if text[pos] == '"':
        end = pos + 1
        while end < len(text) and text[end] != '"':
            end += 2 if text[end] == "\\" else 1
        return _unquote(text[pos : end + 1]), end + 1, literal_index
    marker = LITERAL_MARKER.match(text, pos)
    if marker is not None:
        if literal_index < len(literals):
            return decode_text(literals[literal_index]), marker.end(), literal_index + 1
        return None, marker.end(), literal_index + 1
    end = pos
    while end < len(text) and text[end] not in " ()":
        end += 1
    atom = text[pos:end]
    return (None if atom.upper() == "NIL" else atom), end, literal_index


def parse_list_mailbox(response: Untagged) -> str | None:
    """The mailbox name of ``* LIST (\\HasNoChildren) "/" "Sent Items"`` (or LSUB)."""
    if response.kind not in ("LIST", "LSUB", "XLIST"):
        return None
    text = response.text
    pos = text.find(" ") + 1
    if pos <= 0 or pos >= len(text) or text[pos] != "(":
        return None
    close = text.find(")", pos)
    if close < 0:
        return None
    literal_index = len(LITERAL_MARKER.findall(text[:pos]))
    _delimiter, pos, literal_index = read_string(text, close + 1, response.literals,
                                                  literal_index)
    name, _, _ = read_string(text, pos, response.literals, literal_index)
    return name


def parse_capabilities(text: str) -> list[str]:
    """``"CAPABILITY IMAP4rev1 AUTH=PLAIN"`` (a response or a code) as upper-cased names."""
    words = text.split()
    if not words or words[0].upper() != "CAPABILITY":
        return []
    return [word.upper() for word in words[1:]]
