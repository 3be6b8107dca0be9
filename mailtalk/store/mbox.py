"""An mbox file as a POP3 maildrop, the way qpopper and the old Unix servers serve
``/var/mail/USER``.

**The format** (RFC 4155; the "mboxrd" and "mboxo" variants). Messages follow one
another in one file. Each begins with a ``From `` line, the envelope ("From_" line):
``From SENDER DATE``, DATE as ctime(3) writes it, ``Tue Dec  2 12:30:00 2025``, with
the shapes qpopper (through c-client) recognises: seconds optional, a zone (``PST``,
``-0700``) before or after the year, `` remote from HOST`` at the end. Such a line
separates messages only at the start of the file or after an empty line; anywhere else
it is part of the message it is in. A message is the lines after its From_ line up to
the next separator, without the empty line before that separator (or at the end of the
file), and with one ``>`` taken from each line that is ``>From ``, ``>>From ``...: a
writer quotes body lines that way so that they cannot be taken for a separator
(mboxrd; an mboxo writer quoted only ``From `` itself, and its ``>From `` lines come back
as ``From ``, which is what it meant). :func:`entry` writes a message the mboxrd way.

**The check qpopper makes.** A file that is not empty must begin with a From_ line of
the right shape; otherwise it cannot be split into messages and :func:`scan` raises
:class:`MboxFormatError` (qpopper answers PASS with ``-ERR [SYS/PERM] Unable to process
From lines (envelopes), change recognition modes or check for corrupted mail drop.``).
An empty file is an empty maildrop. MMDF files (``^A^A^A^A`` separators, qpopper's other
"recognition mode") are not read here: they fail that check too.

**Bounded memory.** The file is read in blocks with ``pread`` and cut into lines; a
line longer than :data:`PIECE` bytes is handled in pieces (and never taken for a
separator, as qpopper will not trust a From_ line after an overlong line). What is kept
per message is a few offsets, its sizes and its UIDL, so a multi-gigabyte file costs
memory for its message count only. :class:`MboxMaildrop` keeps the descriptor it
scanned, and RETR reads each message back through it: a file replaced meanwhile (an
editor that saves by renaming) does not get mixed in.

**Deleting** (POP3's UPDATE state, :meth:`MboxMaildrop.remove`): the messages kept are
copied byte for byte, From_ lines and quoting as they were, followed by whatever was
appended to the file after the scan (mail delivered during the session), into a
temporary file beside it, which is fsynced and renamed over the mbox, and the directory
fsynced: the mbox is the old one or the new one, never a partial file. The file is
flocked while this happens; a file that was replaced, shortened or changed where its
messages were since the scan is left as it is (:class:`MboxChangedError`). Locking the
maildrop for the whole session is the caller's job (the POP3 server takes the same lock
as for a Maildir). Stdlib only.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from mailtalk.store.errors import MailboxError, StoreError
from mailtalk.store.filesystem import READ_CHUNK_SIZE, fsync_directory, remove_quietly, write_all
from mailtalk.store.maildir import unique_name
from mailtalk.store.sizes import RFC822SizeCounter

# The longest line handled whole; longer lines are cut into pieces of this size.
PIECE: Final = 64 * 1024
# How much one pread asks for.
BLOCK: Final = READ_CHUNK_SIZE

_ZONE = rb"(?:[A-Za-z]{3,5}|[+-]\d{4})"
_FROM_LINE: Final = re.compile(
    rb"From \S+ +"  # the envelope sender (Postfix puts two spaces after it)
    rb"[A-Za-z]{3} [A-Za-z]{3} +\d{1,2} \d{1,2}:\d\d(?::\d\d)?"  # Tue Dec  2 12:30[:00]
    rb"(?: " + _ZONE + rb")? \d{4}(?: " + _ZONE + rb")?"  # [zone] year [zone]
    rb"(?: remote from \S+)?\r?\n\Z"
)
_BLANK: Final = (b"\n", b"\r\n")


class MboxFormatError(ValueError):
    """The file does not begin with a From_ line: it cannot be split into messages."""


class MboxChangedError(StoreError):
    """The mbox was replaced, shortened or rewritten since it was scanned; nothing deleted."""


def is_from_line(line: bytes) -> bool:
    """Whether ``line`` (its line end included) is a From_ line of a shape qpopper takes."""
    return line.startswith(b"From ") and _FROM_LINE.match(line) is not None


def envelope(sender: str = "MAILER-DAEMON", when: float | None = None) -> bytes:
    """A From_ line: ``From SENDER Tue Dec  2 12:30:00 2025`` (UTC), its LF included."""
    stamp = time.gmtime(time.time() if when is None else when)
    return f"From {sender or 'MAILER-DAEMON'} {time.asctime(stamp)}\n".encode()


def quote(message: bytes) -> bytes:
    """``message`` with one more ``>`` before every line that is ``>*From `` (mboxrd)."""
    lines = message.split(b"\n")
    return b"\n".join(b">" + line if line.lstrip(b">").startswith(b"From ") else line
                      for line in lines)


def entry(message: bytes, sender: str = "MAILER-DAEMON", when: float | None = None) -> bytes:
    """``message`` as an mboxrd writer appends it: From_ line, the message quoted and
    ended with a line end, then the empty line that separates it from the next.
    :func:`scan` gives the message back (a line end added if it had none)."""
    body = quote(message)
    if body and not body.endswith(b"\n"):
        body += b"\n"
    return envelope(sender, when) + body + b"\n"


def unquote(piece: bytes, line_start: bool) -> bytes:
    """A piece of a message as the file holds it, as the message has it: a line (or the
    first piece of one) ``>From ``, ``>>From ``... loses one ``>``."""
    if line_start and piece[:1] == b">" and piece.lstrip(b">").startswith(b"From "):
        return piece[1:]
    return piece


# -- reading the file ---------------------------------------------------------------


def pieces(
    fd: int, start: int = 0, end: int | None = None, *, block: int = BLOCK, piece: int = PIECE
) -> Iterator[tuple[int, bytes]]:
    """(offset, bytes) of the file from ``start`` to ``end`` (None: its end), cut after
    every LF and wherever a line runs to ``piece`` bytes; read ``block`` bytes at a time."""
    buffer = b""
    at = start  # the file offset of buffer[0]
    while True:
        wanted = block if end is None else min(block, end - at - len(buffer))
        data = os.pread(fd, wanted, at + len(buffer)) if wanted > 0 else b""
        buffer += data
        position = 0
        while True:
            newline = buffer.find(b"\n", position, position + piece)
            if newline >= 0:
                yield at + position, buffer[position : newline + 1]
                position = newline + 1
            elif len(buffer) - position >= piece:
                yield at + position, buffer[position : position + piece]
                position += piece
            else:
                break
        buffer, at = buffer[position:], at + position
        if not data:
            if buffer:
                yield at, buffer
            return


@dataclass(frozen=True)
class MboxMessage:
    """One message of an mbox as a POP3 session sees it.

    ``uid`` is its number in the file (1, 2, ...). In the file: ``offset`` (its From_
    line), ``start`` and ``end`` (its quoted text, the empty line before the next
    separator left out) and ``stop`` (where the next message begins). ``size`` is the
    message's bytes as served (unquoted, the file's line ends), ``rfc822_size`` with
    every bare LF counted as CRLF; ``uidl`` a digest of its From_ line and text.
    """

    uid: int
    offset: int
    start: int
    end: int
    stop: int
    size: int
    rfc822_size: int
    unterminated: bool
    uidl: str

    @property
    def pop3_size(self) -> int:
        """What RETR sends before its dot (RFC 1939 11), as for a Maildir message."""
        return self.rfc822_size + 2 if self.unterminated else self.rfc822_size


class _Building:
    """A message being scanned: sizes and digest of what it holds so far."""

    def __init__(self, uid: int, offset: int, from_line: bytes) -> None:
        self.uid = uid
        self.offset = offset
        self.start = offset + len(from_line)
        self.counter = RFC822SizeCounter()
        self.digest = hashlib.sha1(from_line, usedforsecurity=False)

    def add(self, piece: bytes, line_start: bool) -> None:
        text = unquote(piece, line_start)
        self.counter.feed(text)
        self.digest.update(text)

    def finish(self, end: int, stop: int, seen: dict[str, int]) -> MboxMessage:
        uidl = self.digest.hexdigest()
        copies = seen.get(uidl, 0)
        seen[uidl] = copies + 1
        if copies:  # the same message twice: RFC 1939 wants unique ids
            uidl = f"{uidl}.{copies}"
        return MboxMessage(
            self.uid, self.offset, self.start, end, stop, self.counter.size,
            self.counter.rfc822_size, self.counter.unterminated, uidl,
        )


def scan(fd: int, *, block: int = BLOCK, piece: int = PIECE) -> tuple[list[MboxMessage], int]:
    """The messages of the mbox open at ``fd``, and the offset the scan ended at.

    MboxFormatError if the file is not empty and its first line is not a From_ line.
    """
    messages: list[MboxMessage] = []
    seen: dict[str, int] = {}
    current: _Building | None = None
    held: tuple[int, bytes] | None = None  # an empty line: dropped if a separator follows
    line_start = after_blank = True  # the file's start counts as after an empty line
    size = 0
    for offset, text in pieces(fd, block=block, piece=piece):
        size = offset + len(text)
        whole = text.endswith(b"\n")
        if line_start and after_blank and whole and is_from_line(text):
            if current is not None:
                end = held[0] if held is not None else offset
                messages.append(current.finish(end, offset, seen))
            current, held = _Building(len(messages) + 1, offset, text), None
            line_start, after_blank = True, False
            continue
        if current is None:
            first = text[:60].decode("utf-8", "replace").rstrip("\r\n")
            raise MboxFormatError(f"the first line is not a From line: {first!r}")
        if held is not None:
            current.add(held[1], True)
            held = None
        blank = line_start and text in _BLANK
        if blank:
            held = (offset, text)
        else:
            current.add(text, line_start)
        line_start, after_blank = whole, blank
    if current is not None:
        messages.append(current.finish(held[0] if held is not None else size, size, seen))
    return messages, size


class MboxMessageReader:
    """One message's text as served (unquoted), read from the scanned descriptor.

    ``read(n)`` and line iteration, as a file opened on a Maildir message offers;
    a ``with`` block or :meth:`close` ends it (the descriptor stays the maildrop's).
    """

    def __init__(self, fd: int, message: MboxMessage) -> None:
        self._texts = self._unquoted(fd, message)
        self._buffer: list[bytes] = []
        self._buffered = 0

    @staticmethod
    def _unquoted(fd: int, message: MboxMessage) -> Generator[bytes, None, None]:
        line_start = True
        for _, text in pieces(fd, message.start, message.end):
            yield unquote(text, line_start)
            line_start = text.endswith(b"\n")

    def read(self, size: int = -1) -> bytes:
        while size < 0 or self._buffered < size:
            text = next(self._texts, None)
            if text is None:
                break
            self._buffer.append(text)
            self._buffered += len(text)
        data = b"".join(self._buffer)
        if 0 <= size < len(data):
            data, rest = data[:size], data[size:]
            self._buffer, self._buffered = [rest], len(rest)
        else:
            self._buffer, self._buffered = [], 0
        return data

    def __iter__(self) -> Iterator[bytes]:
        if self._buffered:
            yield self.read(self._buffered)
        yield from self._texts

    def close(self) -> None:
        self._texts.close()

    def __enter__(self) -> MboxMessageReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- a session's maildrop -------------------------------------------------------------


class MboxMaildrop:
    """An mbox file opened (and scanned) for one POP3 session.

    MboxFormatError if it cannot be split into messages, OSError if it cannot be read.
    :meth:`close` when the session ends.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            self._messages, self._scanned = scan(self._fd)
        except BaseException:
            os.close(self._fd)
            raise
        self._by_uid = {message.uid: message for message in self._messages}

    def __repr__(self) -> str:
        return f"MboxMaildrop({str(self.path)!r}, {len(self._messages)} messages)"

    def messages(self) -> list[MboxMessage]:
        return list(self._messages)

    def open_message(self, uid: int) -> MboxMessageReader:
        try:
            message = self._by_uid[uid]
        except KeyError:
            raise MailboxError("NONEXISTENT", f"no message {uid} in {self.path}") from None
        return MboxMessageReader(self._fd, message)

    def read_small(self, uid: int, limit: int) -> bytes | None:
        """The message's text as served if shorter than ``limit``, else None (as
        :meth:`Mailbox.read_small <mailtalk.store.mailbox.Mailbox.read_small>`)."""
        message = self._by_uid.get(uid)
        if message is not None and message.size >= limit:
            return None
        with self.open_message(uid) as reader:
            data = reader.read(limit)
        return data if len(data) < limit else None

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> MboxMaildrop:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def remove(self, uids: Iterable[int]) -> None:
        """Rewrite the mbox without these messages (see the module documentation)."""
        gone = set(uids)
        if not gone & set(self._by_uid):
            return
        with open(self.path, "rb") as current:
            fcntl.flock(current.fileno(), fcntl.LOCK_EX)
            self._check_unchanged(current.fileno())
            tmp = self.path.with_name(f".{self.path.name}.{unique_name()}.tmp")
            mode = os.fstat(current.fileno()).st_mode & 0o7777
            out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                try:
                    os.fchmod(out, mode)
                    for message in self._messages:
                        if message.uid not in gone:
                            _copy(current.fileno(), out, message.offset, message.stop)
                    _copy(current.fileno(), out, self._scanned, None)  # mail added since
                    os.fsync(out)
                finally:
                    os.close(out)
                os.rename(tmp, self.path)
            except BaseException:
                remove_quietly(tmp)
                raise
        fsync_directory(self.path.parent)

    def _check_unchanged(self, fd: int) -> None:
        """MboxChangedError unless ``fd`` is the file scanned, as long, its From_ lines
        where they were."""
        now, then = os.fstat(fd), os.fstat(self._fd)
        same = (now.st_dev, now.st_ino) == (then.st_dev, then.st_ino)
        if same and now.st_size >= self._scanned and all(
            is_from_line(os.pread(fd, message.start - message.offset, message.offset))
            for message in self._messages
        ):
            return
        raise MboxChangedError(errno.EBUSY, "the mbox changed during the session; nothing "
                               "deleted", str(self.path))


def _copy(source: int, target: int, start: int, end: int | None) -> None:
    """Bytes ``start`` to ``end`` (None: the end of the file) of ``source`` onto ``target``."""
    at = start
    while end is None or at < end:
        data = os.pread(source, BLOCK if end is None else min(BLOCK, end - at), at)
        if not data:
            return
        write_all(target, data)
        at += len(data)

