"""What pipe mode prints when things go wrong, and in --raw: one line per error, one way
of escaping, and what was sent shown as exactly as what came back."""

from __future__ import annotations

import pytest

from tests.client.scripted import BROKEN_REPLIES, pipe_session, stderr_after_connecting
from tests.peers import (
    IMAP_GREETING,
    POP3_GREETING,
    SMTP_GREETING,
    Close,
    Expect,
)

# --------------------------------------------------------------------------- item 16


@pytest.mark.parametrize(
    ("protocol", "script", "stdin", "message"), BROKEN_REPLIES, ids=["smtp", "pop3", "imap"]
)
def test_a_broken_reply_is_one_line_with_one_escaping_style(
    protocol: str, script: list[object], stdin: bytes, message: str
) -> None:
    result = pipe_session(script, protocol, stdin=stdin)
    assert result.returncode == 5
    assert stderr_after_connecting(result.stderr) == [
        f"mailtalk: the server broke the protocol: {message}"
    ]


def test_a_close_instead_of_a_reply_is_one_line() -> None:
    script = [SMTP_GREETING, Expect(b"NOOP"), Close()]
    result = pipe_session(script, "smtp", stdin=b"NOOP\nQUIT\n")
    assert result.returncode == 5
    assert stderr_after_connecting(result.stderr) == [
        "mailtalk: 127.0.0.1 closed the connection without answering"
    ]


# --------------------------------------------------------------------------- item 11


def test_raw_shows_the_bytes_sent_with_the_tag_and_secrets_redacted() -> None:
    script = [IMAP_GREETING, Expect(b'a001 LOGIN alice "hunter2"'), b"a001 OK\r\n",
              Expect(b"a002 NOOP"), b"a002 OK\r\n", Close()]
    result = pipe_session(script, "imap", "--raw", stdin=b'LOGIN alice "hunter2"\nNOOP\n')
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
    result = pipe_session(script, "pop3", "--raw", "--show-secrets",
                          stdin=b"USER alice\nPASS hunter2\n")
    assert result.returncode == 0, result.stderr
    assert "C: PASS hunter2\\r\\n" in result.out_lines


def test_raw_on_in_the_middle_shows_data_lines_dot_stuffed() -> None:
    script = [SMTP_GREETING, Expect(b"NOOP"), b"250 ok\r\n", Expect(b"MAIL"), b"250 ok\r\n",
              Expect(b"RCPT"), b"250 ok\r\n", Expect(b"DATA"), b"354 go\r\n",
              Expect(b"..dot\t\x01"), Expect(b".\r\n"), b"250 queued\r\n", Close()]
    stdin = (b"NOOP\n:raw on\nMAIL FROM:<a@example.test>\nRCPT TO:<b@example.test>\nDATA\n"
             b".dot\t\x01\n.\n")
    result = pipe_session(script, "smtp", stdin=stdin)
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
