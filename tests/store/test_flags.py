"""IMAP flags and the Maildir info letters that carry them in a file's name."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.store import MailStore, flags_to_info, info_to_flags, normalize_flags
from tests.store.mailboxes import deliver, reopened

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
