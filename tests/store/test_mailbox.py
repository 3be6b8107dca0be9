"""The POP3/IMAP mailbox layer on real Maildirs: UIDs, flags, folders, quota, \\Recent."""

from __future__ import annotations

import io
import os
import re
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.store import (
    Delivery,
    MailboxError,
    MailboxWatchers,
    Maildir,
    MailStore,
    RFC822SizeCounter,
    UserMailboxes,
    flags_to_info,
    info_to_flags,
    normalize_flags,
)
from mailtalk.store.index import MAX_UID

MESSAGE = b"From: a@example.org\nSubject: hello\n\nbody line\n"


@pytest.fixture
def store(tmp_path: Path) -> MailStore:
    return MailStore(tmp_path)


@pytest.fixture
def alice(store: MailStore) -> UserMailboxes:
    return store.user_mailboxes("alice")


def deliver(mailboxes: UserMailboxes, data: bytes = MESSAGE, folder: Path | None = None) -> Path:
    """Deliver as the SMTP server does: through a Delivery into new/."""
    maildir = Maildir(folder if folder is not None else mailboxes.path)
    maildir.create()
    with Delivery([maildir]) as delivery:
        delivery.write(data)
        (path,) = delivery.commit()
    return path


def reopened(mailboxes: UserMailboxes) -> UserMailboxes:
    """The same user's mailboxes as a restarted server sees them: nothing kept in memory."""
    return MailStore(mailboxes.path.parents[2]).user_mailboxes(mailboxes.user)


def index_text(folder: Path) -> str:
    return (folder / "mailtalk-uidlist").read_text()


# -- UIDs and the index --------------------------------------------------------


def test_index_persists_across_reopen(alice: UserMailboxes) -> None:
    for _ in range(3):
        deliver(alice)
    inbox = alice.open("INBOX")
    uids = {m.base: m.uid for m in inbox.messages()}
    assert sorted(uids.values()) == [1, 2, 3]

    again = reopened(alice).open("INBOX")
    assert again.uidvalidity == inbox.uidvalidity
    assert again.uidnext == 4
    assert {m.base: m.uid for m in again.messages()} == uids
    header, *lines = index_text(alice.path).splitlines()
    assert header == f"mailtalk-uidlist 1 V{inbox.uidvalidity} N4 R4"
    assert [line.split(" ")[0] for line in lines] == ["1", "2", "3"]
    assert all(line.endswith(f" :{base}") for line, base in zip(lines, uids, strict=True))


def test_new_deliveries_get_increasing_uids(alice: UserMailboxes) -> None:
    inbox = alice.open("INBOX")
    assert inbox.messages() == []
    deliver(alice)
    assert inbox.refresh().new_uids == (1,)
    deliver(alice)
    deliver(alice)
    changes = inbox.refresh()
    assert changes.new_uids == (2, 3)
    assert not changes.expunged_uids and not changes.flag_changed_uids
    assert inbox.uidnext == 4
    assert not inbox.refresh()


def test_uids_follow_delivery_time_in_the_name_not_name_order(alice: UserMailboxes) -> None:
    Maildir(alice.path).create()
    names = [
        "1700000002.M1P7Q1.host",  # latest second
        "1700000001.M5P7Q10.host",  # same microsecond as the next: Q10 after Q9
        "1700000001.M5P7Q9.host",
        "1700000001.M40P7Q3.host",
    ]
    for name in names:
        (alice.path / "new" / name).write_bytes(MESSAGE)
    inbox = alice.open("INBOX")
    assert [m.base for m in inbox.messages()] == [
        "1700000001.M5P7Q9.host",
        "1700000001.M5P7Q10.host",
        "1700000001.M40P7Q3.host",
        "1700000002.M1P7Q1.host",
    ]


def test_deleting_a_file_outside_expunges_it_and_its_uid_is_never_reused(
    alice: UserMailboxes,
) -> None:
    for _ in range(3):
        deliver(alice)
    inbox = alice.open("INBOX")
    second = inbox.message(2)
    second.path.unlink()
    changes = inbox.refresh()
    assert changes.expunged_uids == (2,)
    assert changes.expunged_seqs == (2,)
    assert [m.uid for m in inbox.messages()] == [1, 3]
    deliver(alice)
    assert inbox.refresh().new_uids == (4,)


def test_expunged_sequence_numbers_come_highest_first(alice: UserMailboxes) -> None:
    for _ in range(5):
        deliver(alice)
    inbox = alice.open("INBOX")
    for uid in (2, 4, 5):
        inbox.message(uid).path.unlink()
    changes = inbox.refresh()
    assert changes.expunged_uids == (2, 4, 5)
    assert changes.expunged_seqs == (5, 4, 2)


@pytest.mark.parametrize(
    "damage",
    [
        lambda text: "garbage\n",
        lambda text: text[: len(text) // 2],  # truncated mid-line
        lambda text: text.replace(" :", " ", 1),  # a line without its filename
        lambda text: text.replace("\n2 ", "\n1 ", 1),  # a duplicate UID
        lambda text: "",
    ],
    ids=["garbage", "truncated", "no-filename", "duplicate-uid", "empty"],
)
def test_corrupt_index_gets_a_new_uidvalidity(alice: UserMailboxes, damage: object) -> None:
    for _ in range(3):
        deliver(alice)
    old = alice.open("INBOX")
    index = alice.path / "mailtalk-uidlist"
    assert callable(damage)
    index.write_text(damage(index.read_text()))

    rebuilt = reopened(alice).open("INBOX")
    # Immediately after: the uidvalidity file, not the clock, makes it differ.
    assert rebuilt.uidvalidity > old.uidvalidity
    assert [m.uid for m in rebuilt.messages()] == [1, 2, 3]
    assert (alice.path / "mailtalk-uidlist.corrupt").exists()
    assert reopened(alice).open("INBOX").uidvalidity == rebuilt.uidvalidity


def test_missing_index_gets_a_new_uidvalidity(alice: UserMailboxes) -> None:
    deliver(alice)
    old = alice.open("INBOX")
    (alice.path / "mailtalk-uidlist").unlink()
    assert reopened(alice).open("INBOX").uidvalidity > old.uidvalidity


def test_open_session_learns_of_a_rebuilt_index(alice: UserMailboxes) -> None:
    deliver(alice)
    deliver(alice)
    inbox = alice.open("INBOX")
    (alice.path / "mailtalk-uidlist").write_text("junk\n")
    changes = inbox.refresh()
    assert changes.uidvalidity_changed
    assert changes.expunged_uids == (1, 2) and changes.new_uids == (1, 2)


def test_running_out_of_uids_renumbers_under_a_new_uidvalidity(alice: UserMailboxes) -> None:
    deliver(alice)
    inbox = alice.open("INBOX")
    (base,) = [m.base for m in inbox.messages()]
    index = alice.path / "mailtalk-uidlist"
    index.write_text(
        f"mailtalk-uidlist 1 V{inbox.uidvalidity} N{MAX_UID} R{MAX_UID}\n"
        f"{MAX_UID - 1} S1 W1 T1 Kkept :{base}\n"
    )
    deliver(alice)
    deliver(alice)
    changes = inbox.refresh()
    assert changes.uidvalidity_changed
    assert [m.uid for m in inbox.messages()] == [1, 2, 3]
    assert "kept" in inbox.message(1).flags


# -- flags ---------------------------------------------------------------------

FILENAME_FLAGS = ["\\Draft", "\\Flagged", "$Forwarded", "\\Answered", "\\Seen", "\\Deleted"]


@given(st.sets(st.sampled_from(FILENAME_FLAGS)), st.sets(st.sampled_from("abcxyz")))
def test_flags_round_trip_through_maildir_info(flags: set[str], other: set[str]) -> None:
    info = flags_to_info(flags, "".join(other))
    letters = info[2:]
    assert info.startswith("2,")
    assert list(letters) == sorted(letters)  # the Maildir spec: ASCII order
    assert set(letters) == {"DFPRST"[FILENAME_FLAGS.index(f)] for f in flags} | other
    assert info_to_flags(info) == flags


def test_flag_letters_are_the_maildir_ones() -> None:
    assert flags_to_info(["\\Seen", "\\Answered", "\\Deleted", "\\Draft", "\\Flagged"]) == "2,DFRST"
    assert flags_to_info(["$Forwarded", "custom"]) == "2,P"
    assert info_to_flags("2,PS") == {"$Forwarded", "\\Seen"}
    assert info_to_flags("1,S") == set()


def test_normalize_flags() -> None:
    assert normalize_flags(["\\seen", "\\RECENT", "$forwarded", "Work"]) == {
        "\\Seen",
        "$Forwarded",
        "Work",
    }
    for bad in ["\\Bogus", "two words", "", "a]b", 'q"uote', "ümlaut"]:
        with pytest.raises(ValueError):
            normalize_flags([bad])


@settings(max_examples=40, deadline=None)
@given(
    st.sets(st.sampled_from(FILENAME_FLAGS)),
    st.sets(st.sampled_from(["Work", "$Junk", "todo:later", "x.y"])),
)
def test_flags_round_trip_through_the_filesystem(flags: set[str], keywords: set[str]) -> None:
    with tempfile.TemporaryDirectory() as root:
        mailboxes = MailStore(Path(root)).user_mailboxes("u")
        deliver(mailboxes)
        inbox = mailboxes.open("INBOX")
        inbox.set_flags([1], flags | keywords, "replace")
        stored = inbox.message(1)
        assert stored.path.name.endswith(":" + flags_to_info(flags))
        assert stored.path.parent.name == "cur"
        assert stored.flags == flags | keywords | {"\\Recent"}
        assert reopened(mailboxes).open("INBOX").message(1).flags == flags | keywords


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


# -- sizes ---------------------------------------------------------------------


def crlf(data: bytes) -> bytes:
    return re.sub(rb"(?<!\r)\n", b"\r\n", data)


@given(st.binary(max_size=200).map(lambda b: bytes(b"\r\nx"[c % 3] for c in b)))
def test_rfc822_size_is_the_size_with_crlf_line_endings(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as root:
        mailboxes = MailStore(Path(root)).user_mailboxes("u")
        deliver(mailboxes, data)
        (info,) = mailboxes.open("INBOX").messages()
        bare_lfs = len(re.findall(rb"(?<!\r)\n", data))
        assert info.size == len(data)
        assert info.rfc822_size == len(data) + bare_lfs == len(crlf(data))


@given(st.binary(max_size=300).map(lambda b: bytes(b"\r\nx"[c % 3] for c in b)), st.data())
def test_rfc822_size_counter_does_not_care_where_chunks_split(
    data: bytes, draw: st.DataObject
) -> None:
    cuts = sorted(draw.draw(st.lists(st.integers(0, len(data)), max_size=10)))
    counter = RFC822SizeCounter()
    for start, end in zip([0, *cuts], [*cuts, len(data)], strict=True):
        counter.feed(data[start:end])
    assert (counter.size, counter.rfc822_size) == (len(data), len(crlf(data)))


def test_sizes_are_cached_in_the_index(alice: UserMailboxes) -> None:
    deliver(alice, b"a\nb\r\nc\n")
    alice.open("INBOX")
    assert " S7 W9 T" in index_text(alice.path)


def test_a_message_without_a_final_line_end_is_marked_in_the_index(
    alice: UserMailboxes,
) -> None:
    """POP3 puts a CRLF after such a message before its dot; its size says so (pop3_size),
    while IMAP's RFC822.SIZE stays the size of the message as it is."""
    deliver(alice, b"Subject: x\n\nlast line")
    deliver(alice, b"Subject: y\n\nended\n")
    inbox = alice.open("INBOX")
    first, second = inbox.message(1), inbox.message(2)
    assert first.unterminated and (first.rfc822_size, first.pop3_size) == (23, 25)
    assert not second.unterminated and second.pop3_size == second.rfc822_size
    lines = index_text(alice.path).splitlines()
    assert lines[1].startswith("1 S21 W23 T") and " U" in lines[1]
    assert " U" not in lines[2]
    # read back from the index file, not measured again
    again = reopened(alice).open("INBOX")
    assert again.message(1).unterminated and again.message(1).pop3_size == 25


def test_an_index_line_without_the_mark_still_reads(alice: UserMailboxes) -> None:
    """Indexes written before the U mark existed stay valid (the flag is then False)."""
    deliver(alice, b"Subject: x\n\nlast line")
    alice.open("INBOX")
    path = alice.path / "mailtalk-uidlist"
    assert " U" in path.read_text()
    path.write_text(path.read_text().replace(" U", ""))
    inbox = reopened(alice).open("INBOX")
    assert inbox.message(1).uid == 1
    assert not inbox.message(1).unterminated


def test_append_of_an_unterminated_message_keeps_imap_sizes(alice: UserMailboxes) -> None:
    inbox = alice.open("INBOX")
    inbox.append(b"Subject: x\r\n\r\nno end", [], None)
    inbox.refresh()
    info = inbox.message(1)
    assert inbox.read_message(1) == b"Subject: x\n\nno end"
    assert (info.rfc822_size, info.unterminated, info.pop3_size) == (20, True, 22)


# -- append --------------------------------------------------------------------


def test_append_stores_lf_flags_keywords_and_internaldate(alice: UserMailboxes) -> None:
    inbox = alice.open("INBOX")
    when = datetime(2020, 2, 29, 12, 30, tzinfo=UTC)
    uid = inbox.append(b"Subject: x\r\n\r\nbody\r\n", ["\\Seen", "Work"], when)
    assert uid == 1
    assert inbox.messages() == []  # it arrives with the next refresh, as EXISTS
    assert inbox.refresh().new_uids == (1,)
    info = inbox.message(1)
    assert inbox.read_message(1) == b"Subject: x\n\nbody\n"
    assert (info.size, info.rfc822_size) == (17, 20)
    assert info.flags == {"\\Seen", "Work", "\\Recent"}
    assert info.internaldate == when
    assert info.path.stat().st_mtime == when.timestamp()
    assert info.path.name.endswith(":2,S")
    assert list((alice.path / "tmp").iterdir()) == []


def test_append_streams_files_and_chunks(alice: UserMailboxes) -> None:
    inbox = alice.target("INBOX")
    assert inbox.append(io.BytesIO(b"one\r\n")) == 1
    assert inbox.append(iter([b"tw", b"o\r", b"\n"])) == 2
    with inbox.begin_append(["\\Draft"], crlf_to_lf=False) as appender:
        appender.write(b"three\r\n")
        assert appender.commit() == 3
    inbox.refresh()
    assert [inbox.read_message(uid) for uid in (1, 2, 3)] == [b"one\n", b"two\n", b"three\r\n"]


def test_abandoned_append_leaves_nothing(alice: UserMailboxes) -> None:
    inbox = alice.open("INBOX")
    with inbox.begin_append() as appender:
        appender.write(b"half a message")
    assert list((alice.path / "tmp").iterdir()) == []
    assert not inbox.refresh()


def test_append_to_a_deleted_folder_is_trycreate(alice: UserMailboxes) -> None:
    alice.create("Drafts")
    drafts = alice.target("Drafts")
    alice.delete("Drafts")
    with pytest.raises(MailboxError) as caught:
        drafts.append(MESSAGE)
    assert caught.value.code == "TRYCREATE"
    with pytest.raises(MailboxError) as caught:
        alice.target("Drafts")
    assert caught.value.code == "TRYCREATE"


# -- folders -------------------------------------------------------------------


def test_create_and_list_nested_folders(alice: UserMailboxes) -> None:
    assert alice.list_folders() == ["INBOX"]
    alice.create("Sent")
    alice.create("Archive.2024")  # "Archive" is created on the way
    alice.create("Lists.")  # a trailing delimiter only announces children
    assert alice.list_folders() == ["INBOX", "Archive", "Archive.2024", "Lists", "Sent"]
    for name in ("Sent", "Archive", "Archive.2024"):
        folder = alice.path / ("." + name)
        assert {p.name for p in folder.iterdir()} >= {"tmp", "new", "cur", "maildirfolder"}
    assert alice.exists("Archive.2024") and alice.exists("inbox") and not alice.exists("Nope")
    deliver(alice, folder=alice.path / ".Archive.2024")
    assert [m.uid for m in alice.open("Archive.2024").messages()] == [1]


@pytest.mark.parametrize("name", ["INBOX", "inbox", "Sent"])
def test_create_existing_is_alreadyexists(alice: UserMailboxes, name: str) -> None:
    alice.create("Sent")
    with pytest.raises(MailboxError) as caught:
        alice.create(name)
    assert caught.value.code == "ALREADYEXISTS"


@pytest.mark.parametrize("name", ["", "a..b", ".hidden", "a/b", "star*", "per%cent", "tab\tx"])
def test_unusable_names_are_refused(alice: UserMailboxes, name: str) -> None:
    with pytest.raises(MailboxError) as caught:
        alice.create(name)
    assert caught.value.code == "CANNOT"
    assert alice.list_folders() == ["INBOX"]


def test_inbox_is_case_insensitive_also_as_a_parent(alice: UserMailboxes) -> None:
    alice.create("inbox.Receipts")
    assert alice.list_folders() == ["INBOX", "INBOX.Receipts"]
    assert alice.open("Inbox.Receipts").name == "INBOX.Receipts"


def test_delete(alice: UserMailboxes) -> None:
    alice.create("Archive.2024")
    deliver(alice, folder=alice.path / ".Archive")
    alice.delete("Archive")
    # RFC 3501 6.3.4: the children stay.
    assert alice.list_folders() == ["INBOX", "Archive.2024"]
    assert [p.name for p in alice.path.iterdir() if p.name.startswith("..")] == []
    for name, code in [("Archive", "NONEXISTENT"), ("INBOX", "CANNOT"), ("inbox", "CANNOT")]:
        with pytest.raises(MailboxError) as caught:
            alice.delete(name)
        assert caught.value.code == code


def test_a_recreated_folder_has_a_new_uidvalidity(alice: UserMailboxes) -> None:
    alice.create("Trash")
    before = alice.open("Trash").uidvalidity
    alice.delete("Trash")
    alice.create("Trash")
    assert alice.open("Trash").uidvalidity > before  # even within the same second


def test_a_selected_folder_that_is_deleted_is_nonexistent(alice: UserMailboxes) -> None:
    alice.create("Old")
    selected = alice.open("Old")
    alice.delete("Old")
    with pytest.raises(MailboxError) as caught:
        selected.refresh()
    assert caught.value.code == "NONEXISTENT"


def test_rename_moves_children_and_keeps_uids(alice: UserMailboxes) -> None:
    alice.create("Work.2023")
    alice.create("Work.2024")
    deliver(alice, folder=alice.path / ".Work.2024")
    before = alice.open("Work.2024")
    alice.rename("Work", "Old.Work")  # "Old" is created on the way
    assert alice.list_folders() == ["INBOX", "Old", "Old.Work", "Old.Work.2023", "Old.Work.2024"]
    after = alice.open("Old.Work.2024")
    assert after.uidvalidity == before.uidvalidity
    assert [m.base for m in after.messages()] == [m.base for m in before.messages()]


def test_rename_errors(alice: UserMailboxes) -> None:
    alice.create("A.B")
    alice.create("C")
    alice.create("D.B")
    cases = [
        ("Nope", "X", "NONEXISTENT"),
        ("A", "C", "ALREADYEXISTS"),
        ("A", "INBOX", "ALREADYEXISTS"),
        ("A", "A.B.C", "CANNOT"),
        ("A", "D", "ALREADYEXISTS"),  # D exists
    ]
    for old, new, code in cases:
        with pytest.raises(MailboxError) as caught:
            alice.rename(old, new)
        assert caught.value.code == code, (old, new)
    alice.delete("D")
    with pytest.raises(MailboxError) as caught:
        alice.rename("A", "D")  # "D.B" would collide with the renamed child "A.B"
    assert caught.value.code == "ALREADYEXISTS"
    assert alice.list_folders() == ["INBOX", "A", "A.B", "C", "D.B"]


def test_renaming_inbox_moves_its_messages_and_leaves_it_empty(alice: UserMailboxes) -> None:
    alice.create("INBOX.Child")
    for _ in range(3):
        deliver(alice)
    inbox = alice.open("INBOX")
    inbox.set_flags([2], ["\\Seen", "Work"], "add")
    deliver(alice)  # not yet indexed: moved too
    alice.rename("INBOX", "Before-2025")

    assert alice.list_folders() == ["INBOX", "Before-2025", "INBOX.Child"]
    changes = inbox.refresh()
    assert changes.expunged_uids == (1, 2, 3)
    assert inbox.messages() == [] and inbox.uidnext == 5
    moved = alice.open("Before-2025")
    assert moved.uidvalidity != inbox.uidvalidity
    assert [m.uid for m in moved.messages()] == [1, 2, 3, 4]
    assert moved.message(2).flags >= {"\\Seen", "Work"}
    deliver(alice)
    assert inbox.refresh().new_uids == (5,)  # INBOX goes on, its UIDs never reused


def test_inbox_can_be_renamed_to_its_own_child(alice: UserMailboxes) -> None:
    deliver(alice)
    alice.rename("INBOX", "INBOX.Old")
    assert alice.list_folders() == ["INBOX", "INBOX.Old"]
    assert len(alice.open("INBOX.Old").messages()) == 1
    assert alice.open("INBOX").messages() == []


# -- subscriptions -------------------------------------------------------------


def test_subscriptions(alice: UserMailboxes) -> None:
    assert alice.subscriptions == []
    alice.subscribe("Sent")
    alice.subscribe("Archive.2024")  # need not exist (RFC 3501 6.3.6)
    alice.subscribe("inbox")
    alice.subscribe("Sent")
    assert alice.subscriptions == ["Sent", "Archive.2024", "INBOX"]
    assert (alice.path / "subscriptions").read_text() == "Sent\nArchive.2024\nINBOX\n"
    alice.unsubscribe("Sent")
    alice.unsubscribe("never-subscribed")
    assert reopened(alice).subscriptions == ["Archive.2024", "INBOX"]


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


# -- quota ---------------------------------------------------------------------


def test_quota(store: MailStore) -> None:
    mailboxes = store.user_mailboxes("bob", quota_bytes=100)
    mailboxes.create("Archive")
    inbox = mailboxes.open("INBOX")
    inbox.append(b"x" * 60)
    assert mailboxes.usage() == 60
    with pytest.raises(MailboxError) as caught:
        inbox.append(b"y" * 41)
    assert caught.value.code == "OVERQUOTA"
    inbox.append(b"z" * 40)
    assert mailboxes.usage() == 100
    inbox.refresh()
    with pytest.raises(MailboxError) as caught:
        inbox.copy([1], "Archive")  # a hard link counts too, as in Maildir++ quota
    assert caught.value.code == "OVERQUOTA"
    inbox.move([2], "Archive")
    assert mailboxes.usage() == 100
    assert [p for p in mailboxes.path.rglob("tmp/*")] == []


def test_quota_refuses_early_when_the_size_is_known_or_exceeded(store: MailStore) -> None:
    inbox = store.user_mailboxes("bob", quota_bytes=1000).open("INBOX")
    with pytest.raises(MailboxError) as caught:
        inbox.begin_append(expected_size=1001)  # before the IMAP literal is sent
    assert caught.value.code == "OVERQUOTA"
    with inbox.begin_append() as appender:
        appender.write(b"x" * 600)
        with pytest.raises(MailboxError) as caught:
            appender.write(b"x" * 600)  # stops writing, does not fill the disk first
        assert caught.value.code == "OVERQUOTA"
    assert list((inbox.path / "tmp").iterdir()) == []


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


# -- notifications and polling -------------------------------------------------


def test_watchers(alice: UserMailboxes) -> None:
    calls: list[str] = []
    watchers = alice.watchers
    watch = watchers.watch("alice", "inbox", lambda: calls.append("inbox"))
    watchers.watch("alice", "Sent", lambda: calls.append("sent"))

    def broken() -> None:
        raise RuntimeError("a broken session must not break the others")

    watchers.watch("alice", "INBOX", broken)
    alice.target("INBOX").append(MESSAGE)
    inbox = alice.open("INBOX")
    inbox.set_flags([1], ["\\Seen"], "add")
    watchers.notify("alice", "INBOX")  # what the SMTP server does after a delivery
    watchers.notify("bob", "INBOX")
    assert calls == ["inbox"] * 3
    watch.cancel()
    watchers.notify("alice", "INBOX")
    assert calls == ["inbox"] * 3


def test_watchers_are_thread_safe() -> None:
    watchers = MailboxWatchers()
    count = 0
    lock = threading.Lock()

    def bump() -> None:
        nonlocal count
        with lock:
            count += 1

    def churn() -> None:
        for _ in range(200):
            with watchers.watch("u", "INBOX", bump):
                watchers.notify("u", "INBOX")

    threads = [threading.Thread(target=churn) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert count >= 8 * 200  # each notify reaches at least its own watcher
    assert watchers._callbacks == {}


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


# -- POP3 ----------------------------------------------------------------------


def test_maildrop_lock(store: MailStore, alice: UserMailboxes) -> None:
    with alice.lock_maildrop() as lock:
        assert lock.held
        with pytest.raises(MailboxError) as caught:
            store.lock_maildrop("alice")
        assert caught.value.code == "INUSE"
        store.lock_maildrop("bob").release()  # other users are not affected
    assert not lock.held
    second = store.lock_maildrop("alice")
    second.close()
    second.close()


def test_uidl_is_the_filename_base(alice: UserMailboxes) -> None:
    deliver(alice)
    Maildir(alice.path).create()
    (alice.path / "new" / ("1700000000.M1P1Q1." + "h" * 80)).write_bytes(MESSAGE)
    inbox = alice.open("INBOX")
    long_name, first = inbox.messages()  # 1700000000 was before the delivery above
    assert first.uidl == first.base
    assert len(long_name.uidl) == 40 and long_name.uidl != long_name.base  # RFC 1939: <= 70
    assert reopened(alice).open("INBOX").messages()[0].uidl == long_name.uidl


def test_user_names_cannot_escape_the_root(store: MailStore) -> None:
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            store.user_mailboxes(bad)
