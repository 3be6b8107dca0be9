"""QRESYNC (RFC 7162 3.2) of ``mailtalk serve`` next to Dovecot's, on the same dialogue.

The same raw commands go to the real Dovecot (a fresh folder of alice's, deleted at
the end) and to ``mailtalk serve``: APPEND three messages, a session that has enabled
QRESYNC sees another session's EXPUNGE as ``VANISHED``, then a new session's SELECT
(QRESYNC (uidvalidity modseq)) and UID FETCH (CHANGEDSINCE modseq VANISHED) name what
went and what changed. The answers are compared after writing UIDs relative to the
folder's first and every MODSEQ as ``M`` (the servers count them differently).
"""

from __future__ import annotations

import contextlib
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from tests.interop.conftest import RealServers
from tests.interop.test_imap_quota_dovecot import PASSWORD, USER, login, message

pytestmark = pytest.mark.interop


@pytest.fixture
def ours(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, imap=0, users=[(USER, PASSWORD)]) as running:
        yield running


def untagged(lines: list[str], prefix: str) -> str:
    [line] = [line for line in lines if line.startswith(prefix)]
    return line


def dialogue(port: int, folder: str) -> list[str]:
    """The normalised answers that matter, in order."""
    answers: list[str] = []
    first = second = third = None
    try:
        first = login(port)
        assert first.command(f"CREATE {folder}")[-1].startswith("TAG OK")
        uids = []
        for n in range(3):
            done = first.command(f"APPEND {folder}", message(200 + n))[-1]
            uids.append(int(re.search(r"APPENDUID \d+ (\d+)", done)[1]))  # type: ignore[index]
        base = uids[0] - 1

        def norm(lines: list[str]) -> list[str]:
            out = []
            for line in lines:
                line = re.sub(r"MODSEQ \(\d+\)", "MODSEQ (M)", line)
                line = re.sub(r"(VANISHED (?:\(EARLIER\) )?)([\d:,]+)", lambda m: m[1] + re.sub(
                    r"\d+", lambda n: f"u{int(n[0]) - base}", m[2]), line)
                line = re.sub(r"UID (\d+)", lambda m: f"UID u{int(m[1]) - base}", line)
                out.append(line)
            return out

        assert first.command("ENABLE QRESYNC")[0] == "* ENABLED QRESYNC"
        selected = first.command(f"SELECT {folder}")
        uidvalidity = int(re.search(r"UIDVALIDITY (\d+)", " ".join(selected))[1])  # type: ignore[index]
        modseq = int(re.search(r"HIGHESTMODSEQ (\d+)", " ".join(selected))[1])  # type: ignore[index]

        second = login(port)
        second.command(f"SELECT {folder}")
        second.command(f"UID STORE {uids[1]} +FLAGS.SILENT (\\Deleted)")
        assert second.command("EXPUNGE")[-1].startswith("TAG OK")
        second.command(f"UID STORE {uids[2]} +FLAGS.SILENT (\\Flagged)")
        # The QRESYNC session hears of the expunge as VANISHED, not EXPUNGE.
        noop = first.command("NOOP")
        assert not any(line.endswith(" EXPUNGE") for line in noop), noop
        answers += [line for line in norm(noop) if "VANISHED" in line]
        # Its own EXPUNGE too.
        first.command(f"UID STORE {uids[0]} +FLAGS.SILENT (\\Deleted)")
        answers += [line for line in norm(first.command("EXPUNGE"))
                    if "VANISHED" in line or line.startswith("TAG")]  # not Dovecot's RECENT

        third = login(port)
        assert third.command("ENABLE QRESYNC")[-1].startswith("TAG OK")
        resync = third.command(f"SELECT {folder} (QRESYNC ({uidvalidity} {modseq}))")
        answers += [line for line in norm(resync) if "VANISHED" in line or "FETCH" in line]
        known = f"{uids[0]}:{uids[2]}"
        answers += norm(third.command(
            f"UID FETCH {known} (FLAGS) (CHANGEDSINCE {modseq} VANISHED)"))
        # Another UIDVALIDITY: nothing but the plain SELECT, after the word that the
        # mailbox selected until now is closed (RFC 7162 3.2.11).
        stale = third.command(f"EXAMINE {folder} (QRESYNC ({uidvalidity + 1} {modseq}))")
        assert not [line for line in stale if "VANISHED" in line or "FETCH" in line], stale
        answers.append(stale[0])
    finally:
        for session in (second, third):
            if session is not None:
                session.close()
        if first is not None:
            first.command("UNSELECT")
            first.command(f"DELETE {folder}")
            first.close()
    return [re.sub(r"^TAG (OK|NO|BAD) .*", r"TAG \1", line) for line in answers]


EXPECTED = [
    "* VANISHED u2",  # another session's EXPUNGE, heard at NOOP
    "* VANISHED u1",  # this session's EXPUNGE
    "TAG OK",
    "* VANISHED (EARLIER) u1:u2",  # SELECT ... (QRESYNC ...)
    "* 1 FETCH (UID u3 FLAGS (\\Flagged) MODSEQ (M))",
    "* VANISHED (EARLIER) u1:u2",  # UID FETCH ... (CHANGEDSINCE ... VANISHED)
    "* 1 FETCH (UID u3 FLAGS (\\Flagged) MODSEQ (M))",
    "TAG OK",
    "* OK [CLOSED] Previous mailbox closed.",
]


def test_qresync_like_dovecot(real_servers: RealServers, ours: RunningServers) -> None:
    folder = f"Qresync{secrets.token_hex(4)}"
    dovecot = dialogue(real_servers.imap, folder)
    assert dovecot == EXPECTED, dovecot
    mailtalk = dialogue(ours.port("imap"), folder)
    assert mailtalk == dovecot


def test_qresync_advertised_and_refused_before_enable(ours: RunningServers) -> None:
    imap = login(ours.port("imap"))
    try:
        assert "QRESYNC" in imap.command("CAPABILITY")[0].split()
        refused = imap.command("SELECT INBOX (QRESYNC (1 1))")
        assert refused[-1].startswith("TAG BAD"), refused
        imap.command("SELECT INBOX")
        refused = imap.command("UID FETCH 1:* (FLAGS) (CHANGEDSINCE 1 VANISHED)")
        assert refused[-1].startswith("TAG BAD"), refused
    finally:
        imap.close()


def test_qresync_with_imapclient(ours: RunningServers) -> None:
    """imapclient has no QRESYNC helpers, but its enable(), fetch(modifiers=...),
    expunge() and noop() carry it: VANISHED comes back parsed, and the (EARLIER) ones
    in imaplib's untagged responses."""
    from imapclient import IMAPClient

    port = ours.port("imap")
    client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10)
    other = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=10)
    try:
        client.login(USER, PASSWORD)
        assert client.enable("QRESYNC") == [b"QRESYNC"]
        for n in range(3):
            client.append("INBOX", message(200 + n))
        highest = client.select_folder("INBOX")[b"HIGHESTMODSEQ"]
        client.add_flags([2], [b"\\Deleted"])
        assert client.expunge()[1] == [(b"VANISHED", 2)]
        client.add_flags([3], [b"\\Flagged"])
        changed = client.fetch([1, 2, 3], ["FLAGS"],
                               modifiers=[f"CHANGEDSINCE {highest}", "VANISHED"])
        assert list(changed) == [3] and b"\\Flagged" in changed[3][b"FLAGS"]
        assert client._imap.untagged_responses["VANISHED"][-1] == b"(EARLIER) 2"
        other.login(USER, PASSWORD)
        other.select_folder("INBOX")
        other.add_flags([1], [b"\\Deleted"])
        other.expunge()
        assert client.noop()[1] == [(b"VANISHED", 1)]
    finally:
        for session in (client, other):
            with contextlib.suppress(Exception):
                session.logout()
