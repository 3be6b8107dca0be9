"""QRESYNC (RFC 7162 section 3.2): quick resynchronisation of a mailbox.

After ``ENABLE QRESYNC`` (which enables CONDSTORE too) a session is told of expunges
with ``VANISHED uid-set`` instead of ``n EXPUNGE``; SELECT/EXAMINE take
``(QRESYNC (uidvalidity modseq [known-uids]))`` and answer, when the UIDVALIDITY is
still the client's, ``VANISHED (EARLIER)`` for what was expunged since that MODSEQ
and a FETCH (UID, FLAGS, MODSEQ) for each message changed since; ``UID FETCH ...
(CHANGEDSINCE n VANISHED)`` does the same for a UID set. Which expunges are still
known is the store's (:mod:`mailtalk.store.vanished`: the last 2000 per folder; for
an older MODSEQ every UID below UIDNEXT not in the folder is named, as RFC 7162
3.2.5.2 allows). The optional sequence-match data of SELECT is read and not used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from mailtalk.servers.imap.message_args import SequenceSet, parse_modseq, parse_sequence_set
from mailtalk.servers.imap.tokens import Atom, IMAPSyntaxError, Value, describe

if TYPE_CHECKING:
    from mailtalk.servers.imap.server import IMAPServerProtocol
    from mailtalk.store.mailbox import Mailbox

__all__ = ["QresyncParameter", "parse_qresync", "resync", "vanished_line", "vanished_uids"]


@dataclass(frozen=True)
class QresyncParameter:
    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None


def parse_qresync(value: Value) -> QresyncParameter:
    """``(uidvalidity modseq [known-uids [(seq-match)]])``, SELECT's QRESYNC value."""
    if not isinstance(value, list) or not 2 <= len(value) <= 4:
        raise IMAPSyntaxError("QRESYNC takes (uidvalidity modseq [known-uids])")
    first = value[0]
    if not (isinstance(first, Atom) and first.value.isascii() and first.value.isdigit()
            and 0 < int(first.value) < 2**32):
        raise IMAPSyntaxError(f"QRESYNC: bad UIDVALIDITY {describe(first)}")
    known = None
    if len(value) >= 3 and not isinstance(value[2], list):
        known = parse_sequence_set(value[2])
    return QresyncParameter(int(first.value), parse_modseq(value[1], zero=False), known)


def vanished_uids(mailbox: Mailbox, modseq: int, within: SequenceSet | None) -> list[int]:
    uids = mailbox.vanished_since(modseq)
    if within is None:
        return uids
    members = within.members(max(mailbox.uidnext - 1, 1))
    return [uid for uid in uids if uid in members]


def vanished_line(uids: list[int], *, earlier: bool) -> str:
    from mailtalk.servers.imap.selected import uid_set

    return f"VANISHED {'(EARLIER) ' if earlier else ''}{uid_set(uids)}"


def resync(session: IMAPServerProtocol, mailbox: Mailbox, parameter: QresyncParameter) -> None:
    """SELECT's answer to QRESYNC, before its tagged OK (RFC 7162 3.2.5.1)."""
    if parameter.uidvalidity != mailbox.uidvalidity:
        return  # the client must resync from scratch: nothing to say
    gone = vanished_uids(mailbox, parameter.modseq, parameter.known_uids)
    if gone:
        session.untagged(vanished_line(gone, earlier=True))
    view = mailbox.view  # in columns: no message object made for those unchanged
    for position, modseq in enumerate(view.modseqs):
        if modseq > parameter.modseq:
            flags = " ".join(sorted(view.flags(position)))
            uid = view.uids[position]
            session.untagged(f"{position + 1} FETCH (UID {uid} FLAGS ({flags}) MODSEQ ({modseq}))")
