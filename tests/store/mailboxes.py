"""What the mailbox tests share: a message, a delivery as the SMTP server makes it, a
restarted server's view, and the index file's text. The fixtures ``store`` and ``alice``
are in conftest.py."""

from __future__ import annotations

from pathlib import Path

from mailtalk.store import Delivery, Maildir, MailStore, UserMailboxes

MESSAGE = b"From: a@example.org\nSubject: hello\n\nbody line\n"


def deliver(mailboxes: UserMailboxes, data: bytes = MESSAGE, folder: Path | None = None) -> Path:
    """Deliver as the SMTP server does: through a Delivery into new/."""
    maildir = Maildir(folder if folder is not None else mailboxes.path)
    maildir.create()
    with Delivery([maildir]) as delivery:
        delivery.write(data)
        (path,) = delivery.commit()
    return path


def reopened(mailboxes: UserMailboxes) -> UserMailboxes:
    """The same user's mailboxes as a restarted server sees them: nothing kept in memory."""
    return MailStore(mailboxes.path.parents[2]).user_mailboxes(mailboxes.user)


def index_text(folder: Path) -> str:
    return (folder / "mailtalk-uidlist").read_text()
