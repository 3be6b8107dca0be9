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

What a session sees and reads (the view, refresh, change detection, the messages'
bytes and header blocks, and the persistent \\Recent) is :class:`MailboxReader
<mailtalk.store.reading.MailboxReader>`, which Mailbox extends; this module holds
what a session changes: flags, expunge, APPEND, COPY and MOVE.

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
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, Literal

from mailtalk.store.append import Appender, StagedMessage
from mailtalk.store.errors import MailboxError
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
    check_keywords,
    flags_to_info,
    info_to_flags,
    normalize_flags,
    other_info_letters,
    split_filename,
)
from mailtalk.store.index import LockedIndex
from mailtalk.store.locks import MaildropLock
from mailtalk.store.maildir import unique_name
from mailtalk.store.reading import MailboxReader
from mailtalk.store.sizes import size_suffix

# A session's owner; and importable from here, as before the store was split into
# modules (the servers import them from this module). users.py imports this module
# only inside the function that makes a Mailbox, so the two do not import in a circle.
from mailtalk.store.users import MailboxWatch, MailboxWatchers, MailStore, UserMailboxes
from mailtalk.store.view import MessageInfo, MessageList

# What this module defines, and what other packages have imported from it.
__all__ = [
    "PERMANENT_FLAGS",
    "Appender",
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

# -- what the changes share -----------------------------------------------------


def _folder_keywords(state: LockedIndex) -> set[str]:
    """Every keyword some message of the folder holds (its index's K fields)."""
    return state.index.keywords_present()


# -- a session's view of a folder, and its changes -------------------------------


class Mailbox(MailboxReader):
    """One session's view of one folder; get it from :meth:`UserMailboxes.open
    <mailtalk.store.users.UserMailboxes.open>`.

    ``read_only`` (IMAP EXAMINE) sessions neither claim \\Recent nor move files
    out of new/, and may not change flags or expunge (MailboxError CANNOT).
    Unknown UIDs are skipped by the bulk operations and raise NONEXISTENT in the
    single-message ones.
    """

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
