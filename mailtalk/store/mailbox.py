"""One session's view of one folder: :class:`Mailbox`, what IMAP's selected state
and POP3's transaction state work on.

Get one from :meth:`UserMailboxes.open <mailtalk.store.users.UserMailboxes.open>`
(a session) or :meth:`~mailtalk.store.users.UserMailboxes.target` (where APPEND,
COPY and MOVE put messages). A folder is a Maildir whose files are named by
:mod:`mailtalk.store.flags` and numbered by its index (:mod:`mailtalk.store.index`).

**Sessions and changes.** A :class:`Mailbox` is one session's view (IMAP's
selected state): :meth:`Mailbox.messages` is what the last
:meth:`Mailbox.refresh` saw, so sequence numbers stay stable between refreshes,
and refresh reports what changed (for untagged EXISTS, EXPUNGE and FETCH).
Changes made through the same Mailbox by :meth:`Mailbox.set_flags`,
:meth:`Mailbox.expunge` and :meth:`Mailbox.move` are reported by their return
values instead; messages appended or copied into it arrive with the next
refresh. One Mailbox belongs to one session and is not thread-safe; any number
of them, in any threads or processes, may use the same folder.

**\\Recent** is persistent: a read-write session (:meth:`UserMailboxes.open
<mailtalk.store.users.UserMailboxes.open>`) claims every UID >= R (the index's
first recent UID) when it refreshes and moves R to UIDNEXT, under the index
lock, so exactly one session sees each message as \\Recent — even across
processes and restarts, which per-process memory could not promise. Read-only
sessions see \\Recent without claiming it. Read-write sessions also move files
from new/ to cur/, as Maildir readers do.

**Notifications.** :class:`~mailtalk.store.users.MailboxWatchers` tells other
sessions in the same process that a folder changed; operations here notify it.
The SMTP delivery path should call ``watchers.notify(user, "INBOX")`` after a
delivery commits. Changes from other processes show in
:meth:`Mailbox.changed_since`.

**POP3** takes :meth:`UserMailboxes.lock_maildrop
<mailtalk.store.users.UserMailboxes.lock_maildrop>`, opens INBOX, reports
:attr:`MessageInfo.rfc822_size` for LIST/STAT and :attr:`MessageInfo.uidl`
for UIDL, and at QUIT sets \\Deleted on the DELE'd messages and expunges
those UIDs.

Errors an IMAP client should see are :class:`~mailtalk.store.errors.MailboxError`
with the response code to send; disk failures are
:class:`~mailtalk.store.errors.StoreError`. Stdlib only.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Container, Iterable, Iterator, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime
from itertools import compress, filterfalse
from pathlib import Path
from sys import intern
from typing import BinaryIO, Literal

from mailtalk.store import headers
from mailtalk.store.append import Appender, StagedMessage
from mailtalk.store.errors import STORAGE_FULL_ERRNOS, MailboxError, ResponseCode
from mailtalk.store.filesystem import (
    READ_CHUNK_SIZE,
    fsync_directory,
    link_or_copy,
    remove_quietly,
)
from mailtalk.store.flags import (
    DELETED,
    FILENAME_FLAGS,
    PERMANENT_FLAGS,
    RECENT,
    SEEN,
    check_keywords,
    flags_to_info,
    info_to_flags,
    normalize_flags,
    other_info_letters,
    split_filename,
)
from mailtalk.store.index import INDEX_NAME, LockedIndex, locked_index
from mailtalk.store.locks import MaildropLock
from mailtalk.store.maildir import Maildir, unique_name
from mailtalk.store.sizes import size_suffix

# A session's owner; and importable from here, as before the store was split into
# modules (the servers import them from this module). users.py imports this module
# only inside the function that makes a Mailbox, so the two do not import in a circle.
from mailtalk.store.users import MailboxWatch, MailboxWatchers, MailStore, UserMailboxes
from mailtalk.store.vanished import read_log
from mailtalk.store.view import FolderView, MessageInfo, MessageList

# What this module defines, and what other packages have imported from it.
__all__ = [
    "PERMANENT_FLAGS",
    "Appender",
    "ChangeToken",
    "Changes",
    "MailStore",
    "Mailbox",
    "MailboxError",
    "MailboxWatch",
    "MailboxWatchers",
    "MaildropLock",
    "MessageInfo",
    "MessageList",
    "UserMailboxes",
]

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


def _folder_keywords(state: LockedIndex) -> set[str]:
    """Every keyword some message of the folder holds (its index's K fields)."""
    return state.index.keywords_present()


class _Listing:
    """The paths of the files in a folder's new/ and cur/ now, for ``in`` tests (each
    directory listed once; no path string made per file). The names are interned:
    those the view has are its own strings, not a second copy of each (1.5 MiB at
    10,000 messages, for as long as a FETCH holds its reader)."""

    __slots__ = ("_names",)

    def __init__(self, folder: str) -> None:
        self._names: dict[str, set[str]] = {}
        for subdir in ("new", "cur"):
            directory = f"{folder}/{subdir}"
            try:
                self._names[directory] = set(map(intern, os.listdir(directory)))
            except FileNotFoundError:
                self._names[directory] = set()

    def __contains__(self, path: object) -> bool:
        if not isinstance(path, str):
            return False
        directory, _, name = path.rpartition("/")
        names = self._names.get(directory)
        return names is not None and name in names

    def moved(self, view: FolderView) -> set[int]:
        """The UIDs of the messages of ``view`` whose files are not where it says."""
        listed = [self._names.get(directory.rstrip("/"), set())
                  for directory in view.directories]
        # Each directory's names looked up by map() (no Python step per message); the
        # UIDs found only for the names that are missing, which are few or none.
        missing = [set(filterfalse(names.__contains__,
                                   compress(view.filenames, map(subdir.__eq__, view.subdirs))))
                   for subdir, names in enumerate(listed)]
        if not any(missing):
            return set()
        return {uid for uid, subdir, name in zip(view.uids, view.subdirs, view.filenames,
                                                 strict=True)
                if name in missing[subdir]}


class HeaderReader:
    """:meth:`Mailbox.read_header` for one batch of messages (from
    :meth:`Mailbox.header_reader`): call it with a UID."""

    __slots__ = ("_mailbox", "_moved", "_present")

    def __init__(self, mailbox: Mailbox, present: _Listing | None) -> None:
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


class Mailbox:
    """One session's view of one folder; get it from :meth:`UserMailboxes.open
    <mailtalk.store.users.UserMailboxes.open>`.

    ``read_only`` (IMAP EXAMINE) sessions neither claim \\Recent nor move files
    out of new/, and may not change flags or expunge (MailboxError CANNOT).
    Unknown UIDs are skipped by the bulk operations and raise NONEXISTENT in the
    single-message ones.
    """

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
        location = view.directories[view.subdirs[position]] + view.filenames[position]
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
        present: tuple[str, ...] = (location,) if os.path.isfile(location) else ()
        return self._read_header(uid, present)

    def header_reader(self) -> HeaderReader:
        """:meth:`read_header` for a batch of messages (an IMAP FETCH).

        Whether the cached headers' files are still there is checked once: not at
        all if :meth:`changed_since` the last refresh is False (no file can have
        gone), else by listing new/ and cur/ once.
        """
        present = _Listing(self._folder) if self.changed_since() else None
        return HeaderReader(self, present)

    def _read_header(self, uid: int, present: Container[str] | None, keep: bool = True) -> bytes:
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
        if cached is not None and (present is None or location in present):
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

    # -- changing

    def set_flags(
        self,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: Literal["replace", "add", "remove"] = "replace",
        *,
        unchanged_since: int | None = None,
        modified: list[int] | None = None,
    ) -> dict[int, frozenset[str]]:
        """Change the flags of ``uids``; returns {uid: new flags} for those that changed.

        ``unchanged_since`` (STORE UNCHANGEDSINCE, RFC 7162 3.1.3): a message whose
        MODSEQ on disk is above it is left alone and its UID appended to ``modified``;
        the test and the change are made together under the index lock.

        "add" and "remove" apply to the flags currently on disk, so concurrent
        changes by other sessions to other flags are kept. \\Recent is ignored
        (see :func:`~mailtalk.store.flags.normalize_flags`). Messages already expunged are skipped.
        New keywords beyond the folder's cap raise MailboxError LIMIT, one too long
        CANNOT (:func:`~mailtalk.store.flags.check_keywords`), changing nothing.
        A disk error (a keyword change on a full disk) leaves this view as it
        was; the next refresh shows what did reach the disk.
        """
        before = self._view
        try:
            return self._set_flags(uids, flags, mode, unchanged_since, modified)
        except OSError:
            self._view = before
            self._token = None
            raise

    def _set_flags(
        self,
        uids: Iterable[int],
        flags: Iterable[str],
        mode: Literal["replace", "add", "remove"],
        unchanged_since: int | None = None,
        modified: list[int] | None = None,
    ) -> dict[int, frozenset[str]]:
        self._require_writable()
        wanted = normalize_flags(flags)
        if mode not in ("replace", "add", "remove"):
            raise ValueError(f"unknown mode {mode!r}")
        changed: dict[int, frozenset[str]] = {}
        adding = wanted - FILENAME_FLAGS if mode != "remove" else frozenset()
        view = self._view
        # position -> (filename in cur/, flags shown, MODSEQ), for this session's view
        view_changes: dict[int, tuple[str, frozenset[str], int]] = {}
        try:
            with self._locked("NONEXISTENT") as state:
                if adding:
                    check_keywords(adding, _folder_keywords(state))
                index, files = state.index, state.files
                renamed = False
                for uid in sorted(set(uids)):
                    position = view.position(uid)
                    base = view.bases[position] if position >= 0 else ""
                    at = index.position(base)
                    entry = files.get(base)
                    if at < 0 or entry is None:
                        continue
                    record = index.record(at)
                    if unchanged_since is not None and record.modseq > unchanged_since:
                        if modified is not None:
                            modified.append(uid)
                        continue
                    subdir, filename = entry
                    on_disk_info = split_filename(filename)[1]
                    current = info_to_flags(on_disk_info) | record.keywords
                    if mode == "replace":
                        new = wanted
                    elif mode == "add":
                        new = current | wanted
                    else:
                        new = current - wanted
                    if new == current:
                        continue
                    new_info = flags_to_info(new, other_info_letters(on_disk_info))
                    new_filename = f"{base}:{new_info}"
                    if (subdir, filename) != ("cur", new_filename):
                        try:
                            os.rename(self.path / subdir / filename,
                                      self.path / "cur" / new_filename)
                        except FileNotFoundError:
                            continue  # an outside reader renamed it; this change is lost, rarely
                        files[base] = ("cur", new_filename)
                        renamed = True
                    # Every flag change gets a MODSEQ, which only the index records. On
                    # a full disk a system flag (in the filename) is still changed; its
                    # MODSEQ is then lost, which is what lets users delete mail to make room.
                    modseq = state.index.next_modseq()
                    keywords = new - FILENAME_FLAGS
                    if keywords != record.keywords:
                        state.essential = True
                    index.set_keywords(at, keywords, modseq)
                    state.dirty = True
                    shown = new | {RECENT} if uid in self._recent else new
                    view_changes[position] = (new_filename, shown, modseq)
                    changed[uid] = shown
                if renamed:
                    fsync_directory(self.maildir.cur_dir)
        finally:
            if view_changes:
                self._view = view.with_changes(view_changes)
        if changed:
            self.notify()
        return changed

    def expunge(self, uids: Iterable[int] | None = None) -> list[int]:
        """Remove the messages flagged \\Deleted (only among ``uids`` if given: UID EXPUNGE).

        Only messages this session knows are removed — it could not announce
        others' sequence numbers. Returns the expunged UIDs, ascending; they
        leave :meth:`messages` now and are not reported by the next refresh.
        """
        self._require_writable()
        present = self._view.uids
        candidates = list(present) if uids is None else sorted(set(uids).intersection(present))
        expunged = self._remove_files(candidates, deleted_only=True)
        self._forget(expunged)
        if expunged:
            self.notify()
        return expunged

    def begin_append(
        self,
        flags: Iterable[str] = (),
        internaldate: datetime | float | None = None,
        *,
        expected_size: int | None = None,
        crlf_to_lf: bool = True,
    ) -> Appender:
        """Start appending a message to be written in chunks (IMAP APPEND's literal).

        ``expected_size`` (the literal's length) lets the quota refuse the
        message before any byte is sent. ``crlf_to_lf`` stores lines with LF,
        as the SMTP server does. See :class:`~mailtalk.store.append.Appender`.
        """
        stored_flags = normalize_flags(flags)
        limit = None
        if self.owner.quota_bytes is not None:
            limit = self.owner.quota_bytes - self.owner.usage()
            if expected_size is not None and expected_size > limit:
                raise MailboxError("OVERQUOTA", "the message would exceed the mailbox quota")
        if not self.maildir.cur_dir.is_dir():
            raise MailboxError("TRYCREATE", f"no mailbox {self.name}")
        return Appender(self, stored_flags, internaldate, limit, crlf_to_lf)

    def append(
        self,
        data: bytes | bytearray | BinaryIO | Iterable[bytes],
        flags: Iterable[str] = (),
        internaldate: datetime | float | None = None,
    ) -> int:
        """Append a message — bytes, a binary file or an iterable of chunks — and return its UID.

        File objects and iterables are streamed to disk. The new message
        arrives in this session's view with the next refresh.
        """
        with self.begin_append(flags, internaldate) as appender:
            if isinstance(data, bytes | bytearray):
                appender.write(data)
            elif (read := getattr(data, "read", None)) is not None:
                while chunk := read(READ_CHUNK_SIZE):
                    appender.write(chunk)
            else:
                for chunk in data:
                    appender.write(chunk)
            return appender.commit()

    def copy(self, uids: Iterable[int], target: Mailbox | str) -> list[tuple[int, int]]:
        """Copy messages, flags and INTERNALDATE included, into ``target``; returns
        (source UID, new UID) pairs, ascending, for COPYUID.

        ``target`` is a Mailbox or the name of one of this user's folders; a
        missing folder raises TRYCREATE. Files are hard-linked where the
        filesystem allows, else copied. All or nothing: a message expunged
        meanwhile raises EXPUNGEISSUED and copies nothing.
        """
        return self._copy(uids, target, check_quota=True)

    def _copy(
        self, uids: Iterable[int], target: Mailbox | str, *, check_quota: bool
    ) -> list[tuple[int, int]]:
        destination = self.owner.target(target) if isinstance(target, str) else target
        copied: list[int] = []
        staged: list[StagedMessage] = []
        tmp_dir = destination.maildir.tmp_dir
        try:
            for uid in sorted(set(uids).intersection(self._view.uids)):
                info = self.message(uid)
                # Named with the sizes, as delivered mail: a cold index reads no file.
                name = unique_name() + ("" if info.unterminated
                                        else size_suffix(info.size, info.rfc822_size))
                tmp_path = tmp_dir / name
                flags = self._link_current(info, tmp_path)
                copied.append(uid)
                staged.append(
                    StagedMessage(
                        tmp_path,
                        name,
                        flags,
                        info.size,
                        info.rfc822_size,
                        info.internaldate_seconds,
                        info.unterminated,
                    )
                )
            new_uids = destination.publish_staged(staged, check_quota=check_quota)
        except FileNotFoundError as error:
            if not tmp_dir.is_dir():
                raise MailboxError("TRYCREATE", f"no mailbox {destination.name}") from error
            raise
        finally:
            for message in staged:
                remove_quietly(message.tmp_path)  # those renamed into cur/ are no longer there
        if new_uids:
            destination.notify()
        return list(zip(copied, new_uids, strict=True))

    def publish_staged(self, messages: Sequence[StagedMessage], *, check_quota: bool) -> list[int]:
        """Rename ``messages``, complete in this folder's tmp/, into cur/ with their flags
        and index them; returns their UIDs, in order.

        Under the index lock, and (``check_quota`` and a quota set) the user lock
        with a quota check for their total size, so concurrent additions cannot
        both fit in the same remaining space. For :meth:`copy` and
        :class:`~mailtalk.store.append.Appender`; TRYCREATE if the folder is gone, LIMIT
        (nothing published) if their keywords would pass the folder's cap.
        """
        total = sum(message.size for message in messages)
        quota = self.owner.quota_reserved(total) if check_quota else contextlib.nullcontext()
        keywords = frozenset().union(*(message.flags - FILENAME_FLAGS for message in messages))
        uids = []
        with quota, self._locked("TRYCREATE") as state:
            if keywords:
                check_keywords(keywords, _folder_keywords(state))
            for message in messages:
                filename = message.filename
                os.rename(message.tmp_path, self.maildir.cur_dir / filename)
                uid = state.add(
                    "cur",
                    filename,
                    message.size,
                    message.rfc822_size,
                    message.internaldate,
                    message.flags - FILENAME_FLAGS,
                    message.unterminated,
                )
                uids.append(uid)
            if messages:
                fsync_directory(self.maildir.cur_dir)
        return uids

    def move(self, uids: Iterable[int], target: Mailbox | str) -> list[tuple[int, int]]:
        """:meth:`copy`, then remove the originals whatever their flags (RFC 6851 MOVE).

        Not refused by the quota: the user's usage does not grow.

        The moved UIDs leave :meth:`messages` now (send EXPUNGE for them) and
        are not reported by the next refresh.
        """
        self._require_writable()
        pairs = self._copy(uids, target, check_quota=False)
        moved = [uid for uid, _ in pairs]
        self._remove_files(moved, deleted_only=False)
        self._forget(moved)
        if moved:
            self.notify()
        return pairs

    def notify(self) -> None:
        """Tell the other sessions of this process that this folder changed (see
        :class:`~mailtalk.store.users.MailboxWatchers`)."""
        self.owner.watchers.notify(self.owner.user, self.name)

    # -- internals

    @contextlib.contextmanager
    def _locked(self, missing: ResponseCode) -> Iterator[LockedIndex]:
        self.save_deferred()  # its lock first: this thread would wait for itself
        with locked_index(self.path, self.owner.path, missing) as state:
            yield state

    def _require_writable(self) -> None:
        if self.read_only:
            raise MailboxError("CANNOT", f"{self.name} is open read-only")

    def _remove_files(self, uids: Iterable[int], *, deleted_only: bool) -> list[int]:
        """Unlink the files of ``uids`` (of this view) and drop them from the index;
        returns the UIDs whose files went. With ``deleted_only``, only the files
        whose names say \\Deleted: what another session cleared stays."""
        removed = []
        with self._locked("NONEXISTENT") as state:
            view = self._view
            for uid in uids:
                base = view.bases[view.position(uid)]
                entry = state.files.get(base)
                if entry is None:
                    continue  # already gone: the next refresh reports it
                if deleted_only and DELETED not in info_to_flags(split_filename(entry[1])[1]):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path / entry[0] / entry[1])
                state.remove(base)
                removed.append(uid)
            if removed:
                fsync_directory(self.maildir.cur_dir)
        return removed

    def _forget(self, uids: Iterable[int]) -> None:
        gone = set(uids)
        if gone:
            self._view = self._view.without(gone)
            self._recent -= gone

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

    def _link_current(self, info: MessageInfo, tmp_path: Path) -> frozenset[str]:
        """Hard-link (else copy) the message to ``tmp_path``; returns the flags to give the copy.

        The system flags are read from the current filename, keywords from this
        session's view.
        """
        path = info.path
        for _ in range(3):  # a concurrent flag change may rename it under us
            try:
                link_or_copy(path, tmp_path, info.internaldate_seconds)
            except FileNotFoundError:
                if not tmp_path.parent.is_dir():
                    raise MailboxError("TRYCREATE", "the target mailbox was deleted") from None
                path = self._locate(info)
                continue
            system = info_to_flags(split_filename(path.name)[1])
            return system | (info.flags - FILENAME_FLAGS - {RECENT})
        raise MailboxError("EXPUNGEISSUED", f"message {info.uid} was expunged")
