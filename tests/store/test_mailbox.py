"""One session's view of a folder on real Maildirs: flags, reading, COPY, MOVE, EXPUNGE,
\\Recent and polling."""

from __future__ import annotations

import os
import time

import pytest

from mailtalk.store import MailboxError, Maildir, UserMailboxes
from tests.store.mailboxes import MESSAGE, deliver, index_text, reopened

# -- flags ---------------------------------------------------------------------


def test_set_flags_modes_and_what_other_sessions_see(alice: UserMailboxes) -> None:
    deliver(alice)
    deliver(alice)
    mine, other = alice.open("INBOX"), alice.open("INBOX")
    assert mine.set_flags([1, 2], ["\\Seen"], "add") == {
        1: {"\\Seen", "\\Recent"},
        2: {"\\Seen", "\\Recent"},
    }
    assert mine.set_flags([1, 2], ["\\Seen"], "add") == {}  # nothing changed
    assert mine.set_flags([1], ["\\Flagged", "Work"], "add") == {
        1: {"\\Seen", "\\Flagged", "Work", "\\Recent"}
    }
    assert mine.set_flags([1], ["\\Seen"], "remove") == {1: {"\\Flagged", "Work", "\\Recent"}}
    assert mine.set_flags([2], ["\\Answered"], "replace") == {2: {"\\Answered", "\\Recent"}}
    assert mine.set_flags([99], ["\\Seen"], "add") == {}  # unknown UIDs are skipped
    assert not mine.refresh()  # its own changes were reported already

    changes = other.refresh()
    assert changes.flag_changed_uids == (1, 2)
    assert other.message(1).flags == {"\\Flagged", "Work"}
    assert other.message(2).flags == {"\\Answered"}
    assert other.message(1).path.name.endswith(":2,F")


def test_add_and_remove_apply_to_the_flags_on_disk_not_a_stale_view(alice: UserMailboxes) -> None:
    deliver(alice)
    first, second = alice.open("INBOX"), alice.open("INBOX")
    first.set_flags([1], ["\\Seen"], "add")
    second.set_flags([1], ["\\Flagged"], "add")  # second has not refreshed: still no \Seen
    assert reopened(alice).open("INBOX").message(1).flags == {"\\Seen", "\\Flagged"}


def test_unknown_info_letters_are_kept(alice: UserMailboxes) -> None:
    Maildir(alice.path).create()
    (alice.path / "cur" / "1700000000.M1P1Q1.host:2,Sab").write_bytes(MESSAGE)
    inbox = alice.open("INBOX")
    assert inbox.message(1).flags == {"\\Seen"}  # in cur/ already: some reader saw it
    inbox.set_flags([1], ["\\Flagged"], "add")
    assert inbox.message(1).path.name == "1700000000.M1P1Q1.host:2,FSab"


def test_keywords_persist_in_the_index(alice: UserMailboxes) -> None:
    deliver(alice)
    alice.open("INBOX").set_flags([1], ["$Label1", "project-x", "\\Seen"], "add")
    assert " K$Label1 Kproject-x :" in index_text(alice.path)
    inbox = reopened(alice).open("INBOX")
    assert inbox.message(1).flags == {"$Label1", "project-x", "\\Seen"}
    inbox.set_flags([1], ["project-x"], "remove")
    assert reopened(alice).open("INBOX").message(1).flags == {"$Label1", "\\Seen"}


def test_read_only_sessions_cannot_change_anything(alice: UserMailboxes) -> None:
    deliver(alice)
    examined = alice.open("INBOX", read_only=True)
    for change in (
        lambda: examined.set_flags([1], ["\\Seen"], "add"),
        lambda: examined.expunge(),
        lambda: examined.move([1], "INBOX"),
    ):
        with pytest.raises(MailboxError) as caught:
            change()
        assert caught.value.code == "CANNOT"
    assert examined.read_message(1, mark_seen=True) == MESSAGE
    assert "\\Seen" not in alice.open("INBOX").message(1).flags


# -- reading -------------------------------------------------------------------


def test_reading_with_mark_seen(alice: UserMailboxes) -> None:
    deliver(alice)
    inbox = alice.open("INBOX")
    assert inbox.read_message(1) == MESSAGE
    assert "\\Seen" not in inbox.message(1).flags
    assert inbox.read_message(1, mark_seen=True) == MESSAGE
    assert "\\Seen" in inbox.message(1).flags


def test_reading_follows_a_rename_by_another_session(alice: UserMailboxes) -> None:
    deliver(alice)
    reader, flagger = alice.open("INBOX"), alice.open("INBOX")
    flagger.set_flags([1], ["\\Answered"], "add")
    assert not reader.message(1).path.exists()
    assert reader.read_message(1) == MESSAGE
    flagger.message(1).path.unlink()
    with pytest.raises(MailboxError) as caught:
        reader.read_message(1)
    assert caught.value.code == "EXPUNGEISSUED"
    with pytest.raises(MailboxError) as caught:
        reader.read_message(42)
    assert caught.value.code == "NONEXISTENT"


def test_read_small_reads_by_the_view_and_follows_a_rename(alice: UserMailboxes) -> None:
    deliver(alice)
    deliver(alice, MESSAGE * 40)
    reader, flagger = alice.open("INBOX"), alice.open("INBOX")
    assert reader.read_small(1, 1000) == MESSAGE
    assert reader.read_small(2, len(MESSAGE) * 40) is None  # not below the limit
    assert reader.read_small(2, len(MESSAGE) * 40 + 1) == MESSAGE * 40
    flagger.set_flags([1], ["\\Answered"], "add")
    assert reader.read_small(1, 1000) == MESSAGE  # found renamed
    assert reader.message(1).path.exists()  # and known where it is now
    assert reader.read_small(1, 1000) == MESSAGE
    flagger.message(1).path.unlink()
    with pytest.raises(MailboxError) as caught:
        reader.read_small(1, 1000)
    assert caught.value.code == "EXPUNGEISSUED"
    with pytest.raises(MailboxError) as caught:
        reader.read_small(42, 1000)
    assert caught.value.code == "NONEXISTENT"


def test_read_small_of_a_file_longer_than_its_name_says(alice: UserMailboxes) -> None:
    """A ``,S=`` size that is wrong does not cut the message: read as a file object would."""
    Maildir(alice.path).create()
    (alice.path / "new" / "1700000000.M1P1Q1.host,S=10,W=12").write_bytes(MESSAGE)
    inbox = alice.open("INBOX")
    assert inbox.message(1).size == 10
    assert inbox.read_small(1, 1000) == MESSAGE
    assert inbox.read_small(1, len(MESSAGE)) is None


def test_uidl_is_the_filename_base(alice: UserMailboxes) -> None:
    deliver(alice)
    Maildir(alice.path).create()
    (alice.path / "new" / ("1700000000.M1P1Q1." + "h" * 80)).write_bytes(MESSAGE)
    inbox = alice.open("INBOX")
    long_name, first = inbox.messages()  # 1700000000 was before the delivery above
    assert first.uidl == first.base
    assert len(long_name.uidl) == 40 and long_name.uidl != long_name.base  # RFC 1939: <= 70
    assert reopened(alice).open("INBOX").messages()[0].uidl == long_name.uidl


# -- copy and move -------------------------------------------------------------


def test_copy_keeps_flags_keywords_and_internaldate_and_hard_links(alice: UserMailboxes) -> None:
    alice.create("Archive")
    for _ in range(3):
        deliver(alice)
    inbox = alice.open("INBOX")
    inbox.set_flags([2], ["\\Flagged", "Work"], "add")
    assert inbox.copy([3, 2, 99], "Archive") == [(2, 1), (3, 2)]
    archive = alice.open("Archive")
    copy, original = archive.message(1), inbox.message(2)
    assert copy.flags == {"\\Flagged", "Work", "\\Recent"}
    assert copy.internaldate == original.internaldate
    assert (copy.size, copy.rfc822_size) == (original.size, original.rfc822_size)
    assert copy.path.stat().st_ino == original.path.stat().st_ino
    assert copy.base != original.base
    assert len(inbox.refresh().new_uids) == 0  # the source is untouched
    assert list((alice.path / ".Archive" / "tmp").iterdir()) == []


def test_copy_to_a_missing_folder_is_trycreate(alice: UserMailboxes) -> None:
    deliver(alice)
    inbox = alice.open("INBOX")
    with pytest.raises(MailboxError) as caught:
        inbox.copy([1], "Nowhere")
    assert caught.value.code == "TRYCREATE"
    alice.create("Gone")
    gone = alice.target("Gone")
    alice.delete("Gone")
    with pytest.raises(MailboxError) as caught:
        inbox.move([1], gone)
    assert caught.value.code == "TRYCREATE"
    assert not inbox.refresh()
    assert [m.uid for m in inbox.messages()] == [1]  # nothing moved, nothing lost


def test_copy_of_a_message_expunged_meanwhile_copies_nothing(alice: UserMailboxes) -> None:
    alice.create("Archive")
    deliver(alice)
    deliver(alice)
    inbox = alice.open("INBOX")
    inbox.message(2).path.unlink()
    with pytest.raises(MailboxError) as caught:
        inbox.copy([1, 2], "Archive")
    assert caught.value.code == "EXPUNGEISSUED"
    assert alice.open("Archive").messages() == []
    assert list((alice.path / ".Archive" / "tmp").iterdir()) == []


def test_move(alice: UserMailboxes) -> None:
    alice.create("Archive")
    for _ in range(3):
        deliver(alice)
    inbox, other = alice.open("INBOX"), alice.open("INBOX")
    assert inbox.move([1, 3], "Archive") == [(1, 1), (3, 2)]
    assert [m.uid for m in inbox.messages()] == [2]
    assert not inbox.refresh()  # already reported by move's return value
    assert other.refresh().expunged_uids == (1, 3)
    assert len(alice.open("Archive").messages()) == 2


def test_expunge(alice: UserMailboxes) -> None:
    for _ in range(4):
        deliver(alice)
    inbox, other = alice.open("INBOX"), alice.open("INBOX")
    inbox.set_flags([1, 2, 4], ["\\Deleted"], "add")
    assert inbox.expunge([2, 3]) == [2]  # UID EXPUNGE: only those, only if \Deleted
    assert inbox.expunge() == [1, 4]
    assert [m.uid for m in inbox.messages()] == [3]
    assert not inbox.refresh()
    changes = other.refresh()
    assert changes.expunged_uids == (1, 2, 4) and changes.expunged_seqs == (4, 2, 1)
    assert len(list((alice.path / "cur").iterdir())) == 1


def test_expunge_ignores_messages_the_session_has_not_seen(alice: UserMailboxes) -> None:
    inbox = alice.open("INBOX")
    other = alice.target("INBOX")
    other.append(MESSAGE, ["\\Deleted"])
    assert inbox.expunge() == []
    assert inbox.refresh().new_uids == (1,)
    assert inbox.expunge() == [1]


# -- \Recent -------------------------------------------------------------------


def test_recent_is_for_the_first_session_only(alice: UserMailboxes) -> None:
    deliver(alice)
    examined = alice.open("INBOX", read_only=True)
    assert examined.message(1).flags == {"\\Recent"}  # seen, not claimed
    assert (alice.path / "new").iterdir().__next__()  # EXAMINE leaves new/ alone
    first = alice.open("INBOX")
    assert first.message(1).flags == {"\\Recent"} and first.recent_count == 1
    assert list((alice.path / "new").iterdir()) == []  # moved to cur/
    assert first.message(1).path.name.endswith(":2,")
    second = alice.open("INBOX")
    assert second.message(1).flags == set() and second.recent_count == 0

    deliver(alice)
    assert second.refresh().new_uids == (2,)
    assert "\\Recent" in second.message(2).flags
    first.refresh()
    assert "\\Recent" not in first.message(2).flags
    assert "\\Recent" in first.message(1).flags  # for the whole session

    # Persistent: a restarted server does not make them recent again.
    assert reopened(alice).open("INBOX").recent_count == 0


def test_appended_messages_are_recent_for_the_next_session(alice: UserMailboxes) -> None:
    alice.create("Sent")
    alice.target("Sent").append(MESSAGE, ["\\Seen"])
    assert alice.open("Sent").message(1).flags == {"\\Seen", "\\Recent"}
    assert alice.open("Sent").message(1).flags == {"\\Seen"}


# -- polling -------------------------------------------------------------------


def test_changed_since(alice: UserMailboxes) -> None:
    deliver(alice)
    inbox = alice.open("INBOX")
    old = time.time() - 60
    for path in (alice.path / "new", alice.path / "cur", alice.path / "mailtalk-uidlist"):
        os.utime(path, (old, old))
    token = inbox.change_token()
    assert not inbox.changed_since(token)
    deliver(alice)  # e.g. by another process
    assert inbox.changed_since(token)
    # Within the timestamp granularity it cannot tell, so it says "maybe".
    assert inbox.changed_since(inbox.change_token())
