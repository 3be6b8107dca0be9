"""The mailbox layer's short-cuts: they must never hide a change.

refresh() returns at once when the folder's stamps say nothing changed, parsed
indexes are cached by their text, message views are reused between refreshes,
and IMAP reads header blocks through a bounded cache. Each test here makes a
change the short-cut could miss and checks it is seen.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mailtalk.store import Delivery, Maildir, MailStore, UserMailboxes
from mailtalk.store import index as index_module
from mailtalk.store import mailbox as mailbox_module
from mailtalk.store.mailbox import INDEX_NAME, Mailbox

MESSAGE = b"From: a@example.org\nSubject: hello\n\nbody line\n"


@pytest.fixture
def alice(tmp_path: Path) -> UserMailboxes:
    return MailStore(tmp_path).user_mailboxes("alice")


def deliver(mailboxes: UserMailboxes, data: bytes = MESSAGE) -> Path:
    maildir = Maildir(mailboxes.path)
    maildir.create()
    with Delivery([maildir]) as delivery:
        delivery.write(data)
        (path,) = delivery.commit()
    return path


def age_folder(folder: Path, seconds: float = 10.0) -> tuple[int, int]:
    """Put the stamps of new/, cur/ and the index ``seconds`` in the past; returns the time."""
    when = time.time() - seconds
    for path in (folder / "new", folder / "cur", folder / INDEX_NAME):
        os.utime(path, (when, when))
    return int(when), int((when - int(when)) * 1e9)


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
    box = alice.open("INBOX")
    age_folder(alice.path)
    box.refresh()
    assert not box.refresh()
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
    box = alice.open("INBOX")
    age_folder(alice.path)
    box.refresh()
    assert not box.refresh()
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
    box = alice.open("INBOX")
    age_folder(alice.path)
    box.refresh()
    assert not box.refresh()
    other = alice.open("INBOX")
    uid = other.messages()[0].uid
    other.set_flags([uid], ["\\Deleted"], "add")
    other.expunge()
    assert box.refresh().expunged_uids == (uid,)


def test_a_deleted_folder_is_noticed_after_a_short_cut(alice: UserMailboxes) -> None:
    alice.create("Old")
    box = alice.open("Old")
    age_folder(alice.folder_path("Old"))
    box.refresh()
    assert not box.refresh()
    alice.delete("Old")
    with pytest.raises(mailbox_module.MailboxError):
        box.refresh()


def test_index_cache_is_keyed_by_content(alice: UserMailboxes) -> None:
    deliver(alice)
    deliver(alice)
    box = alice.open("INBOX")
    uids = [m.uid for m in box.messages()]
    index = alice.path / INDEX_NAME
    text = index.read_text()
    # Another tool rewrites the index: same length, a keyword letter changed.
    other = alice.open("INBOX")
    other.set_flags([uids[0]], ["kw1"], "add")
    assert "Kkw1" in index.read_text()
    assert index.read_text() != text
    reopened = alice.open("INBOX")
    assert "kw1" in reopened.message(uids[0]).flags


def test_cached_index_is_not_shared_mutably(alice: UserMailboxes) -> None:
    deliver(alice)
    text = (alice.open("INBOX").path / INDEX_NAME).read_text()
    first = index_module._parse_index(text)
    first.records.clear()
    first.uidnext = 99
    second = index_module._parse_index(text)
    assert len(second.records) == 1 and second.uidnext == 2


def test_fast_and_slow_index_lines_parse_alike() -> None:
    text = (
        "mailtalk-uidlist 1 V7 N5 R5\n"
        "1 S10 W12 T100 :a\n"
        "2 W12 S10 T100 :b\n"
        "3 S10 W12 T100 Kx Ky :c\n"
        "4 S10 W12 T100 :d:2,S\n"
    )
    index = index_module._parse_index_text(text)
    assert [
        (r.uid, r.size, r.rfc822_size, r.internaldate, r.keywords) for r in index.records.values()
    ] == [
        (1, 10, 12, 100, frozenset()),
        (2, 10, 12, 100, frozenset()),
        (3, 10, 12, 100, frozenset({"x", "y"})),
        (4, 10, 12, 100, frozenset()),
    ]
    for bad in (
        "2 S10 W12 T100 :a\n1 S1 W1 T1 :b\n",
        "1 S10 W12 T100 :a\n1 S1 W1 T1 :b\n",
        "9 S1 W1 T1 :a\n",
        "1 S1 W1 Tx :a\n",
        "0 S1 W1 T1 :a\n",
    ):
        with pytest.raises(ValueError):
            index_module._parse_index_text("mailtalk-uidlist 1 V7 N5 R5\n" + bad)


def test_index_cache_is_bounded() -> None:
    cache = index_module._IndexCache(100)
    index = index_module.Index(1, 1, 1, {})
    for n in range(10):
        cache.put(f"{n:02d}" * 20, index)
    assert cache.get("00" * 20) is None
    assert cache.get("09" * 20) is index
    cache.put("x" * 101, index)
    assert cache.get("x" * 101) is None


def test_views_are_reused_when_nothing_changed(alice: UserMailboxes) -> None:
    deliver(alice)
    deliver(alice)
    box = alice.open("INBOX")
    before = box.messages()
    other = alice.open("INBOX")
    other.set_flags([before[0].uid], ["\\Seen"], "add")
    box.refresh()
    after = box.messages()
    assert after[1] is before[1]
    assert after[0] is not before[0] and "\\Seen" in after[0].flags
    assert after[0].path.exists() and str(after[0].path) == after[0].location
