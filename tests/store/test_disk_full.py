"""A really full disk: deliveries and mailboxes in a 1 MiB tmpfs (needs root; skipped otherwise)."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.store import Delivery, Maildir, MailStore, StoreError, StoreFullError
from tests.tinyfs import fill, free_bytes, mounted_tmpfs

CHUNK = b"0123456789abcdef" * 4096  # 64 KiB


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A freshly mounted 1 MiB tmpfs."""
    with mounted_tmpfs(tmp_path / "tiny", "1m") as mount_point:
        yield mount_point


def make_maildir(path: Path) -> Maildir:
    maildir = Maildir(path)
    maildir.create()
    return maildir


def deliver(targets: list[Maildir], size: int) -> list[Path]:
    with Delivery(targets) as delivery:
        while delivery.size < size:
            delivery.write(CHUNK[: size - delivery.size])
        return delivery.commit()


def test_a_message_bigger_than_the_disk_is_store_full_and_frees_its_space(
    tiny_filesystem: Path,
) -> None:
    maildir = make_maildir(tiny_filesystem / "Maildir")
    free_before = free_bytes(tiny_filesystem)

    with pytest.raises(StoreFullError) as caught:
        deliver([maildir], 2 * 1024 * 1024)

    error = caught.value
    assert isinstance(error, StoreError) and isinstance(error, OSError)
    assert error.errno == errno.ENOSPC
    assert str(error).startswith("no space left on device while writing the message: ")
    assert "\n" not in str(error)
    assert list(maildir.tmp_dir.iterdir()) == []
    assert maildir.new_messages() == []
    assert free_bytes(tiny_filesystem) == free_before
    # The server answers 452 and goes on; a message that fits still gets in.
    (path,) = deliver([maildir], 100_000)
    assert path.stat().st_size == 100_000


def test_a_maildir_on_another_filesystem_gets_a_copy(tmp_path: Path, tiny_filesystem: Path) -> None:
    local = make_maildir(tmp_path / "local" / "Maildir")
    remote = make_maildir(tiny_filesystem / "Maildir")

    local_path, remote_path = deliver([local, remote], 300_000)

    assert remote_path.read_bytes() == local_path.read_bytes()
    assert remote_path.stat().st_dev != local_path.stat().st_dev
    assert remote_path.stat().st_mode & 0o777 == 0o600
    assert list(local.tmp_dir.iterdir()) == list(remote.tmp_dir.iterdir()) == []


def test_no_room_for_the_copy_on_another_filesystem_publishes_nowhere(
    tmp_path: Path, tiny_filesystem: Path
) -> None:
    # The message fits the first Maildir's disk but not the second's: nobody gets it,
    # so the client's retry after 452 duplicates nothing.
    local = make_maildir(tmp_path / "local" / "Maildir")
    remote = make_maildir(tiny_filesystem / "Maildir")

    with pytest.raises(StoreFullError, match="while copying the message"):
        deliver([local, remote], 2 * 1024 * 1024)

    assert local.new_messages() == remote.new_messages() == []
    assert list(local.tmp_dir.iterdir()) == list(remote.tmp_dir.iterdir()) == []


def test_a_full_disk_still_lets_a_user_read_and_delete(tiny_filesystem: Path) -> None:
    # Three messages delivered, never indexed; then not one byte is free. Opening the
    # folder must still work (the index cannot be saved, but the files say what it
    # would hold), and so must \Deleted and expunge, which make room.
    alice = MailStore(tiny_filesystem / "root").user_mailboxes("alice")
    inbox = make_maildir(alice.path)
    # Another folder was indexed once: the UIDVALIDITY file exists (and has room).
    (alice.path / "mailtalk-uidvalidity").write_text("1700000000\n")
    paths = [deliver([inbox], 200_000)[0] for _ in range(3)]
    contents = [path.read_bytes() for path in paths]
    fill(tiny_filesystem)

    session = alice.open("INBOX")
    assert [m.uid for m in session.messages()] == [1, 2, 3]
    assert not (alice.path / "mailtalk-uidlist").exists()
    again = alice.open("INBOX", read_only=True)
    assert [(m.uid, m.base) for m in again.messages()] == [
        (m.uid, m.base) for m in session.messages()
    ]
    assert again.uidvalidity == session.uidvalidity
    # A keyword lives only in the index: that change cannot be made, and says so.
    with pytest.raises(StoreFullError, match="writing the mailbox index"):
        session.set_flags([1], ["$Important"], "add")
    assert "$Important" not in session.message(1).flags
    session.set_flags([1], ["\\Deleted"], "add")
    assert session.expunge() == [1]
    assert free_bytes(tiny_filesystem) > 0

    # With room again, the index was written, with the UIDs the sessions were given.
    assert (alice.path / "mailtalk-uidlist").exists()
    later = alice.open("INBOX")
    assert [m.uid for m in later.messages()] == [2, 3]
    assert [later.read_message(uid) for uid in (2, 3)] == contents[1:]
    assert later.uidvalidity == session.uidvalidity
