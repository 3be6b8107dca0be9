"""Whether anything in ROOT/control/ changed, for one read() instead of a stat() a file.

qmail's lesson (every connection sees the control files as they are) cost a stat() of
each of nine files a connection: 35-40 µs on this project's VMs, a tenth of the CPU of
a whole SMTP session. On Linux an inotify watch on the directory says the same for one
non-blocking read(): the kernel queues an event in the same write(), rename() or
chmod() that changes a file, so one made before a client connects is there when its
connection is accepted. Any event (or a full queue) sends the caller back to its
stat()s, which decide what changed; no event means nothing did.

The watch cannot see a change made through another name for the file: the target of a
symbolic link, another hard link, another machine over NFS. ``open`` refuses to watch
a directory holding such files (and the caller asks again after the next event), so
those keep the stat()s. Python has no inotify of its own, hence ctypes, imported only
here; where libc has no inotify (not Linux) there is no watch.
"""

from __future__ import annotations

import errno
import logging
import os
import select
import stat
import struct
from collections.abc import Iterable
from typing import Any, Final

log = logging.getLogger("mailtalk.serve")

# <sys/inotify.h>: what changes a file's name, contents or attributes in the directory,
# and the end of the watch itself (the directory removed, renamed or unmounted).
IN_MODIFY: Final = 0x002
IN_ATTRIB: Final = 0x004
IN_CLOSE_WRITE: Final = 0x008
IN_MOVED_FROM: Final = 0x040
IN_MOVED_TO: Final = 0x080
IN_CREATE: Final = 0x100
IN_DELETE: Final = 0x200
IN_DELETE_SELF: Final = 0x400
IN_MOVE_SELF: Final = 0x800
WATCHED: Final = (IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO
                  | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF)  # fmt: skip
# Events that end the watch: the directory went (IN_IGNORED follows them all).
IN_UNMOUNT: Final = 0x2000
IN_IGNORED: Final = 0x8000
ENDED: Final = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED
# struct inotify_event: int wd; uint32_t mask, cookie, len; then len bytes of name.
_EVENT: Final = struct.Struct("iIII")

_libc: Any = None  # ctypes' view of libc, once loaded; False where it has no inotify


def _inotify() -> Any:
    global _libc
    if _libc is None:
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.inotify_init1, libc.inotify_add_watch  # noqa: B018  # AttributeError if absent
            _libc = libc
        except (ImportError, OSError, AttributeError):
            _libc = False
    return _libc


class DirectoryWatch:
    """An inotify watch on one directory: ``quiet()`` says nothing changed in it since
    the last call (or since ``open``)."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        # Asked before each read: a read of a quiet watch raises BlockingIOError, and
        # making that exception (its strerror too) was 4/5 of a quiet() (every connection).
        self._readable = select.poll()
        self._readable.register(fd, select.POLLIN)

    @classmethod
    def open(cls, directory: str, paths: Iterable[str]) -> DirectoryWatch | None:
        """A watch on ``directory``, or None if there can be none: no inotify, no
        directory, no descriptor or watch left, or one of ``paths`` (the files that
        matter in it) is a symbolic link or has another hard link."""
        libc = _inotify()
        if not libc:
            return None
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd < 0:
            return None
        watch = cls(fd)
        watched = libc.inotify_add_watch(fd, os.fsencode(directory), WATCHED) >= 0
        if not watched or not plain_files(paths):
            watch.close()
            return None
        return watch

    def quiet(self) -> bool:
        """True if no event came since the last call; False (events read and dropped)
        if any did. A watch that ended (the directory went) stays not quiet."""
        if self._fd < 0:
            return False
        if not self._readable.poll(0):
            return True
        try:
            events = os.read(self._fd, 4096)
        except BlockingIOError:
            return True
        except OSError as error:
            if error.errno != errno.EINTR:
                log.info("control/ watch failed (%s): back to a stat() a file", error)
                self.close()
            return False
        while events:  # read them all, so that the next call starts clean
            if _ended(events):
                self.close()  # control/ went: no more events will come for it
                return False
            try:
                events = os.read(self._fd, 4096)
            except OSError:
                break
        return False

    def __del__(self) -> None:  # a context dropped without close() (tests, lessons)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @property
    def closed(self) -> bool:
        return self._fd < 0


def _ended(events: bytes) -> bool:
    """Whether the inotify events read say the watch ended."""
    offset = 0
    while offset + _EVENT.size <= len(events):
        _, mask, _, length = _EVENT.unpack_from(events, offset)
        if mask & ENDED:
            return True
        offset += _EVENT.size + length
    return False


def plain_files(paths: Iterable[str]) -> bool:
    """No file in ``paths`` is a symbolic link or has another hard link (an edit through
    another name would not show in its directory's watch); missing files are fine."""
    for path in paths:
        try:
            found = os.lstat(path)
        except FileNotFoundError:
            continue
        except OSError:
            return False
        if stat.S_ISLNK(found.st_mode) or found.st_nlink > 1:
            return False
    return True
