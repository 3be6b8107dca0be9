"""The reference POP3 server on an mbox maildrop (``ROOT/mail/USER/mbox``), as qpopper
serves ``/var/mail/USER``: over real sockets, byte for byte, and what the journal says.

A spool that does not begin with a ``From `` line is refused at PASS in qpopper 4's
words; DELE marks, QUIT rewrites the mbox without the marked messages, a dropped
session deletes nothing; the maildrop lock is the one a Maildir user's session takes.
"""

from __future__ import annotations

import poplib
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers
from mailtalk.servers.journal import Journal
from mailtalk.store.mbox import entry
from tests.servers.journaling import events, wait_event
from tests.servers.test_pop3_server import (  # noqa: F401 - server_errors: autouse
    SIMPLE,
    crlf,
    deliver,
    lock_is_free,
    pop,
    pop3_servers,
    server_errors,
    top_wire,
    wire,
)

FIRST = b"From: Carol <carol@stranger.test>\nSubject: one\n\nFrom the start.\n.a dot\n"
SECOND = b"Subject: two\n\n>From quoted\nbody\n"
THIRD = b"Subject: three\n\n" + b"x" * 100 + b"\n"
FROM_LINES = (b"-ERR [SYS/PERM] Unable to process From lines (envelopes), change "
              b"recognition modes or check for corrupted mail drop.\r\n")


def spool(servers: RunningServers | Path, data: bytes, user: str = "alice") -> Path:
    root = servers if isinstance(servers, Path) else Path(servers.root)
    path = root / "mail" / user / "mbox"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def mbox_of(*messages: bytes) -> bytes:
    return b"".join(entry(m, f"sender{n}@example.org", 1.7e9 + n)
                    for n, m in enumerate(messages))


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[RunningServers]:
    with pop3_servers(tmp_path / "root") as running:
        yield running


def test_an_mbox_is_the_maildrop_instead_of_the_maildir(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)  # in the Maildir: not served while there is an mbox
    spool(servers, mbox_of(FIRST, SECOND))
    sizes = [len(crlf(m)) for m in (FIRST, SECOND)]
    with pop(servers) as client:
        answer = client.login()
        assert answer == f"+OK Logged in: 2 messages ({sum(sizes)} octets)\r\n".encode()
        assert client.cmd("STAT") == f"+OK 2 {sum(sizes)}\r\n".encode()
        status, body = client.multi("LIST")
        assert (status, body) == (b"+OK 2 messages\r\n",
                                  f"1 {sizes[0]}\r\n2 {sizes[1]}\r\n".encode())
        assert client.multi("RETR 1") == (f"+OK {sizes[0]} octets\r\n".encode(), wire(FIRST))
        assert client.multi("RETR 2") == (f"+OK {sizes[1]} octets\r\n".encode(), wire(SECOND))
        assert client.multi("TOP 1 1")[1] == top_wire(FIRST, 1)
        assert client.multi("TOP 2 0")[1] == top_wire(SECOND, 0)
        assert client.cmd("LIST 2") == f"+OK 2 {sizes[1]}\r\n".encode()
        assert client.cmd("RETR 3") == b"-ERR There's no message 3.\r\n"
        assert client.cmd("QUIT") == b"+OK Logging out, 0 messages deleted.\r\n"


def test_the_size_listed_is_the_size_sent(servers: RunningServers) -> None:
    big = b"Subject: big\n\n" + b"".join(b"%06d .line\n" % n for n in range(20000))
    spool(servers, mbox_of(big, b"Subject: no end\n\nlast") + b"From x Tue Dec  2 12:30:00 "
          b"2025\nSubject: crlf\r\n\r\nbody\r\n")
    with pop(servers) as client:
        client.login()
        status, body = client.multi("LIST")
        assert body is not None
        listed = [int(line.split()[1]) for line in body.decode().splitlines()]
        for number, size in enumerate(listed, 1):
            status, sent = client.multi(f"RETR {number}")
            assert sent is not None
            assert status == f"+OK {size} octets\r\n".encode()
            unstuffed = b"".join(line[1:] if line.startswith(b".") else line
                                 for line in sent.splitlines(keepends=True))
            assert len(unstuffed) == size
        assert len(listed) == 3 and listed[0] > 64 * 1024  # streamed in chunks


def test_uidls_are_stable_across_sessions_and_deletions(servers: RunningServers) -> None:
    spool(servers, mbox_of(FIRST, SECOND, THIRD))

    def uidls() -> list[str]:
        with pop(servers) as client:
            client.login()
            _, body = client.multi("UIDL")
            client.cmd("QUIT")
        assert body is not None
        return [line.split()[1] for line in body.decode().splitlines()]

    first = uidls()
    assert len(set(first)) == 3 and first == uidls()
    with pop(servers) as client:
        client.login()
        assert client.cmd("UIDL 2") == f"+OK 2 {first[1]}\r\n".encode()
        client.cmd("DELE 1")
        assert client.cmd("QUIT") == b"+OK Logging out, 1 messages deleted.\r\n"
    assert uidls() == first[1:]


def test_dele_and_quit_rewrite_the_mbox(servers: RunningServers) -> None:
    path = spool(servers, mbox_of(FIRST, SECOND, THIRD))
    with pop(servers) as client:
        client.login()
        assert client.cmd("DELE 2") == b"+OK Marked to be deleted.\r\n"
        assert client.cmd("RETR 2") == b"-ERR Message 2 is deleted.\r\n"
        assert client.cmd("STAT").startswith(b"+OK 2 ")
        assert client.cmd("QUIT") == b"+OK Logging out, 1 messages deleted.\r\n"
    assert path.read_bytes() == mbox_of(FIRST, SECOND, THIRD).replace(
        entry(SECOND, "sender1@example.org", 1.7e9 + 1), b"")
    assert sorted(p.name for p in path.parent.iterdir()) == ["Maildir", "mbox"]
    assert lock_is_free(servers)


def test_a_dropped_session_deletes_nothing(servers: RunningServers) -> None:
    data = mbox_of(FIRST, SECOND)
    path = spool(servers, data)
    with pop(servers) as client:
        client.login()
        client.cmd("DELE 1")
        client.cmd("DELE 2")
    assert lock_is_free(servers)
    assert path.read_bytes() == data
    with pop(servers) as client:
        client.login()
        client.cmd("DELE 1")
        assert client.cmd("RSET") == b"+OK 2 messages\r\n"
        assert client.cmd("QUIT") == b"+OK Logging out, 0 messages deleted.\r\n"
    assert path.read_bytes() == data


def test_mail_appended_during_the_session_waits_and_is_kept(servers: RunningServers) -> None:
    path = spool(servers, mbox_of(FIRST))
    with pop(servers) as client:
        client.login()
        late = entry(SECOND, "late@example.org", 1.8e9)
        with path.open("ab") as appending:
            appending.write(late)
        assert client.cmd("STAT").startswith(b"+OK 1 ")
        client.cmd("DELE 1")
        client.cmd("QUIT")
    assert path.read_bytes() == late


def test_a_second_session_is_in_use(servers: RunningServers) -> None:
    spool(servers, mbox_of(FIRST))
    with pop(servers) as first, pop(servers) as second:
        first.login()
        second.cmd("USER alice")
        assert second.cmd("PASS secret") == (
            b"-ERR [IN-USE] Unable to lock maildrop: lock busy! Is another session active?\r\n")


def test_an_empty_mbox_is_an_empty_maildrop(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    spool(servers, b"")
    with pop(servers) as client:
        assert client.login() == b"+OK Logged in: 0 messages (0 octets)\r\n"
        assert client.multi("LIST") == (b"+OK 0 messages\r\n", b"")


@pytest.mark.parametrize("broken", [
    b"From: Carol <carol@stranger.test>\nSubject: appended raw\n\nhello\n\n",
    b"\n" + mbox_of(FIRST),
    b"From carol@stranger.test\nSubject: no date\n\nhello\n\n",
])
def test_a_spool_without_a_from_line_first_is_refused_at_pass(
    tmp_path: Path, broken: bytes
) -> None:
    journal_path = tmp_path / "journal.jsonl"
    with pop3_servers(tmp_path / "root", journal=Journal(journal_path)) as servers:
        path = spool(servers, broken + mbox_of(SECOND))
        with pop(servers) as client:
            assert client.cmd("USER alice") == b"+OK\r\n"
            assert client.cmd("PASS wrong") == b"-ERR [AUTH] Authentication failed.\r\n"
            client.cmd("USER alice")
            assert client.cmd("PASS secret") == FROM_LINES
            assert client.cmd("STAT") == b"-ERR STAT is not valid in the AUTHORIZATION state\r\n"
            assert lock_is_free(servers)  # the lock went with the refusal
            client.cmd("USER bob")
            assert client.cmd("PASS hunter2").startswith(b"+OK Logged in: 0 messages")
            client.cmd("QUIT")
        auth = wait_event(journal_path, event="auth", user="alice", ok=False, reason="SYS/PERM")
        assert auth["mechanism"] == "USER/PASS"
        [command] = events(journal_path, event="command", verb="PASS", response_code="SYS/PERM")
        assert (command["code"], command["args"]) == ("-ERR", "<redacted>")
        assert command["text"] == FROM_LINES.decode()[len("-ERR [SYS/PERM] "):-2]
        assert path.read_bytes() == broken + mbox_of(SECOND)  # nothing touched
        # Repaired (a From_ line put first), the same spool is served.
        path.write_bytes(b"From carol@stranger.test Tue Dec  2 12:30:00 2025\n" + path.read_bytes()
                         if not broken.startswith(b"\n") else path.read_bytes()[1:])
        with pop(servers) as client:
            assert client.login().startswith(b"+OK Logged in: 2 messages")


def test_quota_counts_the_mbox(tmp_path: Path) -> None:
    with pop3_servers(tmp_path / "root", quota_bytes=100) as servers, pop(servers) as client:
        spool(servers, mbox_of(THIRD, THIRD))
        client.cmd("USER alice")
        assert client.cmd("PASS secret") == (
            b"-ERR [SYS/TEMP] Unable to copy mail spool file, quota exceeded\r\n")


def test_an_mbox_that_is_no_file_leaves_the_maildir_served(servers: RunningServers) -> None:
    path = spool(servers, b"")
    path.unlink()
    path.mkdir()  # not a file: the Maildir is served
    with pop(servers) as client:
        assert client.login().startswith(b"+OK Logged in: 0 messages")
        client.cmd("QUIT")
    path.rmdir()
    path.symlink_to(path.parent / "nowhere")  # a dangling link: no mbox either
    with pop(servers) as client:
        assert client.login().startswith(b"+OK Logged in: 0 messages")


def test_poplib_fetches_and_deletes(servers: RunningServers) -> None:
    path = spool(servers, mbox_of(FIRST, SECOND))
    client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=10)
    client.user("alice")
    client.pass_("secret")
    assert client.stat()[0] == 2
    _, lines, _ = client.retr(1)
    assert b"\n".join(lines) + b"\n" == FIRST
    _, lines, _ = client.retr(2)
    assert b"\n".join(lines) + b"\n" == SECOND
    client.dele(1)
    client.quit()
    assert path.read_bytes() == mbox_of(FIRST, SECOND)[len(mbox_of(FIRST)):]
