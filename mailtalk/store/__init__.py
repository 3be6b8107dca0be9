"""Where the reference servers keep mail: users' Maildirs and the relay queue.

Under a server root ``ROOT``::

    ROOT/mail/USER/Maildir/{tmp,new,cur}    a user's INBOX; Maildir++ folders inside it
    ROOT/queue/{tmp,messages,envelopes}     mail to relay onward

Delivery is crash-safe: see :mod:`mailtalk.store.maildir`. The POP3 and IMAP
servers read the same Maildirs through :mod:`mailtalk.store.mailbox` (folders,
UIDs, flags, quota, the maildrop lock). Stdlib only.
"""

from __future__ import annotations

from pathlib import Path

from mailtalk.store.mailbox import (
    PERMANENT_FLAGS,
    SYSTEM_FLAGS,
    Appender,
    Changes,
    ChangeToken,
    Mailbox,
    MailboxError,
    MailboxWatch,
    MailboxWatchers,
    MaildropLock,
    MailStore,
    MessageInfo,
    ResponseCode,
    RFC822SizeCounter,
    UserMailboxes,
    flags_to_info,
    info_to_flags,
    normalize_flags,
    rfc822_size_of,
)
from mailtalk.store.maildir import (
    CRLFToLF,
    Delivery,
    DeliveryStateError,
    DeliveryTarget,
    Maildir,
    StoreError,
    StoreFullError,
    escape_hostname,
    unique_name,
)
from mailtalk.store.queue import Envelope, Queue, QueuedMessage, QueueTarget

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
        if user in ("", ".", "..") or "/" in user or "\0" in user:
            raise ValueError(f"not a usable mailbox user name: {user!r}")
        return Maildir(self.root / "mail" / user / "Maildir")

    @property
    def queue(self) -> Queue:
        return Queue(self.root / "queue")
