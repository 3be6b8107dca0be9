"""International mailbox names through real IMAP client libraries, against ``mailtalk serve``.

The server now refuses names Dovecot refuses (encoded control characters, lone
surrogates, invalid modified UTF-7, raw 8-bit without UTF8=ACCEPT). These tests
check that what clients send for real names still works: imapclient encodes names
as modified UTF-7 itself; Python's imaplib, after ``ENABLE UTF8=ACCEPT``, sends them
as UTF-8. Both create, list, select, append to, rename, subscribe and delete them,
and a name one client made reads the same through the other.

``mailtalk serve`` runs as a subprocess on a free loopback port; nothing here needs
the real Postfix/Dovecot.
"""

from __future__ import annotations

import imaplib
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

from tests.interop.clients import mailtalk_command, read_line, stop_process

pytestmark = pytest.mark.interop

TIMEOUT = 10
NAMES = ["Entwürfe", "Корзина", "日本語.メール", "Ünïcödé & Co", "Émojis 😀"]
MESSAGE = b"From: bob@example.org\r\nSubject: hello\r\n\r\nHello.\r\n"


@pytest.fixture
def port(tmp_path: Path) -> Iterator[int]:
    process = subprocess.Popen(
        [*mailtalk_command(), "serve", "--root", str(tmp_path / "root"), "--imap", "0",
         "--user", "alice:secret", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield int(json.loads(read_line(process))["listeners"][0]["port"])
    finally:
        stop_process(process)


def test_imapclient_modified_utf7_names(port: int) -> None:
    client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=TIMEOUT)
    try:
        client.login("alice", "secret")
        for name in NAMES:
            client.create_folder(name)
            client.subscribe_folder(name)
        listed = {folder for _, _, folder in client.list_folders()}
        assert set(NAMES) <= listed
        assert "日本語" in listed  # the parent, made with its child
        assert set(NAMES) <= {folder for _, _, folder in client.list_sub_folders()}
        client.append("Entwürfe", MESSAGE)
        assert client.select_folder("Entwürfe")[b"EXISTS"] == 1
        client.unselect_folder()
        client.rename_folder("Entwürfe", "Alte Entwürfe")
        assert client.folder_status("Alte Entwürfe", ["MESSAGES"])[b"MESSAGES"] == 1
        client.delete_folder("Émojis 😀")
        assert "Émojis 😀" not in {folder for _, _, folder in client.list_folders()}
        # A name that only looks international to a careless encoder is refused.
        client.folder_encode = False
        with pytest.raises(IMAPClientError, match=r"CANNOT.*modified UTF-7"):
            client.create_folder("&2D3-")
    finally:
        client.logout()


def test_imaplib_utf8_accept_names(port: int) -> None:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=TIMEOUT)
    try:
        client.login("alice", "secret")
        assert client.enable("UTF8=ACCEPT")[0] == "OK"  # imaplib then sends UTF-8
        for name in NAMES:
            assert client.create(f'"{name}"')[0] == "OK", name
        typ, data = client.list('""', "*")
        assert typ == "OK"
        listed = b"\n".join(line for line in data if isinstance(line, bytes)).decode()
        for name in NAMES:
            assert f'"{name}"' in listed, listed
        typ, data = client.select('"Корзина"')
        assert (typ, data) == ("OK", [b"0"])
        client.close()
        typ, data = client.create('"bad\x1fname"')
        assert typ == "NO" and b"[CANNOT] Control characters" in data[0]
    finally:
        client.logout()
    # Made as UTF-8, read as modified UTF-7 by a client that never enabled it.
    other = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=TIMEOUT)
    try:
        other.login("alice", "secret")
        assert set(NAMES) <= {folder for _, _, folder in other.list_folders()}
    finally:
        other.logout()
