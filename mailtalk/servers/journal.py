"""What the reference servers did, one JSON object a line: the servers' journal.

``mailtalk serve --journal FILE`` (``-``: standard output, like a mail log) and every
practice world (``ROOT/journal.jsonl``) write one. It is the servers' account of events,
not of keystrokes: the practice lessons check it, so a lesson done with telnet, swaks or
a mail program counts as much as one done in mailtalk's REPL.

Every object has ``time`` (UTC, ISO 8601 with milliseconds), ``server`` (the host name the
server calls itself, control/me), ``event`` (the kind, below) and, for events of a
connection, ``proto`` (``smtp``, ``pop3``, ``imap``), ``session`` (a number unique within
that server) and ``client`` (the client's IP address). The kinds and their own fields:

``connect``
    ``port`` (the listener's), ``code`` and ``text`` of the greeting (``code`` the SMTP
    reply code, ``+OK``/``-ERR`` for POP3, ``OK``/``PREAUTH``/``BYE`` for IMAP).
``command``
    One command and its final reply: ``verb`` (upper case), ``args`` (secrets replaced by
    ``<redacted>``), ``code``, ``enhanced`` (SMTP's ``5.7.1``, or null), ``response_code``
    (POP3's and IMAP's bracketed code without brackets, ``IN-USE``, or null), ``text``
    (the reply's last line, at most 200 characters), ``tls`` and ``user`` (as the session
    stood when the command came). The lines of a message after DATA are not commands;
    the reply to the final dot is journalled as verb ``.``.
``tls``
    STARTTLS/STLS or implicit TLS done: ``version``, ``cipher``.
``auth``
    ``user``, ``mechanism`` (``PLAIN``, ``LOGIN``, ``USER/PASS``, ``APOP``, ``LOGIN`` for
    IMAP's LOGIN), ``ok`` (true or false).
``fault``
    An injected fault fired: ``rule`` (its text), ``verb``.
``message``
    ``outcome``: ``delivered`` (``user``, ``mailbox``, ``file``: the Maildir file's name,
    ``size``, ``subject``, ``queue_id``), ``queued`` (``recipients``, ``queue_id``, ``size``,
    ``subject``), ``relayed`` (``queue_id``, ``recipient``, ``mx``: the host it went to,
    ``code``, ``text``), ``deferred`` and ``bounced`` (``queue_id``, ``recipient``,
    ``reason``).
``dns``
    A query the embedded DNS server answered: ``qname``, ``qtype``, ``rcode``
    (``NOERROR``, ``NXDOMAIN``...), ``answers`` (the records' values as text).
``close``
    The connection ended: ``reason`` (``quit``, ``idle``, ``dropped``, ``fault``,
    ``refused``).

Writes are line-buffered and each object is one ``write``, so a reader tailing the file
sees whole lines. The file is bounded: past ``max_bytes`` it is renamed to
``FILE.1`` (the one before that is dropped) and a new file begun.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Final

log = logging.getLogger("mailtalk.serve")

# The journal rotates past this size: a world left running for days stays bounded.
DEFAULT_MAX_BYTES: Final = 8 * 1024 * 1024
TEXT_LIMIT: Final = 200
REDACTED: Final = "<redacted>"

Event = dict[str, Any]


def utc_now() -> str:
    """``2026-12-06T20:42:44.123Z``"""
    now = time.time()
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{seconds}.{int(now * 1000) % 1000:03d}Z"


class Journal:
    """An append-only JSON-lines file (or standard output), rotated past ``max_bytes``.

    Safe to share between servers running in one event loop, or in threads: a world's
    servers write one journal. ``listeners`` are called with each event written (a
    practice world's checks); a listener must not block. A write that fails (a full
    disk, standard output closed) loses that event, not the session: it is logged
    once and ``on_error`` is called with the error.
    """

    def __init__(
        self,
        path: Path | None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        *,
        stream: IO[str] | None = None,
    ) -> None:
        """``path`` None: ``stream`` (standard output by default), never rotated."""
        self.path = path
        self.max_bytes = max_bytes
        self.listeners: list[Callable[[Event], None]] = []
        self.on_error: Callable[[OSError], None] | None = None
        self.error: OSError | None = None  # the first write that failed, if one did
        self._given_stream = stream
        self._lock = threading.Lock()
        self._stream: IO[str] | None = None
        self._size = 0

    @property
    def to_stream(self) -> bool:
        """The journal goes to a stream (standard output), not to a file."""
        return self.path is None

    def open(self) -> None:
        """Open the file now, so that one that cannot be written is an error at start
        (raised as OSError), not a lost event in the middle of a session."""
        with self._lock:
            if self._stream is None:
                self._stream = self._open()

    def _open(self) -> IO[str]:
        if self.path is None:
            return self._given_stream if self._given_stream is not None else sys.stdout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a file where a directory should be: say that
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        stream = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        self._size = os.fstat(fd).st_size
        return stream

    def write(self, server: str, event: str, **fields: Any) -> None:
        """One event: ``server`` is the host name the server calls itself."""
        record: Event = {"time": utc_now(), "server": server, "event": event}
        record.update(fields)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        try:
            with self._lock:
                if self._stream is None:
                    self._stream = self._open()
                if self.path is not None and self._size + len(line) > self.max_bytes > 0:
                    self._rotate()
                self._stream.write(line)
                self._size += len(line.encode("utf-8"))
                if self.path is None:
                    self._stream.flush()
        except (OSError, ValueError) as error:  # ValueError: a closed stream
            self._failed(error if isinstance(error, OSError) else OSError(str(error)))
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                log.exception("journal listener failed")

    def _failed(self, error: OSError) -> None:
        first = self.error is None
        self.error = error
        if first:
            where = self.path if self.path is not None else "standard output"
            log.warning("cannot write the journal to %s: %s; events are lost", where,
                        error.strerror or error)
            if self.on_error is not None:
                self.on_error(error)

    def _rotate(self) -> None:
        assert self.path is not None and self._stream is not None
        self._stream.close()
        self._stream = None
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._stream = self._open()

    def close(self) -> None:
        with self._lock:
            if self._stream is not None and self.path is not None:
                self._stream.close()
            self._stream = None


def short_text(text: str) -> str:
    """A reply's text as the journal keeps it: one line, at most ``TEXT_LIMIT`` chars."""
    text = text.replace("\r", " ").replace("\n", " ")
    return text if len(text) <= TEXT_LIMIT else text[: TEXT_LIMIT - 1] + "…"


HEAD_LIMIT: Final = 16 * 1024  # the most of a message read for its Subject


class HeadCollector:
    """The start of a message as it streams in, up to its blank line (or ``HEAD_LIMIT``):
    where its Subject is, for the journal."""

    __slots__ = ("_data", "_done")

    def __init__(self) -> None:
        self._data = bytearray()
        self._done = False

    def feed(self, data: bytes) -> None:
        if self._done:
            return
        self._data += data[: HEAD_LIMIT - len(self._data)]
        if len(self._data) >= HEAD_LIMIT or b"\n\n" in self._data or b"\n\r\n" in self._data:
            self._done = True

    @property
    def head(self) -> bytes:
        return bytes(self._data)


def subject_of(head: bytes) -> str | None:
    """The decoded Subject of a message's header block (RFC 2047 words undone), or None."""
    from email import policy
    from email.parser import BytesHeaderParser

    try:
        value = BytesHeaderParser(policy=policy.default).parsebytes(head).get("subject")
        return None if value is None else short_text(str(value))
    except Exception:  # a header the parser chokes on: no subject rather than no event
        return None


def parse_line(line: str | bytes) -> Event | None:
    """One journal line as an event; None for a line that is not one (damaged, partial)."""
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def read_events(path: Path) -> list[Event]:
    """Every whole line of a journal file (and of its rotated ``.1`` before it)."""
    events: list[Event] = []
    for part in (path.with_name(path.name + ".1"), path):
        try:
            data = part.read_bytes()
        except OSError:
            continue
        for line in data.splitlines():
            event = parse_line(line)
            if event is not None:
                events.append(event)  # a line being written, or damaged: skipped
    return events


class JournalReader:
    """Follows a journal file as the servers write it: :meth:`read` gives the events
    written since the last call.

    A last line still being written (no newline yet) waits for the next call. When the
    file was rotated since (a new file under the name), the rest of the old one, now
    ``FILE.1``, is read first. What one call reads is at most what was written since
    the last (the file is bounded by its rotation).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""

    def read(self) -> list[Event]:
        try:
            info = os.stat(self.path)
        except OSError:
            return []
        events: list[Event] = []
        if self._inode is not None and (info.st_ino != self._inode or info.st_size < self._offset):
            rotated = self.path.with_name(self.path.name + ".1")
            events += self._lines(_tail(rotated, self._offset, self._inode))
            self._offset, self._partial = 0, b""
        self._inode = info.st_ino
        data = _tail(self.path, self._offset, info.st_ino)
        if data is not None:
            self._offset += len(data)
        events += self._lines(data)
        return events

    def _lines(self, data: bytes | None) -> list[Event]:
        if not data:
            return []
        lines = (self._partial + data).split(b"\n")
        self._partial = lines.pop()  # b"" after a final newline; else a line in the making
        events = []
        for line in lines:
            event = parse_line(line)
            if event is not None:
                events.append(event)
        return events


def _tail(path: Path, offset: int, inode: int) -> bytes | None:
    """What ``path`` holds from ``offset`` on, if it is still the file ``inode``."""
    try:
        with open(path, "rb") as handle:
            if os.fstat(handle.fileno()).st_ino != inode:
                return None
            handle.seek(offset)
            return handle.read()
    except OSError:
        return None
