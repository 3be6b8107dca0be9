"""A folder's index on real Maildirs: UIDs that persist, rebuilds under a new UIDVALIDITY,
sizes kept, and the cache of parsed indexes that must never hide a change."""

from __future__ import annotations

import pytest

from mailtalk.store import Maildir, UserMailboxes
from mailtalk.store import uidlist as index_module
from mailtalk.store.index import INDEX_NAME, MAX_UID
from tests.store.mailboxes import MESSAGE, deliver, index_text, reopened

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
    assert header == f"mailtalk-uidlist 1 V{inbox.uidvalidity} N4 R4 M4"
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


# -- sizes in the index --------------------------------------------------------


def test_sizes_are_cached_in_the_index(alice: UserMailboxes) -> None:
    deliver(alice, b"a\nb\r\nc\n")
    alice.open("INBOX")
    # The sizes come from the delivered name; the date is not read yet (no T field).
    assert " S7 W9 M" in index_text(alice.path)


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


# -- the cache of parsed indexes -----------------------------------------------


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
    first = index_module.parse_index(text)
    first.remove(first.bases[0])
    first.uidnext = 99
    second = index_module.parse_index(text)
    assert len(second) == 1 and second.uidnext == 2


def test_a_cached_index_is_found_by_its_file_read_in_chunks(
    alice: UserMailboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A warm load digests the index file a chunk at a time (never holding its text)
    and finds the parse the last save left; any other bytes are not found."""
    monkeypatch.setattr(index_module, "_READ_CHUNK", 7)  # many chunks, one cut mid-line
    for _ in range(3):
        deliver(alice)
    path = alice.open("INBOX").path / INDEX_NAME
    with open(path, "rb") as file:
        cached = index_module.cached_index(file)
    assert cached == index_module.parse_index(path.read_bytes())
    assert len(cached) == 3
    path.write_bytes(path.read_bytes().replace(b" :", b"  :", 1))
    with open(path, "rb") as file:
        assert index_module.cached_index(file) is None


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
        (r.uid, r.size, r.rfc822_size, r.internaldate, r.keywords) for r in index.records()
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
    def one_message(base: str) -> index_module.Index:
        index = index_module.Index(1, 2, 2, 1)
        index.append(1, base, 10, 12, -1, frozenset(), False, 1)
        return index

    small = one_message("a")
    cache = index_module._IndexCache(3 * index_module._memory_estimate(small))
    for n in range(10):
        cache.put(b"%02d" % n, one_message("a"))
    assert cache.get(b"00") is None
    assert cache.get(b"09") is not None
    cache.put(b"big", one_message("x" * 1000))  # costs more than the whole cache
    assert cache.get(b"big") is None
