"""SEARCH (RFC 3501 6.4.4): the query parsed from the command, and evaluated, no I/O.

:func:`parse_search` turns the arguments into a tree of keys (``AndKey``,
``OrKey``, ``HeaderKey``...), strings decoded from the CHARSET named. :func:`search`
evaluates it over messages, each reached through :class:`SearchMessage`
(``FetchMessage`` from :mod:`mailtalk.servers.imap.message` is one), which parses
headers and body only when a key asks for them; ANDed keys are tried cheapest first
(flags, numbers, sizes and dates before headers, headers before the body), so
``SEARCH UNSEEN SUBJECT x`` reads no header of a message that is already seen.

**Bounded work.** A client can send a megabyte of keys. The parser keeps its own
stack instead of recursing, merges ``OR`` chains into one :class:`OrKey` and
cancels ``NOT NOT`` as it reads, and refuses what still nests deeper than
:data:`MAX_SEARCH_DEPTH` (``BAD``), so evaluation recurses at most that deep. A
sequence set is tested by bisection over its merged spans, and ORed sets are
merged into one, so ``OR 1,5,9... OR ...`` costs a few comparisons a message.
"""

from __future__ import annotations

import codecs
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from email.utils import parsedate_tz
from typing import Final, Literal, Protocol, TypeAlias

from mailtalk.servers.imap.message_args import (
    SequenceSet,
    normalize_flag,
    parse_date,
    parse_modseq,
    parse_sequence_set,
)
from mailtalk.servers.imap.tokens import (
    SEARCH_CHARSETS_LISTED,
    Atom,
    IMAPSyntaxError,
    SearchCharsetError,
    String,
    Value,
    astring,
    describe,
    tokenize,
    wire_bytes,
)

__all__ = [
    "ESEARCH_RETURNS",
    "SEARCH_CHARSETS_LISTED",
    "AllKey",
    "AndKey",
    "BodyKey",
    "DateKey",
    "FlagKey",
    "HeaderKey",
    "ModSeqKey",
    "NotKey",
    "OrKey",
    "RecentKey",
    "SearchCharsetError",
    "SearchKey",
    "SearchMessage",
    "SearchQuery",
    "SequenceKey",
    "SizeKey",
    "esearch_response",
    "matches",
    "optimize",
    "parse_search",
    "search",
    "search_codec",
    "uses_modseq",
]


# Python codecs that are not the charset of any text in mail.
_NOT_CHARSETS: Final = frozenset(
    {"idna", "punycode", "unicode-escape", "raw-unicode-escape", "undefined", "charmap"}
)


def search_codec(charset: str) -> str | None:
    """The Python codec for a SEARCH CHARSET (``utf8``, ``latin1``, ``Windows-1252``...);
    None if Python has no such text encoding."""
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError):
        return None
    if not info._is_text_encoding or info.name in _NOT_CHARSETS:
        return None
    return info.name


def number(value: Value, what: str, *, nonzero: bool = False) -> int:
    if not isinstance(value, Atom) or not value.value.isascii() or not value.value.isdigit():
        raise IMAPSyntaxError(f"{what} must be a number")
    number = int(value.value)
    if number > 0xFFFFFFFF:
        raise IMAPSyntaxError(f"{what} is too large")
    if nonzero and number == 0:
        raise IMAPSyntaxError(f"{what} must not be 0")
    return number


# -- SEARCH ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AllKey:
    pass


@dataclass(frozen=True, slots=True)
class FlagKey:
    """ANSWERED/SEEN/... (present) and UN-forms; KEYWORD/UNKEYWORD too."""

    flag: str
    present: bool = True


@dataclass(frozen=True, slots=True)
class RecentKey:
    present: bool = True


@dataclass(frozen=True, slots=True)
class SequenceKey:
    sequence_set: SequenceSet
    uid: bool = False


@dataclass(frozen=True, slots=True)
class HeaderKey:
    """FROM/TO/CC/BCC/SUBJECT/HEADER: ``value`` is a case-insensitive substring."""

    field: str
    value: str


@dataclass(frozen=True, slots=True)
class BodyKey:
    """BODY (``with_header`` False) or TEXT (True)."""

    value: str
    with_header: bool = False


@dataclass(frozen=True, slots=True)
class DateKey:
    """SINCE/BEFORE/ON (``sent`` False: internal date) and SENT- forms (Date: header)."""

    op: Literal["before", "on", "since"]
    day: date
    sent: bool = False


@dataclass(frozen=True, slots=True)
class SizeKey:
    larger: bool
    size: int


@dataclass(frozen=True, slots=True)
class ModSeqKey:
    """MODSEQ (RFC 7162 3.1.5): messages whose MODSEQ is at least ``modseq``. An
    entry name (``"/flags/\\draft" all``) is accepted and the whole message's
    MODSEQ used, as the RFC asks of a server that keeps no per-flag ones."""

    modseq: int


@dataclass(frozen=True, slots=True)
class NotKey:
    key: SearchKey


@dataclass(frozen=True, slots=True)
class OrKey:
    """Any of ``keys``: ``OR a OR b c`` is one OrKey of three (OR is associative)."""

    keys: tuple[SearchKey, ...]


@dataclass(frozen=True, slots=True)
class AndKey:
    keys: tuple[SearchKey, ...]


SearchKey: TypeAlias = (
    "AllKey | FlagKey | RecentKey | SequenceKey | HeaderKey | BodyKey | DateKey | SizeKey"
    " | ModSeqKey | NotKey | OrKey | AndKey"
)


@dataclass(frozen=True, slots=True)
class SearchQuery:
    """A SEARCH: its charset, its keys, and (RFC 4731 ESEARCH) what to RETURN: None for
    a plain SEARCH, else the options upper-cased (``RETURN ()`` is ALL)."""

    charset: str | None
    key: SearchKey
    returns: tuple[str, ...] | None = None


# RFC 4731 3.1: what SEARCH RETURN (...) may ask for (SAVE needs SEARCHRES: not here).
ESEARCH_RETURNS: Final = ("MIN", "MAX", "ALL", "COUNT")


_FLAG_KEYS: Final = {
    "ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft",
    "FLAGGED": "\\Flagged", "SEEN": "\\Seen",
}
_HEADER_KEYS: Final = frozenset({"FROM", "TO", "CC", "BCC", "SUBJECT"})
_ENTRY_TYPES: Final = frozenset({"priv", "shared", "all"})
_DATE_KEYS: Final[dict[str, tuple[Literal["before", "on", "since"], bool]]] = {
    "BEFORE": ("before", False), "ON": ("on", False), "SINCE": ("since", False),
    "SENTBEFORE": ("before", True), "SENTON": ("on", True), "SENTSINCE": ("since", True),
}


# How deeply keys may nest (NOT, OR, parentheses) once chains of OR are merged and
# NOT NOT cancelled: 15,000 NOTs or a 10,000-term OR chain parse flat; what is left
# this deep is no search a person wrote, and would only cost time.
MAX_SEARCH_DEPTH: Final = 100


@dataclass
class _Group:
    """A parenthesised list of keys being read (or the whole query): ANDed."""

    values: list[Value]
    pos: int = 0
    keys: list[SearchKey] = field(default_factory=list)


@dataclass
class _Operator:
    """A NOT or an OR waiting for its operands; an OR read as an OR's operand widens it."""

    word: Literal["NOT", "OR"]
    arity: int
    operands: list[SearchKey] = field(default_factory=list)


def _and(keys: list[SearchKey]) -> SearchKey:
    return keys[0] if len(keys) == 1 else AndKey(tuple(keys))


def _complete(operator: _Operator) -> SearchKey:
    if operator.word == "NOT":
        (key,) = operator.operands
        return key.key if isinstance(key, NotKey) else NotKey(key)
    keys: list[SearchKey] = []
    for key in operator.operands:
        keys.extend(key.keys if isinstance(key, OrKey) else (key,))
    return OrKey(tuple(keys))


class _SearchParser:
    """SEARCH keys in prefix notation, read without recursion: a stack of the lists
    and operators still open. ``OR a OR b c`` becomes one OR of three and ``NOT NOT``
    cancels as it is read, so chains a client builds cost no depth."""

    def __init__(self, codec: str) -> None:
        self.charset = codec
        self.group = _Group([])

    def take(self, what: str) -> Value:
        group = self.group
        if group.pos >= len(group.values):
            raise IMAPSyntaxError(f"missing {what}")
        value = group.values[group.pos]
        group.pos += 1
        return value

    def string(self, what: str) -> str:
        value = self.take(what)
        if isinstance(value, list):
            raise IMAPSyntaxError(f"{what} must be a string")
        data = value.value if isinstance(value, String) else wire_bytes(value.value)
        try:
            return data.decode(self.charset)
        except UnicodeDecodeError as exc:
            raise IMAPSyntaxError(f"{what} is not valid {self.charset}") from exc

    def keys(self, values: list[Value]) -> SearchKey:
        """The keys of ``values``, ANDed."""
        top = _Group(values)
        stack: list[_Group | _Operator] = [top]
        groups = [top]
        self.group = top
        while True:
            open_ = stack[-1]
            if isinstance(open_, _Group) and open_.pos >= len(open_.values):
                stack.pop()
                groups.pop()
                if not open_.keys:
                    raise IMAPSyntaxError("empty search key list")
                done = _and(open_.keys)
                if not stack:
                    return done
                self.group = groups[-1]
                self._give(stack, done)
                continue
            value = self.take("a search key")
            if isinstance(value, list):
                group = _Group(value)
                stack.append(group)
                groups.append(group)
                self.group = group
            elif isinstance(value, Atom) and value.value.upper() == "NOT":
                if isinstance(open_, _Operator) and open_.word == "NOT":
                    stack.pop()  # NOT NOT x is x
                else:
                    stack.append(_Operator("NOT", 1))
            elif isinstance(value, Atom) and value.value.upper() == "OR":
                if isinstance(open_, _Operator) and open_.word == "OR":
                    open_.arity += 1  # OR a (OR b c) is OR of a, b and c
                else:
                    stack.append(_Operator("OR", 2))
            else:
                self._give(stack, self.key(value))
                continue
            if len(stack) > MAX_SEARCH_DEPTH:
                raise IMAPSyntaxError(
                    f"search keys nested more than {MAX_SEARCH_DEPTH} deep"
                )

    @staticmethod
    def _give(stack: list[_Group | _Operator], key: SearchKey) -> None:
        """Hand a finished key to what is open, completing the operators it fills."""
        while True:
            open_ = stack[-1]
            if isinstance(open_, _Group):
                open_.keys.append(key)
                return
            open_.operands.append(key)
            if len(open_.operands) < open_.arity:
                return
            stack.pop()
            key = _complete(open_)

    def key(self, value: Value) -> SearchKey:
        """A key that is neither a list, NOT nor OR (its arguments are taken after it)."""
        if isinstance(value, String | list):
            raise IMAPSyntaxError(f"{describe(value)} is not a search key")
        word = value.value.upper()
        if word == "ALL":
            return AllKey()
        if word in _FLAG_KEYS:
            return FlagKey(_FLAG_KEYS[word], True)
        if word.startswith("UN") and word[2:] in _FLAG_KEYS:
            return FlagKey(_FLAG_KEYS[word[2:]], False)
        if word in ("KEYWORD", "UNKEYWORD"):
            flag = self.take("a keyword")
            if not isinstance(flag, Atom):
                raise IMAPSyntaxError("KEYWORD takes a flag keyword")
            return FlagKey(normalize_flag(flag.value), word == "KEYWORD")
        if word == "RECENT":
            return RecentKey(True)
        if word == "OLD":
            return RecentKey(False)
        if word == "NEW":
            return AndKey((RecentKey(True), FlagKey("\\Seen", False)))
        if word in _HEADER_KEYS:
            return HeaderKey(word.capitalize() if word != "CC" else "Cc",
                             self.string(f"the {word} string"))
        if word == "HEADER":
            name = self.string("the header field name")
            return HeaderKey(name, self.string("the HEADER string"))
        if word in ("BODY", "TEXT"):
            return BodyKey(self.string(f"the {word} string"), word == "TEXT")
        if word in _DATE_KEYS:
            op, sent = _DATE_KEYS[word]
            return DateKey(op, parse_date(self.take("a date")), sent)
        if word in ("LARGER", "SMALLER"):
            return SizeKey(word == "LARGER", number(self.take("a size"), "the size"))
        if word == "UID":
            return SequenceKey(parse_sequence_set(self.take("a UID set")), uid=True)
        if word == "MODSEQ":
            first = self.take("a mod-sequence")
            if isinstance(first, String):  # entry-name entry-type-req
                kind = self.take("an entry type")
                if not isinstance(kind, Atom) or kind.value.lower() not in _ENTRY_TYPES:
                    raise IMAPSyntaxError("the MODSEQ entry type must be priv, shared or all")
                first = self.take("a mod-sequence")
            return ModSeqKey(parse_modseq(first, zero=True))
        if word[:1].isdigit() or word[:1] == "*":
            return SequenceKey(parse_sequence_set(value))
        raise IMAPSyntaxError(f"unknown search key {value.value[:40]}")


def parse_search(args: str, literals: Sequence[bytes] = ()) -> SearchQuery:
    """SEARCH arguments as a key tree: top-level keys are ANDed.

    ``CHARSET x`` may name any charset Python decodes, in any of its names
    (``utf8``, ``latin1``, ``ISO-8859-1``, ``windows-1252``...; as Dovecot takes
    what iconv knows); the search strings are decoded from it. Others raise
    :class:`SearchCharsetError`. Without CHARSET, strings are UTF-8 (RFC 9051).
    """
    values = tokenize(args, literals, raw8=True)
    returns: tuple[str, ...] | None = None
    if len(values) >= 2 and isinstance(values[0], Atom) and values[0].value.upper() == "RETURN":
        if not isinstance(values[1], list):
            raise IMAPSyntaxError("SEARCH RETURN takes a parenthesised list of options")
        asked = []
        for value in values[1]:
            if not isinstance(value, Atom) or value.value.upper() not in ESEARCH_RETURNS:
                raise IMAPSyntaxError(f"unknown SEARCH RETURN option {describe(value)}")
            asked.append(value.value.upper())
        returns = tuple(dict.fromkeys(asked)) or ("ALL",)
        values = values[2:]
    charset: str | None = None
    codec = "utf-8"
    if len(values) >= 2 and isinstance(values[0], Atom) and values[0].value.upper() == "CHARSET":
        charset = astring(values[1], "the charset").upper()
        found = search_codec(charset)
        if found is None:
            raise SearchCharsetError(charset)
        codec = found
        values = values[2:]
    if not values:
        raise IMAPSyntaxError("SEARCH needs a search key")
    return SearchQuery(charset, _SearchParser(codec).keys(values), returns)


def _compact(numbers: Sequence[int]) -> str:
    """Ascending numbers as a sequence set: 1,2,3,5 is ``1:3,5``."""
    spans: list[str] = []
    start = previous = numbers[0]
    for n in numbers[1:]:
        if n != previous + 1:
            spans.append(f"{start}:{previous}" if previous != start else str(start))
            start = n
        previous = n
    spans.append(f"{start}:{previous}" if previous != start else str(start))
    return ",".join(spans)


def esearch_response(tag: str, uid: bool, found: Sequence[int], returns: Sequence[str]) -> str:
    """RFC 4731's ``ESEARCH (TAG "t") [UID] MIN m MAX n COUNT c ALL set``, the text after
    ``* ``; ``found`` ascending. With nothing found only COUNT 0 is said (MIN, MAX and
    ALL have no value to give)."""
    tag_text = tag.replace("\\", "\\\\").replace('"', '\\"')
    parts = [f'ESEARCH (TAG "{tag_text}")']
    if uid:
        parts.append("UID")
    for option in returns:
        if option == "COUNT":
            parts.append(f"COUNT {len(found)}")
        elif not found:
            continue
        elif option == "MIN":
            parts.append(f"MIN {found[0]}")
        elif option == "MAX":
            parts.append(f"MAX {found[-1]}")
        elif option == "ALL":
            parts.append(f"ALL {_compact(found)}")
    return " ".join(parts)


# -- evaluation ------------------------------------------------------------------


class SearchMessage(Protocol):
    """What SEARCH needs of a message; headers and body are asked for lazily."""

    @property
    def seq(self) -> int: ...
    @property
    def uid(self) -> int: ...
    @property
    def flags(self) -> Collection[str]: ...
    @property
    def recent(self) -> bool: ...
    @property
    def size(self) -> int: ...
    @property
    def internaldate_datetime(self) -> datetime: ...
    @property
    def modseq(self) -> int: ...

    def header_values(self, name: str) -> list[str]: ...
    def has_header(self, name: str) -> bool: ...
    def header_text(self) -> str: ...
    def body_text(self) -> str: ...


def _cost(key: SearchKey) -> int:
    if isinstance(key, AllKey):
        return 0
    if isinstance(key, FlagKey | RecentKey | SequenceKey | SizeKey | ModSeqKey):
        return 1
    if isinstance(key, DateKey):
        return 3 if key.sent else 1
    if isinstance(key, HeaderKey):
        return 4
    if isinstance(key, BodyKey):
        return 10
    if isinstance(key, NotKey):
        return _cost(key.key)
    return sum(_cost(k) for k in key.keys)


def _merge_sequences(keys: list[SearchKey]) -> list[SearchKey]:
    """ORed sequence sets as one set per kind (numbers, UIDs): a union, tested at once."""
    merged: list[SearchKey] = []
    sets: dict[bool, list[SequenceKey]] = {False: [], True: []}
    for key in keys:
        if isinstance(key, SequenceKey):
            sets[key.uid].append(key)
        else:
            merged.append(key)
    for uid, found in sets.items():
        if len(found) == 1:
            merged.append(found[0])
        elif found:
            ranges = tuple(r for key in found for r in key.sequence_set.ranges)
            merged.append(SequenceKey(SequenceSet(ranges), uid))
    return merged


def optimize(key: SearchKey) -> SearchKey:
    """The same key with nested ANDs and ORs flattened, ORed sequence sets merged and
    every AND ordered cheapest first."""
    if isinstance(key, NotKey):
        inner = optimize(key.key)
        return inner.key if isinstance(inner, NotKey) else NotKey(inner)
    if isinstance(key, OrKey):
        alternatives: list[SearchKey] = []
        for child in key.keys:
            child = optimize(child)
            if isinstance(child, AllKey):
                return child
            alternatives.extend(child.keys if isinstance(child, OrKey) else (child,))
        alternatives = _merge_sequences(list(dict.fromkeys(alternatives)))
        if len(alternatives) == 1:
            return alternatives[0]
        return OrKey(tuple(sorted(alternatives, key=_cost)))
    if isinstance(key, AndKey):
        flat: list[SearchKey] = []
        for child in key.keys:
            child = optimize(child)
            if isinstance(child, AndKey):
                flat.extend(child.keys)
            elif not isinstance(child, AllKey):
                flat.append(child)
        flat = list(dict.fromkeys(flat))
        if not flat:
            return AllKey()
        if len(flat) == 1:
            return flat[0]
        return AndKey(tuple(sorted(flat, key=_cost)))
    return key


def _sent_date(message: SearchMessage) -> date | None:
    values = message.header_values("date")
    if not values:
        return None
    parsed = parsedate_tz(values[0])
    if parsed is None:
        return None
    try:
        return date(parsed[0], parsed[1], parsed[2])
    except ValueError:
        return None


def _compare_date(day: date | None, key: DateKey) -> bool:
    if day is None:
        return False
    if key.op == "before":
        return day < key.day
    if key.op == "on":
        return day == key.day
    return day >= key.day


def _has_flag(message: SearchMessage, flag: str) -> bool:
    if flag in message.flags:
        return True
    if flag.startswith("\\"):
        return False
    upper = flag.upper()
    return any(f.upper() == upper for f in message.flags)


def matches(key: SearchKey, message: SearchMessage, *, max_seq: int, max_uid: int) -> bool:
    """Whether ``message`` matches ``key``; ``*`` in a set is max_seq or max_uid."""
    if isinstance(key, AllKey):
        return True
    if isinstance(key, FlagKey):
        return _has_flag(message, key.flag) == key.present
    if isinstance(key, RecentKey):
        return message.recent == key.present
    if isinstance(key, SequenceKey):
        if key.uid:
            return key.sequence_set.contains(message.uid, max_uid)
        return key.sequence_set.contains(message.seq, max_seq)
    if isinstance(key, SizeKey):
        return message.size > key.size if key.larger else message.size < key.size
    if isinstance(key, ModSeqKey):
        return message.modseq >= key.modseq
    if isinstance(key, DateKey):
        if key.sent:
            return _compare_date(_sent_date(message), key)
        return _compare_date(message.internaldate_datetime.date(), key)
    if isinstance(key, HeaderKey):
        if not key.value:
            return message.has_header(key.field)
        needle = key.value.casefold()
        return any(needle in value.casefold() for value in message.header_values(key.field))
    if isinstance(key, BodyKey):
        needle = key.value.casefold()
        if key.with_header and needle in message.header_text().casefold():
            return True
        return needle in message.body_text().casefold()
    if isinstance(key, NotKey):
        return not matches(key.key, message, max_seq=max_seq, max_uid=max_uid)
    if isinstance(key, OrKey):
        return any(matches(k, message, max_seq=max_seq, max_uid=max_uid) for k in key.keys)
    return all(matches(k, message, max_seq=max_seq, max_uid=max_uid) for k in key.keys)


def uses_modseq(key: SearchKey) -> bool:
    """Whether a MODSEQ key is anywhere in ``key`` (then SEARCH answers with the
    highest MODSEQ found, RFC 7162 3.1.5). Iterative: keys nest up to
    MAX_SEARCH_DEPTH, OR chains are wide."""
    pending = [key]
    while pending:
        current = pending.pop()
        if isinstance(current, ModSeqKey):
            return True
        if isinstance(current, NotKey):
            pending.append(current.key)
        elif isinstance(current, OrKey | AndKey):
            pending.extend(current.keys)
    return False


def search(
    query: SearchQuery | SearchKey,
    messages: Sequence[SearchMessage],
    *,
    uid: bool = False,
    max_seq: int | None = None,
    max_uid: int | None = None,
) -> list[int]:
    """Message numbers (or UIDs, for UID SEARCH) of the matching messages, in order.

    ``messages`` is the selected mailbox in order; ``max_seq``/``max_uid`` (what
    ``*`` means) default to its last message.
    """
    key = optimize(query.key if isinstance(query, SearchQuery) else query)
    if max_seq is None:
        max_seq = messages[-1].seq if messages else 0
    if max_uid is None:
        max_uid = messages[-1].uid if messages else 0
    return [
        message.uid if uid else message.seq
        for message in messages
        if matches(key, message, max_seq=max_seq, max_uid=max_uid)
    ]
