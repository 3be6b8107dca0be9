"""A message's two sizes: as stored (LF line endings) and as sent (CRLF, RFC822.SIZE).

Maildir files end lines with LF; IMAP's RFC822.SIZE and POP3's LIST count the
message as it goes over the wire, each bare LF as CRLF. Both are counted in one
pass over the bytes, once per message, when it is first indexed
(:mod:`mailtalk.store.index`) or appended. Stdlib only.
"""

from __future__ import annotations

import os
from pathlib import Path

from mailtalk.store.filesystem import READ_CHUNK_SIZE


class RFC822SizeCounter:
    """Counts a message's size as stored and as RFC822.SIZE: each bare LF becomes CRLF.

    Feed it the stored bytes in chunks of any size; a CR ending one chunk and an
    LF starting the next are recognised as one CRLF.
    """

    def __init__(self) -> None:
        self.size = 0
        self.rfc822_size = 0
        self._after_cr = False
        self._last_byte = 0x0A

    @property
    def unterminated(self) -> bool:
        """The message does not end with a line end: POP3 adds a CRLF before its dot."""
        return self.size > 0 and self._last_byte != 0x0A

    def feed(self, chunk: bytes | bytearray) -> None:
        if not chunk:
            return
        bare_lfs = chunk.count(b"\n")
        if b"\r" in chunk:
            bare_lfs -= chunk.count(b"\r\n")
        if self._after_cr and chunk[0] == 0x0A:
            bare_lfs -= 1
        self._after_cr = chunk[-1] == 0x0D
        self._last_byte = chunk[-1]
        self.size += len(chunk)
        self.rfc822_size += len(chunk) + bare_lfs


def size_suffix(size: int, rfc822_size: int) -> str:
    """Dovecot's size fields for a Maildir name's base: ``,S=<size>,W=<rfc822 size>``."""
    return f",S={size},W={rfc822_size}"


def sizes_from_name(base: str) -> tuple[int, int] | None:
    """(size, RFC822.SIZE) from a Maildir name base's ``,S=`` and ``,W=`` fields
    (Dovecot's, also written by mailtalk's deliveries), or None unless both are there.

    The fields follow the unique part: ``1712345600.M1P2Q3.host,S=1200,W=1236``.
    """
    comma = base.find(",")
    if comma < 0:
        return None
    size = rfc822_size = -1
    for field in base[comma + 1 :].split(","):
        digits = field[2:]
        if not (digits.isascii() and digits.isdigit()):
            continue
        if field[:2] == "S=":
            size = int(field[2:])
        elif field[:2] == "W=":
            rfc822_size = int(field[2:])
    if size < 0 or rfc822_size < size:
        return None
    return size, rfc822_size


def rfc822_size_of(path: Path) -> tuple[int, int]:
    """(size, RFC822.SIZE) of the file at ``path``, read in 1 MiB chunks."""
    counter = RFC822SizeCounter()
    with open(path, "rb", buffering=0) as stream:
        while chunk := stream.read(READ_CHUNK_SIZE):
            counter.feed(chunk)
    return counter.size, counter.rfc822_size


def measure(dir_fd: int, filename: str) -> tuple[os.stat_result, int, int, bool]:
    """(status, size, RFC822.SIZE, unterminated) of ``filename`` in the directory
    ``dir_fd``: one open, one fstat and (for all but large files) one read."""
    fd = os.open(filename, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        status = os.fstat(fd)
        counter = RFC822SizeCounter()
        done = False
        if status.st_size < READ_CHUNK_SIZE:
            data = os.read(fd, status.st_size + 1)
            counter.feed(data)
            done = len(data) <= status.st_size  # short of the extra byte asked: the end
        while not done and (chunk := os.read(fd, READ_CHUNK_SIZE)):
            counter.feed(chunk)
    finally:
        os.close(fd)
    return status, counter.size, counter.rfc822_size, counter.unterminated
