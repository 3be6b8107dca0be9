"""The mailbox layer's short-cuts: they must never hide a change.

refresh() returns at once when the folder's stamps say nothing changed, message
views are reused between refreshes, and IMAP reads header blocks through a bounded
cache (tests/servers/imap/test_imap_perf.py); parsed indexes are cached by their
text (test_index.py). Each test here makes a change the short-cut could miss and
checks it is seen.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mailtalk.store import UserMailboxes
from mailtalk.store import mailbox as mailbox_module
from mailtalk.store.index import INDEX_NAME
from mailtalk.store.mailbox import Mailbox
from tests.store.mailboxes import MESSAGE, deliver


def age_folder(folder: Path, seconds: float = 10.0) -> tuple[int, int]:
    """Put the stamps of new/, cur/ and the index ``seconds`` in the past; returns the time."""
    when = time.time() - seconds
    for path in (folder / "new", folder / "cur", folder / INDEX_NAME):
        os.utime(path, (when, when))
    return int(when), int((when - int(when)) * 1e9)


def short_cut_session(mailboxes: UserMailboxes, folder: str = "INBOX") -> Mailbox:
    """A session on ``folder`` whose refreshes are short cuts now: its token is trusted."""
    box = mailboxes.open(folder)
    age_folder(mailboxes.folder_path(folder))
    box.refresh()
    assert not box.refresh()
    return box


def count_full_refreshes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    original = Mailbox._locked

    def counting(self: Mailbox, missing: str):  # type: ignore[no-untyped-def]
        calls.append(1)
        return original(self, missing)  # type: ignore[arg-type]

    monkeypatch.setattr(Mailbox, "_locked", counting)
    return calls


def test_refresh_of_an_unchanged_old_folder_is_a_short_cut(
    alice: UserMailboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    deliver(alice)
    box = alice.open("INBOX")
    age_folder(alice.path)
    box.refresh()  # the stamps changed (aged): a full refresh, and a trusted token
    calls = count_full_refreshes(monkeypatch)
    assert not box.refresh()
    assert not box.refresh()
    assert calls == []
    assert len(box) == 1


def test_a_delivery_after_a_trusted_token_is_seen(alice: UserMailboxes) -> None:
    deliver(alice)
    box = short_cut_session(alice)
    deliver(alice)
    changes = box.refresh()
    assert len(changes.new_uids) == 1 and len(box) == 2


def test_a_delivery_in_the_same_second_is_seen(alice: UserMailboxes) -> None:
    deliver(alice)
    box = alice.open("INBOX")
    box.refresh()
    deliver(alice)
    assert len(box.refresh().new_uids) == 1


def test_a_change_that_leaves_the_stamps_equal_is_seen_within_the_slack(
    alice: UserMailboxes,
) -> None:
    """A filesystem with coarse timestamps: the change lands in the token's tick."""
    deliver(alice)
    box = alice.open("INBOX")
    box.refresh()
    stamps = {sub: os.stat(alice.path / sub).st_mtime_ns for sub in ("new", "cur")}
    deliver(alice)
    for sub, mtime in stamps.items():
        os.utime(alice.path / sub, ns=(mtime, mtime))
    assert len(box.refresh().new_uids) == 1


def test_flag_change_by_another_session_after_a_short_cut(alice: UserMailboxes) -> None:
    deliver(alice)
    box = short_cut_session(alice)
    other = alice.open("INBOX")
    uid = other.messages()[0].uid
    other.set_flags([uid], ["\\Flagged"], "add")
    changes = box.refresh()
    assert changes.flag_changed_uids == (uid,)
    assert "\\Flagged" in box.message(uid).flags
    assert box.read_message(uid) == MESSAGE


def test_expunge_by_another_session_after_a_short_cut(alice: UserMailboxes) -> None:
    deliver(alice)
    deliver(alice)
    box = short_cut_session(alice)
    other = alice.open("INBOX")
    uid = other.messages()[0].uid
    other.set_flags([uid], ["\\Deleted"], "add")
    other.expunge()
    assert box.refresh().expunged_uids == (uid,)


def test_a_deleted_folder_is_noticed_after_a_short_cut(alice: UserMailboxes) -> None:
    alice.create("Old")
    box = short_cut_session(alice, "Old")
    alice.delete("Old")
    with pytest.raises(mailbox_module.MailboxError):
        box.refresh()


def test_views_number_flags_alike_and_stay_as_they_were(alice: UserMailboxes) -> None:
    """A refresh numbers the flag sets as the view before it did (what tells it, array
    against array, which messages' flags changed); a list taken before a change keeps
    showing what it showed."""
    deliver(alice)
    deliver(alice)
    box = alice.open("INBOX")
    before = box.messages()
    other = alice.open("INBOX")
    other.set_flags([before[0].uid], ["\\Seen"], "add")
    changes = box.refresh()
    assert changes.flag_changed_uids == (before[0].uid,)
    after = box.messages()
    assert after[1] == before[1]
    assert after.view.flag_ids[1] == before.view.flag_ids[1]
    assert after.view.flag_sets[: len(before.view.flag_sets)] == before.view.flag_sets
    assert "\\Seen" in after[0].flags and "\\Seen" not in before[0].flags
    assert after[0].path.exists() and str(after[0].path) == after[0].location
