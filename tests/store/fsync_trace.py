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
        real_fsync, real_rename = os.fsync, os.rename

        def fsync(fd: int) -> None:
            path = os.readlink(f"/proc/self/fd/{fd}")
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
