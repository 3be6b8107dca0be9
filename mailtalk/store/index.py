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
INTERNALDATE (Unix seconds), missing when not read yet; M = the message's MODSEQ (the folder's
HIGHESTMODSEQ when it was added or its flags last changed); U if the
message does not end with a line end; one K field per keyword; and after
" :" the filename base (the part before ``:2,``), which is the message's
stable identity and its POP3 UIDL.
An index written before MODSEQs were kept has no M fields: its messages read
as MODSEQ 1 and the folder's HIGHESTMODSEQ as the highest of them, at least 1.

**The date is read late.** A message whose name carries its sizes is indexed from
its name alone, without a ``stat()``: its line has no T, and its INTERNALDATE is
the file's mtime, read when a command first asks for it (FETCH INTERNALDATE, SEARCH
by date, SORT, COPY), as Dovecot reads its received date. The name's own timestamp
is not used: an APPENDed message keeps its INTERNALDATE in the mtime while its name
holds the time it was saved. A message read for its sizes gets its T at once.
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

**In memory** an index is :class:`~mailtalk.store.uidlist.Index`: columns, not an
object per message; parsed indexes are kept by their exact text, so a folder reopened
unchanged costs a read and a string comparison, never a stale answer; the cache
is bounded by the memory its entries take, parsed columns included.
Stdlib only.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import time
from array import array
from collections.abc import Iterator, Sequence
from itertools import islice, repeat
from operator import add, eq, itemgetter
from pathlib import Path
from typing import cast

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
from mailtalk.store.uidlist import (
    DATE_NOT_READ,
    MAX_UID,
    NO_KEYWORDS,
    Index,
    Record,
    cached_index,
    encoded_chunks,
    new_digest,
    parse_index,
    remember,
)
from mailtalk.store.vanished import record_expunges

log = logging.getLogger(__name__)

INDEX_NAME = "mailtalk-uidlist"
_INDEX_TMP_NAME = "mailtalk-uidlist.tmp"
_INDEX_CORRUPT_NAME = "mailtalk-uidlist.corrupt"
_UIDVALIDITY_NAME = "mailtalk-uidvalidity"


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


# folder -> the UIDVALIDITY of its index rebuilt on a full disk and not saved yet.
_UNSAVED_REBUILDS: dict[Path, int] = {}

_UNIQUE_NAME = re.compile(r"(\d+)\.([^.]*)")
_MICROSECONDS = re.compile(r"M(\d+)")
_SEQUENCE = re.compile(r"Q(\d+)|^\d+_(\d+)$")
# unique_name()'s form, ``<sec>.M<usec>P<pid>Q<n>.<host>``, with or without Dovecot's
# ``,S=<size>,W=<rfc822 size>`` after it: the groups give _delivery_order's key and
# sizes_from_name's answer (the host has no comma, so no other field can follow).
_CANONICAL_NAME = re.compile(
    r"([0-9]+)\.M([0-9]+)P[0-9]+Q([0-9]+)\.[^,]*(?:,S=([0-9]+),W=([0-9]+))?"
)
# The same with the sizes, over many names joined by newlines: re.split gives each
# line's five numbers, in a flat list of strings.
_SIZED_LINE = re.compile(
    r"^([0-9]+)\.M([0-9]+)P[0-9]+Q([0-9]+)\.[^,\n]*,S=([0-9]+),W=([0-9]+)$", re.MULTILINE
)
# The same over file names, a base's Maildir info (":2,...") after it, the base a group too.
_SIZED_FILENAME = re.compile(
    r"^(([0-9]+)\.M([0-9]+)P[0-9]+Q([0-9]+)\.[^,\n:]*,S=([0-9]+),W=([0-9]+))(?::[^\n]*)?$",
    re.MULTILINE,
)
# Names read by one re.split: the strings it makes (six a name) are let go after each.
_NAMES_AT_A_TIME = 2000


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


def _list_message_files(folder: Path) -> tuple[list[str], list[str]]:
    """The names of the files in new/ and in cur/, as listed (symlinks and directories left
    out: a link would let a Maildir read any file the server can)."""
    listed = []
    for subdir in ("new", "cur"):
        with os.scandir(folder / subdir) as entries:
            # Not interned: a view keeps its names as the index's bases and the ends of
            # names (FolderView), so these strings go with the load.
            listed.append([e.name for e in entries if e.is_file(follow_symlinks=False)])
    return listed[0], listed[1]


def _message_files(
    new_names: list[str], cur_names: list[str]
) -> tuple[dict[str, tuple[str, str]], set[str]]:
    """{filename base: (subdirectory, filename)} for the listed messages of new/ and cur/,
    and the bases of those in new/.

    A base found in both keeps its cur/ name (a reader moved it; cur/ is taken last).
    """
    files: dict[str, tuple[str, str]] = {}
    in_new: set[str] = set()
    for subdir, names in (("new", new_names), ("cur", cur_names)):
        # Dot files are tools' temporaries; a newline could not go in the index.
        found = {
            name.partition(":")[0]: (subdir, name)
            for name in names if name[0] != "." and "\n" not in name
        }  # fmt: skip
        if subdir == "new":
            in_new.update(found)
        else:
            in_new.difference_update(found)
        files.update(found)
    return files, in_new


class NamedColumns:
    """A rebuilt index's messages straight from the listing, when every name is in
    unique_name()'s form with Dovecot's sizes: bases, sizes and file names in delivery
    order, and which are in cur/ (1) or new/ (0), made column by column from the two
    name lists, with no dict of files and no key string per message."""

    def __init__(self, bases: list[str], sizes: Sequence[int], rfc822_sizes: Sequence[int],
                 filenames: list[str], in_cur: bytearray) -> None:
        self.bases = bases
        self.sizes = sizes
        self.rfc822_sizes = rfc822_sizes
        self.filenames = filenames
        self.in_cur = in_cur

    @classmethod
    def from_names(cls, new_names: list[str], cur_names: list[str]) -> NamedColumns | None:
        """The columns, or None when a name is not plainly in that form, is a dot file,
        or two messages have the same time to the microsecond (the general path,
        through a dict of files, then decides, as it does for every other folder)."""
        names = new_names + cur_names
        count = len(names)
        if not count:
            return None
        joined = "\n".join(names)
        if joined.count("\n") != count - 1 or joined[0] == "." or "\n." in joined:
            return None  # a newline in a name, or a dot file
        del joined
        bases: list[str] = []
        # The numbers in arrays, not lists: an int object a number was 28-32 bytes beside
        # its 8 (1.1 MiB at 10,000, alive with the names and the bases: the load's peak).
        times = array("q")
        sizes = array("q")
        rfc822_sizes = array("q")
        for start in range(0, count, _NAMES_AT_A_TIME):
            some = names[start : start + _NAMES_AT_A_TIME]
            parts = _split_whole(_SIZED_FILENAME, some, 7)
            if parts is None:
                return None
            seconds, microseconds = parts[2::7], parts[3::7]
            if max(map(len, seconds)) > 12 or max(map(len, microseconds)) > 6:
                return None
            bases += parts[1::7]
            # The time to the microsecond as one number: the order, with no key per
            # message kept beside it; the sequence number only matters on a tie.
            times.extend(_numbers(list(map(add, seconds, map(str.zfill, microseconds, repeat(6))))))
            sizes.extend(_numbers(parts[5::7]))
            rfc822_sizes.extend(_numbers(parts[6::7]))
        if any(map(int.__lt__, rfc822_sizes, sizes)):  # a W= below S= is not Dovecot's
            return None
        order = sorted(range(count), key=times.__getitem__)
        times = array("q", map(times.__getitem__, order))
        if any(map(eq, times, islice(times, 1, None))):
            return None  # a tie (or one name in new/ and cur/): ordered the general way
        del times
        in_cur = bytearray(map(len(new_names).__le__, order))
        return cls(list(map(bases.__getitem__, order)), array("q", map(sizes.__getitem__, order)),
                   array("q", map(rfc822_sizes.__getitem__, order)),
                   list(map(names.__getitem__, order)), in_cur)

    @classmethod
    def as_indexed(cls, index: Index, new_names: list[str], cur_names: list[str]
                   ) -> NamedColumns | None:  # fmt: skip
        """The files of ``index``'s messages in its order, when the names listed are
        exactly one file for each of them (a folder reopened unchanged, or with flags
        changed); None when a file is new, gone, in both new/ and cur/, or not a message
        (the general path, through a dict of files, then decides). No string is made
        a message beyond the listing's own, and no tuple: the dict of files, its base
        strings and tuples and the set of the index's bases were 2.5 MiB at 10,000."""
        bases = index.bases
        count = len(bases)
        if len(new_names) + len(cur_names) != count or len(index) != count:
            return None
        positions = dict(zip(bases, range(count), strict=True))
        filenames: list[str | None] = [None] * count
        in_cur = bytearray(count)
        for subdir, names in enumerate((new_names, cur_names)):
            found = list(map(positions.get,
                             map(itemgetter(0), map(str.partition, names, repeat(":")))))
            if None in found:
                return None  # a new file, a dot file, a name with a newline
            for position, name in zip(cast("list[int]", found), names, strict=True):
                filenames[position] = name
                in_cur[position] = subdir
        if None in filenames:
            return None  # a message without a file: one base was listed twice
        return cls(bases, index.sizes, index.rfc822_sizes, cast("list[str]", filenames),
                   in_cur)

    def new_positions(self) -> Iterator[int]:
        """The positions of the files in new/, in order."""
        position = self.in_cur.find(0)
        while position >= 0:
            yield position
            position = self.in_cur.find(0, position + 1)


def _named_in_full(bases: list[str]) -> tuple[list[str], list[int], list[int]] | None:
    """When every one of ``bases`` is in unique_name()'s form with Dovecot's sizes (what
    mailtalk and Dovecot deliver): their names, sizes and RFC822.SIZEs, in delivery
    order, all from the names: nothing to read or stat (such a message ends with a line
    end: mailtalk names no other). None if any is not, or not plainly.

    A folder of thousands is read a few thousand names at a time: one regular
    expression over them, numbers converted column by column, and the order found by
    sorting positions on a single number, with no object made per message (the tuples
    of a key per message cost more in garbage collection than in sorting)."""
    keys: list[str] = []
    sizes: list[int] = []
    rfc822_sizes: list[int] = []
    for start in range(0, len(bases), _NAMES_AT_A_TIME):
        some = bases[start : start + _NAMES_AT_A_TIME]
        parts = _split_whole(_SIZED_LINE, some, 6)
        if parts is None:
            return None
        seconds, microseconds, sequences = parts[1::6], parts[2::6], parts[3::6]
        if (max(map(len, seconds)) > 12 or max(map(len, microseconds)) > 6
                or max(map(len, sequences)) > 10):
            return None
        # _delivery_order's key (seconds, microseconds, sequence, base) as one string of
        # the three numbers' digits padded to fixed widths, the base deciding only between
        # equal keys: made by map()s, no number parsed and no Python step per name.
        keys += map(add, map(add, map(str.zfill, seconds, repeat(12)),
                             map(str.zfill, microseconds, repeat(6))),
                    map(str.zfill, sequences, repeat(10)))
        sizes += _numbers(parts[4::6])
        rfc822_sizes += _numbers(parts[5::6])
    if any(map(int.__lt__, rfc822_sizes, sizes)):  # a W= below S= is not Dovecot's
        return None
    count = len(bases)
    if len(set(keys)) == count:
        order = sorted(range(count), key=keys.__getitem__)
    else:
        order = sorted(range(count), key=bases.__getitem__)
        order.sort(key=keys.__getitem__)  # stable: equal keys stay in the order of their names
    return (list(map(bases.__getitem__, order)), list(map(sizes.__getitem__, order)),
            list(map(rfc822_sizes.__getitem__, order)))


def _split_whole(pattern: re.Pattern[str], names: list[str], width: int) -> list[str] | None:
    """``pattern``'s re.split of ``names`` joined by newlines: ``width`` strings a name
    (what lies before it, then its groups) and one after; None unless each name matched
    whole."""
    parts = pattern.split("\n".join(names))
    if len(parts) != width * len(names) + 1:
        return None
    between = parts[0::width]  # "" before the first line, "\n" between lines, "" after
    if between[0] or between[-1] or between[1:-1].count("\n") != len(names) - 1:
        return None
    return parts


def _numbers(digits: list[str]) -> list[int]:
    """Strings of ASCII digits as numbers: parsed together, a third cheaper than int()
    on each (json is imported when first used: a cold index of delivered names)."""
    import json

    try:
        return json.loads("[" + ",".join(digits) + "]")  # type: ignore[no-any-return]
    except ValueError:  # a leading zero (not JSON)
        return list(map(int, digits))


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
        self._files: dict[str, tuple[str, str]] | None = None
        # A rebuilt index's files as columns beside its own (see NamedColumns), until
        # something asks for them by base: then the dict is made from them.
        self._named: NamedColumns | None = None
        self._new_positions: dict[str, int] = {}  # base in new/ -> position in _named
        self.in_new: set[str] = set()  # the bases of files found in new/
        self.index = Index(0, 1, 1)
        self.expunged: list[tuple[int, int]] = []  # (modseq, uid), for QRESYNC
        self._first_new_uid = 0  # the lowest UID given to a file found in new/

    @property
    def files(self) -> dict[str, tuple[str, str]]:
        """{filename base: (subdirectory, filename)} for the folder's messages."""
        if self._files is None:
            named, self._named = self._named, None
            self._files = {} if named is None else dict(zip(
                named.bases,
                zip(map(("new", "cur").__getitem__, named.in_cur), named.filenames,
                    strict=True),
                strict=True))
        return self._files

    def location(self, base: str) -> tuple[str, str] | None:
        """(subdirectory, filename) of the message ``base``; None if it has no file."""
        position = self._new_positions.get(base, -1) if self._named is not None else -1
        if position >= 0:
            named = cast("NamedColumns", self._named)
            return ("cur" if named.in_cur[position] else "new"), named.filenames[position]
        return self.files.get(base)

    def moved_to_cur(self, base: str, filename: str) -> None:
        """The message ``base`` of new/ was renamed to ``filename`` in cur/."""
        position = self._new_positions.get(base, -1) if self._named is not None else -1
        if position >= 0:
            named = cast("NamedColumns", self._named)
            named.filenames[position] = filename
            named.in_cur[position] = 1
        else:
            self.files[base] = ("cur", filename)
        self.in_new.discard(base)

    def file_columns(self) -> tuple[list[str], bytearray] | None:
        """The file names and in-cur/ flags (1 or 0) of the index's messages, position by
        position, when kept as columns (a rebuilt index, nothing added or removed since);
        None: use :attr:`files`. Copies: the caller may keep them."""
        named, index = self._named, self.index
        if named is None or index.bases is not named.bases or len(index) != len(named.bases):
            return None
        return named.filenames[:], named.in_cur[:]

    def load(self) -> None:
        new_names, cur_names = _list_message_files(self.folder)
        index = self._read()
        if index is None:
            self.rebuilt = True
            uidvalidity = _UNSAVED_REBUILDS.get(self.folder) or _allocate_uidvalidity(
                self.user_root
            )
            self.index = Index(uidvalidity, 1, 1)
            named = NamedColumns.from_names(new_names, cur_names)
            if named is not None:
                self._index_named(named)
                self.index.first_recent_uid = self._first_new_uid or self.index.uidnext
                self.dirty = True
                return
        else:
            self.index = index
            named = NamedColumns.as_indexed(index, new_names, cur_names)
            if named is not None:  # the files are the index's, one each: nothing to change
                self._take_named(named)
                return
        self._files, self.in_new = _message_files(new_names, cur_names)
        del new_names, cur_names
        gone = self.index.remove_missing(self.files)
        if gone:
            modseq = self.index.next_modseq()  # an expunge is a change (RFC 7162 3.1.2)
            self.expunged.extend((modseq, uid) for uid in gone)
            self.dirty = True
        self._index_new_files()
        if self.rebuilt:
            # Files still in new/ have not been seen by any session: those stay recent
            # (every file of a rebuilt index is a new one to _index_new_files).
            self.index.first_recent_uid = self._first_new_uid or self.index.uidnext
            self.dirty = True

    def _index_named(self, named: NamedColumns) -> None:
        """Index a rebuilt folder's messages from their names' columns: its columns are
        the index's bases, taken as they are (so :meth:`file_columns` can tell)."""
        count = len(named.bases)
        self._append_columns(named.bases, named.sizes, named.rfc822_sizes,
                             [DATE_NOT_READ] * count, [False] * count)
        self.index.bases = named.bases
        self._take_named(named)
        if self._new_positions:
            self._first_new_uid = self.index.uids[min(self._new_positions.values())]

    def _take_named(self, named: NamedColumns) -> None:
        """The folder's files are ``named``'s, kept as columns (see :attr:`files`)."""
        self._named = named
        bases = named.bases
        self._new_positions = {bases[p]: p for p in named.new_positions()}
        self.in_new = set(self._new_positions)

    def _read(self) -> Index | None:
        path = self.folder / INDEX_NAME
        try:
            with open(path, "rb") as file:
                cached = cached_index(file)
                if cached is not None:
                    return cached
                file.seek(0)
                data = file.read()
        except FileNotFoundError:
            return None
        try:
            return parse_index(data)
        except ValueError as error:
            log.warning("%s is corrupt (%s): rebuilding it with a new UIDVALIDITY", path, error)
            # Kept for a post-mortem; its UIDs must never be used again.
            os.replace(path, self.folder / _INDEX_CORRUPT_NAME)
            return None

    def _index_new_files(self) -> None:
        index = self.index
        files = self.files
        if len(index):
            known = set(index.bases)
            new = [base for base in files if base not in known]
        else:
            new = list(files)
        if not new:
            return
        named = _named_in_full(new)
        if named is not None:
            bases, sizes, rfc822_sizes = named
            dates = [DATE_NOT_READ] * len(bases)
            unterminated = [False] * len(bases)
        else:
            # (seconds, microseconds, sequence, base, size, rfc822 size, date,
            # unterminated): _delivery_order's key first, so they sort in delivery order.
            unindexed = self._read_new_files(new)
            if not unindexed:
                return
            unindexed.sort()
            _, _, _, bases, sizes, rfc822_sizes, dates, unterminated = map(
                list, zip(*unindexed, strict=True)
            )
        first = self._append_columns(bases, sizes, rfc822_sizes, dates, unterminated)
        if self.rebuilt and self.in_new:
            in_new = self.in_new
            found = list(map(in_new.__contains__, bases))
            self._first_new_uid = first + found.index(True) if True in found else 0
        self.dirty = True

    def _append_columns(self, bases: list[str], sizes: Sequence[int], rfc822_sizes: Sequence[int],
                        dates: list[int], unterminated: list[bool]) -> int:
        """add_record() for each, column by column: the next UID and the next MODSEQ for
        each message, in delivery order. Returns the first UID given."""
        index = self.index
        if index.uidnext + len(bases) > MAX_UID + 1:
            self._renumber()
            index = self.index
        first, count = index.uidnext, len(bases)
        index.uids.extend(range(first, first + count))
        index.modseqs.extend(range(index.highestmodseq + 1, index.highestmodseq + 1 + count))
        index.bases.extend(bases)
        index.sizes.extend(sizes)
        index.rfc822_sizes.extend(rfc822_sizes)
        index.dates.extend(dates)
        index.unterminated.extend(unterminated)
        index.keywords.extend([NO_KEYWORDS] * count)
        index.uidnext, index.highestmodseq = first + count, index.highestmodseq + count
        index.forget_positions()
        return first

    def _read_new_files(
        self, bases: list[str]
    ) -> list[tuple[int, int, int, str, int, int, int, bool]]:
        """(seconds, microseconds, sequence, base, size, RFC822.SIZE, date, unterminated)
        of each new file: from its name where it tells, else from the file."""
        entries = []
        directories: dict[str, int] = {}
        canonical = _CANONICAL_NAME.fullmatch
        try:
            for base in bases:
                subdir, filename = self.files[base]
                dir_fd = directories.get(subdir)
                if dir_fd is None:
                    dir_fd = directories[subdir] = os.open(
                        self.folder / subdir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
                    )
                try:
                    entries.append(self._read_new_file(base, filename, dir_fd, canonical(base)))
                except FileNotFoundError:
                    continue  # renamed by another reader meanwhile: the next load sees it
        finally:
            for dir_fd in directories.values():
                os.close(dir_fd)
        return entries

    @staticmethod
    def _read_new_file(
        base: str, filename: str, dir_fd: int, fast: re.Match[str] | None
    ) -> tuple[int, int, int, str, int, int, int, bool]:
        """A new file not in unique_name()'s form with sizes: its sizes from Dovecot's
        ,S=/,W= if the name has them, else read from the file (which gives its date too);
        its order from the name, or (no time in the name) the file's mtime."""
        if fast is None:
            named = sizes_from_name(base)
        elif fast[4] is not None and int(fast[5]) >= int(fast[4]):
            named = int(fast[4]), int(fast[5])
        else:
            named = None
        internaldate, mtime_ns = DATE_NOT_READ, 0
        if named is None:
            status, size, rfc822_size, unterminated = measure(dir_fd, filename)
            internaldate, mtime_ns = int(status.st_mtime), status.st_mtime_ns
        else:
            (size, rfc822_size), unterminated = named, False
            if _UNIQUE_NAME.match(base) is None:  # ordered by its mtime
                status = os.stat(filename, dir_fd=dir_fd)
                internaldate, mtime_ns = int(status.st_mtime), status.st_mtime_ns
        if fast is not None:
            order = (int(fast[1]), int(fast[2]), int(fast[3]), base)
        else:
            order = _delivery_order(base, mtime_ns)
        return (*order, size, rfc822_size, internaldate, unterminated)

    def _renumber(self) -> None:
        """UIDs ran out: RFC 3501 2.3.1.1 says start again under a new UIDVALIDITY."""
        _ = self.files  # the columns of named files, if any, follow the old index no more
        old = list(self.index.records())
        self.index = Index(_allocate_uidvalidity(self.user_root), 1, 1)
        for record in old:
            self.add_record(record)
        self.index.first_recent_uid = self.index.uidnext
        self.rebuilt = True

    def add_record(self, record: Record) -> int:
        """Index (a copy of) ``record`` under the next UID; returns the UID."""
        index = self.index
        uid = index.uidnext
        index.uidnext += 1
        index.append(uid, record.base, record.size, record.rfc822_size, record.internaldate,
                     record.keywords, record.unterminated, index.next_modseq())
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
        uid = self.index.remove(base)
        if uid:
            self.expunged.append((self.index.next_modseq(), uid))
            self.dirty = True

    def save(self) -> None:
        """Write the index if it changed; on a full disk, only if a change is ``essential``."""
        if not self.dirty:
            return
        if self.expunged:
            record_expunges(self.folder, self.index.uidvalidity, self.expunged,
                            self.expunged[0][0])
            self.expunged = []
        digest = new_digest()
        tmp_path = self.folder / _INDEX_TMP_NAME
        try:
            replace_file(self.folder / INDEX_NAME, encoded_chunks(self.index, digest), tmp_path)
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
        remember(digest.digest(), self.index)  # the next session's load parses nothing


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
