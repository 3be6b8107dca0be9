"""A folder's index, ``mailtalk-uidlist``: its UIDs, sizes, dates and keywords.

Modelled on Dovecot's ``dovecot-uidlist``; one per folder, INBOX included::

    mailtalk-uidlist 1 V1712345678 N4 R3 M7
    1 S1200 W1236 T1712345600 M2 :1712345600.M12P34Q1.host
    3 S99 W101 T1712345700 M7 K$Junk Kproject-x :1712345700.M13P34Q2.host

The header is the format version, V = UIDVALIDITY, N = UIDNEXT, R = the
first UID still \\Recent and M = HIGHESTMODSEQ (RFC 7162: it grows with every
change to the folder, a flag change, an addition or an expunge, and never goes
back under the same UIDVALIDITY). Each message line is its UID; S = size in bytes as
stored (LF line endings); W = RFC822.SIZE (the size with CRLF line endings, what
IMAP and POP3 report, counted once when the message is first indexed, or taken from
the ,S=/,W= fields Dovecot and mailtalk put in delivered names); T =
INTERNALDATE (Unix seconds); M = the message's MODSEQ (the folder's
HIGHESTMODSEQ when it was added or its flags last changed); U if the
message does not end with a line end; one K field per keyword; and after
" :" the filename base (the part before ``:2,``), which is the message's
stable identity and its POP3 UIDL.
An index written before MODSEQs were kept has no M fields: its messages read
as MODSEQ 1 and the folder's HIGHESTMODSEQ as the highest of them, at least 1.
Flags changed by another program renaming a file are seen (the session shows
them) but not given a new MODSEQ: only changes made through this store are.

**Writing.** The file is replaced atomically (tmp, fsync, rename) while holding
an exclusive ``flock`` on ``mailtalk-uidlist.lock`` (:mod:`mailtalk.store.locks`),
so processes and threads never see or write a half-updated index:
:func:`locked_index` loads it under the lock, merged with the folder's files,
and saves it when the caller is done.

**Rebuilding.** An index that is missing or does not parse is set aside as
``mailtalk-uidlist.corrupt`` and rebuilt with a NEW UIDVALIDITY (taken from
``mailtalk-uidvalidity`` in the user's Maildir, which only ever grows, so a
re-created or rebuilt folder never reuses one) and fresh UIDs, given in delivery
order. UIDs are 32-bit: when they run out, the folder is renumbered under a new
UIDVALIDITY too (RFC 3501 2.3.1.1).

**Caching.** Parsed indexes are kept by their exact text, so a folder reopened
unchanged costs a read and a string comparison, never a stale answer; the cache
is bounded by the memory its entries take, parsed records included.
Stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mailtalk.store.errors import (
    STORAGE_FULL_ERRNOS,
    MailboxError,
    ResponseCode,
    StoreFullError,
    store_error,
)
from mailtalk.store.filesystem import MESSAGE_MODE, remove_quietly, replace_file
from mailtalk.store.flags import split_filename
from mailtalk.store.locks import INDEX_LOCK_NAME, FileLock
from mailtalk.store.sizes import measure, sizes_from_name
from mailtalk.store.vanished import record_expunges

log = logging.getLogger(__name__)

INDEX_NAME = "mailtalk-uidlist"
INDEX_VERSION = "1"
_INDEX_MAGIC = "mailtalk-uidlist"
_INDEX_TMP_NAME = "mailtalk-uidlist.tmp"
_INDEX_CORRUPT_NAME = "mailtalk-uidlist.corrupt"
_UIDVALIDITY_NAME = "mailtalk-uidvalidity"

# UIDs and UIDVALIDITY are 32-bit non-zero numbers (RFC 3501 nz-number).
MAX_UID = 2**32 - 1


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


# -- the index, in memory and as text ------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One message line of the index (immutable: parsed indexes share their records)."""

    uid: int
    base: str
    size: int
    rfc822_size: int
    internaldate: int
    keywords: frozenset[str]
    unterminated: bool = False  # no final line end (index token "U")
    modseq: int = 1  # RFC 7162 MODSEQ (index token "M")


@dataclass
class Index:
    """The index of one folder: its header fields and its records."""

    uidvalidity: int
    uidnext: int
    first_recent_uid: int
    records: dict[str, Record]  # by filename base, in UID order
    highestmodseq: int = 1

    def next_modseq(self) -> int:
        """Count a change to the folder: the new HIGHESTMODSEQ, for the changed message."""
        self.highestmodseq += 1
        return self.highestmodseq


def _format_index(index: Index) -> str:
    lines = [
        f"{_INDEX_MAGIC} {INDEX_VERSION} V{index.uidvalidity} N{index.uidnext} "
        f"R{index.first_recent_uid} M{index.highestmodseq}"
    ]
    for record in index.records.values():
        keywords = "".join(f" K{keyword}" for keyword in sorted(record.keywords))
        unterminated = " U" if record.unterminated else ""
        lines.append(
            f"{record.uid} S{record.size} W{record.rfc822_size} T{record.internaldate}"
            f" M{record.modseq}{unterminated}{keywords} :{record.base}"
        )
    return "\n".join(lines) + "\n"


def _number(text: str, low: int = 0, high: int = 2**63) -> int:
    if not text.isdigit() or not (low <= int(text) <= high):
        raise ValueError(f"bad number {text!r}")
    return int(text)


def _parse_index(text: str) -> Index:
    """The index in ``text``; ValueError if anything at all is wrong with it.

    Parsed indexes are cached by their exact text (see :class:`_IndexCache`), so a
    folder reopened unchanged costs a read and a string comparison; the result is
    a fresh :class:`Index` whose records dict the caller may change (the records
    themselves are immutable and shared).
    """
    cached = _INDEX_CACHE.get(text)
    if cached is None:
        cached = _parse_index_text(text)
        _INDEX_CACHE.put(text, cached)
    return Index(cached.uidvalidity, cached.uidnext, cached.first_recent_uid,
                 dict(cached.records), cached.highestmodseq)


# What a parsed index costs in memory beyond its text, measured with tracemalloc
# (CPython 3.11): a record and its strings, and each keyword of a distinct keyword set.
_RECORD_BYTES = 350
_KEYWORD_BYTES = 90


def _memory_estimate(text: str, index: Index) -> int:
    """Bytes an entry of the cache holds: the text it is keyed by and the parsed index
    (records with the same keywords share one set, so each set counts once)."""
    sets = {id(record.keywords): len(record.keywords) for record in index.records.values()}
    return len(text) + _RECORD_BYTES * len(index.records) + _KEYWORD_BYTES * sum(sets.values())


class _IndexCache:
    """Parsed indexes by their whole text, least recently used dropped beyond a total
    size in bytes: the text and the parsed records, which take 4 to 15 times as much.

    Keyed by content, not by file stamps, so it can never return a stale index:
    a hit means the bytes on disk are exactly those once parsed.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[Index, int]] = {}
        self._bytes = 0

    def get(self, text: str) -> Index | None:
        with self._lock:
            entry = self._entries.pop(text, None)
            if entry is None:
                return None
            self._entries[text] = entry  # most recently used last
            return entry[0]

    def put(self, text: str, index: Index) -> None:
        if len(text) > self.max_bytes:
            return
        cost = _memory_estimate(text, index)
        if cost > self.max_bytes:
            return
        with self._lock:
            if text in self._entries:
                return
            self._entries[text] = (index, cost)
            self._bytes += cost
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._bytes -= self._entries.pop(oldest)[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


# About 390 bytes a message without keywords: some 120,000 messages' indexes.
_INDEX_CACHE = _IndexCache(48 * 1024 * 1024)
# folder -> the UIDVALIDITY of its index rebuilt on a full disk and not saved yet.
_UNSAVED_REBUILDS: dict[Path, int] = {}


def _parse_index_text(text: str) -> Index:
    if not text.endswith("\n"):
        raise ValueError("truncated")
    header, *lines = text[:-1].split("\n")
    fields = header.split(" ")
    if fields[:2] != [_INDEX_MAGIC, INDEX_VERSION]:
        raise ValueError(f"unknown header {header!r}")
    values = {field[:1]: field[1:] for field in fields[2:]}
    if sorted(values) not in (["N", "R", "V"], ["M", "N", "R", "V"]) or len(fields) != 2 + len(
        values
    ):
        raise ValueError(f"bad header {header!r}")
    uidvalidity = _number(values["V"], 1, MAX_UID)
    uidnext = _number(values["N"], 1, MAX_UID + 1)
    first_recent_uid = _number(values["R"], 1, uidnext)
    highestmodseq = _number(values.get("M", "1"), 1, 2**63 - 1)
    records: dict[str, Record] = {}
    # Messages mostly carry the same few keyword sets: one frozenset (and one string
    # per keyword) for all of them, not one per message.
    keyword_sets: dict[tuple[str, ...], frozenset[str]] = {}
    last_uid = 0
    for line in lines:
        head, separator, base = line.partition(" :")
        if not separator or not base or base in records:
            raise ValueError(f"bad line {line!r}")
        uid_text, *parts = head.split(" ")
        if (
            len(parts) == 4
            and uid_text.isdigit()
            and parts[0][:1] == "S"
            and parts[1][:1] == "W"
            and parts[2][:1] == "T"
            and parts[0][1:].isdigit()
            and parts[1][1:].isdigit()
            and parts[2][1:].isdigit()
            and parts[3][:1] == "M"
            and parts[3][1:].isdigit()
        ):
            # The common line, as _format_index writes it without keywords.
            uid = int(uid_text)
            size, rfc822_size, internaldate, modseq = (
                int(parts[0][1:]),
                int(parts[1][1:]),
                int(parts[2][1:]),
                int(parts[3][1:]),
            )
            if (
                last_uid < uid < uidnext
                and size < 2**63
                and rfc822_size < 2**63
                and internaldate < 2**63
                and 0 < modseq <= highestmodseq
            ):
                records[base] = Record(uid, base, size, rfc822_size, internaldate, _NO_KEYWORDS,
                                       False, modseq)
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
            elif part[:1] in ("S", "W", "T", "M") and part[:1] not in numbers:
                numbers[part[:1]] = _number(part[1:])
            else:
                raise ValueError(f"bad field {part!r}")
        if len(numbers.keys() - {"M"}) != 3:
            raise ValueError(f"missing fields in {line!r}")
        modseq = numbers.get("M", 1)
        if not 0 < modseq <= highestmodseq:
            raise ValueError(f"MODSEQ beyond HIGHESTMODSEQ in {line!r}")
        shared = keyword_sets.get(tuple(keywords))
        if shared is None:
            shared = keyword_sets[tuple(keywords)] = frozenset(keywords)
        records[base] = Record(
            uid, base, numbers["S"], numbers["W"], numbers["T"], shared, unterminated, modseq
        )
        last_uid = uid
    return Index(uidvalidity, uidnext, first_recent_uid, records, highestmodseq)


_NO_KEYWORDS: frozenset[str] = frozenset()

_UNIQUE_NAME = re.compile(r"(\d+)\.([^.]*)")
_MICROSECONDS = re.compile(r"M(\d+)")
_SEQUENCE = re.compile(r"Q(\d+)|^\d+_(\d+)$")
# unique_name()'s form, ``<sec>.M<usec>P<pid>Q<n>.<host>``, with or without Dovecot's
# ``,S=<size>,W=<rfc822 size>`` after it: the groups give _delivery_order's key and
# sizes_from_name's answer (the host has no comma, so no other field can follow).
_CANONICAL_NAME = re.compile(
    r"([0-9]+)\.M([0-9]+)P[0-9]+Q([0-9]+)\.[^,]*(?:,S=([0-9]+),W=([0-9]+))?"
)


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


class LockedIndex:
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
        self.index = Index(0, 1, 1, {})
        self.expunged: list[tuple[int, int]] = []  # (modseq, uid), for QRESYNC

    def load(self) -> None:
        self.files = _scan_message_files(self.folder)
        index = self._read()
        if index is None:
            self.rebuilt = True
            uidvalidity = _UNSAVED_REBUILDS.get(self.folder) or _allocate_uidvalidity(
                self.user_root
            )
            self.index = Index(uidvalidity, 1, 1, {})
        else:
            self.index = index
        records = self.index.records
        gone = [records.pop(base).uid for base in [b for b in records if b not in self.files]]
        if gone:
            modseq = self.index.next_modseq()  # an expunge is a change (RFC 7162 3.1.2)
            self.expunged.extend((modseq, uid) for uid in gone)
            self.dirty = True
        self._index_new_files()
        if self.rebuilt:
            # Files still in new/ have not been seen by any session: those stay recent.
            new_uids = [
                record.uid for record in records.values() if self.files[record.base][0] == "new"
            ]
            self.index.first_recent_uid = min(new_uids, default=self.index.uidnext)
            self.dirty = True

    def _read(self) -> Index | None:
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
        unindexed: list[tuple[tuple[int, int, int, str], str, int, int, int, bool]] = []
        records = self.index.records
        directories: dict[str, int] = {}
        canonical = _CANONICAL_NAME.fullmatch
        try:
            for base, (subdir, filename) in self.files.items():
                if base in records:
                    continue
                dir_fd = directories.get(subdir)
                if dir_fd is None:
                    dir_fd = directories[subdir] = os.open(
                        self.folder / subdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                    )
                # The name as unique_name() makes it (with Dovecot's sizes or without):
                # the delivery order and the sizes in one match, else the general parsers.
                fast = canonical(base)
                named: tuple[int, int] | None
                if fast is None:
                    named = sizes_from_name(base)
                elif fast[4] is not None and int(fast[5]) >= int(fast[4]):
                    named = int(fast[4]), int(fast[5])
                else:
                    named = None
                try:
                    if named is None:
                        status, size, rfc822_size, unterminated = measure(dir_fd, filename)
                    else:
                        # Dovecot's ,S=/,W= in the name: a stat for the date, no read.
                        # Such a message ends with a line end (mailtalk names no other).
                        status = os.stat(filename, dir_fd=dir_fd)
                        (size, rfc822_size), unterminated = named, False
                except FileNotFoundError:
                    continue  # renamed by another reader meanwhile: the next load sees it
                if fast is None:
                    order = _delivery_order(base, status.st_mtime_ns)
                else:
                    order = (int(fast[1]), int(fast[2]), int(fast[3]), base)
                unindexed.append(
                    (order, base, size, rfc822_size, int(status.st_mtime), unterminated)
                )
        finally:
            for dir_fd in directories.values():
                os.close(dir_fd)
        if not unindexed:
            return
        if self.index.uidnext + len(unindexed) > MAX_UID + 1:
            self._renumber()
        unindexed.sort(key=lambda item: item[0])
        # add_record() for each, without the intermediate Record: the next UID and
        # the next MODSEQ for each message, in delivery order.
        index = self.index
        records = index.records  # _renumber() may have made a new index
        uid, modseq = index.uidnext, index.highestmodseq
        for _, base, size, rfc822_size, internaldate, unterminated in unindexed:
            modseq += 1
            records[base] = Record(uid, base, size, rfc822_size, internaldate, _NO_KEYWORDS,
                                   unterminated, modseq)
            uid += 1
        index.uidnext, index.highestmodseq = uid, modseq
        self.dirty = True

    def _renumber(self) -> None:
        """UIDs ran out: RFC 3501 2.3.1.1 says start again under a new UIDVALIDITY."""
        old = list(self.index.records.values())
        self.index = Index(_allocate_uidvalidity(self.user_root), 1, 1, {})
        for record in old:
            self.add_record(record)
        self.index.first_recent_uid = self.index.uidnext
        self.rebuilt = True

    def add_record(self, record: Record) -> int:
        """Index (a copy of) ``record`` under the next UID; returns the UID."""
        uid = self.index.uidnext
        self.index.uidnext += 1
        self.index.records[record.base] = Record(
            uid,
            record.base,
            record.size,
            record.rfc822_size,
            record.internaldate,
            record.keywords,
            record.unterminated,
            self.index.next_modseq(),
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
        base = split_filename(filename)[0]
        self.files[base] = (subdir, filename)
        self.essential = True
        return self.add_record(
            Record(0, base, size, rfc822_size, internaldate, keywords, unterminated)
        )

    def remove(self, base: str) -> None:
        self.files.pop(base, None)
        record = self.index.records.pop(base, None)
        if record is not None:
            self.expunged.append((self.index.next_modseq(), record.uid))
            self.dirty = True

    def save(self) -> None:
        """Write the index if it changed; on a full disk, only if a change is ``essential``."""
        if not self.dirty:
            return
        if self.expunged:
            record_expunges(self.folder, self.index.uidvalidity, self.expunged,
                            self.expunged[0][0])
            self.expunged = []
        data = _format_index(self.index).encode("utf-8", errors="surrogateescape")
        tmp_path = self.folder / _INDEX_TMP_NAME
        try:
            replace_file(self.folder / INDEX_NAME, data, tmp_path)
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
def locked_index(folder: Path, user_root: Path, missing: ResponseCode) -> Iterator[LockedIndex]:
    """The folder's index, loaded under its lock and saved when the block ends.

    It is saved even if the block fails: files the block already renamed into
    the folder are then indexed with what the block recorded (keywords, sizes).
    A folder that does not exist raises MailboxError(``missing``).
    """
    if not (folder / "cur").is_dir():
        raise MailboxError(missing, "no such mailbox")
    lock = FileLock(folder / INDEX_LOCK_NAME)
    try:
        lock.acquire()
    except FileNotFoundError:
        raise MailboxError(missing, "no such mailbox") from None
    try:
        state = LockedIndex(folder, user_root)
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
        lock.release()
