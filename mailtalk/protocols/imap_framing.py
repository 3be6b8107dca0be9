"""IMAP's framing (RFC 3501 2.2, 4.3, 7.5; RFC 7888; RFC 3516): where one response
or command ends, and the literals inside it.

An IMAP response or command is one line, unless a line ends with a literal marker:
``{n}`` (synchronizing: a client waits for the server's ``+``), ``{n+}`` (LITERAL+,
RFC 7888) or ``~{n}`` (literal8, RFC 3516). Then exactly n raw bytes follow, and the
response or command goes on in the next line. ``IMAPReader`` reads what arrives,
whole or a byte at a time, into one ``Assembly`` (its text with each literal left as
its marker, the literals in order, the raw bytes) and keeps it bounded: a literal
over ``max_literal`` is read off the wire and dropped as it comes, text beyond
``MAX_RESPONSE_TEXT`` is cut, and in the server role a literal may be streamed to a
``LiteralSink`` (an APPEND going to disk) instead of memory.

What an assembled response or command means, and how it moves the session, is the
IMAP core's (``protocols/imap.py``), which extends ``IMAPReader``. The writing side
is here too: response text and its literals as wire bytes, and the check that no
text holds a line break that would start a new line.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    NEED_DATA,
    Line,
    LineBuffer,
    LocalProtocolError,
    NoEvent,
    RemoteProtocolError,
    Role,
)

# A literal bigger than this is read off the wire but not kept (truncated=True).
MAX_LITERAL: Final = 64 * 1024 * 1024
# The text of one response (its lines, literals excluded) is cut beyond this, so a
# server sending endless "{0}" lines cannot grow one event without bound.
MAX_RESPONSE_TEXT: Final = 1024 * 1024
# More digits than this in a literal size is nonsense (and int() of 5000 digits raises).
MAX_SIZE_DIGITS: Final = 19

CRLF: Final = b"\r\n"

# "{12}", "{12+}" (LITERAL+, RFC 7888) or "~{12}" (literal8, RFC 3516) ending a line.
LITERAL_AT_END = re.compile(rb"(~?)\{(\d+)(\+?)\}\Z")
LITERAL_AT_END_TEXT = re.compile(r"(~?)\{(\d+)(\+?)\}\Z")
LITERAL_MARKER = re.compile(r"~?\{(\d+)\+?\}")


@dataclass(frozen=True, slots=True)
class LiteralMarker:
    size: int
    synchronizing: bool  # "{n}" waits for "+", "{n+}" does not


def literal_at_end(content: bytes, *, clamp: bool = False) -> LiteralMarker | None:
    """The literal ``content`` ends with, if any. A size of more digits than anyone can
    send is an error, or with ``clamp`` (the server role) the largest size there is: the
    server then refuses it as too large, with a tagged answer the client waits for."""
    match = LITERAL_AT_END.search(content)
    if match is None:
        return None
    digits = match.group(2)
    if len(digits) > MAX_SIZE_DIGITS:
        if not clamp:
            raise RemoteProtocolError("a literal of {count} digits is not believable",
                                      count=len(digits))
        digits = b"9" * MAX_SIZE_DIGITS
    return LiteralMarker(int(digits), synchronizing=not match.group(3))


class LiteralSink(Protocol):
    """Where the server role streams a large literal (an APPEND going to disk)."""

    def write(self, data: bytes) -> None: ...


def format_with_literals(text: str, literals: tuple[bytes, ...]) -> bytes:
    """Wire bytes for response text whose literals are marked ``{n}`` in order."""
    out = bytearray()
    pos = 0
    for literal in literals:
        marker = re.compile(r"~?\{" + str(len(literal)) + r"\+?\}")
        match = marker.search(text, pos)
        if match is None:
            raise LocalProtocolError("no {{{size}}} marker for a literal in {text!r}",
                                     size=len(literal), text=text)
        out += text[pos : match.end()].encode("utf-8") + CRLF + literal
        pos = match.end()
    out += text[pos:].encode("utf-8") + CRLF
    return bytes(out)


def check_one_line(text: str) -> None:
    if "\r" in text or "\n" in text:
        raise LocalProtocolError("a line break inside {text!r} would start a new line",
                                 text=text[:80])


class Assembly:
    """A response or command being read: its lines and literals so far."""

    def __init__(self) -> None:
        self.text_parts: list[str] = []
        self.text_size = 0
        self.literals: list[bytes] = []
        self.literal_bytes = 0
        self.raw = bytearray()
        self.truncated = False
        self.literal: LiteralMarker | None = None  # being read now
        self.literal_remaining = 0
        self.literal_kept = True
        self.literal_target: LiteralSink | None = None  # streaming the current literal
        self.sink_asked = False  # literal_sink was asked about the current literal
        self.streamed: list[object] = []

    def add_text(self, text: str, raw: bytes) -> None:
        if self.text_size + len(text) > MAX_RESPONSE_TEXT:
            self.truncated = True
            return
        self.text_parts.append(text)
        self.text_size += len(text)
        self.raw += raw

    @property
    def text(self) -> str:
        return "".join(self.text_parts)


class IMAPReader:
    """Reads an IMAP byte stream into whole responses (client role) or commands (server
    role), literals included; see the module docstring."""

    def __init__(self, role: Role, max_literal: int) -> None:
        self.role = role
        self.max_literal = max_literal
        # Server role: asked, when a literal's data starts, ``(command text so far,
        # literal size)``; a LiteralSink it returns gets the data instead of memory.
        self.literal_sink: Callable[[str, int], LiteralSink | None] | None = None
        self._buffer = LineBuffer()
        self._closed = False
        self._close_reported = False
        self._assembly: Assembly | None = None

    def receive_data(self, data: bytes) -> None:
        if self._closed:
            if data:
                raise LocalProtocolError("data received after the connection closed")
            return
        if not data:
            self._buffer.close()
            self._closed = True
            return
        # Drop the bytes of an oversized literal as they arrive, so they are never
        # buffered (the buffer is empty while a literal is being read).
        assembly = self._assembly
        if (
            assembly is not None
            and assembly.literal
            and not assembly.literal_kept
            and not len(self._buffer)
        ):
            skipped = min(assembly.literal_remaining, len(data))
            assembly.literal_remaining -= skipped
            data = data[skipped:]
        if data:
            self._buffer.feed(data)

    def _finish_close(self) -> NoEvent:
        """The peer closed between two responses or commands: say so, once."""
        self._close_reported = True
        return CONNECTION_CLOSED

    def _drop_after_close(self) -> None:
        """Forget a response cut by the close, and the bytes of it that did arrive."""
        self._assembly = None
        self._buffer = LineBuffer()
        self._buffer.close()

    def _read_literal(self, assembly: Assembly) -> bool:
        """Read what there is of the literal being read; True once it is complete."""
        if not assembly.sink_asked and assembly.literal is not None:
            # Asked only once data flows, that is after our "+" for a synchronizing
            # literal: a literal the server refused never opens a sink.
            assembly.sink_asked = True
            if self.literal_sink is not None and self.role is Role.SERVER:
                assembly.literal_target = self.literal_sink(assembly.text, assembly.literal.size)
        if assembly.literal_target is not None:
            chunk = self._buffer.take_available(assembly.literal_remaining)
            if chunk:
                assembly.literal_target.write(chunk)
            assembly.literal_remaining -= len(chunk)
            if assembly.literal_remaining:
                return False
            assembly.literals.append(b"")
            assembly.streamed.append(assembly.literal_target)
            assembly.literal_target = None
        elif assembly.literal_kept:
            data = self._buffer.take(assembly.literal_remaining)
            if data is None:
                return False
            assembly.literals.append(data)
            assembly.literal_bytes += len(data)
            assembly.raw += data
        else:
            skipped = self._buffer.take_available(assembly.literal_remaining)
            assembly.literal_remaining -= len(skipped)
            if assembly.literal_remaining:
                return False
            assembly.literals.append(b"")
        assembly.literal = None
        assembly.literal_remaining = 0
        return True

    def _start_literal(self, assembly: Assembly, marker: LiteralMarker) -> None:
        assembly.literal = marker
        assembly.sink_asked = False
        assembly.literal_remaining = marker.size
        assembly.literal_kept = assembly.literal_bytes + marker.size <= self.max_literal
        if not assembly.literal_kept:
            assembly.truncated = True

    def _next_line(self) -> Line | NoEvent:
        """The next line of the response (client role) or command (server role) being
        read, once the literal being read is complete; NEED_DATA until there is one,
        CONNECTION_CLOSED once the peer closed between two of them."""
        peer = "server" if self.role is Role.CLIENT else "client"
        assembly = self._assembly
        if (
            assembly is not None
            and assembly.literal is not None
            and not self._read_literal(assembly)
        ):
            if self._closed:
                self._drop_after_close()
                raise RemoteProtocolError("the server closed in the middle of a literal"
                                          if peer == "server" else
                                          "the client closed in the middle of a literal")
            return NEED_DATA
        line = self._buffer.next_line()
        if line is not None:
            return line
        if self._closed and not len(self._buffer):
            if self._assembly is not None:
                self._assembly = None
                raise RemoteProtocolError("the server closed in the middle of a response"
                                          if peer == "server" else
                                          "the client closed in the middle of a command")
            if self._close_reported:
                return CONNECTION_CLOSED
            return self._finish_close()
        return NEED_DATA

    def _literal_after(self, assembly: Assembly, line: Line) -> LiteralMarker | None:
        """The literal ``line`` announces at its end, started; None when the line ends
        the response or command. A cut line ends it: its tail may have held the marker."""
        if line.truncated:
            assembly.truncated = True
            return None
        try:
            marker = literal_at_end(line.content, clamp=self.role is Role.SERVER)
        except RemoteProtocolError:
            self._assembly = None
            raise
        if marker is not None:
            self._start_literal(assembly, marker)
        return marker
