"""Protocol cores (client role) driven into a given state by canned server bytes."""

from __future__ import annotations

from typing import Any

from mailtalk.protocols.common import NEED_DATA
from mailtalk.protocols.imap import IMAPConnection
from mailtalk.protocols.pop3 import POP3Connection
from mailtalk.protocols.smtp_connection import SMTPConnection


def feed(core: Any, data: bytes) -> list[Any]:
    """Give the core server bytes and take every event they make."""
    core.receive_data(data)
    events = []
    while (event := core.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def say(core: Any, line: str, reply: bytes) -> list[Any]:
    """Send a line as the user would, then feed the server's reply."""
    core.send_line(line)
    return feed(core, reply)


def smtp_connected() -> SMTPConnection:
    core = SMTPConnection()
    feed(core, b"220 mx.test ESMTP\r\n")
    return core


def smtp_ready(*extensions: str) -> SMTPConnection:
    core = smtp_connected()
    lines = ["mx.test hello", *extensions]
    reply = "".join(f"250-{x}\r\n" for x in lines[:-1]) + f"250 {lines[-1]}\r\n"
    say(core, "EHLO client.test", reply.encode())
    assert core.state_name == "ready"
    return core


def pop3_authorization(capa: list[str] | None = None) -> POP3Connection:
    core = POP3Connection()
    feed(core, b"+OK POP3 ready\r\n")
    if capa is not None:
        body = "".join(f"{c}\r\n" for c in capa)
        say(core, "CAPA", f"+OK\r\n{body}.\r\n".encode())
    return core


def pop3_transaction() -> POP3Connection:
    core = pop3_authorization()
    say(core, "USER alice", b"+OK\r\n")
    say(core, "PASS secret", b"+OK logged in\r\n")
    assert core.state_name == "transaction"
    return core


def imap_not_authenticated(caps: str = "IMAP4rev1 STARTTLS AUTH=PLAIN AUTH=XOAUTH2"
                           ) -> IMAPConnection:
    core = IMAPConnection()
    feed(core, f"* OK [CAPABILITY {caps}] ready\r\n".encode())
    return core


def imap_authenticated() -> IMAPConnection:
    core = imap_not_authenticated()
    say(core, "a1 LOGIN alice secret", b"a1 OK [CAPABILITY IMAP4rev1 MOVE UIDPLUS] in\r\n")
    assert core.state_name == "authenticated"
    return core


def imap_selected() -> IMAPConnection:
    core = imap_authenticated()
    say(core, 'LIST "" "*"',
        b'* LIST (\\HasNoChildren) "/" INBOX\r\n'
        b'* LIST (\\HasNoChildren) "/" "Sent Items"\r\n'
        b'* LIST (\\HasNoChildren) "/" Archive/2024\r\n'
        b'* LIST (\\HasNoChildren) "/" "say \\"hi\\""\r\n'
        b"a001 OK done\r\n")
    say(core, "SELECT INBOX", b"* 3 EXISTS\r\na002 OK [READ-WRITE] selected\r\n")
    assert core.state_name == "selected"
    return core
