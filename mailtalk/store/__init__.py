"""Where the reference servers keep mail: users' Maildirs and the relay queue.

Under a server root ``ROOT``::

    ROOT/mail/USER/Maildir/{tmp,new,cur}    a user's INBOX; Maildir++ folders inside it
    ROOT/mail/USER/mbox                     if there is one: the user's POP3 maildrop
    ROOT/queue/{tmp,messages,envelopes}     mail to relay onward

The modules, from the disk up:

    errors       what the store raises: StoreError (the disk), MailboxError (a refusal)
    filesystem   durable file steps: fsync a directory, replace a file, link or copy
    maildir      crash-safe delivery to Maildirs (and, through it, to the queue)
    queue        the relay queue: messages and their envelopes
    flags        IMAP flags and the Maildir file names that carry them
    sizes        a message's size as stored and as RFC822.SIZE
    locks        the flock locks and the order they are taken in
    index        a folder's ``mailtalk-uidlist``: UIDs, sizes, dates, keywords
    headers      a message's header block, and a cache of them for IMAP FETCH
    append       adding a message to a folder (APPEND, and what COPY shares)
    mailbox      one session's view of one folder (IMAP SELECT, POP3)
    mbox         an mbox file as a POP3 maildrop (qpopper's /var/mail/USER)
    users        a user's folders, subscriptions, quota; MailStore for all users

The SMTP server delivers through :mod:`~mailtalk.store.maildir`; the POP3 and
IMAP servers read the same Maildirs through :mod:`~mailtalk.store.users` and
:mod:`~mailtalk.store.mailbox`. The names below are importable from here.
Stdlib only.
"""

from __future__ import annotations

from pathlib import Path

from mailtalk.store.append import Appender
from mailtalk.store.errors import MailboxError, ResponseCode, StoreError, StoreFullError
from mailtalk.store.flags import (
    PERMANENT_FLAGS,
    SYSTEM_FLAGS,
    flags_to_info,
    info_to_flags,
    normalize_flags,
)
from mailtalk.store.locks import MaildropLock
from mailtalk.store.mailbox import Changes, ChangeToken, Mailbox, MessageInfo
from mailtalk.store.maildir import (
    CRLFToLF,
    Delivery,
    DeliveryStateError,
    DeliveryTarget,
    Maildir,
    escape_hostname,
    unique_name,
)
from mailtalk.store.queue import Envelope, Queue, QueuedMessage, QueueTarget
from mailtalk.store.sizes import RFC822SizeCounter, rfc822_size_of
from mailtalk.store.users import (
    MailboxWatch,
    MailboxWatchers,
    MailStore,
    UserMailboxes,
    user_maildir_path,
)

__all__ = [
    "PERMANENT_FLAGS",
    "SYSTEM_FLAGS",
    "Appender",
    "CRLFToLF",
    "ChangeToken",
    "Changes",
    "Delivery",
    "DeliveryStateError",
    "DeliveryTarget",
    "Envelope",
    "MailStore",
    "Mailbox",
    "MailboxError",
    "MailboxWatch",
    "MailboxWatchers",
    "Maildir",
    "MaildropLock",
    "MessageInfo",
    "Queue",
    "QueueTarget",
    "QueuedMessage",
    "RFC822SizeCounter",
    "ResponseCode",
    "StoreError",
    "StoreFullError",
    "StoreLayout",
    "UserMailboxes",
    "escape_hostname",
    "flags_to_info",
    "info_to_flags",
    "normalize_flags",
    "rfc822_size_of",
    "unique_name",
]


class StoreLayout:
    """The store under a server root: ``maildir(user)`` and ``queue``. Creates nothing."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def maildir(self, user: str) -> Maildir:
        """``user``'s inbox, ``ROOT/mail/USER/Maildir``.

        ``user`` becomes a directory name, so one that could leave ``ROOT/mail``
        or that is not a plain name ("", ".", "..", a "/" or NUL) is refused with
        ValueError; mapping addresses to users is the server's job.
        """
        return Maildir(user_maildir_path(self.root, user))

    @property
    def queue(self) -> Queue:
        return Queue(self.root / "queue")

    def remove_crash_leftovers(self) -> list[Path]:
        """Remove what crashed deliveries left, and return it: the tmp/ files of every
        user's Maildir and Maildir++ folder not touched for 36 hours (the Maildir spec:
        a delivery under way keeps writing its file), and the queue's (``Queue.recover``)."""
        removed: list[Path] = []
        mail = self.root / "mail"
        for tmp in [*sorted(mail.glob("*/Maildir/tmp")), *sorted(mail.glob("*/Maildir/.*/tmp"))]:
            if tmp.is_dir():
                removed += Maildir(tmp.parent).remove_stale_tmp()
        if self.queue.tmp_dir.is_dir():
            removed += self.queue.recover()
        return removed
