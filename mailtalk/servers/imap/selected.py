"""The IMAP commands on the selected mailbox (RFC 3501 6.4).

CHECK, CLOSE, UNSELECT (RFC 3691), EXPUNGE, SEARCH, FETCH, STORE, COPY and MOVE
(RFC 6851), and their UID forms (UID EXPUNGE from RFC 4315), each a function of the
session and the command. FETCH reads each message only as far as its items need
(the header block alone for header fields) and sends the responses in batches,
waiting for a slow reader between them; SEARCH reads a message's text only when a
key asks for it, and runs on a worker thread so that a heavy one does not hold up
the other sessions.
"""

from __future__ import annotations

import re
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from concurrent.futures import ThreadPoolExecutor
from itertools import accumulate
from typing import TYPE_CHECKING, Final, TypeVar

from mailtalk.protocols.imap_events import Command, Untagged
from mailtalk.servers.imap.binary import CorruptTransferEncoding, UnknownTransferEncoding
from mailtalk.servers.imap.fetch import FetchRenderer, kept_answer_usable, render_fetch
from mailtalk.servers.imap.mailboxes import mailbox_arg
from mailtalk.servers.imap.message import FetchMessage
from mailtalk.servers.imap.message_args import (
    FetchItem,
    parse_fetch,
    parse_sequence_set,
    parse_store,
)
from mailtalk.servers.imap.qresync import vanished_line, vanished_uids
from mailtalk.servers.imap.streamed import STREAM_ABOVE, streamed_item, write_streamed
from mailtalk.servers.imap.tokens import IMAPSyntaxError, SearchCharsetError, tokenize
from mailtalk.store.mailbox import MailboxError

if TYPE_CHECKING:
    import asyncio
    from datetime import datetime

    from mailtalk.servers.imap.message_args import SequenceSet
    from mailtalk.servers.imap.server import IMAPServerProtocol
    from mailtalk.store.mailbox import Mailbox, MessageInfo
    from mailtalk.store.view import FolderView

__all__ = [
    "check",
    "close_mailbox",
    "copy_or_move",
    "expunge",
    "fetch_messages",
    "search_messages",
    "sort_or_thread",
    "store_flags",
    "uid_set",
    "unselect",
]

CHUNK: Final = 64 * 1024  # FETCH responses leave in batches of about this size
_DATA_FREE_ITEMS: Final = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "MODSEQ"})


def _header_only(item: FetchItem) -> bool:
    """Whether the item needs no more of the message than its top-level header block."""
    name = item.name
    section = item.section
    if section is None:
        return name in _DATA_FREE_ITEMS or name in ("ENVELOPE", "RFC822.HEADER")
    return (
        name == "BODY"
        and not section.part
        and section.text in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT")
    )


def uid_set(uids: Sequence[int]) -> str:
    """``[1, 2, 3, 7]`` as ``1:3,7`` (order kept: COPYUID pairs the two sets by position)."""
    parts: list[str] = []
    start = prev = None
    for uid in uids:
        if prev is not None and uid == prev + 1:
            prev = uid
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}:{prev}")
        start = prev = uid
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}:{prev}")
    return ",".join(parts)


class _SearchView:
    """A message as SEARCH sees it; the file is read only if a key needs its text."""

    def __init__(self, mailbox: Mailbox, info: MessageInfo, seq: int) -> None:
        self._mailbox = mailbox
        self._info = info
        self.seq = seq
        self.uid = info.uid
        self.flags = info.flags - {"\\Recent"}
        self.recent = "\\Recent" in info.flags
        self.size = info.rfc822_size
        self.modseq = info.modseq
        self._message: FetchMessage | None = None

    @property
    def internaldate_datetime(self) -> datetime:
        return self._info.internaldate

    def _loaded(self) -> FetchMessage:
        if self._message is None:
            try:
                raw = self._mailbox.read_message(self.uid)
            except (MailboxError, OSError):
                raw = b""
            # Without INTERNALDATE: a date key asks internaldate_datetime, read lazily.
            self._message = FetchMessage(raw, uid=self.uid, flags=self.flags,
                                         rfc822_size=self.size, seq=self.seq)
        return self._message

    def header_values(self, name: str) -> list[str]:
        return self._loaded().header_values(name)

    def has_header(self, name: str) -> bool:
        return self._loaded().has_header(name)

    def header_text(self) -> str:
        return self._loaded().header_text()

    def body_text(self) -> str:
        return self._loaded().body_text()


def _positions(
    session: IMAPServerProtocol, sequence_set: SequenceSet, uid: bool
) -> Sequence[int]:
    """Where the messages a sequence set or UID set names are in the selected mailbox's
    view (position + 1 is the sequence number), ascending; no message object is made,
    and for one range (``1:*``) no list either."""
    view = session.box.view
    if uid:
        uids = view.uids
        if not uids:
            return []
        spans = [range(bisect_left(uids, low), bisect_right(uids, high))
                 for low, high in sequence_set.resolved(uids[-1])]
    else:
        count = len(view)
        largest = sequence_set.max_number()
        if largest is not None and largest > count:
            raise IMAPSyntaxError("Invalid message sequence number")
        spans = [range(max(low, 1) - 1, min(high, count))
                 for low, high in sequence_set.resolved(count) if low <= count] if count else []
    if len(spans) == 1:
        return spans[0]
    return [position for span in spans for position in span]


def _targets(
    session: IMAPServerProtocol, sequence_set: SequenceSet, uid: bool
) -> list[tuple[int, MessageInfo]]:
    """(sequence number, message) for a sequence set or UID set, ascending."""
    view = session.box.view
    return [(p + 1, view.info(p)) for p in _positions(session, sequence_set, uid)]


def check(session: IMAPServerProtocol, command: Command) -> None:
    session.done(command, "Check completed")


def close_mailbox(session: IMAPServerProtocol, command: Command) -> None:
    mailbox = session.box
    session.deselect()
    if not mailbox.read_only:
        mailbox.expunge()
    session.tagged(command.tag, "OK", None, "Close completed")


def unselect(session: IMAPServerProtocol, command: Command) -> None:
    session.deselect()
    session.tagged(command.tag, "OK", None, "Unselect completed")


def _writable(session: IMAPServerProtocol, command: Command) -> bool:
    if session.box.read_only:
        session.tagged(command.tag, "NO", "CANNOT", "The mailbox is read-only (EXAMINE)")
        return False
    return True


def expunge(session: IMAPServerProtocol, command: Command) -> None:
    if not _writable(session, command):
        return
    uids: list[int] | None = None
    if command.verb == "UID EXPUNGE":
        values = tokenize(command.args, command.literals)
        if len(values) != 1:
            raise IMAPSyntaxError("UID EXPUNGE takes a UID set")
        uids = [m.uid for _, m in _targets(session, parse_sequence_set(values[0]), True)]
    _send_expunges(session, session.box.view, session.box.expunge(uids))
    session.done(command, "Expunge completed")


def _send_expunges(session: IMAPServerProtocol, before: FolderView, uids: Iterable[int]) -> None:
    gone = set(uids)
    if session.qresync:  # RFC 7162 3.2.10: VANISHED replaces EXPUNGE
        if gone:
            session.untagged(vanished_line(sorted(gone), earlier=False))
        return
    for seq in sorted((n for n, uid in enumerate(before.uids, 1) if uid in gone), reverse=True):
        session.untagged(f"{seq} EXPUNGE")


# SEARCH runs on these threads, not on the event loop: a search of every message's
# text, or one with thousands of keys, leaves the other sessions' commands answered
# at once. Two, so that one user's heavy searches cannot take every core.
_SEARCH_THREADS: Final = 2
# A search still running after this long ends with NO [LIMIT]: time the client can
# spend narrowing it down instead.
SEARCH_TIME_LIMIT: Final = 60.0
_search_executor: ThreadPoolExecutor | None = None


class _SearchStopped(Exception):
    """The session closed, or the search ran past SEARCH_TIME_LIMIT."""


_Found = TypeVar("_Found")


def _off_the_loop(
    session: IMAPServerProtocol,
    command: Command,
    run: Callable[[IMAPServerProtocol, Command, Mailbox, Sequence[MessageInfo]], _Found],
    answer: Callable[[IMAPServerProtocol, Command, _Found], None],
) -> None:
    """``run`` on the search threads over the selected mailbox's messages, and
    ``answer`` with its result, tagged when done (SEARCH, SORT, THREAD); or one of the
    refusals they share (``_answer_or_refuse``)."""
    # Imported here, not with the module: nothing else in it calls asyncio (FETCH's
    # coroutines await only the session's drain), and a process serving one session
    # without an event loop would hold asyncio and the ssl it imports for nothing (3.1
    # MiB of RSS over the store and these handlers: bench/lean_session_memory.py).
    import asyncio

    global _search_executor
    if _search_executor is None:
        _search_executor = ThreadPoolExecutor(_SEARCH_THREADS, thread_name_prefix="imap-search")
    mailbox = session.box
    messages = mailbox.messages()
    work = asyncio.get_running_loop().run_in_executor(
        _search_executor, run, session, command, mailbox, messages
    )
    session.defer_tagged(_answer_or_refuse(session, command, work, answer), command.tag)


async def _answer_or_refuse(
    session: IMAPServerProtocol,
    command: Command,
    work: asyncio.Future[_Found],
    answer: Callable[[IMAPServerProtocol, Command, _Found], None],
) -> None:
    """``answer`` with what ``work`` found, or the refusal SEARCH, SORT and THREAD
    share: BAD for keys that do not parse, NO [BADCHARSET] for a charset not known,
    NO [LIMIT] for a search that ran past SEARCH_TIME_LIMIT."""
    try:
        found = await work
    except IMAPSyntaxError as error:
        session.tagged(command.tag, "BAD", None, str(error) or "Syntax error")
        return
    except SearchCharsetError as error:
        session.tagged(command.tag, "NO", error.code, "Unsupported charset")
        return
    except _SearchStopped:
        what = command.verb.removeprefix("UID ").capitalize()
        session.tagged(command.tag, "NO", "LIMIT",
                       f"{what} took more than {SEARCH_TIME_LIMIT:.0f} s; narrow it down")
        return
    answer(session, command, found)


def search_messages(session: IMAPServerProtocol, command: Command) -> None:
    _off_the_loop(session, command, _run_search, _answer_search)


def _run_search(
    session: IMAPServerProtocol, command: Command, mailbox: Mailbox, messages: Sequence[MessageInfo]
) -> tuple[list[int], tuple[str, ...] | None, int | None]:
    """The numbers (or UIDs) SEARCH finds, what it asked to RETURN (ESEARCH), and with
    a MODSEQ key the highest MODSEQ found (RFC 7162 3.1.5), in a worker thread: the
    command is parsed here too, as a query of a megabyte takes a while to read. One
    message at a time is read and let go, so memory does not grow with the mailbox.
    SEARCH's code (and SORT's) is loaded at the first search, in this thread: a
    session that only fetches never holds it (0.9 MiB with email.utils and random)."""
    from mailtalk.servers.imap.search import matches, optimize, parse_search, uses_modseq

    uid = command.verb == "UID SEARCH"
    query = parse_search(command.args, command.literals)
    key = optimize(query.key)
    highest: int | None = 0 if uses_modseq(key) else None
    deadline = time.monotonic() + SEARCH_TIME_LIMIT
    max_seq = len(messages)
    max_uid = messages[-1].uid if messages else 0
    found = []
    for seq, info in enumerate(messages, 1):
        if session.closing or time.monotonic() > deadline:
            raise _SearchStopped
        if matches(key, _SearchView(mailbox, info, seq), max_seq=max_seq, max_uid=max_uid):
            found.append(info.uid if uid else seq)
            if highest is not None:
                highest = max(highest, info.modseq)
    return found, query.returns, highest


def _answer_search(
    session: IMAPServerProtocol,
    command: Command,
    result: tuple[list[int], tuple[str, ...] | None, int | None],
) -> None:
    found, returns, highest = result
    if highest is not None:
        session.condstore = True  # SEARCH MODSEQ enables CONDSTORE (RFC 7162 3.1)
    if returns is None:
        words = ["SEARCH", *map(str, found)]
        if highest is not None and found:
            words.append(f"(MODSEQ {highest})")
        session.untagged(" ".join(words))
    else:
        from mailtalk.servers.imap.search import esearch_response

        uid = command.verb == "UID SEARCH"
        response = esearch_response(command.tag, uid, found, returns)
        if highest is not None and found:
            response += f" MODSEQ {highest}"  # RFC 7162 3.1.5, as ESEARCH data
        session.untagged(response)
    session.done(command, "Search completed")


# -- SORT and THREAD (RFC 5256): a SEARCH, then an order, on the same worker threads --

# SORT and THREAD take the CHARSETs SEARCH does (as Dovecot): the charset is only that
# of the search strings; base subjects and addresses are compared decoded.
_SORT_HEAD: Final = re.compile(r"\s*(\([^()]*\)|[^\s()]+)\s+(\S+)\s+(.*)\Z", re.DOTALL)


def sort_or_thread(session: IMAPServerProtocol, command: Command) -> None:
    _off_the_loop(session, command, _run_sort, _answer_sort)


def _run_sort(
    session: IMAPServerProtocol, command: Command, mailbox: Mailbox, messages: Sequence[MessageInfo]
) -> str:
    """The SORT or THREAD response, in a worker thread: the messages the search keys
    find, their header blocks read (through the store's cache) and ordered."""
    from mailtalk.servers.imap.search import matches, optimize, parse_search
    from mailtalk.servers.imap.sort import (
        THREAD_ALGORITHMS,
        SortMessage,
        format_threads,
        parse_sort_criteria,
        sort_messages,
        thread_orderedsubject,
        thread_references,
    )

    verb = command.verb.removeprefix("UID ")
    uid = command.verb.startswith("UID ")
    head = _SORT_HEAD.match(command.args)
    if head is None:
        raise IMAPSyntaxError(f"{verb} takes {'criteria' if verb == 'SORT' else 'an algorithm'},"
                              " a charset and search keys")
    first, charset, rest = head.groups()
    # INTERNALDATE is read (a stat() when the index has no date yet) only for an order
    # that may use it: ARRIVAL, and the sent date, which falls back on it (RFC 5256).
    needs_date = True
    if verb == "SORT":
        criteria = parse_sort_criteria(tokenize(first)[0])
        needs_date = any(criterion.key in ("ARRIVAL", "DATE") for criterion in criteria)
    else:
        algorithm = first.upper()
        if algorithm not in THREAD_ALGORITHMS:
            raise IMAPSyntaxError(f"unknown threading algorithm {first[:30]}")
    key = optimize(parse_search(f"CHARSET {charset} {rest}", command.literals).key)
    deadline = time.monotonic() + SEARCH_TIME_LIMIT
    max_seq = len(messages)
    max_uid = messages[-1].uid if messages else 0
    found: list[SortMessage] = []
    for seq, info in enumerate(messages, 1):
        if session.closing or time.monotonic() > deadline:
            raise _SearchStopped
        if not matches(key, _SearchView(mailbox, info, seq), max_seq=max_seq, max_uid=max_uid):
            continue
        try:
            header = mailbox.read_header(info.uid)
        except (MailboxError, OSError):
            header = b""
        parsed = FetchMessage(header, uid=info.uid, header_only=True)

        def first_value(name: str, parsed: FetchMessage = parsed) -> str:
            values = parsed.header_values(name)
            return values[0] if values else ""

        found.append(SortMessage(
            number=info.uid if uid else seq, seq=seq, size=info.rfc822_size,
            internaldate=float(info.internaldate_seconds) if needs_date else 0.0,
            subject=first_value("subject"),
            date=first_value("date") or None, from_=first_value("from"), to=first_value("to"),
            cc=first_value("cc"), message_id=first_value("message-id"),
            references=first_value("references"), in_reply_to=first_value("in-reply-to"),
        ))
    if verb == "SORT":
        return " ".join(["SORT", *map(str, sort_messages(found, criteria))])
    def in_time() -> None:
        if session.closing or time.monotonic() > deadline:
            raise _SearchStopped

    threads = (thread_references(found, in_time) if algorithm == "REFERENCES"
               else thread_orderedsubject(found))
    return f"THREAD {format_threads(threads)}".rstrip()


def _answer_sort(session: IMAPServerProtocol, command: Command, response: str) -> None:
    session.untagged(response)
    session.done(command, f"{command.verb.removeprefix('UID ').capitalize()} completed")


def fetch_messages(session: IMAPServerProtocol, command: Command) -> None:
    uid = command.verb == "UID FETCH"
    request = parse_fetch(command.args, command.literals)
    positions = _positions(session, request.sequence_set, uid)
    if any(item.name == "MODSEQ" for item in request.items):
        session.condstore = True  # FETCH MODSEQ / CHANGEDSINCE enable it (RFC 7162 3.1)
    if request.vanished:
        # RFC 7162 3.2.6: only UID FETCH, with CHANGEDSINCE, once QRESYNC is enabled.
        if not (uid and session.qresync and request.changed_since is not None):
            raise IMAPSyntaxError("VANISHED needs UID FETCH, CHANGEDSINCE and ENABLE QRESYNC")
        gone = vanished_uids(session.box, request.changed_since, request.sequence_set)
        if gone:
            session.untagged(vanished_line(gone, earlier=True))
    view = session.box.view
    if request.changed_since is not None:
        since, modseqs = request.changed_since, view.modseqs
        positions = [p for p in positions if modseqs[p] > since]
    session.defer_tagged(
        _write_fetch_responses(session, command, request.items, view, positions, uid),
        command.tag,
    )


class _FetchPlan:
    """What one FETCH command's items need, worked out once for all its messages."""

    __slots__ = ("flag_texts", "has_flags", "has_modseq", "header_only", "items",
                 "kept_lookups", "marks_seen", "needs_data", "read_header", "renderer",
                 "streamed", "tables", "uid", "wants_date")

    def __init__(self, mailbox: Mailbox, items: list[FetchItem], uid: bool) -> None:
        self.items = items
        self.uid = uid
        self.needs_data = any(i.section is not None or i.name not in _DATA_FREE_ITEMS
                              for i in items)
        # Only header fields wanted: read the header block (through the store's cache).
        self.header_only = self.needs_data and all(_header_only(i) for i in items)
        self.read_header = mailbox.header_reader() if self.header_only else None
        self.renderer = FetchRenderer(items, uid=uid)
        self.marks_seen = not mailbox.read_only and any(i.sets_seen for i in items)
        # Only HEADER.FIELDS sections (a client's listing): their answers are kept by
        # message (fetch._SUBSETS), and neither the header blocks read for them nor, when
        # the answers are all kept, any read at all. (Not when the answer is to show
        # \\Seen set: rendered in full, from the block.)
        self.tables = None
        if self.read_header is not None and not self.marks_seen:
            self.tables = self.renderer.answer_tables(*self.read_header.folder_key)
        self.streamed = streamed_item(items)  # a big message's whole text goes out from disk
        self.has_flags = any(i.name == "FLAGS" for i in items)
        self.has_modseq = any(i.name == "MODSEQ" for i in items)
        # INTERNALDATE is read (a stat() when the index has no date yet) only if asked for.
        self.wants_date = any(i.name == "INTERNALDATE" for i in items)
        self.flag_texts: dict[int, bytes] = {}  # flag set number -> FLAGS' text, encoded
        # Each section's kept answers by UID (their tables' get), when _kept_responses
        # may answer from them; else None.
        self.kept_lookups = None
        if (self.tables and self.read_header is not None and self.streamed is None
                and self.renderer.kept):
            self.kept_lookups = [table.get for _, table in self.tables]


# _kept_responses answers this many messages at a time at first (few: where kept
# answers and others alternate, each step looks up this many), then as many as
# should fill the rest of the batch (at most _KEPT_STEP_MAX).
_KEPT_STEP: Final = 16
_KEPT_STEP_MAX: Final = 1024


def _kept_responses(
    plan: _FetchPlan, view: FolderView, positions: Sequence[int], start: int, out: bytearray
) -> int:
    """The responses of ``positions[start:]`` whose answers are all kept (a listing
    fetched again), added to ``out`` until it holds CHUNK bytes: no file read, no
    FetchMessage, and no Python step per message (each step's messages are looked up,
    checked and formatted by ``map`` over the view's columns: FetchRenderer.kept_batch).
    Returns where it stopped: at a message that needs :func:`_respond`, or after the
    last, or once ``out`` is full."""
    lookups = plan.kept_lookups
    end = len(positions)
    if lookups is None or start >= end:
        return start
    # A first listing calls this once a message, and has nothing kept: one lookup.
    first_uid = view.uids[positions[start]]
    for lookup in lookups:
        if lookup(first_uid) is None:
            return start
    read_header, renderer = plan.read_header, plan.renderer
    assert read_header is not None  # kept_lookups: a header-only plan
    moved = read_header.moved()
    flag_texts = plan.flag_texts
    index = start
    step = _KEPT_STEP
    while index < end and len(out) < CHUNK:
        chunk = positions[index : index + step]
        uids = _take(view.uids, chunk)
        answers = [list(map(lookup, uids)) for lookup in lookups]
        usable = _usable_count(uids, answers, moved)
        if not usable:
            break
        if usable < len(chunk):
            answers = [section[:usable] for section in answers]
        # Up to the message whose answers take ``out`` past CHUNK, as one by one.
        count = min(usable, _fitting(answers, CHUNK - len(out)))
        if count < len(chunk):
            chunk, uids = chunk[:count], uids[:count]
            answers = [section[:count] for section in answers]
        flag_ids = _take(view.flag_ids, chunk)
        for flag_id in set(flag_ids).difference(flag_texts):
            flag_texts[flag_id] = " ".join(sorted(view.flag_sets[flag_id])).encode("utf-8")
        added = renderer.kept_batch(
            list(map((1).__add__, chunk)), uids, list(map(flag_texts.__getitem__, flag_ids)),
            _take(view.rfc822_sizes, chunk), _take(view.modseqs, chunk),
            answers,  # type: ignore[arg-type]  # _usable_count: no None among them
        )
        out += added
        index += count
        if count == usable < step:
            break  # the next message needs _respond, or there is none
        step = max(1, min(_KEPT_STEP_MAX, (CHUNK - len(out)) * count // len(added) + 1))
    return index


def _take(column: Sequence[int], positions: Sequence[int]) -> Sequence[int]:
    """The values of ``column`` at ``positions``: a slice for a range of them."""
    if isinstance(positions, range) and positions.step == 1:
        return column[positions.start : positions.stop]
    return list(map(column.__getitem__, positions))


def _fitting(answers: list[list[bytes | None]], room: int) -> int:
    """How many messages' ``answers`` (each section's, as _kept_responses has them)
    reach ``room`` bytes: those that stay within it, and the one that crosses it."""
    if len(answers) == 1:
        lengths: Iterable[int] = map(len, answers[0])  # type: ignore[arg-type]
    else:
        lengths = map(sum, zip(*[map(len, section)  # type: ignore[arg-type]
                                 for section in answers], strict=True))
    return bisect_left(list(accumulate(lengths)), room) + 1


def _usable_count(
    uids: Sequence[int], answers: list[list[bytes | None]], moved: AbstractSet[int]
) -> int:
    """How many of the first messages of a step (their ``uids``, each section's
    ``answers``) kept_batch may answer: every answer kept and usable as it is, the
    file not moved since the refresh."""
    count = len(uids)
    for section in answers:
        if None in section:
            count = min(count, section.index(None))
    if moved and not moved.isdisjoint(uids[:count]):
        count = next(n for n, uid in enumerate(uids) if uid in moved)
    for section in answers:
        head = section[:count]
        if not all(head) or b"\x00" in b"".join(head):  # type: ignore[arg-type]
            count = next(n for n, answer in enumerate(head)
                         if not kept_answer_usable(answer))  # type: ignore[arg-type]
    return count


class _Unanswerable(Exception):
    """A message :func:`_respond` could not answer: its (code, text) for the tagged NO."""


async def _respond(
    session: IMAPServerProtocol, plan: _FetchPlan, view: FolderView, position: int,
    out: bytearray, sorted_flags: dict[int, list[str]],
) -> None:
    """One message's response, read as far as its items need, added to ``out`` (or,
    for a big message's text, written from disk after what ``out`` held).
    _Unanswerable if it is gone or a part does not decode."""
    mailbox, items, read_header = session.box, plan.items, plan.read_header
    message_uid, seq = view.uids[position], position + 1
    handle = None
    cache_key = answers = None
    raw = b""
    try:
        if plan.streamed is not None and view.sizes[position] >= STREAM_ABOVE:
            handle = mailbox.open_message(message_uid)
        elif read_header is not None:
            cache_key = read_header.key(message_uid)
            if plan.tables is not None and cache_key is not None:
                answers = plan.renderer.cached_answers(plan.tables, message_uid)
            if answers is None:
                raw = read_header(message_uid, keep=plan.tables is None)
        else:
            raw = mailbox.read_message(message_uid) if plan.needs_data else b""
    except (MailboxError, OSError):
        raise _Unanswerable("EXPUNGEISSUED",
                            "Some of the requested messages no longer exist") from None
    shown = items
    flag_id = view.flag_ids[position]
    flags = sorted_flags.get(flag_id)
    if flags is None:
        flags = sorted_flags[flag_id] = sorted(view.flag_sets[flag_id])
    modseq = view.modseqs[position]
    if plan.marks_seen and "\\Seen" not in flags:
        changed = mailbox.set_flags([message_uid], ["\\Seen"], "add")
        if message_uid in changed:
            now = mailbox.message(message_uid)
            flags, modseq = sorted(now.flags), now.modseq
        if not plan.has_flags:
            shown = [*items, FetchItem("FLAGS")]
        if message_uid in changed and session.condstore and not plan.has_modseq:
            shown = [*shown, FetchItem("MODSEQ")]  # RFC 7162 3.1: a flag change
    message = FetchMessage(raw, uid=message_uid, flags=flags,
                           internaldate=view.internaldate(position) if plan.wants_date else 0,
                           rfc822_size=view.rfc822_sizes[position], seq=seq,
                           header_only=plan.header_only, modseq=modseq, cache_key=cache_key,
                           answers=answers)
    if handle is not None:
        assert plan.streamed is not None
        if out:
            session.write(bytes(out))
            out.clear()
        with handle:
            await write_streamed(session, handle, shown, plan.streamed, message, uid=plan.uid)
        return
    if shown is items and plan.renderer.simple:
        # The same bytes as core.send(Untagged(...)); a FETCH moves no state.
        out += plan.renderer.wire(message)
        return
    try:
        rendering = render_fetch(shown, message, uid=plan.uid)
    except UnknownTransferEncoding as error:
        raise _Unanswerable("UNKNOWN-CTE", f"Unknown Content-Transfer-Encoding {error}") from None
    except CorruptTransferEncoding as error:
        raise _Unanswerable("PARSE", f"Invalid data in MIME part: {error}") from None
    out += session.core.send(Untagged(f"{seq} FETCH ({rendering.text})",
                                      tuple(rendering.literals)))


async def _write_fetch_responses(
    session: IMAPServerProtocol,
    command: Command,
    items: list[FetchItem],
    view: FolderView,
    positions: Sequence[int],
    uid: bool,
) -> None:
    """The FETCH responses, in batches, waiting for a slow reader; then the tagged answer.

    Each message is read from ``view`` (the selected mailbox's as the command came,
    which a refresh meanwhile replaces rather than changes) as it is answered: nothing
    is made for the messages not reached yet. Messages whose answers are all kept go
    out a batch at a time (_kept_responses), the others one by one (_respond)."""
    plan = _FetchPlan(session.box, items, uid)
    missing = False
    undecodable: tuple[str, str] | None = None  # BINARY of a part that does not decode
    sorted_flags: dict[int, list[str]] = {}  # flag set number -> its flags, sorted
    out = bytearray()  # the responses leave in batches of about CHUNK bytes
    index, end = 0, len(positions)
    try:
        while index < end:
            if session.closing:
                return
            index = _kept_responses(plan, view, positions, index, out)
            if index < end and len(out) < CHUNK:
                try:
                    await _respond(session, plan, view, positions[index], out, sorted_flags)
                except _Unanswerable as failure:
                    code, text = failure.args
                    if code == "EXPUNGEISSUED":
                        missing = True
                    else:
                        undecodable = (code, text)
                index += 1
            if len(out) >= CHUNK:
                session.write(bytes(out))
                out.clear()
                await session.drain()
    finally:
        if out:
            session.write(bytes(out))
    if undecodable is not None:
        # RFC 3516 4.2: the request fails; the other messages' data went out.
        session.tagged(command.tag, "NO", *undecodable)
        return
    if missing:
        session.tagged(command.tag, "NO", "EXPUNGEISSUED",
                       "Some of the requested messages no longer exist")
        return
    session.done(command, "Fetch completed")


def store_flags(session: IMAPServerProtocol, command: Command) -> None:
    uid = command.verb == "UID STORE"
    request = parse_store(command.args, command.literals)
    targets = _targets(session, request.sequence_set, uid)
    if not _writable(session, command):
        return
    mode = "replace" if request.mode == "set" else request.mode
    conditional = request.unchanged_since is not None
    if conditional:
        session.condstore = True  # UNCHANGEDSINCE enables CONDSTORE (RFC 7162 3.1)
    modified: list[int] = []
    changed = session.box.set_flags([m.uid for _, m in targets], request.flags, mode,
                                    unchanged_since=request.unchanged_since, modified=modified)
    failed = set(modified)
    view = session.box.view
    for seq, info in targets:
        position = view.position(info.uid)
        if position < 0 or info.uid in failed:
            continue
        # RFC 7162 3.1.3: with UNCHANGEDSINCE a changed message is reported even .SILENT.
        if request.silent and not (conditional and info.uid in changed):
            continue
        parts = [f"UID {info.uid}"] if uid or session.condstore else []
        if not request.silent:
            parts.append(f"FLAGS ({' '.join(sorted(view.flags(position)))})")
        if session.condstore:
            parts.append(f"MODSEQ ({view.modseqs[position]})")
        session.untagged(f"{seq} FETCH ({' '.join(parts)})")
    if failed:
        numbers = [info.uid if uid else seq for seq, info in targets if info.uid in failed]
        session.done(command, "Conditional STORE failed for some messages",
                     f"MODIFIED {uid_set(numbers)}")
        return
    session.done(command, "Store completed")


def copy_or_move(session: IMAPServerProtocol, command: Command) -> None:
    uid = command.verb.startswith("UID ")
    move = command.verb.endswith("MOVE")
    values = tokenize(command.args, command.literals)
    if len(values) != 2:
        raise IMAPSyntaxError(f"{command.verb} takes a sequence set and a mailbox")
    targets = _targets(session, parse_sequence_set(values[0]), uid)
    name = mailbox_arg(session, values[1])
    if move and not _writable(session, command):
        return
    destination = session.store.target(name)
    uids = [m.uid for _, m in targets]
    before = session.box.view
    pairs = session.box.move(uids, destination) if move else session.box.copy(uids, destination)
    code = None
    if pairs:
        code = (f"COPYUID {destination.uidvalidity} {uid_set([a for a, _ in pairs])} "
                f"{uid_set([b for _, b in pairs])}")
    if move:
        if code is not None:
            session.untagged(f"OK [{code}] Moved UIDs")
        _send_expunges(session, before, [a for a, _ in pairs])
        session.done(command, "Move completed")
    else:
        session.done(command, "Copy completed", code)
