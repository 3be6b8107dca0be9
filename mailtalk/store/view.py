"""A session's view of a folder's messages, kept in columns: :class:`FolderView`.

A :class:`~mailtalk.store.mailbox.Mailbox` holds what its last refresh saw of every
message. Kept as one Python object per message (with its own strings and numbers) that
costs some 700 bytes a message, per session; here it is one array per field (UIDs,
sizes, dates, MODSEQs, an index into a table of the few distinct flag sets), the
file names as each message's base (shared with the folder's index) and an index into a
table of the few distinct ends of names (``:2,S``), and no object per message at all:
a :class:`MessageInfo` is made only when a caller asks for that message, and the
numbers a command does not ask for are never turned into objects.

The view is never changed once made: a flag change or an expunge makes a new one
(the arrays are copied, which costs microseconds), so a :class:`MessageList` taken
before stays what it was, as a list of immutable messages would.

**INTERNALDATE** may not be known: a cold index reads no file (see
:mod:`mailtalk.store.index`). :meth:`FolderView.internaldate` then reads the file's
mtime once and keeps it in the view (a column shared by the views made from it, so a
session asks the disk once per message). Stdlib only.
"""

from __future__ import annotations

import bisect
import hashlib
import os
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from itertools import repeat
from operator import add, itemgetter
from pathlib import Path
from typing import cast, overload

from mailtalk.store.flags import RECENT, cached_info_flags
from mailtalk.store.uidlist import Index, select

_NEW, _CUR = 0, 1
# A view's per-message columns, and those of them it takes from its folder's index.
_COLUMNS = ("uids", "bases", "tail_ids", "subdirs", "flag_ids", "sizes", "rfc822_sizes",
            "dates", "modseqs", "unterminated")
_FROM_INDEX = ("uids", "bases", "sizes", "rfc822_sizes", "dates", "modseqs", "unterminated")
_RECENT_ONLY = frozenset({RECENT})


class MessageInfo:
    """One message as a session sees it.

    ``flags`` are IMAP flags, keywords included, and \\Recent if this session
    claimed it. ``size`` is the stored size (LF line endings), ``rfc822_size``
    the size with CRLF line endings: IMAP RFC822.SIZE; ``pop3_size`` adds the CRLF
    that POP3 puts after a message without a final line end (LIST, STAT, RETR).
    ``modseq`` is its CONDSTORE mod-sequence (RFC 7162) from the folder's index.
    ``location`` is where the file was at the last refresh (``path``, the same
    as a Path); another session changing its flags renames it, which
    :meth:`Mailbox.open_message <mailtalk.store.mailbox.Mailbox.open_message>` follows.
    ``internaldate_seconds`` reads the file's mtime the first time it is asked for,
    if the index does not have it yet.
    """

    __slots__ = ("_date", "_view", "base", "flags", "location", "modseq", "rfc822_size",
                 "size", "uid", "unterminated")

    def __init__(
        self,
        uid: int,
        base: str,
        location: str,
        flags: frozenset[str],
        size: int,
        rfc822_size: int,
        internaldate_seconds: int,
        unterminated: bool = False,
        modseq: int = 1,
        view: FolderView | None = None,
    ) -> None:
        self.uid = uid
        self.base = base
        self.location = location
        self.flags = flags
        self.size = size
        self.rfc822_size = rfc822_size
        self._date = internaldate_seconds
        self.unterminated = unterminated
        self.modseq = modseq
        self._view = view

    def __repr__(self) -> str:
        return (f"MessageInfo(uid={self.uid}, base={self.base!r}, flags={sorted(self.flags)}, "
                f"size={self.size}, rfc822_size={self.rfc822_size}, modseq={self.modseq})")

    def _key(self) -> tuple[object, ...]:
        return (self.uid, self.base, self.location, self.flags, self.size, self.rfc822_size,
                self.unterminated, self.modseq)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MessageInfo):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    @property
    def internaldate_seconds(self) -> int:
        """INTERNALDATE in Unix seconds (the file's mtime, read now if not known yet)."""
        if self._date < 0:
            if self._view is not None:
                self._date = self._view.internaldate_of(self.uid, self.location)
            else:
                self._date = read_mtime(self.location)
        return self._date

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
        """The POP3 UIDL: the filename base (see :func:`uidl_of`)."""
        return uidl_of(self.base)


def uidl_of(base: str) -> str:
    """The POP3 UIDL of a message: its filename base, or — if that is not 1-70
    printable ASCII characters, as RFC 1939 requires — the SHA-1 of it in hex,
    equally stable."""
    if 1 <= len(base) <= 70 and base.isascii() and base.isprintable() and " " not in base:
        return base
    return hashlib.sha1(base.encode("utf-8", "surrogateescape")).hexdigest()


def read_mtime(location: str) -> int:
    """A message file's INTERNALDATE: its mtime; 0 if it is gone (expunged meanwhile)."""
    try:
        return int(os.stat(location).st_mtime)
    except OSError:
        return 0


class FolderView:
    """The messages of one folder as one refresh saw them, in UID order (position + 1 is
    the sequence number), one column per field. Made by
    :meth:`Mailbox.refresh <mailtalk.store.mailbox.Mailbox.refresh>`; never changed after
    (``with_*`` methods make changed copies), except for dates read late.
    """

    __slots__ = ("bases", "dates", "directories", "flag_ids", "flag_sets", "modseqs",
                 "rfc822_sizes", "sizes", "subdirs", "tail_ids", "tails", "uids",
                 "unterminated")

    def __init__(self, folder: str) -> None:
        self.directories = (f"{folder}/new/", f"{folder}/cur/")
        self.uids = array("I")
        self.bases: list[str] = []
        # A file's name in new/ or cur/ is its base and what follows it, its Maildir info
        # (":2,S", or "" in new/): that end as a number into ``tails``, the few distinct
        # ones. Not a string a message: 1.4 MiB at 10,000 messages, with the growth of
        # the interned-string table that shared them between sessions.
        self.tail_ids = array("I")
        self.tails: list[str] = []
        self.subdirs = bytearray()  # _NEW or _CUR
        self.flag_ids = array("I")  # into flag_sets
        self.flag_sets: list[frozenset[str]] = []
        self.sizes = array("q")
        self.rfc822_sizes = array("q")
        self.dates = array("q")  # DATE_NOT_READ until read
        self.modseqs = array("q")
        self.unterminated = bytearray()

    def __len__(self) -> int:
        return len(self.uids)

    # -- building

    def flag_id(self, flags: frozenset[str], table: dict[frozenset[str], int]) -> int:
        """The number of ``flags`` in this view's table of flag sets (``table`` maps them)."""
        number = table.get(flags)
        if number is None:
            number = table[flags] = len(self.flag_sets)
            self.flag_sets.append(flags)
        return number

    def tail_id(self, tail: str, table: dict[str, int]) -> int:
        """The number of ``tail`` in this view's table of names' ends (``table`` maps them)."""
        number = table.get(tail)
        if number is None:
            number = table[tail] = len(self.tails)
            self.tails.append(tail)
        return number

    def _set_filename(self, position: int, filename: str, table: dict[str, int]) -> None:
        """The message at ``position`` is now ``filename`` (its base followed by its info)."""
        self.tail_ids[position] = self.tail_id(filename[len(self.bases[position]):], table)

    def _copy(self, positions: Sequence[int] | None = None) -> FolderView:
        """A copy of this view, only the messages at ``positions`` if given."""
        view = FolderView.__new__(FolderView)
        view.directories = self.directories
        view.flag_sets = list(self.flag_sets)
        view.tails = list(self.tails)
        for name in _COLUMNS:
            column = getattr(self, name)
            if positions is not None:
                setattr(view, name, select(column, positions))
            elif name == "dates":
                view.dates = column  # shared: dates read later are for both
            else:
                setattr(view, name, column[:])
        return view

    def without(self, uids: set[int]) -> FolderView:
        """A copy without the messages ``uids``."""
        return self._copy([p for p, uid in enumerate(self.uids) if uid not in uids])

    def with_changes(self, changes: dict[int, tuple[str, frozenset[str], int]]) -> FolderView:
        """A copy where each position in ``changes`` has (filename in cur/, flags, MODSEQ)."""
        view = self._copy()
        table = {flags: number for number, flags in enumerate(view.flag_sets)}
        tails = {tail: number for number, tail in enumerate(view.tails)}
        for position, (filename, flags, modseq) in changes.items():
            view._set_filename(position, filename, tails)
            view.subdirs[position] = _CUR
            view.flag_ids[position] = view.flag_id(flags, table)
            view.modseqs[position] = modseq
        return view

    def with_location(self, position: int, path: str) -> FolderView:
        """A copy where the message at ``position`` is at ``path`` (found renamed)."""
        view = self._copy()
        directory, _, filename = path.rpartition("/")
        view._set_filename(position, filename, {t: n for n, t in enumerate(view.tails)})
        view.subdirs[position] = _NEW if directory.endswith("/new") else _CUR
        return view

    @classmethod
    def build(
        cls,
        folder: str,
        index: Index,
        files: dict[str, tuple[str, str]] | tuple[list[str], bytearray],
        recent: set[int],
        previous: FolderView | None = None,
    ) -> FolderView:
        """The view of the messages of ``index`` whose files are in ``files`` (base ->
        (subdir, filename); or, for every message, position by position, its file name
        and 1 if in cur/ else 0: the view takes the flags as they are), with \\Recent
        for the UIDs in ``recent``. The flag sets are numbered as in ``previous``, so
        that equal flags have equal numbers in both.
        The view may take ``index``'s columns as they are: the caller changes it no more."""
        view = cls(folder)
        table: dict[frozenset[str], int] = {}
        if previous is not None:
            view.flag_sets = list(previous.flag_sets)
            table = {flags: number for number, flags in enumerate(view.flag_sets)}
        index.compact()
        keywords: Sequence[frozenset[str]] = index.keywords
        if isinstance(files, tuple):  # every message's file, in the index's order
            for name in _FROM_INDEX:
                setattr(view, name, getattr(index, name))
            filenames, view.subdirs = files
            return view._with_names(filenames, keywords, recent, table)
        entries = list(map(files.get, index.bases))
        if None in entries:  # files gone since the index was read: not in the view
            keep = [p for p, entry in enumerate(entries) if entry is not None]
            for name in _FROM_INDEX:
                setattr(view, name, select(getattr(index, name), keep))
            keywords = select(index.keywords, keep)
            entries = [entries[p] for p in keep]
        else:  # the index's own columns: it is the caller's copy, not changed after
            for name in _FROM_INDEX:
                setattr(view, name, getattr(index, name))
        found = cast("list[tuple[str, str]]", entries)  # no None left in it
        # Column by column with map(): no Python step per message.
        view.subdirs = bytearray(map("cur".__eq__, map(itemgetter(0), found)))  # 1: _CUR
        return view._with_names(list(map(itemgetter(1), found)), keywords, recent, table)

    def _with_names(self, filenames: list[str], keywords: Sequence[frozenset[str]],
                    recent: set[int], table: dict[frozenset[str], int]) -> FolderView:
        """This view, with each message's file name (its base, which the view has, and
        its end, numbered) and its flag sets numbered (``table``: the numbers of the sets
        so far)."""
        # Each name's end past its base: ":" and the Maildir info, or "" (map()s: no
        # Python step per message). The flags are in the info: the number of each end's
        # flag set, found once per distinct end; then keywords and \\Recent where they are.
        # Each end numbered as it is made (a new one gets the next number, the table's
        # length then), so no list of 10,000 ends is made first (0.5 MiB).
        ends = map(str.__getitem__, filenames, map(slice, map(len, self.bases), repeat(None)))
        numbers: dict[str, int] = {}
        self.tail_ids = array("I", map(numbers.setdefault, ends, map(len, repeat(numbers))))
        self.tails = list(numbers)
        by_tail = [self.flag_id(cached_info_flags(tail[1:]), table) for tail in self.tails]
        flag_ids = array("I", map(by_tail.__getitem__, self.tail_ids))
        special = [p for p, words in enumerate(keywords) if words] if any(keywords) else []
        if recent:
            special.extend(p for p in map(self.position, recent) if p >= 0)
        for position in special:
            flags = cached_info_flags(self.tails[self.tail_ids[position]][1:]) | keywords[position]
            if self.uids[position] in recent:
                flags = flags | _RECENT_ONLY
            flag_ids[position] = self.flag_id(flags, table)
        self.flag_ids = flag_ids
        return self

    def differences(self, new: FolderView) -> tuple[list[int], list[int], list[int]]:
        """What changed from this view to ``new`` (built with this one as ``previous``):
        the UIDs added, the positions (here) of the messages gone, the UIDs whose flags
        changed."""
        old_uids, new_uids = self.uids, new.uids
        if old_uids == new_uids:
            if self.flag_ids == new.flag_ids:
                return [], [], []
            old_ids, new_ids = self.flag_ids, new.flag_ids
            return [], [], [uid for uid, a, b in zip(new_uids, old_ids, new_ids, strict=True)
                            if a != b]
        if not old_uids:
            return list(new_uids), [], []
        added: list[int] = []
        gone: list[int] = []
        changed: list[int] = []
        old_flags, new_flags = self.flag_sets, new.flag_sets
        old_ids, new_ids = self.flag_ids, new.flag_ids
        i = j = 0
        old_count, new_count = len(old_uids), len(new_uids)
        while i < old_count and j < new_count:
            old_uid, new_uid = old_uids[i], new_uids[j]
            if old_uid == new_uid:
                if old_flags[old_ids[i]] != new_flags[new_ids[j]]:
                    changed.append(new_uid)
                i += 1
                j += 1
            elif old_uid < new_uid:
                gone.append(i)
                i += 1
            else:
                added.append(new_uid)
                j += 1
        gone.extend(range(i, old_count))
        added.extend(new_uids[j:])
        return added, gone, changed

    # -- reading

    def position(self, uid: int) -> int:
        """The position of ``uid``; -1 if the view has no such message."""
        uids = self.uids
        position = bisect.bisect_left(uids, uid)
        return position if position < len(uids) and uids[position] == uid else -1

    def filename(self, position: int) -> str:
        """The name in new/ or cur/ of the message at ``position``."""
        return self.bases[position] + self.tails[self.tail_ids[position]]

    def filenames(self) -> Iterator[str]:
        """Every message's name in new/ or cur/, in order (made as they are asked for)."""
        return map(add, self.bases, map(self.tails.__getitem__, self.tail_ids))

    def location(self, position: int) -> str:
        return (self.directories[self.subdirs[position]] + self.bases[position]
                + self.tails[self.tail_ids[position]])

    def flags(self, position: int) -> frozenset[str]:
        return self.flag_sets[self.flag_ids[position]]

    def internaldate(self, position: int) -> int:
        """INTERNALDATE of the message at ``position``, its file's mtime read if not known."""
        date = self.dates[position]
        if date < 0:
            date = self.dates[position] = read_mtime(self.location(position))
        return date

    def internaldate_of(self, uid: int, location: str) -> int:
        """:meth:`internaldate` by UID; for a message no longer in the view, its file's."""
        position = self.position(uid)
        return self.internaldate(position) if position >= 0 else read_mtime(location)

    def info(self, position: int) -> MessageInfo:
        """The message at ``position`` as a :class:`MessageInfo`."""
        return MessageInfo(
            self.uids[position],
            self.bases[position],
            self.location(position),
            self.flag_sets[self.flag_ids[position]],
            self.sizes[position],
            self.rfc822_sizes[position],
            self.dates[position],
            bool(self.unterminated[position]),
            self.modseqs[position],
            self,
        )

    def keywords(self) -> set[str]:
        """The keywords some message of the view has."""
        flag_sets = self.flag_sets
        found: set[str] = set()
        for number in set(self.flag_ids):
            found.update(flag for flag in flag_sets[number] if not flag.startswith("\\"))
        return found

    def count_with(self, flag: str) -> int:
        """How many messages have ``flag``."""
        flag_sets = self.flag_sets
        return sum(count for number, count in Counter(self.flag_ids).items()
                   if flag in flag_sets[number])

    def first_without(self, flag: str) -> int:
        """The position of the first message without ``flag``; -1 if all have it."""
        lacking = {number for number, flags in enumerate(self.flag_sets) if flag not in flags}
        if lacking:
            for position, number in enumerate(self.flag_ids):
                if number in lacking:
                    return position
        return -1

    def pop3_sizes(self) -> array[int]:
        """Every message's POP3 size (RFC822.SIZE, and the CRLF POP3 adds to a message
        without a final line end), in order: a column, 8 bytes a message, where a list
        of ints took 40 (0.4 MiB a POP3 session at 10,000 messages)."""
        sizes = self.rfc822_sizes[:]
        if any(self.unterminated):
            for position, unterminated in enumerate(self.unterminated):
                if unterminated:
                    sizes[position] += 2
        return sizes


class MessageList(Sequence[MessageInfo]):
    """The messages of a :class:`FolderView` as a sequence of :class:`MessageInfo`, each
    made when it is asked for. Compares equal to a list of the same messages."""

    __slots__ = ("view",)

    def __init__(self, view: FolderView) -> None:
        self.view = view

    def __len__(self) -> int:
        return len(self.view)

    @overload
    def __getitem__(self, index: int) -> MessageInfo: ...

    @overload
    def __getitem__(self, index: slice) -> list[MessageInfo]: ...

    def __getitem__(self, index: int | slice) -> MessageInfo | list[MessageInfo]:
        if isinstance(index, slice):
            return [self.view.info(p) for p in range(*index.indices(len(self.view)))]
        count = len(self.view)
        if index < 0:
            index += count
        if not 0 <= index < count:
            raise IndexError("message index out of range")
        return self.view.info(index)

    def __iter__(self) -> Iterator[MessageInfo]:
        info = self.view.info
        return (info(position) for position in range(len(self.view)))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, MessageList | list | tuple):
            return list(self) == list(other)
        return NotImplemented

    def __hash__(self) -> int:  # pragma: no cover - a sequence that compares as a list
        raise TypeError("unhashable type: 'MessageList'")

    def __repr__(self) -> str:
        return f"MessageList({len(self)} messages)"
