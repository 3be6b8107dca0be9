"""A stored message as FETCH and SEARCH see it (RFC 3501 6.4.5, RFC 2045), no I/O.

A :class:`FetchMessage` wraps one stored message (Maildir keeps LF line ends; IMAP
serves CRLF, so everything rendered is converted) plus its metadata, and parses
lazily: FLAGS, UID, INTERNALDATE and RFC822.SIZE touch no bytes, HEADER.FIELDS
reads only the header block, and the MIME tree (:class:`Entity`) is built only for
BODYSTRUCTURE, BODY, ENVELOPE of parts and numbered sections.

Header-derived strings are carried as latin-1 ``str`` so the original bytes come
back unchanged when rendered.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import re
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Final

__all__ = [
    "MAX_DEPTH",
    "TOKEN",
    "Entity",
    "FetchMessage",
    "Header",
    "find_part",
    "parse_params",
    "read_quoted",
    "to_crlf",
]

MAX_DEPTH: Final = 32  # MIME nesting deeper than this is served as an opaque part


def to_crlf(data: bytes) -> bytes:
    """Line ends as CRLF (LF alone becomes CRLF; CRLF stays)."""
    if b"\r" not in data:
        return data.replace(b"\n", b"\r\n")
    return re.sub(rb"\r?\n", b"\r\n", data)


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


class Header:
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


# -- structured header values ---------------------------------------------------------

# An RFC 2045 token (a MIME type, a parameter name), RFC 5322 atom text too.
TOKEN: Final = re.compile(r'[^\s()<>@,;:\\".\[\]]+')


def read_quoted(text: str, pos: int) -> tuple[str, int]:
    """The quoted string that opens at ``text[pos]``, its backslash escapes undone, and
    where what follows its closing quote starts (past the end if it never closes)."""
    end = pos + 1
    length = len(text)
    chunk: list[str] = []
    while end < length and text[end] != '"':
        if text[end] == "\\" and end + 1 < length:
            end += 1
        chunk.append(text[end])
        end += 1
    return "".join(chunk), end + 1


def parse_params(text: str) -> tuple[str, list[tuple[str, str]]]:
    """``"text/plain; charset=us-ascii"`` as ("text/plain", [("CHARSET", "us-ascii")])."""
    items: list[list[str]] = [[]]
    pos = 0
    length = len(text)
    current = items[0]
    buf: list[str] = []
    while pos < length:
        char = text[pos]
        if char == '"':
            value, pos = read_quoted(text, pos)
            buf.append("\x00" + value)  # marks a quoted value
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


# -- MIME tree -------------------------------------------------------------------------


class Entity:
    """One MIME entity in the CRLF message: its header, body range and children."""

    __slots__ = ("body_end", "body_start", "children", "data", "header", "main", "message",
                 "params", "sub")

    def __init__(self, data: bytes, start: int, end: int, default: tuple[str, str],
                 depth: int) -> None:
        self.data = data
        body_start, has_blank = _body_offset(data, start, end)
        self.header = Header(data[start:body_start], has_blank)
        self.body_start = body_start
        self.body_end = end
        ctype = self.header.first("content-type")
        main, sub = default
        params: list[tuple[str, str]] = (
            [("CHARSET", "US-ASCII")] if default == ("text", "plain") else []
        )
        if ctype is not None:
            head, found = parse_params(ctype)
            kind, slash, subtype = head.partition("/")
            if slash and TOKEN.fullmatch(kind.strip()) and TOKEN.fullmatch(subtype.strip()):
                main, sub, params = kind.strip().lower(), subtype.strip().lower(), found
            else:
                main, sub = "text", "plain"
                params = [("CHARSET", "US-ASCII")]
        self.children: list[Entity] = []
        self.message: Entity | None = None
        if depth < MAX_DEPTH and main == "multipart":
            boundary = dict(params).get("BOUNDARY")
            spans = self._split(boundary.encode("latin-1")) if boundary else []
            child_default = ("message", "rfc822") if sub == "digest" else ("text", "plain")
            self.children = [Entity(data, s, e, child_default, depth + 1) for s, e in spans]
            if not self.children:
                main, sub, params = "text", "plain", [("CHARSET", "US-ASCII")]
        elif depth < MAX_DEPTH and (main, sub) == ("message", "rfc822") and (
            self.encoding in ("7BIT", "8BIT", "BINARY")
        ):
            self.message = Entity(data, body_start, end, ("text", "plain"), depth + 1)
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

    def walk(self) -> Iterator[Entity]:
        yield self
        for child in self.children:
            yield from child.walk()
        if self.message is not None:
            yield from self.message.walk()


def find_part(root: Entity, path: Sequence[int]) -> Entity | None:
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
        modseq: int = 0,
        cache_key: tuple[str, int, int] | None = None,
        answers: dict[tuple[tuple[str, ...], bool], bytes] | None = None,
    ) -> None:
        """``header_only``: ``raw`` is just the header block (as the store's
        ``read_header`` returns it) and only header items will be rendered.
        ``cache_key``: what identifies the message's bytes (the store's
        ``HeaderReader.key``); HEADER.FIELDS answers are then kept by it for other
        fetches. ``answers``: those answers by (field names, NOT), all found kept:
        ``raw`` is then empty (FetchRenderer.cached_answers)."""
        self.raw = raw
        self.header_only = header_only
        self.uid = uid
        self.flags = flags
        self.internaldate = internaldate
        self._size = rfc822_size
        self.recent = recent
        self.seq = seq
        self.modseq = modseq  # RFC 7162 FETCH MODSEQ
        self.cache_key = cache_key
        self.answers = answers

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
    def header(self) -> Header:
        """The top-level header, read without converting the body."""
        offset, has_blank = _body_offset(self.raw)
        return Header(to_crlf(self.raw[:offset]), has_blank)

    @cached_property
    def root(self) -> Entity:
        return Entity(self.crlf, 0, len(self.crlf), ("text", "plain"), 0)

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
    # Here: email.header (with email.charset and its codecs, 0.15-0.3 MiB) is for
    # SEARCH's text of encoded words, which a server may never be asked for.
    from email.header import decode_header, make_header

    try:
        return str(make_header(decode_header(text)))
    except (ValueError, LookupError, UnicodeError):
        return text


def _decode_text_header(header: Header) -> str:
    return "".join(_decode_words(raw.rstrip(b"\r\n")) + "\n" for _, raw in header.fields)


def _decode_transfer(entity: Entity) -> bytes | None:
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


def _decode_text_part(entity: Entity) -> str:
    data = _decode_transfer(entity)
    if data is None:
        data = entity.body
    charset = dict(entity.params).get("CHARSET", "utf-8")
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "utf-8"
    return data.decode(charset, errors="replace")
