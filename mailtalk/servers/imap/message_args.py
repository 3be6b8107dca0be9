"""IMAP message arguments (RFC 3501 9 / RFC 9051 9): text in, typed values out, no I/O.

The arguments of the commands that work on messages, built on
:func:`~mailtalk.servers.imap.tokens.tokenize`: dates, sequence sets, flags,
:func:`parse_store`, :func:`parse_append`, :func:`parse_fetch` and the CONDSTORE
modifiers. Mailbox names and LIST/LSUB/STATUS arguments are in
:mod:`mailtalk.servers.imap.mailbox_args`, SEARCH's in
:mod:`mailtalk.servers.imap.search`. Bad syntax raises ``IMAPSyntaxError``, whose
message is one line fit for a ``BAD`` response.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Final, Literal

from mailtalk.servers.imap.mailbox_args import parse_mailbox
from mailtalk.servers.imap.tokens import (
    Atom,
    IMAPSyntaxError,
    String,
    Value,
    astring,
    describe,
    tokenize,
)

__all__ = [
    "FETCH_MACROS",
    "MAX_MODSEQ",
    "MONTHS",
    "AppendRequest",
    "FetchItem",
    "FetchRequest",
    "Section",
    "SequenceSet",
    "SpanSet",
    "StoreRequest",
    "normalize_flag",
    "parse_append",
    "parse_date",
    "parse_datetime",
    "parse_fetch",
    "parse_fetch_items",
    "parse_modifier",
    "parse_modseq",
    "parse_sequence_set",
    "parse_store",
]


# -- dates ------------------------------------------------------------------------

MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun",
                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER: Final = {name.upper(): number for number, name in enumerate(MONTHS, start=1)}
_DATE: Final = re.compile(r"(\d{1,2})-([A-Za-z]{3})-(\d{4})")
_DATE_TIME: Final = re.compile(
    r"([ \d]?\d)-([A-Za-z]{3})-(\d{4}) (\d{2}):(\d{2}):(\d{2}) ([+-])(\d{2})(\d{2})"
)


def _make_date(day: str, month: str, year: str, text: str) -> date:
    number = _MONTH_NUMBER.get(month.upper())
    if number is None:
        raise IMAPSyntaxError(f"{text!r} has no valid month")
    try:
        return date(int(year), number, int(day))
    except ValueError as exc:
        raise IMAPSyntaxError(f"{text!r} is not a valid date") from exc


def parse_date(value: Value | str) -> date:
    """A SEARCH date (``1-Feb-1994``, quoted or not)."""
    text = value if isinstance(value, str) else astring(value, "the date")
    match = _DATE.fullmatch(text)
    if match is None:
        raise IMAPSyntaxError(f"{text!r} is not a date like 1-Feb-1994")
    return _make_date(match.group(1), match.group(2), match.group(3), text)


def parse_datetime(value: Value | str) -> datetime:
    """An APPEND date-time (``"17-Jul-1996 02:44:25 -0700"``) with its time zone."""
    text = value if isinstance(value, str) else astring(value, "the date-time")
    match = _DATE_TIME.fullmatch(text)
    if match is None:
        raise IMAPSyntaxError(f"{text!r} is not a date-time like \"17-Jul-1996 02:44:25 -0700\"")
    day, month, year, hh, mm, ss, sign, zh, zm = match.groups()
    day_date = _make_date(day.strip(), month, year, text)
    if int(zm) >= 60 or int(hh) > 23 or int(mm) > 59 or int(ss) > 60:
        raise IMAPSyntaxError(f"{text!r} is not a valid time")
    offset = timedelta(hours=int(zh), minutes=int(zm))
    zone = timezone(-offset if sign == "-" else offset)
    return datetime(day_date.year, day_date.month, day_date.day, int(hh), int(mm),
                    min(int(ss), 59), tzinfo=zone)


# -- sequence sets ----------------------------------------------------------------

_SEQ_NUMBER: Final = re.compile(r"[1-9]\d{0,9}|\*")


class SpanSet:
    """Numbers as sorted, disjoint, merged inclusive spans; ``n in spans`` bisects.

    What a sequence set is once ``*`` is known: a SEARCH tests each message against
    it in O(log spans), however many numbers the client listed.
    """

    __slots__ = ("_ends", "_starts")

    def __init__(self, spans: Sequence[tuple[int, int]]) -> None:
        self._starts = [a for a, _ in spans]
        self._ends = [b for _, b in spans]

    def __contains__(self, number: object) -> bool:
        if not isinstance(number, int):
            return False
        i = bisect_right(self._starts, number) - 1
        return i >= 0 and number <= self._ends[i]

    def __len__(self) -> int:
        return len(self._starts)


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence set; ``None`` in a range stands for ``*`` (the largest number in use).

    The same set is read as message numbers (``numbers``) or UIDs (``select_uids``).
    Ranges keep the order they were written in (``5:3`` is ``3:5``).
    """

    ranges: tuple[tuple[int | None, int | None], ...]
    # (largest, its SpanSet): what contains() last resolved, for the next message.
    _members: list[tuple[int, SpanSet]] = field(
        default_factory=list, init=False, repr=False, compare=False, hash=False
    )

    def resolved(self, largest: int) -> list[tuple[int, int]]:
        """The ranges with ``*`` replaced by ``largest``, each low to high, merged."""
        spans = []
        for low, high in self.ranges:
            a = largest if low is None else low
            b = largest if high is None else high
            spans.append((a, b) if a <= b else (b, a))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                if b > merged[-1][1]:
                    merged[-1] = (merged[-1][0], b)
            else:
                merged.append((a, b))
        return merged

    def members(self, largest: int) -> SpanSet:
        """The set with ``*`` as ``largest``, for membership tests."""
        cached = self._members
        if cached and cached[0][0] == largest:
            return cached[0][1]
        spans = SpanSet(self.resolved(largest))
        cached[:] = [(largest, spans)]
        return spans

    def contains(self, number: int, largest: int) -> bool:
        return number in self.members(largest)

    def numbers(self, largest: int) -> list[int]:
        """Message numbers 1..largest in the set, ascending (numbers beyond are dropped)."""
        if largest <= 0:
            return []
        out: list[int] = []
        for a, b in self.resolved(largest):
            if a > largest:
                break
            out.extend(range(max(a, 1), min(b, largest) + 1))
        return out

    def max_number(self) -> int | None:
        """The largest explicit number (to check message numbers against EXISTS)."""
        explicit = [n for pair in self.ranges for n in pair if n is not None]
        return max(explicit) if explicit else None

    def select_uids(self, uids: Sequence[int]) -> list[int]:
        """The UIDs of ``uids`` (ascending, as in a mailbox) that the set names.

        ``*`` is the largest UID in use, so ``559:*`` always includes the last
        message (RFC 9051 6.4.9); an empty mailbox matches nothing.
        """
        if not uids:
            return []
        out: list[int] = []
        for a, b in self.resolved(uids[-1]):
            out.extend(uids[bisect_left(uids, a) : bisect_right(uids, b)])
        return out

    def __str__(self) -> str:
        def one(n: int | None) -> str:
            return "*" if n is None else str(n)

        return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in self.ranges)


def parse_sequence_set(value: Value | str) -> SequenceSet:
    """``1:*``, ``2,4:6,10:*``, ``*``, ``5:3`` as a :class:`SequenceSet`."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, Atom):
        text = value.value
    else:
        raise IMAPSyntaxError("expected a sequence set")
    if not text:
        raise IMAPSyntaxError("empty sequence set")
    ranges: list[tuple[int | None, int | None]] = []
    for item in text.split(","):
        low_text, colon, high_text = item.partition(":")
        if not _SEQ_NUMBER.fullmatch(low_text) or (
            colon and not _SEQ_NUMBER.fullmatch(high_text)
        ):
            raise IMAPSyntaxError(f"{text[:40]!r} is not a valid sequence set")
        low = None if low_text == "*" else int(low_text)
        high = low if not colon else (None if high_text == "*" else int(high_text))
        for number in (low, high):
            if number is not None and number > 0xFFFFFFFF:
                raise IMAPSyntaxError(f"{number} is too large for a sequence set")
        ranges.append((low, high))
    return SequenceSet(tuple(ranges))


# -- flags -----------------------------------------------------------------------

_SYSTEM_FLAGS: Final = {
    flag.upper(): flag
    for flag in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")
}
_FLAG: Final = re.compile(r"\\?[^\s(){%*\"\\\]\x00-\x1f\x7f]+")


def normalize_flag(text: str) -> str:
    """A flag as stored: system flags in their canonical case, keywords as sent."""
    if not _FLAG.fullmatch(text) or not text.isascii():
        raise IMAPSyntaxError(f"{text[:40]!r} is not a valid flag")
    return _SYSTEM_FLAGS.get(text.upper(), text)


def _flags(values: Sequence[Value], *, storing: bool) -> tuple[str, ...]:
    out: dict[str, None] = {}  # in order, each once (a list's "in" made 10,000 flags take 0.8 s)
    for value in values:
        if not isinstance(value, Atom):
            raise IMAPSyntaxError("a flag must be an atom such as \\Seen")
        flag = normalize_flag(value.value)
        if storing and flag == "\\Recent":
            raise IMAPSyntaxError("\\Recent cannot be stored")
        out[flag] = None
    return tuple(out)


# -- STORE -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StoreRequest:
    """``STORE 2:4 +FLAGS.SILENT (\\Deleted)``: mode is ``"set"``, ``"add"`` or ``"remove"``."""

    sequence_set: SequenceSet
    mode: Literal["set", "add", "remove"]
    silent: bool
    flags: tuple[str, ...]
    unchanged_since: int | None = None  # RFC 7162 UNCHANGEDSINCE modifier


_STORE_MODES: Final[dict[str, Literal["set", "add", "remove"]]] = {
    "": "set", "+": "add", "-": "remove",
}
_STORE_ITEM: Final = re.compile(r"([+-]?)FLAGS(\.SILENT)?", re.IGNORECASE)


def parse_store(args: str, literals: Sequence[bytes] = ()) -> StoreRequest:
    values = tokenize(args, literals)
    if len(values) < 3:
        raise IMAPSyntaxError("STORE takes a sequence set, FLAGS item and flags")
    sequence_set = parse_sequence_set(values[0])
    unchanged_since = None
    if isinstance(values[1], list):
        unchanged_since = parse_modifier(values[1], "UNCHANGEDSINCE", zero=True)
        values = [values[0], *values[2:]]
        if len(values) < 3:
            raise IMAPSyntaxError("STORE takes a sequence set, FLAGS item and flags")
    item = values[1]
    match = _STORE_ITEM.fullmatch(item.value) if isinstance(item, Atom) else None
    if match is None:
        raise IMAPSyntaxError("the STORE item must be FLAGS, +FLAGS or -FLAGS (.SILENT)")
    rest = values[2:]
    if len(rest) == 1 and isinstance(rest[0], list):
        flag_values: Sequence[Value] = rest[0]
    else:
        flag_values = rest
    mode = _STORE_MODES[match.group(1)]
    return StoreRequest(sequence_set, mode, match.group(2) is not None,
                        _flags(flag_values, storing=True), unchanged_since)


# -- APPEND ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AppendRequest:
    mailbox: str
    flags: tuple[str, ...]
    internaldate: datetime | None
    message: bytes


def parse_append(args: str, literals: Sequence[bytes], *, utf8: bool = False) -> AppendRequest:
    """``APPEND mailbox [(flags)] ["date-time"] {n}`` with the message as the last literal."""
    values = tokenize(args, literals)
    if len(values) < 2:
        raise IMAPSyntaxError("APPEND takes a mailbox and a message literal")
    mailbox = parse_mailbox(values[0], utf8=utf8)
    message = values[-1]
    if not isinstance(message, String) or not message.literal:
        raise IMAPSyntaxError("the APPEND message must be a literal")
    middle = values[1:-1]
    flags: tuple[str, ...] = ()
    when: datetime | None = None
    if middle and isinstance(middle[0], list):
        flags = _flags(middle[0], storing=True)
        middle = middle[1:]
    if middle:
        when = parse_datetime(middle[0])
        middle = middle[1:]
    if middle:
        raise IMAPSyntaxError("APPEND takes mailbox [(flags)] [date-time] literal")
    return AppendRequest(mailbox, flags, when, message.value)


# -- FETCH -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """A body section: ``1.2.HEADER.FIELDS (FROM)`` is part (1, 2), text HEADER.FIELDS."""

    part: tuple[int, ...] = ()
    text: Literal["HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"] | None = None
    fields: tuple[str, ...] = ()

    def spec(self, render_field: Callable[[str], str] | None = None) -> str:
        """The section as written inside ``[]`` in a response."""
        out = ".".join(str(n) for n in self.part)
        if self.text is not None:
            out += ("." if out else "") + self.text
        if self.fields:
            render = render_field or (lambda f: f)
            out += " (" + " ".join(render(f) for f in self.fields) + ")"
        return out


@dataclass(frozen=True, slots=True)
class FetchItem:
    """One FETCH data item.

    ``name`` is FLAGS, UID, INTERNALDATE, RFC822.SIZE, ENVELOPE, BODYSTRUCTURE,
    BODY (the structure), RFC822, RFC822.HEADER, RFC822.TEXT, or, with a
    ``section``, BODY (``BODY[...]`` / ``BODY.PEEK[...]``), BINARY or BINARY.SIZE.
    ``partial`` is (origin, octets) of ``<origin.octets>``.
    """

    name: str
    section: Section | None = None
    peek: bool = False
    partial: tuple[int, int] | None = None

    @property
    def sets_seen(self) -> bool:
        """Fetching this sets \\Seen (RFC 3501 6.4.5): BODY[...] and RFC822(.TEXT)."""
        if self.section is not None:
            return not self.peek and self.name in ("BODY", "BINARY")
        return self.name in ("RFC822", "RFC822.TEXT")


FETCH_MACROS: Final[dict[str, tuple[str, ...]]] = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}
_SIMPLE_ITEMS: Final = frozenset(
    {"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
     "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ"}
)
_SECTION_ITEM: Final = re.compile(
    r"(BODY|BODY\.PEEK|BINARY|BINARY\.PEEK|BINARY\.SIZE)\[(.*)\](?:<(\d{1,10})\.(\d{1,10})>)?",
    re.IGNORECASE | re.DOTALL,
)
_PART: Final = re.compile(r"[1-9]\d{0,9}(?:\.[1-9]\d{0,9})*")
_SECTION_TEXTS: Final = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


def _parse_section(spec: str, binary: bool) -> Section:
    part: tuple[int, ...] = ()
    rest = spec
    match = _PART.match(spec)
    if match is not None:
        part = tuple(int(n) for n in match.group(0).split("."))
        rest = spec[match.end() :]
        if rest:
            if not rest.startswith(".") or rest == ".":
                raise IMAPSyntaxError(f"bad section [{spec[:40]}]")
            rest = rest[1:]
    if not rest:
        return Section(part)
    if binary:
        raise IMAPSyntaxError("BINARY takes only part numbers")
    upper = rest.upper()
    for keyword in _SECTION_TEXTS:
        if upper.startswith(keyword):
            after = rest[len(keyword) :]
            if keyword.startswith("HEADER.FIELDS"):
                if not after.startswith(" "):
                    raise IMAPSyntaxError(f"{keyword} needs a list of header names")
                values = tokenize(after[1:])
                if len(values) != 1 or not isinstance(values[0], list) or not values[0]:
                    raise IMAPSyntaxError(f"{keyword} needs a list of header names")
                names = tuple(astring(v, "a header name") for v in values[0])
                for name in names:
                    if not name or not all(33 <= ord(c) <= 126 and c != ":" for c in name):
                        raise IMAPSyntaxError(f"{name[:40]!r} is not a header field name")
                return Section(part, keyword, names)
            if after:
                break
            if keyword == "MIME" and not part:
                raise IMAPSyntaxError("MIME needs a part number")
            return Section(part, keyword)
    raise IMAPSyntaxError(f"bad section [{spec[:40]}]")


def _fetch_item(value: Value) -> FetchItem:
    if not isinstance(value, Atom):
        raise IMAPSyntaxError(f"{describe(value)} is not a FETCH item")
    text = value.value
    upper = text.upper()
    if upper in _SIMPLE_ITEMS:
        return FetchItem(upper)
    match = _SECTION_ITEM.fullmatch(text)
    if match is None:
        raise IMAPSyntaxError(f"unknown FETCH item {text[:40]}")
    kind = match.group(1).upper()
    peek = kind.endswith(".PEEK")
    name = kind.removesuffix(".PEEK")
    section = _parse_section(match.group(2), binary=name != "BODY")
    partial = None
    if match.group(3) is not None:
        if name == "BINARY.SIZE":
            raise IMAPSyntaxError("BINARY.SIZE takes no partial range")
        octets = int(match.group(4))
        if octets == 0:
            raise IMAPSyntaxError("a partial range needs a nonzero length")
        partial = (int(match.group(3)), octets)
    return FetchItem(name, section, peek, partial)


def parse_fetch_items(value: Value) -> list[FetchItem]:
    """The item argument of FETCH: a macro, one item or a parenthesised list."""
    if isinstance(value, Atom) and value.value.upper() in FETCH_MACROS:
        return [FetchItem(name) for name in FETCH_MACROS[value.value.upper()]]
    if isinstance(value, list):
        if not value:
            raise IMAPSyntaxError("empty FETCH item list")
        return [_fetch_item(v) for v in value]
    return [_fetch_item(value)]


@dataclass(frozen=True, slots=True)
class FetchRequest:
    sequence_set: SequenceSet
    items: list[FetchItem] = field(default_factory=list)
    changed_since: int | None = None  # RFC 7162 CHANGEDSINCE modifier
    vanished: bool = False  # RFC 7162 3.2.6 VANISHED modifier (with CHANGEDSINCE)

    @property
    def sets_seen(self) -> bool:
        return any(item.sets_seen for item in self.items)


def parse_fetch(args: str, literals: Sequence[bytes] = ()) -> FetchRequest:
    """``1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM)]<0.100>)``."""
    values = tokenize(args, literals)
    if len(values) not in (2, 3):
        raise IMAPSyntaxError("FETCH takes a sequence set and data items")
    items = parse_fetch_items(values[1])
    changed_since = None
    vanished = False
    if len(values) == 3:
        modifiers = values[2]
        if isinstance(modifiers, list) and len(modifiers) == 3:
            # (CHANGEDSINCE n VANISHED) or (VANISHED CHANGEDSINCE n)
            words = [m for m in modifiers if isinstance(m, Atom) and m.value.upper() == "VANISHED"]
            if len(words) != 1:
                raise IMAPSyntaxError("expected (CHANGEDSINCE mod-sequence VANISHED)")
            modifiers = [m for m in modifiers if m is not words[0]]
            vanished = True
        changed_since = parse_modifier(modifiers, "CHANGEDSINCE", zero=False)
        if not any(item.name == "MODSEQ" for item in items):
            items.append(FetchItem("MODSEQ"))  # RFC 7162 3.1.4.1: implied
    return FetchRequest(parse_sequence_set(values[0]), items, changed_since, vanished)


# -- CONDSTORE modifiers (RFC 7162) -----------------------------------------------

MAX_MODSEQ: Final = 2**63 - 1  # mod-sequence-value: 1*DIGIT, at most 2^63-1


def parse_modseq(value: Value, *, zero: bool) -> int:
    """A mod-sequence-value (``zero``: a mod-sequence-valzer, which may be 0)."""
    text = value.value if isinstance(value, Atom) else ""
    if not text or not text.isascii() or not text.isdigit() or len(text) > 19:
        raise IMAPSyntaxError("a mod-sequence must be a number")
    number = int(text)
    if number > MAX_MODSEQ or (number == 0 and not zero):
        raise IMAPSyntaxError("mod-sequence out of range")
    return number


def parse_modifier(value: Value, name: str, *, zero: bool) -> int:
    """``(CHANGEDSINCE 12345)`` or ``(UNCHANGEDSINCE 0)``: the one modifier ``name``
    in a parenthesised list, as its number."""
    if not isinstance(value, list) or len(value) != 2:
        raise IMAPSyntaxError(f"expected ({name} mod-sequence)")
    key = value[0]
    if not isinstance(key, Atom) or key.value.upper() != name:
        raise IMAPSyntaxError(f"expected ({name} mod-sequence), not {describe(key)}")
    return parse_modseq(value[1], zero=zero)
