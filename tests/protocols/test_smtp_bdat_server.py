"""The SMTP core in the server role reading BDAT chunks (RFC 3030): the chunk's octets
come right after the command line, as they are (no dot-unstuffing, no end-of-data
line), then ``EndOfChunk``; what follows is commands again once the chunk is answered."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mailtalk.protocols.common import CONNECTION_CLOSED, NEED_DATA, Role
from mailtalk.protocols.smtp import Reply, SMTPState, parse_bdat
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.protocols.smtp_server_role import Command, EndOfChunk, MessageData


def server_in_transaction(chunking: bool = True) -> SMTPConnection:
    server = SMTPConnection(role=Role.SERVER, chunking=chunking)
    server.send(Reply(220, ("ready",)))
    for line, code in ((b"EHLO c\r\n", 250), (b"MAIL FROM:<a@b>\r\n", 250),
                       (b"RCPT TO:<c@d>\r\n", 250)):  # fmt: skip
        server.receive_data(line)
        assert isinstance(server.next_command(), Command)
        server.send(Reply(code, ("ok",)))
    assert server.state is SMTPState.RCPT
    return server


def drain(server: SMTPConnection) -> list[object]:
    """Every event available now; each EndOfChunk and other command answered with 250."""
    events: list[object] = []
    while (event := server.next_command()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, EndOfChunk) or (isinstance(event, Command) and event.verb != "BDAT"):
            server.send(Reply(250, ("ok",)))
    return events


def chunk_bytes(events: list[object]) -> bytes:
    return b"".join(e.data for e in events if isinstance(e, MessageData))


def feed_bytewise(server: SMTPConnection, wire: bytes) -> list[object]:
    events: list[object] = []
    for index in range(len(wire)):
        server.receive_data(wire[index : index + 1])
        events += drain(server)
    return events


def test_parse_bdat() -> None:
    assert parse_bdat("12") == (12, False)
    assert parse_bdat("0 last") == (0, True)
    assert parse_bdat("12 LAST ") == (12, True)
    assert parse_bdat("") is None and parse_bdat("x") is None and parse_bdat("-1") is None
    assert parse_bdat("12 FIRST") is None


def test_bdat_chunk_is_read_as_is_and_never_unstuffed() -> None:
    server = server_in_transaction()
    body = b".\r\n..x\r\n.\r\nQUIT\r\n"
    events = feed_bytewise(server, b"BDAT %d LAST\r\n" % len(body) + body + b"NOOP\r\n")
    assert isinstance(events[0], Command) and events[0].verb == "BDAT"
    assert chunk_bytes(events) == body
    ends = [e for e in events if isinstance(e, EndOfChunk)]
    assert ends == [EndOfChunk(len(body), True)]
    after = [e.verb for e in events if isinstance(e, Command)]
    assert after == ["BDAT", "NOOP"]  # QUIT inside the chunk is data
    assert server.state is SMTPState.READY  # the 250 to BDAT LAST ended the transaction


def test_bdat_without_last_keeps_the_transaction_and_bdat_0_last_ends_it() -> None:
    server = server_in_transaction()
    events = feed_bytewise(server, b"BDAT 3\r\nabcBDAT 0 LAST\r\n")
    assert [e for e in events if isinstance(e, EndOfChunk)] == [
        EndOfChunk(3, False),
        EndOfChunk(0, True),
    ]
    assert chunk_bytes(events) == b"abc"
    assert server.state is SMTPState.READY


def test_what_follows_a_chunk_waits_for_its_reply() -> None:
    server = server_in_transaction()
    server.receive_data(b"BDAT 2\r\nxyNOOP\r\n")
    assert isinstance(server.next_command(), Command)
    assert server.next_command() == MessageData(b"xy")
    assert server.next_command() == EndOfChunk(2, False)
    assert server.next_command() is NEED_DATA  # NOOP waits for BDAT's answer
    server.send(Reply(250, ("2 octets",)))
    event = server.next_command()
    assert isinstance(event, Command) and event.verb == "NOOP"


def test_a_refused_bdat_is_still_read_and_its_reply_can_come_first() -> None:
    server = SMTPConnection(role=Role.SERVER, chunking=True)
    server.send(Reply(220, ("ready",)))
    server.receive_data(b"BDAT 4 LAST\r\nQUITNOOP\r\n")
    assert isinstance(server.next_command(), Command)
    server.send(Reply(503, ("5.5.1 need MAIL",)))  # an early answer, before the chunk
    assert server.next_command() == MessageData(b"QUIT")
    assert server.next_command() == EndOfChunk(4, True)
    event = server.next_command()  # nothing was waiting: on with the commands
    assert isinstance(event, Command) and event.verb == "NOOP"


def test_without_chunking_bdat_is_a_plain_command() -> None:
    server = server_in_transaction(chunking=False)
    server.receive_data(b"BDAT 4 LAST\r\nNOOP\r\n")
    assert isinstance(server.next_command(), Command)
    server.send(Reply(500, ("unknown",)))
    event = server.next_command()
    assert isinstance(event, Command) and event.verb == "NOOP"


def test_a_bdat_without_a_size_reads_nothing() -> None:
    server = server_in_transaction()
    server.receive_data(b"BDAT x\r\nNOOP\r\n")
    assert isinstance(server.next_command(), Command)
    server.send(Reply(501, ("5.5.4 Syntax",)))
    event = server.next_command()
    assert isinstance(event, Command) and event.verb == "NOOP"


def test_the_connection_closing_inside_a_chunk() -> None:
    server = server_in_transaction()
    server.receive_data(b"BDAT 10 LAST\r\nabc")
    assert isinstance(server.next_command(), Command)
    assert server.next_command() == MessageData(b"abc")
    assert server.next_command() is NEED_DATA
    server.receive_data(b"")
    assert server.next_command() is CONNECTION_CLOSED
    assert server.state is SMTPState.CLOSED


@given(
    chunks=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=1, max_value=50), min_size=1, max_size=20),
)
def test_chunks_come_out_whole_however_the_bytes_are_cut(
    chunks: list[bytes], cuts: list[int]
) -> None:
    server = server_in_transaction()
    wire = (
        b"".join(
            b"BDAT %d%s\r\n" % (len(c), b" LAST" if i == len(chunks) - 1 else b"") + c
            for i, c in enumerate(chunks)
        )
        + b"NOOP\r\n"
    )
    events: list[object] = []
    position, turn = 0, 0
    while position < len(wire):
        size = cuts[turn % len(cuts)]
        server.receive_data(wire[position : position + size])
        position += size
        turn += 1
        events += drain(server)
    assert chunk_bytes(events) == b"".join(chunks)
    assert [e.size for e in events if isinstance(e, EndOfChunk)] == [len(c) for c in chunks]
    assert [e.verb for e in events if isinstance(e, Command)] == ["BDAT"] * len(chunks) + ["NOOP"]
    assert server.state is SMTPState.READY
