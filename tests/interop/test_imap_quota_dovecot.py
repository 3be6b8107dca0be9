"""QUOTA (RFC 9208) of ``mailtalk serve --quota`` next to Dovecot's quota plugin.

scripts/real-servers gives the real Dovecot ``mail_plugins quota imap_quota`` with a
``count`` root named ``User quota``: 1 GiB for alice, and a folder
(``$MAILTALK_DOVECOT_OVERQUOTA_FOLDER``) whose rule leaves 64 KiB, less than alice's
Maildir always holds, so that an APPEND there is refused for real. The same raw
commands go to both servers; the answers must have the same shape: the root's name,
``STORAGE used limit`` in KiB, and ``NO [OVERQUOTA]`` for the APPEND.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from tests.interop.conftest import RealServers

pytestmark = pytest.mark.interop

USER, PASSWORD = "alice", "secret"
OUR_QUOTA = 10 * 1024  # bytes: limit 10 (KiB)
DOVECOT_LIMIT_KIB = 1024 * 1024  # quota_rule = *:storage=1G
OVERQUOTA_FOLDER = os.environ.get("MAILTALK_DOVECOT_OVERQUOTA_FOLDER", "OverQuota")


class RawIMAP:
    """One IMAP connection spoken line by line: what each command got back, unparsed."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.stream = self.sock.makefile("rb")
        self.count = 0
        self.stream.readline()  # the greeting

    def command(self, text: str, literal: bytes | None = None) -> list[str]:
        """The untagged lines and the tagged one (its tag replaced by ``TAG``)."""
        self.count += 1
        tag = f"q{self.count}"
        if literal is None:
            self.sock.sendall(f"{tag} {text}\r\n".encode())
        else:
            self.sock.sendall(f"{tag} {text} {{{len(literal)}}}\r\n".encode())
            line = self.stream.readline().decode("utf-8", "replace").rstrip("\r\n")
            if line.startswith(tag + " "):  # refused before the literal (its size)
                return ["TAG " + line[len(tag) + 1 :]]
            assert line.startswith("+"), line
            self.sock.sendall(literal + b"\r\n")
        lines: list[str] = []
        while True:
            line = self.stream.readline().decode("utf-8", "replace").rstrip("\r\n")
            assert line, f"connection closed after {lines}"
            if line.startswith(tag + " "):
                lines.append("TAG " + line[len(tag) + 1 :])
                return lines
            lines.append(line)

    def close(self) -> None:
        try:
            self.command("LOGOUT")
        finally:
            self.sock.close()


def login(port: int) -> RawIMAP:
    imap = RawIMAP(port)
    assert imap.command(f'LOGIN {USER} "{PASSWORD}"')[-1].startswith("TAG OK")
    return imap


QUOTA_LINE = re.compile(r'\* QUOTA "User quota" \(STORAGE (\d+) (\d+)\)')


def quota_root_answer(lines: list[str], mailbox: str) -> tuple[int, int]:
    """Checks the shape Dovecot gives and returns (used, limit) in KiB."""
    assert len(lines) == 3, lines
    assert re.fullmatch(rf'\* QUOTAROOT "?{mailbox}"? "User quota"', lines[0]), lines
    match = QUOTA_LINE.fullmatch(lines[1])
    assert match, lines
    assert lines[2].startswith("TAG OK"), lines
    return int(match[1]), int(match[2])


def maildir_bytes(maildir: Path) -> int:
    return sum(p.stat().st_size for p in maildir.glob("**/*")
               if p.is_file() and p.parent.name in ("cur", "new"))


@pytest.fixture
def ours(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, imap=0, users=[(USER, PASSWORD)], quota_bytes=OUR_QUOTA) as running:
        yield running


def message(size: int) -> bytes:
    head = b"From: bob@example.org\r\nTo: alice@localhost\r\nSubject: fill\r\n\r\n"
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


def test_quota_answers_like_dovecot(real_servers: RealServers, ours: RunningServers) -> None:
    # Dovecot first: the reference.
    dovecot = login(real_servers.imap)
    try:
        caps = dovecot.command("CAPABILITY")[0].split()
        assert "QUOTA" in caps, (
            "Dovecot has no QUOTA: run scripts/real-servers start (its quota plugin)"
        )
        home = Path(os.path.expanduser(f"~{USER}")) / "Maildir"
        before = maildir_bytes(home)
        used, limit = quota_root_answer(dovecot.command("GETQUOTAROOT INBOX"), "INBOX")
        after = maildir_bytes(home)
        assert limit == DOVECOT_LIMIT_KIB  # KiB: 1G
        # Usage in KiB too: Dovecot counts CRLF sizes, a little more than the Maildir's
        # LF files (a count in bytes would be 1024 times more).
        assert before // 1024 <= used <= after * 1.25 / 1024 + 1, (before, used, after)
        assert QUOTA_LINE.fullmatch(dovecot.command('GETQUOTA "User quota"')[0])
        dovecot.command(f"CREATE {OVERQUOTA_FOLDER}")  # NO if it exists: fine
        refused = dovecot.command(f"APPEND {OVERQUOTA_FOLDER}", message(300))
        assert re.fullmatch(r"TAG NO \[OVERQUOTA\] .+", refused[-1]), refused
    finally:
        dovecot.close()

    # mailtalk serve, the same commands.
    port = ours.port("imap")
    imap = login(port)
    try:
        caps = imap.command("CAPABILITY")[0].split()
        assert "QUOTA" in caps
        assert quota_root_answer(imap.command("GETQUOTAROOT INBOX"), "INBOX") == (0, 10)
        assert imap.command("APPEND INBOX", message(6000))[-1].startswith("TAG OK")
        maildir = ours.root / "mail" / USER / "Maildir"
        used, limit = quota_root_answer(imap.command("GETQUOTAROOT INBOX"), "INBOX")
        assert (used, limit) == (maildir_bytes(maildir) // 1024, 10) == (5, 10)
        assert QUOTA_LINE.fullmatch(imap.command('GETQUOTA "User quota"')[0])
        refused = imap.command("APPEND INBOX", message(6000))
        assert re.fullmatch(r"TAG NO \[OVERQUOTA\] .+", refused[-1]), refused
        # Nothing was written for the refused APPEND.
        assert len(list((maildir / "new").iterdir()) + list((maildir / "cur").iterdir())) == 1
    finally:
        imap.close()
