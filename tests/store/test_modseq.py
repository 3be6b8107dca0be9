"""CONDSTORE mod-sequences (RFC 7162) in a folder's index: every change gets a higher
one, they survive a restart, UNCHANGEDSINCE is tested under the lock, and an index
written before MODSEQs were kept still reads."""

from __future__ import annotations

from mailtalk.store import UserMailboxes
from mailtalk.store import uidlist as index_module
from mailtalk.store.index import INDEX_NAME
from tests.store.mailboxes import deliver, index_text, reopened


def test_every_change_raises_highestmodseq_and_it_survives_a_restart(
    alice: UserMailboxes,
) -> None:
    deliver(alice)
    deliver(alice)
    inbox = alice.open("INBOX")
    first, second = inbox.messages()
    assert first.modseq < second.modseq == inbox.highestmodseq
    before = inbox.highestmodseq
    inbox.set_flags([first.uid], ["\\Flagged"], "add")
    assert inbox.message(first.uid).modseq == before + 1
    # A change to nothing is no change: no new MODSEQ.
    inbox.set_flags([first.uid], ["\\Flagged"], "add")
    assert inbox.message(first.uid).modseq == before + 1
    inbox.set_flags([second.uid], ["\\Deleted"], "add")
    inbox.expunge()
    again = reopened(alice).open("INBOX")
    (kept,) = again.messages()
    assert kept.modseq == before + 1
    assert again.highestmodseq == before + 3  # the flag changes and the expunge
    assert f" M{before + 3}\n" in index_text(alice.path).splitlines(keepends=True)[0]


def test_unchanged_since_leaves_a_newer_message_alone(alice: UserMailboxes) -> None:
    deliver(alice)
    deliver(alice)
    mine = alice.open("INBOX")
    other = reopened(alice).open("INBOX")
    first, second = mine.messages()
    seen_at = mine.highestmodseq
    other.set_flags([second.uid], ["$Important"], "add")  # another session got there first
    modified: list[int] = []
    changed = mine.set_flags([first.uid, second.uid], ["\\Seen"], "add",
                             unchanged_since=seen_at, modified=modified)
    assert modified == [second.uid]
    assert list(changed) == [first.uid]
    mine.refresh()
    assert "\\Seen" not in mine.message(second.uid).flags


def test_an_index_without_modseqs_reads_as_modseq_one(alice: UserMailboxes) -> None:
    deliver(alice)
    inbox = alice.open("INBOX")
    (message,) = inbox.messages()
    path = alice.path / INDEX_NAME
    path.write_text(
        f"mailtalk-uidlist 1 V{inbox.uidvalidity} N2 R2\n1 S10 W12 T100 :{message.base}\n"
    )
    again = reopened(alice).open("INBOX")
    assert [m.modseq for m in again.messages()] == [1]
    assert again.highestmodseq == 1
    again.set_flags([1], ["\\Seen"], "add")
    assert again.message(1).modseq == 2


def test_modseq_lines_parse_fast_and_slow_alike_and_none_beyond_the_highest() -> None:
    text = (
        "mailtalk-uidlist 1 V7 N4 R4 M9\n"
        "1 S10 W12 T100 M3 :a\n"
        "2 S10 W12 T100 M9 Kx :b\n"
        "3 M5 S10 W12 T100 U :c\n"
    )
    index = index_module._parse_index_text(text)
    assert index.highestmodseq == 9
    assert [r.modseq for r in index.records()] == [3, 9, 5]
    assert index_module._parse_index_text(index_module._format_index(index)) == index
    for bad in ("1 S1 W1 T1 M10 :a\n", "1 S1 W1 T1 M10 Kx :a\n", "1 S1 W1 T1 M0 :a\n",
                "1 S1 W1 T1 M1 M2 :a\n"):
        try:
            index_module._parse_index_text("mailtalk-uidlist 1 V7 N4 R4 M9\n" + bad)
        except ValueError:
            continue
        raise AssertionError(f"accepted {bad!r}")
