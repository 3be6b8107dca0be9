"""BINARY[part] (RFC 3516): a part with its Content-Transfer-Encoding undone, no I/O.

``BINARY[part]`` is the part with its Content-Transfer-Encoding undone: a leaf's body
decoded from base64 or quoted-printable, a multipart's or a message's content with
every part inside decoded and its ``Content-Transfer-Encoding`` field rewritten to
``binary`` (``BINARY[]``: the whole message so), as Dovecot does. Only BINARY data may
go out as a ``~{n}`` literal8, and it does exactly when it holds a NUL (RFC 3516 4.2:
8-bit data without NUL SHOULD be a plain string, so a client can tell from the
marker). An encoding we do not know is :class:`UnknownTransferEncoding` (``NO
[UNKNOWN-CTE]``), data that does not decode is :class:`CorruptTransferEncoding` (``NO
[PARSE]``).
"""

from __future__ import annotations

import base64
import re
from typing import Final

from mailtalk.servers.imap.message import Entity, FetchMessage, find_part
from mailtalk.servers.imap.message_args import Section

__all__ = ["CorruptTransferEncoding", "UnknownTransferEncoding", "binary_data"]


class UnknownTransferEncoding(Exception):
    """BINARY of a part whose encoding we cannot decode: ``NO [UNKNOWN-CTE]``."""


class CorruptTransferEncoding(Exception):
    """BINARY of a part whose base64 or quoted-printable is broken: ``NO [PARSE]``."""


_IDENTITY_ENCODINGS: Final = frozenset({"7BIT", "8BIT", "BINARY"})
_DECODED_ENCODINGS: Final = frozenset({"BASE64", "QUOTED-PRINTABLE"})
_CTE_TOKEN: Final = re.compile(r"[^\s();]+")
_B64_SPACE: Final = re.compile(rb"[ \t\r\n]+")
_B64_DATA: Final = re.compile(rb"([A-Za-z0-9+/]*)(={0,2})")
_QP_ESCAPE: Final = re.compile(rb"=([0-9A-Fa-f]{2})")


def _transfer_encoding(entity: Entity) -> str:
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


def _decoded_body(entity: Entity) -> bytes:
    """A leaf's body with its transfer encoding undone."""
    encoding = _transfer_encoding(entity)
    if encoding in _IDENTITY_ENCODINGS:
        return entity.body
    if encoding == "BASE64":
        return _strict_base64(entity.body)
    if encoding == "QUOTED-PRINTABLE":
        return _strict_quoted_printable(entity.body)
    raise UnknownTransferEncoding(encoding)


def _binary_header(entity: Entity) -> bytes:
    """The entity's header block, ``Content-Transfer-Encoding: binary`` if it was decoded."""
    header = entity.header
    if entity.message is not None or entity.children:
        return header.block
    if _transfer_encoding(entity) not in _DECODED_ENCODINGS:
        return header.block
    fields = (b"Content-Transfer-Encoding: binary\r\n" if name == "content-transfer-encoding"
              else raw for name, raw in header.fields)
    return b"".join(fields) + (b"\r\n" if header.has_blank else b"")


def _binary_whole(entity: Entity) -> bytes:
    """Header and content of ``entity`` (a message or a part) with every encoding undone."""
    return _binary_header(entity) + _binary_content(entity)


def _binary_content(entity: Entity) -> bytes:
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


def binary_data(message: FetchMessage, section: Section) -> bytes | None:
    """What ``BINARY[section]`` returns; None when the part does not exist."""
    if not section.part:
        return _binary_whole(message.root)
    entity = find_part(message.root, section.part)
    return None if entity is None else _binary_content(entity)
