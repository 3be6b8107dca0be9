"""IMAP CREATE-SPECIAL-USE (RFC 6154 3) with a real client, and Dovecot's answer.

imapclient has no call that sends CREATE's USE parameter (``create_folder`` takes a
name), so the command goes through its imaplib connection (``_imap._simple_command``)
as the library sends any command; what the folder became is then read with
imapclient's own calls: ``find_special_folder(ARCHIVE)`` finds the folder by its
``\\Archive`` attribute (the server's default Archive is deleted first, so no name
heuristic can find it instead), after a RENAME and after the servers restart.

Dovecot 2.3.19 (the real peer here, SPECIAL-USE configured per folder name in its
``mailbox`` blocks) does not offer CREATE-SPECIAL-USE: it answers ``OK`` to CREATE
with a USE parameter, even a use that does not exist, makes the folder and gives it
no attribute. mailtalk serve offers it and refuses what it cannot give (NO [USEATTR]),
as RFC 6154 3 asks of a server that does.

mbsync 1.4 reads no special-use attributes and neomutt is not installed here, so
imapclient is the client that reads them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from imapclient import IMAPClient
from imapclient.imapclient import ARCHIVE

from mailtalk.servers.api import run_servers
from tests.interop.conftest import RealServers

pytestmark = pytest.mark.interop

USER, PASSWORD = "alice", "secret"


def client(host: str, port: int, user: str = USER, password: str = PASSWORD) -> IMAPClient:
    imap = IMAPClient(host, port=port, ssl=False, timeout=10)
    imap.login(user, password)
    return imap


def raw(imap: IMAPClient, verb: str, args: str) -> tuple[str, list[bytes]]:
    """A command as imapclient's imaplib connection sends it; (status, data)."""
    status, data = imap._imap._simple_command(verb, args)
    return status, data


def attributes(imap: IMAPClient, name: str) -> tuple[bytes, ...]:
    [(flags, _, _)] = [f for f in imap.list_folders() if f[2] == name]
    return tuple(flags)


def test_imapclient_creates_an_archive_that_keeps_its_use(tmp_path: Path) -> None:
    with run_servers(tmp_path, smtp=None, imap=0, users=[(USER, PASSWORD)]) as servers:
        imap = client("127.0.0.1", servers.port("imap"))
        try:
            assert b"CREATE-SPECIAL-USE" in imap.capabilities()
            imap.delete_folder("Archive")  # the default one
            assert imap.find_special_folder(ARCHIVE) is None
            status, data = raw(imap, "CREATE", '"Old Mail" (USE (\\Archive))')
            assert status == "OK", data
            assert imap.find_special_folder(ARCHIVE) == "Old Mail"
            imap.rename_folder("Old Mail", "Kept 2024")
            assert imap.find_special_folder(ARCHIVE) == "Kept 2024"
            # a use the server cannot give: NO [USEATTR], and no folder
            status, data = raw(imap, "CREATE", "Everything (USE (\\All))")
            assert status == "NO" and data[0].startswith(b"[USEATTR] "), data
            assert not imap.folder_exists("Everything")
        finally:
            imap.logout()
    with run_servers(tmp_path, smtp=None, imap=0, users=[(USER, PASSWORD)]) as servers:
        imap = client("127.0.0.1", servers.port("imap"))
        try:
            assert imap.find_special_folder(ARCHIVE) == "Kept 2024"
            assert b"\\Archive" in attributes(imap, "Kept 2024")
            assert imap.folder_exists("Archive") is False  # not made again at login
        finally:
            imap.logout()


def test_dovecot_neither_offers_nor_honours_create_special_use(
    real_servers: RealServers,
) -> None:
    name = f"zz-special-{uuid.uuid4().hex[:10]}"
    imap = client(real_servers.host, real_servers.imap, real_servers.user,
                  real_servers.password)  # fmt: skip
    made = []
    try:
        assert b"SPECIAL-USE" in imap.capabilities()
        assert b"CREATE-SPECIAL-USE" not in imap.capabilities()
        for folder, use in ((name, "\\Archive"), (name + "-x", "\\NoSuchUse")):
            status, data = raw(imap, "CREATE", f'"{folder}" (USE ({use}))')
            assert status == "OK", data  # taken, the parameter ignored
            made.append(folder)
            assert attributes(imap, folder) == (b"\\HasNoChildren",)
    finally:
        for folder in made:
            imap.delete_folder(folder)
        imap.logout()
