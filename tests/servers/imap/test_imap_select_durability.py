"""A cold SELECT answers before its rebuilt index is written: kill -9 right after the OK.

``mailtalk serve`` runs as a subprocess on a never-indexed Maildir; the client reads
SELECT's tagged OK and the server is stopped (SIGSTOP, to see whether the index was
written yet) and killed (SIGKILL) at once, then started again and asked the same
folder. Whatever the moment, RFC 9051 2.3.1.1 must hold for what the client was told:
under the same UIDVALIDITY the same UIDNEXT and each UID the same message (sizes are
unique here, so RFC822.SIZE says which); else the UIDVALIDITY is a new one (larger:
they only grow). The rounds must include one where the write was lost, or the test
would prove nothing about answering first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

MESSAGES = 5000
ROUNDS = 5

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="SIGSTOP/SIGKILL on Linux")


def delivered(maildir: Path) -> list[int]:
    """MESSAGES messages named as Dovecot and mailtalk deliver them (,S=/,W=), the first
    hundred still in new/; returns their RFC822.SIZEs in delivery order (all different)."""
    for subdir in ("tmp", "new", "cur"):
        (maildir / subdir).mkdir(parents=True, exist_ok=True)
    sizes = []
    for number in range(MESSAGES):
        content = b"Subject: m%d\n\n%s\n" % (number, b"x" * number)
        rfc822_size = len(content) + content.count(b"\n")
        base = (f"{1_700_000_000 + number}.M{number % 1_000_000}P7Q{number}.host"
                f",S={len(content)},W={rfc822_size}")
        name = base if number < 100 else base + ":2,S"
        (maildir / ("new" if number < 100 else "cur") / name).write_bytes(content)
        sizes.append(rfc822_size)
    return sizes


class Served:
    def __init__(self, root: Path) -> None:
        command = [sys.executable, "-m", "mailtalk", "serve", "--root", str(root),
                   "--imap", "0", "--user", "alice:secret", "--json"]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
        assert self.process.stdout is not None
        self.port = json.loads(self.process.stdout.readline())["listeners"][0]["port"]

    def select(self) -> tuple[socket.socket, bytes]:
        """A logged-in connection and SELECT INBOX's answer, up to its tagged OK."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
        sock.sendall(b"a1 LOGIN alice secret\r\na2 SELECT INBOX\r\n")
        answer = b""
        while not re.search(rb"^a2 (OK|NO|BAD)[^\n]*\n", answer, re.M):
            data = sock.recv(65536)
            assert data, answer
            answer += data
        assert re.search(rb"^a2 OK", answer, re.M), answer
        return sock, answer

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)


def told(answer: bytes) -> tuple[int, int, int]:
    """(UIDVALIDITY, UIDNEXT, EXISTS) of a SELECT answer."""
    found = [re.search(pattern, answer) for pattern in
             (rb"\[UIDVALIDITY (\d+)\]", rb"\[UIDNEXT (\d+)\]", rb"\* (\d+) EXISTS")]
    assert all(found), answer
    return tuple(int(match[1]) for match in found if match)  # type: ignore[return-value]


def uid_sizes(sock: socket.socket) -> dict[int, int]:
    sock.sendall(b"a3 UID FETCH 1:* (RFC822.SIZE)\r\n")
    answer = b""
    while not re.search(rb"^a3 OK[^\n]*\n", answer, re.M):
        data = sock.recv(1 << 20)
        assert data, answer[-300:]
        answer += data
    found = {}
    for line in answer.split(b"\r\n"):
        uid, size = re.search(rb"UID (\d+)", line), re.search(rb"RFC822\.SIZE (\d+)", line)
        if uid and size:
            found[int(uid[1])] = int(size[1])
    return found


def test_kill_9_after_a_cold_selects_ok_keeps_uids_or_changes_uidvalidity(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    maildir = root / "mail" / "alice" / "Maildir"
    sizes = delivered(maildir)
    expected = dict(enumerate(sizes, start=1))  # a rebuild numbers in delivery order
    lost = kept = 0
    for _ in range(ROUNDS):
        for leftover in ("mailtalk-uidlist", "mailtalk-uidlist.tmp"):
            (maildir / leftover).unlink(missing_ok=True)  # never indexed: cold again
        server = Served(root)
        try:
            sock, answer = server.select()
            os.kill(server.process.pid, signal.SIGSTOP)  # as close to the OK as we can
            written = (maildir / "mailtalk-uidlist").exists()
            os.kill(server.process.pid, signal.SIGKILL)
            sock.close()
        finally:
            server.stop()
        uidvalidity, uidnext, exists = told(answer)
        assert (uidnext, exists) == (MESSAGES + 1, MESSAGES)

        server = Served(root)
        try:
            sock, answer = server.select()
            again = told(answer)
            got = uid_sizes(sock)
            sock.close()
        finally:
            server.stop()
        if written:
            kept += 1
            assert again == (uidvalidity, uidnext, exists)
        else:
            lost += 1
            assert again[0] > uidvalidity, (again, uidvalidity)  # a new UIDVALIDITY
        # Either way the UIDs given are delivery order's, no UID a different message.
        assert got == expected
        assert not list((maildir / "new").iterdir())  # the first session took them
    shutil.rmtree(root)
    print(f"{lost} of {ROUNDS} rounds lost the index write, {kept} had it")
    assert lost, "the kill never came before the index was written: nothing was tested"
