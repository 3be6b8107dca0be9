"""`mailtalk serve` SMTP: CHUNKING/BDAT (RFC 3030), DSN parameters (RFC 3461) and
SMTPUTF8 (RFC 6531), over real sockets to a real server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from mailtalk.servers.journal import Journal, read_events
from tests.servers import test_smtp_server as base
from tests.servers.test_smtp_server import Client, body_of, connect, new_files, wait_for

# The SMTP server tests' fixtures: a shared server (srv), one per test (make).
shared, srv, make, tls_template, server_errors = (
    base.shared, base.srv, base.make, base.tls_template, base.server_errors
)  # fmt: skip
RunningServers = Any


def in_transaction(client: Client, *recipients: str) -> None:
    assert client.ehlo().code == 250
    assert client.cmd("MAIL FROM:<bob@example.org>").code == 250
    for rcpt in recipients or ("alice@localhost",):
        assert client.cmd(f"RCPT TO:<{rcpt}>").code == 250


def bdat(client: Client, chunk: bytes, last: bool = False) -> Any:
    client.send(b"BDAT %d%s\r\n" % (len(chunk), b" LAST" if last else b"") + chunk)
    return client.reply()


# -- CHUNKING ----------------------------------------------------------------------


def test_bdat_chunks_are_delivered_as_sent_never_unstuffed(srv: RunningServers) -> None:
    first = b"Subject: chunks\r\n\r\n.leading dot\r\n"
    second = b"..two dots\r\n.\r\nafter a lone dot\r\n"
    with connect(srv) as client:
        in_transaction(client)
        reply = bdat(client, first)
        assert reply.raw == b"250 2.0.0 %d octets received\r\n" % len(first)
        reply = bdat(client, second, last=True)
        assert (reply.code == 250 and "queued" in reply.text.lower()) or reply.code == 250
        assert client.cmd("NOOP").code == 250
    wait_for(lambda: new_files(srv, "alice"))
    (path,) = new_files(srv, "alice")
    assert body_of(path.read_bytes()) == (first + second).replace(b"\r\n", b"\n")


def test_bdat_0_last_ends_the_message_and_pipelined_chunks_are_answered_in_order(
    srv: RunningServers,
) -> None:
    with connect(srv) as client:
        in_transaction(client)
        client.send(b"BDAT 5\r\nab\r\nc" + b"BDAT 5\r\nd\r\n\r\n" + b"BDAT 0 LAST\r\n")
        replies = client.replies(3)
        assert [r.code for r in replies] == [250, 250, 250]
        assert replies[0].raw == b"250 2.0.0 5 octets received\r\n"
    wait_for(lambda: new_files(srv, "alice"))
    (path,) = new_files(srv, "alice")
    assert body_of(path.read_bytes()) == b"ab\ncd\n\n"


def test_bdat_refused_outside_a_transaction_still_swallows_its_chunk(srv: RunningServers) -> None:
    with connect(srv) as client:
        assert client.ehlo().code == 250
        reply = bdat(client, b"QUIT\r\n", last=True)  # the QUIT is chunk data, not a command
        assert reply.code == 503
        assert client.cmd("NOOP").code == 250
        assert client.cmd("BDAT x").raw.startswith(b"501 5.5.4")


def test_data_after_bdat_is_refused_and_bdat_after_data_is_the_message(
    srv: RunningServers,
) -> None:
    with connect(srv) as client:
        in_transaction(client)
        assert bdat(client, b"x\r\n").code == 250
        reply = client.cmd("DATA")
        assert reply.raw == b"503 5.5.1 DATA cannot follow BDAT in one transaction (RFC 3030)\r\n"
        assert bdat(client, b"", last=True).code == 250


def test_chunks_over_the_size_limit_get_552_and_end_the_transaction(make: Any) -> None:
    servers = make(max_size=100)
    with connect(servers) as client:
        in_transaction(client)
        assert bdat(client, b"a" * 60).code == 250
        reply = bdat(client, b"b" * 60)
        assert reply.raw.startswith(b"552 5.3.4 Message too big for system (the limit is 100")
        assert bdat(client, b"", last=True).code == 503  # the transaction is gone
    assert not new_files(servers, "alice")


def test_a_personality_without_chunking_treats_bdat_as_unknown(make: Any) -> None:
    servers = make(personality="qmail")
    with connect(servers) as client:
        assert "CHUNKING" not in client.ehlo().lines
        assert client.cmd("BDAT 6 LAST").code in (500, 502)
        assert client.cmd("NOOP").code == 250  # the next line is a command again


SYNTAX = b"501 5.5.4 Syntax error in parameters or arguments: "

# -- DSN ---------------------------------------------------------------------------


def test_dsn_parameters_are_kept_in_the_envelope_headers_and_the_journal(
    make: Any, tmp_path: Path
) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    try:
        servers = make(journal=journal)
        with connect(servers) as client:
            assert "DSN" in client.ehlo().lines
            assert client.cmd("MAIL FROM:<bob@example.org> RET=HDRS ENVID=QQ+2Bq1").code == 250
            reply = client.cmd(
                "RCPT TO:<alice@localhost> NOTIFY=success,delay ORCPT=rfc822;alice+40localhost"
            )
            assert reply.code == 250
            assert client.cmd("DATA").code == 354
            client.send(b"Subject: dsn\r\n\r\nbody\r\n.\r\n")
            assert client.reply().code == 250
        wait_for(lambda: new_files(servers, "alice"))
        stored = new_files(servers, "alice")[0].read_bytes()
        assert b"\nX-Mailtalk-DSN: ENVID=QQ+2Bq1 RET=HDRS\n" in stored
        assert (
            b"\nX-Mailtalk-DSN-Recipient: <alice@localhost> NOTIFY=SUCCESS,DELAY"
            b" ORCPT=rfc822;alice+40localhost\n" in stored
        )
        wait_for(lambda: [e for e in read_events(path) if e.get("event") == "message"])
    finally:
        journal.close()
    (message,) = [e for e in read_events(path) if e.get("event") == "message"]
    assert message["dsn"] == {
        "ret": "HDRS", "envid": "QQ+2Bq1",
        "recipients": [{"address": "alice@localhost", "notify": "SUCCESS,DELAY",
                        "orcpt": "rfc822;alice+40localhost"}],
    }  # fmt: skip


@pytest.mark.parametrize(
    ("line", "reply"),
    [
        ("MAIL FROM:<b@example.org> RET=BOTH", SYNTAX + b"RET takes FULL or HDRS\r\n"),
        ("MAIL FROM:<b@example.org> RET=FULL RET=HDRS", SYNTAX + b"RET given twice\r\n"),
        ("MAIL FROM:<b@example.org> ENVID=a=b", SYNTAX + b"not xtext"),
    ],
)  # fmt: skip
def test_bad_mail_dsn_values_get_501(srv: RunningServers, line: str, reply: bytes) -> None:
    with connect(srv) as client:
        client.ehlo()
        assert client.cmd(line).raw.startswith(reply)


@pytest.mark.parametrize(
    ("params", "start"),
    [
        ("NOTIFY=NEVER,SUCCESS", SYNTAX + b"NOTIFY takes NEVER"),
        ("NOTIFY=SOMETIMES", SYNTAX + b"NOTIFY takes NEVER"),
        ("ORCPT=alice@localhost", SYNTAX + b"ORCPT takes addr-type;address"),
        ("FOO=1", b"555 5.5.4 MAIL FROM/RCPT TO parameter not recognized"),
    ],
)  # fmt: skip
def test_bad_rcpt_dsn_values_get_501_and_unknown_ones_555(
    srv: RunningServers, params: str, start: bytes
) -> None:
    with connect(srv) as client:
        client.ehlo()
        assert client.cmd("MAIL FROM:<b@example.org>").code == 250
        assert client.cmd(f"RCPT TO:<alice@localhost> {params}").raw.startswith(start)


def test_dsn_parameters_are_unknown_where_dsn_is_not_offered(make: Any) -> None:
    servers = make(personality="exim")
    with connect(servers) as client:
        assert "DSN" not in client.ehlo().lines
        assert client.cmd("MAIL FROM:<b@example.org> RET=FULL").code == 555


# -- SMTPUTF8 ----------------------------------------------------------------------


def test_utf8_addresses_need_smtputf8_on_mail(srv: RunningServers) -> None:
    with connect(srv) as client:
        assert "SMTPUTF8" in client.ehlo().lines
        assert client.cmd("MAIL FROM:<jos\u00e9@example.org>").raw == (
            b"553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"
        )
        assert client.cmd("MAIL FROM:<bob@example.org>").code == 250
        assert client.cmd("RCPT TO:<\u00e4lice@localhost>").raw == (
            b"553 5.6.7 Must declare SMTPUTF8 to send unicode address\r\n"
        )
        assert client.cmd("RSET").code == 250
        assert client.cmd("MAIL FROM:<jos\u00e9@example.org> SMTPUTF8").code == 250
        # Taken as an address; no such user here: the usual unknown-user refusal.
        reply = client.cmd("RCPT TO:<\u00e4lice@localhost>")
        assert reply.code == 550 and "\u00e4lice@localhost" in reply.text
        assert client.cmd("RCPT TO:<alice@localhost>").code == 250
        assert client.cmd("DATA").code == 354
        client.send("Subject: caf\u00e9\r\n\r\nhi\r\n.\r\n".encode())
        assert client.reply().code == 250
    wait_for(lambda: new_files(srv, "alice"))
    stored = new_files(srv, "alice")[0].read_bytes()
    assert stored.startswith("Return-Path: <jos\u00e9@example.org>\n".encode())
