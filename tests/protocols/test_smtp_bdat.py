"""The SMTP client core and BDAT (RFC 3030): the chunk's octets follow the command, the
reply comes after them, and BDAT ... LAST ends the transaction as DATA's dot does."""

from __future__ import annotations

import pytest

from mailtalk.protocols.common import LocalProtocolError
from mailtalk.protocols.smtp import SMTPState
from mailtalk.protocols.smtp_connection import SMTPConnection
from tests.protocols.test_smtp import one_reply, ready_client

EHLO_CHUNKING = b"250-mx.example.com\r\n250-CHUNKING\r\n250 ETRN\r\n"


def in_transaction() -> SMTPConnection:
    client = ready_client(EHLO_CHUNKING)
    client.send_line("MAIL FROM:<a@example.org>")
    one_reply(client, b"250 ok\r\n")
    client.send_line("RCPT TO:<b@example.com>")
    one_reply(client, b"250 ok\r\n")
    return client


def test_chunk_lines_are_counted_with_their_crlf_and_not_dot_stuffed() -> None:
    client = in_transaction()
    assert client.send_line("BDAT 12 LAST") == b"BDAT 12 LAST\r\n"
    assert client.chunk_left == 12 and client.in_command_continuation
    assert client.next_hint() == "the chunk: 12 more bytes (each line end counts 2)"
    assert client.send_line(".dot") == b".dot\r\n"
    with pytest.raises(LocalProtocolError, match="6 bytes left and this line is 9 with its CRLF"):
        client.send_line("toolong")
    assert client.send_line("last") == b"last\r\n"
    assert client.chunk_left == 0 and not client.in_command_continuation
    reply = one_reply(client, b"250 2.0.0 queued\r\n")
    assert reply.command == "BDAT"
    assert client.state is SMTPState.READY


def test_bdat_without_last_keeps_the_transaction_open() -> None:
    client = in_transaction()
    client.send_line("BDAT 3")
    client.send_line("x")
    one_reply(client, b"250 3 octets\r\n")
    assert client.state is SMTPState.RCPT
    assert "BDAT" in client.valid_commands()
    client.send_line("bdat 0 last")
    assert client.chunk_left == 0
    one_reply(client, b"250 ok\r\n")
    assert client.state is SMTPState.READY


def test_etrn_is_valid_when_advertised() -> None:
    assert "ETRN" in ready_client(EHLO_CHUNKING).valid_commands()
    assert "ETRN" not in ready_client(b"250-mx\r\n250 CHUNKING\r\n").valid_commands()
