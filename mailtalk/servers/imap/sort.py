"""SORT and THREAD (RFC 5256): the criteria parsed, the messages ordered, no I/O.

:func:`base_subject` is the RFC's base subject extraction (2.1); :func:`sort_messages`
orders messages by SORT criteria (ARRIVAL, CC, DATE, FROM, SIZE, SUBJECT, TO, each
maybe REVERSE; ties by sequence number); :func:`thread_orderedsubject` and
:func:`thread_references` build THREAD=ORDEREDSUBJECT and THREAD=REFERENCES trees,
and :func:`format_threads` writes them as the THREAD response's data.

A message is a :class:`SortMessage`: its sequence number (or UID), size and
INTERNALDATE, and the header fields these algorithms read, RFC 2047 words decoded.
Strings compare with i;ascii-casemap, as RFC 5256 says; the base subject with
non-ASCII letters also case-folded (decomposed, titlecased: what Dovecot does).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses, mktime_tz, parsedate_tz
from typing import Final

from mailtalk.servers.imap.tokens import Atom, IMAPSyntaxError, Value

__all__ = [
    "SORT_KEYS",
    "SortCriterion",
    "SortMessage",
    "ThreadNode",
    "base_subject",
    "format_threads",
    "parse_sort_criteria",
    "sort_messages",
    "thread_orderedsubject",
    "thread_references",
]

SORT_KEYS: Final = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"})
THREAD_ALGORITHMS: Final = ("ORDEREDSUBJECT", "REFERENCES")


# -- base subject (RFC 5256 2.1) --------------------------------------------------

_WHITESPACE: Final = re.compile(r"[ \t\r\n]+")
_TRAILER: Final = re.compile(r"(?:\(fwd\)| )$", re.IGNORECASE)
_BLOB: Final = r"\[[^\[\]]*\] *"
_LEADER: Final = re.compile(rf"(?:(?:{_BLOB})*(?:re|fwd?) *(?:{_BLOB})?:| )", re.IGNORECASE)
_BLOB_PREFIX: Final = re.compile(_BLOB)


def _extract(subject: str) -> tuple[str, bool]:
    """(base subject, whether anything marking a reply or forward was removed)."""
    text = _WHITESPACE.sub(" ", subject)  # (1): tabs, folding and runs of spaces
    reply = False
    while True:
        while (trailer := _TRAILER.search(text)) is not None:  # (2)
            reply = reply or trailer.group(0) != " "
            text = text[: trailer.start()]
        while True:  # (5): (3) and (4) until nothing changes
            before = text
            while (leader := _LEADER.match(text)) is not None:  # (3)
                reply = reply or leader.group(0) != " "
                text = text[leader.end() :]
            blob = _BLOB_PREFIX.match(text)  # (4): a blob, if something is left after it
            if blob is not None and text[blob.end() :]:
                text = text[blob.end() :]
            if text == before:
                break
        # (6): "[fwd: ... ]" around the whole
        if text[:5].lower() == "[fwd:" and text.endswith("]"):
            text = text[5:-1]
            reply = True
            continue
        return text, reply


def base_subject(subject: str) -> str:
    """The base subject of RFC 5256 2.1 (``Re: [list] Fwd: hello (fwd)`` -> ``hello``)."""
    return _extract(subject)[0]


def _casemap(text: str) -> str:
    """i;ascii-casemap for ASCII; decomposed titlecase for the rest (as Dovecot)."""
    if text.isascii():
        return text.upper()
    return "".join(char.title() for char in unicodedata.normalize("NFD", text))


# -- the messages ---------------------------------------------------------------


@dataclass
class SortMessage:
    """One message as SORT and THREAD see it; ``number`` is what the answer lists."""

    number: int
    seq: int
    size: int
    internaldate: float
    subject: str = ""
    date: str | None = None
    from_: str = ""
    to: str = ""
    cc: str = ""
    message_id: str = ""
    references: str = ""
    in_reply_to: str = ""

    def sent(self) -> float:
        """The Date: field in UTC seconds; INTERNALDATE if it is missing or invalid."""
        if self.date:
            parsed = parsedate_tz(self.date)
            if parsed is not None:
                try:
                    return float(mktime_tz(parsed))
                except (OverflowError, ValueError):
                    pass
        return self.internaldate


def _mailbox(value: str) -> str:
    """The first address's local part (addr-mailbox), empty if there is none."""
    for _, address in getaddresses([value]):
        if address:
            return address.rpartition("@")[0] if "@" in address else address
    return ""


# -- SORT (RFC 5256 3) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SortCriterion:
    key: str
    reverse: bool = False


def parse_sort_criteria(value: Value) -> list[SortCriterion]:
    """``(REVERSE DATE SUBJECT)`` as criteria; BAD for anything else."""
    if not isinstance(value, list) or not value:
        raise IMAPSyntaxError("SORT needs a parenthesised list of sort criteria")
    criteria = []
    reverse = False
    for item in value:
        word = item.value.upper() if isinstance(item, Atom) else ""
        if word == "REVERSE" and not reverse:
            reverse = True
            continue
        if word not in SORT_KEYS:
            raise IMAPSyntaxError(f"unknown sort criterion {str(getattr(item, 'value', ''))[:30]}")
        criteria.append(SortCriterion(word, reverse))
        reverse = False
    if reverse:
        raise IMAPSyntaxError("REVERSE must be followed by a sort key")
    return criteria


def _key_function(key: str) -> Callable[[SortMessage], str | float | int]:
    if key == "ARRIVAL":
        return lambda m: m.internaldate
    if key == "DATE":
        return SortMessage.sent
    if key == "SIZE":
        return lambda m: m.size
    if key == "SUBJECT":
        return lambda m: _casemap(base_subject(m.subject))
    header = {"FROM": "from_", "TO": "to", "CC": "cc"}[key]
    return lambda m: _mailbox(getattr(m, header)).upper()


def sort_messages(messages: Sequence[SortMessage], criteria: Sequence[SortCriterion]) -> list[int]:
    """The messages' numbers in SORT order; equal ones in mailbox (sequence) order."""
    ordered = sorted(messages, key=lambda m: m.seq)
    # Stable sorts, least significant criterion first.
    for criterion in reversed(criteria):
        # reverse=True keeps equal messages in their order (sequence order), as it must.
        ordered.sort(key=_key_function(criterion.key), reverse=criterion.reverse)
    return [m.number for m in ordered]


# -- THREAD (RFC 5256 2.2, 2.3) --------------------------------------------------------


@dataclass(eq=False)
class ThreadNode:
    """A thread tree node: a message, or a dummy (``message`` None) holding children."""

    message: SortMessage | None = None
    children: list[ThreadNode] = field(default_factory=list)
    parent: ThreadNode | None = None

    def first(self) -> SortMessage | None:
        """The message that stands for this node in sorting: its own, or (a dummy)
        its first child's."""
        node: ThreadNode | None = self
        while node is not None and node.message is None:
            node = node.children[0] if node.children else None
        return node.message if node is not None else None


def _sort_key(node: ThreadNode) -> tuple[float, int]:
    message = node.first()
    return (message.sent(), message.seq) if message is not None else (0.0, 0)


def thread_orderedsubject(messages: Sequence[SortMessage]) -> list[ThreadNode]:
    """THREAD=ORDEREDSUBJECT (RFC 5256 2.1): by base subject, each thread's first
    message its root and the others its children, in sent date order."""
    ordered = sorted(messages, key=lambda m: (_casemap(base_subject(m.subject)), m.sent(), m.seq))
    threads: list[ThreadNode] = []
    current = None
    for message in ordered:
        subject = _casemap(base_subject(message.subject))
        if threads and subject == current:
            root = threads[-1]
            root.children.append(ThreadNode(message, parent=root))
        else:
            threads.append(ThreadNode(message))
            current = subject
    threads.sort(key=_sort_key)
    return threads


_MSG_ID: Final = re.compile(r"<([^<>]*)>")


def _message_ids(text: str) -> list[str]:
    return [found.strip() for found in _MSG_ID.findall(text) if found.strip()]


def _is_ancestor(node: ThreadNode, other: ThreadNode) -> bool:
    """Whether ``node`` is ``other`` or one of its ancestors."""
    current: ThreadNode | None = other
    while current is not None:
        if current is node:
            return True
        current = current.parent
    return False


def _link(parent: ThreadNode, child: ThreadNode) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def thread_references(
    messages: Sequence[SortMessage], check: Callable[[], None] | None = None
) -> list[ThreadNode]:
    """THREAD=REFERENCES (RFC 5256 2.2), step by step as the RFC numbers them.

    ``check`` is called once a message while linking (a loop check walks up the
    chain, so a mailbox of one long chain costs its length squared): it may raise
    to stop a thread that has run too long.
    """
    by_id: dict[str, ThreadNode] = {}
    ordered = sorted(messages, key=lambda m: m.seq)
    # (1) containers and links
    for message in ordered:
        if check is not None:
            check()
        ids = _message_ids(message.message_id)
        own = ids[0] if ids else ""
        node = by_id.get(own) if own else None
        if node is None or node.message is not None:
            # No Message-ID, or a duplicate one: this message is unique anyway.
            node = ThreadNode(message)
            if own and own not in by_id:
                by_id[own] = node
        else:
            node.message = message
        references = _message_ids(message.references)
        if not references:
            replied = _message_ids(message.in_reply_to)
            references = replied[:1]
        # (1A) link the References chain, never making a loop, keeping parents set.
        previous: ThreadNode | None = None
        for ref in references:
            container = by_id.get(ref)
            if container is None:
                container = by_id[ref] = ThreadNode()
            if (
                previous is not None
                and container.parent is None
                and not _is_ancestor(container, previous)
            ):
                _link(previous, container)
            previous = container
        # (1B) the message's parent is the last reference; an old parent is replaced.
        if previous is not None and previous is not node and not _is_ancestor(node, previous):
            _link(previous, node)
        elif previous is None and node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        # Keep the node reachable when its ID was a duplicate.
        if own == "" or by_id.get(own) is not node:
            by_id[f"\0unique{message.seq}"] = node
    # (2) the root set
    root = ThreadNode()
    for node in list(by_id.values()):
        if node.parent is None:
            root.children.append(node)
            node.parent = root
    # (3) prune dummies
    _prune(root)
    # (4) sort the root's children (and, for the dummies, their children first)
    for child in root.children:
        if child.message is None:
            child.children.sort(key=_sort_key)
    root.children.sort(key=_sort_key)
    # (5) gather the top-level messages by base subject
    _gather_subjects(root)
    # (6) sort every level by sent date, the deepest first
    _sort_tree(root)
    for child in root.children:
        child.parent = None
    return root.children


def _descendants(root: ThreadNode) -> list[ThreadNode]:
    """Every node under ``root``, parents before their children: reversed, a
    bottom-up order. A loop, not recursion: a reply chain can be thousands deep."""
    order: list[ThreadNode] = []
    stack = [root]
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    return order


def _prune(root: ThreadNode) -> None:
    """RFC 5256 2.2 (3): dummies without children go; a dummy's children move up,
    but not to the top level unless there is just one. Children first."""
    for node in reversed(_descendants(root)):
        kept: list[ThreadNode] = []
        for child in node.children:
            if child.message is None:
                if not child.children:
                    continue
                if node is not root or len(child.children) == 1:
                    for grandchild in child.children:
                        grandchild.parent = node
                        kept.append(grandchild)
                    continue
            kept.append(child)
        node.children = kept


def _subject_of(node: ThreadNode) -> tuple[str, bool]:
    message = node.first()
    if message is None:
        return "", False
    text, reply = _extract(message.subject)
    return _casemap(text), reply


def _gather_subjects(root: ThreadNode) -> None:
    table: dict[str, ThreadNode] = {}
    for node in root.children:  # (5B)
        subject, reply = _subject_of(node)
        if not subject:
            continue
        old = table.get(subject)
        if (
            old is None
            or (old.message is not None and node.message is None)
            or (old.message is not None and node.message is not None
                and _subject_of(old)[1] and not reply)
        ):
            table[subject] = node
    for node in list(root.children):  # (5C)
        if node.parent is not root:
            continue  # already merged under another
        subject, reply = _subject_of(node)
        if not subject:
            continue
        other = table.get(subject)
        if other is None or other is node:
            continue
        if other.message is None and node.message is None:
            for child in list(node.children):
                _link(other, child)
            root.children.remove(node)
            node.parent = None
        elif other.message is None:
            root.children.remove(node)
            node.parent = None
            _link(other, node)
        elif node.message is None:
            root.children.remove(other)
            other.parent = None
            _link(node, other)
            table[subject] = node
        elif not _subject_of(other)[1] and reply:
            root.children.remove(node)
            node.parent = None
            _link(other, node)
        else:
            dummy = ThreadNode(parent=root)
            index = root.children.index(other)
            root.children[index] = dummy
            other.parent = None
            _link(dummy, other)
            root.children.remove(node)
            node.parent = None
            _link(dummy, node)
            table[subject] = dummy


def _sort_tree(root: ThreadNode) -> None:
    for node in reversed(_descendants(root)):  # the deepest siblings first
        node.children.sort(key=_sort_key)


# -- the THREAD response ----------------------------------------------------------


def _render(thread: ThreadNode) -> str:
    """One thread: a chain of single children as numbers, more than one child as
    nested lists (RFC 5256 4: thread-members, thread-nested); a dummy shows no number."""
    out: list[str] = []
    stack: list[ThreadNode | str] = [thread]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node = item
        numbers: list[str] = []
        while True:
            if node.message is not None:
                numbers.append(str(node.message.number))
                if len(node.children) == 1:
                    node = node.children[0]
                    continue
            break
        out.append(" ".join(numbers))
        if node.children:
            if numbers:
                out.append(" ")
            for child in reversed(node.children):
                stack += [")", child, "("]
    return "(" + "".join(out) + ")"


def format_threads(threads: Sequence[ThreadNode]) -> str:
    """``(1 2)(3 (4)(5))``: the THREAD response's data."""
    return "".join(_render(thread) for thread in threads)
