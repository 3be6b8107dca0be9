"""A cold index of delivered mail reads and stats none of its files: the sizes come from
the names (Dovecot's ``,S=``/``,W=``), the INTERNALDATE from a file's mtime, read only
when it is asked for (as Dovecot reads its received date), and never from the name."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from mailtalk.store import UserMailboxes
from mailtalk.store import uidlist as uidlist_module
from mailtalk.store.index import DATE_NOT_READ
from mailtalk.store.sizes import sizes_from_name
from tests.store.mailboxes import deliver, index_text, reopened

DATES = [datetime(2020, 1, day, 12, 0, tzinfo=UTC) for day in (9, 3, 6)]


def message_file_calls(monkeypatch: pytest.MonkeyPatch, folder: Path) -> list[str]:
    """Every os.stat and os.open of a file in ``folder``'s new/ or cur/ from now on
    (directories and the index's own files are not counted)."""
    calls: list[str] = []
    prefixes = (f"{folder}/new/", f"{folder}/cur/")

    def counting(real: Callable[..., Any], name: str) -> Callable[..., Any]:
        def call(path: Any, *args: Any, **kwargs: Any) -> Any:
            text = os.fsdecode(path) if isinstance(path, str | bytes | os.PathLike) else ""
            if kwargs.get("dir_fd") is not None or text.startswith(prefixes):
                calls.append(f"{name} {text}")
            return real(path, *args, **kwargs)

        return call

    monkeypatch.setattr(os, "stat", counting(os.stat, "stat"))
    monkeypatch.setattr(os, "open", counting(os.open, "open"))
    return calls


def delivered_with_dates(alice: UserMailboxes) -> list[Path]:
    """Three delivered messages whose mtimes (their INTERNALDATEs) are DATES, in another
    order than their delivery; no index yet."""
    paths = [deliver(alice, b"Subject: %d\n\nbody\n" % n) for n in range(3)]
    for path, when in zip(paths, DATES, strict=True):
        os.utime(path, (when.timestamp(), when.timestamp()))
    (alice.path / "mailtalk-uidlist").unlink(missing_ok=True)
    uidlist_module._INDEX_CACHE.clear()
    return paths


def test_a_cold_index_of_delivered_mail_touches_no_message_file(
    alice: UserMailboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivered_with_dates(alice)
    calls = message_file_calls(monkeypatch, alice.path)
    inbox = reopened(alice).open("INBOX")  # read-write: new/ moved to cur/ (renames only)
    assert [m.size for m in inbox.messages()] == [17, 17, 17]
    assert calls == []
    assert " T" not in index_text(alice.path)  # no date read: none in the index

    # INTERNALDATE is the file's mtime, read once, when first asked for.
    first = inbox.message(1)
    assert first.internaldate == DATES[0]
    assert len(calls) == 1 and calls[0].startswith("stat ")
    assert inbox.message(1).internaldate == DATES[0]
    assert len(calls) == 1  # kept by the session's view
    assert [m.internaldate for m in inbox.messages()] == DATES
    assert len(calls) == 3


def test_pop3_sizes_and_uidls_need_no_file(
    alice: UserMailboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivered_with_dates(alice)
    calls = message_file_calls(monkeypatch, alice.path)
    inbox = reopened(alice).open("INBOX")
    assert inbox.view.pop3_sizes().tolist() == [20, 20, 20]
    assert [m.uidl for m in inbox.messages()] == [m.base for m in inbox.messages()]
    assert calls == []


def test_the_date_is_the_files_not_the_names(alice: UserMailboxes) -> None:
    """An APPENDed message keeps its INTERNALDATE in the file's mtime while its name holds
    the time it was saved: rebuilt from the names, its date would be wrong for good."""
    inbox = alice.open("INBOX")
    when = datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)
    inbox.append(b"Subject: old\n\nfrom the archive\n", internaldate=when)
    (name,) = os.listdir(alice.path / "cur")
    assert int(name.partition(".")[0]) > when.timestamp() + 10**8  # the name says "now"
    (alice.path / "mailtalk-uidlist").unlink()
    uidlist_module._INDEX_CACHE.clear()
    assert reopened(alice).open("INBOX").message(1).internaldate == when


def test_a_date_read_is_kept_for_the_messages_the_session_changes(
    alice: UserMailboxes,
) -> None:
    delivered_with_dates(alice)
    inbox = reopened(alice).open("INBOX")
    assert inbox.message(2).internaldate == DATES[1]
    inbox.set_flags([2], ["\\Flagged"], "add")  # a new view, the same dates
    assert inbox.view.dates[1] == int(DATES[1].timestamp())
    assert inbox.message(2).internaldate == DATES[1]
    assert inbox.view.dates[0] == DATE_NOT_READ  # not asked for: still not read


def test_copy_reads_the_date_and_the_copy_keeps_it(alice: UserMailboxes) -> None:
    delivered_with_dates(alice)
    alice.create("Archive")
    inbox = reopened(alice).open("INBOX")
    assert inbox.copy([3, 1], "Archive") == [(1, 1), (3, 2)]
    archive = alice.open("Archive")
    assert [m.internaldate for m in archive.messages()] == [DATES[0], DATES[2]]
    # The copies' lines have their dates: they were read for the copy.
    assert index_text(alice.path / ".Archive").count(" T") == 2


def test_a_message_gone_before_its_date_is_read_gives_no_error(alice: UserMailboxes) -> None:
    paths = delivered_with_dates(alice)
    inbox = reopened(alice).open("INBOX", read_only=True)
    paths[0].unlink()
    assert inbox.message(1).internaldate_seconds == 0  # expunged meanwhile: nothing to say


def test_index_lines_with_and_without_dates_read_and_write_alike() -> None:
    text = (
        "mailtalk-uidlist 1 V7 N5 R5 M9\n"
        "1 S10 W12 M3 :a\n"
        "2 S10 W12 T100 M4 :b\n"
        "3 S10 W12 M5 Kx :c\n"
        "4 S10 W12 M6 U :d\n"
    )
    index = uidlist_module._parse_index_text(text)
    assert [(r.uid, r.internaldate, r.keywords, r.unterminated) for r in index.records()] == [
        (1, DATE_NOT_READ, frozenset(), False),
        (2, 100, frozenset(), False),
        (3, DATE_NOT_READ, frozenset({"x"}), False),
        (4, DATE_NOT_READ, frozenset(), True),
    ]
    assert uidlist_module._format_index(index) == text
    with pytest.raises(ValueError, match="missing"):
        uidlist_module._parse_index_text("mailtalk-uidlist 1 V7 N5 R5 M9\n1 S10 M3 :a\n")


def test_appended_and_copied_mail_is_named_with_its_sizes_too(
    alice: UserMailboxes, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = alice.open("INBOX")
    inbox.append(b"Subject: a\r\n\r\nline\r\n")  # stored with LF line ends
    inbox.append(b"Subject: b\r\n\r\nno line end")  # no sizes: readers take them as ended
    alice.create("Archive")
    inbox.refresh()
    inbox.copy([1, 2], "Archive")
    for folder in (alice.path, alice.path / ".Archive"):
        sized = {}
        for name in os.listdir(folder / "cur"):
            content = (folder / "cur" / name).read_bytes()
            sized[content] = sizes_from_name(name.partition(":")[0])
        assert sized == {b"Subject: a\n\nline\n": (17, 20), b"Subject: b\n\nno line end": None}
    (alice.path / ".Archive" / "mailtalk-uidlist").unlink()
    uidlist_module._INDEX_CACHE.clear()
    calls = message_file_calls(monkeypatch, alice.path / ".Archive")
    archive = reopened(alice).open("Archive")
    assert [(m.size, m.pop3_size) for m in archive.messages()] == [(17, 20), (23, 27)]
    assert len(calls) == 1  # the unterminated one, read for its sizes


def test_a_cold_index_from_the_names_leaves_out_links_and_directories(
    alice: UserMailboxes, tmp_path: Path
) -> None:
    """The rebuilt index made straight from the listing (every name delivered, with its
    sizes) still takes only plain files: a symlink would let the Maildir's owner read
    any file the server can, through IMAP."""
    paths = delivered_with_dates(alice)
    secret = tmp_path / "secret"
    secret.write_bytes(b"Subject: not yours\n\n")
    link_base = "1000000000.M1P1Q1.host,S=20,W=22"
    (alice.path / "cur" / (link_base + ":2,S")).symlink_to(secret)
    (alice.path / "new" / "1000000001.M1P1Q2.host,S=20,W=22").mkdir()
    inbox = reopened(alice).open("INBOX", save_rebuilt_later=True)
    inbox.save_deferred()
    assert [m.base for m in inbox.messages()] == [path.name for path in paths]
    assert link_base not in index_text(alice.path)
    # The session goes on as with any index: a flag change renames the right file.
    inbox.set_flags([2], ["\\Flagged"], "add")
    assert sorted(os.listdir(alice.path / "cur"))[2] == paths[1].name + ":2,F"
