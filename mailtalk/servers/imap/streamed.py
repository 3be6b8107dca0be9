"""A big message's whole text in a FETCH response, from disk in chunks (RFC 3501 7.4.2).

``FETCH 1 BODY.PEEK[]`` of a 45 MB message, rendered in memory, held the file, its
CRLF copy, the response and the batch it went out in: ~135 MB per session for a
client that did not read (issue 15). When a FETCH asks for the whole message
(``BODY[]``, ``BODY.PEEK[]`` or ``RFC822``, no partial) beside nothing but FLAGS, UID,
INTERNALDATE and RFC822.SIZE, a message of ``STREAM_ABOVE`` bytes or more goes out
here instead: the literal's size from a first pass over the file, then the file again
in ``CHUNK``-sized pieces as CRLF (and NUL as 0x80, as ``output.no_nul``), each waiting
for the client to read (``ServerSession.drain``). The bytes are those of
``render_fetch``; the memory is a chunk's.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, BinaryIO, Final

from mailtalk.servers.imap.fetch import render_fetch
from mailtalk.servers.imap.message import FetchMessage, to_crlf
from mailtalk.servers.imap.message_args import FetchItem
from mailtalk.servers.imap.output import no_nul

if TYPE_CHECKING:
    from mailtalk.servers.imap.server import IMAPServerProtocol

__all__ = ["STREAM_ABOVE", "streamed_item", "write_streamed"]

STREAM_ABOVE: Final = 1024 * 1024  # stored bytes from which a whole message is streamed
CHUNK: Final = 64 * 1024
_SIMPLE: Final = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE"})


def _whole_text(item: FetchItem) -> bool:
    if item.partial is not None:
        return False
    if item.name == "RFC822":
        return item.section is None
    section = item.section
    return item.name == "BODY" and section is not None and not section.part and section.text is None


def streamed_item(items: Sequence[FetchItem]) -> int | None:
    """Where the one whole-message item is, when the rest are simple; else None."""
    found = [n for n, item in enumerate(items) if _whole_text(item)]
    if len(found) != 1:
        return None
    rest = [item for n, item in enumerate(items) if n != found[0]]
    if any(item.section is not None or item.name not in _SIMPLE for item in rest):
        return None
    return found[0]


def _wire_chunks(handle: BinaryIO) -> Iterator[bytes]:
    """The stored message as it goes out in a literal: CRLF line ends, NUL as 0x80."""
    held = b""  # a CR at the end of a chunk: the next may start with its LF
    while data := handle.read(CHUNK):
        data = held + data
        held = b""
        if data.endswith(b"\r"):
            held, data = b"\r", data[:-1]
        yield no_nul(to_crlf(data))
    if held:
        yield held


async def write_streamed(
    session: IMAPServerProtocol,
    handle: BinaryIO,
    items: Sequence[FetchItem],
    at: int,
    message: FetchMessage,
    *,
    uid: bool,
) -> None:
    """``* SEQ FETCH (...)`` for ``items``, whose item ``at`` is the whole message read
    from ``handle``; ``message`` has the flags, dates and sizes (no text)."""
    size = sum(len(chunk) for chunk in _wire_chunks(handle))
    handle.seek(0)
    has_uid = any(item.name == "UID" for item in items)
    before = render_fetch(items[:at], message, uid=uid and not has_uid).text
    after = render_fetch(items[at + 1 :], message).text
    name = "RFC822" if items[at].name == "RFC822" else "BODY[]"
    head = f"* {message.seq} FETCH ({before}{' ' if before else ''}{name} {{{size}}}\r\n"
    session.write(head.encode("utf-8"))
    for chunk in _wire_chunks(handle):
        session.write(chunk)
        await session.drain()
        if session.closing:
            return
    session.write(f"{' ' if after else ''}{after})\r\n".encode())
