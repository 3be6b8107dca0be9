"""SEARCH (RFC 3501 6.4.4) evaluated over messages, no I/O.

The key tree comes from :func:`mailtalk.servers.imap.parse.parse_search`. Each
message is reached through :class:`SearchMessage` (``FetchMessage`` from
``imap_fetch`` is one), which parses headers and body only when a key asks for
them; ANDed keys are tried cheapest first (flags, numbers, sizes and dates before
headers, headers before the body), so ``SEARCH UNSEEN SUBJECT x`` reads no header
of a message that is already seen.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import date, datetime
from email.utils import parsedate_tz
from typing import Protocol

from mailtalk.servers.imap.parse import (
    AllKey,
    AndKey,
    BodyKey,
    DateKey,
    FlagKey,
    HeaderKey,
    NotKey,
    OrKey,
    RecentKey,
    SearchKey,
    SearchQuery,
    SequenceKey,
    SizeKey,
)

__all__ = ["SearchMessage", "matches", "optimize", "search"]


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

    def header_values(self, name: str) -> list[str]: ...
    def has_header(self, name: str) -> bool: ...
    def header_text(self) -> str: ...
    def body_text(self) -> str: ...


def _cost(key: SearchKey) -> int:
    if isinstance(key, AllKey):
        return 0
    if isinstance(key, FlagKey | RecentKey | SequenceKey | SizeKey):
        return 1
    if isinstance(key, DateKey):
        return 3 if key.sent else 1
    if isinstance(key, HeaderKey):
        return 4
    if isinstance(key, BodyKey):
        return 10
    if isinstance(key, NotKey):
        return _cost(key.key)
    if isinstance(key, OrKey):
        return _cost(key.left) + _cost(key.right)
    return sum(_cost(k) for k in key.keys)


def optimize(key: SearchKey) -> SearchKey:
    """The same key with nested ANDs flattened and every AND ordered cheapest first."""
    if isinstance(key, NotKey):
        return NotKey(optimize(key.key))
    if isinstance(key, OrKey):
        return OrKey(optimize(key.left), optimize(key.right))
    if isinstance(key, AndKey):
        flat: list[SearchKey] = []
        for child in key.keys:
            child = optimize(child)
            if isinstance(child, AndKey):
                flat.extend(child.keys)
            elif not isinstance(child, AllKey):
                flat.append(child)
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
        return matches(key.left, message, max_seq=max_seq, max_uid=max_uid) or matches(
            key.right, message, max_seq=max_seq, max_uid=max_uid
        )
    return all(matches(k, message, max_seq=max_seq, max_uid=max_uid) for k in key.keys)


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
