"""The locks that keep sessions, processes and deliveries from tripping over each other.

All are ``flock`` locks on small files next to the mail, so they work between the
threads of one server, between processes, and between servers sharing a root::

    Maildir/mailtalk-user.lock      serialises folder changes, quota checks, subscriptions
    <folder>/mailtalk-uidlist.lock  guards the folder's index (one per folder, INBOX too)
    Maildir/mailtalk-uidvalidity    the last UIDVALIDITY handed out, locked while rewritten
    Maildir/mailtalk-maildrop.lock  POP3's maildrop lock

**The protocol.** Locks are taken in one order — user lock, then index locks,
then the UIDVALIDITY file — so they cannot deadlock. They block briefly (no
message data is written while one is held, except renames), which an asyncio
server may accept or push to a thread. A ``flock`` belongs to an open file
description, so a thread taking a lock it already holds would wait for itself
forever: :class:`FileLock` raises RuntimeError instead. The kernel releases every
lock of a process that dies, even by SIGKILL, so a crash leaves none behind.

**POP3's maildrop lock** (:class:`MaildropLock`) is the exception: it is held for
a whole POP3 session and taken at once or not at all (RFC 1939's exclusive
access), never waited for. Stdlib only.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from mailtalk.store.errors import MailboxError
from mailtalk.store.filesystem import MESSAGE_MODE

USER_LOCK_NAME = "mailtalk-user.lock"
INDEX_LOCK_NAME = "mailtalk-uidlist.lock"
MAILDROP_LOCK_NAME = "mailtalk-maildrop.lock"

# The paths each thread holds a FileLock on (see the module documentation).
_held_locks = threading.local()


class FileLock:
    """An exclusive ``flock`` on ``path`` (created if missing), blocking until granted.

    :meth:`acquire` and :meth:`release`, or a ``with`` block. A missing directory
    raises FileNotFoundError from :meth:`acquire`.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    def acquire(self) -> None:
        held: set[Path] = _held_locks.__dict__.setdefault("paths", set())
        if self.path in held:
            raise RuntimeError(f"lock already held by this thread: {self.path}")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, MESSAGE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        held.add(self.path)

    def release(self) -> None:
        _held_locks.paths.discard(self.path)
        # Closing the last descriptor of the open file description releases the lock.
        os.close(self._fd)
        self._fd = -1

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class MaildropLock:
    """POP3's exclusive access to a maildrop (RFC 1939): a ``flock`` held by an open descriptor.

    Taken at once or not at all: if another session — in this process or any
    other — holds it, MailboxError("INUSE") is raised immediately. It is released
    by :meth:`release` (or leaving the ``with`` block), and by the kernel when the
    holding process dies, even by SIGKILL, so a crashed server leaves no stale lock.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, MESSAGE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise MailboxError("INUSE", "the maildrop is in use by another session") from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Give the lock up; does nothing a second time."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    close = release

    def __enter__(self) -> MaildropLock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def __del__(self) -> None:
        # A session dropped without release() must not keep the maildrop until exit.
        if getattr(self, "_fd", -1) >= 0:
            self.release()
