"""APPEND: streamed into tmp/, published into cur/ with flags, a date and a UID."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pytest

from mailtalk.store import MailboxError, UserMailboxes
from tests.store.mailboxes import MESSAGE


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


def test_append_of_an_unterminated_message_keeps_imap_sizes(alice: UserMailboxes) -> None:
    inbox = alice.open("INBOX")
    inbox.append(b"Subject: x\r\n\r\nno end", [], None)
    inbox.refresh()
    info = inbox.message(1)
    assert inbox.read_message(1) == b"Subject: x\n\nno end"
    assert (info.rfc822_size, info.unterminated, info.pop3_size) == (20, True, 22)
