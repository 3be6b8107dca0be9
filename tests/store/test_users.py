"""A user's mail: Maildir++ folders, subscriptions, quota, watchers, the maildrop lock."""

from __future__ import annotations

import threading

import pytest

from mailtalk.store import MailboxError, MailboxWatchers, MailStore, UserMailboxes
from tests.store.mailboxes import MESSAGE, deliver, reopened

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


# -- notifications -------------------------------------------------------------


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


# -- POP3's maildrop lock and user names ---------------------------------------


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


def test_user_names_cannot_escape_the_root(store: MailStore) -> None:
    for bad in ("", "..", "a/b"):
        with pytest.raises(ValueError):
            store.user_mailboxes(bad)


def test_special_use_is_kept_in_the_folder_through_rename_and_delete(
    store: MailStore, alice: UserMailboxes
) -> None:
    """RFC 6154 3: a folder made with a special use keeps it; RENAME carries it (it is
    the folder's, not the name's), children included; DELETE takes it away, and a new
    folder of the same name has none."""
    alice.create("Old.Mail", ("\\Archive",))
    alice.create("Old.Mail.2024", ("\\Archive", "\\Junk"))
    assert alice.special_use("Old") == ()  # the parent made on the way has none
    alice.rename("Old.Mail", "Kept")
    assert alice.special_use("Kept") == ("\\Archive",)
    assert alice.special_use("Kept.2024") == ("\\Archive", "\\Junk")
    reread = store.user_mailboxes("alice")  # as after a restart: read from disk
    assert reread.special_use("Kept") == ("\\Archive",)
    reread.delete("Kept")
    reread.create("Kept")
    assert reread.special_use("Kept") == ()
    assert "mailtalk-special-use" not in {p.name for p in alice.path.iterdir()}


def test_default_folders_get_their_uses_once(alice: UserMailboxes) -> None:
    uses = {"Sent": "\\Sent", "Trash": "\\Trash"}
    alice.create_default_folders(uses)
    assert [alice.special_use(n) for n in ("Sent", "Trash")] == [("\\Sent",), ("\\Trash",)]
    alice.rename("Sent", "Sent Items")
    alice.create_default_folders(uses)  # not again: the user renamed it
    assert not alice.exists("Sent") and alice.special_use("Sent Items") == ("\\Sent",)


def test_default_folders_made_before_uses_were_kept_get_them(alice: UserMailboxes) -> None:
    """A Maildir whose default folders were made when uses went by name (an empty
    marker): those still there get theirs; none is made again."""
    alice.create("Sent")
    alice.create("Old")
    (alice.path / "mailtalk-default-folders").touch()
    alice.create_default_folders({"Sent": "\\Sent", "Trash": "\\Trash"})
    assert alice.special_use("Sent") == ("\\Sent",)
    assert not alice.exists("Trash") and alice.special_use("Old") == ()
