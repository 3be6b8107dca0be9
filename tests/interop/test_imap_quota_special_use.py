"""QUOTA, SPECIAL-USE, LIST-EXTENDED, LIST-STATUS and ESEARCH of ``mailtalk serve``'s
IMAP server, driven by real clients: imapclient (``get_quota_root``,
``find_special_folder``, ``list_folders``, ``list_sub_folders``) and curl (raw LIST
and SEARCH RETURN commands through ``-X``, its output read back).
"""

from __future__ import annotations

import re
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import imapclient
import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from mailtalk.servers.api import RunningServers, run_servers
from tests.interop.clients import require_binary

pytestmark = pytest.mark.interop

USER, PASSWORD = "alice", "secret"
QUOTA = 10 * 1024  # bytes: STORAGE limit 10 (KiB)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, imap=0, users=[(USER, PASSWORD)], quota_bytes=QUOTA) as running:
        yield running


def client(servers: RunningServers) -> IMAPClient:
    imap = IMAPClient("127.0.0.1", port=servers.port("imap"), ssl=False, timeout=10)
    imap.login(USER, PASSWORD)
    return imap


def message(size: int) -> bytes:
    head = b"From: bob@example.org\r\nTo: alice@localhost\r\nSubject: fill\r\n\r\n"
    return head + b"x" * (size - len(head) - 2) + b"\r\n"


def maildir_bytes(servers: RunningServers) -> int:
    maildir = servers.root / "mail" / USER / "Maildir"
    return sum(p.stat().st_size for p in maildir.glob("**/*")
               if p.is_file() and p.parent.name in ("cur", "new"))


def test_quota_with_imapclient(servers: RunningServers) -> None:
    imap = client(servers)
    try:
        caps = imap.capabilities()
        assert b"QUOTA" in caps and b"QUOTA=RES-STORAGE" in caps
        assert b"QUOTASET" not in caps
        roots, quotas = imap.get_quota_root("INBOX")
        assert roots.quota_roots == ["User quota"]
        assert [(q.quota_root, q.resource, q.usage, q.limit) for q in quotas] == [
            ("User quota", "STORAGE", 0, 10)
        ]
        imap.append("INBOX", message(4096))
        imap.append("Archive", message(3072))
        (quota,) = imap.get_quota("INBOX")
        # The usage is what the Maildir holds (stored with LF line ends), in KiB.
        assert (quota.usage, quota.limit) == (maildir_bytes(servers) // 1024, 10) == (6, 10)
        # 4 KiB more would go over 10 KiB: APPEND and COPY refused OVERQUOTA.
        with pytest.raises(IMAPClientError, match=r"OVERQUOTA"):
            imap.append("INBOX", message(4096))
        imap.select_folder("INBOX")
        with pytest.raises(IMAPClientError, match=r"OVERQUOTA"):
            imap.copy([1], "Trash")
        # MOVE does not grow the usage: allowed.
        imap.move([1], "Trash")
        assert imap.get_quota("INBOX")[0].usage == 6
        # The limit is the server's: SETQUOTA is refused NOPERM.
        with pytest.raises(IMAPClientError, match=r"NOPERM"):
            imap.set_quota([imapclient.imapclient.Quota("User quota", "STORAGE", 0, 99)])
    finally:
        imap.logout()


def test_no_quota_not_advertised(tmp_path: Path) -> None:
    with run_servers(tmp_path, imap=0, users=[(USER, PASSWORD)]) as servers:
        imap = client(servers)
        try:
            assert b"QUOTA" not in imap.capabilities()
        finally:
            imap.logout()


def test_special_use_folders_with_imapclient(servers: RunningServers) -> None:
    imap = client(servers)
    try:
        assert b"SPECIAL-USE" in imap.capabilities()
        assert imap.find_special_folder(imapclient.imapclient.SENT) == "Sent"
        assert imap.find_special_folder(imapclient.imapclient.DRAFTS) == "Drafts"
        assert imap.find_special_folder(imapclient.imapclient.TRASH) == "Trash"
        assert imap.find_special_folder(imapclient.imapclient.JUNK) == "Junk"
        assert imap.find_special_folder(imapclient.imapclient.ARCHIVE) == "Archive"
        # Made subscribed, as a client's folder pane wants them.
        subscribed = {name for _, _, name in imap.list_sub_folders()}
        assert {"Sent", "Drafts", "Trash", "Junk", "Archive"} <= subscribed
        # Deleted, a special folder stays deleted at the next login.
        imap.delete_folder("Junk")
    finally:
        imap.logout()
    imap = client(servers)
    try:
        assert imap.find_special_folder(imapclient.imapclient.JUNK) is None
        assert imap.folder_exists("Sent")
    finally:
        imap.logout()


def curl_imap(servers: RunningServers, path: str, command: str) -> str:
    """The untagged responses the server sent curl for ``command``, read from curl's
    trace (its output keeps only those named as the command: no STATUS after LIST)."""
    curl = require_binary("curl")
    result = subprocess.run(
        [curl, "-sS", "-v", "--max-time", "10", "--user", f"{USER}:{PASSWORD}",
         f"imap://127.0.0.1:{servers.port('imap')}/{path}", "-X", command],
        capture_output=True, timeout=20, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    trace = result.stderr.decode().splitlines()
    sent = next(i for i, line in enumerate(trace) if line.startswith("> ") and command in line)
    answer = []
    for line in trace[sent + 1 :]:
        if line.startswith("< * "):
            answer.append(line[2:])
        elif line.startswith("< "):
            break  # the tagged completion
    return "\n".join(answer)


def test_list_extended_and_status_with_curl(servers: RunningServers) -> None:
    with smtplib.SMTP("127.0.0.1", servers.port("smtp")) as smtp:
        smtp.sendmail("bob@example.org", ["alice@localhost"], message(300))
    out = curl_imap(servers, "", 'LIST (SPECIAL-USE) "" "*"')
    assert out.splitlines() == [
        '* LIST (\\HasNoChildren \\Archive) "." "Archive"',
        '* LIST (\\HasNoChildren \\Drafts) "." "Drafts"',
        '* LIST (\\HasNoChildren \\Junk) "." "Junk"',
        '* LIST (\\HasNoChildren \\Sent) "." "Sent"',
        '* LIST (\\HasNoChildren \\Trash) "." "Trash"',
    ]
    command = 'LIST "" ("INBOX" "Sent") RETURN (SUBSCRIBED STATUS (MESSAGES UNSEEN))'
    out = curl_imap(servers, "", command)
    assert out.splitlines() == [
        '* LIST (\\HasNoChildren) "." "INBOX"',
        '* STATUS "INBOX" (MESSAGES 1 UNSEEN 1)',
        '* LIST (\\HasNoChildren \\Subscribed \\Sent) "." "Sent"',
        '* STATUS "Sent" (MESSAGES 0 UNSEEN 0)',
    ]
    out = curl_imap(servers, "", 'LIST (SUBSCRIBED RECURSIVEMATCH) "" "%"')
    assert '* LIST (\\HasNoChildren \\Subscribed \\Trash) "." "Trash"' in out.splitlines()
    assert "INBOX" not in out  # not subscribed


def test_esearch_with_curl(servers: RunningServers) -> None:
    with smtplib.SMTP("127.0.0.1", servers.port("smtp")) as smtp:
        for _ in range(3):
            smtp.sendmail("bob@example.org", ["alice@localhost"], message(300))
    out = curl_imap(servers, "INBOX", "SEARCH RETURN (MIN MAX COUNT ALL) ALL")
    (line,) = out.splitlines()
    assert re.fullmatch(r'\* ESEARCH \(TAG "[^"]+"\) MIN 1 MAX 3 COUNT 3 ALL 1:3', line), out
    out = curl_imap(servers, "INBOX", "UID SEARCH RETURN (COUNT) DELETED")
    assert re.fullmatch(r'\* ESEARCH \(TAG "[^"]+"\) UID COUNT 0', out), out
    out = curl_imap(servers, "INBOX", "SEARCH RETURN () 2:3")
    assert re.fullmatch(r'\* ESEARCH \(TAG "[^"]+"\) ALL 2:3', out), out
