"""Tests for the SMTP core: client and server roles, with no sockets."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    MAX_LINE,
    NEED_DATA,
    LocalProtocolError,
    NoEvent,
    RemoteProtocolError,
    ReplyClass,
    Role,
)
from mailtalk.protocols.smtp import (
    AUTH_RESPONSE,
    END_OF_DATA,
    GREETING,
    TRANSITIONS,
    VALID_COMMANDS,
    Reply,
    SMTPState,
)
from mailtalk.protocols.smtp_client_role import MAX_REPLY_LINES, dot_stuff, parse_extensions
from mailtalk.protocols.smtp_connection import Event, SMTPConnection
from mailtalk.protocols.smtp_server_role import Command, EndOfMessage, MessageData, format_reply

# -- helpers -------------------------------------------------------------------

Chunker = Callable[[bytes], Iterable[bytes]]


def whole(data: bytes) -> Iterable[bytes]:
    return [data]


def bytewise(data: bytes) -> Iterable[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def odd_chunks(data: bytes) -> Iterable[bytes]:
    """Cuts at awkward places: inside CRLF, inside the code, ..."""
    out, i, sizes = [], 0, [3, 1, 7, 2, 5]
    while i < len(data):
        size = sizes[len(out) % len(sizes)]
        out.append(data[i : i + size])
        i += size
    return out


CHUNKERS = pytest.mark.parametrize("chunker", [whole, bytewise, odd_chunks])


def drain(conn: SMTPConnection) -> list[Event]:
    """Every event the core can make from what it has."""
    events: list[Event] = []
    while True:
        event: Event | NoEvent = (
            conn.next_event() if conn.role is Role.CLIENT else conn.next_command()
        )
        if isinstance(event, NoEvent):
            return events
        events.append(event)


def feed(conn: SMTPConnection, data: bytes, chunker: Chunker = whole) -> list[Event]:
    events: list[Event] = []
    for chunk in chunker(data):
        conn.receive_data(chunk)
        events += drain(conn)
    return events


def replies(conn: SMTPConnection, data: bytes, chunker: Chunker = whole) -> list[Reply]:
    events = feed(conn, data, chunker)
    assert all(isinstance(e, Reply) for e in events)
    return [e for e in events if isinstance(e, Reply)]


def one_reply(conn: SMTPConnection, data: bytes, chunker: Chunker = whole) -> Reply:
    got = replies(conn, data, chunker)
    assert len(got) == 1, got
    return got[0]


POSTFIX_GREETING = b"220 mx.example.com ESMTP Postfix (Debian/GNU)\r\n"
POSTFIX_EHLO = (
    b"250-mx.example.com\r\n"
    b"250-PIPELINING\r\n"
    b"250-SIZE 10240000\r\n"
    b"250-VRFY\r\n"
    b"250-ETRN\r\n"
    b"250-STARTTLS\r\n"
    b"250-AUTH PLAIN LOGIN\r\n"
    b"250-ENHANCEDSTATUSCODES\r\n"
    b"250-8BITMIME\r\n"
    b"250-DSN\r\n"
    b"250 SMTPUTF8\r\n"
)
MESSAGE = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Hi Bob,\r\n"
    b".signature starts with a dot\r\n"
)


def greeted_client() -> SMTPConnection:
    client = SMTPConnection(Role.CLIENT)
    one_reply(client, POSTFIX_GREETING)
    assert client.state is SMTPState.CONNECTED
    return client


def ready_client(ehlo_reply: bytes = POSTFIX_EHLO) -> SMTPConnection:
    client = greeted_client()
    client.send_line("EHLO client.example.org")
    reply = one_reply(client, ehlo_reply)
    assert reply.command == "EHLO"
    assert client.state is SMTPState.READY
    return client


def rcpt_client() -> SMTPConnection:
    client = ready_client()
    client.send_line("MAIL FROM:<alice@example.org>")
    client.send_line("RCPT TO:<bob@example.com>")
    replies(client, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n")
    assert client.state is SMTPState.RCPT
    return client


def data_client() -> SMTPConnection:
    client = rcpt_client()
    client.send_line("DATA")
    one_reply(client, b"354 End data with <CR><LF>.<CR><LF>\r\n")
    assert client.state is SMTPState.DATA
    return client


# -- client: a realistic Postfix session ------------------------------------------

# (what the client sends, what Postfix answers, the state after the answer)
POSTFIX_SESSION: list[tuple[str | bytes | None, bytes, SMTPState]] = [
    (None, POSTFIX_GREETING, SMTPState.CONNECTED),
    ("EHLO client.example.org", POSTFIX_EHLO, SMTPState.READY),
    ("MAIL FROM:<alice@example.org>", b"250 2.1.0 Ok\r\n", SMTPState.MAIL),
    ("RCPT TO:<bob@example.com>", b"250 2.1.5 Ok\r\n", SMTPState.RCPT),
    ("DATA", b"354 End data with <CR><LF>.<CR><LF>\r\n", SMTPState.DATA),
    (MESSAGE, b"250 2.0.0 Ok: queued as 4XyZ12abcD\r\n", SMTPState.READY),
    ("QUIT", b"221 2.0.0 Bye\r\n", SMTPState.CLOSED),
]


def run_postfix_session(chunker: Chunker) -> tuple[list[Reply], list[SMTPState], bytes]:
    client = SMTPConnection(Role.CLIENT)
    got: list[Reply] = []
    states: list[SMTPState] = []
    sent = bytearray()
    for to_send, answer, _ in POSTFIX_SESSION:
        if isinstance(to_send, str):
            sent += client.send_line(to_send)
        elif isinstance(to_send, bytes):
            sent += client.send_message(to_send)
        assert client.awaiting_reply
        got.append(one_reply(client, answer, chunker))
        states.append(client.state)
        if client.state is SMTPState.READY:
            assert client.extensions["SIZE"] == "10240000"
    assert not client.awaiting_reply
    return got, states, bytes(sent)


def test_postfix_session_states_and_attribution() -> None:
    got, states, sent = run_postfix_session(whole)
    assert states == [state for _, _, state in POSTFIX_SESSION]
    assert [r.command for r in got] == [
        GREETING,
        "EHLO",
        "MAIL",
        "RCPT",
        "DATA",
        END_OF_DATA,
        "QUIT",
    ]
    assert [r.code for r in got] == [220, 250, 250, 250, 354, 250, 221]
    assert got[0].text == "mx.example.com ESMTP Postfix (Debian/GNU)"
    assert got[5].enhanced == "2.0.0"
    assert got[5].text == "Ok: queued as 4XyZ12abcD"
    assert got[6].raw == b"221 2.0.0 Bye\r\n"
    # The message went out dot-stuffed and ended, after the commands.
    assert sent == (
        b"EHLO client.example.org\r\nMAIL FROM:<alice@example.org>\r\n"
        b"RCPT TO:<bob@example.com>\r\nDATA\r\n"
        + MESSAGE.replace(b"\r\n.signature", b"\r\n..signature")
        + b".\r\nQUIT\r\n"
    )


def test_postfix_session_identical_whole_and_bytewise() -> None:
    reference = run_postfix_session(whole)
    assert run_postfix_session(bytewise) == reference
    assert run_postfix_session(odd_chunks) == reference


def test_postfix_ehlo_reply_extensions() -> None:
    client = ready_client()
    assert client.esmtp and client.greeted
    assert client.extensions == {
        "PIPELINING": "",
        "SIZE": "10240000",
        "VRFY": "",
        "ETRN": "",
        "STARTTLS": "",
        "AUTH": "PLAIN LOGIN",
        "ENHANCEDSTATUSCODES": "",
        "8BITMIME": "",
        "DSN": "",
        "SMTPUTF8": "",
    }
    assert client.auth_mechanisms == ["PLAIN", "LOGIN"]
    assert client.max_size == 10240000


def test_ehlo_reply_lines_and_raw() -> None:
    client = greeted_client()
    client.send_line("EHLO client.example.org")
    reply = one_reply(client, POSTFIX_EHLO)
    assert reply.lines[0] == "mx.example.com"
    assert reply.lines[-1] == "SMTPUTF8"
    assert len(reply.lines) == 11
    assert reply.raw == POSTFIX_EHLO
    assert reply.enhanced is None
    assert reply.reply_class is ReplyClass.POSITIVE
    assert reply.final and reply.positive


def test_all_pipelined_commands_answered_in_one_read_whole_transcript() -> None:
    client = SMTPConnection(Role.CLIENT)
    for line in ("EHLO c.example", "MAIL FROM:<a@x>", "RCPT TO:<b@y>", "DATA"):
        client.send_line(line)
    got = replies(
        client,
        POSTFIX_GREETING + POSTFIX_EHLO + b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n",
    )
    assert [r.command for r in got] == [GREETING, "EHLO", "MAIL", "RCPT", "DATA"]
    assert client.state is SMTPState.DATA


def test_parse_extensions_old_auth_spelling_and_single_line() -> None:
    reply = Reply(250, ("mx", "AUTH=LOGIN PLAIN", "auth CRAM-MD5", "size", ""))
    ext = parse_extensions(reply)
    assert ext["AUTH"] == "CRAM-MD5"  # the standard spelling wins
    assert ext["SIZE"] == ""
    assert "" not in ext
    assert parse_extensions(Reply(250, ("AUTH=LOGIN",))) == {}  # line 1 is the hostname
    assert parse_extensions(Reply(250, ("mx", "AUTH=LOGIN PLAIN"))) == {"AUTH": "LOGIN PLAIN"}


@pytest.mark.parametrize(
    ("size_line", "expected"),
    [
        (b"250 SIZE 10240000", 10240000),
        (b"250 SIZE", None),
        (b"250 SIZE 0", None),
        (b"250 SIZE -5", None),
        (b"250 SIZE \xc2\xb2", None),  # "²".isdigit() is True, int("²") fails
        (b"250 SIZE " + b"9" * 5000, None),  # int() refuses > 4300 digits
    ],
)
def test_max_size(size_line: bytes, expected: int | None) -> None:
    client = ready_client(b"250-mx.example.com\r\n" + size_line + b"\r\n")
    assert client.max_size == expected


# -- client: reply parsing ------------------------------------------------------------


def test_enhanced_code_split_out() -> None:
    client = rcpt_client()
    client.send_line("RCPT TO:<x@elsewhere.example>")
    reply = one_reply(client, b"554 5.7.1 <x@elsewhere.example>: Relay access denied\r\n")
    assert reply.code == 554
    assert reply.enhanced == "5.7.1"
    assert reply.text == "<x@elsewhere.example>: Relay access denied"
    assert reply.lines == ("5.7.1 <x@elsewhere.example>: Relay access denied",)
    assert reply.reply_class is ReplyClass.PERMANENT
    assert not reply.positive


def test_enhanced_code_on_every_line_of_multiline_reply() -> None:
    client = greeted_client()
    client.send_line("VRFY nobody")
    reply = one_reply(client, b"550-5.1.1 The email account\r\n550 5.1.1 does not exist\r\n")
    assert reply.enhanced == "5.1.1"
    assert reply.text == "The email account\ndoes not exist"


@pytest.mark.parametrize(
    "line",
    [b"250 5.7.1 looks like a code", b"550 2.0.0 not mine", b"451 5.1.1 class mismatch"],
)
def test_enhanced_code_not_split_when_class_disagrees(line: bytes) -> None:
    client = greeted_client()
    client.send_line("NOOP")
    reply = one_reply(client, line + b"\r\n")
    assert reply.enhanced is None
    assert reply.text == line[4:].decode()


def test_enhanced_code_needs_a_boundary() -> None:
    client = greeted_client()
    client.send_line("NOOP")
    reply = one_reply(client, b"250 2.0.0x not a code\r\n")
    assert reply.enhanced is None
    assert reply.text == "2.0.0x not a code"
    client.send_line("NOOP")
    reply = one_reply(client, b"550-5.7.1 first\r\n550 5.7.10 second\r\n")
    assert reply.enhanced == "5.7.1"
    assert reply.text == "first\n5.7.10 second"  # "5.7.10" is not "5.7.1" + text


@pytest.mark.parametrize("wire", [b"250\r\n", b"250\n", b"250 \r\n"])
def test_reply_without_text(wire: bytes) -> None:
    client = greeted_client()
    client.send_line("NOOP")
    reply = one_reply(client, wire)
    assert reply.code == 250
    assert reply.lines == ("",)
    assert reply.text == ""
    assert reply.enhanced is None
    assert reply.raw == wire


def test_multiline_reply_changing_code_is_an_error() -> None:
    client = greeted_client()
    client.send_line("EHLO x")
    client.receive_data(b"250-mx.example.com\r\n251 PIPELINING\r\n")
    with pytest.raises(RemoteProtocolError, match="changed its code"):
        drain(client)


@pytest.mark.parametrize(
    "garbage",
    [
        b"HTTP/1.1 400 Bad Request\r\n",
        b"+OK POP3 ready\r\n",
        b"25 short\r\n",
        b"2500 too long a code\r\n",
        b"250_bad separator\r\n",
        b"\r\n",
        b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n",  # a TLS ClientHello
    ],
)
def test_garbage_is_a_remote_protocol_error(garbage: bytes) -> None:
    client = SMTPConnection(Role.CLIENT)
    client.receive_data(garbage)
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_reply_classes() -> None:
    assert Reply(250, ("",)).reply_class is ReplyClass.POSITIVE
    assert Reply(354, ("",)).reply_class is ReplyClass.INTERMEDIATE
    assert Reply(451, ("",)).reply_class is ReplyClass.TRANSIENT
    assert Reply(550, ("",)).reply_class is ReplyClass.PERMANENT
    assert Reply(354, ("",)).positive and not Reply(451, ("",)).positive


def test_non_utf8_reply_is_escaped() -> None:
    client = SMTPConnection(Role.CLIENT)
    reply = one_reply(client, b"220 caf\xe9 \xff\xfe h\xc3\xa9llo\r\n")
    assert reply.text == "caf\\xe9 \\xff\\xfe héllo"
    assert reply.raw == b"220 caf\xe9 \xff\xfe h\xc3\xa9llo\r\n"
    assert client.state is SMTPState.CONNECTED


def test_non_utf8_garbage_error_message_is_text() -> None:
    client = SMTPConnection(Role.CLIENT)
    client.receive_data(b"\xff\xfe\x00garbage\r\n")
    with pytest.raises(RemoteProtocolError) as info:
        client.next_event()
    assert "\\xff" in str(info.value)


# -- client: pipelining, failures, RSET, 421, close ----------------------------------


def test_pipelined_replies_in_one_read_are_attributed() -> None:
    client = ready_client()
    for line in (
        "MAIL FROM:<alice@example.org>",
        "RCPT TO:<bob@example.com>",
        "RCPT TO:<nobody@example.com>",
        "DATA",
    ):
        client.send_line(line)
    assert client.pending_commands == ("MAIL", "RCPT", "RCPT", "DATA")
    client.receive_data(
        b"250 2.1.0 Ok\r\n"
        b"250 2.1.5 Ok\r\n"
        b"550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown\r\n"
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    got: list[tuple[str | None, int, SMTPState]] = []
    while isinstance(event := client.next_event(), Reply):
        got.append((event.command, event.code, client.state))
    assert event is NEED_DATA
    assert got == [
        ("MAIL", 250, SMTPState.MAIL),
        ("RCPT", 250, SMTPState.RCPT),
        ("RCPT", 550, SMTPState.RCPT),  # a failed RCPT keeps the state
        ("DATA", 354, SMTPState.DATA),
    ]
    assert not client.awaiting_reply


def test_failed_rcpt_keeps_mail_state() -> None:
    client = ready_client()
    client.send_line("MAIL FROM:<a@example.org>")
    one_reply(client, b"250 2.1.0 Ok\r\n")
    client.send_line("RCPT TO:<x@elsewhere.example>")
    reply = one_reply(client, b"554 5.7.1 <x@elsewhere.example>: Relay access denied\r\n")
    assert reply.command == "RCPT"
    assert client.state is SMTPState.MAIL
    assert "DATA" not in client.valid_commands()


def test_failed_mail_and_data_keep_state() -> None:
    client = ready_client()
    client.send_line("MAIL FROM:<bad")
    one_reply(client, b"501 5.1.7 Bad sender address syntax\r\n")
    assert client.state is SMTPState.READY
    client = rcpt_client()
    client.send_line("DATA")
    one_reply(client, b"554 5.5.1 Error: no valid recipients\r\n")
    assert client.state is SMTPState.RCPT


@pytest.mark.parametrize("client_factory", [ready_client, rcpt_client])
def test_rset_returns_to_ready(client_factory: Callable[[], SMTPConnection]) -> None:
    client = client_factory()
    client.send_line("rset")
    reply = one_reply(client, b"250 2.0.0 Ok\r\n")
    assert reply.command == "RSET"
    assert client.state is SMTPState.READY


def test_rset_before_ehlo_stays_connected() -> None:
    client = greeted_client()
    client.send_line("RSET")
    one_reply(client, b"250 2.0.0 Ok\r\n")
    assert client.state is SMTPState.CONNECTED


def test_end_of_data_rejected_still_resets() -> None:
    client = data_client()
    client.send_message(b"spam\r\n")
    reply = one_reply(client, b"554 5.7.1 Message rejected as spam\r\n")
    assert reply.command == END_OF_DATA
    assert client.state is SMTPState.READY


@pytest.mark.parametrize("client_factory", [greeted_client, ready_client, rcpt_client])
def test_421_closes(client_factory: Callable[[], SMTPConnection]) -> None:
    client = client_factory()
    client.send_line("NOOP")
    reply = one_reply(client, b"421 4.4.2 mx.example.com Error: timeout exceeded\r\n")
    assert reply.command == "NOOP"
    assert client.state is SMTPState.CLOSED
    assert client.valid_commands() == []
    with pytest.raises(LocalProtocolError):
        client.send_line("NOOP")


def test_421_to_end_of_data_closes_not_resets() -> None:
    client = data_client()
    client.send_line(".")
    reply = one_reply(client, b"421 4.3.0 shutting down\r\n")
    assert reply.command == END_OF_DATA
    assert client.state is SMTPState.CLOSED


def test_unsolicited_421_closes() -> None:
    client = ready_client()
    reply = one_reply(client, b"421 4.4.2 idle too long\r\n")
    assert reply.command is None
    assert client.state is SMTPState.CLOSED


def test_greeting_refused_keeps_greeting_state() -> None:
    client = SMTPConnection(Role.CLIENT)
    reply = one_reply(client, b"554 5.7.1 go away\r\n")
    assert reply.command == GREETING
    assert client.state is SMTPState.GREETING
    assert client.valid_commands() == ["QUIT"]


def test_connection_closed_after_empty_receive() -> None:
    client = ready_client()
    client.send_line("NOOP")
    client.receive_data(b"250 2.0.0 Ok\r\n")
    client.receive_data(b"")
    first = client.next_event()
    assert isinstance(first, Reply) and first.code == 250
    assert client.next_event() is CONNECTION_CLOSED
    assert client.next_event() is CONNECTION_CLOSED
    assert client.state is SMTPState.CLOSED
    assert not client.awaiting_reply


def test_close_with_commands_pending_clears_them() -> None:
    client = ready_client()
    client.send_line("NOOP")
    client.receive_data(b"")
    assert client.next_event() is CONNECTION_CLOSED
    assert not client.awaiting_reply


@pytest.mark.parametrize("partial", [b"250-mx.example.com\r\n", b"250-mx.example.com\r\n250-PIPE"])
def test_close_mid_reply_shows_what_came_then_closes(partial: bytes) -> None:
    client = greeted_client()
    client.send_line("EHLO x")
    client.receive_data(partial)
    client.receive_data(b"")
    reply = client.next_event()
    assert isinstance(reply, Reply)
    assert reply.incomplete and reply.code == 250 and reply.command == "EHLO"
    assert reply.lines[0] == "mx.example.com"
    assert client.next_event() is CONNECTION_CLOSED
    assert client.state is SMTPState.CLOSED


def test_endless_multiline_reply_is_cut() -> None:
    client = greeted_client()
    client.send_line("EHLO x")
    body = b"250-x\r\n" * 100_000
    for i in range(0, len(body), 65536):
        client.receive_data(body[i : i + 65536])
        assert client.next_event() is NEED_DATA
        assert len(client._reply_lines) <= MAX_REPLY_LINES  # memory bounded
    reply = one_reply(client, b"250 last\r\n")
    assert reply.truncated
    assert reply.code == 250
    assert len(reply.lines) == MAX_REPLY_LINES
    assert set(reply.lines) == {"x"}
    assert reply.command == "EHLO"
    assert client.state is SMTPState.READY
    # The next reply is read normally, not truncated.
    client.send_line("NOOP")
    reply = one_reply(client, b"250 2.0.0 Ok\r\n")
    assert not reply.truncated and reply.command == "NOOP"


def test_huge_line_is_cut_and_memory_bounded() -> None:
    client = greeted_client()
    client.send_line("NOOP")
    line = b"250 " + b"A" * (70 * 1024) + b"\r\n"
    chunk = 4096
    got: list[Reply] = []
    for i in range(0, len(line), chunk):
        client.receive_data(line[i : i + chunk])
        got += [e for e in drain(client) if isinstance(e, Reply)]
        assert len(client._buffer) <= MAX_LINE + chunk
    assert len(got) == 1
    reply = got[0]
    assert reply.truncated
    assert reply.code == 250
    assert len(reply.raw) <= MAX_LINE
    assert set(reply.text) == {"A"}
    assert client.state is SMTPState.CONNECTED
    # The rest of the long line was dropped; the next reply is intact.
    client.send_line("NOOP")
    reply = one_reply(client, b"250 2.0.0 Ok\r\n")
    assert not reply.truncated and reply.text == "Ok"


def test_huge_line_in_one_read_is_cut() -> None:
    client = greeted_client()
    client.send_line("NOOP")
    reply = one_reply(client, b"250 " + b"B" * (70 * 1024) + b"\r\n")
    assert reply.truncated
    assert len(reply.raw) <= MAX_LINE


# -- client: valid commands, STARTTLS ------------------------------------------------


def test_valid_commands_per_state() -> None:
    client = SMTPConnection(Role.CLIENT)
    assert client.valid_commands() == ["QUIT"]
    client = greeted_client()
    assert client.valid_commands() == ["EHLO", "HELO", "NOOP", "RSET", "VRFY", "HELP", "QUIT"]
    client = ready_client()
    ready = client.valid_commands()
    assert ready == [
        "MAIL",
        "EHLO",
        "HELO",
        "STARTTLS",
        "AUTH",
        "NOOP",
        "RSET",
        "VRFY",
        "ETRN",  # advertised
        "HELP",
        "QUIT",
    ]
    assert "EXPN" not in ready  # not advertised
    assert "RCPT" not in ready and "DATA" not in ready
    client.send_line("MAIL FROM:<a@example.org>")
    one_reply(client, b"250 2.1.0 Ok\r\n")
    assert client.valid_commands() == ["RCPT", "RSET", "NOOP", "VRFY", "HELP", "QUIT"]
    client.send_line("RCPT TO:<b@example.com>")
    one_reply(client, b"250 2.1.5 Ok\r\n")
    rcpt = client.valid_commands()
    assert "DATA" in rcpt and "RCPT" in rcpt
    assert "BDAT" not in rcpt  # CHUNKING not advertised
    client.send_line("DATA")
    one_reply(client, b"354 go\r\n")
    assert client.valid_commands() == []


def test_valid_commands_table_is_consistent() -> None:
    assert set(VALID_COMMANDS) == set(SMTPState)
    assert "DATA" not in VALID_COMMANDS[SMTPState.MAIL]
    assert "RCPT" not in VALID_COMMANDS[SMTPState.READY]
    assert TRANSITIONS[("DATA", 3)] is SMTPState.DATA
    assert TRANSITIONS[("STARTTLS", 2)] is SMTPState.CONNECTED


def test_extension_commands_follow_advertisement() -> None:
    client = ready_client(b"250-mx\r\n250-EXPN\r\n250 CHUNKING\r\n")
    ready = client.valid_commands()
    assert "EXPN" in ready
    assert "STARTTLS" not in ready and "AUTH" not in ready
    client.send_line("MAIL FROM:<a@x>")
    client.send_line("RCPT TO:<b@y>")
    replies(client, b"250 ok\r\n250 ok\r\n")
    assert "BDAT" in client.valid_commands()


def test_helo_has_no_extensions() -> None:
    client = greeted_client()
    client.send_line("HELO client.example.org")
    one_reply(client, b"250 mx.example.com\r\n")
    assert client.state is SMTPState.READY
    assert client.greeted and not client.esmtp
    assert client.extensions == {}
    assert "STARTTLS" not in client.valid_commands()
    assert "AUTH" not in client.valid_commands()


def test_starttls_not_offered_over_tls() -> None:
    client = SMTPConnection(Role.CLIENT, tls=True)
    one_reply(client, POSTFIX_GREETING)
    client.send_line("EHLO x")
    one_reply(client, POSTFIX_EHLO)
    assert "STARTTLS" not in client.valid_commands()
    assert "AUTH" in client.valid_commands()


def test_starttls_upgrade_discards_injected_bytes() -> None:
    client = ready_client()
    client.send_line("STARTTLS")
    # A man in the middle (or a buggy server) appends a reply after the 220, hoping
    # the client takes it, after TLS, as the answer to its next command.
    client.receive_data(b"220 2.0.0 Ready to start TLS\r\n250-injected\r\n250 AUTH PLAIN\r\n")
    reply = client.next_event()
    assert isinstance(reply, Reply) and reply.code == 220 and reply.command == "STARTTLS"
    assert client.next_event() is NEED_DATA  # the injected bytes are gone
    assert client.wants_tls_upgrade
    assert client.state is SMTPState.CONNECTED
    assert client.extensions == {}
    assert not client.greeted and not client.esmtp
    assert not client.tls
    client.tls_started()
    assert client.tls and not client.wants_tls_upgrade
    assert client.valid_commands() == ["EHLO", "HELO", "NOOP", "RSET", "VRFY", "HELP", "QUIT"]
    client.send_line("EHLO client.example.org")
    reply = one_reply(client, POSTFIX_EHLO)
    assert reply.command == "EHLO" and reply.lines[0] == "mx.example.com"
    assert client.state is SMTPState.READY
    assert "STARTTLS" not in client.valid_commands()  # advertised, but TLS is on


def test_starttls_forgets_authentication_and_pipelined_commands() -> None:
    client = ready_client()
    client.send_line("AUTH PLAIN AGFsaWNlAHNlY3JldA==")
    one_reply(client, b"235 2.7.0 Authentication successful\r\n")
    assert client.authenticated
    client.send_line("STARTTLS")
    client.send_line("NOOP")  # wrongly pipelined: the server will never answer it
    one_reply(client, b"220 2.0.0 Ready to start TLS\r\n")
    assert not client.authenticated
    assert not client.awaiting_reply
    client.tls_started()
    client.send_line("EHLO x")
    assert one_reply(client, POSTFIX_EHLO).command == "EHLO"


def test_starttls_refused_changes_nothing() -> None:
    client = ready_client()
    client.send_line("STARTTLS")
    one_reply(client, b"454 4.7.0 TLS not available due to local problem\r\n")
    assert not client.wants_tls_upgrade
    assert client.state is SMTPState.READY
    assert "STARTTLS" in client.extensions


def test_next_hint_mentions_starttls_and_auth() -> None:
    client = ready_client()
    hint = client.next_hint()
    assert "STARTTLS" in hint and "AUTH PLAIN" in hint and "MAIL FROM" in hint
    assert "EHLO" in greeted_client().next_hint()


# -- client: DATA mode ----------------------------------------------------------------


def test_send_line_in_data_mode_dot_stuffs() -> None:
    client = data_client()
    assert client.in_data
    assert client.send_line("Subject: hi") == b"Subject: hi\r\n"
    assert client.send_line("") == b"\r\n"
    assert client.send_line(".hidden") == b"..hidden\r\n"
    assert client.send_line("..") == b"...\r\n"
    assert client.send_line(" .") == b" .\r\n"
    assert client.send_line("QUIT") == b"QUIT\r\n"  # data, not a command
    assert client.pending_commands == ()
    assert client.state is SMTPState.DATA
    assert client.send_line(".") == b".\r\n"
    assert client.pending_commands == (END_OF_DATA,)
    assert client.state is SMTPState.READY
    reply = one_reply(client, b"250 2.0.0 Ok: queued as ABC\r\n")
    assert reply.command == END_OF_DATA
    assert client.state is SMTPState.READY


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        (b"", b".\r\n"),
        (b"one line", b"one line\r\n.\r\n"),
        (b"lf\nlines\n", b"lf\r\nlines\r\n.\r\n"),
        (b"cr\rlines", b"cr\r\nlines\r\n.\r\n"),
        (b"crlf\r\nlines\r\n", b"crlf\r\nlines\r\n.\r\n"),
        (b".a\n..b\n.\n", b"..a\r\n...b\r\n..\r\n.\r\n"),
        (b"\n", b"\r\n.\r\n"),
        (b"a\n\nb", b"a\r\n\r\nb\r\n.\r\n"),
        (b"mixed\r\n.\rend\n", b"mixed\r\n..\r\nend\r\n.\r\n"),
    ],
)
def test_dot_stuff(message: bytes, wire: bytes) -> None:
    assert dot_stuff(message) == wire


def test_send_message_normalises_and_ends() -> None:
    client = data_client()
    wire = client.send_message(b"Subject: x\n\n.dot\rlast")
    assert wire == b"Subject: x\r\n\r\n..dot\r\nlast\r\n.\r\n"
    assert client.state is SMTPState.READY
    assert client.pending_commands == (END_OF_DATA,)


def test_send_empty_message() -> None:
    client = data_client()
    assert client.send_message(b"") == b".\r\n"
    assert one_reply(client, b"250 ok\r\n").command == END_OF_DATA


def test_send_message_outside_data_is_local_error() -> None:
    client = rcpt_client()
    with pytest.raises(LocalProtocolError):
        client.send_message(b"hello")


def test_role_misuse_is_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        SMTPConnection(Role.SERVER).send_line("EHLO x")
    with pytest.raises(LocalProtocolError):
        SMTPConnection(Role.CLIENT).send(Reply(250, ("ok",)))


# -- client: AUTH and redaction --------------------------------------------------------


def test_auth_login_exchange() -> None:
    client = ready_client()
    assert client.redact("AUTH LOGIN") == "AUTH LOGIN"
    client.send_line("AUTH LOGIN")
    reply = one_reply(client, b"334 VXNlcm5hbWU6\r\n")
    assert reply.command == "AUTH" and reply.code == 334
    assert client.auth_continuation
    assert "334" in client.next_hint()
    assert client.redact("YWxpY2U=") == "***"
    assert client.send_line("YWxpY2U=") == b"YWxpY2U=\r\n"
    assert client.pending_commands == (AUTH_RESPONSE,)
    assert not client.auth_continuation
    reply = one_reply(client, b"334 UGFzc3dvcmQ6\r\n")
    assert reply.command == AUTH_RESPONSE
    assert client.redact("c2VjcmV0") == "***"
    client.send_line("c2VjcmV0")
    reply = one_reply(client, b"235 2.7.0 Authentication successful\r\n")
    assert reply.command == AUTH_RESPONSE
    assert client.authenticated
    assert "AUTH" not in client.valid_commands()
    assert client.state is SMTPState.READY
    # After the exchange, lines are commands again.
    assert client.redact("NOOP") == "NOOP"
    client.send_line("NOOP")
    assert client.pending_commands == ("NOOP",)


def test_auth_failure_not_authenticated() -> None:
    client = ready_client()
    client.send_line("AUTH PLAIN AGFsaWNlAHdyb25n")
    reply = one_reply(client, b"535 5.7.8 Error: authentication failed\r\n")
    assert reply.command == "AUTH"
    assert not client.authenticated and not client.auth_continuation
    assert "AUTH" in client.valid_commands()


def test_auth_cancel_is_not_redacted() -> None:
    client = ready_client()
    client.send_line("AUTH LOGIN")
    one_reply(client, b"334 VXNlcm5hbWU6\r\n")
    assert client.redact("*") == "*"
    client.send_line("*")
    reply = one_reply(client, b"501 5.7.0 Authentication aborted\r\n")
    assert reply.command == AUTH_RESPONSE
    assert not client.authenticated


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("AUTH PLAIN AGFsaWNlAHNlY3JldA==", "AUTH PLAIN ***"),
        ("auth plain AGFsaWNlAHNlY3JldA==", "auth plain ***"),
        ("AUTH LOGIN YWxpY2U=", "AUTH LOGIN ***"),
        ("AUTH PLAIN", "AUTH PLAIN"),
        ("AUTH LOGIN", "AUTH LOGIN"),
        ("MAIL FROM:<alice@example.org>", "MAIL FROM:<alice@example.org>"),
        ("AGFsaWNlAHNlY3JldA==", "AGFsaWNlAHNlY3JldA=="),  # not after 334: not secret
        ("EHLO AUTH", "EHLO AUTH"),
        ("AUHT PLAIN AGFsaWNlAHNlY3JldA==", "AUHT PLAIN ***"),  # mistyped
        ("LOGIN alice secret", "LOGIN alice ***"),  # IMAP's login, typed to SMTP
        ("VRFY alice", "VRFY alice"),
    ],
)
def test_redact_commands(line: str, shown: str) -> None:
    client = ready_client()
    assert client.redact(line) == shown


def test_redact_leaves_data_lines_alone() -> None:
    client = data_client()
    assert client.redact("AUTH PLAIN AGFsaWNlAHNlY3JldA==") == "AUTH PLAIN AGFsaWNlAHNlY3JldA=="
    assert client.redact("Subject: hi") == "Subject: hi"


# -- server role ------------------------------------------------------------------------


def server_events(server: SMTPConnection, data: bytes) -> list[Event]:
    return feed(server, data)


def greeted_server() -> SMTPConnection:
    server = SMTPConnection(Role.SERVER)
    assert server.send(Reply(220, ("mx.test ESMTP",))) == b"220 mx.test ESMTP\r\n"
    assert server.state is SMTPState.CONNECTED
    (ehlo,) = server_events(server, b"EHLO client.example.org\r\n")
    assert ehlo == Command("EHLO", "client.example.org", b"EHLO client.example.org\r\n")
    server.send(Reply(250, ("mx.test", "PIPELINING", "STARTTLS", "AUTH PLAIN LOGIN")))
    assert server.state is SMTPState.READY and server.esmtp
    return server


def test_server_parses_commands() -> None:
    server = SMTPConnection(Role.SERVER)
    events = server_events(
        server, b"ehlo Client.Example\r\nmail FROM:<A@Example.org>  SIZE=100\r\nNOOP\n"
    )
    assert events == [
        Command("EHLO", "Client.Example", b"ehlo Client.Example\r\n"),
        Command(
            "MAIL", "FROM:<A@Example.org>  SIZE=100", b"mail FROM:<A@Example.org>  SIZE=100\r\n"
        ),
        Command("NOOP", "", b"NOOP\n"),
    ]
    assert server.pending_commands == (GREETING, "EHLO", "MAIL", "NOOP")


def test_server_command_split_across_reads() -> None:
    server = greeted_server()
    events = feed(server, b"MAIL FROM:<a@example.org>\r\n", bytewise)
    assert events == [Command("MAIL", "FROM:<a@example.org>", b"MAIL FROM:<a@example.org>\r\n")]


@pytest.mark.parametrize(
    ("length", "too_long"),
    [(510, False), (511, True), (600, True), (70 * 1024, True)],
)
def test_server_command_too_long(length: int, too_long: bool) -> None:
    server = greeted_server()
    prefix = b"MAIL FROM:<"
    line = prefix + b"a" * (length - len(prefix) - 1) + b">"
    assert len(line) == length
    events = server_events(server, line + b"\r\n")
    assert len(events) == 1
    command = events[0]
    assert isinstance(command, Command)
    assert command.verb == "MAIL"
    assert command.too_long is too_long


def test_server_pipelined_commands_stop_at_data() -> None:
    server = greeted_server()
    wire = (
        b"MAIL FROM:<a@example.org>\r\n"
        b"RCPT TO:<b@example.com>\r\n"
        b"RCPT TO:<c@example.com>\r\n"
        b"DATA\r\n"
        b"MAIL FROM:<not-a-command@example.org>\r\n"
        b"..dotted\r\n"
        b".\r\n"
        b"QUIT\r\n"
    )
    events = server_events(server, wire)
    assert [e.verb for e in events if isinstance(e, Command)] == ["MAIL", "RCPT", "RCPT", "DATA"]
    assert len(events) == 4
    # Replies to the commands before DATA do not resume parsing: the message must
    # not be read as commands before the 354 goes out.
    server.send(Reply(250, ("Ok",), "2.1.0"))
    assert server.next_command() is NEED_DATA
    server.send(Reply(250, ("Ok",), "2.1.5"))
    server.send(Reply(250, ("Ok",), "2.1.5"))
    assert server.next_command() is NEED_DATA
    assert server.state is SMTPState.RCPT
    assert server.send(Reply(354, ("End data with <CR><LF>.<CR><LF>",))) == (
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
    )
    assert server.state is SMTPState.DATA
    events = drain(server)
    assert events == [
        MessageData(b"MAIL FROM:<not-a-command@example.org>\r\n"),
        MessageData(b".dotted\r\n"),
        EndOfMessage(bare_newline=False),
    ]
    assert server.state is SMTPState.READY
    assert server.next_command() is NEED_DATA  # QUIT waits for the reply to the message
    server.send(Reply(250, ("Ok: queued as 1",), "2.0.0"))
    (quit_,) = drain(server)
    assert quit_ == Command("QUIT", "", b"QUIT\r\n")
    server.send(Reply(221, ("Bye",), "2.0.0"))
    assert server.state is SMTPState.CLOSED


def test_server_data_refused_resumes_commands() -> None:
    server = greeted_server()
    events = server_events(server, b"DATA\r\nNOOP\r\n")
    assert [e.verb for e in events if isinstance(e, Command)] == ["DATA"]
    server.send(Reply(503, ("need RCPT command",), "5.5.1"))
    assert server.state is SMTPState.READY
    assert drain(server) == [Command("NOOP", "", b"NOOP\r\n")]


def message_events(body: bytes, chunker: Chunker = whole) -> list[Event]:
    """Events of a server after 354 fed ``body``."""
    server = greeted_server()
    for line in (b"MAIL FROM:<a@x>\r\n", b"RCPT TO:<b@y>\r\n"):
        server_events(server, line)
        server.send(Reply(250, ("Ok",)))
    server_events(server, b"DATA\r\n")
    server.send(Reply(354, ("go ahead",)))
    return feed(server, body, chunker)


@CHUNKERS
def test_server_dot_unstuffing(chunker: Chunker) -> None:
    events = message_events(b"..leading\r\n...two\r\nmid.dot\r\n.\r\n", chunker)
    assert events == [
        MessageData(b".leading\r\n"),
        MessageData(b"..two\r\n"),
        MessageData(b"mid.dot\r\n"),
        EndOfMessage(),
    ]


def test_server_empty_message() -> None:
    assert message_events(b".\r\n") == [EndOfMessage()]


@pytest.mark.parametrize("sequence", [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n"])
@CHUNKERS
def test_server_smuggling_sequences_do_not_end_message(sequence: bytes, chunker: Chunker) -> None:
    smuggled = b"MAIL FROM:<admin@example.com>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
    body = b"Subject: hi\r\n\r\nhello" + sequence + smuggled + b"rest\r\n.\r\n"
    events = message_events(body, chunker)
    assert not any(isinstance(e, Command) for e in events)
    assert isinstance(events[-1], EndOfMessage)
    assert sum(isinstance(e, EndOfMessage) for e in events) == 1
    data = b"".join(e.data for e in events if isinstance(e, MessageData))
    assert smuggled in data
    assert data.endswith(b"rest\r\n")
    expect_bare = b"\n" in sequence.replace(b"\r\n", b"")
    last = events[-1]
    assert isinstance(last, EndOfMessage)
    assert last.bare_newline is expect_bare


def test_server_only_crlf_dot_crlf_ends() -> None:
    events = message_events(b"a\r\n.\r\nMAIL FROM:<x@y>\r\n")
    assert events == [MessageData(b"a\r\n"), EndOfMessage()]


def test_server_bare_newline_flag() -> None:
    events = message_events(b"Subject: x\n\nbody\r\n.\r\n")
    assert events[-1] == EndOfMessage(bare_newline=True)
    assert events[0] == MessageData(b"Subject: x\n")
    events = message_events(b"Subject: x\r\n\r\nbody\r\n.\r\n")
    assert events[-1] == EndOfMessage(bare_newline=False)


def test_bare_newline_resets_per_message() -> None:
    server = greeted_server()
    for body, bare in ((b"a\nb\r\n.\r\n", True), (b"a\r\nb\r\n.\r\n", False)):
        for line in (b"MAIL FROM:<a@x>\r\n", b"RCPT TO:<b@y>\r\n", b"DATA\r\n"):
            server_events(server, line)
            server.send(Reply(354 if line == b"DATA\r\n" else 250, ("ok",)))
        events = server_events(server, body)
        assert events[-1] == EndOfMessage(bare_newline=bare)
        server.send(Reply(250, ("queued",)))
        assert server.state is SMTPState.READY


@pytest.mark.parametrize(("length", "too_long"), [(998, False), (999, True), (5000, True)])
def test_server_line_too_long(length: int, too_long: bool) -> None:
    events = message_events(b"x" * length + b"\r\n.\r\n")
    data = [e for e in events if isinstance(e, MessageData)]
    assert len(data) == 1
    assert data[0].line_too_long is too_long
    assert data[0].data == b"x" * length + b"\r\n"
    assert events[-1] == EndOfMessage()


def chunks_4k(data: bytes) -> Iterable[bytes]:
    return [data[i : i + 4096] for i in range(0, len(data), 4096)]


@pytest.mark.parametrize("chunker", [whole, chunks_4k])
def test_server_huge_data_line_kept_and_message_still_ends(chunker: Chunker) -> None:
    line = b"." + b"y" * (70 * 1024) + b"\r"
    body = line + b"\r\n.\r\n"
    events = message_events(body, chunker)
    assert events[-1] == EndOfMessage()
    data = [e for e in events if isinstance(e, MessageData)]
    assert all(e.line_too_long for e in data)
    assert all(len(e.data) <= MAX_LINE + 2 for e in data)  # handed out in pieces
    assert b"".join(e.data for e in data) == line[1:] + b"\r\n"  # only the first dot unstuffed


def test_server_close_in_data() -> None:
    server = greeted_server()
    server_events(server, b"DATA\r\n")
    server.send(Reply(354, ("go",)))
    server.receive_data(b"partial line")
    server.receive_data(b"")
    assert server.next_command() == MessageData(b"partial line")
    assert server.next_command() is CONNECTION_CLOSED
    assert server.state is SMTPState.CLOSED


def test_server_connection_closed() -> None:
    server = greeted_server()
    server.receive_data(b"NOOP\r\n")
    server.receive_data(b"")
    assert server.next_command() == Command("NOOP", "", b"NOOP\r\n")
    assert server.next_command() is CONNECTION_CLOSED
    assert server.state is SMTPState.CLOSED


def test_server_starttls_discards_pipelined_bytes() -> None:
    server = greeted_server()
    events = server_events(server, b"STARTTLS\r\nMAIL FROM:<injected@evil.example>\r\n")
    assert events == [Command("STARTTLS", "", b"STARTTLS\r\n")]
    assert server.next_command() is NEED_DATA
    server.send(Reply(220, ("Ready to start TLS",), "2.0.0"))
    assert server.wants_tls_upgrade
    assert server.state is SMTPState.CONNECTED
    assert server.next_command() is NEED_DATA  # the injected MAIL is gone
    server.tls_started()
    assert server.tls
    assert server_events(server, b"EHLO again\r\n") == [Command("EHLO", "again", b"EHLO again\r\n")]


def test_server_auth_continuation() -> None:
    server = greeted_server()
    # The client pipelines its answer; it must not be read as a command before 334.
    events = server_events(server, b"AUTH LOGIN\r\nYWxpY2U=\r\n")
    assert events == [Command("AUTH", "LOGIN", b"AUTH LOGIN\r\n")]
    server.send(Reply(334, ("VXNlcm5hbWU6",)))
    (answer,) = drain(server)
    assert answer == Command(AUTH_RESPONSE, "YWxpY2U=", b"YWxpY2U=\r\n")
    server.send(Reply(334, ("UGFzc3dvcmQ6",)))
    (answer,) = server_events(server, b"c2VjcmV0\r\n")
    assert isinstance(answer, Command) and answer.verb == AUTH_RESPONSE
    server.send(Reply(235, ("Authentication successful",), "2.7.0"))
    assert server.authenticated
    assert server_events(server, b"NOOP\r\n") == [Command("NOOP", "", b"NOOP\r\n")]


def test_server_quit_and_421() -> None:
    server = greeted_server()
    server_events(server, b"MAIL FROM:<a@x>\r\n")
    server.send(Reply(421, ("shutting down",), "4.3.2"))
    assert server.state is SMTPState.CLOSED


def test_server_send_formats() -> None:
    server = SMTPConnection(Role.SERVER)
    server.send(Reply(220, ("mx",)))
    server_events(server, b"EHLO x\r\n")
    wire = server.send(Reply(250, ("mx.example.com", "PIPELINING", "SIZE 10240000")))
    assert wire == b"250-mx.example.com\r\n250-PIPELINING\r\n250 SIZE 10240000\r\n"


def test_format_reply() -> None:
    assert format_reply(250, ["Ok"]) == b"250 Ok\r\n"
    assert format_reply(250, ()) == b"250\r\n"
    assert format_reply(250, ["a", "b", "c"]) == b"250-a\r\n250-b\r\n250 c\r\n"
    assert format_reply(550, ("No such user", "Try again"), "5.1.1") == (
        b"550-5.1.1 No such user\r\n550 5.1.1 Try again\r\n"
    )
    assert format_reply(250, ["2.0.0 Ok"], "2.0.0") == b"250 2.0.0 Ok\r\n"  # not doubled
    assert format_reply(250, [""], "2.0.0") == b"250 2.0.0\r\n"


def test_format_reply_line_breaks_cannot_inject_lines() -> None:
    wire = format_reply(250, ["ok\r\n354 injected", "x\ny"])
    assert wire == b"250-ok\r\n250-354 injected\r\n250-x\r\n250 y\r\n"
    client = greeted_client()
    client.send_line("NOOP")
    reply = one_reply(client, wire)
    assert reply.lines == ("ok", "354 injected", "x", "y")
    assert not client.awaiting_reply


@pytest.mark.parametrize(
    "reply",
    [
        Reply(250, ("Ok",)),
        Reply(550, ("first", "second"), "5.1.1"),
        Reply(250, ("mx", "PIPELINING", "SIZE 100")),
        Reply(221, ("Bye",), "2.0.0"),
    ],
)
def test_format_reply_round_trips_through_client(reply: Reply) -> None:
    client = greeted_client()
    client.send_line("NOOP")
    got = one_reply(client, format_reply(reply.code, reply.lines, reply.enhanced))
    assert got.code == reply.code
    assert got.enhanced == reply.enhanced
    assert got.text == "\n".join(reply.lines)


# -- paired client and server ----------------------------------------------------------


class FakeServer:
    """A tiny MTA on the server core: answers every command, keeps the messages."""

    def __init__(self) -> None:
        self.core = SMTPConnection(Role.SERVER)
        self.messages: list[bytes] = []
        self.bare: list[bool] = []
        self._message = bytearray()

    def greet(self) -> bytes:
        return self.core.send(Reply(220, ("mx.test ESMTP fake",)))

    def receive(self, data: bytes) -> bytes:
        self.core.receive_data(data)
        out = bytearray()
        while True:
            event = self.core.next_command()
            if isinstance(event, NoEvent):
                return bytes(out)
            out += self.core.send(r) if (r := self.answer(event)) is not None else b""

    def answer(self, event: Event) -> Reply | None:
        if isinstance(event, MessageData):
            self._message += event.data
            return None
        if isinstance(event, EndOfMessage):
            self.messages.append(bytes(self._message))
            self.bare.append(event.bare_newline)
            self._message.clear()
            return Reply(250, (f"Ok: queued as Q{len(self.messages)}",), "2.0.0")
        assert isinstance(event, Command)
        table = {
            "EHLO": Reply(
                250,
                (
                    "mx.test",
                    "PIPELINING",
                    "SIZE 1000000",
                    "AUTH PLAIN LOGIN",
                    "ENHANCEDSTATUSCODES",
                ),
            ),
            "HELO": Reply(250, ("mx.test",)),
            "MAIL": Reply(250, ("Ok",), "2.1.0"),
            "RSET": Reply(250, ("Ok",), "2.0.0"),
            "NOOP": Reply(250, ("Ok",), "2.0.0"),
            "DATA": Reply(354, ("End data with <CR><LF>.<CR><LF>",)),
            "AUTH": Reply(334, ("",)),
            AUTH_RESPONSE: Reply(235, ("Authentication successful",), "2.7.0"),
            "QUIT": Reply(221, ("Bye",), "2.0.0"),
        }
        if event.verb == "RCPT":
            if "nobody" in event.args:
                return Reply(550, ("<nobody@y>: Recipient address rejected",), "5.1.1")
            return Reply(250, ("Ok",), "2.1.5")
        return table.get(event.verb, Reply(502, ("Error: command not recognized",), "5.5.2"))


class Link:
    """A client core and a FakeServer joined by an in-memory pipe."""

    def __init__(self) -> None:
        self.client = SMTPConnection(Role.CLIENT)
        self.server = FakeServer()
        self.got = replies(self.client, self.server.greet())

    def say(self, *lines: str) -> list[Reply]:
        wire = b"".join(self.client.send_line(line) for line in lines)
        return self.deliver(wire)

    def deliver(self, wire: bytes) -> list[Reply]:
        answer = self.server.receive(wire)
        got = replies(self.client, answer, odd_chunks)
        assert self.client.state is self.server.core.state
        return got


def test_paired_full_session() -> None:
    link = Link()
    assert link.client.state is link.server.core.state is SMTPState.CONNECTED
    (ehlo,) = link.say("EHLO client.test")
    assert ehlo.command == "EHLO" and link.client.auth_mechanisms == ["PLAIN", "LOGIN"]
    assert link.client.max_size == 1000000
    assert link.client.state is SMTPState.READY
    (auth,) = link.say("AUTH PLAIN")
    assert auth.code == 334 and link.client.auth_continuation
    (ok,) = link.say("AGFsaWNlAHNlY3JldA==")
    assert ok.command == AUTH_RESPONSE and ok.code == 235
    assert link.client.authenticated and link.server.core.authenticated
    got = link.say("MAIL FROM:<a@x>", "RCPT TO:<b@y>", "RCPT TO:<nobody@y>", "DATA")
    assert [(r.command, r.code) for r in got] == [
        ("MAIL", 250),
        ("RCPT", 250),
        ("RCPT", 550),
        ("DATA", 354),
    ]
    assert link.client.state is SMTPState.DATA
    for line in ("Subject: hi", "", ".leading dot", "."):
        wire = link.client.send_line(line)
        got = link.deliver(wire)
    assert [(r.command, r.code) for r in got] == [(END_OF_DATA, 250)]
    assert link.server.messages == [b"Subject: hi\r\n\r\n.leading dot\r\n"]
    assert link.client.state is SMTPState.READY
    (rset,) = link.say("RSET")
    assert rset.code == 250
    (bye,) = link.say("QUIT")
    assert bye.code == 221
    assert link.client.state is link.server.core.state is SMTPState.CLOSED


def test_paired_message_with_dots_round_trips() -> None:
    link = Link()
    link.say("EHLO c")
    link.say("MAIL FROM:<a@x>", "RCPT TO:<b@y>", "DATA")
    message = b".\r\n..\r\n.foo\r\nbar\r\n. \r\n\r\n.\r\nend\r\n"
    got = link.deliver(link.client.send_message(message))
    assert [(r.command, r.code) for r in got] == [(END_OF_DATA, 250)]
    assert link.server.messages == [message]
    assert link.server.bare == [False]


def test_paired_two_messages_in_one_session() -> None:
    link = Link()
    link.say("HELO c")
    for n, body in enumerate((b"first\r\n", b"second\n.dot\n"), start=1):
        link.say("MAIL FROM:<a@x>", "RCPT TO:<b@y>", "DATA")
        (queued,) = link.deliver(link.client.send_message(body))
        assert queued.text == f"Ok: queued as Q{n}"
    assert link.server.messages == [b"first\r\n", b"second\r\n.dot\r\n"]


# -- properties -----------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

smtp_bytes = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [
                b"250",
                b"250-",
                b"250 ",
                b"354 ",
                b"334 ",
                b"421 ",
                b"220 ",
                b"5.7.1 ",
                b"\r\n",
                b"\n",
                b"\r",
                b".",
                b"AUTH PLAIN",
                b"SIZE 9",
                b"\xff",
            ]
        ),
    ),
    max_size=30,
)


@FUZZ
@given(chunks=smtp_bytes, close=st.booleans())
def test_client_never_crashes_on_arbitrary_bytes(chunks: list[bytes], close: bool) -> None:
    client = ready_client()
    client.send_line("NOOP")
    client.send_line("AUTH LOGIN")
    try:
        for chunk in [*chunks, *([b""] if close else [])]:
            client.receive_data(chunk)
            for event in drain(client):
                assert isinstance(event, Reply)
                assert 0 <= event.code <= 999
                _ = (event.text, event.reply_class, event.positive)
            # The state stays usable whatever the server said.
            _ = (
                client.valid_commands(),
                client.next_hint(),
                client.max_size,
                client.auth_mechanisms,
                client.redact("AUTH PLAIN eA=="),
            )
    except RemoteProtocolError:
        pass


@FUZZ
@given(chunks=smtp_bytes, close=st.booleans())
def test_server_never_raises_on_arbitrary_bytes(chunks: list[bytes], close: bool) -> None:
    server = FakeServer()
    server.greet()
    for chunk in [*chunks, *([b""] if close else [])]:
        if server.core.state is SMTPState.CLOSED:
            break
        server.receive(chunk)


@FUZZ
@given(chunks=smtp_bytes)
def test_server_in_data_never_raises(chunks: list[bytes]) -> None:
    server = FakeServer()
    server.greet()
    server.receive(b"EHLO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@y>\r\nDATA\r\n")
    assert server.core.state is SMTPState.DATA
    for chunk in chunks:
        server.receive(chunk)


def normalise(body: bytes) -> bytes:
    """Every line ended by CRLF, whatever ended it before (an independent definition)."""
    lines = re.split(rb"\r\n|\r|\n", body)
    if lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


message_bodies = st.lists(
    st.one_of(st.binary(max_size=20), st.sampled_from([b".", b"\r\n", b"\n", b"\r", b".."])),
    max_size=20,
).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(body=message_bodies, split=st.integers(min_value=1, max_value=17))
def test_any_body_survives_dot_stuff_and_server_parse(body: bytes, split: int) -> None:
    wire = dot_stuff(body)
    # The only end-of-data marker is the last one.
    assert wire.endswith(b".\r\n")
    assert wire == b".\r\n" or wire.find(b"\r\n.\r\n") == len(wire) - 5
    assert not wire.startswith(b".\r\n") or wire == b".\r\n"
    events = message_events(
        wire + b"NOOP\r\n", lambda d: [d[i : i + split] for i in range(0, len(d), split)]
    )
    assert isinstance(events[-1], EndOfMessage)
    assert not events[-1].bare_newline
    data = [e for e in events[:-1] if isinstance(e, MessageData)]
    assert len(data) == len(events) - 1
    assert b"".join(e.data for e in data) == normalise(body)
