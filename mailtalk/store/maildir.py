"""Maildir delivery that survives a crash at any moment.

A message is streamed into a file under a ``tmp/`` directory, made durable with
``fsync``, and only then given a name in ``new/`` by ``rename`` (atomic), after
which ``new/`` itself is fsynced so the new name survives a power cut. Readers
therefore never see a partial message in ``new/``, and a message whose
:meth:`Delivery.commit` returned is on disk. Names follow
https://cr.yp.to/proto/maildir.html (``<sec>.M<usec>P<pid>Q<n>.<host>``).

:class:`Delivery` writes one message to any number of :class:`DeliveryTarget`
objects — Maildirs (one per local recipient) and the relay queue
(:mod:`mailtalk.store.queue`) — streaming the bytes to disk once and hard-linking
(or, across filesystems, copying) them to every other target. The filesystem
steps are :mod:`mailtalk.store.filesystem`'s; a disk failure is raised as
:class:`~mailtalk.store.errors.StoreError`.

A commit is two steps, :meth:`Delivery.sync_staged` (the data) and
:func:`publish_synced` (the names), so that a server committing many deliveries at
once syncs each ``new/`` once for all of them (:mod:`mailtalk.store.commits`).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from enum import Enum
from pathlib import Path
from typing import Protocol

from mailtalk.store.errors import MailboxError, StoreError, StoreFullError, store_error
from mailtalk.store.filesystem import (
    MESSAGE_MODE,
    files_in,
    fsync_directory_shared,
    link_or_copy,
    make_private_directories,
    remove_older_than,
    remove_quietly,
    write_all,
)
from mailtalk.store.sizes import RFC822SizeCounter, size_suffix

__all__ = [
    "STALE_TMP_SECONDS",
    "WRITE_BUFFER_SIZE",
    "CRLFToLF",
    "Delivery",
    "DeliveryStateError",
    "DeliveryTarget",
    "Maildir",
    "NamedBatch",
    "StoreError",
    "StoreFullError",
    "escape_hostname",
    "name_synced",
    "publish_synced",
    "sync_names",
    "unique_name",
]

# Small SMTP lines are gathered up to this size before a write(2); a bigger
# chunk goes straight to the file. This bounds the memory one delivery holds.
WRITE_BUFFER_SIZE = 64 * 1024

# The Maildir spec: a tmp/ file untouched for 36 hours is a leftover.
STALE_TMP_SECONDS = 36 * 3600.0


class DeliveryStateError(RuntimeError):
    """A :class:`Delivery` was used out of order: written or committed after commit or abort.

    A programming error in the caller, not a disk problem, hence not a StoreError.
    """


# -- unique names --------------------------------------------------------------

_delivery_counter = itertools.count(1)
_delivery_counter_lock = threading.Lock()


@functools.cache
def _default_hostname() -> str:
    return socket.gethostname()


def escape_hostname(hostname: str) -> str:
    r"""``hostname`` made safe for a Maildir name: "/" -> "\057", ":" -> "\072".

    "/" would make a path and ":" starts the ``:2,`` flags part of a name in cur/.
    """
    return hostname.replace("/", "\\057").replace(":", "\\072")


def unique_name(hostname: str | None = None) -> str:
    """A new Maildir name: ``<sec>.M<usec>P<pid>Q<n>.<host>``.

    ``n`` counts deliveries in this process, so many names in the same
    microsecond still differ; the pid separates processes on one host, and the
    host separates machines sharing the Maildir (NFS). ``hostname`` defaults to
    this machine's name.
    """
    with _delivery_counter_lock:
        sequence = next(_delivery_counter)
    seconds, microseconds = divmod(time.time_ns() // 1000, 1_000_000)
    host = _escaped_default_hostname() if hostname is None else escape_hostname(hostname)
    return f"{seconds}.M{microseconds}P{_pid[0]}Q{sequence}.{host}"


@functools.cache
def _escaped_default_hostname() -> str:
    return escape_hostname(_default_hostname())


# This process's id, for the names: a getpid() per name was a syscall per name.
_pid = [os.getpid()]
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _pid.__setitem__(0, os.getpid()))


# -- targets -------------------------------------------------------------------


class DeliveryTarget(Protocol):
    """Somewhere a :class:`Delivery` can put a message: a Maildir, the queue.

    ``tmp_dir`` is where the delivery places a complete, fsynced copy of the
    message; ``publish`` then makes that copy visible under ``name`` atomically
    and durably, and returns its final path. A target may also have
    ``rename_into_new`` (a Maildir): ``publish`` but for the fsync of the directory,
    which the delivery then does once for all the names given in it.
    """

    @property
    def tmp_dir(self) -> Path: ...

    def publish(self, tmp_path: Path, name: str) -> Path: ...


class Maildir:
    """One Maildir folder: ``path/{tmp,new,cur}``.

    A user's inbox lives at ``ROOT/mail/USER/Maildir``; a Maildir++ folder such
    as ``Maildir/.Sent`` is a Maildir too, so ``Maildir(inbox.path / ".Sent")``
    will serve when IMAP needs folders.
    """

    # Names of delivered files carry Dovecot's ``,S=<size>,W=<rfc822 size>``, so a
    # reader indexing the folder needs no read of the file for its sizes.
    sizes_in_names = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"Maildir({str(self.path)!r})"

    # Each made once: a server delivering to the same Maildir asks for them per message.
    @functools.cached_property
    def tmp_dir(self) -> Path:
        return self.path / "tmp"

    @functools.cached_property
    def new_dir(self) -> Path:
        return self.path / "new"

    @functools.cached_property
    def cur_dir(self) -> Path:
        return self.path / "cur"

    def create(self) -> None:
        """Make ``tmp``, ``new`` and ``cur`` (mode 0700); nothing happens if they exist."""
        make_private_directories(self.path, ["tmp", "new", "cur"])

    def new_messages(self) -> list[Path]:
        """Messages not yet seen by a mail reader, oldest name first."""
        return files_in(self.new_dir)

    def cur_messages(self) -> list[Path]:
        """Messages a mail reader has seen (moved to cur/), oldest name first."""
        return files_in(self.cur_dir)

    def publish(self, tmp_path: Path, name: str) -> Path:
        """Move the complete message ``tmp_path`` to ``new/name``, durably."""
        final_path = self.rename_into_new(tmp_path, name)
        # Concurrent deliveries to this folder share one fsync of new/ (group
        # commit); each returns only once an fsync begun after its rename is done.
        fsync_directory_shared(self.new_dir)
        return final_path

    def rename_into_new(self, tmp_path: Path, name: str) -> Path:
        """:meth:`publish` but for the fsync of ``new/``, which the caller owes: a batch
        of deliveries (:func:`publish_synced`) syncs it once for all of them."""
        final_path = self.new_dir / name
        os.rename(tmp_path, final_path)
        return final_path

    def remove_stale_tmp(self, older_than: float = STALE_TMP_SECONDS) -> list[Path]:
        """Remove tmp/ files left by deliveries that crashed; returns what was removed.

        The default is the Maildir spec's 36 hours: a delivery in progress keeps
        touching its file, so it is never that old.
        """
        return remove_older_than(self.tmp_dir, older_than)


# -- delivery ------------------------------------------------------------------


_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def _create_target(target: DeliveryTarget) -> None:
    """Make a target's folders (a Maildir's tmp/new/cur, the queue's directories)."""
    create = getattr(target, "create", None)
    if create is not None:
        create()


class _State(Enum):
    OPEN = "open"
    SYNCED = "synced"  # by sync_staged(): only publishing or aborting may follow
    COMMITTED = "committed"
    ABORTED = "aborted"  # by abort(), or after a failed write or commit


class Delivery:
    """Streams one message to one or more targets; nothing is visible until :meth:`commit`.

    The bytes go to a file in the first target's ``tmp/`` (created O_EXCL, mode
    0600) as they are written; at most :data:`WRITE_BUFFER_SIZE` bytes, plus the
    chunk being written, are held in memory. ``hostname`` goes into the names.
    With ``create_missing``, a target whose folder is missing is made (its
    ``create()``) rather than failing the delivery: what a server wants, without
    the stat()s of a ``create()`` before every message.

    :meth:`commit` returns the final paths, one per target; only then may an
    SMTP server answer 250. Any disk error (from the constructor, :meth:`write`
    or :meth:`commit`) is raised as :class:`StoreError` / :class:`StoreFullError`
    after every temporary file is removed; the delivery is then over.

    Committing twice, or writing after commit or abort, raises
    :class:`DeliveryStateError`. :meth:`abort` is always allowed: it removes the
    temporary files, and does nothing after commit (the message is delivered) or
    a second time. As a context manager, a delivery not committed is aborted.

    If publishing fails part way (a rename or the queue's envelope, after every
    copy was placed), targets already published keep the message: the client's
    retry may then duplicate it for them, which Maildir accepts rather than
    losing mail. Not thread-safe: one delivery belongs to one SMTP session.
    """

    def __init__(
        self,
        targets: Sequence[DeliveryTarget],
        hostname: str | None = None,
        *,
        create_missing: bool = False,
    ) -> None:
        if not targets:
            raise ValueError("a delivery needs at least one target")
        self._targets = list(targets)
        self._hostname = hostname
        self._create_missing = create_missing
        self._state = _State.OPEN
        self._size = 0
        self._sizes = RFC822SizeCounter()  # for the ,S=/,W= of Maildir names
        self._buffer = bytearray()
        # Every temporary file of ours, to be removed on abort or failure.
        self._tmp_paths: list[Path] = []
        self._staging_path = self._targets[0].tmp_dir / unique_name(hostname)
        self._fd = -1
        try:
            try:
                self._fd = os.open(self._staging_path, _CREATE_FLAGS, MESSAGE_MODE)
            except FileNotFoundError:
                if not create_missing:
                    raise
                # A folder not made yet (or removed): make it, then once more.
                # Trying first saves a busy server the stat()s of a create() per message.
                _create_target(self._targets[0])
                self._fd = os.open(self._staging_path, _CREATE_FLAGS, MESSAGE_MODE)
        except OSError as error:
            self._state = _State.ABORTED
            raise store_error(error, "creating the message file", self._staging_path) from error
        self._tmp_paths.append(self._staging_path)

    @property
    def size(self) -> int:
        """Bytes written so far."""
        return self._size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append ``data`` to the message."""
        self._require_open("write to")
        self._size += len(data)
        # a memoryview has no count(): the size counter reads bytes
        self._sizes.feed(data.tobytes() if isinstance(data, memoryview) else data)
        try:
            if len(self._buffer) + len(data) < WRITE_BUFFER_SIZE:
                self._buffer += data
                return
            self._flush_buffer()
            if len(data) >= WRITE_BUFFER_SIZE:
                write_all(self._fd, data)
            else:
                self._buffer += data
        except OSError as error:
            self._discard()
            raise store_error(error, "writing the message", self._staging_path) from error

    def commit(self) -> list[Path]:
        """Make the message durable in every target; returns its final paths, in target order."""
        self.sync_staged()
        (outcome,) = publish_synced([self])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    # A commit in two steps, so that a server can share the second among deliveries
    # (publish_synced: each directory synced once for all the names given in it).

    def start_writing_out(self) -> None:
        """Write what is buffered and ask the kernel to start writing the file to disk
        now: a hint (``posix_fadvise`` DONTNEED starts the writeback on Linux, as
        PostgreSQL uses it), so that the fsyncs of many deliveries done one after the
        other overlap their writes. The promise stays :meth:`sync_staged`'s fsync.
        A :class:`StoreError` ends the delivery."""
        self._require_open("write out")
        try:
            self._flush_buffer()
        except OSError as error:
            self._discard()
            raise store_error(error, "writing the message", self._staging_path) from error
        with contextlib.suppress(OSError, AttributeError):  # only a hint, where there is one
            os.posix_fadvise(self._fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def sync_staged(self) -> None:
        """The first step of :meth:`commit`: the message written out and fsynced in the
        first target's ``tmp/`` (a :class:`StoreError` ends the delivery). Only
        :func:`publish_synced` (or :meth:`abort`) may follow."""
        self._require_open("commit")
        step = "writing the message"
        try:
            self._flush_buffer()
            step = "syncing the message to disk"
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        except OSError as error:
            self._discard()
            raise store_error(error, step, self._staging_path) from error
        except BaseException:
            self._discard()
            raise
        self._state = _State.SYNCED

    def _publish_unsynced(self, directories: dict[str, Path]) -> list[Path]:
        """Give the synced message its names in every target; the directories whose fsync
        makes a name durable are added to ``directories`` (the caller syncs them)."""
        step, where = "copying the message", self._staging_path
        try:
            # First place a complete copy in every target's tmp/ — the step that
            # needs disk space — so that running out of it publishes nothing.
            placed = []
            # An unterminated message gets no sizes in its name: readers trusting
            # them take the message as ending with a line end (POP3's size).
            sizes = self._sizes
            suffix = "" if sizes.unterminated else size_suffix(sizes.size, sizes.rfc822_size)
            for number, target in enumerate(self._targets):
                name = unique_name(self._hostname)
                if suffix and getattr(target, "sizes_in_names", False):
                    name += suffix
                if number == 0:
                    # The staging file is in this target's tmp/: it is the copy
                    # (no link to make now and no name to unlink afterwards).
                    placed.append((target, self._staging_path, name))
                    continue
                where = target.tmp_dir / name
                self._place_copy(target, where)
                placed.append((target, where, name))
            final_paths = []
            step = "publishing the message"
            for target, tmp_path, name in placed:
                where = tmp_path
                rename = getattr(target, "rename_into_new", None)
                if rename is None:
                    final_paths.append(target.publish(tmp_path, name))
                else:  # a Maildir: its new/ is synced once for the whole batch
                    final_path = rename(tmp_path, name)
                    directories[os.fspath(final_path.parent)] = final_path.parent
                    final_paths.append(final_path)
                self._tmp_paths.remove(tmp_path)
        except OSError as error:
            self._discard()
            raise store_error(error, step, where) from error
        except BaseException:
            self._discard()
            raise
        return final_paths

    def _committed(self) -> None:
        self._state = _State.COMMITTED
        self._tmp_paths.clear()

    def commit_each(
        self, admit: Callable[[int, int], contextlib.AbstractContextManager[None]]
    ) -> list[Path | StoreError | MailboxError]:
        """Make the message durable in each target on its own (LMTP, RFC 2033: a reply per
        recipient): one target refused or failing leaves the others delivered.

        ``admit(index, size)`` is entered around placing and publishing target ``index``'s
        copy; it may raise :class:`MailboxError` (OVERQUOTA) to refuse that target, and may
        hold a lock meanwhile (a quota reservation). Returns, in target order, each final
        path or the error that kept the message out. A failure before any target (writing
        or syncing the staged message) is raised, as by :meth:`commit`.
        """
        self._require_open("commit")
        try:
            self._flush_buffer()
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
        except OSError as error:
            self._discard()
            raise store_error(error, "syncing the message to disk", self._staging_path) from error
        outcomes: list[Path | StoreError | MailboxError] = []
        sizes = self._sizes
        suffix = "" if sizes.unterminated else size_suffix(sizes.size, sizes.rfc822_size)
        try:
            # The staging file stays until every target had its turn (the first may be
            # refused): each target gets a link of its own.
            for index, target in enumerate(self._targets):
                name = unique_name(self._hostname)
                if suffix and getattr(target, "sizes_in_names", False):
                    name += suffix
                tmp_path = target.tmp_dir / name
                try:
                    with admit(index, self._size):
                        self._place_copy(target, tmp_path)
                        outcomes.append(target.publish(tmp_path, name))
                except MailboxError as refused:
                    outcomes.append(refused)
                except OSError as error:
                    outcomes.append(store_error(error, "delivering the message", tmp_path))
                if tmp_path in self._tmp_paths:
                    self._tmp_paths.remove(tmp_path)
                    if not isinstance(outcomes[-1], Path):
                        remove_quietly(tmp_path)
        except BaseException:
            self._discard()
            raise
        self._state = _State.COMMITTED
        remove_quietly(self._staging_path)
        self._tmp_paths.clear()
        return outcomes

    def abort(self) -> None:
        """Throw the message away: remove the temporary files. Idempotent; no-op after commit."""
        if self._state is _State.OPEN or self._state is _State.SYNCED:
            self._discard()

    def __enter__(self) -> Delivery:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()

    def _require_open(self, doing: str) -> None:
        self._require_state(_State.OPEN, doing)

    def _require_state(self, state: _State, doing: str) -> None:
        if self._state is not state:
            raise DeliveryStateError(f"cannot {doing} a delivery that was {self._state.value}")

    def _flush_buffer(self) -> None:
        if self._buffer:
            write_all(self._fd, self._buffer)
            self._buffer.clear()

    def _place_copy(self, target: DeliveryTarget, tmp_path: Path) -> None:
        """Put the (fsynced) staging file's content at ``tmp_path``: a hard link, else a copy."""
        try:
            link_or_copy(self._staging_path, tmp_path)
        except FileNotFoundError:
            if not self._create_missing or not self._staging_path.exists():
                raise
            _create_target(target)  # the target's folder is missing: make it, once
            link_or_copy(self._staging_path, tmp_path)
        self._tmp_paths.append(tmp_path)

    def _discard(self) -> None:
        self._state = _State.ABORTED
        self._buffer = bytearray()
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        for path in self._tmp_paths:
            remove_quietly(path)
        self._tmp_paths.clear()


# -- committing many at once ----------------------------------------------------


def publish_synced(deliveries: Sequence[Delivery]) -> list[list[Path] | StoreError]:
    """The rest of :meth:`Delivery.commit` for deliveries whose data is synced
    (:meth:`Delivery.sync_staged`), the fsyncs of the directories shared: each message is
    named in its targets, then each ``new/`` that got a name is synced once. Returns, in
    order, each delivery's final paths or the :class:`StoreError` that ended it (a
    failure stays with its delivery; a failed fsync of ``new/`` fails every delivery it
    was to make durable, and their names are not promised to survive a power cut).
    """
    return sync_names(name_synced(deliveries))


class NamedBatch:
    """Deliveries named in their targets (:func:`name_synced`) whose directories are not
    synced yet (:func:`sync_names`): nobody may hear of them as delivered before that."""

    __slots__ = ("deliveries", "directories_of", "outcomes")

    def __init__(self, deliveries: Sequence[Delivery]) -> None:
        self.deliveries = list(deliveries)
        self.outcomes: list[list[Path] | StoreError] = []
        # index of a named delivery -> the directories that hold its names
        self.directories_of: dict[int, dict[str, Path]] = {}

    def extend(self, other: NamedBatch) -> None:
        """Take ``other``'s deliveries in too, so that one sync of each directory serves
        both (a name given before a directory's fsync begins is covered by it)."""
        offset = len(self.deliveries)
        self.deliveries += other.deliveries
        self.outcomes += other.outcomes
        for index, directories in other.directories_of.items():
            self.directories_of[offset + index] = directories


def name_synced(deliveries: Sequence[Delivery]) -> NamedBatch:
    """The first half of :func:`publish_synced`: each synced delivery named in its
    targets (renamed into ``new/``); :func:`sync_names` must follow before anybody hears
    of them. A delivery that fails here has its :class:`StoreError` as its outcome."""
    for delivery in deliveries:
        delivery._require_state(_State.SYNCED, "publish")
    named = NamedBatch(deliveries)
    try:
        for index, delivery in enumerate(deliveries):
            directories: dict[str, Path] = {}
            try:
                named.outcomes.append(delivery._publish_unsynced(directories))
            except StoreError as error:
                named.outcomes.append(error)
                continue
            named.directories_of[index] = directories
    except BaseException:
        for delivery in deliveries:
            delivery.abort()  # those not committed: their files in tmp/ go
        raise
    return named


def sync_names(named: NamedBatch) -> list[list[Path] | StoreError]:
    """The second half of :func:`publish_synced`: each directory that got a name synced
    once; returns each delivery's final paths or its :class:`StoreError`."""
    try:
        return _sync_names(named)
    except BaseException:
        for delivery in named.deliveries:
            delivery.abort()  # those not committed: their files in tmp/ go
        raise


def _sync_names(named: NamedBatch) -> list[list[Path] | StoreError]:
    outcomes, directories_of = named.outcomes, named.directories_of
    failed: dict[str, OSError] = {}
    for key, directory in {k: d for ds in directories_of.values() for k, d in ds.items()}.items():
        try:
            fsync_directory_shared(directory)
        except OSError as error:
            failed[key] = error
    for index, directories in directories_of.items():
        delivery = named.deliveries[index]
        failure = next((key for key in directories if key in failed), None)
        if failure is None:
            delivery._committed()
            continue
        # Named, but maybe not durably: the client must not be told it is delivered.
        delivery._discard()
        cause = failed[failure]
        problem = store_error(cause, "publishing the message", directories[failure])
        problem.__cause__ = cause
        outcomes[index] = problem
    return outcomes


# -- line endings --------------------------------------------------------------


class CRLFToLF:
    r"""Streaming CRLF -> LF: ``feed()`` chunks, then ``finish()``.

    Maildir files conventionally end lines with LF while SMTP sends CRLF; the
    server decides whether to convert. A CR at the end of a chunk is held back
    until the next chunk shows whether an LF follows; a CR not followed by LF
    is kept, as one-shot ``data.replace(b"\r\n", b"\n")`` would.
    """

    def __init__(self) -> None:
        self._held_cr = False

    def feed(self, chunk: bytes) -> bytes:
        data = b"\r" + chunk if self._held_cr else chunk
        self._held_cr = data.endswith(b"\r")
        if self._held_cr:
            data = data[:-1]
        return data.replace(b"\r\n", b"\n")

    def finish(self) -> bytes:
        """What is still held: a final CR, if the text ended with one."""
        held, self._held_cr = self._held_cr, False
        return b"\r" if held else b""
