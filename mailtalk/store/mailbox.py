"""Mailboxes for the POP3 and IMAP servers: Maildir++ folders with persistent UIDs.

Layout of one user's mail, ``ROOT/mail/USER/Maildir`` (Courier/Dovecot Maildir++)::

    Maildir/{tmp,new,cur}           INBOX
    Maildir/.Sent/{tmp,new,cur}     folder "Sent"        (plus an empty ``maildirfolder``)
    Maildir/.Archive.2024/...       folder "Archive.2024", a child of "Archive"
    Maildir/subscriptions           subscribed folder names, one per line
    Maildir/mailtalk-uidvalidity    the last UIDVALIDITY handed out to any of the folders
    Maildir/mailtalk-user.lock      serialises folder changes, quota checks, subscriptions
    Maildir/mailtalk-maildrop.lock  POP3's maildrop lock
    <folder>/mailtalk-uidlist       the folder's UIDs, see below (+ ``.lock``)

**Folder names.** IMAP names use "." as the hierarchy delimiter, exactly as the
directories do (Dovecot's Maildir++ default), so "Archive.2024" is
``.Archive.2024`` and a name cannot contain a literal ".". Names are stored as
the client sends them (IMAP's modified UTF-7); "/", control characters and the
LIST wildcards "*" and "%" are refused. "INBOX" is case-insensitive, also as the
first level of a longer name ("inbox.x" is "INBOX.x").

**The index** ``mailtalk-uidlist`` (modelled on ``dovecot-uidlist``)::

    mailtalk-uidlist 1 V1712345678 N4 R3
    1 S1200 W1236 T1712345600 :1712345600.M12P34Q1.host
    3 S99 W101 T1712345700 K$Junk Kproject-x :1712345700.M13P34Q2.host

The header is the format version, V = UIDVALIDITY, N = UIDNEXT and R = the
first UID still \\Recent. Each message line is its UID; S = size in bytes as
stored (LF line endings); W = RFC822.SIZE (the size with CRLF line endings, what
IMAP and POP3 report, counted once when the message is first indexed); T =
INTERNALDATE (Unix seconds); one K field per keyword; and after " :" the
filename base (the part before ``:2,``), which is the message's stable identity
and its POP3 UIDL. The file is replaced atomically (tmp, fsync, rename) while
holding an exclusive ``flock`` on ``mailtalk-uidlist.lock``, so processes and
threads never see or write a half-updated index. An index that is missing or
does not parse is set aside as ``mailtalk-uidlist.corrupt`` and rebuilt with a
NEW UIDVALIDITY (taken from ``mailtalk-uidvalidity``, which only ever grows, so
a re-created or rebuilt folder never reuses one) and fresh UIDs.

**Flags.** System flags live in the filename's Maildir info, ``:2,`` followed by
letters in ASCII order: D \\Draft, F \\Flagged, P $Forwarded (RFC 5788's keyword
for what Maildir calls "passed"), R \\Answered, S \\Seen, T \\Deleted. Other info
letters (such as Dovecot's lowercase keyword letters) are kept as found. Other
keywords live in the index (K fields), not in ``dovecot-keywords``: the index is
rewritten under its lock anyway, and keywords are then not limited to 26.

**\\Recent** is persistent: a read-write session (:meth:`UserMailboxes.open`)
claims every UID >= R when it refreshes and moves R to UIDNEXT, under the index
lock, so exactly one session sees each message as \\Recent — even across
processes and restarts, which per-process memory could not promise. Read-only
sessions see \\Recent without claiming it. Read-write sessions also move files
from new/ to cur/, as Maildir readers do.

**Sessions and changes.** A :class:`Mailbox` is one session's view (IMAP's
selected state): :meth:`Mailbox.messages` is what the last
:meth:`Mailbox.refresh` saw, so sequence numbers stay stable between refreshes,
and refresh reports what changed (for untagged EXISTS, EXPUNGE and FETCH).
Changes made through the same Mailbox by :meth:`Mailbox.set_flags`,
:meth:`Mailbox.expunge` and :meth:`Mailbox.move` are reported by their return
values instead; messages appended or copied into it arrive with the next
refresh. One Mailbox belongs to one session and is not thread-safe; any number
of them, in any threads or processes, may use the same folder.

**Notifications.** :class:`MailboxWatchers` tells other sessions in the same
process that a folder changed; operations here notify it. The SMTP delivery
path should call ``watchers.notify(user, "INBOX")`` after a delivery commits.
Changes from other processes show in :meth:`Mailbox.changed_since`.

**POP3** takes :meth:`UserMailboxes.lock_maildrop`, opens INBOX, reports
:attr:`MessageInfo.rfc822_size` for LIST/STAT and :attr:`MessageInfo.uidl`
for UIDL, and at QUIT sets \\Deleted on the DELE'd messages and expunges
those UIDs.

**Locks** are taken in one order — user lock, then index locks, then the
UIDVALIDITY file — so they cannot deadlock. They block briefly (no message data
is written while one is held, except renames), which an asyncio server may
accept or push to a thread.

Errors an IMAP client should see are :class:`MailboxError` with the response
code to send; disk failures are :class:`~mailtalk.store.maildir.StoreError`.
Stdlib only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import functools
import hashlib
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import BinaryIO, Literal

from mailtalk.store.maildir import (
    _CANNOT_HARD_LINK,
    MESSAGE_MODE,
    STORAGE_FULL_ERRNOS,
    CRLFToLF,
    Delivery,
    Maildir,
    StoreError,
    StoreFullError,
    fsync_directory,
    remove_quietly,
    store_error,
    unique_name,
    write_all,
)

__all__ = [
    "PERMANENT_FLAGS",
    "SYSTEM_FLAGS",
    "Appender",
    "ChangeToken",
    "Changes",
    "MailStore",
    "Mailbox",
    "MailboxError",
    "MailboxWatch",
    "MailboxWatchers",
    "MaildropLock",
    "MessageInfo",
    "RFC822SizeCounter",
    "ResponseCode",
    "UserMailboxes",
    "flags_to_info",
    "info_to_flags",
    "normalize_flags",
    "rfc822_size_of",
]

log = logging.getLogger(__name__)

INBOX = "INBOX"
DELIMITER = "."

INDEX_NAME = "mailtalk-uidlist"
INDEX_VERSION = "1"
_INDEX_MAGIC = "mailtalk-uidlist"
_INDEX_LOCK_NAME = "mailtalk-uidlist.lock"
_INDEX_TMP_NAME = "mailtalk-uidlist.tmp"
_INDEX_CORRUPT_NAME = "mailtalk-uidlist.corrupt"
_UIDVALIDITY_NAME = "mailtalk-uidvalidity"
_USER_LOCK_NAME = "mailtalk-user.lock"
_MAILDROP_LOCK_NAME = "mailtalk-maildrop.lock"
SUBSCRIPTIONS_NAME = "subscriptions"
FOLDER_MARKER_NAME = "maildirfolder"
# Directories being created or deleted start with ".." so that no listing takes
# them for a folder: a folder's directory is "." + a name with no empty level.
_CREATING_PREFIX = "..creating-"
_DELETED_PREFIX = "..deleted-"

# UIDs and UIDVALIDITY are 32-bit non-zero numbers (RFC 3501 nz-number).
MAX_UID = 2**32 - 1

_READ_CHUNK_SIZE = 1024 * 1024

# A change made in the same filesystem timestamp tick as a ChangeToken leaves the
# mtimes equal; so a token taken within this long of the newest mtime is never
# trusted to prove "nothing changed" (ext4 and tmpfs ticks are a few ms).
_MTIME_SLACK_NS = 1_000_000_000


# -- errors --------------------------------------------------------------------

ResponseCode = Literal[
    "NONEXISTENT",
    "ALREADYEXISTS",
    "CANNOT",
    "INUSE",
    "OVERQUOTA",
    "TRYCREATE",
    "SERVERBUG",
    "EXPUNGEISSUED",
]


class MailboxError(Exception):
    """A mailbox operation was refused; ``code`` is the IMAP response code to send.

    NONEXISTENT, ALREADYEXISTS, CANNOT, INUSE, OVERQUOTA, SERVERBUG and
    EXPUNGEISSUED are RFC 5530's; TRYCREATE is RFC 3501's answer to COPY or
    APPEND into a missing folder. A POP3 server sends INUSE as ``-ERR [IN-USE]``.
    """

    def __init__(self, code: ResponseCode, message: str) -> None:
        super().__init__(code, message)
        self.code: ResponseCode = code
        self.message = message

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


# -- flags ---------------------------------------------------------------------

SEEN, ANSWERED, FLAGGED, DELETED, DRAFT, RECENT = (
    "\\Seen",
    "\\Answered",
    "\\Flagged",
    "\\Deleted",
    "\\Draft",
    "\\Recent",
)
FORWARDED = "$Forwarded"

SYSTEM_FLAGS = frozenset({SEEN, ANSWERED, FLAGGED, DELETED, DRAFT, RECENT})
# What a client may store for good (SELECT's PERMANENTFLAGS): \* = any keyword.
PERMANENT_FLAGS = (ANSWERED, FLAGGED, DELETED, SEEN, DRAFT, "\\*")

_FLAG_LETTERS = {DRAFT: "D", FLAGGED: "F", FORWARDED: "P", ANSWERED: "R", SEEN: "S", DELETED: "T"}
_LETTER_FLAGS = {letter: flag for flag, letter in _FLAG_LETTERS.items()}
_FILENAME_FLAGS = frozenset(_FLAG_LETTERS)
# Flags are matched case-insensitively (clients send "\seen"); keywords keep their case.
_CANONICAL_FLAGS = {flag.lower(): flag for flag in (*SYSTEM_FLAGS, FORWARDED)}
# RFC 3501 atom-specials (besides SP and CTLs, which the range check excludes).
_ATOM_SPECIALS = frozenset('(){%*"\\]')


def normalize_flags(flags: Iterable[str]) -> frozenset[str]:
    """``flags`` as stored: system flags spelt canonically, \\Recent dropped, keywords checked.

    \\Recent cannot be set or cleared by a client (RFC 3501 6.4.6), so it is
    ignored. An unknown backslash flag or a keyword that is not an IMAP atom
    raises ValueError (an IMAP server answers BAD).
    """
    result = set()
    for flag in flags:
        canonical = _CANONICAL_FLAGS.get(flag.lower())
        if canonical is not None:
            if canonical != RECENT:
                result.add(canonical)
        elif flag.startswith("\\"):
            raise ValueError(f"not a system flag: {flag!r}")
        elif not flag or any(
            ord(char) <= 0x20 or ord(char) >= 0x7F or char in _ATOM_SPECIALS for char in flag
        ):
            raise ValueError(f"not a valid keyword: {flag!r}")
        else:
            result.add(flag)
    return frozenset(result)


def flags_to_info(flags: Iterable[str], other_letters: str = "") -> str:
    """The Maildir info for ``flags``: ``2,`` + their letters in ASCII order.

    Keywords other than $Forwarded have no letter and are left out;
    ``other_letters`` (letters this module does not interpret) are kept.
    """
    letters = {_FLAG_LETTERS[flag] for flag in flags if flag in _FLAG_LETTERS}
    letters.update(other_letters)
    return "2," + "".join(sorted(letters))


def info_to_flags(info: str) -> frozenset[str]:
    """The flags in Maildir info ``2,LETTERS``; unknown letters and other info are ignored."""
    if not info.startswith("2,"):
        return frozenset()
    return frozenset(_LETTER_FLAGS[letter] for letter in info[2:] if letter in _LETTER_FLAGS)


_RECENT_ONLY = frozenset({RECENT})


@functools.lru_cache(maxsize=1024)
def _cached_info_flags(info: str) -> frozenset[str]:
    return info_to_flags(info)


def _other_info_letters(info: str) -> str:
    if not info.startswith("2,"):
        return ""
    return "".join(letter for letter in info[2:] if letter not in _LETTER_FLAGS)


def _split_filename(filename: str) -> tuple[str, str]:
    """``base:info`` -> (base, info); a name in new/ has no info."""
    base, _, info = filename.partition(":")
    return base, info


# -- sizes ---------------------------------------------------------------------


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


def rfc822_size_of(path: Path) -> tuple[int, int]:
    """(size, RFC822.SIZE) of the file at ``path``, read in 1 MiB chunks."""
    counter = RFC822SizeCounter()
    with open(path, "rb", buffering=0) as stream:
        while chunk := stream.read(_READ_CHUNK_SIZE):
            counter.feed(chunk)
    return counter.size, counter.rfc822_size


def _measure(dir_fd: int, filename: str) -> tuple[os.stat_result, int, int, bool]:
    """(status, size, RFC822.SIZE, unterminated) of ``filename`` in the directory
    ``dir_fd``: one open, one fstat and (for all but large files) one read."""
    fd = os.open(filename, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        status = os.fstat(fd)
        counter = RFC822SizeCounter()
        done = False
        if status.st_size < _READ_CHUNK_SIZE:
            data = os.read(fd, status.st_size + 1)
            counter.feed(data)
            done = len(data) <= status.st_size  # short of the extra byte asked: the end
        while not done and (chunk := os.read(fd, _READ_CHUNK_SIZE)):
            counter.feed(chunk)
    finally:
        os.close(fd)
    return status, counter.size, counter.rfc822_size, counter.unterminated


# -- locks ---------------------------------------------------------------------

# flock() locks belong to an open file description, so the same thread taking a
# lock it already holds would wait for itself forever; catch that as a bug.
_held_locks = threading.local()


class _FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), blocking until granted."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def __enter__(self) -> _FileLock:
        held: set[Path] = _held_locks.__dict__.setdefault("paths", set())
        if self.path in held:
            raise RuntimeError(f"lock already held by this thread: {self.path}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, MESSAGE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        held.add(self.path)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        _held_locks.paths.discard(self.path)
        # Closing the last descriptor of the open file description releases the lock.
        os.close(self._fd)
        self._fd = -1


class MaildropLock:
    """POP3's exclusive access to a maildrop (RFC 1939): a ``flock`` held by an open descriptor.

    Taken at once or not at all: if another session — in this process or any
    other — holds it, MailboxError("INUSE") is raised immediately. It is released
    by :meth:`release` (or leaving the ``with`` block), and by the kernel when the
    holding process dies, even by SIGKILL, so a crashed server leaves no stale lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, MESSAGE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MailboxError("INUSE", "the maildrop is in use by another session") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Give the lock up; does nothing a second time."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    close = release

    def __enter__(self) -> MaildropLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        # A session dropped without release() must not keep the maildrop until exit.
        if getattr(self, "_fd", -1) >= 0:
            self.release()


def _allocate_uidvalidity(user_root: Path) -> int:
    """A UIDVALIDITY never handed out before for this user: the time, or one more than the last.

    The last value is kept in ``mailtalk-uidvalidity`` (locked while read and
    rewritten in place; it is a dozen bytes, written in one call), so a folder
    deleted and re-created, or an index rebuilt, within the same second still
    gets a new value, as RFC 3501 2.3.1.1 requires.
    """
    fd = os.open(user_root / _UIDVALIDITY_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, MESSAGE_MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            last = int(os.pread(fd, 32, 0).split()[0])
        except (ValueError, IndexError):
            last = 0  # missing or damaged: the clock still gives a value unlikely to repeat
        value = max(int(time.time()), last + 1)
        if value > MAX_UID:
            value = 1  # the year 2106
        data = f"{value}\n".encode()
        try:
            os.pwrite(fd, data, 0)
            os.ftruncate(fd, len(data))
            os.fsync(fd)
        except OSError as error:
            if error.errno not in STORAGE_FULL_ERRNOS:
                raise
            # A full disk: the value is still new (the clock, or one more than the
            # last); the index it goes into cannot be saved either, so the next
            # session picks another, and clients resynchronise rather than fail.
            log.warning("%s: %s: UIDVALIDITY %d not saved", user_root, error.strerror, value)
        return value
    finally:
        os.close(fd)


# -- the index -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Record:
    uid: int
    base: str
    size: int
    rfc822_size: int
    internaldate: int
    keywords: frozenset[str]
    unterminated: bool = False  # no final line end (index token "U")


@dataclass
class _Index:
    uidvalidity: int
    uidnext: int
    first_recent_uid: int
    records: dict[str, _Record]  # by filename base, in UID order


def _format_index(index: _Index) -> str:
    lines = [
        f"{_INDEX_MAGIC} {INDEX_VERSION} V{index.uidvalidity} N{index.uidnext} "
        f"R{index.first_recent_uid}"
    ]
    for record in index.records.values():
        keywords = "".join(f" K{keyword}" for keyword in sorted(record.keywords))
        unterminated = " U" if record.unterminated else ""
        lines.append(
            f"{record.uid} S{record.size} W{record.rfc822_size} T{record.internaldate}"
            f"{unterminated}{keywords} :{record.base}"
        )
    return "\n".join(lines) + "\n"


def _number(text: str, low: int = 0, high: int = 2**63) -> int:
    if not text.isdigit() or not (low <= int(text) <= high):
        raise ValueError(f"bad number {text!r}")
    return int(text)


def _parse_index(text: str) -> _Index:
    """The index in ``text``; ValueError if anything at all is wrong with it.

    Parsed indexes are cached by their exact text (see :class:`_IndexCache`), so a
    folder reopened unchanged costs a read and a string comparison; the result is
    a fresh :class:`_Index` whose records dict the caller may change (the records
    themselves are immutable and shared).
    """
    cached = _INDEX_CACHE.get(text)
    if cached is None:
        cached = _parse_index_text(text)
        _INDEX_CACHE.put(text, cached)
    return _Index(cached.uidvalidity, cached.uidnext, cached.first_recent_uid, dict(cached.records))


class _IndexCache:
    """Parsed indexes by their whole text, least recently used dropped beyond a total size.

    Keyed by content, not by file stamps, so it can never return a stale index:
    a hit means the bytes on disk are exactly those once parsed.
    """

    def __init__(self, max_chars: int) -> None:
        self.max_chars = max_chars
        self._lock = threading.Lock()
        self._entries: dict[str, _Index] = {}
        self._chars = 0

    def get(self, text: str) -> _Index | None:
        with self._lock:
            index = self._entries.pop(text, None)
            if index is not None:
                self._entries[text] = index  # most recently used last
            return index

    def put(self, text: str, index: _Index) -> None:
        if len(text) > self.max_chars:
            return
        with self._lock:
            if text in self._entries:
                return
            self._entries[text] = index
            self._chars += len(text)
            while self._chars > self.max_chars:
                oldest = next(iter(self._entries))
                del self._entries[oldest]
                self._chars -= len(oldest)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._chars = 0


# About 60 bytes a message: 16 MiB of index text is some 280,000 messages.
_INDEX_CACHE = _IndexCache(16 * 1024 * 1024)
# folder -> the UIDVALIDITY of its index rebuilt on a full disk and not saved yet.
_UNSAVED_REBUILDS: dict[Path, int] = {}


def _parse_index_text(text: str) -> _Index:
    if not text.endswith("\n"):
        raise ValueError("truncated")
    header, *lines = text[:-1].split("\n")
    fields = header.split(" ")
    if fields[:2] != [_INDEX_MAGIC, INDEX_VERSION]:
        raise ValueError(f"unknown header {header!r}")
    values = {field[:1]: field[1:] for field in fields[2:]}
    if sorted(values) != ["N", "R", "V"] or len(fields) != 5:
        raise ValueError(f"bad header {header!r}")
    uidvalidity = _number(values["V"], 1, MAX_UID)
    uidnext = _number(values["N"], 1, MAX_UID + 1)
    first_recent_uid = _number(values["R"], 1, uidnext)
    records: dict[str, _Record] = {}
    last_uid = 0
    for line in lines:
        head, separator, base = line.partition(" :")
        if not separator or not base or base in records:
            raise ValueError(f"bad line {line!r}")
        uid_text, *parts = head.split(" ")
        if (
            len(parts) == 3
            and uid_text.isdigit()
            and parts[0][:1] == "S"
            and parts[1][:1] == "W"
            and parts[2][:1] == "T"
            and parts[0][1:].isdigit()
            and parts[1][1:].isdigit()
            and parts[2][1:].isdigit()
        ):
            # The common line, as _format_index writes it without keywords.
            uid = int(uid_text)
            size, rfc822_size, internaldate = (
                int(parts[0][1:]),
                int(parts[1][1:]),
                int(parts[2][1:]),
            )
            if (
                last_uid < uid < uidnext
                and size < 2**63
                and rfc822_size < 2**63
                and internaldate < 2**63
            ):
                records[base] = _Record(uid, base, size, rfc822_size, internaldate, _NO_KEYWORDS)
                last_uid = uid
                continue
        uid = _number(uid_text, last_uid + 1, uidnext - 1)
        numbers: dict[str, int] = {}
        keywords = []
        unterminated = False
        for part in parts:
            if part == "U":
                unterminated = True
            elif part[:1] == "K" and len(part) > 1:
                keywords.append(part[1:])
            elif part[:1] in ("S", "W", "T") and part[:1] not in numbers:
                numbers[part[:1]] = _number(part[1:])
            else:
                raise ValueError(f"bad field {part!r}")
        if len(numbers) != 3:
            raise ValueError(f"missing fields in {line!r}")
        records[base] = _Record(
            uid, base, numbers["S"], numbers["W"], numbers["T"], frozenset(keywords), unterminated
        )
        last_uid = uid
    return _Index(uidvalidity, uidnext, first_recent_uid, records)


_NO_KEYWORDS: frozenset[str] = frozenset()

_UNIQUE_NAME = re.compile(r"(\d+)\.([^.]*)")
_MICROSECONDS = re.compile(r"M(\d+)")
_SEQUENCE = re.compile(r"Q(\d+)|^\d+_(\d+)$")


def _delivery_order(base: str, mtime_ns: int) -> tuple[int, int, int, str]:
    """Sort key putting messages in delivery order: the time in the unique name, then mtime.

    Names are ``<sec>.M<usec>P<pid>Q<n>.<host>`` (or the older ``<sec>.<pid>_<n>.<host>``);
    a name without a leading time falls back on the file's mtime.
    """
    match = _UNIQUE_NAME.match(base)
    if match is None:
        seconds, nanoseconds = divmod(mtime_ns, 1_000_000_000)
        return seconds, nanoseconds // 1000, 0, base
    microseconds = _MICROSECONDS.search(match[2])
    sequence = _SEQUENCE.search(match[2])
    return (
        int(match[1]),
        int(microseconds[1]) if microseconds else 0,
        int(sequence[1] or sequence[2]) if sequence else 0,
        base,
    )


def _scan_message_files(folder: Path) -> dict[str, tuple[str, str]]:
    """{filename base: (subdirectory, filename)} for the messages in new/ and cur/.

    A base found in both keeps its cur/ name (a reader moved it; cur/ is scanned last).
    """
    files: dict[str, tuple[str, str]] = {}
    for subdir in ("new", "cur"):
        with os.scandir(folder / subdir) as entries:
            for entry in entries:
                name = entry.name
                # Dot files are tools' temporaries; a newline could not go in the index.
                if name[0] == "." or "\n" in name or not entry.is_file(follow_symlinks=False):
                    continue
                files[name.partition(":")[0]] = (subdir, name)
    return files


class _LockedIndex:
    """A folder's index merged with its directory, while the caller holds the index lock.

    :meth:`load` reads the index (rebuilding it if missing or corrupt), drops
    records whose files are gone and gives UIDs to files without one, in
    delivery order. The caller may then add and remove records; :meth:`save`
    writes the result if anything changed.

    **A full disk.** What ``load`` changes can be worked out again from the
    files by the next load, the same way (UIDs follow delivery order), and so can
    the removal of a record whose file was unlinked: if only such changes are
    pending, a full disk (ENOSPC, EDQUOT) does not fail the operation, and the
    index is written by a later save, once there is room. So users can still log
    in, read and delete mail to make room, as with Dovecot. What only the index
    knows (keywords, the UID of a message just added) is ``essential``: failing
    to save it fails the operation. An index rebuilt but not saved keeps its
    UIDVALIDITY for the loads that rebuild it again (in this process), so the
    sessions of a full disk agree on it.
    """

    def __init__(self, folder: Path, user_root: Path) -> None:
        self.folder = folder
        self.user_root = user_root
        self.dirty = False
        self.essential = False  # a change only the index records is pending
        self.rebuilt = False
        self.files: dict[str, tuple[str, str]] = {}
        self.index = _Index(0, 1, 1, {})

    def load(self) -> None:
        self.files = _scan_message_files(self.folder)
        index = self._read()
        if index is None:
            self.rebuilt = True
            uidvalidity = _UNSAVED_REBUILDS.get(self.folder) or _allocate_uidvalidity(
                self.user_root
            )
            self.index = _Index(uidvalidity, 1, 1, {})
        else:
            self.index = index
        records = self.index.records
        for base in [base for base in records if base not in self.files]:
            del records[base]
            self.dirty = True
        self._index_new_files()
        if self.rebuilt:
            # Files still in new/ have not been seen by any session: those stay recent.
            new_uids = [
                record.uid for record in records.values() if self.files[record.base][0] == "new"
            ]
            self.index.first_recent_uid = min(new_uids, default=self.index.uidnext)
            self.dirty = True

    def _read(self) -> _Index | None:
        path = self.folder / INDEX_NAME
        try:
            text = path.read_text("utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return None
        try:
            return _parse_index(text)
        except ValueError as error:
            log.warning("%s is corrupt (%s): rebuilding it with a new UIDVALIDITY", path, error)
            # Kept for a post-mortem; its UIDs must never be used again.
            os.replace(path, self.folder / _INDEX_CORRUPT_NAME)
            return None

    def _index_new_files(self) -> None:
        unindexed = []
        records = self.index.records
        directories: dict[str, int] = {}
        try:
            for base, (subdir, filename) in self.files.items():
                if base in records:
                    continue
                dir_fd = directories.get(subdir)
                if dir_fd is None:
                    dir_fd = directories[subdir] = os.open(
                        self.folder / subdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                    )
                try:
                    status, size, rfc822_size, unterminated = _measure(dir_fd, filename)
                except FileNotFoundError:
                    continue  # renamed by another reader meanwhile: the next load sees it
                order = _delivery_order(base, status.st_mtime_ns)
                unindexed.append(
                    (
                        order,
                        _Record(
                            0,
                            base,
                            size,
                            rfc822_size,
                            int(status.st_mtime),
                            frozenset(),
                            unterminated,
                        ),
                    )
                )
        finally:
            for dir_fd in directories.values():
                os.close(dir_fd)
        if self.index.uidnext + len(unindexed) > MAX_UID + 1:
            self._renumber()
        for _, record in sorted(unindexed, key=lambda item: item[0]):
            self.add_record(record)

    def _renumber(self) -> None:
        """UIDs ran out: RFC 3501 2.3.1.1 says start again under a new UIDVALIDITY."""
        old = list(self.index.records.values())
        self.index = _Index(_allocate_uidvalidity(self.user_root), 1, 1, {})
        for record in old:
            self.add_record(record)
        self.index.first_recent_uid = self.index.uidnext
        self.rebuilt = True

    def add_record(self, record: _Record) -> int:
        """Index (a copy of) ``record`` under the next UID; returns the UID."""
        uid = self.index.uidnext
        self.index.uidnext += 1
        self.index.records[record.base] = _Record(
            uid,
            record.base,
            record.size,
            record.rfc822_size,
            record.internaldate,
            record.keywords,
            record.unterminated,
        )
        self.dirty = True
        return uid

    def add(
        self,
        subdir: str,
        filename: str,
        size: int,
        rfc822_size: int,
        internaldate: int,
        keywords: frozenset[str],
        unterminated: bool = False,
    ) -> int:
        """Index a file this process just put into the folder; returns its UID."""
        base = _split_filename(filename)[0]
        self.files[base] = (subdir, filename)
        self.essential = True
        return self.add_record(
            _Record(0, base, size, rfc822_size, internaldate, keywords, unterminated)
        )

    def remove(self, base: str) -> None:
        self.files.pop(base, None)
        if self.index.records.pop(base, None) is not None:
            self.dirty = True

    def save(self) -> None:
        """Write the index if it changed; on a full disk, only if a change is ``essential``."""
        if not self.dirty:
            return
        data = _format_index(self.index).encode("utf-8", errors="surrogateescape")
        tmp_path = self.folder / _INDEX_TMP_NAME
        try:
            fd = os.open(
                tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, MESSAGE_MODE
            )
            try:
                write_all(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp_path, self.folder / INDEX_NAME)
            fsync_directory(self.folder)
        except OSError as error:
            remove_quietly(tmp_path)
            failure = store_error(error, "writing the mailbox index", tmp_path)
            if isinstance(failure, StoreFullError) and not self.essential:
                log.warning("%s; going on: the files say what it would have", failure)
                if self.rebuilt:
                    _UNSAVED_REBUILDS[self.folder] = self.index.uidvalidity
                return
            raise failure from error
        self.dirty = False
        self.essential = False
        _UNSAVED_REBUILDS.pop(self.folder, None)


@contextlib.contextmanager
def _locked_index(folder: Path, user_root: Path, missing: ResponseCode) -> Iterator[_LockedIndex]:
    """The folder's index, loaded under its lock and saved when the block ends.

    It is saved even if the block fails: files the block already renamed into
    the folder are then indexed with what the block recorded (keywords, sizes).
    A folder that does not exist raises MailboxError(``missing``).
    """
    if not (folder / "cur").is_dir():
        raise MailboxError(missing, "no such mailbox")
    try:
        lock = _FileLock(folder / _INDEX_LOCK_NAME).__enter__()
    except FileNotFoundError:
        raise MailboxError(missing, "no such mailbox") from None
    try:
        state = _LockedIndex(folder, user_root)
        try:
            state.load()
        except FileNotFoundError:
            raise MailboxError(missing, "no such mailbox") from None
        try:
            yield state
        except BaseException:
            with contextlib.suppress(OSError):
                state.save()
            raise
        state.save()
    finally:
        lock.__exit__(None, None, None)


# -- header blocks -------------------------------------------------------------

_HEADER_END = re.compile(rb"\n\r?\n")
_HEADER_READ_SIZE = 8192


def _header_length(data: bytes) -> int:
    """Where the header block of ``data`` ends (after its blank line); -1 if not found."""
    if data.startswith(b"\n"):
        return 1
    if data.startswith(b"\r\n"):
        return 2
    match = _HEADER_END.search(data)
    return -1 if match is None else match.end()


def _read_header_block(read: Callable[[int], bytes]) -> bytes:
    """The header block read with ``read(size)``: up to and including the blank line
    ending it, or everything if there is none."""
    data = read(_HEADER_READ_SIZE)
    while True:
        end = _header_length(data)
        if end >= 0:
            return data[:end]
        more = read(max(_HEADER_READ_SIZE, len(data)))
        if not more:
            return data
        data += more


class _HeaderCache:
    """Header blocks by message, least recently used dropped beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int, int, str, int], bytes] = {}
        self._bytes = 0

    def get(self, key: tuple[str, int, int, str, int]) -> bytes | None:
        with self._lock:
            value = self._entries.pop(key, None)
            if value is not None:
                self._entries[key] = value
            return value

    def put(self, key: tuple[str, int, int, str, int], value: bytes) -> None:
        cost = len(value) + 200  # the key and the entry
        if cost > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= len(old) + 200
            self._entries[key] = value
            self._bytes += cost
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._bytes -= len(self._entries.pop(oldest)) + 200

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


_HEADER_CACHE = _HeaderCache(64 * 1024 * 1024)


# -- what sessions see ---------------------------------------------------------


@dataclass(frozen=True)
class MessageInfo:
    """One message as a session sees it.

    ``flags`` are IMAP flags, keywords included, and \\Recent if this session
    claimed it. ``size`` is the stored size (LF line endings), ``rfc822_size``
    the size with CRLF line endings: IMAP RFC822.SIZE; ``pop3_size`` adds the CRLF
    that POP3 puts after a message without a final line end (LIST, STAT, RETR).
    ``path`` is where the file was at the last refresh (``location``, the same
    as a string); another session changing its flags renames it, which
    :meth:`Mailbox.open_message` follows.
    """

    uid: int
    base: str
    location: str
    flags: frozenset[str]
    size: int
    rfc822_size: int
    internaldate_seconds: int
    unterminated: bool = False

    @property
    def pop3_size(self) -> int:
        """What RETR sends before its dot (RFC 1939 11: the size the client receives)."""
        return self.rfc822_size + 2 if self.unterminated else self.rfc822_size

    @property
    def path(self) -> Path:
        return Path(self.location)

    @property
    def internaldate(self) -> datetime:
        return datetime.fromtimestamp(self.internaldate_seconds, UTC)

    @property
    def uidl(self) -> str:
        """The POP3 UIDL: the filename base, or — if that is not 1-70 printable
        ASCII characters, as RFC 1939 requires — the SHA-1 of it in hex, equally stable."""
        if 1 <= len(self.base) <= 70 and all(0x21 <= ord(char) <= 0x7E for char in self.base):
            return self.base
        return hashlib.sha1(self.base.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True)
class Changes:
    """What :meth:`Mailbox.refresh` found changed since the previous refresh.

    ``expunged_seqs`` are the expunged messages' sequence numbers in the previous
    view, highest first: sent in that order, each untagged EXPUNGE is correct as
    it stands. After a UIDVALIDITY change every message is both expunged and new;
    an IMAP server should then end the session (RFC 3501 2.3.1.1).
    """

    new_uids: tuple[int, ...] = ()
    expunged_uids: tuple[int, ...] = ()
    expunged_seqs: tuple[int, ...] = ()
    flag_changed_uids: tuple[int, ...] = ()
    uidvalidity_changed: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.new_uids
            or self.expunged_uids
            or self.flag_changed_uids
            or self.uidvalidity_changed
        )


@dataclass(frozen=True)
class ChangeToken:
    """A folder's modification stamps (new/, cur/, the index): see :meth:`Mailbox.changed_since`."""

    stamps: tuple[tuple[int, int, int], ...]
    taken_ns: int


# -- notifications -------------------------------------------------------------


class MailboxWatch:
    """One registration with :class:`MailboxWatchers`; :meth:`cancel` (or ``with``) ends it."""

    def __init__(self, watchers: MailboxWatchers, key: tuple[str, str]) -> None:
        self._watchers = watchers
        self._key = key

    def cancel(self) -> None:
        self._watchers._remove(self._key, self)

    def __enter__(self) -> MailboxWatch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cancel()


class MailboxWatchers:
    """In-process publish/subscribe of "folder F of user U changed"; thread-safe.

    Callbacks run in the notifying thread, so they must be quick and must not
    block: an asyncio session registers
    ``lambda: loop.call_soon_threadsafe(wakeup.set)`` and calls
    :meth:`Mailbox.refresh` from its own task. A callback that raises is logged
    and does not stop the others (nor the delivery that notified).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[tuple[str, str], dict[MailboxWatch, Callable[[], None]]] = {}

    def watch(self, user: str, folder: str, callback: Callable[[], None]) -> MailboxWatch:
        key = (user, _canonical_name(folder))
        handle = MailboxWatch(self, key)
        with self._lock:
            self._callbacks.setdefault(key, {})[handle] = callback
        return handle

    def notify(self, user: str, folder: str) -> None:
        key = (user, _canonical_name(folder))
        with self._lock:
            callbacks = list(self._callbacks.get(key, {}).values())
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("mailbox watcher for %s/%s failed", user, folder)

    def _remove(self, key: tuple[str, str], handle: MailboxWatch) -> None:
        with self._lock:
            callbacks = self._callbacks.get(key)
            if callbacks is not None:
                callbacks.pop(handle, None)
                if not callbacks:
                    del self._callbacks[key]


# -- folder names --------------------------------------------------------------


def _canonical_name(name: str) -> str:
    """``name`` with a case-insensitive INBOX first level spelt "INBOX"; else unchanged."""
    first, separator, rest = name.partition(DELIMITER)
    return INBOX + separator + rest if first.upper() == INBOX else name


def _checked_name(name: str) -> str:
    """``name`` canonical, or MailboxError("CANNOT") if it cannot name a Maildir++ folder."""
    levels = name.split(DELIMITER)
    if (
        not name
        or "" in levels
        or any(char in "/*%" or ord(char) < 0x20 or ord(char) == 0x7F for char in name)
        or len(("." + name).encode("utf-8", "surrogateescape")) > 255
    ):
        raise MailboxError("CANNOT", f"not a valid mailbox name: {name!r}")
    return _canonical_name(name)


def _parents(name: str) -> list[str]:
    """The names above ``name``: "A.B.C" -> ["A", "A.B"]."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:count]) for count in range(1, len(levels))]


# -- mailboxes -----------------------------------------------------------------


class Mailbox:
    """One session's view of one folder; get it from :meth:`UserMailboxes.open`.

    ``read_only`` (IMAP EXAMINE) sessions neither claim \\Recent nor move files
    out of new/, and may not change flags or expunge (MailboxError CANNOT).
    Unknown UIDs are skipped by the bulk operations and raise NONEXISTENT in the
    single-message ones.
    """

    def __init__(
        self,
        owner: UserMailboxes,
        name: str,
        path: Path,
        *,
        read_only: bool = False,
        claim_recent: bool = True,
    ) -> None:
        self.owner = owner
        self.name = name
        self.path = path
        self.read_only = read_only
        self._claims_recent = claim_recent and not read_only
        self._maildir = Maildir(path)
        self._uidvalidity = 0
        self._uidnext = 1
        self._messages: dict[int, MessageInfo] = {}
        self._recent: set[int] = set()
        self._token: ChangeToken | None = None
        self._folder = os.fspath(path)

    def __repr__(self) -> str:
        return f"Mailbox({self.name!r}, {str(self.path)!r})"

    # -- state

    @property
    def uidvalidity(self) -> int:
        return self._uidvalidity

    @property
    def uidnext(self) -> int:
        return self._uidnext

    @property
    def recent_count(self) -> int:
        return len(self._recent)

    def __len__(self) -> int:
        return len(self._messages)

    def messages(self) -> list[MessageInfo]:
        """The messages as of the last refresh, in UID order (index + 1 = sequence number)."""
        return list(self._messages.values())

    def message(self, uid: int) -> MessageInfo:
        try:
            return self._messages[uid]
        except KeyError:
            raise MailboxError("NONEXISTENT", f"no message with UID {uid}") from None

    def refresh(self) -> Changes:
        """Rescan the folder: index new files, drop vanished ones; report what changed.

        Returns at once, having found nothing, when :meth:`changed_since` the last
        refresh says the folder cannot have changed (three stat calls).
        """
        if self._token is not None and not self.changed_since(self._token):
            return Changes()
        token = self.change_token()
        with self._locked("NONEXISTENT") as state:
            if self._claims_recent:
                self._move_new_to_cur(state)
            index = state.index
            uidvalidity_changed = bool(self._uidvalidity) and index.uidvalidity != self._uidvalidity
            # Under a new UIDVALIDITY no old UID means anything: all are new.
            known = {} if uidvalidity_changed else self._messages
            if uidvalidity_changed:
                self._recent = set()
            if self._claims_recent:
                self._recent.update(
                    record.uid
                    for record in index.records.values()
                    if record.uid >= index.first_recent_uid
                )
                if index.first_recent_uid != index.uidnext:
                    index.first_recent_uid = index.uidnext
                    state.dirty = True
            else:
                self._recent.update(
                    record.uid
                    for record in index.records.values()
                    if record.uid >= index.first_recent_uid and record.uid not in known
                )
            view = self._view(state)
            self._uidvalidity, self._uidnext = index.uidvalidity, index.uidnext
        self._recent.intersection_update(view)
        old = self._messages
        sequence_numbers = {uid: number for number, uid in enumerate(old, start=1)}
        expunged = tuple(uid for uid in old if uid not in view or uidvalidity_changed)
        changes = Changes(
            new_uids=tuple(uid for uid in view if uid not in known),
            expunged_uids=expunged,
            expunged_seqs=tuple(sorted((sequence_numbers[uid] for uid in expunged), reverse=True)),
            flag_changed_uids=tuple(
                uid for uid, info in view.items() if uid in known and known[uid].flags != info.flags
            ),
            uidvalidity_changed=uidvalidity_changed,
        )
        self._messages = view
        self._token = token
        return changes

    # -- change detection

    def change_token(self) -> ChangeToken:
        """The folder's current stamps. Take one *before* a refresh to catch what follows it."""
        stamps = []
        for path in (self._maildir.new_dir, self._maildir.cur_dir, self.path / INDEX_NAME):
            try:
                status = os.stat(path)
                stamps.append((status.st_ino, status.st_mtime_ns, status.st_size))
            except FileNotFoundError:
                stamps.append((0, 0, 0))
        return ChangeToken(tuple(stamps), time.time_ns())

    def changed_since(self, token: ChangeToken | None = None) -> bool:
        """Whether the folder may have changed since ``token`` (default: the last refresh's).

        Cheap — three stat calls — for polling changes made by other processes.
        It may say True when nothing changed (then a refresh finds nothing), but
        never False after a change: a token taken less than a second after the
        newest stamp is not trusted, since timestamps have a granularity.
        """
        token = token if token is not None else self._token
        if token is None:
            return True
        current = self.change_token()
        if current.stamps != token.stamps:
            return True
        newest = max(mtime for _, mtime, _ in token.stamps)
        return token.taken_ns - newest < _MTIME_SLACK_NS

    # -- reading

    def open_message(self, uid: int, *, mark_seen: bool = False) -> BinaryIO:
        """The message's bytes as stored (LF line endings), to read in chunks; close it after.

        ``mark_seen`` sets \\Seen, as IMAP FETCH BODY[] does (ignored when read-only).
        A message expunged by another session raises MailboxError("EXPUNGEISSUED").
        """
        info = self.message(uid)
        stream: BinaryIO
        try:
            stream = open(info.location, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            path = self._locate(info)
            try:
                stream = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                raise MailboxError("EXPUNGEISSUED", f"message {uid} was expunged") from None
        if mark_seen and not self.read_only and SEEN not in info.flags:
            self.set_flags([uid], [SEEN], "add")
        return stream

    def read_message(self, uid: int, *, mark_seen: bool = False) -> bytes:
        with self.open_message(uid, mark_seen=mark_seen) as stream:
            return stream.read()

    def read_header(self, uid: int) -> bytes:
        """The message's header block as stored, up to and including the blank line
        that ends it (the whole message if there is none); the body is not read.

        Header blocks are kept in a process-wide cache bounded by size (a
        message's bytes never change under its UID). A cached block is served
        only while the file is still where the last refresh saw it; otherwise the
        file is read as :meth:`open_message` finds it (EXPUNGEISSUED if gone).
        For many messages, :meth:`header_reader` checks that more cheaply.
        """
        location = self.message(uid).location
        present: tuple[str, ...] = (location,) if os.path.isfile(location) else ()
        return self._read_header(uid, present)

    def header_reader(self) -> Callable[[int], bytes]:
        """:meth:`read_header` for a batch of messages (an IMAP FETCH).

        Whether the cached headers' files are still there is checked once: not at
        all if :meth:`changed_since` the last refresh is False (no file can have
        gone), else by listing new/ and cur/ once.
        """
        present: Container[str] | None = None
        if self.changed_since():
            names: set[str] = set()
            for subdir in ("new", "cur"):
                prefix = f"{self._folder}/{subdir}/"
                with contextlib.suppress(FileNotFoundError):
                    names.update(prefix + name for name in os.listdir(prefix))
            present = names
        return lambda uid: self._read_header(uid, present)

    def _read_header(self, uid: int, present: Container[str] | None) -> bytes:
        """``present``: the files known to exist (None: all those of the view)."""
        info = self.message(uid)
        key = (self._folder, self._uidvalidity, uid, info.base, info.size)
        cached = _HEADER_CACHE.get(key)
        if cached is not None and (present is None or info.location in present):
            return cached
        try:
            fd = os.open(info.location, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # Renamed by another session's flag change, or expunged: open_message knows.
            with self.open_message(uid) as stream:
                header = _read_header_block(stream.read)
        else:
            try:
                header = _read_header_block(lambda size: os.read(fd, size))
            finally:
                os.close(fd)
        _HEADER_CACHE.put(key, header)
        return header

    # -- changing

    def set_flags(
        self,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: Literal["replace", "add", "remove"] = "replace",
    ) -> dict[int, frozenset[str]]:
        """Change the flags of ``uids``; returns {uid: new flags} for those that changed.

        "add" and "remove" apply to the flags currently on disk, so concurrent
        changes by other sessions to other flags are kept. \\Recent is ignored
        (see :func:`normalize_flags`). Messages already expunged are skipped.
        A disk error (a keyword change on a full disk) leaves this view as it
        was; the next refresh shows what did reach the disk.
        """
        before = dict(self._messages)
        try:
            return self._set_flags(uids, flags, mode)
        except OSError:
            self._messages = before
            self._token = None
            raise

    def _set_flags(
        self,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: Literal["replace", "add", "remove"],
    ) -> dict[int, frozenset[str]]:
        self._require_writable()
        wanted = normalize_flags(flags)
        if mode not in ("replace", "add", "remove"):
            raise ValueError(f"unknown mode {mode!r}")
        changed: dict[int, frozenset[str]] = {}
        with self._locked("NONEXISTENT") as state:
            renamed = False
            for uid in sorted(set(uids)):
                info = self._messages.get(uid)
                record = state.index.records.get(info.base) if info is not None else None
                entry = state.files.get(info.base) if info is not None else None
                if info is None or record is None or entry is None:
                    continue
                subdir, filename = entry
                on_disk_info = _split_filename(filename)[1]
                current = info_to_flags(on_disk_info) | record.keywords
                if mode == "replace":
                    new = wanted
                elif mode == "add":
                    new = current | wanted
                else:
                    new = current - wanted
                if new == current:
                    continue
                new_info = flags_to_info(new, _other_info_letters(on_disk_info))
                new_filename = f"{info.base}:{new_info}"
                if (subdir, filename) != ("cur", new_filename):
                    try:
                        os.rename(self.path / subdir / filename, self.path / "cur" / new_filename)
                    except FileNotFoundError:
                        continue  # an outside reader renamed it; this change is lost, rarely
                    state.files[info.base] = ("cur", new_filename)
                    renamed = True
                keywords = new - _FILENAME_FLAGS
                if keywords != record.keywords:
                    state.index.records[info.base] = dataclasses.replace(record, keywords=keywords)
                    state.dirty = state.essential = True
                shown = new | {RECENT} if uid in self._recent else new
                self._messages[uid] = dataclasses.replace(
                    info, flags=shown, location=f"{self._folder}/cur/{new_filename}"
                )
                changed[uid] = shown
            if renamed:
                fsync_directory(self._maildir.cur_dir)
        if changed:
            self._notify()
        return changed

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        """Remove the messages flagged \\Deleted (only among ``uids`` if given: UID EXPUNGE).

        Only messages this session knows are removed — it could not announce
        others' sequence numbers. Returns the expunged UIDs, ascending; they
        leave :meth:`messages` now and are not reported by the next refresh.
        """
        self._require_writable()
        candidates = sorted(self._messages if uids is None else set(uids) & set(self._messages))
        expunged = []
        with self._locked("NONEXISTENT") as state:
            for uid in candidates:
                base = self._messages[uid].base
                entry = state.files.get(base)
                if entry is None:
                    continue  # already gone: the next refresh reports it
                if DELETED not in info_to_flags(_split_filename(entry[1])[1]):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path / entry[0] / entry[1])
                state.remove(base)
                expunged.append(uid)
            self._forget(expunged)
            if expunged:
                fsync_directory(self._maildir.cur_dir)
        if expunged:
            self._notify()
        return expunged

    def begin_append(
        self,
        flags: Iterable[str] = (),
        internaldate: datetime | float | None = None,
        *,
        expected_size: int | None = None,
        crlf_to_lf: bool = True,
    ) -> Appender:
        """Start appending a message to be written in chunks (IMAP APPEND's literal).

        ``expected_size`` (the literal's length) lets the quota refuse the
        message before any byte is sent. ``crlf_to_lf`` stores lines with LF,
        as the SMTP server does. See :class:`Appender`.
        """
        stored_flags = normalize_flags(flags)
        limit = None
        if self.owner.quota_bytes is not None:
            limit = self.owner.quota_bytes - self.owner.usage()
            if expected_size is not None and expected_size > limit:
                raise MailboxError("OVERQUOTA", "the message would exceed the mailbox quota")
        if not self._maildir.cur_dir.is_dir():
            raise MailboxError("TRYCREATE", f"no mailbox {self.name}")
        return Appender(self, stored_flags, internaldate, limit, crlf_to_lf)

    def append(
        self,
        data: bytes | bytearray | BinaryIO | Iterable[bytes],
        flags: Iterable[str] = (),
        internaldate: datetime | float | None = None,
    ) -> int:
        """Append a message — bytes, a binary file or an iterable of chunks — and return its UID.

        File objects and iterables are streamed to disk. The new message
        arrives in this session's view with the next refresh.
        """
        with self.begin_append(flags, internaldate) as appender:
            if isinstance(data, bytes | bytearray):
                appender.write(data)
            elif (read := getattr(data, "read", None)) is not None:
                while chunk := read(_READ_CHUNK_SIZE):
                    appender.write(chunk)
            else:
                for chunk in data:
                    appender.write(chunk)
            return appender.commit()

    def copy(self, uids: Iterable[int], target: Mailbox | str) -> list[tuple[int, int]]:
        """Copy messages, flags and INTERNALDATE included, into ``target``; returns
        (source UID, new UID) pairs, ascending, for COPYUID.

        ``target`` is a Mailbox or the name of one of this user's folders; a
        missing folder raises TRYCREATE. Files are hard-linked where the
        filesystem allows, else copied. All or nothing: a message expunged
        meanwhile raises EXPUNGEISSUED and copies nothing.
        """
        return self._copy(uids, target, check_quota=True)

    def _copy(
        self, uids: Iterable[int], target: Mailbox | str, *, check_quota: bool
    ) -> list[tuple[int, int]]:
        destination = self.owner.target(target) if isinstance(target, str) else target
        placed: list[tuple[int, MessageInfo, Path, str, frozenset[str]]] = []
        tmp_dir = destination._maildir.tmp_dir
        pairs = []
        try:
            for uid in sorted(set(uids) & set(self._messages)):
                info = self._messages[uid]
                name = unique_name()
                tmp_path = tmp_dir / name
                flags = self._link_current(info, tmp_path)
                placed.append((uid, info, tmp_path, name, flags))
            total = sum(info.size for _, info, _, _, _ in placed)
            quota = self.owner._quota_reserved(total) if check_quota else contextlib.nullcontext()
            with quota, destination._locked("TRYCREATE") as state:
                for uid, info, tmp_path, name, flags in placed:
                    filename = f"{name}:{flags_to_info(flags)}"
                    os.rename(tmp_path, destination._maildir.cur_dir / filename)
                    new_uid = state.add(
                        "cur",
                        filename,
                        info.size,
                        info.rfc822_size,
                        int(info.internaldate.timestamp()),
                        flags - _FILENAME_FLAGS,
                        info.unterminated,
                    )
                    pairs.append((uid, new_uid))
                if placed:
                    fsync_directory(destination._maildir.cur_dir)
        except FileNotFoundError as error:
            if not tmp_dir.is_dir():
                raise MailboxError("TRYCREATE", f"no mailbox {destination.name}") from error
            raise
        finally:
            for _, _, tmp_path, _, _ in placed:
                remove_quietly(tmp_path)  # those renamed into cur/ are no longer there
        if pairs:
            destination._notify()
        return pairs

    def move(self, uids: Iterable[int], target: Mailbox | str) -> list[tuple[int, int]]:
        """:meth:`copy`, then remove the originals whatever their flags (RFC 6851 MOVE).

        Not refused by the quota: the user's usage does not grow.

        The moved UIDs leave :meth:`messages` now (send EXPUNGE for them) and
        are not reported by the next refresh.
        """
        self._require_writable()
        pairs = self._copy(uids, target, check_quota=False)
        moved = [uid for uid, _ in pairs]
        with self._locked("NONEXISTENT") as state:
            for uid in moved:
                entry = state.files.get(self._messages[uid].base)
                if entry is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path / entry[0] / entry[1])
                    state.remove(self._messages[uid].base)
            self._forget(moved)
            if moved:
                fsync_directory(self._maildir.cur_dir)
        if moved:
            self._notify()
        return pairs

    # -- internals

    @contextlib.contextmanager
    def _locked(self, missing: ResponseCode) -> Iterator[_LockedIndex]:
        with _locked_index(self.path, self.owner.path, missing) as state:
            yield state

    def _require_writable(self) -> None:
        if self.read_only:
            raise MailboxError("CANNOT", f"{self.name} is open read-only")

    def _notify(self) -> None:
        self.owner.watchers.notify(self.owner.user, self.name)

    def _forget(self, uids: Iterable[int]) -> None:
        for uid in uids:
            self._messages.pop(uid, None)
            self._recent.discard(uid)

    def _move_new_to_cur(self, state: _LockedIndex) -> None:
        # Not fsynced: after a crash the file is merely back in new/, which is harmless.
        for base, (subdir, filename) in list(state.files.items()):
            if subdir != "new":
                continue
            cur_name = filename if ":" in filename else filename + ":2,"
            try:
                os.rename(self._maildir.new_dir / filename, self._maildir.cur_dir / cur_name)
            except FileNotFoundError:
                continue  # another reader moved it; the next scan finds it in cur/
            except OSError as error:
                if error.errno not in STORAGE_FULL_ERRNOS:
                    raise
                continue  # no room for another entry in cur/: it stays in new/ for now
            state.files[base] = ("cur", cur_name)

    def _view(self, state: _LockedIndex) -> dict[int, MessageInfo]:
        view = {}
        old = self._messages
        recent = self._recent
        files = state.files
        folder = self._folder
        info_flags = _cached_info_flags
        for record in state.index.records.values():
            entry = files.get(record.base)
            if entry is None:
                continue
            uid = record.uid
            subdir, filename = entry
            location = f"{folder}/{subdir}/{filename}"
            flags = info_flags(filename.partition(":")[2])
            if record.keywords:
                flags = flags | record.keywords
            if uid in recent:
                flags = flags | _RECENT_ONLY
            previous = old.get(uid)
            if (
                previous is not None
                and previous.location == location
                and previous.flags == flags
                and previous.base == record.base
                and previous.size == record.size
                and previous.rfc822_size == record.rfc822_size
                and previous.internaldate_seconds == record.internaldate
                and previous.unterminated == record.unterminated
            ):
                view[uid] = previous  # unchanged: no new object
                continue
            view[uid] = MessageInfo(
                uid,
                record.base,
                location,
                flags,
                record.size,
                record.rfc822_size,
                record.internaldate,
                record.unterminated,
            )
        return view

    def _locate(self, info: MessageInfo) -> Path:
        """Where the message with ``info.base`` is now (its flags may have renamed it)."""
        for subdir in ("cur", "new"):
            with contextlib.suppress(FileNotFoundError), os.scandir(self.path / subdir) as entries:
                for entry in entries:
                    if _split_filename(entry.name)[0] == info.base:
                        path = Path(entry.path)
                        self._messages[info.uid] = dataclasses.replace(info, location=entry.path)
                        return path
        raise MailboxError("EXPUNGEISSUED", f"message {info.uid} was expunged")

    def _link_current(self, info: MessageInfo, tmp_path: Path) -> frozenset[str]:
        """Hard-link (else copy) the message to ``tmp_path``; returns the flags to give the copy.

        The system flags are read from the current filename, keywords from this
        session's view.
        """
        path = info.path
        for _ in range(3):  # a concurrent flag change may rename it under us
            try:
                _link_or_copy(path, tmp_path, info.internaldate.timestamp())
            except FileNotFoundError:
                if not tmp_path.parent.is_dir():
                    raise MailboxError("TRYCREATE", "the target mailbox was deleted") from None
                path = self._locate(info)
                continue
            system = info_to_flags(_split_filename(path.name)[1])
            return system | (info.flags - _FILENAME_FLAGS - {RECENT})
        raise MailboxError("EXPUNGEISSUED", f"message {info.uid} was expunged")


def _link_or_copy(source: Path, destination: Path, mtime: float) -> None:
    try:
        os.link(source, destination)
        return
    except OSError as error:
        if error.errno not in _CANNOT_HARD_LINK:
            raise
    try:
        with open(source, "rb") as reader, open(destination, "xb") as writer:
            shutil.copyfileobj(reader, writer, _READ_CHUNK_SIZE)
            writer.flush()
            os.fsync(writer.fileno())
        os.chmod(destination, MESSAGE_MODE)
        os.utime(destination, (mtime, mtime))
    except BaseException:
        remove_quietly(destination)
        raise


class _AppendTarget:
    """The :class:`Delivery` target of an append: publishes into cur/ with flags and a UID."""

    def __init__(self, appender: Appender) -> None:
        self._appender = appender

    @property
    def tmp_dir(self) -> Path:
        return self._appender.mailbox._maildir.tmp_dir

    def publish(self, tmp_path: Path, name: str) -> Path:
        return self._appender._publish(tmp_path, name)


class Appender:
    """One message being appended; from :meth:`Mailbox.begin_append`.

    :meth:`write` streams chunks into the folder's tmp/ through a
    :class:`~mailtalk.store.maildir.Delivery` (so memory stays bounded however
    large the message); :meth:`commit` fsyncs it, publishes it into cur/ and
    returns its UID. Leaving a ``with`` block without commit aborts, removing
    the temporary file. With a quota, writing past it aborts with OVERQUOTA at
    once rather than filling the disk first.
    """

    def __init__(
        self,
        mailbox: Mailbox,
        flags: frozenset[str],
        internaldate: datetime | float | None,
        byte_limit: int | None,
        crlf_to_lf: bool,
    ) -> None:
        self.mailbox = mailbox
        self._flags = flags
        if isinstance(internaldate, datetime):
            internaldate = internaldate.timestamp()
        self._internaldate = internaldate
        self._byte_limit = byte_limit
        self._converter = CRLFToLF() if crlf_to_lf else None
        self._counter = RFC822SizeCounter()
        self.uid: int | None = None
        try:
            self._delivery = Delivery([_AppendTarget(self)])
        except StoreError as error:
            if error.errno != errno.ENOENT:
                raise
            raise MailboxError("TRYCREATE", f"no mailbox {mailbox.name}") from error

    @property
    def size(self) -> int:
        """Bytes stored so far (after line-ending conversion)."""
        return self._counter.size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        chunk = bytes(data)
        self._write_stored(self._converter.feed(chunk) if self._converter else chunk)

    def commit(self) -> int:
        """Make the message durable and visible; returns its UID."""
        if self._converter is not None:
            self._write_stored(self._converter.finish())
        self._delivery.commit()
        assert self.uid is not None  # set by _publish, which commit() calls
        self.mailbox._notify()
        return self.uid

    def abort(self) -> None:
        self._delivery.abort()

    def __enter__(self) -> Appender:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()

    def _write_stored(self, chunk: bytes) -> None:
        self._counter.feed(chunk)
        if self._byte_limit is not None and self._counter.size > self._byte_limit:
            self.abort()
            raise MailboxError("OVERQUOTA", "the message would exceed the mailbox quota")
        self._delivery.write(chunk)

    def _publish(self, tmp_path: Path, name: str) -> Path:
        mailbox = self.mailbox
        if self._internaldate is not None:
            os.utime(tmp_path, (self._internaldate, self._internaldate))
        internaldate = int(os.stat(tmp_path).st_mtime)
        filename = f"{name}:{flags_to_info(self._flags)}"
        final_path = mailbox._maildir.cur_dir / filename
        with (
            mailbox.owner._quota_reserved(self._counter.size),
            mailbox._locked("TRYCREATE") as state,
        ):
            os.rename(tmp_path, final_path)
            fsync_directory(mailbox._maildir.cur_dir)
            self.uid = state.add(
                "cur",
                filename,
                self._counter.size,
                self._counter.rfc822_size,
                internaldate,
                self._flags - _FILENAME_FLAGS,
                self._counter.unterminated,
            )
        return final_path


# -- a user's folders ----------------------------------------------------------


class UserMailboxes:
    """One user's folders: INBOX at ``path`` (``ROOT/mail/USER/Maildir``), the rest in it.

    ``quota_bytes`` limits the total size of all folders' messages (hard
    links count once per name, as Maildir++ quota does); ``None`` = no limit.
    INBOX is created on first use. See the module documentation for names.
    """

    def __init__(
        self,
        path: Path,
        user: str,
        *,
        quota_bytes: int | None = None,
        watchers: MailboxWatchers | None = None,
    ) -> None:
        self.path = Path(path)
        self.user = user
        self.quota_bytes = quota_bytes
        self.watchers = watchers if watchers is not None else MailboxWatchers()

    def __repr__(self) -> str:
        return f"UserMailboxes({str(self.path)!r}, {self.user!r})"

    # -- folders

    def folder_path(self, name: str) -> Path:
        """Where folder ``name`` lives (whether or not it exists)."""
        name = _checked_name(name)
        return self.path if name == INBOX else self.path / ("." + name)

    def list_folders(self) -> list[str]:
        """INBOX, then every folder, sorted. After DELETE a parent may be missing
        while its children remain (RFC 3501 6.3.4); LIST shows it \\NonExistent."""
        self._ensure_inbox()
        names = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not entry.name.startswith(".") or entry.name.startswith(".."):
                    continue
                name = entry.name[1:]
                try:
                    name = _checked_name(name)
                except MailboxError:
                    continue
                if name != INBOX and os.path.isdir(os.path.join(entry.path, "cur")):
                    names.append(name)
        return [INBOX, *sorted(names)]

    def exists(self, name: str) -> bool:
        try:
            path = self.folder_path(name)
        except MailboxError:
            return False
        return _checked_name(name) == INBOX or (path / "cur").is_dir()

    def create(self, name: str) -> None:
        """Create folder ``name`` and any missing parents (RFC 3501 6.3.3).

        A trailing "." (a client declaring it will create children) is dropped.
        ALREADYEXISTS if it exists — INBOX always does.
        """
        if name.endswith(DELIMITER) and len(name) > 1:
            name = name[:-1]
        name = _checked_name(name)
        if name == INBOX:
            raise MailboxError("ALREADYEXISTS", "INBOX always exists")
        self._ensure_inbox()
        with self._user_lock():
            if self.exists(name):
                raise MailboxError("ALREADYEXISTS", f"mailbox {name} already exists")
            for parent in _parents(name):
                if not self.exists(parent):
                    self._make_folder(parent)
            self._make_folder(name)

    def delete(self, name: str) -> None:
        """Delete folder ``name`` and its messages; its children stay (RFC 3501 6.3.4).

        INBOX cannot be deleted (CANNOT); a missing folder is NONEXISTENT.
        Sessions that have it open get NONEXISTENT from their next refresh.
        """
        name = _checked_name(name)
        if name == INBOX:
            raise MailboxError("CANNOT", "INBOX cannot be deleted")
        with self._user_lock():
            if not self.exists(name):
                raise MailboxError("NONEXISTENT", f"no mailbox {name}")
            # Renamed away first so the folder vanishes at once and whole, even if
            # removing its files is slow or interrupted (a leftover is skipped by
            # listings and removed by the next delete).
            trash = self.path / f"{_DELETED_PREFIX}{unique_name()}"
            os.rename(self.folder_path(name), trash)
            fsync_directory(self.path)
        self._remove_deleted()
        self.watchers.notify(self.user, name)

    def rename(self, old: str, new: str) -> None:
        """Rename folder ``old`` and its children to ``new`` (RFC 3501 6.3.5).

        Renaming INBOX moves its messages, flags and keywords kept, into the new
        folder (fresh UIDs there) and leaves INBOX empty; INBOX's children stay.
        NONEXISTENT if ``old`` is missing, ALREADYEXISTS if ``new`` (or one of
        the renamed children's new names) exists, CANNOT to rename a folder into
        itself. Missing parents of ``new`` are created.
        """
        old, new = _checked_name(old), _checked_name(new)
        self._ensure_inbox()
        with self._user_lock():
            if not self.exists(old):
                raise MailboxError("NONEXISTENT", f"no mailbox {old}")
            if new == INBOX or self.exists(new):
                raise MailboxError("ALREADYEXISTS", f"mailbox {new} already exists")
            # INBOX is the exception: only its messages move, so "INBOX.Old" is fine.
            if new.startswith(old + DELIMITER) and old != INBOX:
                raise MailboxError("CANNOT", f"cannot rename {old} into itself")
            if old == INBOX:
                for parent in _parents(new):
                    if not self.exists(parent):
                        self._make_folder(parent)
                self._make_folder(new)
                self._move_inbox_messages(self.folder_path(new))
                renamed = [(old, new)]
            else:
                children = [n for n in self.list_folders() if n.startswith(old + DELIMITER)]
                renamed = [(name, new + name[len(old) :]) for name in [old, *children]]
                for _, to_name in renamed[1:]:
                    if self.exists(to_name):
                        raise MailboxError("ALREADYEXISTS", f"mailbox {to_name} already exists")
                for parent in _parents(new):
                    if not self.exists(parent):
                        self._make_folder(parent)
                for from_name, to_name in renamed:
                    os.rename(self.folder_path(from_name), self.folder_path(to_name))
                fsync_directory(self.path)
        for from_name, to_name in renamed:
            self.watchers.notify(self.user, from_name)
            self.watchers.notify(self.user, to_name)

    # -- subscriptions

    @property
    def subscriptions(self) -> list[str]:
        """Subscribed names in the order subscribed (the ``subscriptions`` file).

        A subscription may name a folder that does not exist (RFC 3501 6.3.6);
        DELETE and RENAME leave subscriptions alone, as Dovecot does.
        """
        try:
            text = (self.path / SUBSCRIPTIONS_NAME).read_text("utf-8", "surrogateescape")
        except FileNotFoundError:
            return []
        return [line for line in text.split("\n") if line]

    def subscribe(self, name: str) -> None:
        name = _checked_name(name)
        self._ensure_inbox()
        with self._user_lock():
            names = self.subscriptions
            if name not in names:
                self._write_subscriptions([*names, name])

    def unsubscribe(self, name: str) -> None:
        """Remove ``name``; nothing happens if it was not subscribed."""
        name = _canonical_name(name)
        self._ensure_inbox()
        with self._user_lock():
            names = self.subscriptions
            if name in names:
                self._write_subscriptions([n for n in names if n != name])

    # -- opening

    def open(self, name: str, *, read_only: bool = False) -> Mailbox:
        """Folder ``name`` for a session (IMAP SELECT, or EXAMINE if ``read_only``; POP3).

        Already refreshed: messages, UIDVALIDITY and \\Recent are known.
        NONEXISTENT if the folder does not exist.
        """
        mailbox = self._mailbox(name, "NONEXISTENT", read_only=read_only, claim_recent=True)
        mailbox.refresh()
        return mailbox

    def target(self, name: str) -> Mailbox:
        """Folder ``name`` as the destination of APPEND, COPY or MOVE; TRYCREATE if missing.

        Refreshed without claiming \\Recent, so the messages added stay \\Recent
        for the next session to select it.
        """
        mailbox = self._mailbox(name, "TRYCREATE", read_only=False, claim_recent=False)
        mailbox.refresh()
        return mailbox

    # -- quota and locks

    def usage(self) -> int:
        """Bytes used by the messages in all folders."""
        total = 0
        for folder in [self.path, *(self.path / ("." + n) for n in self.list_folders()[1:])]:
            for subdir in ("new", "cur"):
                with contextlib.suppress(FileNotFoundError), os.scandir(folder / subdir) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        with contextlib.suppress(FileNotFoundError):
                            if entry.is_file(follow_symlinks=False):
                                total += entry.stat(follow_symlinks=False).st_size
        return total

    def check_quota(self, additional: int) -> None:
        """OVERQUOTA if ``additional`` more bytes would exceed the quota (for a pre-check)."""
        if self.quota_bytes is not None and self.usage() + additional > self.quota_bytes:
            raise MailboxError("OVERQUOTA", "the message would exceed the mailbox quota")

    def lock_maildrop(self) -> MaildropLock:
        """POP3's lock on this user's maildrop; MailboxError("INUSE") at once if held."""
        self._ensure_inbox()
        return MaildropLock(self.path / _MAILDROP_LOCK_NAME)

    # -- internals

    def _ensure_inbox(self) -> None:
        Maildir(self.path).create()

    def _user_lock(self) -> _FileLock:
        return _FileLock(self.path / _USER_LOCK_NAME)

    @contextlib.contextmanager
    def _quota_reserved(self, additional: int) -> Iterator[None]:
        """Check the quota and keep the user lock while the caller adds ``additional`` bytes,
        so concurrent appends cannot both fit in the same remaining space."""
        if self.quota_bytes is None:
            yield
            return
        with self._user_lock():
            self.check_quota(additional)
            yield

    def _mailbox(
        self, name: str, missing: ResponseCode, *, read_only: bool, claim_recent: bool
    ) -> Mailbox:
        name = _checked_name(name)
        if name == INBOX:
            self._ensure_inbox()
        elif not self.exists(name):
            raise MailboxError(missing, f"no mailbox {name}")
        return Mailbox(
            self, name, self.folder_path(name), read_only=read_only, claim_recent=claim_recent
        )

    def _make_folder(self, name: str) -> None:
        """Create the folder: built under a temporary name, then renamed into place whole."""
        building = self.path / f"{_CREATING_PREFIX}{unique_name()}"
        try:
            Maildir(building).create()
            (building / FOLDER_MARKER_NAME).touch(MESSAGE_MODE)
            os.rename(building, self.folder_path(name))
        except OSError as error:
            shutil.rmtree(building, ignore_errors=True)
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise MailboxError("ALREADYEXISTS", f"mailbox {name} already exists") from None
            raise store_error(error, "creating a mailbox", building) from error
        fsync_directory(self.path)

    def _remove_deleted(self) -> None:
        with os.scandir(self.path) as entries:
            leftovers = [e.path for e in entries if e.name.startswith(_DELETED_PREFIX)]
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)

    def _move_inbox_messages(self, folder: Path) -> None:
        with (
            _locked_index(self.path, self.path, "NONEXISTENT") as inbox,
            _locked_index(folder, self.path, "NONEXISTENT") as target,
        ):
            for record in list(inbox.index.records.values()):
                entry = inbox.files.get(record.base)
                if entry is None:
                    continue
                subdir, filename = entry
                try:
                    os.rename(self.path / subdir / filename, folder / subdir / filename)
                except FileNotFoundError:
                    continue  # expunged meanwhile by an outside reader
                inbox.remove(record.base)
                target.add(
                    subdir,
                    filename,
                    record.size,
                    record.rfc822_size,
                    record.internaldate,
                    record.keywords,
                    record.unterminated,
                )
            for subdir in ("new", "cur"):
                fsync_directory(folder / subdir)
                fsync_directory(self.path / subdir)

    def _write_subscriptions(self, names: list[str]) -> None:
        path = self.path / SUBSCRIPTIONS_NAME
        tmp_path = self.path / (SUBSCRIPTIONS_NAME + ".tmp")
        data = "".join(name + "\n" for name in names).encode("utf-8", "surrogateescape")
        fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, MESSAGE_MODE)
        try:
            write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp_path, path)
        fsync_directory(self.path)


class MailStore:
    """The mailboxes under a server root ``ROOT`` (``ROOT/mail/USER/Maildir``).

    ``watchers`` is shared by every user's folders: give the same object to
    the SMTP delivery path so it can ``notify(user, "INBOX")``.
    """

    def __init__(self, root: Path, *, watchers: MailboxWatchers | None = None) -> None:
        self.root = Path(root)
        self.watchers = watchers if watchers is not None else MailboxWatchers()

    def user_mailboxes(self, user: str, *, quota_bytes: int | None = None) -> UserMailboxes:
        """``user``'s folders; a user name that is not a plain directory name raises ValueError."""
        if user in ("", ".", "..") or "/" in user or "\0" in user:
            raise ValueError(f"not a usable mailbox user name: {user!r}")
        return UserMailboxes(
            self.root / "mail" / user / "Maildir",
            user,
            quota_bytes=quota_bytes,
            watchers=self.watchers,
        )

    def lock_maildrop(self, user: str) -> MaildropLock:
        """POP3's maildrop lock for ``user``: see :meth:`UserMailboxes.lock_maildrop`."""
        return self.user_mailboxes(user).lock_maildrop()
