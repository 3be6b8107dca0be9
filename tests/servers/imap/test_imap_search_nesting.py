"""SEARCH keys nested any way a client may write them, parsed without recursion.

The parser keeps its own stack, merges OR chains and cancels NOT NOT; these tests
hold it to the plain recursive reading of RFC 3501's prefix grammar on random key
trees, show that chains of 15,000 cost no depth, and that what still nests too
deep is a syntax error (BAD), never a RecursionError (which was NO [SERVERBUG]).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.protocols.common import NEED_DATA, Role
from mailtalk.protocols.imap import IMAPConnection
from mailtalk.protocols.imap_events import Command
from mailtalk.servers.imap.search import (
    MAX_SEARCH_DEPTH,
    OrKey,
    optimize,
    parse_search,
    search,
)
from mailtalk.servers.imap.tokens import IMAPSyntaxError


@dataclass
class Message:
    """Just what flag and number keys look at."""

    seq: int
    uid: int
    flags: Collection[str] = field(default_factory=frozenset)
    recent: bool = False
    size: int = 100
    internaldate_datetime: datetime = datetime(2024, 1, 1, tzinfo=UTC)


# Not a whole SearchMessage: only what the keys used here look at.
MAILBOX: Any = [
    Message(1, 4, {"\\Seen"}),
    Message(2, 5, {"\\Flagged"}),
    Message(3, 9, {"\\Seen", "\\Flagged"}),
    Message(4, 12, {"\\Deleted"}),
    Message(5, 13, set()),
]
FLAG_LEAVES = {"SEEN": "\\Seen", "FLAGGED": "\\Flagged", "DELETED": "\\Deleted"}

Tree = tuple[Any, ...]  # ("leaf", text, predicate) | ("NOT", t) | ("OR", t, t) | ("LIST", [t...])


@st.composite
def leaves(draw: st.DrawFn) -> Tree:
    kind = draw(st.sampled_from(["flag", "unflag", "all", "seq", "uid"]))
    if kind in ("flag", "unflag"):
        word = draw(st.sampled_from(sorted(FLAG_LEAVES)))
        flag = FLAG_LEAVES[word]
        if kind == "flag":
            return ("leaf", word, lambda m: flag in m.flags)
        return ("leaf", "UN" + word, lambda m: flag not in m.flags)
    if kind == "all":
        return ("leaf", "ALL", lambda m: True)
    low, high = sorted(draw(st.lists(st.integers(1, 14), min_size=2, max_size=2)))
    if kind == "seq":
        return ("leaf", f"{low}:{high}", lambda m: low <= m.seq <= high)
    return ("leaf", f"UID {low}:{high}", lambda m: low <= m.uid <= high)


def trees() -> st.SearchStrategy[Tree]:
    return st.recursive(
        leaves(),
        lambda inner: st.one_of(
            st.tuples(st.just("NOT"), inner),
            st.tuples(st.just("OR"), inner, inner),
            st.tuples(st.just("LIST"), st.lists(inner, min_size=1, max_size=3)),
        ),
        max_leaves=12,
    )


def render(tree: Tree) -> str:
    if tree[0] == "leaf":
        return str(tree[1])
    if tree[0] == "NOT":
        return "NOT " + render(tree[1])
    if tree[0] == "OR":
        return f"OR {render(tree[1])} {render(tree[2])}"
    return "(" + " ".join(render(t) for t in tree[1]) + ")"


def holds(tree: Tree, message: Message) -> bool:
    if tree[0] == "leaf":
        return bool(tree[2](message))
    if tree[0] == "NOT":
        return not holds(tree[1], message)
    if tree[0] == "OR":
        return holds(tree[1], message) or holds(tree[2], message)
    return all(holds(t, message) for t in tree[1])


@settings(max_examples=400)
@given(st.lists(trees(), min_size=1, max_size=3))
def test_the_parser_reads_keys_as_the_recursive_grammar_does(top: list[Tree]) -> None:
    text = " ".join(render(t) for t in top)
    expected = [m.seq for m in MAILBOX if all(holds(t, m) for t in top)]
    assert search(parse_search(text), MAILBOX) == expected, text


@settings(max_examples=60)
@given(st.lists(trees(), min_size=1, max_size=2))
def test_a_search_read_one_byte_at_a_time_parses_the_same(top: list[Tree]) -> None:
    wire = ("a1 UID SEARCH " + " ".join(render(t) for t in top) + "\r\n").encode()
    whole = IMAPConnection(role=Role.SERVER)
    whole.receive_data(wire)
    expected = whole.next_command()
    bytewise = IMAPConnection(role=Role.SERVER)
    found: list[object] = []
    for byte in wire:
        bytewise.receive_data(bytes([byte]))
        while (event := bytewise.next_command()) is not NEED_DATA:
            found.append(event)
    assert found == [expected]
    assert isinstance(expected, Command)
    assert parse_search(expected.args) == parse_search(" ".join(render(t) for t in top))


@pytest.mark.parametrize("count", [1, 2, 15_000, 15_001])
def test_chains_of_not_cancel(count: int) -> None:
    key = parse_search("NOT " * count + "SEEN").key
    expected = [2, 4, 5] if count % 2 else [1, 3]
    assert search(parse_search("NOT " * count + "SEEN"), MAILBOX) == expected
    assert optimize(key) == key


@pytest.mark.parametrize("style", ["right", "left"])
def test_or_chains_of_any_length_are_one_flat_or(style: str) -> None:
    terms = [f"UID {n}" for n in range(1, 15_001)]
    if style == "right":  # OR a OR b OR c d
        text = " ".join(f"OR {t}" for t in terms[:-1]) + " " + terms[-1]
    else:  # OR OR OR a b c d
        text = "OR " * (len(terms) - 1) + " ".join(terms)
    key = parse_search(text).key
    assert isinstance(key, OrKey) and len(key.keys) == 15_000
    assert search(parse_search(text), MAILBOX) == [1, 2, 3, 4, 5]
    assert search(parse_search(text), MAILBOX, uid=True) == [4, 5, 9, 12, 13]
    # Merged into one set of 15,000 numbers, tested by bisection.
    merged = optimize(key)
    assert not isinstance(merged, OrKey)


@pytest.mark.parametrize("text", [
    "NOT OR SEEN " * (MAX_SEARCH_DEPTH // 2 + 1) + "ALL",
    "OR SEEN NOT " * (MAX_SEARCH_DEPTH // 2 + 1) + "ALL",
    "NOT (" * 60 + "SEEN" + ")" * 60,
])
def test_what_nests_too_deep_is_a_syntax_error(text: str) -> None:
    with pytest.raises(IMAPSyntaxError, match="nested"):
        parse_search(text)


def test_nesting_up_to_the_limit_still_parses() -> None:
    depth = MAX_SEARCH_DEPTH // 2 - 1
    text = "NOT OR FLAGGED " * depth + "SEEN"
    # Unrolled by hand: NOT (FLAGGED or NOT (FLAGGED or ... SEEN)).
    expected = {m.seq for m in MAILBOX if "\\Seen" in m.flags}
    for _ in range(depth):
        expected = {m.seq for m in MAILBOX if not ("\\Flagged" in m.flags or m.seq in expected)}
    assert search(parse_search(text), MAILBOX) == sorted(expected)
