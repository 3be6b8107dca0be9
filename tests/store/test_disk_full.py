"""A really full disk: deliveries into a 1 MiB tmpfs (needs root; skipped otherwise)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.store import Delivery, Maildir, StoreError, StoreFullError

CHUNK = b"0123456789abcdef" * 4096  # 64 KiB


@pytest.fixture
def tiny_filesystem(tmp_path: Path) -> Iterator[Path]:
    """A freshly mounted 1 MiB tmpfs."""
    mount_point = tmp_path / "tiny"
    mount_point.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a 1 MiB tmpfs needs root and mount(8)")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def make_maildir(path: Path) -> Maildir:
    maildir = Maildir(path)
    maildir.create()
    return maildir


def free_bytes(path: Path) -> int:
    status = os.statvfs(path)
    return status.f_bavail * status.f_frsize


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
