"""What pipe mode prints when things go wrong, and in --raw: one line per error, one way
of escaping, and what was sent shown as exactly as what came back."""

from __future__ import annotations

import pytest

from tests.client.test_pipe import mailtalk
from tests.peers import (
    IMAP_GREETING,
    POP3_GREETING,
    SMTP_GREETING,
    Close,
    Expect,
    Hold,
    ScriptedPeer,
)


def stderr_after_connecting(stderr: str) -> list[str]:
    """Standard error without the "# connected to ..." note that every session starts with."""
    return [line for line in stderr.splitlines() if not line.startswith("# connected to ")]


# --------------------------------------------------------------------------- item 16


@pytest.mark.parametrize(
    ("protocol", "script", "stdin", "message"),
    [
        (
            "smtp",
            [SMTP_GREETING, Expect(b"NOOP"), b"\x00\xff garbage\r\n", Hold()],
            b"NOOP\nQUIT\n",
            'not an SMTP reply line: "\\x00\\xff garbage"',
        ),
        (
            "pop3",
            [POP3_GREETING, Expect(b"NOOP"), b"\x00\xff garbage\r\n", Hold()],
            b"NOOP\nQUIT\n",
            'not a POP3 status line: "\\x00\\xff garbage"',
        ),
        (
            "imap",
            [IMAP_GREETING, Expect(b"a001 NOOP"), b"\x00\xff garbage\r\n", Hold()],
            b"NOOP\nLOGOUT\n",
            'not an IMAP response: "\\x00\\xff garbage"',
        ),
    ],
    ids=["smtp", "pop3", "imap"],
)
def test_a_broken_reply_is_one_line_with_one_escaping_style(
    protocol: str, script: list[object], stdin: bytes, message: str
) -> None:
    with ScriptedPeer(script) as peer:
        result = mailtalk(protocol, f"127.0.0.1:{peer.port}", stdin=stdin)
    assert result.returncode == 5
    assert stderr_after_connecting(result.stderr) == [
        f"mailtalk: the server broke the protocol: {message}"
    ]


def test_a_close_instead_of_a_reply_is_one_line() -> None:
    script = [SMTP_GREETING, Expect(b"NOOP"), Close()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("smtp", f"127.0.0.1:{peer.port}", stdin=b"NOOP\nQUIT\n")
    assert result.returncode == 5
    assert stderr_after_connecting(result.stderr) == [
        "mailtalk: 127.0.0.1 closed the connection without answering"
    ]


# --------------------------------------------------------------------------- item 11


def test_raw_shows_the_bytes_sent_with_the_tag_and_secrets_redacted() -> None:
    script = [IMAP_GREETING, Expect(b'a001 LOGIN alice "hunter2"'), b"a001 OK\r\n",
              Expect(b"a002 NOOP"), b"a002 OK\r\n", Close()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("imap", "--raw", f"127.0.0.1:{peer.port}",
                          stdin=b'LOGIN alice "hunter2"\nNOOP\n')
    assert result.returncode == 0, result.stderr
    assert result.out_lines == [
        "S: * OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted IMAP ready\\r\\n",
        "C: a001 LOGIN alice ***\\r\\n",
        "S: a001 OK\\r\\n",
        "C: a002 NOOP\\r\\n",
        "S: a002 OK\\r\\n",
    ]
    assert "hunter2" not in result.stdout + result.stderr


def test_raw_with_show_secrets_shows_the_password_as_sent() -> None:
    script = [POP3_GREETING, Expect(b"USER alice"), b"+OK\r\n", Expect(b"PASS hunter2"),
              b"+OK\r\n", Close()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("pop3", "--raw", "--show-secrets", f"127.0.0.1:{peer.port}",
                          stdin=b"USER alice\nPASS hunter2\n")
    assert result.returncode == 0, result.stderr
    assert "C: PASS hunter2\\r\\n" in result.out_lines


def test_raw_on_in_the_middle_shows_data_lines_dot_stuffed() -> None:
    script = [SMTP_GREETING, Expect(b"NOOP"), b"250 ok\r\n", Expect(b"MAIL"), b"250 ok\r\n",
              Expect(b"RCPT"), b"250 ok\r\n", Expect(b"DATA"), b"354 go\r\n",
              Expect(b"..dot\t\x01"), Expect(b".\r\n"), b"250 queued\r\n", Close()]
    stdin = (b"NOOP\n:raw on\nMAIL FROM:<a@example.test>\nRCPT TO:<b@example.test>\nDATA\n"
             b".dot\t\x01\n.\n")
    with ScriptedPeer(script) as peer:
        result = mailtalk("smtp", f"127.0.0.1:{peer.port}", stdin=stdin)
    assert result.returncode == 0, result.stderr
    assert result.out_lines[:3] == ["S: 220 peer.test ESMTP scripted", "C: NOOP", "S: 250 ok"]
    assert result.out_lines[3:] == [
        "C: MAIL FROM:<a@example.test>\\r\\n",
        "S: 250 ok\\r\\n",
        "C: RCPT TO:<b@example.test>\\r\\n",
        "S: 250 ok\\r\\n",
        "C: DATA\\r\\n",
        "S: 354 go\\r\\n",
        "C: ..dot\\t\\x01\\r\\n",
        "C: .\\r\\n",
        "S: 250 queued\\r\\n",
    ]
    assert "# raw mode on: the exact bytes sent (C:) and received (S:), escaped" in (
        result.stderr.splitlines()
    )
