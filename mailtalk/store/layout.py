"""Where a server root keeps mail: each user's Maildir and the relay queue.

``ROOT/mail/USER/Maildir`` is a user's INBOX and ``ROOT/queue`` the mail to relay
onward (see :mod:`mailtalk.store`). Only the Maildir delivery code is loaded here:
the queue's is loaded when the queue is first used, and the folder and index code
of POP3 and IMAP never, so a server that only accepts SMTP starts without them.
Stdlib only.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mailtalk.store.maildir import Maildir

if TYPE_CHECKING:
    from mailtalk.store.queue import Queue

QUEUE_DIR = "queue"


def user_maildir_path(root: Path, user: str) -> Path:
    """``user``'s Maildir under the server root ``root``: ``ROOT/mail/USER/Maildir``.

    ``user`` becomes a directory name, so one that could leave ``ROOT/mail``
    or that is not a plain name ("", ".", "..", a "/" or NUL) is refused with
    ValueError; mapping addresses to users is the server's job.
    """
    if user in ("", ".", "..") or "/" in user or "\0" in user:
        raise ValueError(f"not a usable mailbox user name: {user!r}")
    return Path(root) / "mail" / user / "Maildir"


class StoreLayout:
    """The store under a server root: ``maildir(user)`` and ``queue``. Creates nothing."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def maildir(self, user: str) -> Maildir:
        """``user``'s inbox (ValueError for a name :func:`user_maildir_path` refuses)."""
        return Maildir(user_maildir_path(self.root, user))

    @property
    def queue_path(self) -> Path:
        return self.root / QUEUE_DIR

    @property
    def queue(self) -> Queue:
        from mailtalk.store.queue import Queue

        return Queue(self.queue_path)

    def remove_crash_leftovers(self) -> list[Path]:
        """Remove what crashed deliveries left, and return it: the tmp/ files of every
        user's Maildir and Maildir++ folder not touched for 36 hours (the Maildir spec:
        a delivery under way keeps writing its file), and the queue's (``Queue.recover``)."""
        removed: list[Path] = []
        mail = self.root / "mail"
        for tmp in [*sorted(mail.glob("*/Maildir/tmp")), *sorted(mail.glob("*/Maildir/.*/tmp"))]:
            if tmp.is_dir():
                removed += Maildir(tmp.parent).remove_stale_tmp()
        if self.queue_path.is_dir() and self.queue.tmp_dir.is_dir():
            removed += self.queue.recover()
        return removed
