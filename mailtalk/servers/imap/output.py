"""IMAP response data as text with literal markers plus the literals (RFC 3501 4), no I/O.

What the FETCH renderers write: ``ResponseWriter`` collects the text of a response
with each literal as its ``{n}`` marker and the literal bytes in order, exactly what
the IMAP core's ``send(Untagged(text, literals))`` expects. An nstring goes out quoted
when it is safe to, as a literal otherwise; a NUL, which no IMAP4rev1 string may hold,
goes out as 0x80 (as Dovecot sends it) except in BINARY data (RFC 3516 4.2).
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ResponseWriter", "astring_text", "no_nul", "render_string"]

_MARKER_LIKE: Final = re.compile(rb"\{\d+\+?\}")
_QUOTABLE: Final = re.compile(rb"[\x20-\x7e\t]*")
_ATOM_SAFE: Final = re.compile(r"[!#$&'+\-.0-9:;<=>?@A-Z^_`a-z|}~,/\[]+")


def no_nul(data: bytes) -> bytes:
    """NUL as 0x80: what a (non-BINARY) IMAP string may carry instead (as Dovecot sends)."""
    return data.replace(b"\x00", b"\x80")


class ResponseWriter:
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
    out = ResponseWriter()
    out.string(data)
    return out.getvalue(), out.literals


def astring_text(name: str) -> str:
    if _ATOM_SAFE.fullmatch(name) and name.upper() != "NIL":
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
