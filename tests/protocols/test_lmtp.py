"""LMTP (RFC 2033) as a mode of the SMTP core and of the one client sequence: LHLO,
and one reply per accepted recipient after the message, fed whole and byte by byte."""

from __future__ import annotations

import pytest

from mailtalk.protocols.common import NEED_DATA, Role
from mailtalk.protocols.smtp import END_OF_DATA, Reply
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.protocols.smtp_plan import Await, Command, Done, Message, Plan
from mailtalk.protocols.smtp_sequence import ClientSequence
from mailtalk.protocols.smtp_server_role import EndOfChunk, EndOfMessage, MessageData


def feed(core: SMTPConnection, data: bytes, by_byte: bool) -> None:
    for piece in ([data[i : i + 1] for i in range(len(data))] if by_byte else [data]):
        core.receive_data(piece)


@pytest.mark.parametrize("by_byte", [False, True])
def test_client_and_server_agree_on_a_reply_per_recipient(by_byte: bool) -> None:
    client, server = SMTPConnection(lmtp=True), SMTPConnection(role=Role.SERVER, lmtp=True)
    feed(client, server.send(Reply(220, ("ready",))), by_byte)
    assert client.next_event().code == 220
    assert "LHLO" in client.valid_commands() and "EHLO" not in client.valid_commands()
    script = [("LHLO me", 250), ("MAIL FROM:<a@b>", 250), ("RCPT TO:<x@y>", 250),
              ("RCPT TO:<gone@y>", 550), ("RCPT TO:<z@y> NOTIFY=NEVER", 250), ("DATA", 354)]
    for line, code in script:
        feed(server, client.send_line(line), by_byte)
        assert server.next_command().verb == line.split()[0]
        feed(client, server.send(Reply(code, ("ok",))), by_byte)
        assert client.next_event().code == code
    assert client.transaction_recipients == ("x@y", "z@y")
    feed(server, client.send_message(b"Subject: t\n\nhi\n"), by_byte)
    while not isinstance(server.next_command(), EndOfMessage):
        pass
    assert server.pending_commands == (END_OF_DATA, END_OF_DATA)
    feed(server, client.send_line("QUIT"), by_byte)
    assert server.next_command() is NEED_DATA  # not before both replies are sent
    first = server.send(Reply(250, ("2.0.0 saved",)))
    second = server.send(Reply(452, ("4.2.2 over quota",)))
    assert server.next_command().verb == "QUIT"
    feed(client, first + second, by_byte)
    one, two = client.next_event(), client.next_event()
    assert (one.recipient, one.code, two.recipient, two.code) == ("x@y", 250, "z@y", 452)
    assert client.pending_commands == ("QUIT",)


@pytest.mark.parametrize("by_byte", [False, True])
def test_bdat_last_is_answered_once_per_recipient_in_both_roles(by_byte: bool) -> None:
    client = SMTPConnection(lmtp=True)
    server = SMTPConnection(role=Role.SERVER, lmtp=True, chunking=True)
    feed(client, server.send(Reply(220, ("ready",))), by_byte)
    client.next_event()
    script = [("LHLO me", 250), ("MAIL FROM:<a@b>", 250), ("RCPT TO:<x@y>", 250),
              ("RCPT TO:<gone@y>", 550), ("RCPT TO:<z@y>", 250), ("RCPT TO:<w@y>", 250)]
    for line, code in script:
        feed(server, client.send_line(line), by_byte)
        assert server.next_command().verb == line.split()[0]
        feed(client, server.send(Reply(code, ("ok",))), by_byte)
        client.next_event()
    for size, last in ((4, False), (3, True)):
        feed(server, client.send_line(f"BDAT {size}{' LAST' if last else ''}"), by_byte)
        feed(server, client.send_chunk(b"hi\r\n"[:size] if size == 4 else b"ok\n"), by_byte)
        events = []
        while not isinstance(event := server.next_command(), EndOfChunk):
            events.append(event)
        assert event.last is last
        assert all(isinstance(e, MessageData) for e in events[1:])
        if not last:
            assert server.owed_recipients == ()
            feed(client, server.send(Reply(250, ("4 octets",))), by_byte)
            assert client.next_event().recipient is None
    assert server.owed_recipients == ("x@y", "z@y", "w@y")
    feed(server, client.send_line("QUIT"), by_byte)
    replies = b""
    for code in (250, 552, 451):
        assert server.next_command() is NEED_DATA  # QUIT waits for every reply
        replies += server.send(Reply(code, ("per recipient",)))
    assert server.owed_recipients == ()
    assert server.next_command().verb == "QUIT"
    feed(client, replies, by_byte)
    got = [client.next_event() for _ in range(3)]
    assert [(r.recipient, r.code) for r in got] == [("x@y", 250), ("z@y", 552), ("w@y", 451)]
    assert client.pending_commands == ("QUIT",) and client.state_name == "ready"


def test_smtp_mode_has_no_lhlo_and_one_reply_after_the_dot() -> None:
    core = SMTPConnection()
    core.receive_data(b"220 hi\r\n")
    core.next_event()
    assert "LHLO" not in core.valid_commands()


def test_the_sequence_says_lhlo_and_awaits_every_recipient() -> None:
    core = SMTPConnection(lmtp=True)
    plan = Plan(helo="me", sender="a@b", recipients=("x@y", "z@y"))
    sequence = ClientSequence(core, plan)
    replies = {"<greeting>": b"220 hi\r\n", "LHLO": b"250-lmtp\r\n250 PIPELINING\r\n",
               "MAIL": b"250 ok\r\n", "RCPT": b"250 ok\r\n", "DATA": b"354 go\r\n"}
    sent = []
    while not isinstance(action := sequence.next_action(), Done):
        if isinstance(action, Command):
            core.send_line(action.line)
            sent.append(action.line)
            core.receive_data(replies[action.line.split()[0]])
        elif isinstance(action, Message):
            core.send_message(b"hi\n")
            core.receive_data(b"250 2.0.0 saved\r\n552 5.2.2 over quota\r\n")
        elif isinstance(action, Await) and action.answering != "<greeting>":
            pass  # the second reply is already in the buffer
        elif isinstance(action, Await):
            core.receive_data(replies["<greeting>"])
        else:
            continue
        sequence.receive(core.next_event())
    result = action.result
    assert sent[0] == "LHLO me"
    assert [(r, reply.code) for r, reply in result.deliveries] == [("x@y", 250), ("z@y", 552)]
    assert result.delivered == ["x@y"] and result.sent
