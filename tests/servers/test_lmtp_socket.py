"""``mailtalk serve --lmtp unix:PATH``: LMTP on a Unix-domain socket, and the success
DSN the LMTP server owes once it advertised DSN.

The socket is made with the mode (and group) asked and nothing wider at any moment,
is refused when another server listens on it or the path is no socket, replaces a
stale one, and is removed when the servers stop (but not a successor's). A session on
it is LMTP as on TCP; the Received header names no address, since there is none.

A recipient whose RCPT said NOTIFY=SUCCESS gets a "delivered" DSN (RFC 3461 6) once
its mailbox has the message, over LMTP as over SMTP; a recipient whose mailbox refused
it (over quota: its own 552) is not reported as delivered.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.app import ConfigError
from tests.servers.test_dsn_report import status_groups

QUOTA = 4096
TIMEOUT = 20.0


def lmtp_servers(
    root: Path, path: Path, **options: object
) -> AbstractContextManager[RunningServers]:
    """LMTP on the socket ``path`` only; alice and bob, a quota."""
    return run_servers(
        root, smtp=None, lmtp=f"unix:{path}", users=[("alice", "a"), ("bob", "b")],
        domains=["example.test"], quota_bytes=QUOTA, **options,
    )  # fmt: skip


def refusal(root: Path, path: Path) -> str:
    """Why the servers would not start with their socket at ``path``."""
    with pytest.raises(ConfigError) as caught, lmtp_servers(root, path):
        pass
    return str(caught.value)


def talk(path: Path, lines: list[bytes], replies: int) -> list[bytes]:
    """Send ``lines`` on the socket after the greeting; the next ``replies`` replies
    (each a list of lines joined), then QUIT."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT)
        sock.connect(str(path))
        reader = sock.makefile("rb")
        answers = [read_reply(reader)]
        sock.sendall(b"".join(lines))
        answers += [read_reply(reader) for _ in range(replies)]
        sock.sendall(b"QUIT\r\n")
        return answers


def read_reply(reader: BinaryIO) -> bytes:
    lines = [reader.readline()]
    while lines[-1][3:4] == b"-":
        lines.append(reader.readline())
    return b"".join(lines)


def fill(servers: RunningServers, user: str) -> None:
    """``user``'s mailbox over the quota already."""
    new = servers.root / "mail" / user / "Maildir" / "new"
    new.mkdir(parents=True, exist_ok=True)
    (new / "1.filler.host").write_bytes(b"Subject: filler\n\n" + b"x" * QUOTA)


def test_socket_mode_and_group_then_removed_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "lmtp"
    # a group other than ours when we may give it (root may give any, a user one of theirs)
    group = 65534 if os.geteuid() == 0 else ([*os.getgroups(), os.getgid()][0])
    with lmtp_servers(tmp_path / "root", path, socket_mode=0o660, socket_group=group) as s:
        made = path.lstat()
        assert stat.S_ISSOCK(made.st_mode)
        assert stat.S_IMODE(made.st_mode) == 0o660 and made.st_gid == group
        assert s.socket_path("lmtp") == path and s.listener("lmtp").url == f"lmtp:unix:{path}"
        # nothing else was left beside it (the private directory it was made in)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["lmtp", "root"]
    assert not path.exists()


def test_default_mode_is_the_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "lmtp"
    old = os.umask(0)  # a permissive umask does not widen it
    try:
        with lmtp_servers(tmp_path / "root", path):
            assert stat.S_IMODE(path.lstat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_a_live_socket_is_refused_a_stale_one_replaced(tmp_path: Path) -> None:
    path = tmp_path / "lmtp"
    with lmtp_servers(tmp_path / "root", path):
        assert refusal(tmp_path / "root2", path).endswith(
            "another server is listening on that socket")
        assert stat.S_ISSOCK(path.lstat().st_mode)  # the first one's, left alone
        [greeting] = talk(path, [], 0)
        assert greeting.startswith(b"220 ") and b" LMTP " in greeting
    # a stale socket: bound, nobody listening (a crashed server's)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()
    with lmtp_servers(tmp_path / "root", path):
        [greeting] = talk(path, [], 0)
        assert b" LMTP " in greeting


def test_a_path_that_is_no_socket_is_refused_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "lmtp"
    path.write_text("mine\n")
    assert "the path exists and is not a socket" in refusal(tmp_path / "root", path)
    assert path.read_text() == "mine\n"
    missing = tmp_path / "missing"
    assert refusal(tmp_path / "root", missing / "lmtp").endswith(
        f"cannot make a socket in {missing}: no such file or directory")
    assert "longer than the 107 bytes" in refusal(tmp_path / "root", tmp_path / ("x" * 120))


def test_a_successors_socket_is_not_removed(tmp_path: Path) -> None:
    """Stopping removes the socket only if it is still ours: another server that took
    the path over (after ours was removed by hand) keeps its socket."""
    path = tmp_path / "lmtp"
    with lmtp_servers(tmp_path / "root", path):
        path.unlink()
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other.bind(str(path))
    try:
        assert stat.S_ISSOCK(path.lstat().st_mode)
    finally:
        other.close()


def test_lmtp_session_on_the_socket_and_its_received_header(tmp_path: Path) -> None:
    path = tmp_path / "lmtp"
    with lmtp_servers(tmp_path / "root", path) as servers:
        replies = talk(path, [
            b"LHLO client.test\r\n", b"MAIL FROM:<bill@isp.test>\r\n",
            b"RCPT TO:<alice@example.test>\r\n", b"DATA\r\n",
            b"Subject: by socket\r\n\r\nhello\r\n.\r\n",
        ], 5)  # fmt: skip
        assert replies[-1].startswith(b"250 2.0.0 <alice@example.test> ")
        [stored] = servers.messages("alice")
    received = stored.split(b"Received: ", 1)[1].split(b";", 1)[0]
    assert received.startswith(b"from client.test\n\tby localhost (mailtalk) with LMTP id ")
    assert b"[" not in received  # no address: a Unix-domain socket has none


def test_success_dsn_for_each_delivered_recipient_only(tmp_path: Path) -> None:
    """alice's mailbox takes the message, bob's is over the quota: carol (the sender, a
    local user) gets one DSN, "delivered", for alice alone, with ENVID and ORCPT."""
    path = tmp_path / "lmtp"
    with lmtp_servers(tmp_path / "root", path) as servers:
        servers.context.users.add("carol", "c")
        fill(servers, "bob")
        replies = talk(path, [
            b"LHLO client.test\r\n",
            b"MAIL FROM:<carol@example.test> ENVID=lmtp+2Dsocket RET=HDRS\r\n",
            b"RCPT TO:<alice@example.test> NOTIFY=SUCCESS ORCPT=rfc822;first+2Balice@x.test\r\n",
            b"RCPT TO:<bob@example.test> NOTIFY=SUCCESS,FAILURE\r\n", b"DATA\r\n",
            b"Subject: dsn by socket\r\n\r\nhello\r\n.\r\n",
        ], 7)  # fmt: skip
        assert replies[-2].startswith(b"250 2.0.0 <alice@example.test> ")
        assert replies[-1].startswith(b"552 5.2.2 <bob@example.test> ")
        report = servers.wait_for_message("carol", subject="Successful Mail Delivery Report")
    message_fields, *recipients = status_groups(report)
    assert message_fields["Original-Envelope-Id"] == "lmtp-socket"
    assert [r["Final-Recipient"] for r in recipients] == ["rfc822; alice@example.test"]
    assert recipients[0]["Action"] == "delivered" and recipients[0]["Status"] == "2.0.0"
    assert recipients[0]["Original-Recipient"].replace(" ", "") == "rfc822;first+alice@x.test"
    assert b"Subject: dsn by socket" in report.get_payload()[-1].as_bytes()  # RET=HDRS


def test_no_dsn_without_notify_success(tmp_path: Path) -> None:
    path = tmp_path / "lmtp"
    with lmtp_servers(tmp_path / "root", path) as servers:
        servers.context.users.add("carol", "c")
        talk(path, [
            b"LHLO client.test\r\n", b"MAIL FROM:<carol@example.test>\r\n",
            b"RCPT TO:<alice@example.test> NOTIFY=FAILURE\r\n", b"DATA\r\n",
            b"Subject: no dsn\r\n\r\nhello\r\n.\r\n",
        ], 5)  # fmt: skip
        assert len(servers.messages("alice")) == 1
        assert servers.messages("carol") == []


def _serve(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "mailtalk", "serve", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def test_serve_command_says_where_and_removes_the_socket_on_sigterm(tmp_path: Path) -> None:
    path = tmp_path / "lmtp"
    process = _serve(["--root", str(tmp_path / "root"), "--smtp", "0", "--lmtp",
                      f"unix:{path}", "--lmtp-socket-mode", "0660"])  # fmt: skip
    assert process.stdout is not None
    timer = threading.Timer(TIMEOUT, process.kill)
    timer.start()
    try:
        described = json.loads(process.stdout.readline())
        [lmtp] = [x for x in described["listeners"] if x["protocol"] == "lmtp"]
        assert lmtp["path"] == str(path) and stat.S_IMODE(path.lstat().st_mode) == 0o660
        second = _serve(["--root", str(tmp_path / "root2"), "--smtp", "0", "--lmtp",
                         f"unix:{path}"])  # fmt: skip
        _, err = second.communicate(timeout=TIMEOUT)
        assert second.returncode == 3
        assert err.decode().splitlines() == [
            f"mailtalk: cannot listen on unix:{path} for lmtp: another server is listening "
            "on that socket"
        ]
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=TIMEOUT)
    finally:
        timer.cancel()
    assert process.returncode == 0 and not path.exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--lmtp", "unix:"], "unix: needs a path"),
        (["--lmtp", "lmtp.sock"], "'lmtp.sock' is neither a port nor unix:PATH"),
        (["--lmtp", "2424", "--lmtp-socket-mode", "0660"],
         "--lmtp-socket-mode needs --lmtp unix:PATH"),
        (["--lmtp-socket-group", "postfix"], "--lmtp-socket-group needs --lmtp unix:PATH"),
        (["--lmtp", "unix:/tmp/x", "--lmtp-socket-mode", "1777"], "only permission bits"),
        (["--lmtp", "unix:/tmp/x", "--lmtp-socket-group", "no-such-group-here"],
         "--lmtp-socket-group no-such-group-here: no such group"),
    ],
)
def test_bad_socket_options_are_one_line_exit_2(tmp_path: Path, args: list[str], says: str
                                                ) -> None:  # fmt: skip
    process = _serve(["--root", str(tmp_path / "root"), *args])
    _, err = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 2, err
    assert says in err.decode() and "Traceback" not in err.decode()
