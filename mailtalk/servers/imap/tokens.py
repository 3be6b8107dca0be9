"""IMAP command arguments as tokens (RFC 3501 9 / RFC 9051 9): atoms, strings, lists.

The IMAP core (``mailtalk.protocols.imap``) hands the server a ``Command`` whose
``args`` is the text after the verb with each literal left as its marker
(``{5}``, ``{5+}`` or ``~{5}``) and whose ``literals`` are the literal bytes in
order. :func:`tokenize` turns that pair into :class:`Atom`, :class:`String` and
nested lists; :func:`astring` and :func:`describe` are the simplest readings of a
token and :func:`parse_astrings` of a command's arguments (LOGIN, RENAME...),
shared by the command parsers (:mod:`mailtalk.servers.imap.mailbox_args`,
:mod:`mailtalk.servers.imap.message_args`, :mod:`mailtalk.servers.imap.search`).
Bad syntax raises :class:`IMAPSyntaxError`, whose message is one line fit for a
``BAD`` response.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias

__all__ = [
    "SEARCH_CHARSETS_LISTED",
    "Atom",
    "IMAPSyntaxError",
    "SearchCharsetError",
    "String",
    "Value",
    "astring",
    "describe",
    "parse_astrings",
    "tokenize",
    "wire_bytes",
]


class IMAPSyntaxError(ValueError):
    """The arguments are malformed: answer ``BAD`` with ``str(error)``."""

    def __init__(self, message: str) -> None:
        super().__init__(message.replace("\r", " ").replace("\n", " "))


# What BADCHARSET lists (RFC 3501 7.1): the charsets of mail in practice. Any other
# that Python decodes is accepted too (see search.search_codec). Here, not in search:
# the session catches the error without loading SEARCH's code (servers.imap.selected).
SEARCH_CHARSETS_LISTED: Final = (
    "UTF-8", "US-ASCII", *(f"ISO-8859-{n}" for n in (*range(1, 12), *range(13, 17))),
    *(f"WINDOWS-{n}" for n in range(1250, 1259)), "KOI8-R", "KOI8-U", "ISO-2022-JP",
    "SHIFT_JIS", "EUC-JP", "EUC-KR", "GB2312", "GBK", "GB18030", "BIG5", "UTF-16", "UTF-7",
)


class SearchCharsetError(Exception):
    """SEARCH CHARSET names a charset we do not support: answer ``NO [BADCHARSET ...]``."""

    code: Final = f"BADCHARSET ({' '.join(SEARCH_CHARSETS_LISTED)})"

    def __init__(self, charset: str) -> None:
        super().__init__(f"charset {charset} is not supported")
        self.charset = charset


# -- tokens ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Atom:
    """An atom as sent (``NIL``, ``FLAGS``, ``1:*``, ``\\Seen``, ``BODY[TEXT]<0.10>``)."""

    value: str

    @property
    def is_nil(self) -> bool:
        return self.value.upper() == "NIL"


@dataclass(frozen=True, slots=True)
class String:
    """A quoted string (escapes resolved) or a literal; ``value`` is its bytes."""

    value: bytes
    literal: bool = False

    @property
    def text(self) -> str:
        return self.value.decode("utf-8", errors="replace")


Value: TypeAlias = "Atom | String | list[Value]"

# Characters that end an atom (RFC 3501 9 atom-specials, minus the list wildcards,
# "\" and "]" which flags, patterns and sections need; CTLs are refused outright).
_ATOM_END: Final = frozenset(' (){"')
_LITERAL: Final = re.compile(r"(~?)\{(\d{1,19})(\+?)\}")
_MAX_DEPTH: Final = 64


class _Reader:
    """A cursor over command text plus its literals."""

    def __init__(self, text: str, literals: Sequence[bytes], *, raw8: bool = False) -> None:
        self.text = text
        self.pos = 0
        self.literals = literals
        self.literal_index = 0
        self.raw8 = raw8

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_spaces(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def value(self, depth: int = 0) -> Value:
        char = self.peek()
        if not char:
            raise IMAPSyntaxError("missing argument")
        if char == "(":
            if depth >= _MAX_DEPTH:
                raise IMAPSyntaxError("parentheses nested too deeply")
            self.pos += 1
            items: list[Value] = []
            while True:
                self.skip_spaces()
                if self.at_end():
                    raise IMAPSyntaxError("missing )")
                if self.peek() == ")":
                    self.pos += 1
                    return items
                items.append(self.value(depth + 1))
        if char == ")":
            raise IMAPSyntaxError("unexpected )")
        if char == '"':
            return self.quoted()
        if char in "{~":
            match = _LITERAL.match(self.text, self.pos)
            if match is not None:
                return self.literal(match)
            if char == "{":
                raise IMAPSyntaxError("malformed literal")
        return self.atom()

    def quoted(self) -> String:
        text = self.text
        pos = self.pos + 1
        out: list[str] = []
        while True:
            if pos >= len(text):
                raise IMAPSyntaxError("unterminated quoted string")
            char = text[pos]
            if char == '"':
                break
            if char == "\\":
                nxt = text[pos + 1 : pos + 2]
                if (byte := _ESCAPED_BYTE.match(text, pos)) is not None:
                    if not self.raw8:
                        raise IMAPSyntaxError("a quoted string holds octets that are not UTF-8")
                    out.append(chr(0xDC00 + int(byte.group(1), 16)))  # the octet as sent
                    pos = byte.end()
                    continue
                if nxt not in ('"', "\\"):
                    raise IMAPSyntaxError('only \\" and \\\\ may be escaped in a quoted string')
                out.append(nxt)
                pos += 2
                continue
            if char in "\r\n\x00":
                raise IMAPSyntaxError("CR, LF or NUL in a quoted string")
            out.append(char)
            pos += 1
        self.pos = pos + 1
        return String("".join(out).encode("utf-8", errors="surrogateescape"))

    def literal(self, match: re.Match[str]) -> String:
        size = int(match.group(2))
        if self.literal_index >= len(self.literals):
            raise IMAPSyntaxError("a literal marker without its literal")
        data = self.literals[self.literal_index]
        if len(data) != size:
            raise IMAPSyntaxError(f"literal of {size} octets arrived as {len(data)}")
        self.literal_index += 1
        self.pos = match.end()
        return String(data, literal=True)

    def atom(self) -> Atom:
        text = self.text
        start = pos = self.pos
        depth = 0
        while pos < len(text):
            char = text[pos]
            if ord(char) < 0x20 or char == "\x7f":
                raise IMAPSyntaxError(f"control character {ord(char):#04x} in the arguments")
            if depth:
                if char == "[":
                    depth += 1
                elif char == "]":
                    depth -= 1
                elif char == '"':
                    end = _quoted_end(text, pos)
                    if end < 0:
                        raise IMAPSyntaxError("unterminated quoted string")
                    pos = end
                elif char == "{" and _LITERAL.match(text, pos):
                    raise IMAPSyntaxError("a literal inside [] is not supported")
                pos += 1
                continue
            if char in _ATOM_END:
                break
            if char == "[":
                depth = 1
            elif char == "]":
                raise IMAPSyntaxError("unbalanced ]")
            pos += 1
        if depth:
            raise IMAPSyntaxError("missing ]")
        if pos == start:
            raise IMAPSyntaxError(f"unexpected {text[pos]!r}")
        self.pos = pos
        return Atom(text[start:pos])

    def next_value(self) -> Value:
        """A value after the separating space (or at the start)."""
        if self.pos > 0:
            if self.peek() != " ":
                if self.at_end():
                    raise IMAPSyntaxError("missing argument")
                raise IMAPSyntaxError(f"expected a space before {self.text[self.pos:][:20]!r}")
            self.pos += 1
        return self.value()

    def values(self) -> list[Value]:
        out: list[Value] = []
        while not self.at_end():
            out.append(self.next_value())
        return out

    def end(self) -> None:
        if not self.at_end():
            raise IMAPSyntaxError(f"unexpected extra arguments: {self.text[self.pos:][:40]!r}")
        if self.literal_index != len(self.literals):
            raise IMAPSyntaxError("a literal without its marker")


def _quoted_end(text: str, pos: int) -> int:
    """Index of the quote closing the quoted string that opens at ``pos`` (-1: none)."""
    pos += 1
    while pos < len(text):
        if text[pos] == "\\":
            pos += 2
            continue
        if text[pos] == '"':
            return pos
        pos += 1
    return -1


# An octet that is not UTF-8, as the IMAP core's decode_text() writes it ("\\xf6").
_ESCAPED_BYTE: Final = re.compile(r"\\x([89a-f][0-9a-f])")


def wire_bytes(text: str) -> bytes:
    """Command text back to the octets sent (for 8-bit search strings in a charset)."""
    text = _ESCAPED_BYTE.sub(lambda m: chr(0xDC00 + int(m.group(1), 16)), text)
    return text.encode("utf-8", errors="surrogateescape")


def tokenize(args: str, literals: Sequence[bytes] = (), *, raw8: bool = False) -> list[Value]:
    """All arguments: atoms, strings (quoted or literal) and nested lists.

    Arguments are separated by exactly one space (RFC 3501 9); NIL stays an
    :class:`Atom` (``is_nil``), as only the grammar of the argument says whether
    it means nothing or the mailbox called NIL. ``raw8``: a quoted string may hold
    8-bit octets that are not UTF-8 (a SEARCH string in ISO-8859-1, say), which
    reach us escaped as ``\\xNN``; they become those octets again.
    """
    reader = _Reader(args, literals, raw8=raw8)
    out = reader.values()
    reader.end()
    return out


# -- simple argument kinds -----------------------------------------------------


def astring(value: Value, what: str) -> str:
    """An astring argument as text (a quoted string, a literal or an atom); ``what``
    names it in the error."""
    if isinstance(value, String):
        return value.text
    if isinstance(value, Atom):
        if "[" in value.value and not value.value.endswith("]"):
            raise IMAPSyntaxError(f"{what} is not a valid atom")
        return value.value
    raise IMAPSyntaxError(f"{what} must be a string, not a list")


def parse_astrings(args: str, literals: Sequence[bytes], count: int) -> list[str]:
    """Exactly ``count`` astrings (LOGIN user password, RENAME old new...)."""
    values = tokenize(args, literals)
    if len(values) != count:
        raise IMAPSyntaxError(f"expected {count} argument{'s' if count != 1 else ''}, "
                              f"got {len(values)}")
    return [astring(value, "argument") for value in values]


def describe(value: Value) -> str:
    """A token as an error message shows it: the atom, the string quoted, or ``(...)``."""
    if isinstance(value, Atom):
        return value.value[:40]
    if isinstance(value, String):
        return repr(value.text[:40])
    return "(...)"
