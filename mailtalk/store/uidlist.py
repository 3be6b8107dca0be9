"""A folder's index in memory, one column per field, and as the text of ``mailtalk-uidlist``.

The file's format, and how it is locked, merged with the folder's files and
rebuilt, are described in :mod:`mailtalk.store.index`; this module holds what a
parsed index is. An :class:`Index` keeps its messages in UID order as arrays (UIDs,
sizes, dates, MODSEQs), a list of filename bases and a list of keyword sets (the
few distinct ones shared): some 60 bytes a message beside its name, where an
object per message and one per number took five times as much. A :class:`Record`
is made only for a caller that asks for one message.

Parsed indexes are cached by a digest of their bytes (:data:`_INDEX_CACHE`): a
folder reopened unchanged costs a read, a digest and a copy of the columns, never a
stale answer; an index just written is put there too, so the next session parses
nothing. The index is written a batch of lines at a time, never whole in memory.
Stdlib only.
"""

from __future__ import annotations

import bisect
import functools
import threading
from array import array
from collections.abc import Container, Iterable, Iterator
from typing import Any, BinaryIO, NamedTuple

INDEX_VERSION = "1"
_INDEX_MAGIC = "mailtalk-uidlist"

# UIDs and UIDVALIDITY are 32-bit non-zero numbers (RFC 3501 nz-number).
MAX_UID = 2**32 - 1

# The date of a message not read yet (no T in its line): the file's mtime, read when asked.
DATE_NOT_READ = -1

NO_KEYWORDS: frozenset[str] = frozenset()


class Record(NamedTuple):
    """One message line of the index, made from the columns when asked for."""

    uid: int
    base: str
    size: int
    rfc822_size: int
    internaldate: int  # DATE_NOT_READ: the file's mtime, read when asked for
    keywords: frozenset[str]
    unterminated: bool = False  # no final line end (index token "U")
    modseq: int = 1  # RFC 7162 MODSEQ (index token "M")


def select(column: Any, positions: Iterable[int]) -> Any:
    """A new column of the same kind (an array, a bytearray or a list) with only the
    entries at ``positions``."""
    if isinstance(column, array):
        return array(column.typecode, [column[p] for p in positions])
    if isinstance(column, bytearray):
        return bytearray(column[p] for p in positions)
    return [column[p] for p in positions]


# An Index's per-message columns, all in UID order.
INDEX_COLUMNS = ("uids", "bases", "sizes", "rfc822_sizes", "dates", "modseqs", "unterminated",
                 "keywords")


class Index:
    """The index of one folder: its header fields and its messages, in UID order, in
    columns. Messages removed are dropped from the columns at the next read of them."""

    __slots__ = ("_positions", "_removed", "bases", "dates", "first_recent_uid",
                 "highestmodseq", "keywords", "modseqs", "rfc822_sizes", "sizes", "uidnext",
                 "uids", "uidvalidity", "unterminated")

    def __init__(
        self, uidvalidity: int, uidnext: int, first_recent_uid: int, highestmodseq: int = 1
    ) -> None:
        self.uidvalidity = uidvalidity
        self.uidnext = uidnext
        self.first_recent_uid = first_recent_uid
        self.highestmodseq = highestmodseq
        self.uids = array("I")
        self.bases: list[str] = []
        self.sizes = array("q")
        self.rfc822_sizes = array("q")
        self.dates = array("q")
        self.modseqs = array("q")
        self.unterminated = bytearray()
        self.keywords: list[frozenset[str]] = []
        self._positions: dict[str, int] | None = None  # base -> position, made when needed
        self._removed: set[int] = set()  # positions removed, still in the columns

    def __repr__(self) -> str:
        return (f"Index(V{self.uidvalidity} N{self.uidnext} R{self.first_recent_uid} "
                f"M{self.highestmodseq}, {len(self)} messages)")

    def __len__(self) -> int:
        return len(self.uids) - len(self._removed)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Index):
            return NotImplemented
        return (
            (self.uidvalidity, self.uidnext, self.first_recent_uid, self.highestmodseq)
            == (other.uidvalidity, other.uidnext, other.first_recent_uid, other.highestmodseq)
            and list(self.records()) == list(other.records())
        )

    __hash__ = None  # type: ignore[assignment]  # changed in place

    def next_modseq(self) -> int:
        """Count a change to the folder: the new HIGHESTMODSEQ, for the changed message."""
        self.highestmodseq += 1
        return self.highestmodseq

    # -- changing

    def append(
        self,
        uid: int,
        base: str,
        size: int,
        rfc822_size: int,
        internaldate: int,
        keywords: frozenset[str],
        unterminated: bool,
        modseq: int,
    ) -> None:
        """Add a message after the others (its UID above theirs)."""
        if self._positions is not None:
            self._positions[base] = len(self.uids)
        self.uids.append(uid)
        self.bases.append(base)
        self.sizes.append(size)
        self.rfc822_sizes.append(rfc822_size)
        self.dates.append(internaldate)
        self.modseqs.append(modseq)
        self.unterminated.append(unterminated)
        self.keywords.append(keywords)

    def forget_positions(self) -> None:
        """The columns were extended directly: positions are made again when needed."""
        self._positions = None

    def set_keywords(self, position: int, keywords: frozenset[str], modseq: int) -> None:
        """The message at ``position`` now has ``keywords``, changed at ``modseq``."""
        self.keywords[position] = keywords
        self.modseqs[position] = modseq

    def remove(self, base: str) -> int:
        """Drop the message ``base``; its UID, or 0 if the index did not have it."""
        position = self.position(base)
        if position < 0:
            return 0
        self._removed.add(position)
        assert self._positions is not None
        del self._positions[base]
        return self.uids[position]

    def remove_missing(self, present: Container[str]) -> list[int]:
        """Drop the messages whose base is not a key of ``present``; their UIDs."""
        self.compact()
        gone = [position for position, base in enumerate(self.bases) if base not in present]
        if gone:
            self._removed.update(gone)
            self._positions = None
        return [self.uids[position] for position in gone]

    def compact(self) -> None:
        """Drop the columns' entries of removed messages (positions change)."""
        if not self._removed:
            return
        keep = [p for p in range(len(self.uids)) if p not in self._removed]
        for name in INDEX_COLUMNS:
            setattr(self, name, select(getattr(self, name), keep))
        self._removed = set()
        self._positions = None

    def copy(self) -> Index:
        """An independent copy (the columns are copied; names and keyword sets shared)."""
        self.compact()
        index = Index(self.uidvalidity, self.uidnext, self.first_recent_uid, self.highestmodseq)
        for name in INDEX_COLUMNS:
            setattr(index, name, getattr(self, name)[:])
        return index

    # -- reading

    def position(self, base: str) -> int:
        """Where the message ``base`` is in the columns; -1 if the index does not have it."""
        positions = self._positions
        if positions is None:
            self.compact()
            positions = self._positions = {base: p for p, base in enumerate(self.bases)}
        return positions.get(base, -1)

    def __contains__(self, base: object) -> bool:
        return isinstance(base, str) and self.position(base) >= 0

    def record(self, position: int) -> Record:
        return Record(
            self.uids[position], self.bases[position], self.sizes[position],
            self.rfc822_sizes[position], self.dates[position], self.keywords[position],
            bool(self.unterminated[position]), self.modseqs[position],
        )  # fmt: skip

    def get(self, base: str) -> Record | None:
        position = self.position(base)
        return None if position < 0 else self.record(position)

    def records(self) -> Iterator[Record]:
        """Every message, in UID order."""
        self.compact()
        return (self.record(position) for position in range(len(self.uids)))

    def uids_from(self, first: int) -> list[int]:
        """The UIDs of the messages at or above ``first``."""
        self.compact()
        return list(self.uids[bisect.bisect_left(self.uids, first):])

    def keywords_present(self) -> set[str]:
        """Every keyword some message holds."""
        present: set[str] = set()
        for keywords in {id(k): k for k in self.keywords if k}.values():
            present.update(keywords)
        return present


# -- as text --------------------------------------------------------------------


# Lines of the index formatted, encoded and written at a time: memory for this many,
# not for the whole index (3 MB of text for 100,000 messages, as a str and as bytes).
_FORMAT_BATCH = 2000


def _format_chunks(index: Index) -> Iterator[str]:
    """The text of ``index``, a batch of lines at a time."""
    index.compact()
    yield (f"{_INDEX_MAGIC} {INDEX_VERSION} V{index.uidvalidity} N{index.uidnext} "
           f"R{index.first_recent_uid} M{index.highestmodseq}\n")
    keywords, unterminated = index.keywords, index.unterminated
    for start in range(0, len(index.uids), _FORMAT_BATCH):
        end = start + _FORMAT_BATCH
        dates = index.dates[start:end]
        if not any(keywords[start:end]) and not any(unterminated[start:end]):
            # No keywords, every line ends: one comprehension, no test per line.
            columns = zip(index.uids[start:end], index.sizes[start:end],
                          index.rfc822_sizes[start:end], dates, index.modseqs[start:end],
                          index.bases[start:end], strict=True)
            if max(dates) < 0:  # a cold index: no date read yet
                yield "".join([f"{uid} S{size} W{rfc822_size} M{modseq} :{base}\n"
                               for uid, size, rfc822_size, _, modseq, base in columns])
                continue
            if min(dates) >= 0:
                yield "".join([f"{uid} S{size} W{rfc822_size} T{date} M{modseq} :{base}\n"
                               for uid, size, rfc822_size, date, modseq, base in columns])
                continue
        lines: list[str] = []
        append = lines.append
        for position, (uid, size, rfc822_size, date, modseq, base) in enumerate(zip(
            index.uids[start:end], index.sizes[start:end], index.rfc822_sizes[start:end],
            dates, index.modseqs[start:end], index.bases[start:end],
            strict=True,
        ), start):
            if keywords[position] or unterminated[position]:
                named = "".join(f" K{keyword}" for keyword in sorted(keywords[position]))
                mark = " U" if unterminated[position] else ""
                dated = f" T{date}" if date >= 0 else ""
                append(f"{uid} S{size} W{rfc822_size}{dated} M{modseq}{mark}{named} :{base}\n")
            elif date >= 0:
                append(f"{uid} S{size} W{rfc822_size} T{date} M{modseq} :{base}\n")
            else:  # the common line of a cold index: no date read yet
                append(f"{uid} S{size} W{rfc822_size} M{modseq} :{base}\n")
        yield "".join(lines)


def _format_index(index: Index) -> str:
    return "".join(_format_chunks(index))


def encoded_chunks(index: Index, digest: Any) -> Iterator[bytes]:
    """The index as bytes to write, a batch of lines at a time, each fed to ``digest``
    (a hashlib object) as it goes: its digest is then the cache key of what was written."""
    for chunk in _format_chunks(index):
        data = chunk.encode("utf-8", errors="surrogateescape")
        digest.update(data)
        yield data


def new_digest() -> Any:
    """What indexes are cached by: a digest of their bytes (hashlib imported when used:
    it loads OpenSSL)."""
    import hashlib

    return hashlib.blake2b(digest_size=20)


def _number(text: str, low: int = 0, high: int = 2**63) -> int:
    if not text.isdigit() or not (low <= int(text) <= high):
        raise ValueError(f"bad number {text!r}")
    return int(text)


def parse_index(data: bytes | str) -> Index:
    """The index in ``data`` (the file's bytes); ValueError if anything at all is wrong
    with it.

    Parsed indexes are cached by a digest of their bytes (see :class:`_IndexCache`),
    so a folder reopened unchanged costs a read, a digest and a copy of the columns;
    the result is a fresh copy the caller may change.
    """
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogateescape")
    digest = new_digest()
    digest.update(data)
    key = digest.digest()
    cached = _INDEX_CACHE.get(key)
    if cached is None:
        cached = _parse_index_text(data.decode("utf-8", errors="surrogateescape"))
        _INDEX_CACHE.put(key, cached)
    return cached.copy()


def cached_index(file: BinaryIO) -> Index | None:
    """:func:`parse_index` of ``file``'s bytes if it is cached (a fresh copy), else None.
    The bytes are digested as they are read, never held whole: on a hit the text is not
    needed (0.7 MiB at 10,000 messages, alive with the folder's listing)."""
    digest = new_digest()
    for chunk in iter(functools.partial(file.read, _READ_CHUNK), b""):
        digest.update(chunk)
    cached = _INDEX_CACHE.get(digest.digest())
    return None if cached is None else cached.copy()


_READ_CHUNK = 64 * 1024


def _parse_index_text(text: str) -> Index:
    """The index in ``text``: its header line, then one line a message."""
    if not text.endswith("\n"):
        raise ValueError("truncated")
    header, *lines = text[:-1].split("\n")
    index = Index(*_parse_header(header))
    _parse_message_lines(lines, index)
    return index


def _parse_header(header: str) -> tuple[int, int, int, int]:
    """``mailtalk-uidlist 1 V.. N.. R.. [M..]``: UIDVALIDITY, UIDNEXT, the first recent
    UID and HIGHESTMODSEQ (1 when there is no ``M``)."""
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
    return uidvalidity, uidnext, first_recent_uid, highestmodseq


def _parse_message_lines(lines: list[str], index: Index) -> None:
    """The messages' lines, in UID order, into ``index``'s columns. The common line is
    read here, in the loop ("uid S W M" or "uid S W T M", as ``_format_index`` writes
    a message without keywords); any other by :func:`_parse_message_fields`."""
    uidnext, highestmodseq = index.uidnext, index.highestmodseq
    bases: list[str] = []
    seen: set[str] = set()
    uids: list[int] = []
    sizes: list[int] = []
    rfc822_sizes: list[int] = []
    dates: list[int] = []
    modseqs: list[int] = []
    unterminated = bytearray()
    keyword_list: list[frozenset[str]] = []
    # Messages mostly carry the same few keyword sets: one frozenset (and one string
    # per keyword) for all of them, not one per message.
    keyword_sets: dict[tuple[str, ...], frozenset[str]] = {(): NO_KEYWORDS}
    last_uid = 0
    for line in lines:
        head, separator, base = line.partition(" :")
        if not separator or not base or base in seen:
            raise ValueError(f"bad line {line!r}")
        seen.add(base)
        parts = head.split(" ")
        uid_text = parts[0]
        count = len(parts)
        if (
            3 < count < 6
            and parts[1][:1] == "S"
            and parts[2][:1] == "W"
            and parts[-1][:1] == "M"
            and (count == 4 or parts[3][:1] == "T")
            and (uid_text + parts[1][1:] + parts[2][1:] + parts[-1][1:]
                 + (parts[3][1:] if count == 5 else "0")).isdigit()
            and parts[1][1:] and parts[2][1:] and parts[-1][1:] and (count == 4 or parts[3][1:])
        ):
            uid, size, rfc822_size = int(uid_text), int(parts[1][1:]), int(parts[2][1:])
            modseq = int(parts[-1][1:])
            date = int(parts[3][1:]) if count == 5 else DATE_NOT_READ
            if (
                last_uid < uid < uidnext
                and size < 2**63
                and rfc822_size < 2**63
                and date < 2**63
                and 0 < modseq <= highestmodseq
            ):
                uids.append(uid)
                bases.append(base)
                sizes.append(size)
                rfc822_sizes.append(rfc822_size)
                dates.append(date)
                modseqs.append(modseq)
                unterminated.append(False)
                keyword_list.append(NO_KEYWORDS)
                last_uid = uid
                continue
        uid = _number(uid_text, last_uid + 1, uidnext - 1)
        numbers, keywords, ends_open = _parse_message_fields(parts, line, highestmodseq)
        shared = keyword_sets.get(keywords)
        if shared is None:
            shared = keyword_sets[keywords] = frozenset(keywords)
        uids.append(uid)
        bases.append(base)
        sizes.append(numbers["S"])
        rfc822_sizes.append(numbers["W"])
        dates.append(numbers.get("T", DATE_NOT_READ))
        modseqs.append(numbers.get("M", 1))
        unterminated.append(ends_open)
        keyword_list.append(shared)
        last_uid = uid
    index.uids = array("I", uids)
    index.bases = bases
    index.sizes = array("q", sizes)
    index.rfc822_sizes = array("q", rfc822_sizes)
    index.dates = array("q", dates)
    index.modseqs = array("q", modseqs)
    index.unterminated = unterminated
    index.keywords = keyword_list


def _parse_message_fields(
    parts: list[str], line: str, highestmodseq: int
) -> tuple[dict[str, int], tuple[str, ...], bool]:
    """A message line's fields after its UID, in any order: its numbers (``S`` and ``W``
    always there, ``T`` and ``M`` maybe), its keywords (``K``) and whether it ends
    without a line break (``U``)."""
    numbers: dict[str, int] = {}
    keywords = []
    ends_open = False
    for part in parts[1:]:
        if part == "U":
            ends_open = True
        elif part[:1] == "K" and len(part) > 1:
            keywords.append(part[1:])
        elif part[:1] in ("S", "W", "T", "M") and part[:1] not in numbers:
            numbers[part[:1]] = _number(part[1:])
        else:
            raise ValueError(f"bad field {part!r}")
    if "S" not in numbers or "W" not in numbers:
        raise ValueError(f"missing fields in {line!r}")
    if not 0 < numbers.get("M", 1) <= highestmodseq:
        raise ValueError(f"MODSEQ beyond HIGHESTMODSEQ in {line!r}")
    return numbers, tuple(keywords), ends_open


# -- the cache of parsed indexes ---------------------------------------------------

# What a parsed index costs in memory, measured with tracemalloc (CPython 3.11): per
# message its name's string object (49 bytes and its characters), the pointers to it
# and to its keywords and the columns' numbers; and each keyword of a distinct keyword
# set.
_MESSAGE_BYTES = 120
_KEYWORD_BYTES = 90


def _memory_estimate(index: Index) -> int:
    """Bytes an entry of the cache holds: the parsed index (messages with the same
    keywords share one set, so each set counts once)."""
    distinct = dict(zip(map(id, index.keywords), index.keywords, strict=True))
    names = sum(map(len, index.bases))
    keywords = sum(map(len, distinct.values()))
    return names + _MESSAGE_BYTES * len(index) + _KEYWORD_BYTES * keywords


class _IndexCache:
    """Parsed indexes by a digest of their bytes (BLAKE2b, 160 bits), least recently
    used dropped beyond a total size in bytes.

    Keyed by content, not by file stamps, so it cannot return a stale index: a hit
    means the bytes on disk are those once parsed (two texts with one digest are not
    to be found). The text itself is not kept.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._entries: dict[bytes, tuple[Index, int]] = {}
        self._bytes = 0

    def get(self, key: bytes) -> Index | None:
        with self._lock:
            entry = self._entries.pop(key, None)
            if entry is None:
                return None
            self._entries[key] = entry  # most recently used last
            return entry[0]

    def put(self, key: bytes, index: Index) -> None:
        """Keep ``index`` (which the cache owns from now on) as the parse of ``key``'s bytes."""
        index.compact()
        cost = _memory_estimate(index)
        if cost > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = (index, cost)
            self._bytes += cost
            while self._bytes > self.max_bytes:
                oldest = next(iter(self._entries))
                self._bytes -= self._entries.pop(oldest)[1]

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0


# About 200 bytes a message without keywords: some 150,000 messages' indexes.
_INDEX_CACHE = _IndexCache(32 * 1024 * 1024)


def remember(key: bytes, index: Index) -> None:
    """``index`` was just written, its bytes' digest ``key``: the next reader parses nothing."""
    _INDEX_CACHE.put(key, index.copy())
