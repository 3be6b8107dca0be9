"""What pipe mode prints when things go wrong, and in --raw: one line per error, one way
of escaping, and what was sent shown as exactly as what came back."""

from __future__ import annotations

import pytest

from tests.cli.test_pipe import mailtalk
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
