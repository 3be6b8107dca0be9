"""The reference servers on a really full disk (and a broken store), over real sockets.

The server root is a small tmpfs (needs root; skipped otherwise, see
``tests/tinyfs.py``), filled with a filler file to the free space a test wants.
What is checked is what a user of a real server expects (Dovecot, Postfix):
a message that does not fit is refused with a temporary error after it was
read whole, the connection stays usable, nothing partial is left behind, and a
user can still log in and delete mail to make room.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from tests.servers.imap.test_imap_server import Raw, raw_login
from tests.servers.test_pop3_server import Pop
from tests.servers.test_smtp_server import Client
from tests.tinyfs import fill, free_bytes, mounted_tmpfs

USERS = [("alice", "secret")]
LINE = b"x" * 76 + b"\r\n"


@pytest.fixture
def tiny(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "tiny", "4m") as mount_point:
        yield mount_point


@pytest.fixture
def servers(tiny: Path) -> Iterator[RunningServers]:
    with run_servers(tiny / "root", smtp=0, pop3=0, imap=0, users=USERS) as running:
        yield running


def body_of(size: int) -> bytes:
    """A message of about ``size`` bytes on the wire, ending in the lone dot."""
    head = b"From: bob@example.org\r\nTo: alice@localhost\r\nSubject: big\r\n\r\n"
    return head + LINE * max(1, (size - len(head)) // len(LINE)) + b".\r\n"


def smtp_send(servers: RunningServers, message: bytes) -> tuple[Client, int, str]:
    """MAIL, RCPT, DATA and ``message``: the open client and the reply after the dot."""
    client = Client(servers.port("smtp"))
    client.ehlo()
    assert client.cmd("MAIL FROM:<bob@example.org>").code == 250
    assert client.cmd("RCPT TO:<alice@localhost>").code == 250
    assert client.cmd("DATA").code == 354
    client.send(message)
    reply = client.reply()
    return client, reply.code, reply.text


def deliver(servers: RunningServers, size: int) -> None:
    client, code, text = smtp_send(servers, body_of(size))
    with client:
        assert code == 250, text
        assert client.cmd("QUIT").code == 221


def leftovers(servers: RunningServers) -> list[str]:
    maildir = servers.maildir("alice")
    return sorted(
        str(path.relative_to(maildir.path))
        for sub in ("tmp", "new")
        if (maildir.path / sub).is_dir()
        for path in (maildir.path / sub).iterdir()
    )


def test_smtp_message_bigger_than_the_free_space_gets_452_after_the_dot(
    tiny: Path, servers: RunningServers, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mailtalk")
    fill(tiny, leave=984 * 1024)
    free_before = free_bytes(tiny)

    # 1.5 MB: far more than the free space and than the 64 KiB write buffer.
    client, code, text = smtp_send(servers, body_of(1_500_000))
    with client:
        assert (code, text) == (452, "4.3.1 Insufficient system storage")
        assert client.cmd("RSET").code == 250
        assert client.cmd("NOOP").code == 250
        assert client.cmd("QUIT").code == 221

    assert leftovers(servers) == []
    assert free_bytes(tiny) == free_before
    warnings = [r.getMessage() for r in caplog.records if r.name == "mailtalk.smtp"
                and r.levelno == logging.WARNING]
    assert any("no space left on device" in w for w in warnings), warnings
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # A message that fits still gets in.
    deliver(servers, 20_000)
    assert len(servers.messages("alice")) == 1


def test_smtp_a_small_message_on_a_full_disk_gets_452(
    tiny: Path, servers: RunningServers, caplog: pytest.LogCaptureFixture
) -> None:
    fill(tiny)
    client, code, text = smtp_send(servers, body_of(5_000))
    with client:
        assert (code, text) == (452, "4.3.1 Insufficient system storage")
        assert client.cmd("QUIT").code == 221
    assert leftovers(servers) == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_smtp_a_store_that_cannot_take_the_message_at_all_is_451(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Not a full disk (no tmpfs needed): alice's tmp/ is a file, so not even the
    # message file can be made. One 451 for DATA, a warning, the session goes on.
    with run_servers(tmp_path, smtp=0, users=USERS) as servers:
        maildir = servers.maildir("alice").path
        maildir.mkdir(parents=True)
        (maildir / "tmp").write_bytes(b"")
        client = Client(servers.port("smtp"))
        with client:
            client.ehlo()
            assert client.cmd("MAIL FROM:<bob@example.org>").code == 250
            assert client.cmd("RCPT TO:<alice@localhost>").code == 250
            reply = client.cmd("DATA")
            assert (reply.code, reply.text) == (451, "4.3.0 Internal error; try again later")
            assert client.cmd("RSET").code == 250
            assert client.cmd("QUIT").code == 221
    assert any("store error" in r.getMessage() for r in caplog.records
               if r.levelno == logging.WARNING)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.parametrize("size", [200_000, 400_000], ids=["in-memory", "streamed"])
def test_imap_append_bigger_than_the_free_space_is_overquota(
    tiny: Path, servers: RunningServers, size: int, caplog: pytest.LogCaptureFixture
) -> None:
    # 400 000 octets are over the 256 KiB above which APPEND streams to disk.
    raw = raw_login(servers.port("imap"))
    raw.send(b"s SELECT INBOX\r\n")  # the index written while there is room
    assert raw.until_tagged(b"s")[-1].startswith(b"s OK")
    # a cold SELECT writes its rebuilt index after its OK: the next answer comes after it
    raw.send(b"w NOOP\r\n")
    assert raw.until_tagged(b"w")[-1].startswith(b"w OK")
    fill(tiny, leave=100 * 1024)
    free_before = free_bytes(tiny)
    try:
        raw.send(f"a APPEND INBOX {{{size}}}\r\n".encode())
        assert raw.line().startswith(b"+ ")
        message = body_of(size + 100)[:size]
        assert len(message) == size
        raw.send(message + b"\r\n")
        tagged = raw.until_tagged(b"a")[-1]
        assert tagged == b"a NO [OVERQUOTA] Not enough disk space\r\n"
        raw.send(b"n NOOP\r\n")
        assert raw.until_tagged(b"n")[-1].startswith(b"n OK")
    finally:
        raw.close()
    assert leftovers(servers) == []
    assert free_bytes(tiny) == free_before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def imap_select(raw: Raw) -> tuple[list[bytes], list[bytes]]:
    """SELECT INBOX: its untagged lines, and the ``* n FETCH (UID u)`` lines of all messages."""
    raw.send(b"s SELECT INBOX\r\n")
    lines = raw.until_tagged(b"s")
    assert lines[-1].startswith(b"s OK [READ-WRITE]"), lines
    raw.send(b"f FETCH 1:* (UID)\r\n")
    fetched = [line for line in raw.until_tagged(b"f") if b" FETCH " in line]
    return lines, fetched


def test_a_full_disk_still_lets_users_log_in_and_delete(
    tiny: Path, servers: RunningServers, caplog: pytest.LogCaptureFixture
) -> None:
    # Mail arrives while there is room; nobody has read it yet (no index written).
    for _ in range(3):
        deliver(servers, 100_000)
    stored = servers.messages("alice")
    fill(tiny)
    assert free_bytes(tiny) == 0

    # IMAP on the full disk: log in, select, delete the first message.
    raw = raw_login(servers.port("imap"))
    try:
        lines, fetched = imap_select(raw)
        assert b"* 3 EXISTS\r\n" in lines
        assert fetched == [b"* 1 FETCH (UID 1)\r\n", b"* 2 FETCH (UID 2)\r\n",
                           b"* 3 FETCH (UID 3)\r\n"]
        validity = next(line for line in lines if b"UIDVALIDITY" in line)
        # A keyword lives only in the index, which has no room: refused, and not shown.
        raw.send(b"k STORE 2 +FLAGS ($Important)\r\n")
        assert raw.until_tagged(b"k") == [b"k NO [OVERQUOTA] Not enough disk space\r\n"]
        raw.send(b"g FETCH 2 FLAGS\r\n")
        assert raw.until_tagged(b"g")[0] == b"* 2 FETCH (FLAGS (\\Recent))\r\n"
        raw.send(b"t STORE 1 +FLAGS.SILENT (\\Deleted)\r\n")
        assert raw.until_tagged(b"t")[-1].startswith(b"t OK")
        raw.send(b"e EXPUNGE\r\n")
        assert raw.until_tagged(b"e") == [b"* 1 EXPUNGE\r\n", b"e OK Expunge completed\r\n"]
        raw.send(b"l LOGOUT\r\n")
        raw.until_tagged(b"l")
    finally:
        raw.close()
    assert free_bytes(tiny) > 60_000

    # A new message (not indexed yet), and the disk is full again.
    deliver(servers, 50_000)
    stored += servers.messages("alice")
    fill(tiny)
    assert free_bytes(tiny) == 0

    # POP3 on the full disk: log in, see the mail, delete the first one.
    with Pop(servers.port("pop3")) as pop:
        pop.send(b"USER alice\r\n")
        assert pop.status().startswith(b"+OK")
        pop.send(b"PASS secret\r\n")
        assert pop.status().startswith(b"+OK"), "POP3 login on a full disk"
        pop.send(b"STAT\r\n")
        assert pop.status().startswith(b"+OK 3 ")
        pop.send(b"DELE 1\r\n")
        assert pop.status().startswith(b"+OK")
        pop.send(b"QUIT\r\n")
        assert pop.status().startswith(b"+OK")
    assert free_bytes(tiny) > 60_000

    # The UIDs given out on the full disk hold: same UIDVALIDITY, the same UIDs.
    raw = raw_login(servers.port("imap"))
    try:
        lines, fetched = imap_select(raw)
        assert validity in lines
        assert fetched == [b"* 1 FETCH (UID 3)\r\n", b"* 2 FETCH (UID 4)\r\n"]
    finally:
        raw.close()

    # Nothing else was lost: the two left are the last two delivered, byte for byte.
    assert leftovers(servers) == []
    left = sorted(path.read_bytes() for path in servers.maildir("alice").cur_messages())
    assert left == sorted(stored[2:])
    # Delivery works again.
    deliver(servers, 20_000)
    assert len(servers.messages("alice")) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
