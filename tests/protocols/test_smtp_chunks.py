"""The server core hands out DATA in chunks of whole lines: the same message as line by line.

``SMTPConnection`` returns several lines as one ``MessageData`` when none of them needs
a look of its own (no bare LF, no leading dot, none over 1000 octets). Whatever the
chunking, and however the bytes arrive (all at once, byte by byte, in odd pieces),
the message must come out as a simple line-by-line reading of RFC 5321 says:
dot-unstuffed, line ends as received, long lines flagged, bare LFs noticed, and
only <CRLF>.<CRLF> after a CRLF-ended line ending it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtalk.protocols.common import NEED_DATA, NoEvent, Role
from mailtalk.protocols.smtp import Reply, SMTPState
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.protocols.smtp_server_role import Command, EndOfMessage, MessageData

Chunker = Callable[[bytes], Iterable[bytes]]


def whole(data: bytes) -> Iterable[bytes]:
    return [data]


def bytewise(data: bytes) -> Iterable[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def pieces(sizes: list[int]) -> Chunker:
    def cut(data: bytes) -> Iterable[bytes]:
        out, i, n = [], 0, 0
        while i < len(data):
            size = sizes[n % len(sizes)] if sizes else len(data)
            out.append(data[i : i + size])
            i += size
            n += 1
        return out

    return cut


def server_in_data() -> SMTPConnection:
    server = SMTPConnection(Role.SERVER)
    server.send(Reply(220, ("mx.test ESMTP",)))
    for line, code in (
        (b"EHLO client.test\r\n", 250),
        (b"MAIL FROM:<a@x.test>\r\n", 250),
        (b"RCPT TO:<b@y.test>\r\n", 250),
        (b"DATA\r\n", 354),
    ):
        server.receive_data(line)
        assert isinstance(server.next_command(), Command)
        server.send(Reply(code, ("ok",)))
    assert server.state is SMTPState.DATA
    return server


def events_of(body: bytes, chunker: Chunker) -> list[MessageData | EndOfMessage]:
    """Everything the core hands out after 354, up to and including the end of message."""
    server = server_in_data()
    events: list[MessageData | EndOfMessage] = []
    for chunk in chunker(body):
        server.receive_data(chunk)
        while True:
            event = server.next_command()
            if isinstance(event, NoEvent):
                break
            assert isinstance(event, MessageData | EndOfMessage), event
            events.append(event)
            if isinstance(event, EndOfMessage):
                # Nothing after the end is parsed before the reply goes out.
                assert server.next_command() is NEED_DATA
                return events
    return events


class Reading:
    """What a message reads as: data, the flagged (over-long) lines, a bare LF seen, ended."""

    def __init__(self, data: bytes, long_lines: list[int], bare: bool, ended: bool) -> None:
        self.data, self.long_lines, self.bare, self.ended = data, long_lines, bare, ended

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reading) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"Reading({vars(self)!r})"


def read_events(events: list[MessageData | EndOfMessage]) -> Reading:
    """The reading of the core's events: which output lines any flagged event touched."""
    data = bytearray()
    flagged: list[tuple[int, int]] = []
    bare, ended = False, False
    for event in events:
        if isinstance(event, EndOfMessage):
            bare, ended = event.bare_newline, True
            continue
        if event.line_too_long:
            flagged.append((len(data), len(data) + len(event.data)))
        data += event.data
    long_lines = []
    start = 0
    for number, line in enumerate(bytes(data).split(b"\n")):
        end = start + len(line) + 1
        if any(a < end and b > start for a, b in flagged):
            long_lines.append(number)
        start = end
    return Reading(bytes(data), long_lines, bare, ended)


def reference(body: bytes) -> Reading:
    """RFC 5321 read line by line, the plain way (the core's rules, no chunks)."""
    data = bytearray()
    long_lines: list[int] = []
    bare, prev_crlf, at = False, True, 0
    number = 0
    while True:
        nl = body.find(b"\n", at)
        if nl < 0:
            # An unfinished line stays buffered: the message has not ended.
            return Reading(bytes(data), long_lines, False, False)
        line = body[at : nl + 1]
        at = nl + 1
        if line.endswith(b"\r\n"):
            content, ending = line[:-2], b"\r\n"
        else:
            content, ending = line[:-1], b"\n"
        if content == b"." and ending == b"\r\n" and prev_crlf:
            return Reading(bytes(data), long_lines, bare, True)
        if ending == b"\n":
            bare = True
        # RFC 5321 4.5.3.1.6: the dot added by stuffing does not count.
        if len(line) - content.startswith(b".") > 1000:
            long_lines.append(number)
        data += (content[1:] if content.startswith(b".") else content) + ending
        prev_crlf = ending == b"\r\n"
        number += 1


def check(body: bytes, chunkers: Iterable[Chunker]) -> None:
    expected = reference(body)
    for chunker in chunkers:
        assert read_events(events_of(body, chunker)) == expected, chunker


LINES = st.one_of(
    st.sampled_from(
        [
            b"",
            b".",
            b"..",
            b".x",
            b"x.",
            b"\r",
            b".\r",
            b"x" * 997,
            b"x" * 998,
            b"x" * 999,
            b"." + b"x" * 998,
            b"x" * 1500,
            b"MAIL FROM:<a@b>",
            b"\r.\r",
        ]
    ),
    st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")),
)
ENDINGS = st.sampled_from([b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r\r\n"])
BODIES = st.lists(st.tuples(LINES, ENDINGS), max_size=12).map(
    lambda lines: b"".join(line + ending for line, ending in lines)
)
TAILS = st.sampled_from([b".\r\n", b".\r\nNOOP\r\n", b"\r\n.\r\n", b".\n.\r\n", b""])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=BODIES, tail=TAILS, sizes=st.lists(st.integers(1, 700), max_size=6))
def test_any_chunking_reads_like_the_plain_line_by_line_rules(
    body: bytes, tail: bytes, sizes: list[int]
) -> None:
    check(body + tail, [whole, pieces(sizes), bytewise])


@pytest.mark.parametrize("chunker", [whole, bytewise, pieces([3, 1, 7, 2, 5]), pieces([4096])])
@pytest.mark.parametrize(
    "body",
    [
        b"Subject: plain\r\n\r\n" + b"line of text\r\n" * 50 + b".\r\n",
        b"a\r\n..b\r\nc\r\n.d\r\ne\r\n.\r\n",
        b"a\r\nb\nc\r\nd\r\n.\r\n",  # bare LF in the middle
        b"a\r\nb\n.\r\nc\r\n.\r\n",  # "." after a bare LF is data
        b"a\r\n.\n.\r\nb\r\n.\r\n",  # "." ended by a bare LF is data, and so is the next
        b"a\r\n" + b"x" * 1200 + b"\r\nb\r\n" * 3 + b".\r\n",  # a long line among short
        b"x" * 998 + b"\r\n" + b"y" * 999 + b"\r\n.\r\n",  # 1000 octets, then 1001
        b"." + b"y" * (70 * 1024) + b"\r\r\nz\r\n.\r\n",  # longer than MAX_LINE
        b"hello\n.\nMAIL FROM:<admin@example.com>\r\nRCPT TO:<v@example.com>\r\n.\r\n",
        b"",  # nothing yet
        b"unfinished\r\nline",
    ],
)
def test_chosen_messages(body: bytes, chunker: Chunker) -> None:
    check(body, [chunker])


def test_a_plain_message_comes_out_in_one_piece() -> None:
    body = b"Subject: plain\r\n\r\n" + b"line of text\r\n" * 50
    events = events_of(body + b".\r\n", whole)
    assert events == [MessageData(body), EndOfMessage()]


def test_a_dot_line_gets_a_piece_of_its_own_and_is_unstuffed() -> None:
    events = events_of(b"a\r\nb\r\n..c\r\nd\r\ne\r\n.\r\n", whole)
    assert events == [
        MessageData(b"a\r\nb\r\n"),
        MessageData(b".c\r\n"),
        MessageData(b"d\r\ne\r\n"),
        EndOfMessage(),
    ]


def test_bare_lf_and_long_lines_are_handed_out_line_by_line() -> None:
    events = events_of(b"a\nb\r\n" + b"x" * 1000 + b"\r\nc\r\n.\r\n", whole)
    assert events == [
        MessageData(b"a\n"),
        MessageData(b"b\r\n"),
        MessageData(b"x" * 1000 + b"\r\n", line_too_long=True),
        MessageData(b"c\r\n"),
        EndOfMessage(bare_newline=True),
    ]


def test_what_follows_the_message_is_commands_again() -> None:
    server = server_in_data()
    server.receive_data(b"one\r\ntwo\r\n.\r\nNOOP\r\n")
    assert server.next_command() == MessageData(b"one\r\ntwo\r\n")
    assert server.next_command() == EndOfMessage()
    server.send(Reply(250, ("queued",)))
    command = server.next_command()
    assert isinstance(command, Command)
    assert command.verb == "NOOP"
