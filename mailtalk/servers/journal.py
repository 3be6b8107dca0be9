"""What the reference servers did, one JSON object a line: the servers' journal.

``mailtalk serve --journal FILE`` (``-``: standard output, like a mail log) and every
practice world (``ROOT/journal.jsonl``) write one. It is the servers' account of events,
not of keystrokes: the practice lessons check it, so a lesson done with telnet, swaks or
a mail program counts as much as one done in mailtalk's REPL.

Every object has ``time`` (UTC, ISO 8601 with milliseconds, when it was written),
``server`` (the host name the server calls itself, control/me) and ``event`` (the kind,
below). Events of a connection also have ``proto`` (``smtp``, ``pop3``, ``imap``; SMTP
on the submission and smtps listeners too), ``session`` (a number unique within that
server, the same for every event of the connection) and ``client`` (the client's IP
address). A field this page lists for an event is always there, null when it has no
value. The kinds and their own fields:

``connect``
    The greeting went out: ``port`` and ``listener`` (``smtp``, ``submission``,
    ``smtps``, ``pop3``, ``pop3s``, ``imap``, ``imaps``) it came in on, ``tls`` (true on
    an implicit-TLS listener), ``code`` and ``text`` of the greeting (``code`` the SMTP
    reply code, ``+OK``/``-ERR`` for POP3, ``OK``/``BYE`` for IMAP). A fault at connect
    can make it a 554 or a BYE, and so can a greet pause (SMTP): a client that talked
    before the greeting gets a 554 at once, one that waited a 220 when the pause ends
    (the event's ``time``); a refused connection (too many) has the 421 or BYE it got;
    when no greeting went out at all (a disconnect fault) ``code`` and ``text`` are null.
    Always the first event of its session: what happened before the greeting (a fired
    fault) follows it.
``command``
    One command and its final reply: ``verb`` (upper case; IMAP's ``UID FETCH``; ``.``
    for the end of an SMTP message; null for a line that is no command the server knows:
    it may be a password typed at the wrong moment, so ``args`` is then ``<redacted>``
    and the line is cut out of ``text``), ``args`` (the rest of the line, null when
    empty, secrets replaced by ``<redacted>``: AUTH's initial response, PASS, APOP's
    digest, LOGIN's password; at most 200 characters), ``code`` (SMTP's number, POP3's
    ``+OK``/``-ERR``, IMAP's ``OK``/``NO``/``BAD``), ``enhanced`` (SMTP's ``5.7.1``, or
    null), ``response_code`` (POP3's and IMAP's bracketed code without brackets,
    ``IN-USE``, ``AUTH``, ``SYS/TEMP``, ``AUTHENTICATIONFAILED``, ``APPENDUID 17 3``, or
    null), ``text`` (the reply's lines joined by spaces, at most 200 characters),
    ``tls`` and ``user`` (as the session stood when the command came: the AUTH that
    logs in still has ``user`` null). IMAP adds ``mailbox`` (the selected one, or null).
    The lines of a message after DATA are not commands, nor are the lines of an AUTH
    exchange (they are the AUTH command's, whose reply is the last one); SMTP's 354 is
    DATA's reply. An IMAP line that does not parse is a command with ``verb`` null and
    ``code`` ``BAD``. A command whose answer never came (a disconnect fault) has none.
``tls``
    STARTTLS/STLS, or implicit TLS, done: ``version`` (``TLSv1.3``), ``cipher``.
``auth``
    A login was decided: ``user``, ``mechanism`` (SMTP ``PLAIN``, ``LOGIN``; POP3
    ``USER/PASS``, ``APOP``, ``PLAIN``; IMAP ``LOGIN`` for the LOGIN command, ``PLAIN``
    for AUTHENTICATE), ``ok`` (the session is now logged in). POP3 adds ``reason``, the
    response code of a refusal: ``AUTH`` (wrong password), or, the password being right,
    ``IN-USE`` (another session holds the maildrop), ``SYS/TEMP``, ``LOGIN-DELAY``,
    ``SYS/PERM`` (an mbox maildrop that does not begin with a From line: qpopper's
    "Unable to process From lines"). A login refused unchecked because the client's
    address used up its budget of failures (``mailtalk.servers.guard``) is an ``auth``
    event with ``ok`` false too (POP3's ``reason``: ``SYS/TEMP``).
``fault``
    An injected fault fired: ``rule`` (its text, as given), ``verb`` (``RCPT``,
    ``CONNECT``, ``DATA-END``...), ``action`` (``reply``, ``disconnect``, ``delay``),
    ``reply`` (the line it answers with, or null), ``seconds`` (of a delay, or null).
``message``
    ``outcome`` says what became of a message, with ``queue_id`` (the id the SMTP
    server gave it: in its 250 and Received: line), ``sender`` (the envelope sender,
    ``""`` for a bounce) and per outcome:

    ``delivered``: in a local Maildir's ``new/``: ``user``, ``mailbox`` (``INBOX``),
    ``file`` (the file's name in new/), ``size`` (its bytes), ``subject`` (decoded, or
    null), ``recipients`` (the addresses that led to this user). ``queued``: into the
    relay queue: ``recipients``, ``file`` (its name in queue/messages), ``size``,
    ``subject``. A bounce (an RFC 3464 report) delivered or queued has ``bounce_of``,
    the queue id of the message it reports on, and ``queue_id`` null.

    Onward delivery, one event per recipient (``recipient``), with ``file``, ``mx`` (the
    host it went to, as smtproutes or the MX record names it), ``address``
    (``ADDRESS:PORT``), ``code``, ``status`` (the RFC 3463 status) and ``text`` (the
    MX's reply) when there was a reply, and ``reason`` (what went wrong, as the bounce
    says it): ``relayed`` (the MX took it), ``deferred`` (to be tried again: also
    ``attempts`` and ``retry_in`` seconds), ``bounced`` (given up: refused, or too old).
    These events have no ``proto``, ``session`` nor ``client``.
``dns``
    A query the embedded DNS server answered: ``proto`` (``dns``), ``transport``
    (``udp``, ``tcp``), ``client``, ``qname`` (without the final dot), ``qtype``
    (``MX``), ``rcode`` (``NOERROR``, ``NXDOMAIN``, ``REFUSED``...), ``answers`` (the
    answer section as ``TYPE value`` texts: ``MX 10 mx.example.net.``; at most 50).
``control``
    A new connection found ROOT/control/ changed and read it again (qmail's way):
    ``files`` (which changed: ``rcpthosts``, ``users``...), ``ok`` (false when a file
    did not parse and the last good settings stay), ``error`` (that file's line, or
    null). It comes before that connection's ``connect``.
``close``
    The connection ended: ``reason`` (``quit``: after QUIT or LOGOUT; ``dropped``: the
    client went without saying goodbye; ``idle``: the timeout; ``fault``: a disconnect
    fault; ``refused``: too many connections; ``server``: the server ended it (a 421,
    too many errors, a bare LF); ``tls-failed``: the handshake after STARTTLS failed;
    ``shutdown``: the servers stopped), ``tls``, ``user`` (who was logged in, or null),
    ``error`` (what the connection reported when it was lost, ``Connection reset by
    peer``, or null).
    POP3 adds, once logged in, ``marked`` (messages DELE marked) and ``deleted`` (those
    removed, which only QUIT does: 0 for a session dropped without it).

Writes are line-buffered and each object is one ``write``, so a reader tailing the file
sees whole lines (:class:`JournalReader` follows one; :func:`read_events` reads it all).
The file is bounded: past ``max_bytes`` it is renamed to ``FILE.1`` (the one before
that is dropped) and a new file begun. In-process, ``Journal.listeners`` get each event
as it is written.
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

from mailtalk.store.filesystem import make_directory

log = logging.getLogger("mailtalk.serve")

# The journal rotates past this size: a world left running for days stays bounded.
DEFAULT_MAX_BYTES: Final = 8 * 1024 * 1024
TEXT_LIMIT: Final = 200
REDACTED: Final = "<redacted>"

Event = dict[str, Any]


_ENCODE: Final = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_second: tuple[int, str] = (0, "")  # the last whole second formatted, and its text


def utc_now() -> str:
    """``2026-12-06T20:42:44.123Z``"""
    global _second
    now = time.time()
    whole = int(now)
    if _second[0] != whole:  # one strftime a second, not one an event
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)))
    return f"{_second[1]}.{int(now * 1000) % 1000:03d}Z"


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
        self._stream = stream
        self._lock = threading.Lock()
        self._fd = -1  # the file's, once open (O_APPEND: each event one write)
        self._size = 0

    @property
    def to_stream(self) -> bool:
        """The journal goes to a stream (standard output), not to a file."""
        return self.path is None

    def open(self) -> None:
        """Open the file now, so that one that cannot be written is an error at start
        (raised as OSError), not a lost event in the middle of a session."""
        with self._lock:
            if self.path is not None and self._fd < 0:
                self._open()

    def _open(self) -> None:
        assert self.path is not None
        try:
            make_directory(self.path.parent)
        except FileExistsError:  # a file where a directory should be: say that
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR)) from None
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def write(self, server: str, event: str, **fields: Any) -> None:
        """One event: ``server`` is the host name the server calls itself."""
        record: Event = {"time": utc_now(), "server": server, "event": event}
        record.update(fields)
        line = _ENCODE(record) + "\n"
        try:
            with self._lock:
                if self.path is None:
                    stream = self._stream if self._stream is not None else sys.stdout
                    stream.write(line)
                    stream.flush()
                else:
                    self._append(line.encode("utf-8", "backslashreplace"))
        except (OSError, ValueError) as error:  # ValueError: a closed stream
            self._failed(error if isinstance(error, OSError) else OSError(str(error)))
        for listener in self.listeners:
            try:
                listener(record)
            except Exception:
                log.exception("journal listener failed")

    def _append(self, data: bytes) -> None:
        if self._fd < 0:
            self._open()
        if self._size + len(data) > self.max_bytes > 0:
            self._rotate()
        view = memoryview(data)
        while view:  # a regular file takes it whole; a pipe or a full disk may not
            view = view[os.write(self._fd, view) :]
        self._size += len(data)

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
        assert self.path is not None
        self._close_fd()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._open()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> None:
        """Close the file (a later event opens it again); a stream is left open."""
        with self._lock:
            self._close_fd()


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
        if value is None:
            return None
        # Undecodable 8-bit bytes come back as surrogates: shown as U+FFFD instead.
        text = str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return short_text(text)
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
