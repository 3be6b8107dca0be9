"""The IMAP commands on mailboxes (RFC 3501 6.3), valid once logged in.

SELECT and EXAMINE, CREATE, DELETE, RENAME, SUBSCRIBE, UNSUBSCRIBE, LIST, LSUB,
STATUS, NAMESPACE (RFC 2342) and APPEND, each a function of the session and the
command, on the user's Maildir++ folders (:class:`~mailtalk.store.mailbox.UserMailboxes`).
Mailbox names are stored in modified UTF-7; once the client enabled UTF8=ACCEPT
(RFC 6855) they are read and shown as UTF-8. A name that makes a mailbox (CREATE,
RENAME, SUBSCRIBE) is checked as Dovecot checks it (:func:`new_mailbox_arg`), so
every stored name decodes. A large APPEND literal is streamed to
the folder's tmp/ as it arrives (:func:`open_append_stream`), so a 200 MB message
never sits in memory.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Final

from mailtalk.protocols.imap_events import Command
from mailtalk.servers.imap.mailbox_args import (
    ListRequest,
    decode_mailbox_name,
    encode_mailbox_name,
    list_pattern_matches,
    new_mailbox_name_problem,
    parse_list,
    parse_list_command,
    parse_mailbox,
    parse_status,
)
from mailtalk.servers.imap.message_args import parse_append
from mailtalk.servers.imap.qresync import QresyncParameter, parse_qresync, resync
from mailtalk.servers.imap.tokens import (
    Atom,
    IMAPSyntaxError,
    String,
    Value,
    astring,
    describe,
    tokenize,
    wire_bytes,
)
from mailtalk.store.flags import MAX_KEYWORDS
from mailtalk.store.mailbox import PERMANENT_FLAGS, MailboxError

if TYPE_CHECKING:
    from mailtalk.servers.imap.server import IMAPServerProtocol
    from mailtalk.store.mailbox import Mailbox

log = logging.getLogger("mailtalk.imap")

__all__ = [
    "DELIMITER",
    "SPECIAL_USE",
    "append",
    "create",
    "delete",
    "list_mailboxes",
    "mailbox_arg",
    "namespace",
    "new_mailbox_arg",
    "open_append_stream",
    "quote",
    "rename",
    "select",
    "status",
    "subscribe",
    "unsubscribe",
]

DELIMITER: Final = "."
CHUNK: Final = 64 * 1024  # an APPEND held in memory is written to the folder in these
# An APPEND literal larger than this goes straight to the folder's tmp/ as it
# arrives, so a 200 MB message never sits in memory.
STREAM_LITERAL_OVER: Final = 256 * 1024
# RFC 6154 SPECIAL-USE: these folders are made at a user's first login
# (UserMailboxes.create_default_folders) with their use, which the folder keeps (a
# RENAME carries it) and LIST shows.
SPECIAL_USE: Final = {
    "Sent": "\\Sent",
    "Drafts": "\\Drafts",
    "Trash": "\\Trash",
    "Junk": "\\Junk",
    "Archive": "\\Archive",
}
# What CREATE ... (USE (...)) may give a folder (RFC 6154 3): the uses of a folder
# that holds its own messages. \All and \Flagged name virtual mailboxes (every message,
# every flagged one), which this server has not: refused, as any unknown use, USEATTR.
CREATABLE_USES: Final = {use.upper(): use for use in SPECIAL_USE.values()}
VIRTUAL_USES: Final = {"\\ALL": "every message", "\\FLAGGED": "every flagged message"}
SYSTEM_FLAGS: Final = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def quote(value: str) -> str:
    """An IMAP quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class _AppendStream:
    """Where a streamed APPEND literal goes: a store error (disk full, quota) stops the
    writing, not the connection; the command's answer says what went wrong."""

    def __init__(self, appender: Any) -> None:
        self.appender = appender
        self.error: Exception | None = None

    def write(self, data: bytes) -> None:
        if self.error is not None:
            return  # the rest of the literal is read and dropped
        try:
            self.appender.write(data)
        except Exception as error:
            self.error = error
            self.appender.abort()


def mailbox_arg(session: IMAPServerProtocol, value: Value) -> str:
    """A mailbox name argument as stored: modified UTF-7 once UTF8=ACCEPT is enabled."""
    name = parse_mailbox(value, utf8=True)
    if session.utf8 and name != "INBOX":
        name = encode_mailbox_name(name)
    return name


def new_mailbox_arg(session: IMAPServerProtocol, value: Value) -> str:
    """A mailbox name argument that names a mailbox to be (CREATE, RENAME's new name,
    SUBSCRIBE), as stored; MailboxError CANNOT if Dovecot would refuse it.

    Read from the octets the client sent: without UTF8=ACCEPT they must be modified
    UTF-7 (7-bit); with it, valid UTF-8, stored encoded.
    """
    text = astring(value, "the mailbox name")  # an atom, a string or a literal: not a list
    octets = value.value if isinstance(value, String) else wire_bytes(text)
    if session.utf8:
        try:
            name = octets.decode("utf-8")
        except UnicodeDecodeError:
            raise MailboxError("CANNOT", "Mailbox name is not valid UTF-8") from None
        if name.upper() != "INBOX":
            name = encode_mailbox_name(name)
    else:
        name = octets.decode("utf-8", "replace")
    if name.upper() == "INBOX":
        return "INBOX"
    problem = new_mailbox_name_problem(name, DELIMITER)
    if problem is not None:
        raise MailboxError("CANNOT", problem)
    return name


def _show(session: IMAPServerProtocol, name: str) -> str:
    """A stored mailbox name as the client reads it, quoted."""
    if session.utf8:
        # One made by another program, or before names were checked, shows as stored.
        with contextlib.suppress(IMAPSyntaxError):
            name = decode_mailbox_name(name)
    return quote(name)


def _one_mailbox(session: IMAPServerProtocol, command: Command) -> str:
    values = tokenize(command.args, command.literals)
    if len(values) != 1:
        raise IMAPSyntaxError(f"{command.verb} takes one mailbox name")
    return mailbox_arg(session, values[0])


def open_append_stream(session: IMAPServerProtocol, head: str, size: int) -> Any:
    """Open the APPEND's target for a large literal, so it streams to disk.

    The core asks this (its ``literal_sink``) when a literal's data starts, with the
    command text so far; None keeps the literal in memory.
    """
    if session.user is None or size <= STREAM_LITERAL_OVER:
        return None
    if size > session.context.settings.max_literal:
        return None  # refused before "+" (or dropped, for LITERAL+): TOOBIG
    tag, _, rest = head.partition(" ")
    verb, _, args = rest.partition(" ")
    if verb.upper() != "APPEND" or "{" not in args:
        return None
    try:
        request = parse_append(args[: args.rfind("{")] + "{0}", (b"",), utf8=True)
        name = request.mailbox
        if session.utf8 and name != "INBOX":
            name = encode_mailbox_name(name)
        target = session.store.target(name)
        appender = target.begin_append(
            request.flags, request.internaldate, expected_size=size, crlf_to_lf=True
        )
    except Exception:
        # TRYCREATE, OVERQUOTA, a syntax error: the usual path answers it.
        return None
    stream = _AppendStream(appender)
    session.append_streams[tag] = (target, stream)
    return stream


def namespace(session: IMAPServerProtocol, command: Command) -> None:
    session.untagged(f'NAMESPACE (("" "{DELIMITER}")) NIL NIL')
    session.done(command, "Namespace completed")


def _select_parameters(
    session: IMAPServerProtocol, command: Command
) -> tuple[str, QresyncParameter | None]:
    """SELECT/EXAMINE's mailbox; a ``(CONDSTORE)`` parameter (RFC 7162 3.1.8) enables
    CONDSTORE for the session; ``(QRESYNC (...))`` (3.2.5) asks for the changes since,
    once QRESYNC is enabled."""
    values = tokenize(command.args, command.literals)
    qresync = None
    if len(values) == 2 and isinstance(values[1], list):
        parameters = list(values[1])
        while parameters:
            parameter = parameters.pop(0)
            name = parameter.value.upper() if isinstance(parameter, Atom) else ""
            if name == "CONDSTORE":
                session.condstore = True
            elif name == "QRESYNC" and parameters and session.qresync:
                qresync = parse_qresync(parameters.pop(0))
            elif name == "QRESYNC":
                raise IMAPSyntaxError("QRESYNC needs ENABLE QRESYNC first, and a value")
            else:
                raise IMAPSyntaxError(f"unknown {command.verb} parameter {describe(parameter)}")
    elif len(values) != 1:
        raise IMAPSyntaxError(f"{command.verb} takes one mailbox name")
    return mailbox_arg(session, values[0]), qresync


def select(session: IMAPServerProtocol, command: Command) -> None:
    if session.selected is not None:
        # RFC 7162 3.2.11: a QRESYNC server marks where the old mailbox's responses end
        # (and so does Dovecot, in the same words). Closed even if this SELECT fails.
        session.deselect()
        session.untagged("OK [CLOSED] Previous mailbox closed.")
    name, qresync = _select_parameters(session, command)
    read_only = command.verb == "EXAMINE"
    # A cold folder's rebuilt index is written after the tagged OK: a sixth of the
    # answer's time on 10,000 messages (Mailbox.save_deferred says why that is safe).
    mailbox = session.store.open(name, read_only=read_only, save_rebuilt_later=True)
    try:
        _answer_select(session, command, mailbox, qresync)
    finally:
        try:
            mailbox.save_deferred()
        except OSError as error:
            # The answer is given; the next load rebuilds under a new UIDVALIDITY.
            log.warning("session %s: %s", session.session_id, error)


def _answer_select(session: IMAPServerProtocol, command: Command, mailbox: Mailbox,
                   qresync: QresyncParameter | None) -> None:
    session.selected = mailbox
    read_only = mailbox.read_only
    view = mailbox.view  # in columns: nothing made per message
    keywords = sorted(view.keywords())
    flags = " ".join([*SYSTEM_FLAGS, *keywords])
    session.untagged(f"FLAGS ({flags})")
    # At the cap no new keyword can be stored: no \* then (RFC 3501 7.1).
    settable = [f for f in PERMANENT_FLAGS if f != "\\*" or len(keywords) < MAX_KEYWORDS]
    permanent = "" if read_only else " ".join([*settable, *keywords])
    session.untagged(f"OK [PERMANENTFLAGS ({permanent})] Flags permitted")
    session.untagged(f"{len(view)} EXISTS")
    session.untagged(f"{mailbox.recent_count} RECENT")
    unseen = view.first_without("\\Seen")
    if unseen >= 0:
        session.untagged(f"OK [UNSEEN {unseen + 1}] First unseen")
    session.untagged(f"OK [UIDVALIDITY {mailbox.uidvalidity}] UIDs valid")
    session.untagged(f"OK [UIDNEXT {mailbox.uidnext}] Predicted next UID")
    session.untagged(f"OK [HIGHESTMODSEQ {mailbox.highestmodseq}] Highest")
    if qresync is not None:
        resync(session, mailbox, qresync)
    session.tagged(command.tag, "OK", "READ-ONLY" if read_only else "READ-WRITE",
                   f"{command.verb.capitalize()} completed")


def _one_new_mailbox(session: IMAPServerProtocol, command: Command) -> str:
    values = tokenize(command.args, command.literals, raw8=True)
    if len(values) != 1:
        raise IMAPSyntaxError(f"{command.verb} takes one mailbox name")
    return new_mailbox_arg(session, values[0])


def create(session: IMAPServerProtocol, command: Command) -> None:
    """CREATE name, or CREATE name (USE (\\Archive ...)) (RFC 6154 3, CREATE-SPECIAL-USE;
    RFC 4466's create parameters)."""
    values = tokenize(command.args, command.literals, raw8=True)
    if len(values) == 2 and isinstance(values[1], list):
        uses = _create_uses(values[1])
    elif len(values) == 1:
        uses = ()
    else:
        raise IMAPSyntaxError("CREATE takes a mailbox name and optional parameters in ( )")
    session.store.create(new_mailbox_arg(session, values[0]), uses)
    session.done(command, "Create completed")


def _create_uses(parameters: list[Value]) -> tuple[str, ...]:
    """The special uses of CREATE's ``(USE (...))``, as this server writes them; NO
    [USEATTR] for one it cannot give (RFC 6154 3: the mailbox is then not made)."""
    uses: list[str] = []
    items = list(parameters)
    while items:
        name = items.pop(0)
        if not (isinstance(name, Atom) and name.value.upper() == "USE"):
            raise IMAPSyntaxError(f"unknown CREATE parameter {describe(name)}")
        given = items.pop(0) if items else None
        if not isinstance(given, list):
            raise IMAPSyntaxError("USE needs a list of special uses: USE (\\Archive)")
        for use in given:
            if not isinstance(use, Atom) or not use.value.startswith("\\"):
                raise IMAPSyntaxError(f"{describe(use)} is not a special use such as \\Archive")
            known = CREATABLE_USES.get(use.value.upper())
            virtual = VIRTUAL_USES.get(use.value.upper())
            if virtual is not None:
                raise MailboxError("USEATTR", f"{use.value} is a virtual mailbox of "
                                   f"{virtual}, which this server does not make")  # fmt: skip
            if known is None:
                offered = " ".join(CREATABLE_USES.values())
                raise MailboxError("USEATTR", f"{use.value} is not a special use this "
                                   f"server knows; it knows {offered}")  # fmt: skip
            if known not in uses:
                uses.append(known)
    return tuple(uses)


def delete(session: IMAPServerProtocol, command: Command) -> None:
    name = _one_mailbox(session, command)
    session.store.delete(name)
    if session.selected is not None and session.selected.name == name:
        session.deselect()
    session.done(command, "Delete completed")


def rename(session: IMAPServerProtocol, command: Command) -> None:
    values = tokenize(command.args, command.literals, raw8=True)
    if len(values) != 2:
        raise IMAPSyntaxError("RENAME takes two mailbox names")
    session.store.rename(mailbox_arg(session, values[0]), new_mailbox_arg(session, values[1]))
    session.done(command, "Rename completed")


def subscribe(session: IMAPServerProtocol, command: Command) -> None:
    session.store.subscribe(_one_new_mailbox(session, command))
    session.done(command, "Subscribe completed")


def unsubscribe(session: IMAPServerProtocol, command: Command) -> None:
    session.store.unsubscribe(_one_mailbox(session, command))
    session.done(command, "Unsubscribe completed")


def list_mailboxes(session: IMAPServerProtocol, command: Command) -> None:
    """LIST (RFC 3501, with RFC 5258's LIST-EXTENDED, RFC 5819's LIST-STATUS and
    RFC 6154's SPECIAL-USE) and LSUB."""
    kind = command.verb
    if kind == "LSUB":
        reference, pattern = parse_list(command.args, command.literals)
        request = ListRequest(reference, (pattern,))
    else:
        request = parse_list_command(command.args, command.literals)
    reference, patterns = request.reference, request.patterns
    if session.utf8:
        reference = encode_mailbox_name(reference)
        patterns = tuple(encode_mailbox_name(p) for p in patterns)
    if kind == "LIST" and patterns == ("",) and not request.extended:
        session.untagged(f'LIST (\\Noselect) "{DELIMITER}" ""')
        session.done(command, "List completed")
        return
    select, returns = request.select, request.returns
    names = session.store.list_folders()
    existing = set(names)
    subscribed = session.store.subscriptions
    subscribed_set = set(subscribed)

    def matches(name: str) -> bool:
        return any(list_pattern_matches(reference, p, name, DELIMITER) for p in patterns)

    if kind == "LSUB" or "SUBSCRIBED" in select:
        candidates = list(subscribed)
    else:
        # Parents missing after a DELETE still show, as \Noselect (RFC 3501 6.3.8).
        candidates = list(names)
        for name in names:
            parts = name.split(DELIMITER)
            for i in range(1, len(parts)):
                parent = DELIMITER.join(parts[:i])
                if parent not in existing and parent not in candidates:
                    candidates.append(parent)
    listed = [name for name in candidates if matches(name)]
    child_info: set[str] = set()
    if "SUBSCRIBED" in select and "RECURSIVEMATCH" in select:
        # RFC 5258 3.5: a matching parent of a subscribed mailbox shows, with CHILDINFO.
        for name in subscribed:
            parts = name.split(DELIMITER)
            for i in range(1, len(parts)):
                parent = DELIMITER.join(parts[:i])
                if matches(parent):
                    child_info.add(parent)
                    if parent not in listed:
                        listed.append(parent)
    for name in listed:
        attributes = []
        special = " ".join(session.store.special_use(name)) if name in existing else None
        if kind == "LIST":
            if name not in existing:
                attributes.append("\\NonExistent" if request.extended else "\\Noselect")
            children = any(n.startswith(name + DELIMITER) for n in names)
            attributes.append("\\HasChildren" if children else "\\HasNoChildren")
            show_subscribed = "SUBSCRIBED" in select or "SUBSCRIBED" in returns
            if show_subscribed and name in subscribed_set:
                attributes.append("\\Subscribed")
            if special:
                # Shown in every LIST (RFC 6154 2 allows it; Dovecot does).
                attributes.append(special)
        if "SPECIAL-USE" in select and not special:
            continue
        extra = ' ("CHILDINFO" ("SUBSCRIBED"))' if name in child_info else ""
        shown = _show(session, name)
        session.untagged(f'{kind} ({" ".join(attributes)}) "{DELIMITER}" {shown}{extra}')
        if request.status_items and name in existing:
            # RFC 5819: a mailbox that cannot be opened just has no STATUS.
            with contextlib.suppress(MailboxError):
                values = _status_text(session, name, request.status_items)
                session.untagged(f"STATUS {shown} ({values})")
    session.done(command, f"{kind.capitalize()} completed")


def _status_text(session: IMAPServerProtocol, name: str, items: tuple[str, ...]) -> str:
    if session.selected is not None and session.selected.name == name:
        mailbox = session.selected
    else:
        mailbox = session.store.open(name, read_only=True)
    view = mailbox.view
    values = {
        "MESSAGES": len(view),
        "RECENT": mailbox.recent_count,
        "UIDNEXT": mailbox.uidnext,
        "UIDVALIDITY": mailbox.uidvalidity,
        "UNSEEN": len(view) - view.count_with("\\Seen"),
        "SIZE": sum(view.rfc822_sizes),
        "DELETED": view.count_with("\\Deleted"),
        "HIGHESTMODSEQ": mailbox.highestmodseq,
    }
    return " ".join(f"{item} {values[item]}" for item in items if item in values)


def status(session: IMAPServerProtocol, command: Command) -> None:
    name, items = parse_status(command.args, command.literals, utf8=True)
    if "HIGHESTMODSEQ" in items:
        session.condstore = True  # a CONDSTORE enabling command (RFC 7162 3.1)
    if session.utf8 and name != "INBOX":
        name = encode_mailbox_name(name)
    session.untagged(f"STATUS {_show(session, name)} ({_status_text(session, name, items)})")
    session.done(command, "Status completed")


def append(session: IMAPServerProtocol, command: Command) -> None:
    stream = session.append_streams.pop(command.tag, None)
    if stream is not None:
        target, sink = stream
        if command.streamed and not command.truncated:
            if sink.error is not None:
                raise sink.error  # answered as any store error (NO [OVERQUOTA] ...)
            if command.args[command.args.rfind("}") + 1 :].strip():
                sink.appender.abort()  # something after the message: not an APPEND we know
                raise IMAPSyntaxError("unexpected data after the APPEND literal")
            uid = sink.appender.commit()
            session.done(command, "Append completed", f"APPENDUID {target.uidvalidity} {uid}")
            return
        sink.appender.abort()
    request = parse_append(command.args, command.literals, utf8=True)
    name = request.mailbox
    if session.utf8 and name != "INBOX":
        name = encode_mailbox_name(name)
    target = session.store.target(name)
    message = request.message
    with target.begin_append(request.flags, request.internaldate,
                             expected_size=len(message), crlf_to_lf=True) as appender:
        view = memoryview(message)
        for start in range(0, len(view), CHUNK):
            appender.write(view[start : start + CHUNK])
        uid = appender.commit()
    session.done(command, "Append completed", f"APPENDUID {target.uidvalidity} {uid}")
