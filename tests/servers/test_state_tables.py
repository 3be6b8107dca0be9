"""One state table per protocol: the reference servers answer by the cores' tables.

``VALID_COMMANDS`` in ``mailtalk.protocols`` says which commands a client may send in
each state; the REPL's completion reads it, and the POP3 and IMAP servers dispatch by
it. These tests send every command of a protocol in every state over a real socket
and check that the server refuses exactly what the table leaves out. The SMTP server
answers out-of-sequence commands itself, with its personality's wording (qmail takes
MAIL before HELO); for its strict default personality the differences from the table
are listed below, each with its reason.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailtalk.protocols import imap, pop3, smtp
from mailtalk.servers import pop3 as pop3_server
from mailtalk.servers import smtp as smtp_server
from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.imap import server as imap_server
from tests.servers.imap.test_imap_server import Raw

MESSAGE = b"From: bob@example.org\r\nSubject: hi\r\n\r\nhello\r\n"


def every_verb(table: dict[object, tuple[str, ...]]) -> list[str]:
    return sorted({verb for verbs in table.values() for verb in verbs})


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("state-tables")
    with run_servers(root, smtp=0, pop3=0, imap=0, users=[("alice", "secret")]) as running:
        inbox = Path(root) / "mail" / "alice" / "Maildir"
        for folder in ("cur", "new", "tmp"):
            (inbox / folder).mkdir(parents=True, exist_ok=True)
        (inbox / "new" / "1.mailtalk-test").write_bytes(MESSAGE)
        yield running


def exchange(
    port: int,
    setup: list[str],
    command: str,
    reply: Callable[[Raw], bytes],
    ok: Callable[[bytes], bool],
) -> bytes:
    """The server's answer to ``command``, sent after the ``setup`` commands (each answered
    as ``ok`` says) on a new connection."""
    client = Raw(port)  # reads the greeting
    try:
        for line in setup:
            client.send(f"{line}\r\n".encode())
            answer = reply(client)
            assert ok(answer), (line, answer)
        client.send(f"{command}\r\n".encode())
        return reply(client)
    finally:
        client.close()


# -- IMAP ---------------------------------------------------------------------------

IMAP_SETUP = {
    imap.IMAPState.NOT_AUTHENTICATED: [],
    imap.IMAPState.AUTHENTICATED: ["s1 LOGIN alice secret"],
    imap.IMAPState.SELECTED: ["s1 LOGIN alice secret", "s2 SELECT INBOX"],
}
NOT_VALID = b"t BAD [CLIENTBUG] Command not valid in this state"


def imap_reply(client: Raw) -> bytes:
    """The tagged line (or a "+") after any untagged ones."""
    while (line := client.line()).startswith(b"* "):
        pass
    return line.rstrip(b"\r\n")


def imap_answer(servers: RunningServers, state: imap.IMAPState, command: str) -> bytes:
    """The server's first answer to ``t COMMAND`` in ``state``: the tagged line or a "+"."""
    return exchange(
        servers.port("imap"), IMAP_SETUP[state], f"t {command}", imap_reply,
        lambda answer: answer.split()[1] == b"OK",
    )


def test_the_imap_server_answers_every_command_of_the_cores_table() -> None:
    assert set(imap_server.COMMANDS) == set(every_verb(imap.VALID_COMMANDS))


@pytest.mark.parametrize("state", list(IMAP_SETUP), ids=lambda state: state.value)
def test_the_imap_server_refuses_what_the_table_leaves_out(
    servers: RunningServers, state: imap.IMAPState
) -> None:
    wrong = []
    for verb in every_verb(imap.VALID_COMMANDS):
        answer = imap_answer(servers, state, verb)
        valid = verb in imap.VALID_COMMANDS[state]
        if valid == (answer == NOT_VALID):
            wrong.append(f"{verb} ({'valid' if valid else 'not valid'}): {answer!r}")
    assert not wrong, "\n".join(wrong)


def test_enable_before_a_mailbox_is_selected_only(servers: RunningServers) -> None:
    """RFC 5161 3.1: ENABLE is valid in the authenticated state only, before SELECT."""
    authenticated = imap_answer(servers, imap.IMAPState.AUTHENTICATED, "ENABLE UTF8=ACCEPT")
    assert authenticated == b"t OK Enabled"
    selected = imap_answer(servers, imap.IMAPState.SELECTED, "ENABLE UTF8=ACCEPT")
    assert selected == NOT_VALID


# -- POP3 ---------------------------------------------------------------------------

POP3_SETUP = {
    pop3.POP3State.AUTHORIZATION: [],
    pop3.POP3State.TRANSACTION: ["USER alice", "PASS secret"],
}
# In the core's table (completion offers it) but not served here: RFC 6856 UTF8.
POP3_NOT_SERVED = frozenset({"UTF8"})


def pop3_answer(servers: RunningServers, state: pop3.POP3State, command: str) -> bytes:
    return exchange(
        servers.port("pop3"), POP3_SETUP[state], command,
        lambda client: client.line().rstrip(b"\r\n"), lambda answer: answer.startswith(b"+OK"),
    )


def test_the_pop3_server_answers_every_command_of_the_cores_table() -> None:
    assert set(pop3_server.COMMANDS) == set(every_verb(pop3.VALID_COMMANDS)) - POP3_NOT_SERVED


@pytest.mark.parametrize("state", list(POP3_SETUP), ids=lambda state: state.value)
def test_the_pop3_server_refuses_what_the_table_leaves_out(
    servers: RunningServers, state: pop3.POP3State
) -> None:
    wrong = []
    for verb in every_verb(pop3.VALID_COMMANDS):
        answer = pop3_answer(servers, state, verb)
        if verb in POP3_NOT_SERVED:
            expected_refusal = f"-ERR Unknown command: {verb}".encode()
        elif verb in pop3.VALID_COMMANDS[state]:
            expected_refusal = None
        else:
            expected_refusal = f"-ERR {verb} is not valid in the {state.name} state".encode()
        if expected_refusal is None:
            ok = b"is not valid in the" not in answer and not answer.startswith(b"-ERR Unknown")
        else:
            ok = answer == expected_refusal
        if not ok:
            wrong.append(f"{verb}: {answer!r}")
    assert not wrong, "\n".join(wrong)


# -- SMTP ---------------------------------------------------------------------------

SMTP_LINES = {
    "EHLO": "EHLO client.example",
    "HELO": "HELO client.example",
    "LHLO": "LHLO client.example",
    "XCLIENT": "XCLIENT ADDR=192.0.2.1",
    "MAIL": "MAIL FROM:<bob@example.org>",
    "RCPT": "RCPT TO:<alice@localhost>",
    "DATA": "DATA",
    "BDAT": "BDAT 0 LAST",
    "RSET": "RSET",
    "NOOP": "NOOP",
    "QUIT": "QUIT",
    "VRFY": "VRFY alice",
    "EXPN": "EXPN staff",
    "HELP": "HELP",
    "ETRN": "ETRN example.org",
    "STARTTLS": "STARTTLS",
    "AUTH": "AUTH PLAIN " + base64.b64encode(b"\0alice\0secret").decode(),
}
SMTP_SETUP = {
    smtp.SMTPState.CONNECTED: [],
    smtp.SMTPState.READY: ["EHLO"],
    smtp.SMTPState.MAIL: ["EHLO", "MAIL"],
    smtp.SMTPState.RCPT: ["EHLO", "MAIL", "RCPT"],
}
# In the core's table but not implemented here (never advertised): ETRN (RFC 1985);
# LHLO, which only an LMTP server answers (RFC 2033 4.1: an SMTP server must not);
# XCLIENT, Postfix's for the proxies it trusts (a client sends it: send --xclient).
SMTP_NOT_SERVED = frozenset({"ETRN", "LHLO", "XCLIENT"})
# Where the SMTP server (personality "mailtalk") and the core's table part ways:
SMTP_DIFFERENCES = {
    # Not implemented: 500, as for any unknown command.
    **{(verb, state): "500" for verb in SMTP_NOT_SERVED for state in SMTP_SETUP},
    # Implemented as a refusal, as most MTAs do (RFC 5321 3.5.2 allows it).
    **{("EXPN", state): "502" for state in SMTP_SETUP},
    # RFC 5321 4.1.4: EHLO or HELO later in the session is a reset, not an error; the
    # table keeps them out of a transaction because they throw it away.
    **{(verb, state): "250" for verb in ("EHLO", "HELO")
       for state in (smtp.SMTPState.MAIL, smtp.SMTPState.RCPT)},
    # STARTTLS is taken whenever TLS is offered, before EHLO and inside a transaction
    # too, as Postfix and Exim take it; RFC 3207 4.2: the session starts over under TLS.
    **{("STARTTLS", state): "220" for state in SMTP_SETUP if state is not smtp.SMTPState.READY},
}
# How the server refuses a command out of sequence (or unknown, or not implemented).
REFUSALS = ("500", "502", "503")


def smtp_reply(client: Raw) -> bytes:
    """The last line of a (multi-line) reply."""
    while (line := client.line())[3:4] == b"-":
        pass
    return line.rstrip(b"\r\n")


def smtp_answer(servers: RunningServers, state: smtp.SMTPState, verb: str) -> bytes:
    setup = [SMTP_LINES[verb] for verb in SMTP_SETUP[state]]
    return exchange(
        servers.port("smtp"), setup, SMTP_LINES[verb], smtp_reply,
        lambda answer: answer.startswith(b"250"),
    )


@pytest.mark.parametrize("state", list(SMTP_SETUP), ids=lambda state: state.value)
def test_the_smtp_server_agrees_with_the_table_but_for_the_listed_differences(
    servers: RunningServers, state: smtp.SMTPState
) -> None:
    wrong = []
    for verb in SMTP_LINES:
        code = smtp_answer(servers, state, verb)[:3].decode()
        expected = SMTP_DIFFERENCES.get((verb, state))
        if expected is not None:
            ok = code == expected
        elif verb in smtp.VALID_COMMANDS[state]:
            ok = code not in REFUSALS
        else:
            ok = code in REFUSALS
        if not ok:
            wrong.append(f"{verb}: {code}")
    assert not wrong, "\n".join(wrong)


def test_every_smtp_verb_of_the_table_is_tried() -> None:
    assert set(SMTP_LINES) == set(every_verb(smtp.VALID_COMMANDS))


def test_the_smtp_server_answers_every_command_of_the_table_it_implements() -> None:
    assert set(smtp_server.COMMANDS) == set(every_verb(smtp.VALID_COMMANDS)) - SMTP_NOT_SERVED
