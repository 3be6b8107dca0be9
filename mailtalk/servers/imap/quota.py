"""QUOTA (RFC 9208): GETQUOTAROOT, GETQUOTA and SETQUOTA on the user's one quota root.

``mailtalk serve --quota BYTES`` limits the total size of a user's messages in
all folders (:meth:`UserMailboxes.check_quota`); that is one quota root,
``User quota`` (Dovecot's name for it), holding every mailbox, with one resource,
STORAGE, counted in units of 1024 octets as RFC 9208 5.1 says (rounded down, as
Dovecot does). The limit is the server's to set: SETQUOTA is refused with
``NO [NOPERM]`` and QUOTASET is not advertised. APPEND and COPY that would go
over it are refused ``NO [OVERQUOTA]`` by the store; MOVE is not (the usage does
not grow).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from mailtalk.protocols.imap_events import Command
from mailtalk.servers.imap.mailboxes import mailbox_arg, quote
from mailtalk.servers.imap.tokens import Atom, IMAPSyntaxError, astring, tokenize
from mailtalk.store.mailbox import MailboxError

if TYPE_CHECKING:
    from mailtalk.servers.imap.server import IMAPServerProtocol

__all__ = ["QUOTA_ROOT", "get_quota", "get_quota_root", "set_quota"]

QUOTA_ROOT: Final = "User quota"


def _quota_line(session: IMAPServerProtocol) -> str:
    limit = session.store.quota_bytes
    assert limit is not None
    used = session.store.usage()
    return f"QUOTA {quote(QUOTA_ROOT)} (STORAGE {used // 1024} {limit // 1024})"


def get_quota_root(session: IMAPServerProtocol, command: Command) -> None:
    values = tokenize(command.args, command.literals)
    if len(values) != 1:
        raise IMAPSyntaxError("GETQUOTAROOT takes one mailbox name")
    name = mailbox_arg(session, values[0])
    if not session.store.exists(name):
        raise MailboxError("NONEXISTENT", "Mailbox doesn't exist")
    shown = astring(values[0], "the mailbox name")
    if session.store.quota_bytes is None:
        # No quota: the mailbox has no quota root (RFC 9208 4.1.2).
        session.untagged(f"QUOTAROOT {quote(shown)}")
    else:
        session.untagged(f"QUOTAROOT {quote(shown)} {quote(QUOTA_ROOT)}")
        session.untagged(_quota_line(session))
    session.done(command, "Getquotaroot completed")


def get_quota(session: IMAPServerProtocol, command: Command) -> None:
    values = tokenize(command.args, command.literals)
    if len(values) != 1:
        raise IMAPSyntaxError("GETQUOTA takes one quota root")
    root = astring(values[0], "the quota root")
    if session.store.quota_bytes is None or root != QUOTA_ROOT:
        raise MailboxError("NONEXISTENT", f"No such quota root; this server has {QUOTA_ROOT!r}"
                           if session.store.quota_bytes is not None else "No quota is set")
    session.untagged(_quota_line(session))
    session.done(command, "Getquota completed")


def set_quota(session: IMAPServerProtocol, command: Command) -> None:
    values = tokenize(command.args, command.literals)
    if len(values) != 2 or not isinstance(values[1], list) or len(values[1]) % 2:
        raise IMAPSyntaxError("SETQUOTA takes a quota root and a list of resource limits")
    astring(values[0], "the quota root")
    pairs = values[1]
    for resource, limit in zip(pairs[::2], pairs[1::2], strict=True):
        if not isinstance(resource, Atom) or not isinstance(limit, Atom) \
                or not limit.value.isdigit():
            raise IMAPSyntaxError("SETQUOTA limits are a resource name and a number")
    session.tagged(command.tag, "NO", "NOPERM",
                   "Quota limits are set by the server (mailtalk serve --quota)")
