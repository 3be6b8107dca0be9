"""Where the reference servers keep mail: users' Maildirs and the relay queue.

Under a server root ``ROOT``::

    ROOT/mail/USER/Maildir/{tmp,new,cur}    a user's INBOX; Maildir++ folders inside it
    ROOT/mail/USER/mbox                     if there is one: the user's POP3 maildrop
    ROOT/queue/{tmp,messages,envelopes}     mail to relay onward

The modules, from the disk up:

    errors       what the store raises: StoreError (the disk), MailboxError (a refusal)
    filesystem   durable file steps: fsync a directory, replace a file, link or copy
    maildir      crash-safe delivery to Maildirs (and, through it, to the queue)
    commits      where a server commits deliveries: off its event loop, in batches
    queue        the relay queue: messages and their envelopes
    flags        IMAP flags and the Maildir file names that carry them
    sizes        a message's size as stored and as RFC822.SIZE
    locks        the flock locks and the order they are taken in
    index        a folder's ``mailtalk-uidlist``: UIDs, sizes, dates, keywords
    headers      a message's header block, and a cache of them for IMAP FETCH
    append       adding a message to a folder (APPEND, and what COPY shares)
    reading      what a session sees of a folder and reads from it (its view, refresh)
    mailbox      one session's view of one folder and its changes (IMAP SELECT, POP3)
    mbox         an mbox file as a POP3 maildrop (qpopper's /var/mail/USER)
    users        a user's folders, subscriptions, quota; MailStore for all users
    layout       where a root keeps each user's Maildir and the queue (StoreLayout)

The SMTP server delivers through :mod:`~mailtalk.store.maildir`; the POP3 and
IMAP servers read the same Maildirs through :mod:`~mailtalk.store.users` and
:mod:`~mailtalk.store.mailbox`. The names below are importable from here, each
loading its own module on first use: the SMTP server delivers without ever loading
the folder, index and mailbox code that only POP3 and IMAP need (see
tests/servers/test_serve_imports.py). Stdlib only.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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
    "user_maildir_path",
]

if TYPE_CHECKING:
    from mailtalk.store.append import Appender
    from mailtalk.store.errors import MailboxError, ResponseCode, StoreError, StoreFullError
    from mailtalk.store.flags import (
        PERMANENT_FLAGS,
        SYSTEM_FLAGS,
        flags_to_info,
        info_to_flags,
        normalize_flags,
    )
    from mailtalk.store.layout import StoreLayout, user_maildir_path
    from mailtalk.store.locks import MaildropLock
    from mailtalk.store.mailbox import Mailbox, MessageInfo
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
    from mailtalk.store.reading import Changes, ChangeToken
    from mailtalk.store.sizes import RFC822SizeCounter, rfc822_size_of
    from mailtalk.store.users import MailboxWatch, MailboxWatchers, MailStore, UserMailboxes

# The names importable from here, by the module that defines each: a name's module is
# imported when the name is first asked for.
_EXPORTS: dict[str, tuple[str, ...]] = {
    "append": ("Appender",),
    "errors": ("MailboxError", "ResponseCode", "StoreError", "StoreFullError"),
    "flags": ("PERMANENT_FLAGS", "SYSTEM_FLAGS", "flags_to_info", "info_to_flags",
              "normalize_flags"),
    "layout": ("StoreLayout", "user_maildir_path"),
    "locks": ("MaildropLock",),
    "mailbox": ("Mailbox", "MessageInfo"),
    "maildir": ("CRLFToLF", "Delivery", "DeliveryStateError", "DeliveryTarget", "Maildir",
                "escape_hostname", "unique_name"),
    "queue": ("Envelope", "Queue", "QueuedMessage", "QueueTarget"),
    "reading": ("ChangeToken", "Changes"),
    "sizes": ("RFC822SizeCounter", "rfc822_size_of"),
    "users": ("MailStore", "MailboxWatch", "MailboxWatchers", "UserMailboxes"),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    """``from mailtalk.store import Maildir`` loads store.maildir alone (PEP 562)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is an ordinary one
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_MODULE_OF})
