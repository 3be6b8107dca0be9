"""Sequence sets (RFC 3501 9 sequence-set) as the IMAP server reads them, tested
against a plain reading of the grammar: every number a range names, ``*`` the
largest number in use, ``5:3`` the same as ``3:5``.

The server tests membership by bisection over merged spans (a SEARCH with 160,000
numbers once walked them all for every message); these properties pin that it
answers exactly as walking would, and that a command carrying a set parses the
same when it arrives one byte at a time.
"""

from __future__ import annotations

import time

from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.protocols.common import NEED_DATA, Role
from mailtalk.protocols.imap import IMAPConnection
from mailtalk.protocols.imap_events import Command
from mailtalk.servers.imap.message_args import SequenceSet, parse_fetch, parse_sequence_set
from mailtalk.servers.imap.tokens import IMAPSyntaxError

NUMBER = st.integers(1, 60)
BOUND = st.one_of(st.none(), NUMBER)  # None is "*"
RANGES = st.lists(st.tuples(BOUND, BOUND), min_size=1, max_size=12)


def text_of(ranges: list[tuple[int | None, int | None]]) -> str:
    def one(n: int | None) -> str:
        return "*" if n is None else str(n)

    return ",".join(one(a) if a == b else f"{one(a)}:{one(b)}" for a, b in ranges)


def walked(ranges: list[tuple[int | None, int | None]], number: int, largest: int) -> bool:
    """Membership read straight off the grammar, range by range."""
    for low, high in ranges:
        a = largest if low is None else low
        b = largest if high is None else high
        if min(a, b) <= number <= max(a, b):
            return True
    return False


@settings(max_examples=300)
@given(ranges=RANGES, largest=st.integers(0, 70))
def test_membership_numbers_and_uids_agree_with_walking_the_ranges(
    ranges: list[tuple[int | None, int | None]], largest: int
) -> None:
    text = text_of(ranges)
    parsed = parse_sequence_set(text)
    assert str(parsed) == text
    assert parsed == parse_sequence_set(text)  # the membership cache is not compared
    expected = [n for n in range(1, 80) if walked(ranges, n, largest)]
    assert [n for n in range(1, 80) if parsed.contains(n, largest)] == expected
    assert parsed.numbers(largest) == [n for n in expected if n <= largest]
    # UIDs: a mailbox's UIDs ascending, "*" its last one.
    uids = list(range(3, 3 + 2 * largest, 2))
    if uids:
        chosen = [u for u in uids if walked(ranges, u, uids[-1])]
        assert parsed.select_uids(uids) == chosen


@settings(max_examples=300)
@given(st.text(alphabet="0123456789:,*x ", max_size=30))
def test_any_text_parses_or_is_a_syntax_error(text: str) -> None:
    try:
        parsed = parse_sequence_set(text)
    except IMAPSyntaxError:
        return
    assert isinstance(parsed, SequenceSet)
    for largest in (0, 1, 7):
        assert all(1 <= n <= largest for n in parsed.numbers(largest))


def _commands(server: IMAPConnection) -> list[Command]:
    out: list[Command] = []
    while True:
        event = server.next_command()
        if event is NEED_DATA:
            return out
        assert isinstance(event, Command)
        out.append(event)


@settings(max_examples=100)
@given(ranges=RANGES)
def test_a_set_read_one_byte_at_a_time_parses_the_same(
    ranges: list[tuple[int | None, int | None]]
) -> None:
    wire = f"a1 UID FETCH {text_of(ranges)} (FLAGS)\r\n".encode()
    whole = IMAPConnection(role=Role.SERVER)
    whole.receive_data(wire)
    bytewise = IMAPConnection(role=Role.SERVER)
    commands: list[Command] = []
    for byte in wire:
        bytewise.receive_data(bytes([byte]))
        commands += _commands(bytewise)
    assert commands == _commands(whole)
    (command,) = commands
    request = parse_fetch(command.args, command.literals)
    assert request.sequence_set == parse_sequence_set(text_of(ranges))


def test_a_set_of_many_numbers_is_tested_in_logarithmic_time() -> None:
    numbers = ",".join(str(n) for n in range(10_000, 98_000, 8))  # 11,000 numbers, no merge
    parsed = parse_sequence_set(numbers)
    assert parsed.contains(10_000, 200) and not parsed.contains(10_001, 200)
    assert len(parsed.members(200)) == 11_000
    # Membership is one bisection: a million tests over 11,000 spans stay quick.
    started = time.perf_counter()
    for n in range(1_000_000):
        parsed.contains(n, 200)
    # Walking every range (the old way) took some 11,000 comparisons each: hours here.
    assert time.perf_counter() - started < 30
