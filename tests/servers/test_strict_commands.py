"""Commands that switch to TLS or say goodbye take no arguments, and an IMAP literal of
an unbelievable size gets its tagged answer (issue 15, item 7).

Trailing text on STARTTLS is what a STARTTLS injection rides on; on LOGOUT or QUIT it
is a client that does not speak the protocol. Each gets the protocol's syntax error and
the session goes on as before the command. POP3's QUIT is the exception: a -ERR to QUIT
would tell the client that its deletions failed and the session is over (RFC 1939 6), so
QUIT ends the session whatever follows it, as Dovecot's does.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from mailtalk.servers.api import RunningServers, run_servers

TIMEOUT = 10.0


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.reader = self.sock.makefile("rb")

    def send(self, text: str) -> None:
        self.sock.sendall(text.encode() + b"\r\n")

    def line(self) -> str:
        return self.reader.readline().decode("utf-8", "replace").rstrip("\r\n")

    def reply(self, prefix: str) -> str:
        """Lines until one starting with ``prefix`` (a tag, or an SMTP final line)."""
        while True:
            line = self.line()
            if not line or line.startswith(prefix):
                return line

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("strict")
    with run_servers(root, smtp=0, pop3=0, imap=0, users=[("alice", "secret")]) as running:
        yield running


def test_imap_starttls_and_logout_refuse_trailing_text(servers: RunningServers) -> None:
    client = Client(servers.port("imap"))
    assert client.line().startswith("* OK")
    client.send("a STARTTLS now")
    assert client.reply("a ") == "a BAD STARTTLS takes no arguments"
    client.send("b LOGOUT please")
    assert client.reply("b ") == "b BAD LOGOUT takes no arguments"
    client.send("c CAPABILITY")  # still in plain text, still connected
    assert client.reply("c ").startswith("c OK")
    client.send("d LOGOUT")
    assert client.line() == "* BYE Logging out"
    assert client.reply("d ").startswith("d OK")
    client.close()


def test_pop3_stls_refuses_trailing_text_and_quit_ends_the_session_anyway(
    servers: RunningServers,
) -> None:
    client = Client(servers.port("pop3"))
    assert client.line().startswith("+OK")
    client.send("STLS now")
    assert client.line() == "-ERR STLS takes no arguments"
    client.send("NOOP")  # not valid before login: answered in plain text
    assert client.line().startswith("-ERR NOOP is not valid")
    client.send("QUIT now")
    assert client.line() == "+OK Bye"
    assert client.line() == ""
    client.close()


def test_smtp_starttls_and_quit_refuse_trailing_text(servers: RunningServers) -> None:
    client = Client(servers.port("smtp"))
    assert client.reply("220 ").startswith("220")
    client.send("EHLO client.test")
    client.reply("250 ")
    client.send("STARTTLS now")
    assert client.reply("5").startswith("501 5.5.4")
    client.send("QUIT now")
    assert client.reply("5") == (
        "501 5.5.4 Syntax error in parameters or arguments: QUIT takes no arguments"
    )
    client.send("NOOP")
    assert client.reply("250 ").startswith("250")
    client.send("QUIT")
    assert client.reply("221 ").startswith("221")
    client.close()


@pytest.mark.parametrize(
    "literal", ["{99999999999999999999}", "{4294967296}", "~{1" + "0" * 30 + "}"]
)
def test_an_unbelievable_literal_gets_a_tagged_answer_before_login(
    servers: RunningServers, literal: str
) -> None:
    client = Client(servers.port("imap"))
    client.line()
    client.send(f"a LOGIN {literal}")
    # The client waits for "+" or a tagged answer: it gets the answer, at once.
    assert client.reply("a ").startswith("a NO [TOOBIG] Literal too large")
    client.send("b NOOP")
    assert client.reply("b ").startswith("b OK")
    client.close()


def test_an_unbelievable_append_literal_gets_a_tagged_answer(servers: RunningServers) -> None:
    client = Client(servers.port("imap"))
    client.line()
    client.send("a LOGIN alice secret")
    assert client.reply("a ").startswith("a OK")
    client.send("b APPEND INBOX (\\Seen) {99999999999999999999}")
    assert client.reply("b ").startswith("b NO [TOOBIG]")
    client.send("c NOOP")
    assert client.reply("c ").startswith("c OK")
    client.close()


def test_the_client_role_still_refuses_an_unbelievable_literal() -> None:
    from mailtalk.protocols.common import RemoteProtocolError, Role
    from mailtalk.protocols.imap import IMAPConnection

    connection = IMAPConnection(role=Role.CLIENT)
    connection.receive_data(b"* 1 FETCH (BODY[] {99999999999999999999}\r\n")
    with pytest.raises(RemoteProtocolError, match="not believable"):
        connection.next_event()
