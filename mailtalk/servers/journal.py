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

import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any, Final

# The journal rotates past this size: a world left running for days stays bounded.
DEFAULT_MAX_BYTES: Final = 8 * 1024 * 1024
TEXT_LIMIT: Final = 200
REDACTED: Final = "<redacted>"


def utc_now() -> str:
    """``2026-12-06T20:42:44.123Z``"""
    now = time.time()
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
    return f"{seconds}.{int(now * 1000) % 1000:03d}Z"


class Journal:
    """An append-only JSON-lines file (or standard output), rotated past ``max_bytes``.

    Safe to share between servers running in one event loop, or in threads: a world's
    servers write one journal.
    """

    def __init__(self, path: Path | None, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        """``path`` None: standard output, never rotated."""
        self.path = path
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._stream: IO[str] | None = None
        self._size = 0

    def _open(self) -> IO[str]:
        if self.path is None:
            return sys.stdout
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        stream = os.fdopen(fd, "a", encoding="utf-8", buffering=1)
        self._size = os.fstat(fd).st_size
        return stream

    def write(self, server: str, event: str, **fields: Any) -> None:
        """One event: ``server`` is the host name the server calls itself."""
        record = {"time": utc_now(), "server": server, "event": event}
        record.update(fields)
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n"
        with self._lock:
            if self._stream is None:
                self._stream = self._open()
            if self.path is not None and self._size + len(line) > self.max_bytes > 0:
                self._rotate()
            self._stream.write(line)
            self._size += len(line.encode("utf-8"))
            if self.path is None:
                self._stream.flush()

    def _rotate(self) -> None:
        assert self.path is not None and self._stream is not None
        self._stream.close()
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


def read_events(path: Path) -> list[dict[str, Any]]:
    """Every whole line of a journal file (and of its rotated ``.1`` before it)."""
    events: list[dict[str, Any]] = []
    for part in (path.with_name(path.name + ".1"), path):
        try:
            data = part.read_text(encoding="utf-8")
        except OSError:
            continue
        for line in data.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line being written, or damaged: skipped, not fatal
    return events
