"""The filesystem steps the store is built on, each done the durable way once.

A file is durable when its data was fsynced *before* it got its final name, and a
name (created, renamed or removed) is durable when its directory was fsynced
after. :func:`replace_file` does both for small files written whole (the mailbox
index, subscriptions, queue envelopes); :mod:`mailtalk.store.maildir` streams
messages the same way. :func:`link_or_copy` gives a file a second name, or a
copy where the filesystem cannot. Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

# Maildir folders are private to their user (Dovecot and qmail use the same).
DIRECTORY_MODE = 0o700
MESSAGE_MODE = 0o600

# What one read(2) asks for when a whole file is read or copied.
READ_CHUNK_SIZE = 1024 * 1024

# link(2) fails with these when the two paths cannot share an inode: another
# filesystem (EXDEV), a filesystem without hard links (EPERM on vfat/FUSE,
# EOPNOTSUPP), or an inode at its link limit (EMLINK). A copy still works.
CANNOT_HARD_LINK = frozenset({errno.EXDEV, errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK})


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` (names created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _SharedDirectorySync:
    """Group commit of one directory's fsync: the names renamed into it while an
    fsync of it is running are all made durable by the next one, a single fsync.

    Each caller takes a ticket *after* its rename. An fsync started once ticket
    ``n`` was taken covers rename ``n`` (fsync makes every entry the directory
    has when it runs durable), so a caller returns only when an fsync that began
    after its ticket has finished without error: the durability promise of one
    fsync per rename, at the cost of one fsync per batch. The batch is every
    rename that arrives while the previous fsync runs (the window is that fsync's
    own duration: no caller ever waits on a timer).
    """

    __slots__ = ("_condition", "_failures", "_running", "_synced", "_ticket", "users")

    def __init__(self) -> None:
        self._condition = threading.Condition(threading.Lock())
        self._ticket = 0  # the last ticket handed out
        self._synced = 0  # every ticket up to this one is durable
        self._running = False
        # (first ticket, last ticket, error) of fsyncs that failed: those callers
        # must get the error, not a later success that might not cover the lost data.
        self._failures: list[tuple[int, int, OSError]] = []
        self.users = 0  # callers inside sync() (the registry drops an idle group)

    def sync(self, path: Path) -> None:
        with self._condition:
            self._ticket += 1
            mine = self._ticket
            while True:
                for first, last, error in self._failures:
                    if first <= mine <= last:
                        raise OSError(error.errno, error.strerror, error.filename)
                if self._synced >= mine:
                    return
                if self._running:
                    self._condition.wait()
                    continue
                self._running = True
                first, last = self._synced + 1, self._ticket
                failure: OSError | None = None
                self._condition.release()
                try:
                    fsync_directory(path)
                except OSError as error:
                    failure = error
                finally:
                    self._condition.acquire()
                    self._running = False
                    self._condition.notify_all()
                if failure is not None:
                    self._failures.append((first, last, failure))
                # Tickets of a failed batch stay failed; later ones need a new fsync.
                self._synced = last


_shared_syncs: dict[str, _SharedDirectorySync] = {}
_shared_syncs_lock = threading.Lock()


def fsync_directory_shared(path: Path) -> None:
    """:func:`fsync_directory`, shared with the threads doing the same to ``path`` at
    the same time (group commit): call it after the rename it must make durable; it
    returns once an fsync begun after that call has completed, and raises if that
    fsync failed. Concurrent Maildir deliveries share one fsync of ``new/``.
    """
    key = os.fspath(path)
    with _shared_syncs_lock:
        group = _shared_syncs.get(key)
        if group is None:
            group = _shared_syncs[key] = _SharedDirectorySync()
        group.users += 1
    try:
        group.sync(path)
    finally:
        with _shared_syncs_lock:
            group.users -= 1
            if group.users == 0:
                del _shared_syncs[key]


def make_directory(path: Path, mode: int = DIRECTORY_MODE) -> bool:
    """Create ``path`` and its missing parents, each with ``mode`` whatever the umask;
    True if any was created.

    ``mkdir(mode=...)`` is filtered by the umask and ``parents=True`` gives the parents
    0777 minus the umask: under ``umask 000`` a new ``ROOT/mail/USER`` would be
    world-writable. Each directory made here is chmod'ed to ``mode`` (never more open
    before that than the umask allowed); existing ones keep their mode, which an
    administrator may have chosen.
    """
    missing = []
    current = path
    while not current.is_dir() and current.parent != current:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # made by someone else meanwhile: theirs
        os.chmod(directory, mode)
    return bool(missing)


def make_private_directories(path: Path, names: Sequence[str]) -> None:
    """Create ``path`` and its subdirectories ``names`` (mode 0700) if missing; durably.

    Existing directories keep their mode: an administrator may have chosen another.
    """
    created = False
    for directory in [path, *(path / name for name in names)]:
        if not directory.is_dir():
            created = make_directory(directory) or created
    if created:
        # A delivery fsyncs new/ but not the directories above it; do it once here.
        for directory in [path, path.parent]:
            fsync_directory(directory)


def write_all(fd: int, data: bytes | bytearray | memoryview) -> None:
    """write(2) all of ``data``: a regular file may still take it in parts."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def replace_file(
    path: Path, data: bytes | Iterable[bytes], tmp_path: Path, *, exclusive: bool = False
) -> None:
    """Put ``data`` at ``path`` atomically and durably: readers see the old file or the new.

    ``data`` (bytes, or chunks of them to write one after the other: a big file need
    not be in memory whole) goes to ``tmp_path`` (on the same filesystem; truncated if
    it exists, or refused if ``exclusive``), is fsynced, renamed over ``path``, and then
    ``path``'s directory is fsynced. If writing or renaming fails, ``tmp_path`` is
    removed; an error from the last fsync leaves the new file in place.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(tmp_path, flags, MESSAGE_MODE)
    try:
        try:
            for chunk in (data,) if isinstance(data, bytes | bytearray) else data:
                write_all(fd, chunk)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp_path, path)
    except BaseException:
        remove_quietly(tmp_path)
        raise
    fsync_directory(path.parent)


def link_or_copy(source: Path, destination: Path, mtime: float | None = None) -> bool:
    """Give ``source``'s file the new name ``destination``: a hard link, else a copy.

    Returns True for a link (the same inode: already as durable as ``source``),
    False for a copy (mode 0600, fsynced; its mtime is ``mtime`` if given, else
    now). ``destination`` must not exist. A failed copy is removed before the
    error is raised.
    """
    try:
        os.link(source, destination)
        return True
    except OSError as error:
        if error.errno not in CANNOT_HARD_LINK:
            raise
    out_fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, MESSAGE_MODE)
    try:
        try:
            with open(source, "rb", buffering=0) as reader:
                chunk = bytearray(READ_CHUNK_SIZE)
                while count := reader.readinto(chunk):
                    write_all(out_fd, memoryview(chunk)[:count])
            os.fsync(out_fd)
        finally:
            os.close(out_fd)
        if mtime is not None:
            os.utime(destination, (mtime, mtime))
    except BaseException:
        remove_quietly(destination)
        raise
    return False


def remove_quietly(path: Path) -> None:
    """Unlink ``path`` if it is there; cleanup must not hide the error being cleaned up after."""
    with contextlib.suppress(OSError):
        os.unlink(path)


def remove_older_than(directory: Path, older_than: float) -> list[Path]:
    """Remove the files in ``directory`` last modified more than ``older_than`` seconds ago."""
    return remove_files_older_than(files_in(directory), older_than)


def remove_files_older_than(paths: Sequence[Path], older_than: float) -> list[Path]:
    """Remove those of ``paths`` last modified more than ``older_than`` seconds ago."""
    cutoff = time.time() - older_than
    removed = []
    for path in paths:
        try:
            if path.stat().st_mtime <= cutoff:
                path.unlink()
                removed.append(path)
        except FileNotFoundError:
            pass  # another process removed or published it meanwhile
    return removed


def files_in(directory: Path) -> list[Path]:
    """The files in ``directory``, sorted by name (for Maildir names: oldest first).

    Names starting with "." are not messages (tools' temporaries, Maildir++ folders).
    """
    return sorted(
        Path(entry.path)
        for entry in os.scandir(directory)
        if not entry.name.startswith(".") and entry.is_file(follow_symlinks=False)
    )
