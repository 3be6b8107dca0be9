"""IMAP command arguments (RFC 3501 9 / RFC 9051 9): text in, typed values out, no I/O.

The IMAP core (``mailtalk.protocols.imap``) hands the server a ``Command`` whose
``args`` is the text after the verb with each literal left as its marker
(``{5}``, ``{5+}`` or ``~{5}``) and whose ``literals`` are the literal bytes in
order. :func:`~mailtalk.servers.imap.tokens.tokenize` turns that pair into atoms,
strings and parenthesised lists, and the command parsers here build on it
(:func:`parse_fetch`, :func:`parse_store`, :func:`parse_append`, :func:`parse_list`,
mailbox names, dates, sequence sets, flags...; SEARCH's are in
:mod:`mailtalk.servers.imap.search`). Bad syntax raises ``IMAPSyntaxError``, whose
message is one line fit for a ``BAD`` response.
"""

from __future__ import annotations

import base64
import binascii
import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Final, Literal

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
    "MAX_MAILBOX_LEVELS",
    "MAX_MODSEQ",
    "MONTHS",
    "AppendRequest",
    "FetchItem",
    "FetchRequest",
    "ListRequest",
    "Section",
    "SequenceSet",
    "SpanSet",
    "StoreRequest",
    "decode_mailbox_name",
    "encode_mailbox_name",
    "list_pattern_matches",
    "list_pattern_regex",
    "new_mailbox_name_problem",
    "normalize_flag",
    "parse_append",
    "parse_astrings",
    "parse_date",
    "parse_datetime",
    "parse_fetch",
    "parse_fetch_items",
    "parse_list",
    "parse_list_command",
    "parse_mailbox",
    "parse_modifier",
    "parse_modseq",
    "parse_sequence_set",
    "parse_status",
    "parse_store",
]


def parse_astrings(args: str, literals: Sequence[bytes], count: int) -> list[str]:
    """Exactly ``count`` astrings (LOGIN user password, RENAME old new...)."""
    values = tokenize(args, literals)
    if len(values) != count:
        raise IMAPSyntaxError(f"expected {count} argument{'s' if count != 1 else ''}, "
                              f"got {len(values)}")
    return [astring(value, "argument") for value in values]


# -- mailbox names (RFC 3501 5.1) ----------------------------------------------------


def _b64_utf16(chunk: str) -> str:
    data = chunk.encode("utf-16-be")
    return base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",")


def encode_mailbox_name(name: str) -> str:
    """A mailbox name in modified UTF-7 (RFC 3501 5.1.3): ``"Entwürfe"`` -> ``"Entw&APw-rfe"``."""
    out: list[str] = []
    pending: list[str] = []
    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            if pending:
                out.append("&" + _b64_utf16("".join(pending)) + "-")
                pending = []
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    if pending:
        out.append("&" + _b64_utf16("".join(pending)) + "-")
    return "".join(out)


_MUTF7_RUN: Final = re.compile(r"&([^-]*)-")


def decode_mailbox_name(name: str) -> str:
    """A modified UTF-7 mailbox name decoded; malformed names raise IMAPSyntaxError."""
    result = _decode_mutf7(name)
    if not all(ord(c) >= 0x20 for c in result):
        raise IMAPSyntaxError("control character in a mailbox name")
    return result


def _decode_mutf7(name: str) -> str:
    if "&" not in name:
        if not name.isascii():
            raise IMAPSyntaxError("8-bit characters in a modified UTF-7 mailbox name")
        return name
    out: list[str] = []
    pos = 0
    while True:
        amp = name.find("&", pos)
        if amp < 0:
            out.append(name[pos:])
            break
        out.append(name[pos:amp])
        match = _MUTF7_RUN.match(name, amp)
        if match is None:
            raise IMAPSyntaxError("unterminated & run in a mailbox name")
        run = match.group(1)
        if not run:
            out.append("&")
        else:
            if not re.fullmatch(r"[A-Za-z0-9+,]+", run) or len(run) % 4 == 1:
                raise IMAPSyntaxError("bad modified base64 in a mailbox name")
            padded = run.replace(",", "/") + "=" * (-len(run) % 4)
            try:
                raw = base64.b64decode(padded, validate=True)
                decoded = raw.decode("utf-16-be")
            except (binascii.Error, UnicodeDecodeError) as exc:
                raise IMAPSyntaxError("bad modified UTF-7 in a mailbox name") from exc
            if any(0x20 <= ord(c) <= 0x7E for c in decoded):
                raise IMAPSyntaxError("printable ASCII encoded in a mailbox name")
            out.append(decoded)
        pos = match.end()
    return "".join(out)


# Dovecot's MAILBOX_MAX_HIERARCHY_LEVELS: deeper names are no folders a person made.
MAX_MAILBOX_LEVELS: Final = 20
# C0, DEL and C1: no terminal shows them as text.
_CONTROL: Final = re.compile("[\x00-\x1f\x7f-\x9f]")


def new_mailbox_name_problem(name: str, delimiter: str) -> str | None:
    """Why ``name``, as stored (modified UTF-7), cannot name a new mailbox; None if it can.

    As Dovecot checks CREATE and RENAME: the name must be canonical modified UTF-7
    (no 8-bit octets, no broken or needless ``&`` runs, no lone surrogates), hold
    no control character even encoded (``&AB8-`` is U+001F), and be at most
    :data:`MAX_MAILBOX_LEVELS` levels deep. The store adds its own rules (length,
    empty levels, ``/``, ``*`` and ``%``).
    """
    if _CONTROL.search(name):
        return "Control characters are not allowed in mailbox names"
    if not name.isascii():
        return ("Mailbox name is not valid modified UTF-7: 8-bit characters need "
                "ENABLE UTF8=ACCEPT")
    try:
        decoded = _decode_mutf7(name)
    except IMAPSyntaxError:
        return "Mailbox name is not valid modified UTF-7"
    if encode_mailbox_name(decoded) != name:
        return "Mailbox name is not valid modified UTF-7"
    if _CONTROL.search(decoded):
        return "Control characters are not allowed in mailbox names"
    if name.rstrip(delimiter).count(delimiter) >= MAX_MAILBOX_LEVELS:
        return f"Mailbox name has more than {MAX_MAILBOX_LEVELS} hierarchy levels"
    return None


def parse_mailbox(value: Value, *, utf8: bool = False) -> str:
    """A mailbox argument as the name to use: ``INBOX`` in any case is ``"INBOX"``.

    Without ``utf8`` (RFC 6855 UTF8=ACCEPT) the name is decoded from modified
    UTF-7; with it the name is taken as sent.
    """
    name = astring(value, "the mailbox name")
    if name.upper() == "INBOX":
        return "INBOX"
    return name if utf8 else decode_mailbox_name(name)


def parse_list(args: str, literals: Sequence[bytes]) -> tuple[str, str]:
    """LIST/LSUB arguments as (reference, pattern), both as sent (still modified UTF-7)."""
    values = tokenize(args, literals)
    if len(values) != 2:
        raise IMAPSyntaxError("LIST takes a reference and a mailbox pattern")
    return astring(values[0], "the reference"), astring(values[1], "the mailbox pattern")


# RFC 5258 3 (and RFC 6154 5.1's SPECIAL-USE): LIST's selection and return options.
LIST_SELECT_OPTIONS: Final = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN_OPTIONS: Final = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "STATUS"})


@dataclass(frozen=True, slots=True)
class ListRequest:
    """``LIST [(select...)] reference (patterns...) [RETURN (options...)]`` (RFC 5258).

    Names as sent (still modified UTF-7); options upper-cased; ``status_items`` the
    STATUS return option's items (RFC 5819), empty without it. ``extended`` is
    whether the command used RFC 5258's syntax at all.
    """

    reference: str
    patterns: tuple[str, ...]
    select: frozenset[str] = frozenset()
    returns: frozenset[str] = frozenset()
    status_items: tuple[str, ...] = ()
    extended: bool = False


def _options(value: Value, known: frozenset[str], what: str) -> list[tuple[str, Value | None]]:
    """A parenthesised option list as (NAME, its list argument or None)."""
    if not isinstance(value, list):
        raise IMAPSyntaxError(f"LIST {what} options must be a parenthesised list")
    out: list[tuple[str, Value | None]] = []
    for item in value:
        if isinstance(item, list):
            if not out or out[-1][1] is not None:
                raise IMAPSyntaxError(f"unexpected list among the LIST {what} options")
            out[-1] = (out[-1][0], item)
            continue
        if not isinstance(item, Atom) or item.value.upper() not in known:
            raise IMAPSyntaxError(f"unknown LIST {what} option {describe(item)}")
        out.append((item.value.upper(), None))
    return out


def parse_list_command(args: str, literals: Sequence[bytes]) -> ListRequest:
    """LIST arguments, RFC 3501's or RFC 5258's extended form (with RFC 5819's STATUS)."""
    values = tokenize(args, literals)
    select: set[str] = set()
    extended = False
    if values and isinstance(values[0], list):
        extended = True
        for name, argument in _options(values.pop(0), LIST_SELECT_OPTIONS, "selection"):
            if argument is not None:
                raise IMAPSyntaxError(f"LIST selection option {name} takes no argument")
            select.add(name)
        if "RECURSIVEMATCH" in select and select <= {"RECURSIVEMATCH", "REMOTE"}:
            # RFC 5258 3: RECURSIVEMATCH alone says nothing; it is BAD.
            raise IMAPSyntaxError("RECURSIVEMATCH needs another selection option")
    returns: set[str] = set()
    status_items: tuple[str, ...] = ()
    if len(values) == 4 and isinstance(values[2], Atom) and values[2].value.upper() == "RETURN":
        extended = True
        for name, argument in _options(values[3], LIST_RETURN_OPTIONS, "return"):
            if name == "STATUS":
                if not isinstance(argument, list) or not argument:
                    raise IMAPSyntaxError("LIST RETURN STATUS takes a list of STATUS items")
                status_items = _status_items(argument)
            elif argument is not None:
                raise IMAPSyntaxError(f"LIST return option {name} takes no argument")
            returns.add(name)
        values = values[:2]
    if len(values) != 2:
        raise IMAPSyntaxError("LIST takes a reference and a mailbox pattern")
    reference = astring(values[0], "the reference")
    if isinstance(values[1], list):
        if not values[1]:
            raise IMAPSyntaxError("LIST needs at least one mailbox pattern")
        extended = True
        patterns = tuple(astring(value, "a mailbox pattern") for value in values[1])
    else:
        patterns = (astring(values[1], "the mailbox pattern"),)
    return ListRequest(reference, patterns, frozenset(select), frozenset(returns),
                       status_items, extended)


def list_pattern_regex(pattern: str, delimiter: str | None = "/") -> re.Pattern[str]:
    """A LIST pattern compiled: ``*`` matches anything, ``%`` anything but the delimiter."""
    parts: list[str] = []
    for char in pattern:
        if char == "*":
            parts.append(".*")
        elif char == "%":
            parts.append(f"[^{re.escape(delimiter)}]*" if delimiter else ".*")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts), re.DOTALL)


def list_pattern_matches(
    reference: str, pattern: str, name: str, delimiter: str | None = "/"
) -> bool:
    """Whether mailbox ``name`` is listed for LIST ``reference`` ``pattern``.

    The reference is prefixed to the pattern (RFC 3501 6.3.8); an INBOX prefix
    matches in any case.
    """
    full = reference + pattern
    if full.upper().startswith("INBOX") and (
        len(full) == 5 or full[5:6] in ("*", "%") or (delimiter and full[5:6] == delimiter)
    ):
        full = "INBOX" + full[5:]
    return list_pattern_regex(full, delimiter).fullmatch(name) is not None


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


# -- APPEND / STATUS ---------------------------------------------------------------


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


STATUS_ITEMS: Final = frozenset(
    {"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE", "DELETED",
     "HIGHESTMODSEQ"}
)


def _status_items(values: Sequence[Value]) -> tuple[str, ...]:
    items: list[str] = []
    for value in values:
        if not isinstance(value, Atom) or value.value.upper() not in STATUS_ITEMS:
            raise IMAPSyntaxError(f"unknown STATUS item {describe(value)}")
        items.append(value.value.upper())
    return tuple(items)


def parse_status(
    args: str, literals: Sequence[bytes] = (), *, utf8: bool = False
) -> tuple[str, tuple[str, ...]]:
    """``STATUS mailbox (MESSAGES UNSEEN)`` as (mailbox, upper-cased item names)."""
    values = tokenize(args, literals)
    if len(values) != 2 or not isinstance(values[1], list) or not values[1]:
        raise IMAPSyntaxError("STATUS takes a mailbox and a list of items")
    return parse_mailbox(values[0], utf8=utf8), _status_items(values[1])


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
