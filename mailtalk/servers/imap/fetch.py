"""FETCH data items rendered from a stored message (RFC 3501 6.4.5, 7.4.2), no I/O.

:func:`render_fetch` returns the text between the parentheses of ``* n FETCH (...)``
with each literal written as its ``{n}`` marker, and the literal bytes in order:
exactly what the IMAP core's ``send(Untagged(text, literals))`` expects
(``FetchRendering.untagged(seq)`` builds that event). A :class:`FetchRenderer`
prepares one FETCH command's items once for all its messages and, when they are
simple (flags, sizes, dates, header fields), writes the wire bytes directly.

The message model is :mod:`mailtalk.servers.imap.message`, ENVELOPE and
BODYSTRUCTURE are :mod:`mailtalk.servers.imap.structure`, BINARY decoding is
:mod:`mailtalk.servers.imap.binary`.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Final

from mailtalk.protocols.imap_events import Untagged
from mailtalk.servers.imap.binary import binary_data
from mailtalk.servers.imap.message import FetchMessage, find_part
from mailtalk.servers.imap.message_args import MONTHS, FetchItem, Section
from mailtalk.servers.imap.output import ResponseWriter, astring_text, no_nul
from mailtalk.servers.imap.structure import render_body, render_envelope

__all__ = [
    "FetchRenderer",
    "FetchRendering",
    "format_internaldate",
    "kept_answer_usable",
    "render_fetch",
    "sets_seen",
]


def format_internaldate(when: datetime | float) -> str:
    """``17-Jul-1996 02:44:25 -0700`` (without the quotes)."""
    if not isinstance(when, datetime):
        when = datetime.fromtimestamp(when, UTC)
    elif when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    offset = when.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (f"{when.day:02d}-{MONTHS[when.month - 1]}-{when.year:04d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} "
            f"{sign}{minutes // 60:02d}{minutes % 60:02d}")


# -- HEADER.FIELDS answers shared by fetches -----------------------------------------------


class _SubsetCache:
    """HEADER.FIELDS answers of messages read header-only: by group (field names, NOT,
    folder, UIDVALIDITY: a message never changes under its UID there), then by UID.
    Only the answers are kept, some 110 bytes beside each, not the header blocks they
    came from. Beyond ``max_bytes`` the least recently used groups are dropped; a group
    bigger than that alone keeps what it has and takes no more. So a listing of a
    folder too big for the cache is still answered from it in part on every pass,
    where dropping single answers, least recently used first, would lose every one
    before the next pass reached it."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._groups: dict[tuple[object, ...], dict[int, bytes]] = {}  # least recent first
        self._costs: dict[tuple[object, ...], int] = {}
        self._bytes = 0

    def get(self, group: tuple[object, ...], uid: int) -> bytes | None:
        with self._lock:
            answers = self._groups.get(group)
            if answers is None:
                return None
            if next(reversed(self._groups)) != group:
                self._groups[group] = self._groups.pop(group)  # the most recent now
            return answers.get(uid)

    def table(self, group: tuple[object, ...]) -> dict[int, bytes]:
        """The answers of ``group`` by UID (used now: the most recent group), to look up
        many without this cache's lock; empty if there are none (yet). A group dropped
        meanwhile stays right for whoever holds its table: messages never change."""
        with self._lock:
            answers = self._groups.pop(group, None)
            if answers is None:
                return {}
            self._groups[group] = answers
            return answers

    def put(self, group: tuple[object, ...], uid: int, value: bytes) -> None:
        cost = len(value) + _ENTRY_BYTES
        with self._lock:
            answers = self._groups.pop(group, None)
            if answers is None:
                answers = {}
                self._costs[group] = 0
            self._groups[group] = answers
            while self._bytes + cost > self.max_bytes and len(self._groups) > 1:
                oldest = next(iter(self._groups))
                del self._groups[oldest]
                self._bytes -= self._costs.pop(oldest)
            if self._bytes + cost > self.max_bytes or uid in answers:
                return  # this group fills the cache alone: it keeps what it has
            answers[uid] = value
            self._costs[group] += cost
            self._bytes += cost

    def clear(self) -> None:
        with self._lock:
            self._groups.clear()
            self._costs.clear()
            self._bytes = 0


# An answer's cost beside its bytes: the bytes object, its UID and its slot in the dict.
_ENTRY_BYTES = 110
_SUBSETS: Final = _SubsetCache(32 * 1024 * 1024)


# -- sections ---------------------------------------------------------------------------


def _section_data(message: FetchMessage, section: Section) -> bytes | None:
    """The bytes a BODY[section] names; None when the part does not exist."""
    text = section.text
    if not section.part:
        if text is None:
            return message.crlf
        header = message.header
        if text == "TEXT":
            return message.text
        if text == "HEADER":
            return header.block
        return header.subset(section.fields, exclude=text == "HEADER.FIELDS.NOT")
    entity = find_part(message.root, section.part)
    if entity is None:
        return None
    if text is None:
        return entity.body
    if text == "MIME":
        return entity.header.block
    inner = entity.message
    if inner is None:
        return None
    if text == "TEXT":
        return inner.body
    if text == "HEADER":
        return inner.header.block
    return inner.header.subset(section.fields, exclude=text == "HEADER.FIELDS.NOT")


# -- render_fetch ----------------------------------------------------------------------


@functools.lru_cache(maxsize=256)
def _section_spec(section: Section) -> str:
    return section.spec(astring_text)


@dataclass(frozen=True, slots=True)
class FetchRendering:
    """``text`` goes between ``* n FETCH (`` and ``)``; ``literals`` fill its markers."""

    text: str
    literals: list[bytes] = field(default_factory=list)
    sets_seen: bool = False

    def untagged(self, seq: int) -> Untagged:
        return Untagged(f"{seq} FETCH ({self.text})", tuple(self.literals))


def sets_seen(items: Iterable[FetchItem]) -> bool:
    """Whether fetching ``items`` sets \\Seen (BODY[...] without PEEK, RFC822, RFC822.TEXT).

    Call it before :func:`render_fetch` so the FLAGS rendered already show \\Seen.
    """
    return any(item.sets_seen for item in items)


def _render_item(out: ResponseWriter, item: FetchItem, message: FetchMessage) -> None:
    name = item.name
    section = item.section
    if section is not None:
        if name == "BINARY.SIZE":
            data = binary_data(message, section)
            out.text(f"BINARY.SIZE[{section.spec()}] {0 if data is None else len(data)}")
            return
        binary = name == "BINARY"
        if binary:
            data = binary_data(message, section)
            out.text(f"BINARY[{section.spec()}]")
            if item.partial is not None:
                out.text(f"<{item.partial[0]}>")  # RFC 3516 4.2: the origin, as BODY's
            out.text(" ")
        else:
            data = _section_data(message, section)
            out.text(f"BODY[{_section_spec(section)}]")
            if item.partial is not None:
                out.text(f"<{item.partial[0]}>")
            out.text(" ")
        if data is None:
            out.text("NIL")
            return
        if item.partial is not None:
            origin, octets = item.partial
            data = data[origin : origin + octets]
        if not data:
            out.text('""')
        else:
            out.literal(data, binary=binary)
        return
    if name == "FLAGS":
        flags = list(message.flags)
        if message.recent and "\\Recent" not in flags:
            flags.append("\\Recent")
        out.text("FLAGS (" + " ".join(flags) + ")")
    elif name == "UID":
        out.text(f"UID {message.uid}")
    elif name == "MODSEQ":
        out.text(f"MODSEQ ({message.modseq})")
    elif name == "RFC822.SIZE":
        out.text(f"RFC822.SIZE {message.size}")
    elif name == "INTERNALDATE":
        out.text(f'INTERNALDATE "{format_internaldate(message.internaldate)}"')
    elif name == "ENVELOPE":
        out.text("ENVELOPE ")
        render_envelope(out, message.header)
    elif name in ("BODYSTRUCTURE", "BODY"):
        out.text(name + " ")
        render_body(out, message.root, extensible=name == "BODYSTRUCTURE")
    elif name in ("RFC822", "RFC822.HEADER", "RFC822.TEXT"):
        data = {"RFC822": lambda: message.crlf, "RFC822.HEADER": lambda: message.header.block,
                "RFC822.TEXT": lambda: message.text}[name]()
        out.text(name + " ")
        if data:
            out.literal(data)
        else:
            out.text('""')
    else:
        raise ValueError(f"unknown FETCH item {name}")


def render_fetch(
    items: Sequence[FetchItem], message: FetchMessage, *, uid: bool = False
) -> FetchRendering:
    """The FETCH response data for ``items`` (in order); ``uid`` adds UID (UID FETCH).

    BODY.PEEK[...] is rendered as BODY[...]; ``sets_seen`` tells whether the items
    (without PEEK) set \\Seen — the server stores the flag, ideally before
    rendering, and includes FLAGS in the response when it changed.
    """
    out = ResponseWriter()
    first = True
    if uid and not any(item.name == "UID" for item in items):
        out.text(f"UID {message.uid}")
        first = False
    for item in items:
        if not first:
            out.text(" ")
        first = False
        _render_item(out, item, message)
    return FetchRendering(out.getvalue(), out.literals, sets_seen(items))


# -- a FETCH command's renderer -----------------------------------------------------------

_SIMPLE_ITEMS: Final = frozenset({"FLAGS", "UID", "RFC822.SIZE", "INTERNALDATE", "MODSEQ"})
_HEADER_TEXTS: Final = frozenset({"HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT"})


# kept_batch's text of each item that is not a section, and the column it takes.
_SEQ, _UID, _FLAGS, _SIZE, _MODSEQ = range(5)  # then each section's length and answer
_KEPT_ITEMS: Final = {"UID": (b"UID %d", _UID), "FLAGS": (b"FLAGS (%s)", _FLAGS),
                      "RFC822.SIZE": (b"RFC822.SIZE %d", _SIZE),
                      "MODSEQ": (b"MODSEQ (%d)", _MODSEQ)}


def kept_answer_usable(answer: bytes) -> bool:
    """Whether :meth:`FetchRenderer.kept_batch` may send a kept answer as it is: not
    empty (that is ``""``, no literal) and without a NUL (replaced on the way out)."""
    return bool(answer) and b"\x00" not in answer


class FetchRenderer:
    """One FETCH command's items, prepared once for all its messages.

    When every item is FLAGS, UID, RFC822.SIZE, INTERNALDATE or a top-level
    ``BODY[HEADER...]`` section (``simple``), :meth:`wire` gives a message's whole
    untagged response as wire bytes — byte for byte what
    ``IMAPConnection.send(render_fetch(...).untagged(seq))`` gives (an untagged
    FETCH moves no connection state), at a fraction of the cost. Otherwise
    ``simple`` is False and the caller uses :func:`render_fetch`.
    """

    def __init__(self, items: Sequence[FetchItem], *, uid: bool = False) -> None:
        parts: list[tuple[str, tuple[str, Section, tuple[int, int] | None] | None]] = []
        if uid and not any(item.name == "UID" for item in items):
            parts.append(("UID", None))
        simple = True
        for item in items:
            section = item.section
            if section is None and item.name in _SIMPLE_ITEMS:
                parts.append((item.name, None))
            elif (
                section is not None
                and item.name == "BODY"
                and not section.part
                and section.text in _HEADER_TEXTS
            ):
                head = f"BODY[{_section_spec(section)}]"
                if item.partial is not None:
                    head += f"<{item.partial[0]}>"
                if "{" in head or "\r" in head or "\n" in head:
                    simple = False  # text that looks like a literal marker: the general path
                parts.append(("SECTION", (head + " ", section, item.partial)))
            else:
                simple = False
        self.simple = simple
        self._parts = parts
        # (field names, NOT) of each section, when all are HEADER.FIELDS(.NOT): answers
        # a message's cache key may find without its header block being read.
        sections = [arg[1] for kind, arg in parts if kind == "SECTION" and arg is not None]
        self._fields: list[tuple[tuple[str, ...], bool]] | None = None
        if simple and sections and all(s.text != "HEADER" for s in sections):
            self._fields = [(s.fields, s.text == "HEADER.FIELDS.NOT") for s in sections]

        # One bytes %-template of the whole response, for kept_batch, and the column
        # of each value it takes, in order (_SEQ.._MODSEQ, then 5 + 2i and 6 + 2i for
        # section i's length and answer). None when an item needs more than those
        # (INTERNALDATE, a partial section).
        self._kept_template: bytes | None = None
        self._kept_columns: tuple[int, ...] = ()
        if self._fields is not None and all(
            kind != "INTERNALDATE" and (arg is None or arg[2] is None) for kind, arg in parts
        ):
            template, columns, sections_seen = b"* %d FETCH (", [_SEQ], 0
            for number, (kind, arg) in enumerate(parts):
                template += b" " if number else b""
                if arg is None:
                    text, column = _KEPT_ITEMS[kind]
                    template += text
                    columns.append(column)
                else:
                    template += arg[0].encode("utf-8").replace(b"%", b"%%") + b"{%d}\r\n%s"
                    columns += [5 + 2 * sections_seen, 6 + 2 * sections_seen]
                    sections_seen += 1
            self._kept_template = template + b")\r\n"
            self._kept_columns = tuple(columns)

    @property
    def kept(self) -> bool:
        """Whether :meth:`kept_batch` can answer (every section HEADER.FIELDS(.NOT), whole,
        beside FLAGS, UID, RFC822.SIZE and MODSEQ)."""
        return self._kept_template is not None

    def kept_batch(
        self,
        seqs: Sequence[int],
        uids: Sequence[int],
        flags: Sequence[bytes],
        sizes: Sequence[int],
        modseqs: Sequence[int],
        answers: Sequence[Sequence[bytes]],
    ) -> bytes:
        """What :meth:`wire` gives for each of several messages, one after the other,
        from their columns: ``flags`` each message's FLAGS joined by spaces, encoded;
        ``answers[i]`` section i's kept answers (in the order of :meth:`answer_tables`),
        each one :func:`kept_answer_usable`. One %-format a message, in C: no Python
        step per message. Only for a renderer that is :attr:`kept`."""
        template = self._kept_template
        assert template is not None
        columns: list[Sequence[object]] = [seqs, uids, flags, sizes, modseqs]
        for section in answers:
            columns += (list(map(len, section)), section)
        values = zip(*map(columns.__getitem__, self._kept_columns), strict=True)
        return b"".join(map(template.__mod__, values))

    def kept_wire(
        self, seq: int, uid: int, flags: str, size: int, modseq: int, answers: list[bytes]
    ) -> bytes | None:
        """:meth:`kept_batch` for one message (``flags`` as text); None if the renderer or
        an answer needs :meth:`wire` (an empty answer, a NUL in one)."""
        if not self.kept or not all(map(kept_answer_usable, answers)):
            return None
        return self.kept_batch([seq], [uid], [flags.encode("utf-8")], [size], [modseq],
                               [[answer] for answer in answers])

    @property
    def fields_only(self) -> bool:
        """Every section asked for is HEADER.FIELDS or HEADER.FIELDS.NOT (:meth:`wire`)."""
        return self._fields is not None

    def answer_tables(
        self, folder: str, uidvalidity: int
    ) -> list[tuple[tuple[tuple[str, ...], bool], dict[int, bytes]]] | None:
        """For a FETCH of the folder's messages: each section's (field names, NOT) and its
        kept answers by UID, if every section is HEADER.FIELDS(.NOT); else None."""
        if self._fields is None:
            return None
        return [((fields, exclude), _SUBSETS.table((fields, exclude, folder, uidvalidity)))
                for fields, exclude in self._fields]  # fmt: skip

    @staticmethod
    def cached_answers(
        tables: list[tuple[tuple[tuple[str, ...], bool], dict[int, bytes]]], uid: int
    ) -> dict[tuple[tuple[str, ...], bool], bytes] | None:
        """Every section's answer for message ``uid`` from ``answer_tables``, if all are
        kept (give them to its FetchMessage as ``answers``: :meth:`wire` then needs none
        of its bytes); else None."""
        answers = {}
        for key, table in tables:
            answer = table.get(uid)
            if answer is None:
                return None
            answers[key] = answer
        return answers

    def wire(self, message: FetchMessage) -> bytes:
        """``* SEQ FETCH (...)`` CRLF with its literals, for a ``simple`` renderer."""
        out = bytearray()
        pending = [f"* {message.seq} FETCH ("]
        separator = ""
        for kind, arg in self._parts:
            if separator:
                pending.append(separator)
            separator = " "
            if kind == "FLAGS":
                flags = list(message.flags)
                if message.recent and "\\Recent" not in flags:
                    flags.append("\\Recent")
                pending.append("FLAGS (" + " ".join(flags) + ")")
            elif kind == "UID":
                pending.append(f"UID {message.uid}")
            elif kind == "MODSEQ":
                pending.append(f"MODSEQ ({message.modseq})")
            elif kind == "RFC822.SIZE":
                pending.append(f"RFC822.SIZE {message.size}")
            elif kind == "INTERNALDATE":
                pending.append(f'INTERNALDATE "{format_internaldate(message.internaldate)}"')
            else:
                assert arg is not None
                head, section, partial = arg
                if section.text == "HEADER":
                    data = message.header.block
                else:
                    exclude = section.text == "HEADER.FIELDS.NOT"
                    if message.answers is not None:
                        data = message.answers[section.fields, exclude]
                    elif message.cache_key is not None:
                        folder, uidvalidity, uid = message.cache_key
                        group = (section.fields, exclude, folder, uidvalidity)
                        cached = _SUBSETS.get(group, uid)
                        if cached is None:
                            cached = message.header.subset(section.fields, exclude=exclude)
                            _SUBSETS.put(group, uid, cached)
                        data = cached
                    else:
                        data = message.header.subset(section.fields, exclude=exclude)
                if partial is not None:
                    data = data[partial[0] : partial[0] + partial[1]]
                if not data:
                    pending.append(head + '""')
                    continue
                if b"\x00" in data:
                    data = no_nul(data)
                pending.append(f"{head}{{{len(data)}}}")
                out += "".join(pending).encode("utf-8")
                out += b"\r\n"
                out += data
                pending = []
        pending.append(")\r\n")
        out += "".join(pending).encode("utf-8")
        return bytes(out)
