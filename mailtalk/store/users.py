"""A user's mail: Maildir++ folders, subscriptions, quota, and who is told of changes.

Layout of one user's mail, ``ROOT/mail/USER/Maildir`` (Courier/Dovecot Maildir++)::

    Maildir/{tmp,new,cur}           INBOX
    Maildir/.Sent/{tmp,new,cur}     folder "Sent"        (plus an empty ``maildirfolder``)
    Maildir/.Archive.2024/...       folder "Archive.2024", a child of "Archive"
    Maildir/subscriptions           subscribed folder names, one per line
    Maildir/mailtalk-uidvalidity    the last UIDVALIDITY handed out to any of the folders
    Maildir/mailtalk-user.lock      serialises folder changes, quota checks, subscriptions
    Maildir/mailtalk-maildrop.lock  POP3's maildrop lock
    Maildir/mailtalk-default-folders  present once the default folders were made (IMAP's
                                    Sent, Drafts, ...): one the user deletes stays deleted
    <folder>/mailtalk-uidlist       the folder's UIDs (+ ``.lock``): see mailtalk.store.index
    <folder>/mailtalk-special-use   the folder's special uses (RFC 6154: \\Sent, ...), one a
                                    line: in the folder's directory, so RENAME carries them
                                    and DELETE removes them
    ../mbox                         ``ROOT/mail/USER/mbox``: when this file exists, the
                                    user's POP3 maildrop (qpopper's /var/mail/USER)

**Folder names.** IMAP names use "." as the hierarchy delimiter, exactly as the
directories do (Dovecot's Maildir++ default), so "Archive.2024" is
``.Archive.2024`` and a name cannot contain a literal ".". Names are stored as
the client sends them (IMAP's modified UTF-7); "/", control characters and the
LIST wildcards "*" and "%" are refused. "INBOX" is case-insensitive, also as the
first level of a longer name ("inbox.x" is "INBOX.x").

A folder is created under a temporary name and renamed into place whole, and
deleted by renaming it away first, so no listing ever sees half a folder; the
locks these changes take are described in :mod:`mailtalk.store.locks`. Each
folder, opened, is a :class:`~mailtalk.store.mailbox.Mailbox`. Stdlib only.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mailtalk.store.errors import MailboxError, ResponseCode, store_error
from mailtalk.store.filesystem import MESSAGE_MODE, fsync_directory, replace_file
from mailtalk.store.index import locked_index
from mailtalk.store.layout import user_maildir_path
from mailtalk.store.locks import MAILDROP_LOCK_NAME, USER_LOCK_NAME, FileLock, MaildropLock
from mailtalk.store.maildir import Maildir, unique_name

if TYPE_CHECKING:
    from mailtalk.store.mailbox import Mailbox

log = logging.getLogger(__name__)

INBOX = "INBOX"
DELIMITER = "."

SUBSCRIPTIONS_NAME = "subscriptions"
MBOX_NAME = "mbox"
FOLDER_MARKER_NAME = "maildirfolder"
DEFAULT_FOLDERS_MARKER_NAME = "mailtalk-default-folders"
SPECIAL_USE_NAME = "mailtalk-special-use"
# What the default folders marker holds once their special uses are written in their
# folders; an empty marker is from before, when the uses went by name.
_SPECIAL_USES_WRITTEN = "special-use\n"
# Directories being created or deleted start with ".." so that no listing takes
# them for a folder: a folder's directory is "." + a name with no empty level.
_CREATING_PREFIX = "..creating-"
_DELETED_PREFIX = "..deleted-"


# -- user and folder names -----------------------------------------------------


def _canonical_name(name: str) -> str:
    """``name`` with a case-insensitive INBOX first level spelt "INBOX"; else unchanged."""
    first, separator, rest = name.partition(DELIMITER)
    return INBOX + separator + rest if first.upper() == INBOX else name


# A folder is one directory, "." + its name: a file name of at most 255 octets.
MAX_NAME_OCTETS = 254


def _checked_name(name: str) -> str:
    """``name`` canonical, or MailboxError("CANNOT") if it cannot name a Maildir++ folder."""
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_OCTETS:
        raise MailboxError("CANNOT", f"mailbox name too long (at most {MAX_NAME_OCTETS} octets)")
    levels = name.split(DELIMITER)
    if (
        not name
        or "" in levels
        or any(char in "/*%" or ord(char) < 0x20 or ord(char) == 0x7F for char in name)
    ):
        raise MailboxError("CANNOT", f"not a valid mailbox name: {name!r}")
    return _canonical_name(name)


def _parents(name: str) -> list[str]:
    """The names above ``name``: "A.B.C" -> ["A", "A.B"]."""
    levels = name.split(DELIMITER)
    return [DELIMITER.join(levels[:count]) for count in range(1, len(levels))]


# -- notifications -------------------------------------------------------------


class MailboxWatch:
    """One registration with :class:`MailboxWatchers`; :meth:`cancel` (or ``with``) ends it."""

    def __init__(self, watchers: MailboxWatchers, key: tuple[str, str]) -> None:
        self._watchers = watchers
        self._key = key

    def cancel(self) -> None:
        self._watchers._remove(self._key, self)

    def __enter__(self) -> MailboxWatch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.cancel()


class MailboxWatchers:
    """In-process publish/subscribe of "folder F of user U changed"; thread-safe.

    Callbacks run in the notifying thread, so they must be quick and must not
    block: an asyncio session registers
    ``lambda: loop.call_soon_threadsafe(wakeup.set)`` and calls
    :meth:`Mailbox.refresh` from its own task. A callback that raises is logged
    and does not stop the others (nor the delivery that notified).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[tuple[str, str], dict[MailboxWatch, Callable[[], None]]] = {}

    def watch(self, user: str, folder: str, callback: Callable[[], None]) -> MailboxWatch:
        key = (user, _canonical_name(folder))
        handle = MailboxWatch(self, key)
        with self._lock:
            self._callbacks.setdefault(key, {})[handle] = callback
        return handle

    def notify(self, user: str, folder: str) -> None:
        key = (user, _canonical_name(folder))
        with self._lock:
            callbacks = list(self._callbacks.get(key, {}).values())
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("mailbox watcher for %s/%s failed", user, folder)

    def _remove(self, key: tuple[str, str], handle: MailboxWatch) -> None:
        with self._lock:
            callbacks = self._callbacks.get(key)
            if callbacks is not None:
                callbacks.pop(handle, None)
                if not callbacks:
                    del self._callbacks[key]


# -- a user's folders ----------------------------------------------------------


class UserMailboxes:
    """One user's folders: INBOX at ``path`` (``ROOT/mail/USER/Maildir``), the rest in it.

    ``quota_bytes`` limits the total size of all folders' messages (hard
    links count once per name, as Maildir++ quota does); ``None`` = no limit.
    INBOX is created on first use. See the module documentation for names.
    """

    def __init__(
        self,
        path: Path,
        user: str,
        *,
        quota_bytes: int | None = None,
        watchers: MailboxWatchers | None = None,
    ) -> None:
        self.path = Path(path)
        self.user = user
        self.quota_bytes = quota_bytes
        self.watchers = watchers if watchers is not None else MailboxWatchers()

    def __repr__(self) -> str:
        return f"UserMailboxes({str(self.path)!r}, {self.user!r})"

    # -- folders

    def folder_path(self, name: str) -> Path:
        """Where folder ``name`` lives (whether or not it exists)."""
        name = _checked_name(name)
        return self.path if name == INBOX else self.path / ("." + name)

    def list_folders(self) -> list[str]:
        """INBOX, then every folder, sorted. After DELETE a parent may be missing
        while its children remain (RFC 3501 6.3.4); LIST shows it \\NonExistent."""
        self._ensure_inbox()
        names = []
        with os.scandir(self.path) as entries:
            for entry in entries:
                if not entry.name.startswith(".") or entry.name.startswith(".."):
                    continue
                name = entry.name[1:]
                try:
                    name = _checked_name(name)
                except MailboxError:
                    continue
                if name != INBOX and os.path.isdir(os.path.join(entry.path, "cur")):
                    names.append(name)
        return [INBOX, *sorted(names)]

    def exists(self, name: str) -> bool:
        try:
            path = self.folder_path(name)
        except MailboxError:
            return False
        return _checked_name(name) == INBOX or (path / "cur").is_dir()

    def create(self, name: str, special_use: Sequence[str] = ()) -> None:
        """Create folder ``name`` and any missing parents (RFC 3501 6.3.3), with
        ``special_use`` (RFC 6154 3: IMAP's CREATE ... (USE (\\Archive))), which the
        caller has checked.

        A trailing "." (a client declaring it will create children) is dropped.
        ALREADYEXISTS if it exists — INBOX always does.
        """
        if name.endswith(DELIMITER) and len(name) > 1:
            name = name[:-1]
        name = _checked_name(name)
        if name == INBOX:
            raise MailboxError("ALREADYEXISTS", "INBOX always exists")
        self._ensure_inbox()
        with self._user_lock():
            if self.exists(name):
                raise MailboxError("ALREADYEXISTS", f"mailbox {name} already exists")
            for parent in _parents(name):
                if not self.exists(parent):
                    self._make_folder(parent)
            self._make_folder(name, special_use)

    def create_default_folders(self, uses: Mapping[str, str]) -> None:
        """Create and subscribe each folder of ``uses`` (name -> its special use) that is
        missing, once in the Maildir's life (as Dovecot's ``auto = subscribe``, but only
        the first time): a marker file remembers it was done, so a folder the user
        deleted or renamed stays so, and a renamed one keeps its use."""
        marker = self.path / DEFAULT_FOLDERS_MARKER_NAME
        if _read_text(marker) == _SPECIAL_USES_WRITTEN:
            return
        self._ensure_inbox()
        with self._user_lock():
            done = _read_text(marker)
            if done == _SPECIAL_USES_WRITTEN:
                return
            if done is None:
                subscribed = self.subscriptions
                for name, use in uses.items():
                    name = _checked_name(name)
                    if not self.exists(name):
                        for parent in _parents(name):
                            if not self.exists(parent):
                                self._make_folder(parent)
                        self._make_folder(name, (use,))
                    elif not self.special_use(name):
                        self._write_special_use(name, (use,))
                    if name not in subscribed:
                        subscribed.append(name)
                self._write_subscriptions(subscribed)
            else:  # made before uses were kept per folder: those still there get theirs
                for name, use in uses.items():
                    if self.exists(name) and not self.special_use(name):
                        self._write_special_use(name, (use,))
            replace_file(marker, _SPECIAL_USES_WRITTEN.encode(),
                         self.path / (DEFAULT_FOLDERS_MARKER_NAME + ".tmp"))  # fmt: skip

    def special_use(self, name: str) -> tuple[str, ...]:
        """Folder ``name``'s special uses (RFC 6154 2), as given when it was made."""
        text = _read_text(self.folder_path(name) / SPECIAL_USE_NAME)
        return tuple(line for line in (text or "").split("\n") if line)

    def delete(self, name: str) -> None:
        """Delete folder ``name`` and its messages; its children stay (RFC 3501 6.3.4).

        INBOX cannot be deleted (CANNOT); a missing folder is NONEXISTENT.
        Sessions that have it open get NONEXISTENT from their next refresh.
        """
        name = _checked_name(name)
        if name == INBOX:
            raise MailboxError("CANNOT", "INBOX cannot be deleted")
        with self._user_lock():
            if not self.exists(name):
                raise MailboxError("NONEXISTENT", f"no mailbox {name}")
            # Renamed away first so the folder vanishes at once and whole, even if
            # removing its files is slow or interrupted (a leftover is skipped by
            # listings and removed by the next delete).
            trash = self.path / f"{_DELETED_PREFIX}{unique_name()}"
            os.rename(self.folder_path(name), trash)
            fsync_directory(self.path)
        self._remove_deleted()
        self.watchers.notify(self.user, name)

    def rename(self, old: str, new: str) -> None:
        """Rename folder ``old`` and its children to ``new`` (RFC 3501 6.3.5).

        Renaming INBOX moves its messages, flags and keywords kept, into the new
        folder (fresh UIDs there) and leaves INBOX empty; INBOX's children stay.
        NONEXISTENT if ``old`` is missing, ALREADYEXISTS if ``new`` (or one of
        the renamed children's new names) exists, CANNOT to rename a folder into
        itself. Missing parents of ``new`` are created.
        """
        old, new = _checked_name(old), _checked_name(new)
        self._ensure_inbox()
        with self._user_lock():
            if not self.exists(old):
                raise MailboxError("NONEXISTENT", f"no mailbox {old}")
            if new == INBOX or self.exists(new):
                raise MailboxError("ALREADYEXISTS", f"mailbox {new} already exists")
            # INBOX is the exception: only its messages move, so "INBOX.Old" is fine.
            if new.startswith(old + DELIMITER) and old != INBOX:
                raise MailboxError("CANNOT", f"cannot rename {old} into itself")
            if old == INBOX:
                for parent in _parents(new):
                    if not self.exists(parent):
                        self._make_folder(parent)
                self._make_folder(new)
                self._move_inbox_messages(self.folder_path(new))
                renamed = [(old, new)]
            else:
                children = [n for n in self.list_folders() if n.startswith(old + DELIMITER)]
                renamed = [(name, new + name[len(old) :]) for name in [old, *children]]
                for _, to_name in renamed[1:]:
                    if self.exists(to_name):
                        raise MailboxError("ALREADYEXISTS", f"mailbox {to_name} already exists")
                for parent in _parents(new):
                    if not self.exists(parent):
                        self._make_folder(parent)
                for from_name, to_name in renamed:
                    os.rename(self.folder_path(from_name), self.folder_path(to_name))
                fsync_directory(self.path)
        for from_name, to_name in renamed:
            self.watchers.notify(self.user, from_name)
            self.watchers.notify(self.user, to_name)

    # -- subscriptions

    @property
    def subscriptions(self) -> list[str]:
        """Subscribed names in the order subscribed (the ``subscriptions`` file).

        A subscription may name a folder that does not exist (RFC 3501 6.3.6);
        DELETE and RENAME leave subscriptions alone, as Dovecot does.
        """
        try:
            text = (self.path / SUBSCRIPTIONS_NAME).read_text("utf-8", "surrogateescape")
        except FileNotFoundError:
            return []
        return [line for line in text.split("\n") if line]

    def subscribe(self, name: str) -> None:
        name = _checked_name(name)
        self._ensure_inbox()
        with self._user_lock():
            names = self.subscriptions
            if name not in names:
                self._write_subscriptions([*names, name])

    def unsubscribe(self, name: str) -> None:
        """Remove ``name``; nothing happens if it was not subscribed."""
        name = _canonical_name(name)
        self._ensure_inbox()
        with self._user_lock():
            names = self.subscriptions
            if name in names:
                self._write_subscriptions([n for n in names if n != name])

    # -- opening

    def open(
        self, name: str, *, read_only: bool = False, save_rebuilt_later: bool = False
    ) -> Mailbox:
        """Folder ``name`` for a session (IMAP SELECT, or EXAMINE if ``read_only``; POP3).

        Already refreshed: messages, UIDVALIDITY and \\Recent are known.
        NONEXISTENT if the folder does not exist. With ``save_rebuilt_later``, an
        index rebuilt by the refresh is written when the caller calls the mailbox's
        ``save_deferred()``, which it must do at once after answering.
        """
        mailbox = self._mailbox(name, "NONEXISTENT", read_only=read_only, claim_recent=True)
        mailbox.refresh(save_rebuilt_later=save_rebuilt_later)
        return mailbox

    def target(self, name: str) -> Mailbox:
        """Folder ``name`` as the destination of APPEND, COPY or MOVE; TRYCREATE if missing.

        Refreshed without claiming \\Recent, so the messages added stay \\Recent
        for the next session to select it.
        """
        mailbox = self._mailbox(name, "TRYCREATE", read_only=False, claim_recent=False)
        mailbox.refresh()
        return mailbox

    # -- quota and locks

    def usage(self) -> int:
        """Bytes used by the messages in all folders."""
        total = 0
        for folder in [self.path, *(self.path / ("." + n) for n in self.list_folders()[1:])]:
            for subdir in ("new", "cur"):
                with contextlib.suppress(FileNotFoundError), os.scandir(folder / subdir) as entries:
                    for entry in entries:
                        if entry.name.startswith("."):
                            continue
                        with contextlib.suppress(FileNotFoundError):
                            if entry.is_file(follow_symlinks=False):
                                total += entry.stat(follow_symlinks=False).st_size
        return total

    def check_quota(self, additional: int) -> None:
        """OVERQUOTA if ``additional`` more bytes would exceed the quota (for a pre-check)."""
        if self.quota_bytes is not None and self.usage() + additional > self.quota_bytes:
            raise MailboxError("OVERQUOTA", "the message would exceed the mailbox quota")

    @contextlib.contextmanager
    def quota_reserved(self, additional: int) -> Iterator[None]:
        """Check the quota and keep the user lock while the caller adds ``additional`` bytes,
        so concurrent appends cannot both fit in the same remaining space."""
        if self.quota_bytes is None:
            yield
            return
        with self._user_lock():
            self.check_quota(additional)
            yield

    @property
    def mbox_path(self) -> Path:
        """``ROOT/mail/USER/mbox``. When it is a file, POP3 serves it as the user's maildrop
        instead of INBOX (:mod:`mailtalk.store.mbox`), under the same maildrop lock; IMAP and
        delivery keep to the Maildir."""
        return self.path.parent / MBOX_NAME

    def lock_maildrop(self) -> MaildropLock:
        """POP3's lock on this user's maildrop; MailboxError("INUSE") at once if held."""
        self._ensure_inbox()
        return MaildropLock(self.path / MAILDROP_LOCK_NAME)

    # -- internals

    def _ensure_inbox(self) -> None:
        Maildir(self.path).create()

    def _user_lock(self) -> FileLock:
        return FileLock(self.path / USER_LOCK_NAME)

    def _mailbox(
        self, name: str, missing: ResponseCode, *, read_only: bool, claim_recent: bool
    ) -> Mailbox:
        # Imported here: mailbox.py imports this module, for the names it re-exports.
        from mailtalk.store.mailbox import Mailbox

        name = _checked_name(name)
        if name == INBOX:
            self._ensure_inbox()
        elif not self.exists(name):
            raise MailboxError(missing, f"no mailbox {name}")
        return Mailbox(
            self, name, self.folder_path(name), read_only=read_only, claim_recent=claim_recent
        )

    def _make_folder(self, name: str, special_use: Sequence[str] = ()) -> None:
        """Create the folder: built under a temporary name, then renamed into place whole
        (with its special uses: no listing sees it without them)."""
        building = self.path / f"{_CREATING_PREFIX}{unique_name()}"
        try:
            Maildir(building).create()
            (building / FOLDER_MARKER_NAME).touch(MESSAGE_MODE)
            if special_use:
                _write_uses(building, special_use)
            os.rename(building, self.folder_path(name))
        except OSError as error:
            import shutil  # here: it loads bz2, lzma and zlib (0.5 MiB a server holds for nothing)

            shutil.rmtree(building, ignore_errors=True)
            if error.errno in (errno.EEXIST, errno.ENOTEMPTY):
                raise MailboxError("ALREADYEXISTS", f"mailbox {name} already exists") from None
            raise store_error(error, "creating a mailbox", building) from error
        fsync_directory(self.path)

    def _remove_deleted(self) -> None:
        with os.scandir(self.path) as entries:
            leftovers = [e.path for e in entries if e.name.startswith(_DELETED_PREFIX)]
        for path in leftovers:
            import shutil  # here: see _make_folder

            shutil.rmtree(path, ignore_errors=True)

    def _move_inbox_messages(self, folder: Path) -> None:
        with (
            locked_index(self.path, self.path, "NONEXISTENT") as inbox,
            locked_index(folder, self.path, "NONEXISTENT") as target,
        ):
            for record in list(inbox.index.records()):
                entry = inbox.files.get(record.base)
                if entry is None:
                    continue
                subdir, filename = entry
                try:
                    os.rename(self.path / subdir / filename, folder / subdir / filename)
                except FileNotFoundError:
                    continue  # expunged meanwhile by an outside reader
                inbox.remove(record.base)
                target.add(
                    subdir,
                    filename,
                    record.size,
                    record.rfc822_size,
                    record.internaldate,
                    record.keywords,
                    record.unterminated,
                )
            for subdir in ("new", "cur"):
                fsync_directory(folder / subdir)
                fsync_directory(self.path / subdir)

    def _write_special_use(self, name: str, uses: Sequence[str]) -> None:
        _write_uses(self.folder_path(name), uses)

    def _write_subscriptions(self, names: list[str]) -> None:
        data = "".join(name + "\n" for name in names).encode("utf-8", "surrogateescape")
        replace_file(
            self.path / SUBSCRIPTIONS_NAME, data, self.path / (SUBSCRIPTIONS_NAME + ".tmp")
        )


def _write_uses(folder: Path, uses: Sequence[str]) -> None:
    data = "".join(use + "\n" for use in uses).encode()
    replace_file(folder / SPECIAL_USE_NAME, data, folder / (SPECIAL_USE_NAME + ".tmp"))


def _read_text(path: Path) -> str | None:
    """The file's text; None if there is none."""
    try:
        return path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return None


class MailStore:
    """The mailboxes under a server root ``ROOT`` (``ROOT/mail/USER/Maildir``).

    ``watchers`` is shared by every user's folders: give the same object to
    the SMTP delivery path so it can ``notify(user, "INBOX")``.
    """

    def __init__(self, root: Path, *, watchers: MailboxWatchers | None = None) -> None:
        self.root = Path(root)
        self.watchers = watchers if watchers is not None else MailboxWatchers()

    def user_mailboxes(self, user: str, *, quota_bytes: int | None = None) -> UserMailboxes:
        """``user``'s folders; a user name that is not a plain directory name raises ValueError."""
        return UserMailboxes(
            user_maildir_path(self.root, user),
            user,
            quota_bytes=quota_bytes,
            watchers=self.watchers,
        )

    def lock_maildrop(self, user: str) -> MaildropLock:
        """POP3's maildrop lock for ``user``: see :meth:`UserMailboxes.lock_maildrop`."""
        return self.user_mailboxes(user).lock_maildrop()
