"""A record of every fsync and rename a test's deliveries make, on one clock, with the
disk's speed and failures under the test's control (real files, real syscalls)."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest


class Trace:
    """Every fsync (what it synced, when it began and ended) and rename, on one clock.

    An fsync of a directory is slowed down by ``slow`` seconds, so that deliveries pile
    up behind it, and of a file by ``slow_files`` (a disk under load); ``fake_files``
    makes a file's fsync return at once without the syscall (a disk that keeps up).
    ``fail_directory`` fails the next fsync of a directory; ``fail_content`` fails the
    fsync of a file whose content starts with it.
    """

    def __init__(
        self,
        monkeypatch: pytest.MonkeyPatch,
        slow: float = 0.01,
        slow_files: float = 0.0,
        fake_files: bool = False,
    ) -> None:
        self.lock = threading.Lock()
        self.clock = 0
        self.fsyncs: list[tuple[str, int, int]] = []  # (path, began, ended)
        self.renames: dict[str, tuple[str, int]] = {}  # destination -> (source, when)
        self.fail_directory: OSError | None = None
        self.fail_content = b""
        self.named_later = 0  # files synced that were made without a name (spares)
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd: int) -> None:
            path = _name_of(fd)
            if os.readlink(f"/proc/self/fd/{fd}") != path:
                self.named_later += 1
            began = self.tick()
            directory = os.path.isdir(path)
            if directory:
                time.sleep(slow)
                with self.lock:
                    failure, self.fail_directory = self.fail_directory, None
                if failure is not None:
                    raise failure
            elif self.fail_content and Path(path).read_bytes().startswith(self.fail_content):
                raise OSError(errno.EIO, "Input/output error")
            else:
                time.sleep(slow_files)
            if directory or not fake_files:
                real_fsync(fd)
            with self.lock:
                self.fsyncs.append((path, began, self._tick_locked()))

        def rename(source: str | Path, destination: str | Path) -> None:
            real_rename(source, destination)
            self.renames[os.fspath(destination)] = (os.fspath(source), self.tick())

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(os, "rename", rename)

    def tick(self) -> int:
        with self.lock:
            return self._tick_locked()

    def _tick_locked(self) -> int:
        self.clock += 1
        return self.clock


def _name_of(fd: int) -> str:
    """The name of ``fd``'s file now. A file made without a name (O_TMPFILE, a server's
    spare) and linked into its folder afterwards still shows in /proc as its first,
    unnamed entry ("/dir/#123 (deleted)"): its name is then the entry of its folder
    with its inode, and it has none if it was not named before it was synced."""
    path = os.readlink(f"/proc/self/fd/{fd}")
    if not path.endswith(" (deleted)"):
        return path
    inode = os.fstat(fd).st_ino
    folder = os.path.dirname(path)
    names = [entry.path for entry in os.scandir(folder) if entry.inode() == inode]
    return names[0] if names else path

