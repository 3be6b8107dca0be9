"""The LMTP client (RFC 2033) against Dovecot's LMTP (scripts/real-servers adds it on
127.0.0.1:24 and /run/dovecot/lmtp, delivering into alice's Maildir).

What Dovecot did is read from the Maildir: a message delivered by ``send --server
lmtp://...`` is there, with its unique subject. A recipient Dovecot does not know is
refused on its own while alice's copy is delivered, and ``send`` says which one
failed and exits 1.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from tests.interop.conftest import _checked_port, _unavailable
from tests.interop.test_pipe_real import run_pipe
from tests.interop.test_send_stop_points_real import POSTFIX_MAILDIR

pytestmark = pytest.mark.interop

HOST = os.environ.get("MAILTALK_REAL_HOST", "127.0.0.1")
DOMAIN = os.environ.get("MAILTALK_REAL_DOMAIN", "mailtalk.test")
LMTP_PORT = int(os.environ.get("MAILTALK_DOVECOT_LMTP_PORT", "24"))
LMTP_SOCKET = Path(os.environ.get("MAILTALK_DOVECOT_LMTP_SOCKET", "/run/dovecot/lmtp"))


def delivered(subject: str) -> list[Path]:
    """alice's messages (new or seen) with this subject."""
    found = []
    for folder in ("new", "cur"):
        for path in (POSTFIX_MAILDIR / folder).glob("*"):
            if f"Subject: {subject}".encode() in path.read_bytes():
                found.append(path)
    return found


def lmtp_url() -> str:
    _checked_port("dovecot", "lmtp", HOST, LMTP_PORT)
    return f"lmtp://{HOST}:{LMTP_PORT}"


def test_send_by_lmtp_delivers_into_the_maildir(tmp_path: Path) -> None:
    subject = f"lmtp-{uuid.uuid4().hex}"
    result = run_pipe(
        ["send", "--from", "bill@example.org", "--to", f"alice@{DOMAIN}",
         "--server", lmtp_url(), "--subject", subject],
        [], tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "C: LHLO " in result.stdout and "EHLO" not in result.stdout
    assert f"# LMTP: that reply is for <alice@{DOMAIN}>" in result.stdout
    assert len(delivered(subject)) == 1


def test_send_by_lmtp_socket_refuses_one_recipient_and_delivers_the_other(
    tmp_path: Path,
) -> None:
    if not LMTP_SOCKET.is_socket():
        _unavailable(f"no Dovecot LMTP socket at {LMTP_SOCKET}")
    subject = f"lmtp-{uuid.uuid4().hex}"
    stranger = f"no-such-user-{uuid.uuid4().hex[:8]}@{DOMAIN}"
    result = run_pipe(
        ["send", "--from", "bill@example.org", "--to", f"alice@{DOMAIN}", "--to", stranger,
         "--server", f"lmtp:unix:{LMTP_SOCKET}", "--subject", subject],
        [], tmp_path,
    )  # fmt: skip
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "S: 550 5.1.1" in out and stranger in out  # Dovecot: the user does not exist
    assert f"mailtalk: {stranger}: not delivered (LMTP): 550 5.1.1" in result.stderr
    assert f"alice@{DOMAIN}" not in result.stderr
    assert len(delivered(subject)) == 1  # alice got hers all the same


def test_pipe_mode_shows_a_reply_per_recipient_after_the_dot(tmp_path: Path) -> None:
    subject = f"lmtp-{uuid.uuid4().hex}"
    result = run_pipe(
        ["connect", lmtp_url()],
        [
            "LHLO pipe.test",
            "MAIL FROM:<bill@example.org>",
            f"RCPT TO:<alice@{DOMAIN}>",
            f"RCPT TO:<Alice@{DOMAIN}>",
            "DATA",
            f"Subject: {subject}",
            "",
            "two copies, two replies",
            ".",
            "QUIT",
        ],
        tmp_path,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    saved = [line for line in out.splitlines() if line.startswith("S: 250 2.0.0 <")]
    assert len(saved) == 2, out  # one reply per accepted recipient, in RCPT's order
    assert saved[0].startswith(f"S: 250 2.0.0 <alice@{DOMAIN}>")
    assert saved[1].startswith(f"S: 250 2.0.0 <Alice@{DOMAIN}>")
    # QUIT went after both replies: its 221 is the last thing the server said
    assert out.rstrip().splitlines()[-1].startswith("S: 221")
    assert len(delivered(subject)) >= 1
