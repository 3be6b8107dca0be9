"""FETCH data items rendered from raw message bytes (RFC 3501 6.4.5, 7.4.2, 9), no I/O.

A :class:`FetchMessage` wraps one stored message (Maildir keeps LF line ends; IMAP
serves CRLF, so everything rendered is converted) plus its metadata, and parses
lazily: FLAGS, UID, INTERNALDATE and RFC822.SIZE touch no bytes, HEADER.FIELDS
reads only the header block, and the MIME tree is built only for BODYSTRUCTURE,
BODY, ENVELOPE of parts and numbered sections.

:func:`render_fetch` returns the text between the parentheses of ``* n FETCH (...)``
with each literal written as its ``{n}`` marker, and the literal bytes in order:
exactly what the IMAP core's ``send(Untagged(text, literals))`` expects
(``FetchRendering.untagged(seq)`` builds that event).

Header-derived strings are carried as latin-1 ``str`` so the original bytes come
back unchanged when rendered; 8-bit or CR/LF data goes out as a literal, never
mangled into a quoted string.

**BINARY** (RFC 3516). ``BINARY[part]`` is the part with its
Content-Transfer-Encoding undone: a leaf's body decoded from base64 or
quoted-printable, a multipart's or a message's content with every part inside
decoded and its ``Content-Transfer-Encoding`` field rewritten to ``binary``
(``BINARY[]``: the whole message so), as Dovecot does. Only BINARY data may go
out as a ``~{n}`` literal8, and it does exactly when it holds a NUL (RFC 3516
4.2: 8-bit data without NUL SHOULD be a plain string, so a client can tell from
the marker); elsewhere a NUL, which no IMAP4rev1 string may hold, is sent as
0x80, as Dovecot does. An encoding we do not know is :class:`UnknownTransferEncoding`
(``NO [UNKNOWN-CTE]``), data that does not decode is :class:`CorruptTransferEncoding`
(``NO [PARSE]``).
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import re
import threading
from collections.abc import Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header, make_header
from functools import cached_property
from typing import Final

from mailtalk.protocols.imap import Untagged
from mailtalk.servers.imap.parse import MONTHS, FetchItem, Section

__all__ = [
    "CorruptTransferEncoding",
    "FetchMessage",
    "FetchRenderer",
    "FetchRendering",
    "UnknownTransferEncoding",
    "format_internaldate",
    "render_fetch",
    "render_string",
    "sets_seen",
    "to_crlf",
]

MAX_DEPTH: Final = 32  # MIME nesting deeper than this is served as an opaque part

_MARKER_LIKE: Final = re.compile(rb"\{\d+\+?\}")
_QUOTABLE: Final = re.compile(rb"[\x20-\x7e\t]*")
_ATOM_SAFE: Final = re.compile(r"[!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|}~,/\[]+")


class UnknownTransferEncoding(Exception):
    """BINARY of a part whose encoding we cannot decode: ``NO [UNKNOWN-CTE]``."""


class CorruptTransferEncoding(Exception):
    """BINARY of a part whose base64 or quoted-printable is broken: ``NO [PARSE]``."""


def no_nul(data: bytes) -> bytes:
    """NUL as 0x80: what a (non-BINARY) IMAP string may carry instead (as Dovecot sends)."""
    return data.replace(b"\x00", b"\x80")


def to_crlf(data: bytes) -> bytes:
    """Line ends as CRLF (LF alone becomes CRLF; CRLF stays)."""
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return re.sub(rb"\r?\n", b"\r\n", data)


def format_internaldate(when: datetime | float) -> str:
    """``17-Jul-1996 02:44:25 -0700`` (without the quotes)."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (f"{when.day:02d}-{MONTHS[when.month - 1]}-{when.year:04d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} "
            f"{sign}{minutes // 60:02d}{minutes % 60:02d}")


# -- output -------------------------------------------------------------------------


class _Out:
    """Response text with ``{n}`` markers plus the literals, in order."""

    __slots__ = ("literals", "parts")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.literals: list[bytes] = []

    def text(self, text: str) -> None:
        self.parts.append(text)

    def literal(self, data: bytes, *, binary: bool = False) -> None:
        """A literal; a literal8 (``~{n}``) only for ``binary`` data that holds a NUL."""
        if b"\x00" not in data:
            self.parts.append(f"{{{len(data)}}}")
        elif binary:
            self.parts.append(f"~{{{len(data)}}}")
        else:
            data = no_nul(data)
            self.parts.append(f"{{{len(data)}}}")
        self.literals.append(data)

    def string(self, data: bytes | str | None) -> None:
        """An nstring: NIL, a quoted string when safe, else a literal."""
        if data is None:
            self.parts.append("NIL")
            return
        if isinstance(data, str):
            data = data.encode("latin-1", errors="replace")
        if _QUOTABLE.fullmatch(data) and not _MARKER_LIKE.search(data):
            escaped = data.replace(b"\\", b"\\\\").replace(b'"', b'\\"')
            self.parts.append('"' + escaped.decode("ascii") + '"')
        else:
            self.literal(data)

    def getvalue(self) -> str:
        return "".join(self.parts)


def render_string(data: bytes | str | None) -> tuple[str, list[bytes]]:
    """One nstring as (text, literals): ``"abc"``, ``NIL`` or ``{n}`` plus the bytes."""
    out = _Out()
    out.string(data)
    return out.getvalue(), out.literals


def _astring_text(name: str) -> str:
    if _ATOM_SAFE.fullmatch(name) and name.upper() != "NIL":
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# -- headers ------------------------------------------------------------------------

_FOLD: Final = re.compile(rb"\r?\n(?=[ \t])")
_BLANK_LINE: Final = re.compile(rb"\n\r?\n")


def _body_offset(data: bytes, start: int = 0, end: int | None = None) -> tuple[int, bool]:
    """(where the body starts, whether a blank line ends the header) in data[start:end]."""
    stop = len(data) if end is None else end
    if data.startswith(b"\n", start) and start < stop:
        return start + 1, True
    if data.startswith(b"\r\n", start) and start + 1 < stop:
        return start + 2, True
    match = _BLANK_LINE.search(data, start, stop)
    if match is None:
        return stop, False
    return match.end(), True


class _Header:
    """A header block (CRLF, blank line included when there is one), parsed on demand."""

    __slots__ = ("__dict__", "block", "has_blank")

    def __init__(self, block: bytes, has_blank: bool) -> None:
        self.block = block
        self.has_blank = has_blank

    @cached_property
    def fields(self) -> list[tuple[str, bytes]]:
        """(lower-cased name, the whole field with its CRLF) in order."""
        block = self.block[:-2] if self.has_blank else self.block
        out: list[tuple[str, bytes]] = []
        for line in block.split(b"\r\n"):
            if not line:
                continue
            if line[:1] in (b" ", b"\t") and out:
                name, raw = out[-1]
                out[-1] = (name, raw + line + b"\r\n")
                continue
            colon = line.find(b":")
            name = line[:colon].strip().decode("latin-1").lower() if colon > 0 else ""
            out.append((name, line + b"\r\n"))
        return out

    def values(self, name: str) -> list[bytes]:
        """Unfolded values of every ``name`` field (CRLF removed, outer space stripped)."""
        name = name.lower()
        out = []
        for field_name, raw in self.fields:
            if field_name == name:
                value = raw[raw.find(b":") + 1 :]
                out.append(_FOLD.sub(b"", value).strip(b" \t\r\n"))
        return out

    def first(self, name: str) -> str | None:
        """The first ``name`` value as latin-1 text (bytes kept 1:1), or None."""
        values = self.values(name)
        return values[0].decode("latin-1") if values else None

    def subset(self, names: Iterable[str], exclude: bool) -> bytes:
        wanted = {n.lower() for n in names}
        picked = b"".join(
            raw for name, raw in self.fields if (name in wanted) != exclude and (name or exclude)
        )
        return picked + (b"\r\n" if self.has_blank else b"")


class _SubsetCache:
    """HEADER.FIELDS answers by (stored header block, field names, NOT), for messages read
    header-only; least recently used dropped beyond ``max_bytes``. Keys and values are
    bytes, strings and tuples of them: nothing for the garbage collector to walk."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: dict[tuple[bytes, tuple[str, ...], bool], bytes] = {}
        self._bytes = 0

    def get(self, key: tuple[bytes, tuple[str, ...], bool]) -> bytes | None:
        with self._lock:
            value = self._entries.pop(key, None)
            if value is not None:
                self._entries[key] = value
            return value

    def put(self, key: tuple[bytes, tuple[str, ...], bool], value: bytes) -> None:
        cost = len(key[0]) + len(value) + 200  # the block is shared with the store's cache
        if cost > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value
            self._bytes += cost
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._bytes -= len(oldest[0]) + len(self._entries.pop(oldest)) + 200


_SUBSETS: Final = _SubsetCache(32 * 1024 * 1024)


# -- structured header values ---------------------------------------------------------

_TOKEN: Final = re.compile(r'[^\s()<>@,;:\\".\[\]]+')


def _tokens(text: str) -> list[tuple[str, str]]:
    """RFC 5322 tokens: ("atom"|"quoted"|"comment"|"literal"|"special", text)."""
    out: list[tuple[str, str]] = []
    pos = 0
    length = len(text)
    while pos < length:
        char = text[pos]
        if char.isspace():  # \s in _TOKEN: every kind of white space, \x0b too
            pos += 1
        elif char == '"':
            pos += 1
            chunk: list[str] = []
            while pos < length and text[pos] != '"':
                if text[pos] == "\\" and pos + 1 < length:
                    pos += 1
                chunk.append(text[pos])
                pos += 1
            out.append(("quoted", "".join(chunk)))
            pos += 1
        elif char == "(":
            depth = 0
            chunk = []
            while pos < length:
                c = text[pos]
                if c == "\\" and pos + 1 < length:
                    chunk.append(text[pos + 1])
                    pos += 2
                    continue
                if c == "(":
                    depth += 1
                    if depth > 1:
                        chunk.append(c)
                elif c == ")":
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                    chunk.append(c)
                else:
                    chunk.append(c)
                pos += 1
            out.append(("comment", "".join(chunk).strip()))
        elif char == "[":
            end = text.find("]", pos)
            end = length if end < 0 else end + 1
            out.append(("literal", text[pos:end]))
            pos = end
        elif char in '<>@,;:\\.]':
            out.append(("special", char))
            pos += 1
        else:
            match = _TOKEN.match(text, pos)
            assert match is not None
            out.append(("atom", match.group(0)))
            pos = match.end()
    return out


def _parse_params(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``"text/plain; charset=us-ascii"`` as ("text/plain", [("CHARSET", "us-ascii")])."""
    items: list[list[str]] = [[]]
    pos = 0
    length = len(text)
    current = items[0]
    buf: list[str] = []
    while pos < length:
        char = text[pos]
        if char == '"':
            end = pos + 1
            chunk: list[str] = []
            while end < length and text[end] != '"':
                if text[end] == "\\" and end + 1 < length:
                    end += 1
                chunk.append(text[end])
                end += 1
            buf.append("\x00" + "".join(chunk))  # marks a quoted value
            pos = end + 1
            continue
        if char == "(":
            depth = 0
            while pos < length:
                if text[pos] == "\\":
                    pos += 2
                    continue
                if text[pos] == "(":
                    depth += 1
                elif text[pos] == ")":
                    depth -= 1
                    if depth == 0:
                        break
                pos += 1
            pos += 1
            continue
        if char == ";":
            current.append("".join(buf))
            buf = []
            current = []
            items.append(current)
        else:
            buf.append(char)
        pos += 1
    current.append("".join(buf))
    head = items[0][0].replace("\x00", "").strip() if items[0] else ""
    params: list[tuple[str, str]] = []
    for item in items[1:]:
        raw = item[0] if item else ""
        name, eq, value = raw.partition("=")
        name = name.strip()
        if not eq or not name or "\x00" in name:
            continue
        value = value.strip()
        value = value[1:] if value.startswith("\x00") else value
        params.append((name.upper(), value.replace("\x00", "")))
    return head, params


@dataclass(frozen=True, slots=True)
class _Address:
    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None


_GROUP_END: Final = _Address(None, None, None, None)


def _phrase(tokens: Sequence[tuple[str, str]]) -> str | None:
    words: list[str] = []
    for kind, text in tokens:
        if kind == "comment":
            continue
        if kind == "special" and text == "." and words:
            words[-1] += "."
        else:
            words.append(text)
    return " ".join(words) if words else None


def _addr_spec(tokens: Sequence[tuple[str, str]]) -> tuple[str | None, str | None]:
    parts = [(k, t) for k, t in tokens if k != "comment"]
    at = max((i for i, (k, t) in enumerate(parts) if k == "special" and t == "@"), default=-1)
    local_tokens = parts if at < 0 else parts[:at]
    domain_tokens = [] if at < 0 else parts[at + 1 :]

    def join(items: Sequence[tuple[str, str]]) -> str:
        out = []
        for kind, text in items:
            if kind == "quoted":
                out.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
            else:
                out.append(text)
        return "".join(out)

    local = join(local_tokens) or None
    domain = join(domain_tokens) or None
    return local, domain


def parse_addresses(value: str) -> list[_Address]:
    """An address-list header as envelope addresses, groups as start/end markers."""
    tokens = _tokens(value)
    out: list[_Address] = []
    i = 0
    n = len(tokens)
    in_group = False
    while i < n:
        words: list[tuple[str, str]] = []
        while i < n and not (tokens[i][0] == "special" and tokens[i][1] in "<,;:"):
            words.append(tokens[i])
            i += 1
        sep = tokens[i][1] if i < n else ""
        if sep == ":" and not in_group:
            out.append(_Address(None, None, _phrase(words) or "", None))
            in_group = True
            i += 1
            continue
        if sep == "<":
            i += 1
            inner: list[tuple[str, str]] = []
            while i < n and tokens[i] != ("special", ">"):
                inner.append(tokens[i])
                i += 1
            i += 1  # past ">"
            adl = None
            colon = next((j for j, t in enumerate(inner) if t == ("special", ":")), -1)
            if inner and inner[0] == ("special", "@") and colon > 0:
                adl = "".join(t for _, t in inner[:colon])
                inner = inner[colon + 1 :]
            local, domain = _addr_spec(inner)
            name = _phrase(words)
            while i < n and not (tokens[i][0] == "special" and tokens[i][1] in ",;"):
                i += 1
            if local is not None or domain is not None:
                out.append(_Address(name, adl, local or "MISSING_MAILBOX",
                                    domain or "MISSING_DOMAIN"))
        elif any(k != "comment" for k, _ in words):
            local, domain = _addr_spec(words)
            comments = [t for k, t in words if k == "comment" and t]
            out.append(_Address(comments[-1] if comments else None, None,
                                local or "MISSING_MAILBOX", domain or "MISSING_DOMAIN"))
        if i < n:
            sep = tokens[i][1]
            if sep == ";" and in_group:
                out.append(_GROUP_END)
                in_group = False
            i += 1
    if in_group:
        out.append(_GROUP_END)
    return out


# -- MIME tree -------------------------------------------------------------------------


class _Entity:
    """One MIME entity in the CRLF message: its header, body range and children."""

    __slots__ = ("body_end", "body_start", "children", "data", "header", "main", "message",
                 "params", "sub")

    def __init__(self, data: bytes, start: int, end: int, default: tuple[str, str],
                 depth: int) -> None:
        self.data = data
        body_start, has_blank = _body_offset(data, start, end)
        self.header = _Header(data[start:body_start], has_blank)
        self.body_start = body_start
        self.body_end = end
        ctype = self.header.first("content-type")
        main, sub = default
        params: list[tuple[str, str]] = (
            [("CHARSET", "US-ASCII")] if default == ("text", "plain") else []
        )
        if ctype is not None:
            head, found = _parse_params(ctype)
            kind, slash, subtype = head.partition("/")
            if slash and _TOKEN.fullmatch(kind.strip()) and _TOKEN.fullmatch(subtype.strip()):
                main, sub, params = kind.strip().lower(), subtype.strip().lower(), found
            else:
                main, sub = "text", "plain"
                params = [("CHARSET", "US-ASCII")]
        self.children: list[_Entity] = []
        self.message: _Entity | None = None
        if depth < MAX_DEPTH and main == "multipart":
            boundary = dict(params).get("BOUNDARY")
            spans = self._split(boundary.encode("latin-1")) if boundary else []
            child_default = ("message", "rfc822") if sub == "digest" else ("text", "plain")
            self.children = [_Entity(data, s, e, child_default, depth + 1) for s, e in spans]
            if not self.children:
                main, sub, params = "text", "plain", [("CHARSET", "US-ASCII")]
        elif depth < MAX_DEPTH and (main, sub) == ("message", "rfc822") and (
            self.encoding in ("7BIT", "8BIT", "BINARY")
        ):
            self.message = _Entity(data, body_start, end, ("text", "plain"), depth + 1)
        self.main, self.sub, self.params = main, sub, params

    @property
    def encoding(self) -> str:
        value = self.header.first("content-transfer-encoding")
        return value.strip().upper() if value else "7BIT"

    @property
    def body(self) -> bytes:
        return self.data[self.body_start : self.body_end]

    @property
    def lines(self) -> int:
        body = self.body
        return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)

    def _split(self, boundary: bytes) -> list[tuple[int, int]]:
        data, start, end = self.data, self.body_start, self.body_end
        delimiter = b"--" + boundary
        spans: list[tuple[int, int]] = []
        part_start: int | None = None
        search = start
        while True:
            i = data.find(delimiter, search, end)
            if i < 0:
                break
            search = i + 1
            if i != start and data[i - 2 : i] != b"\r\n":
                continue
            after = i + len(delimiter)
            closing = data[after : after + 2] == b"--"
            line_end = data.find(b"\r\n", after, end)
            stop = end if line_end < 0 else line_end
            if data[after + (2 if closing else 0) : stop].strip(b" \t"):
                continue  # a longer string that starts with the boundary
            if part_start is not None:
                spans.append((part_start, max(part_start, i - 2)))
            if closing:
                part_start = None
                break
            part_start = end if line_end < 0 else line_end + 2
            search = part_start
        if part_start is not None:
            spans.append((part_start, end))
        return spans

    def walk(self) -> Iterator[_Entity]:
        yield self
        for child in self.children:
            yield from child.walk()
        if self.message is not None:
            yield from self.message.walk()


def _find_part(root: _Entity, path: Sequence[int]) -> _Entity | None:
    """The entity a section's part numbers name (RFC 3501 6.4.5)."""
    current = root
    for index, number in enumerate(path):
        if index > 0:
            if current.message is not None:
                current = current.message
            elif not current.children:
                return None
        if current.children:
            if not 1 <= number <= len(current.children):
                return None
            current = current.children[number - 1]
        elif number != 1:
            return None
    return current


# -- the message --------------------------------------------------------------------


class FetchMessage:
    """One message with its metadata; bytes are parsed only as far as an item needs.

    ``raw`` is the message as stored (LF or CRLF line ends). ``rfc822_size`` is the
    CRLF size when the store knows it (otherwise computed without converting).
    """

    def __init__(
        self,
        raw: bytes,
        *,
        uid: int,
        flags: Collection[str] = (),
        internaldate: datetime | float = 0.0,
        rfc822_size: int | None = None,
        recent: bool = False,
        seq: int = 0,
        header_only: bool = False,
    ) -> None:
        """``header_only``: ``raw`` is just the header block (as the store's
        ``read_header`` returns it) and only header items will be rendered;
        HEADER.FIELDS answers are then shared with other fetches of the same bytes."""
        self.raw = raw
        self._header_only = header_only
        self.uid = uid
        self.flags = flags
        self.internaldate = internaldate
        self._size = rfc822_size
        self.recent = recent
        self.seq = seq

    @property
    def size(self) -> int:
        if self._size is None:
            raw = self.raw
            lf = raw.count(b"\n")
            self._size = len(raw) + lf - (raw.count(b"\r\n") if b"\r" in raw else 0)
        return self._size

    @cached_property
    def crlf(self) -> bytes:
        return to_crlf(self.raw)

    @cached_property
    def header(self) -> _Header:
        """The top-level header, read without converting the body."""
        offset, has_blank = _body_offset(self.raw)
        return _Header(to_crlf(self.raw[:offset]), has_blank)

    @cached_property
    def root(self) -> _Entity:
        return _Entity(self.crlf, 0, len(self.crlf), ("text", "plain"), 0)

    @property
    def text(self) -> bytes:
        """The body (RFC822.TEXT / BODY[TEXT]) in CRLF form."""
        return self.crlf[len(self.header.block) :]

    @property
    def internaldate_datetime(self) -> datetime:
        when = self.internaldate
        if not isinstance(when, datetime):
            return datetime.fromtimestamp(when, UTC)
        return when if when.tzinfo is not None else when.replace(tzinfo=UTC)

    # -- for SEARCH ---------------------------------------------------------------

    def header_values(self, name: str) -> list[str]:
        """Every ``name`` field value, RFC 2047 words decoded, for substring search."""
        return [_decode_words(v) for v in self.header.values(name)]

    def has_header(self, name: str) -> bool:
        name = name.lower()
        return any(field_name == name for field_name, _ in self.header.fields)

    def header_text(self) -> str:
        return "".join(
            _decode_words(raw.rstrip(b"\r\n")) + "\n" for _, raw in self.header.fields
        )

    @cached_property
    def _body_text(self) -> str:
        chunks: list[str] = []
        for entity in self.root.walk():
            if entity.children:
                continue
            if entity.message is not None:
                chunks.append(_decode_text_header(entity.message.header))
            elif entity.main == "text":
                chunks.append(_decode_text_part(entity))
        return "\n".join(chunks)

    def body_text(self) -> str:
        """The text of the body: text/* parts decoded (transfer encoding and charset)."""
        return self._body_text


def _decode_words(value: bytes) -> str:
    text = value.decode("utf-8", errors="replace") if not value.isascii() else value.decode()
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError):
        return text


def _decode_text_header(header: _Header) -> str:
    return "".join(_decode_words(raw.rstrip(b"\r\n")) + "\n" for _, raw in header.fields)


def _decode_transfer(entity: _Entity) -> bytes | None:
    encoding = entity.encoding
    body = entity.body
    if encoding in ("7BIT", "8BIT", "BINARY"):
        return body
    if encoding == "BASE64":
        try:
            return base64.b64decode(re.sub(rb"[^A-Za-z0-9+/=]", b"", body) + b"==")
        except (binascii.Error, ValueError):
            return None
    if encoding == "QUOTED-PRINTABLE":
        try:
            return binascii.a2b_qp(body)
        except (binascii.Error, ValueError):
            return None
    return None


def _decode_text_part(entity: _Entity) -> str:
    data = _decode_transfer(entity)
    if data is None:
        data = entity.body
    charset = dict(entity.params).get("CHARSET", "utf-8")
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    return data.decode(charset, errors="replace")


# -- ENVELOPE / BODYSTRUCTURE -----------------------------------------------------------


def _render_addresses(out: _Out, header: _Header, name: str, fallback: str | None = None
                      ) -> None:
    value = header.first(name)
    addresses = parse_addresses(value) if value is not None else []
    if not addresses and fallback is not None:
        value = header.first(fallback)
        addresses = parse_addresses(value) if value is not None else []
    if not addresses:
        out.text("NIL")
        return
    out.text("(")
    for address in addresses:
        out.text("(")
        out.string(address.name)
        out.text(" ")
        out.string(address.adl)
        out.text(" ")
        out.string(address.mailbox)
        out.text(" ")
        out.string(address.host)
        out.text(")")
    out.text(")")


def _render_envelope(out: _Out, header: _Header) -> None:
    out.text("(")
    out.string(header.first("date"))
    out.text(" ")
    out.string(header.first("subject"))
    for name, fallback in (("from", None), ("sender", "from"), ("reply-to", "from"),
                           ("to", None), ("cc", None), ("bcc", None)):
        out.text(" ")
        _render_addresses(out, header, name, fallback)
    out.text(" ")
    out.string(header.first("in-reply-to"))
    out.text(" ")
    out.string(header.first("message-id"))
    out.text(")")


def _render_params(out: _Out, params: Sequence[tuple[str, str]]) -> None:
    if not params:
        out.text("NIL")
        return
    out.text("(")
    for index, (name, value) in enumerate(params):
        if index:
            out.text(" ")
        out.string(name)
        out.text(" ")
        out.string(value)
    out.text(")")


def _render_extension(out: _Out, header: _Header) -> None:
    """body-fld-dsp SP body-fld-lang SP body-fld-loc."""
    disposition = header.first("content-disposition")
    head, params = _parse_params(disposition) if disposition is not None else ("", [])
    if head:
        out.text("(")
        out.string(head.upper())
        out.text(" ")
        _render_params(out, params)
        out.text(")")
    else:
        out.text("NIL")
    out.text(" ")
    language = header.first("content-language")
    tags = [t.strip() for t in (language or "").split(",") if t.strip()]
    if not tags:
        out.text("NIL")
    elif len(tags) == 1:
        out.string(tags[0])
    else:
        out.text("(")
        for index, tag in enumerate(tags):
            if index:
                out.text(" ")
            out.string(tag)
        out.text(")")
    out.text(" ")
    location = header.first("content-location")
    out.string(re.sub(r"\s+", "", location) if location is not None else None)


def _render_body(out: _Out, entity: _Entity, extensible: bool) -> None:
    out.text("(")
    if entity.children:
        for child in entity.children:
            _render_body(out, child, extensible)
        out.text(" ")
        out.string(entity.sub.upper())
        if extensible:
            out.text(" ")
            _render_params(out, entity.params)
            out.text(" ")
            _render_extension(out, entity.header)
        out.text(")")
        return
    header = entity.header
    out.string(entity.main.upper())
    out.text(" ")
    out.string(entity.sub.upper())
    out.text(" ")
    _render_params(out, entity.params)
    out.text(" ")
    out.string(header.first("content-id"))
    out.text(" ")
    out.string(header.first("content-description"))
    out.text(" ")
    out.string(entity.encoding)
    out.text(f" {len(entity.body)}")
    if entity.message is not None:
        out.text(" ")
        _render_envelope(out, entity.message.header)
        out.text(" ")
        _render_body(out, entity.message, extensible)
        out.text(f" {entity.lines}")
    elif entity.main == "text":
        out.text(f" {entity.lines}")
    if extensible:
        out.text(" ")
        out.string(header.first("content-md5"))
        out.text(" ")
        _render_extension(out, header)
    out.text(")")


# -- sections ---------------------------------------------------------------------------


def _section_data(message: FetchMessage, section: Section) -> bytes | None:
    """The bytes a BODY[section] names; None when the part does not exist."""
    text = section.text
    if not section.part:
        if text is None:
            return message.crlf
        header = message.header
        if text == "TEXT":
            return message.text
        if text == "HEADER":
            return header.block
        return header.subset(section.fields, exclude=text == "HEADER.FIELDS.NOT")
    entity = _find_part(message.root, section.part)
    if entity is None:
        return None
    if text is None:
        return entity.body
    if text == "MIME":
        return entity.header.block
    inner = entity.message
    if inner is None:
        return None
    if text == "TEXT":
        return inner.body
    if text == "HEADER":
        return inner.header.block
    return inner.header.subset(section.fields, exclude=text == "HEADER.FIELDS.NOT")


_IDENTITY_ENCODINGS: Final = frozenset({"7BIT", "8BIT", "BINARY"})
_DECODED_ENCODINGS: Final = frozenset({"BASE64", "QUOTED-PRINTABLE"})
_CTE_TOKEN: Final = re.compile(r"[^\s();]+")
_B64_SPACE: Final = re.compile(rb"[ \t\r\n]+")
_B64_DATA: Final = re.compile(rb"([A-Za-z0-9+/]*)(={0,2})")
_QP_ESCAPE: Final = re.compile(rb"=([0-9A-Fa-f]{2})")


def _transfer_encoding(entity: _Entity) -> str:
    """The Content-Transfer-Encoding mechanism, upper-cased, comments and spaces left out."""
    value = entity.header.first("content-transfer-encoding")
    match = _CTE_TOKEN.search(value) if value else None
    return match.group(0).upper() if match else "7BIT"


def _strict_base64(body: bytes) -> bytes:
    """Base64 (RFC 2045 6.8); anything but the alphabet, line breaks and final padding is
    an error (as Dovecot), and so is a lone character at the end; missing padding is not."""
    data = _B64_SPACE.sub(b"", body)
    match = _B64_DATA.fullmatch(data)
    if match is None:
        raise CorruptTransferEncoding("invalid base64 data")
    core, padding = match.groups()
    if len(core) % 4 == 1 or (padding and (len(core) + len(padding)) % 4):
        raise CorruptTransferEncoding("truncated base64 data")
    return base64.b64decode(core + b"=" * (-len(core) % 4))


def _strict_quoted_printable(body: bytes) -> bytes:
    """Quoted-printable (RFC 2045 6.7): ``=XX`` (either case), soft line breaks, trailing
    white space dropped; any other ``=`` is an error (as Dovecot)."""
    lines = body.split(b"\r\n")
    out = bytearray()
    for index, line in enumerate(lines):
        line = line.rstrip(b" \t")
        soft = line.endswith(b"=")
        if soft:
            line = line[:-1]
        decoded = _QP_ESCAPE.sub(lambda m: bytes([int(m.group(1), 16)]), line)
        if b"=" in _QP_ESCAPE.sub(b"", line):
            raise CorruptTransferEncoding("invalid quoted-printable data")
        out += decoded
        if not soft and index < len(lines) - 1:
            out += b"\r\n"
    return bytes(out)


def _decoded_body(entity: _Entity) -> bytes:
    """A leaf's body with its transfer encoding undone."""
    encoding = _transfer_encoding(entity)
    if encoding in _IDENTITY_ENCODINGS:
        return entity.body
    if encoding == "BASE64":
        return _strict_base64(entity.body)
    if encoding == "QUOTED-PRINTABLE":
        return _strict_quoted_printable(entity.body)
    raise UnknownTransferEncoding(encoding)


def _binary_header(entity: _Entity) -> bytes:
    """The entity's header block, ``Content-Transfer-Encoding: binary`` if it was decoded."""
    header = entity.header
    if entity.message is not None or entity.children:
        return header.block
    if _transfer_encoding(entity) not in _DECODED_ENCODINGS:
        return header.block
    fields = (b"Content-Transfer-Encoding: binary\r\n" if name == "content-transfer-encoding"
              else raw for name, raw in header.fields)
    return b"".join(fields) + (b"\r\n" if header.has_blank else b"")


def _binary_whole(entity: _Entity) -> bytes:
    """Header and content of ``entity`` (a message or a part) with every encoding undone."""
    return _binary_header(entity) + _binary_content(entity)


def _binary_content(entity: _Entity) -> bytes:
    """The content ``BINARY[part]`` names: a leaf decoded; a message or multipart whole,
    every part inside decoded."""
    if entity.message is not None:
        return _binary_whole(entity.message)
    if not entity.children:
        return _decoded_body(entity)
    data = entity.data
    out = bytearray()
    position = entity.body_start
    for child in entity.children:
        start = child.body_start - len(child.header.block)
        out += data[position:start]
        out += _binary_whole(child)
        position = child.body_end
    out += data[position : entity.body_end]
    return bytes(out)


def _binary_data(message: FetchMessage, section: Section) -> bytes | None:
    """What ``BINARY[section]`` returns; None when the part does not exist."""
    if not section.part:
        return _binary_whole(message.root)
    entity = _find_part(message.root, section.part)
    return None if entity is None else _binary_content(entity)


# -- render_fetch ----------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _section_spec(section: Section) -> str:
    return section.spec(_astring_text)



@dataclass(frozen=True, slots=True)
class FetchRendering:
    """``text`` goes between ``* n FETCH (`` and ``)``; ``literals`` fill its markers."""

    text: str
    literals: list[bytes] = field(default_factory=list)
    sets_seen: bool = False

    def untagged(self, seq: int) -> Untagged:
        return Untagged(f"{seq} FETCH ({self.text})", tuple(self.literals))


def sets_seen(items: Iterable[FetchItem]) -> bool:
    """Whether fetching ``items`` sets \\Seen (BODY[...] without PEEK, RFC822, RFC822.TEXT).

    Call it before :func:`render_fetch` so the FLAGS rendered already show \\Seen.
    """
    return any(item.sets_seen for item in items)


def _render_item(out: _Out, item: FetchItem, message: FetchMessage) -> None:
    name = item.name
    section = item.section
    if section is not None:
        if name == "BINARY.SIZE":
            data = _binary_data(message, section)
            out.text(f"BINARY.SIZE[{section.spec()}] {0 if data is None else len(data)}")
            return
        binary = name == "BINARY"
        if binary:
            data = _binary_data(message, section)
            out.text(f"BINARY[{section.spec()}]")
            if item.partial is not None:
                out.text(f"<{item.partial[0]}>")  # RFC 3516 4.2: the origin, as BODY's
            out.text(" ")
        else:
            data = _section_data(message, section)
            out.text(f"BODY[{_section_spec(section)}]")
            if item.partial is not None:
                out.text(f"<{item.partial[0]}>")
            out.text(" ")
        if data is None:
            out.text("NIL")
            return
        if item.partial is not None:
            origin, octets = item.partial
            data = data[origin : origin + octets]
        if not data:
            out.text('""')
        else:
            out.literal(data, binary=binary)
        return
    if name == "FLAGS":
        flags = list(message.flags)
        if message.recent and "\\Recent" not in flags:
            flags.append("\\Recent")
        out.text("FLAGS (" + " ".join(flags) + ")")
    elif name == "UID":
        out.text(f"UID {message.uid}")
    elif name == "RFC822.SIZE":
        out.text(f"RFC822.SIZE {message.size}")
    elif name == "INTERNALDATE":
        out.text(f'INTERNALDATE "{format_internaldate(message.internaldate)}"')
    elif name == "ENVELOPE":
        out.text("ENVELOPE ")
        _render_envelope(out, message.header)
    elif name in ("BODYSTRUCTURE", "BODY"):
        out.text(name + " ")
        _render_body(out, message.root, extensible=name == "BODYSTRUCTURE")
    elif name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        data = {"RFC822": lambda: message.crlf, "RFC822.HEADER": lambda: message.header.block,
                "RFC822.TEXT": lambda: message.text}[name]()
        out.text(name + " ")
        if data:
            out.literal(data)
        else:
            out.text('""')
    else:
        raise ValueError(f"unknown FETCH item {name}")


def render_fetch(
    items: Sequence[FetchItem], message: FetchMessage, *, uid: bool = False
) -> FetchRendering:
    """The FETCH response data for ``items`` (in order); ``uid`` adds UID (UID FETCH).

    BODY.PEEK[...] is rendered as BODY[...]; ``sets_seen`` tells whether the items
    (without PEEK) set \\Seen — the server stores the flag, ideally before
    rendering, and includes FLAGS in the response when it changed.
    """
    out = _Out()
    first = True
    if uid and not any(item.name == "UID" for item in items):
        out.text(f"UID {message.uid}")
        first = False
    for item in items:
        if not first:
            out.text(" ")
        first = False
        _render_item(out, item, message)
    return FetchRendering(out.getvalue(), out.literals, sets_seen(items))


# -- a FETCH command's renderer -----------------------------------------------------------

_SIMPLE_ITEMS: Final = frozenset({"FLAGS", "UID", "RFC822.SIZE", "INTERNALDATE"})
_HEADER_TEXTS: Final = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


class FetchRenderer:
    """One FETCH command's items, prepared once for all its messages.

    When every item is FLAGS, UID, RFC822.SIZE, INTERNALDATE or a top-level
    ``BODY[HEADER...]`` section (``simple``), :meth:`wire` gives a message's whole
    untagged response as wire bytes — byte for byte what
    ``IMAPConnection.send(render_fetch(...).untagged(seq))`` gives (an untagged
    FETCH moves no connection state), at a fraction of the cost. Otherwise
    ``simple`` is False and the caller uses :func:`render_fetch`.
    """

    def __init__(self, items: Sequence[FetchItem], *, uid: bool = False) -> None:
        parts: list[tuple[str, tuple[str, Section, tuple[int, int] | None] | None]] = []
        if uid and not any(item.name == "UID" for item in items):
            parts.append(("UID", None))
        simple = True
        for item in items:
            section = item.section
            if section is None and item.name in _SIMPLE_ITEMS:
                parts.append((item.name, None))
            elif (
                section is not None
                and item.name == "BODY"
                and not section.part
                and section.text in _HEADER_TEXTS
            ):
                head = f"BODY[{_section_spec(section)}]"
                if item.partial is not None:
                    head += f"<{item.partial[0]}>"
                if "{" in head or "\r" in head or "\n" in head:
                    simple = False  # text that looks like a literal marker: the general path
                parts.append(("SECTION", (head + " ", section, item.partial)))
            else:
                simple = False
        self.simple = simple
        self._parts = parts

    def wire(self, message: FetchMessage) -> bytes:
        """``* SEQ FETCH (...)`` CRLF with its literals, for a ``simple`` renderer."""
        out = bytearray()
        pending = [f"* {message.seq} FETCH ("]
        separator = ""
        for kind, arg in self._parts:
            if separator:
                pending.append(separator)
            separator = " "
            if kind == "FLAGS":
                flags = list(message.flags)
                if message.recent and "\\Recent" not in flags:
                    flags.append("\\Recent")
                pending.append("FLAGS (" + " ".join(flags) + ")")
            elif kind == "UID":
                pending.append(f"UID {message.uid}")
            elif kind == "RFC822.SIZE":
                pending.append(f"RFC822.SIZE {message.size}")
            elif kind == "INTERNALDATE":
                pending.append(f'INTERNALDATE "{format_internaldate(message.internaldate)}"')
            else:
                assert arg is not None
                head, section, partial = arg
                if section.text == "HEADER":
                    data = message.header.block
                else:
                    exclude = section.text == "HEADER.FIELDS.NOT"
                    if message._header_only:
                        key = (message.raw, section.fields, exclude)
                        cached = _SUBSETS.get(key)
                        if cached is None:
                            cached = message.header.subset(section.fields, exclude=exclude)
                            _SUBSETS.put(key, cached)
                        data = cached
                    else:
                        data = message.header.subset(section.fields, exclude=exclude)
                if partial is not None:
                    data = data[partial[0] : partial[0] + partial[1]]
                if not data:
                    pending.append(head + '""')
                    continue
                if b"\x00" in data:
                    data = no_nul(data)
                pending.append(f"{head}{{{len(data)}}}")
                out += "".join(pending).encode("utf-8")
                out += b"\r\n"
                out += data
                pending = []
        pending.append(")\r\n")
        out += "".join(pending).encode("utf-8")
        return bytes(out)
