"""The expunges a folder remembers for QRESYNC (mailtalk.store.vanished): which UIDs
went after a MODSEQ, bounded to the last MAX_REMEMBERED, and the full answer below."""

from __future__ import annotations

import pytest

from mailtalk.store import UserMailboxes
from mailtalk.store import vanished as vanished_module
from mailtalk.store.vanished import VANISHED_NAME, read_log
from tests.store.mailboxes import deliver


def flag_deleted_and_expunge(alice: UserMailboxes, uids: list[int]) -> None:
    inbox = alice.open("INBOX")
    inbox.set_flags(uids, {"\\Deleted"}, "add")
    assert inbox.expunge(uids) == uids


def test_expunges_after_a_modseq_are_named(alice: UserMailboxes) -> None:
    for _ in range(5):
        deliver(alice)
    inbox = alice.open("INBOX")
    before = inbox.highestmodseq
    assert inbox.vanished_since(before) == []
    flag_deleted_and_expunge(alice, [2, 4])
    middle = alice.open("INBOX").highestmodseq
    inbox.message(5).path.unlink()  # deleted outside the store: an expunge too
    inbox.refresh()
    assert inbox.vanished_since(before) == [2, 4, 5]
    assert inbox.vanished_since(middle) == [5]
    assert inbox.vanished_since(inbox.highestmodseq) == []
    # Kept across a restart, in the folder: a header and one line per expunge.
    lines = (alice.path / VANISHED_NAME).read_text().splitlines()
    assert lines[0].startswith(f"V{inbox.uidvalidity} F")
    assert [line.split()[1] for line in lines[1:]] == ["2", "4", "5"]


def test_an_older_modseq_than_remembered_gets_every_missing_uid(
    alice: UserMailboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(vanished_module, "MAX_REMEMBERED", 2)
    for _ in range(6):
        deliver(alice)
    inbox = alice.open("INBOX")
    start = inbox.highestmodseq
    for uid in (1, 2, 3):  # one expunge each: 1 is then forgotten
        flag_deleted_and_expunge(alice, [uid])
    inbox.refresh()
    log = read_log(alice.path, inbox.uidvalidity)
    assert log is not None and len(log.entries) == 2 and log.floor > start
    # Asked from before the floor: every UID below UIDNEXT that is gone.
    assert inbox.vanished_since(start) == [1, 2, 3]
    # From the floor on, only what the log says.
    assert inbox.vanished_since(log.floor) == [2, 3]


def test_a_folder_without_a_log_answers_every_missing_uid(alice: UserMailboxes) -> None:
    for _ in range(3):
        deliver(alice)
    flag_deleted_and_expunge(alice, [2])
    (alice.path / VANISHED_NAME).unlink()  # lost (or written before QRESYNC)
    inbox = alice.open("INBOX")
    assert inbox.vanished_since(inbox.highestmodseq) == [2]  # a superset: allowed


def test_a_log_of_another_uidvalidity_is_not_used(alice: UserMailboxes) -> None:
    for _ in range(3):
        deliver(alice)
    flag_deleted_and_expunge(alice, [1])
    inbox = alice.open("INBOX")
    assert read_log(alice.path, inbox.uidvalidity) is not None
    assert read_log(alice.path, inbox.uidvalidity + 1) is None
