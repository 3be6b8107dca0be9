"""SORT and THREAD (RFC 5256) beside the real Dovecot, and CONDSTORE (RFC 7162) with imapclient.

The same messages are APPENDed (with the same INTERNALDATE) to a fresh folder on
the real Dovecot (``real_servers``; the folder is deleted afterwards) and on
mailtalk's server, the same SORT and THREAD commands go to both, and Dovecot's
answer is the reference: mailtalk's must be the same, number for number. The
messages exercise what RFC 5256 leaves to the details: base subjects (``Re:``,
``Fwd:``, ``[list]`` blobs, ``(fwd)``, ``[fwd: ...]``), missing and unparsable
dates, time zones, addresses with and without display names, References against
In-Reply-To, a missing parent, duplicate Message-IDs and threads joined by subject.

imapclient (a Python IMAP library) then uses SORT, THREAD and CONDSTORE as its
users do: ``sort``, ``thread``, ``folder_status`` with HIGHESTMODSEQ, ``fetch`` with
``CHANGEDSINCE``, against mailtalk's server.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import imapclient
import pytest

from mailtalk.servers.api import RunningServers, run_servers
from tests.interop.conftest import RealServers
from tests.interop.test_imap_binary_charset import Session, status

pytestmark = pytest.mark.interop

TIMEOUT = 10.0


def _message(subject: str, sender: str, date: str | None, message_id: str | None = None,
             *, to: str = "alice@example.test", cc: str | None = None,
             references: str | None = None, in_reply_to: str | None = None,
             body: str = "text") -> bytes:
    lines = [f"From: {sender}", f"To: {to}", f"Subject: {subject}"]
    if cc is not None:
        lines.append(f"Cc: {cc}")
    if date is not None:
        lines.append(f"Date: {date}")
    if message_id is not None:
        lines.append(f"Message-ID: {message_id}")
    if references is not None:
        lines.append(f"References: {references}")
    if in_reply_to is not None:
        lines.append(f"In-Reply-To: {in_reply_to}")
    return ("\r\n".join(lines) + "\r\n\r\n" + body + "\r\n").encode()


# (message, INTERNALDATE): arrival order differs from the sent dates on purpose.
MESSAGES = [
    (_message("Meeting tomorrow", "Carol <carol@example.org>",
              "Mon, 1 Jan 2024 10:00:00 +0000", "<a@x>", cc="zed@example.org"),
     "05-Jan-2024 10:00:00 +0000"),
    (_message("Re: Meeting tomorrow", "bob@example.org", "Mon, 1 Jan 2024 12:00:00 +0100",
              "<b@x>", references="<a@x>", body="a longer body than most"),
     "02-Jan-2024 10:00:00 +0000"),
    (_message("RE: [team] Re: meeting TOMORROW (fwd)", "\"Amy\" <amy@example.org>",
              "Mon, 1 Jan 2024 13:00:00 +0000", "<c@x>", references="<a@x> <b@x>",
              to="Zoe <zoe@example.test>"),
     "03-Jan-2024 10:00:00 +0000"),
    (_message("[fwd: Lunch]", "dave@example.org", "Tue, 2 Jan 2024 09:00:00 -0500", "<d@x>",
              cc="Al <al@example.org>"),
     "01-Jan-2024 10:00:00 +0000"),
    (_message("Lunch", "eve@example.org", "not a date", "<e@x>"),
     "04-Jan-2024 10:00:00 +0000"),
    (_message("Fwd: Lunch", "Bob <bob@example.org>", None, "<f@x>", in_reply_to="<e@x>"),
     "06-Jan-2024 10:00:00 +0000"),
    (_message("[PATCH] fix it", "carol@example.org", "Wed, 3 Jan 2024 08:00:00 +0000", "<g@x>",
              references="<missing@x>"),
     "07-Jan-2024 10:00:00 +0000"),
    (_message("Re: [PATCH] fix it", "amy@example.org", "Wed, 3 Jan 2024 09:00:00 +0000",
              "<h@x>", references="<missing@x>", body="short"),
     "08-Jan-2024 10:00:00 +0000"),
    (_message("duplicate id", "zed@example.org", "Thu, 4 Jan 2024 08:00:00 +0000", "<a@x>"),
     "09-Jan-2024 10:00:00 +0000"),
    (_message("   ", "nobody@example.org", "Thu, 4 Jan 2024 07:00:00 +0000"),
     "10-Jan-2024 10:00:00 +0000"),
    (_message("Re: Re: orphan reply", "bob@example.org", "Fri, 5 Jan 2024 07:00:00 +0000",
              "<i@x>", in_reply_to="<gone@x>"),
     "11-Jan-2024 10:00:00 +0000"),
    (_message("orphan reply", "carol@example.org", "Fri, 5 Jan 2024 06:00:00 +0000", "<j@x>"),
     "12-Jan-2024 10:00:00 +0000"),
    (_message("Re: orphan reply", "eve@example.org", "Fri, 5 Jan 2024 08:00:00 +0000", "<k@x>",
              references="<j@x>"),
     "13-Jan-2024 10:00:00 +0000"),
    (_message("=?UTF-8?Q?Re:_K=C3=A4se?=", "=?UTF-8?Q?J=C3=B6rg?= <jorg@example.org>",
              "Sat, 6 Jan 2024 08:00:00 +0000", "<l@x>"),
     "14-Jan-2024 10:00:00 +0000"),
    (_message("käse", "ann@example.org", "Sat, 6 Jan 2024 07:00:00 +0000", "<m@x>"),
     "15-Jan-2024 10:00:00 +0000"),
]

COMMANDS = [
    b"SORT (ARRIVAL) UTF-8 ALL",
    b"SORT (DATE) UTF-8 ALL",
    b"SORT (REVERSE DATE) UTF-8 ALL",
    b"SORT (SUBJECT) UTF-8 ALL",
    b"SORT (SUBJECT DATE) US-ASCII ALL",
    b"SORT (REVERSE SUBJECT REVERSE ARRIVAL) UTF-8 ALL",
    b"SORT (FROM) UTF-8 ALL",
    b"SORT (TO DATE) UTF-8 ALL",
    b"SORT (CC) UTF-8 ALL",
    b"SORT (REVERSE CC SIZE) UTF-8 ALL",
    b"SORT (SIZE) UTF-8 ALL",
    b"SORT (REVERSE SIZE) UTF-8 ALL",
    b"SORT (DATE) UTF-8 SUBJECT lunch",
    b"UID SORT (SUBJECT) UTF-8 NOT FROM bob",
    b"SORT (DATE) KOI8-R ALL",
    b"SORT (DATE) ISO-8859-1 SUBJECT \"k\xe4se\"",
    b"SORT (DATE) x-unknown ALL",
    b"SORT (BOGUS) UTF-8 ALL",
    b"THREAD ORDEREDSUBJECT UTF-8 ALL",
    b"THREAD REFERENCES UTF-8 ALL",
    b"UID THREAD REFERENCES UTF-8 ALL",
    b"THREAD REFERENCES US-ASCII SINCE 1-Jan-2024 NOT FROM carol",
    b"THREAD ORDEREDSUBJECT UTF-8 NOT SUBJECT lunch",
]


@contextlib.contextmanager
def fresh_folder(host: str, port: int, user: str, password: str
                 ) -> Iterator[tuple[Session, list[int]]]:
    """A new folder holding MESSAGES, selected; deleted afterwards."""
    session = Session(host, port)
    folder = b"sort-" + secrets.token_hex(4).encode()
    try:
        login = session.command(b"LOGIN %s %s" % (user.encode(), password.encode()))[1]
        assert status(login).startswith("OK"), login
        assert status(session.command(b"CREATE " + folder)[1]) == "OK"
        uids = []
        for data, when in MESSAGES:
            tagged = session.command(b'APPEND %s () "%s"' % (folder, when.encode()), data)[1]
            match = re.search(rb"APPENDUID \d+ (\d+)", tagged)
            assert match, tagged
            uids.append(int(match.group(1)))
        assert status(session.command(b"SELECT " + folder)[1]).startswith("OK")
        yield session, uids
    finally:
        with contextlib.suppress(OSError, AssertionError, ConnectionError):
            session.command(b"UNSELECT")
            session.command(b"DELETE " + folder)
        session.close()


def answers(session: Session, uids: list[int]) -> list[tuple[str, str]]:
    """Each command's status and its SORT/THREAD data, UIDs as message positions."""
    position = {uid: index for index, uid in enumerate(uids, 1)}
    got = []
    for command in COMMANDS:
        untagged, tagged = session.command(command)
        data = b"".join(line for line, _ in untagged
                        if line.startswith((b"* SORT", b"* THREAD"))).decode().strip()
        if command.startswith(b"UID "):
            data = re.sub(r"\d+", lambda m: f"u{position[int(m.group(0))]}", data)
        got.append((status(tagged), data))
    return got


@pytest.fixture
def ours(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, smtp=None, imap=0, users=[("alice", "secret")]) as servers:
        yield servers


def test_sort_and_thread_answer_as_dovecot_does(
    real_servers: RealServers, ours: RunningServers
) -> None:
    results = []
    for host, port, user, password in (
        (real_servers.host, real_servers.imap, real_servers.user, real_servers.password),
        (ours.host, ours.port("imap"), "alice", "secret"),
    ):
        with fresh_folder(host, port, user, password) as (session, uids):
            capabilities = session.command(b"CAPABILITY")[0][0][0]
            for capability in (b" SORT", b" THREAD=ORDEREDSUBJECT", b" THREAD=REFERENCES"):
                assert capability in capabilities, (host, capability)
            results.append(answers(session, uids))
    dovecot, mailtalk = results
    for command, theirs, mine in zip(COMMANDS, dovecot, mailtalk, strict=True):
        assert mine == theirs, (command, theirs, mine)
    # The comparison is not of empty answers.
    assert dict(zip(COMMANDS, mailtalk, strict=True))[b"THREAD REFERENCES UTF-8 ALL"][1].count(
        "(") > 8


# -- imapclient ------------------------------------------------------------------------


def test_imapclient_sort_thread_and_condstore(ours: RunningServers) -> None:
    client = imapclient.IMAPClient(ours.host, port=ours.port("imap"), ssl=False, timeout=TIMEOUT)
    try:
        client.login("alice", "secret")
        assert client.has_capability("CONDSTORE") and client.has_capability("SORT")
        assert client.has_capability("THREAD=REFERENCES")
        for data, _ in MESSAGES[:3]:
            client.append("INBOX", data)
        before = client.folder_status("INBOX", ["HIGHESTMODSEQ", "MESSAGES"])
        assert before[b"MESSAGES"] == 3
        client.select_folder("INBOX")
        uids = client.search(["ALL"])
        assert client.sort(["REVERSE", "DATE"]) == list(reversed(uids))
        assert client.sort("ARRIVAL", ["FROM", "bob"]) == [uids[1]]
        assert client.thread("REFERENCES") == ((uids[0], uids[1], uids[2]),)
        assert client.thread("ORDEREDSUBJECT") == ((uids[0], (uids[1],), (uids[2],)),)

        # A flag change gets a MODSEQ above the folder's old HIGHESTMODSEQ, and is
        # then the only change CHANGEDSINCE that value.
        highest = before[b"HIGHESTMODSEQ"]
        client.add_flags([uids[1]], [b"\\Flagged"])
        changed = client.fetch(uids, ["FLAGS"], modifiers=[f"CHANGEDSINCE {highest}"])
        assert list(changed) == [uids[1]]
        assert changed[uids[1]][b"MODSEQ"][0] > highest
        assert b"\\Flagged" in changed[uids[1]][b"FLAGS"]
        after = client.folder_status("INBOX", ["HIGHESTMODSEQ"])[b"HIGHESTMODSEQ"]
        assert after == changed[uids[1]][b"MODSEQ"][0]
        everything = client.fetch(uids, ["MODSEQ"])
        assert sorted(everything) == uids
        assert all(item[b"MODSEQ"][0] <= after for item in everything.values())
    finally:
        with contextlib.suppress(Exception):
            client.logout()
