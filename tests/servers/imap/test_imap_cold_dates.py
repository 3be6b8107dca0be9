"""INTERNALDATE on a folder indexed cold, over real sockets: the index reads no file
(the sizes are in the delivered names), so each message's date is its file's mtime,
read when a command first needs it. FETCH, SEARCH by date, SORT by arrival and COPY
must each give the real dates, here set on the files in an order other than the
delivery order, and the ones an APPEND gave."""

from __future__ import annotations

import imaplib
import os
import re
import smtplib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.store import uidlist

# The dates given to the three delivered files: the second is the oldest.
DATES = [datetime(2021, 3, day, 8, 30, tzinfo=UTC) for day in (20, 5, 12)]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, imap=0, users=[("alice", "secret")]) as running:
        yield running


def inbox_folder(servers: RunningServers) -> Path:
    return Path(servers.root) / "mail" / "alice" / "Maildir"


def delivered_cold(servers: RunningServers) -> None:
    """Three messages over SMTP, their files dated DATES, the folder never indexed."""
    with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=10) as smtp:
        for n in range(3):
            smtp.sendmail(
                "bob@example.org",
                ["alice@localhost"],
                f"Subject: message {n}\r\n\r\nbody {n}\r\n".encode(),
            )
    folder = inbox_folder(servers)
    # In delivery order: the server's delivery counter, Q<n> in the unique names.
    names = sorted(
        os.listdir(folder / "new"), key=lambda name: int(name.split("Q")[1].split(".")[0])
    )
    assert len(names) == 3 and all(re.search(r",S=\d+,W=\d+$", name) for name in names)
    for name, when in zip(names, DATES, strict=True):
        os.utime(folder / "new" / name, (when.timestamp(), when.timestamp()))
    assert not (folder / "mailtalk-uidlist").exists()
    uidlist._INDEX_CACHE.clear()


def login(servers: RunningServers) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"), timeout=10)
    client.login("alice", "secret")
    return client


def internaldates(client: imaplib.IMAP4) -> list[datetime]:
    typ, data = client.fetch("1:*", "(INTERNALDATE)")
    assert typ == "OK"
    found = []
    for item in data:
        assert isinstance(item, bytes)
        parsed = imaplib.Internaldate2tuple(item)
        assert parsed is not None, item
        found.append(datetime(*parsed[:6], tzinfo=UTC))
    return found


def test_fetch_search_sort_and_copy_read_the_files_dates(servers: RunningServers) -> None:
    delivered_cold(servers)
    client = login(servers)
    try:
        assert client.select("INBOX")[0] == "OK"
        typ, data = client.fetch("1:*", "(RFC822.SIZE FLAGS)")  # needs no date either
        assert typ == "OK" and len(data) == 3
        # Read once the FETCH is answered: a cold SELECT writes the index after its OK.
        index = (inbox_folder(servers) / "mailtalk-uidlist").read_text()
        assert " T" not in index  # neither SELECT nor that FETCH read a date
        assert internaldates(client) == DATES

        assert client.search(None, "BEFORE", "10-Mar-2021") == ("OK", [b"2"])
        assert client.search(None, "SINCE", "10-Mar-2021") == ("OK", [b"1 3"])
        assert client.search(None, "ON", "12-Mar-2021") == ("OK", [b"3"])
        assert client.sort("(ARRIVAL)", "UTF-8", "ALL") == ("OK", [b"2 3 1"])
        assert client.sort("(REVERSE ARRIVAL)", "UTF-8", "ALL") == ("OK", [b"1 3 2"])
        # The Date: header is missing: SORT DATE falls back on INTERNALDATE (RFC 5256).
        assert client.sort("(DATE)", "UTF-8", "ALL") == ("OK", [b"2 3 1"])

        assert client.create("Kept")[0] == "OK"
        assert client.copy("1:3", "Kept")[0] == "OK"
        assert client.select("Kept")[0] == "OK"
        assert internaldates(client) == DATES
    finally:
        client.logout()


def test_an_appended_date_survives_a_cold_index(servers: RunningServers) -> None:
    client = login(servers)
    try:
        when = datetime(2003, 4, 5, 6, 7, 8, tzinfo=UTC)
        message = b"Subject: archived\r\n\r\nfrom long ago\r\n"
        typ, _ = client.append("INBOX", None, imaplib.Time2Internaldate(when.timestamp()), message)
        assert typ == "OK"
    finally:
        client.logout()
    folder = inbox_folder(servers)
    (name,) = os.listdir(folder / "cur")
    assert re.search(r",S=\d+,W=\d+:2,$", name)  # named with its sizes, as delivered mail
    (folder / "mailtalk-uidlist").unlink()  # indexed again from the files alone
    uidlist._INDEX_CACHE.clear()
    client = login(servers)
    try:
        assert client.select("INBOX")[0] == "OK"
        assert internaldates(client) == [when]
    finally:
        client.logout()
