"""What a session sees of a folder, and reads from it: :class:`MailboxReader`.

:class:`~mailtalk.store.mailbox.Mailbox` is a MailboxReader plus the changes a
session makes (flags, expunge, append, copy, move); this module holds its reading
side, what IMAP's EXAMINE and POP3's RETR need: the view kept by
:meth:`MailboxReader.refresh` and the :class:`Changes` it reports, the stamps that
tell whether the folder may have changed (:class:`ChangeToken`), and the messages'
bytes and header blocks (:class:`HeaderReader` for a FETCH's batch). Kept apart from
the changes so that each is one idea a reader can hold.

**\\Recent** is persistent: a read-write session (:meth:`UserMailboxes.open
<mailtalk.store.users.UserMailboxes.open>`) claims every UID >= R (the index's
first recent UID) when it refreshes and moves R to UIDNEXT, under the index
lock, so exactly one session sees each message as \\Recent — even across
processes and restarts, which per-process memory could not promise. Read-only
sessions see \\Recent without claiming it. Read-write sessions also move files
from new/ to cur/, as Maildir readers do. Stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from itertools import compress
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from mailtalk.store import headers
from mailtalk.store.errors import STORAGE_FULL_ERRNOS, MailboxError, ResponseCode
from mailtalk.store.flags import SEEN, split_filename
from mailtalk.store.index import INDEX_NAME, LockedIndex, locked_index
from mailtalk.store.maildir import Maildir
from mailtalk.store.vanished import read_log
from mailtalk.store.view import FolderView, MessageInfo, MessageList

if TYPE_CHECKING:
    from mailtalk.store.users import UserMailboxes

# A change made in the same filesystem timestamp tick as a ChangeToken leaves the
# mtimes equal; so a token taken within this long of the newest mtime is never
# trusted to prove "nothing changed" (ext4 and tmpfs ticks are a few ms).
_MTIME_SLACK_NS = 1_000_000_000



# -- what sessions see ---------------------------------------------------------


@dataclass(frozen=True)
class Changes:
    """What :meth:`Mailbox.refresh` found changed since the previous refresh.

    ``expunged_seqs`` are the expunged messages' sequence numbers in the previous
    view, highest first: sent in that order, each untagged EXPUNGE is correct as
    it stands. After a UIDVALIDITY change every message is both expunged and new;
    an IMAP server should then end the session (RFC 3501 2.3.1.1).
    """

    new_uids: tuple[int, ...] = ()
    expunged_uids: tuple[int, ...] = ()
    expunged_seqs: tuple[int, ...] = ()
    flag_changed_uids: tuple[int, ...] = ()
    uidvalidity_changed: bool = False

    def __bool__(self) -> bool:
        return bool(
            self.new_uids
            or self.expunged_uids
            or self.flag_changed_uids
            or self.uidvalidity_changed
        )


@dataclass(frozen=True)
class ChangeToken:
    """A folder's modification stamps (new/, cur/, the index): see :meth:`Mailbox.changed_since`."""

    stamps: tuple[tuple[int, int, int], ...]
    taken_ns: int


class _Listing:
    """Which files of a view's messages are in the folder's new/ and cur/ now: each
    directory listed once, and only the differences kept (the view's messages not
    listed, the names listed that are not the view's), not a string a name listed
    (1.6 MiB at 10,000 messages, for as long as a FETCH holds its reader)."""

    __slots__ = ("_extra", "_missing", "_view")

    def __init__(self, view: FolderView | None) -> None:
        self._view = view  # None: nothing listed, no file is known to be there
        self._missing: set[int] = set()  # positions in the view whose file was not listed
        self._extra: set[str] = set()  # the paths listed that are no file of the view's
        if view is None:
            return
        filename = view.filename
        for subdir, directory in enumerate(view.directories):
            try:
                listed = set(os.listdir(directory))
            except FileNotFoundError:
                listed = set()
            for position in compress(range(len(view)), map(subdir.__eq__, view.subdirs)):
                name = filename(position)
                if name in listed:
                    listed.remove(name)
                else:
                    self._missing.add(position)
            self._extra.update(directory + name for name in listed)

    def has(self, view: FolderView, position: int, location: str) -> bool:
        """Whether the file of the message at ``position`` of ``view`` (at ``location``)
        was listed: ``view`` is the one listed for, or a later one of the same folder."""
        listed_view = self._view
        if view is listed_view:
            return position not in self._missing
        if listed_view is not None:
            then = listed_view.position(view.uids[position])
            if then >= 0 and listed_view.location(then) == location:
                return then not in self._missing
        return location in self._extra

    def moved(self, view: FolderView) -> set[int]:
        """The UIDs of the messages of ``view`` whose files are not where it says."""
        uids = view.uids
        if view is self._view:
            return {uids[position] for position in self._missing}
        return {uids[position] for position in range(len(view))
                if not self.has(view, position, view.location(position))}


class HeaderReader:
    """:meth:`Mailbox.read_header` for one batch of messages (from
    :meth:`Mailbox.header_reader`): call it with a UID."""

    __slots__ = ("_mailbox", "_moved", "_present")

    def __init__(self, mailbox: MailboxReader, present: _Listing | None) -> None:
        self._mailbox = mailbox
        self._present = present  # None: nothing changed since the refresh
        self._moved: set[int] | None = None

    def __call__(self, uid: int, *, keep: bool = True) -> bytes:
        """The header block of ``uid``; ``keep`` it in the process-wide cache (else a
        block read now is let go: the caller keeps what it derives from it)."""
        return self._mailbox._read_header(uid, self._present, keep)

    def key(self, uid: int) -> tuple[str, int, int] | None:
        """What identifies ``uid``'s bytes for a cache of what is derived from its header
        (folder, UIDVALIDITY, UID: a message never changes under them, and a folder never
        has the same UIDVALIDITY twice); None if its file may not be where the last
        refresh saw it (read it then). ``uid`` is one of that refresh's messages."""
        mailbox = self._mailbox
        present = self._present
        if present is not None:
            if self._moved is None:  # one pass over the view, not a search per message
                self._moved = present.moved(mailbox._view)
            if uid in self._moved:
                return None
        return (mailbox._folder, mailbox._uidvalidity, uid)

    def moved(self) -> AbstractSet[int]:
        """The UIDs :meth:`key` gives None for (their files may have moved)."""
        if self._present is None:
            return frozenset()
        if self._moved is None:
            self._moved = self._present.moved(self._mailbox._view)
        return self._moved

    @property
    def folder_key(self) -> tuple[str, int]:
        """The folder and UIDVALIDITY of :meth:`key`."""
        return self._mailbox._folder, self._mailbox._uidvalidity


# -- a session's view of a folder ----------------------------------------------


class MailboxReader:
    """A :class:`~mailtalk.store.mailbox.Mailbox`'s reading side: its view of the
    folder, kept current by :meth:`refresh`, and the messages read from it."""

    def __init__(
        self,
        owner: UserMailboxes,
        name: str,
        path: Path,
        *,
        read_only: bool = False,
        claim_recent: bool = True,
    ) -> None:
        self.owner = owner
        self.name = name
        self.path = path
        self.read_only = read_only
        self._claims_recent = claim_recent and not read_only
        self.maildir = Maildir(path)
        self._uidvalidity = 0
        self._uidnext = 1
        self._highestmodseq = 1
        self._view = FolderView(os.fspath(path))
        self._recent: set[int] = set()
        self._token: ChangeToken | None = None
        self._folder = os.fspath(path)
        # A rebuilt index not written yet, and its lock (see save_deferred).
        self._unsaved: contextlib.ExitStack | None = None

    def __repr__(self) -> str:
        return f"Mailbox({self.name!r}, {str(self.path)!r})"

    # -- state

    @property
    def uidvalidity(self) -> int:
        return self._uidvalidity

    @property
    def uidnext(self) -> int:
        return self._uidnext

    @property
    def highestmodseq(self) -> int:
        """The folder's HIGHESTMODSEQ (RFC 7162) as of the last refresh."""
        return self._highestmodseq

    @property
    def recent_count(self) -> int:
        return len(self._recent)

    def __len__(self) -> int:
        return len(self._view)

    @property
    def view(self) -> FolderView:
        """The messages as of the last refresh, in columns (for the servers' hot loops:
        no object per message). Replaced, never changed, by refresh and by this
        session's changes."""
        return self._view

    def messages(self) -> MessageList:
        """The messages as of the last refresh, in UID order (index + 1 = sequence number)."""
        return MessageList(self._view)

    def message(self, uid: int) -> MessageInfo:
        view = self._view
        position = view.position(uid)
        if position < 0:
            raise MailboxError("NONEXISTENT", f"no message with UID {uid}")
        return view.info(position)

    def refresh(self, *, save_rebuilt_later: bool = False) -> Changes:
        """Rescan the folder: index new files, drop vanished ones; report what changed.

        Returns at once, having found nothing, when :meth:`changed_since` the last
        refresh says the folder cannot have changed (three stat calls).
        With ``save_rebuilt_later``, an index just rebuilt is written by
        :meth:`save_deferred` instead, its lock held until then.
        """
        if self._token is not None and not self.changed_since(self._token):
            return Changes()
        token = self.change_token()
        with contextlib.ExitStack() as held:
            state = held.enter_context(self._locked("NONEXISTENT"))
            if self._claims_recent:
                self._move_new_to_cur(state)
            index = state.index
            uidvalidity_changed = bool(self._uidvalidity) and index.uidvalidity != self._uidvalidity
            # Under a new UIDVALIDITY no old UID means anything: all are new.
            known = FolderView(self._folder) if uidvalidity_changed else self._view
            if uidvalidity_changed:
                self._recent = set()
            for uid in index.uids_from(index.first_recent_uid):
                if self._claims_recent or known.position(uid) < 0:
                    self._recent.add(uid)
            if self._claims_recent and index.first_recent_uid != index.uidnext:
                index.first_recent_uid = index.uidnext
                state.dirty = True
            view = self._build_view(state, known)
            self._uidvalidity, self._uidnext = index.uidvalidity, index.uidnext
            self._highestmodseq = index.highestmodseq
            if save_rebuilt_later and state.rebuilt and state.dirty:
                # Kept, with the index lock, for save_deferred() (see its documentation).
                self._unsaved = held.pop_all()
        if self._recent:
            self._recent = {uid for uid in self._recent if view.position(uid) >= 0}
        added, gone, flag_changed = known.differences(view)
        old = self._view
        changes = Changes(
            new_uids=tuple(added),
            expunged_uids=tuple(old.uids) if uidvalidity_changed else tuple(
                known.uids[position] for position in gone),
            expunged_seqs=tuple(range(len(old), 0, -1)) if uidvalidity_changed else tuple(
                position + 1 for position in reversed(gone)),
            flag_changed_uids=tuple(flag_changed),
            uidvalidity_changed=uidvalidity_changed,
        )
        self._view = view
        self._token = token
        return changes

    def save_deferred(self) -> None:
        """Write the index that ``refresh(save_rebuilt_later=True)`` rebuilt, and
        release its lock; nothing if there is none. Raises StoreError as a refresh would.

        **Why a rebuilt index may be written after its UIDs are shown** (IMAP answers
        a cold SELECT first): what must be durable before a client sees a UID is that
        the UIDVALIDITY it came under is never used again for other messages (RFC 9051
        2.3.1.1). That holds before the answer: the rebuild took its UIDVALIDITY from
        ``mailtalk-uidvalidity``, fsynced there, and only ever larger ones are handed
        out afterwards. If this write is then lost (the process killed, the power cut,
        the disk full), the next load finds no index, or the old corrupt one set aside,
        and rebuilds it under a NEW, larger UIDVALIDITY: clients drop their cached UIDs,
        none is reused for another message. If the write is done, it is the very index
        whose UIDs were shown. An index that was read, not rebuilt, is never deferred:
        its UIDVALIDITY is in use, and a new UID given under it must be written before
        it is shown. The lock is held until the write, so no other session or process
        reads the folder's index in between; the caller must call this before it
        waits for anything (another session of its thread would block on the lock).
        """
        unsaved, self._unsaved = self._unsaved, None
        if unsaved is not None:
            unsaved.close()

    def vanished_since(self, modseq: int) -> list[int]:
        """The UIDs expunged after ``modseq`` (QRESYNC, RFC 7162 3.2), ascending; when
        the folder's expunge log no longer reaches back that far, every UID below
        UIDNEXT that is not in the folder (see :mod:`mailtalk.store.vanished`)."""
        log = read_log(self.path, self._uidvalidity)
        known = log.since(modseq) if log is not None else None
        present = set(self._view.uids)
        if known is not None:
            return [uid for uid in known if uid not in present]
        return [uid for uid in range(1, self._uidnext) if uid not in present]

    # -- change detection

    def change_token(self) -> ChangeToken:
        """The folder's current stamps. Take one *before* a refresh to catch what follows it."""
        stamps = []
        for path in (self.maildir.new_dir, self.maildir.cur_dir, self.path / INDEX_NAME):
            try:
                status = os.stat(path)
                stamps.append((status.st_ino, status.st_mtime_ns, status.st_size))
            except FileNotFoundError:
                stamps.append((0, 0, 0))
        return ChangeToken(tuple(stamps), time.time_ns())

    def changed_since(self, token: ChangeToken | None = None) -> bool:
        """Whether the folder may have changed since ``token`` (default: the last refresh's).

        Cheap — three stat calls — for polling changes made by other processes.
        It may say True when nothing changed (then a refresh finds nothing), but
        never False after a change: a token taken less than a second after the
        newest stamp is not trusted, since timestamps have a granularity.
        """
        token = token if token is not None else self._token
        if token is None:
            return True
        current = self.change_token()
        if current.stamps != token.stamps:
            return True
        newest = max(mtime for _, mtime, _ in token.stamps)
        return token.taken_ns - newest < _MTIME_SLACK_NS

    # -- reading

    def open_message(self, uid: int, *, mark_seen: bool = False) -> BinaryIO:
        """The message's bytes as stored (LF line endings), to read in chunks; close it after.

        ``mark_seen`` sets \\Seen, as IMAP FETCH BODY[] does (ignored when read-only).
        A message expunged by another session raises MailboxError("EXPUNGEISSUED").
        """
        info = self.message(uid)
        stream: BinaryIO
        try:
            stream = open(info.location, "rb")  # noqa: SIM115 - the caller closes it
        except FileNotFoundError:
            path = self._locate(info)
            try:
                stream = open(path, "rb")  # noqa: SIM115
            except FileNotFoundError:
                raise MailboxError("EXPUNGEISSUED", f"message {uid} was expunged") from None
        if mark_seen and not self.read_only and SEEN not in info.flags:
            self.set_flags([uid], [SEEN], "add")
        return stream

    def read_small(self, uid: int, limit: int) -> bytes | None:
        """The message's bytes as stored if fewer than ``limit``, else None (then read
        it with :meth:`open_message`): opened by its place in the view and read at once,
        with no file object and no :class:`MessageInfo` (POP3 RETR). Gone: as
        :meth:`open_message`."""
        view = self._view
        position = view.position(uid)
        if position < 0:
            raise MailboxError("NONEXISTENT", f"no message with UID {uid}")
        size = view.sizes[position]
        if size >= limit:
            return None
        location = view.location(position)
        try:
            fd = os.open(location, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:  # renamed by another session, or expunged: it knows
            with self.open_message(uid) as stream:
                data = stream.read(limit)
        else:
            try:
                data = os.read(fd, limit)
                # A file gives all it has to one read: more only for one that did not
                # (or whose size the view has wrong), as a file object's read(limit).
                while len(data) != size and len(data) < limit:
                    more = os.read(fd, limit - len(data))
                    if not more:
                        break
                    data += more
            finally:
                os.close(fd)
        return data if len(data) < limit else None

    def read_message(self, uid: int, *, mark_seen: bool = False) -> bytes:
        with self.open_message(uid, mark_seen=mark_seen) as stream:
            return stream.read()

    def read_header(self, uid: int) -> bytes:
        """The message's header block as stored, up to and including the blank line
        that ends it (the whole message if there is none); the body is not read.

        Header blocks are kept in a process-wide cache bounded by size (a
        message's bytes never change under its UID). A cached block is served
        only while the file is still where the last refresh saw it; otherwise the
        file is read as :meth:`open_message` finds it (EXPUNGEISSUED if gone).
        For many messages, :meth:`header_reader` checks that more cheaply.
        """
        location = self.message(uid).location
        return self._read_header(uid, None if os.path.isfile(location) else _Listing(None))

    def header_reader(self) -> HeaderReader:
        """:meth:`read_header` for a batch of messages (an IMAP FETCH).

        Whether the cached headers' files are still there is checked once: not at
        all if :meth:`changed_since` the last refresh is False (no file can have
        gone), else by listing new/ and cur/ once.
        """
        present = _Listing(self._view) if self.changed_since() else None
        return HeaderReader(self, present)

    def _read_header(self, uid: int, present: _Listing | None, keep: bool = True) -> bytes:
        """``present``: the files known to exist (None: all those of the view); ``keep``:
        put a block read into the cache."""
        view = self._view
        position = view.position(uid)
        if position < 0:
            raise MailboxError("NONEXISTENT", f"no message with UID {uid}")
        location = view.location(position)
        key = (self._folder, self._uidvalidity, uid, view.bases[position], view.sizes[position])
        # headers.HEADER_CACHE, not an imported HEADER_CACHE: CPython 3.11 compiles a
        # method call on a name bound by an import as an attribute load plus a call of
        # the bound method, which made this hot path (every FETCH of a header) 7 % slower.
        cached = headers.HEADER_CACHE.get(key)
        if cached is not None and (present is None or present.has(view, position, location)):
            return cached
        try:
            fd = os.open(location, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            # Renamed by another session's flag change, or expunged: open_message knows.
            with self.open_message(uid) as stream:
                header = headers.read_header_block(stream.read)
        else:
            try:
                header = headers.read_header_block(lambda size: os.read(fd, size))
            finally:
                os.close(fd)
        if keep:
            headers.HEADER_CACHE.put(key, header)
        return header

    if TYPE_CHECKING:  # Mailbox's; open_message(mark_seen=True) sets \Seen with it
        set_flags: Callable[..., dict[int, frozenset[str]]]

    # -- internals

    @contextlib.contextmanager
    def _locked(self, missing: ResponseCode) -> Iterator[LockedIndex]:
        self.save_deferred()  # its lock first: this thread would wait for itself
        with locked_index(self.path, self.owner.path, missing) as state:
            yield state

    def _move_new_to_cur(self, state: LockedIndex) -> None:
        # Not fsynced: after a crash the file is merely back in new/, which is harmless.
        new_dir, cur_dir = f"{self._folder}/new/", f"{self._folder}/cur/"
        for base in sorted(state.in_new):
            subdir, filename = state.location(base) or ("", "")
            if subdir != "new":
                continue
            cur_name = filename if ":" in filename else filename + ":2,"
            try:
                os.rename(new_dir + filename, cur_dir + cur_name)
            except FileNotFoundError:
                continue  # another reader moved it; the next scan finds it in cur/
            except OSError as error:
                if error.errno not in STORAGE_FULL_ERRNOS:
                    raise
                continue  # no room for another entry in cur/: it stays in new/ for now
            state.moved_to_cur(base, cur_name)

    def _build_view(self, state: LockedIndex, previous: FolderView) -> FolderView:
        return FolderView.build(self._folder, state.index,
                               state.file_columns() or state.files, self._recent, previous)

    def _locate(self, info: MessageInfo) -> Path:
        """Where the message with ``info.base`` is now (its flags may have renamed it)."""
        for subdir in ("cur", "new"):
            with contextlib.suppress(FileNotFoundError), os.scandir(self.path / subdir) as entries:
                for entry in entries:
                    if split_filename(entry.name)[0] == info.base:
                        position = self._view.position(info.uid)
                        if position >= 0:
                            self._view = self._view.with_location(position, entry.path)
                        return Path(entry.path)
        raise MailboxError("EXPUNGEISSUED", f"message {info.uid} was expunged")

