"""Completion of what is valid now, pgcli-style in two layers.

``suggest()`` is pure: from the protocol core's state and what the server
advertised, it says which words may come next. ``ProtocolCompleter`` maps those
to prompt_toolkit completions. Tests query either with a ``Document``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from mailtalk.protocols.common import ClientCore

if TYPE_CHECKING:
    from mailtalk.client.coach import ExtraCommand


@dataclass(frozen=True, slots=True)
class Suggestion:
    text: str
    meta: str = ""


MESSAGE_HEADERS: Final = ("From: ", "To: ", "Cc: ", "Subject: ", "Date: ", "Message-ID: ",
                          "Reply-To: ", "MIME-Version: 1.0", "Content-Type: ")
IMAP_FLAGS: Final = ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft")
IMAP_STORE_ITEMS: Final = ("FLAGS", "+FLAGS", "-FLAGS", "FLAGS.SILENT", "+FLAGS.SILENT",
                           "-FLAGS.SILENT")
IMAP_STATUS_ITEMS: Final = ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "SIZE")
IMAP_SEARCH_KEYS: Final = ("ALL", "ANSWERED", "BCC", "BEFORE", "BODY", "CC", "DELETED", "DRAFT",
                           "FLAGGED", "FROM", "HEADER", "KEYWORD", "LARGER", "NEW", "NOT", "OLD",
                           "ON", "OR", "RECENT", "SEEN", "SENTBEFORE", "SENTON", "SENTSINCE",
                           "SINCE", "SMALLER", "SUBJECT", "TEXT", "TO", "UID", "UNANSWERED",
                           "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN")
IMAP_MAILBOX_FIRST: Final = frozenset({"SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME",
                                       "SUBSCRIBE", "UNSUBSCRIBE", "STATUS", "APPEND"})
IMAP_MAILBOX_SECOND: Final = frozenset({"COPY", "MOVE", "UID COPY", "UID MOVE"})
IMAP_FETCH: Final = frozenset({"FETCH", "UID FETCH"})
IMAP_STORE: Final = frozenset({"STORE", "UID STORE"})
IMAP_SEARCH: Final = frozenset({"SEARCH", "UID SEARCH"})
POP3_NUMBERED: Final = frozenset({"RETR", "DELE", "LIST", "UIDL", "TOP"})
META_ARGUMENTS: Final = {"auth": ("plain", "login"), "raw": ("on", "off")}


def _summaries(protocol: str) -> dict[str, str]:
    try:
        from mailtalk.knowledge.commands import commands_for
    except ImportError:  # the reference is optional for completion
        return {}
    return {entry.name.upper(): entry.summary for entry in commands_for(protocol)}


def _match(prefix: str, candidates: Iterable[str], meta: dict[str, str] | None = None,
           ) -> list[Suggestion]:
    """Candidates starting with ``prefix`` (case-insensitively), in the user's case."""
    lower = prefix.islower()
    out: list[Suggestion] = []
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.upper().startswith(prefix.upper()) and candidate not in seen:
            seen.add(candidate)
            text = candidate.lower() if lower and candidate.isupper() else candidate
            out.append(Suggestion(text, (meta or {}).get(candidate.upper(), "")))
    return out


def quote_mailbox(name: str) -> str:
    """A mailbox name as an IMAP astring: quoted when it has spaces or specials."""
    if name and all(c.isalnum() or c in "._-/&+" for c in name):
        return name
    escaped = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def suggest(
    core: ClientCore,
    text: str,
    user: str | None = None,
    extra_meta: Mapping[str, ExtraCommand] | None = None,
) -> list[Suggestion]:
    """What may complete the last word of ``text`` (the line up to the cursor)."""
    if text.startswith(":") and not getattr(core, "in_data", False):
        return _suggest_meta(core, text, extra_meta)
    if getattr(core, "in_data", False):
        if ":" in text:
            return []
        return _match(text, MESSAGE_HEADERS)
    if getattr(core, "chunk_left", 0):
        return []  # the bytes of a BDAT chunk: anything
    words = text.split()
    completing_new = not text or text[-1].isspace()
    current = "" if completing_new else words.pop()
    protocol = core.protocol
    if protocol == "imap" and words and not _is_imap_command(words[0]):
        words = words[1:]  # a tag the user typed
    if not words:
        commands = core.valid_commands()
        first_words = []
        for command in commands:
            first_words.append(command.split()[0])
        return _match(current, first_words, _summaries(protocol))
    verb = words[0].upper()
    if protocol == "imap" and verb == "UID" and len(words) >= 2:
        verb = f"UID {words[1].upper()}"
        args = words[2:]
    else:
        args = words[1:]
    if protocol == "smtp":
        return _suggest_smtp(core, verb, args, current)
    if protocol == "pop3":
        return _suggest_pop3(core, verb, args, current, user)
    return _suggest_imap(core, verb, args, current)


def _is_imap_command(word: str) -> bool:
    from mailtalk.protocols import imap

    known = getattr(imap, "KNOWN_COMMANDS", None)
    if known is not None:
        return word.upper() in known
    return any(word.upper() == c.split()[0] for v in imap.VALID_COMMANDS.values() for c in v)


def _suggest_meta(
    core: ClientCore, text: str, extra: Mapping[str, ExtraCommand] | None = None
) -> list[Suggestion]:
    from mailtalk.client.meta import META_COMMANDS

    words = text[1:].split()
    completing_new = text[-1].isspace()
    if not words or (len(words) == 1 and not completing_new):
        prefix = words[0] if words else ""
        commands: list[Any] = [*META_COMMANDS.values(), *(extra or {}).values()]
        return [
            Suggestion(":" + m.name, m.brief)
            for m in commands
            if m.name.startswith(prefix.lower())
        ]
    name = words[0].lower()
    current = "" if completing_new else words[-1]
    position = len(words) - (1 if not completing_new else 0)
    if name == "help" and position == 1:
        verbs = sorted(_summaries(core.protocol)) or core.valid_commands()
        return _match(current, verbs)
    if name == "auth" and position == 1:
        return _match(current, _auth_mechanisms(core))
    if name == "xclient" and position >= 1:
        done = words[1:] if completing_new else words[1:-1]
        given = {word.partition("=")[0].upper() for word in done}
        return _match(current, [a for a in _xclient_attributes(core) if a[:-1] not in given])
    if name in META_ARGUMENTS and position == 1:
        return _match(current, META_ARGUMENTS[name])
    return []


def _auth_mechanisms(core: ClientCore) -> list[str]:
    """``:auth``'s choices: ours the server offers (strongest first), or all of ours
    while it has not said."""
    from mailtalk.protocols.sasl import MECHANISMS

    attribute = "sasl_mechanisms" if core.protocol == "pop3" else "auth_mechanisms"
    offered = {m.upper() for m in getattr(core, attribute, None) or []}
    return [m.lower() for m in MECHANISMS if not offered or m in offered]


def _xclient_attributes(core: ClientCore) -> list[str]:
    """``:xclient``'s choices, ``NAME=``: those of ours the server's EHLO offers for
    XCLIENT, or all of ours while it has not answered EHLO."""
    from mailtalk.protocols.xclient import ATTRIBUTES, offered_attributes

    if not getattr(core, "esmtp", False):
        return [f"{name}=" for name in ATTRIBUTES]
    offered = offered_attributes(getattr(core, "extensions", {})) or frozenset()
    return [f"{name}=" for name in ATTRIBUTES if name in offered]


def _suggest_smtp(core: ClientCore, verb: str, args: list[str], current: str) -> list[Suggestion]:
    extensions: dict[str, str] = getattr(core, "extensions", {})
    if verb == "AUTH" and not args:
        return _match(current, getattr(core, "auth_mechanisms", []))
    if verb in ("EHLO", "HELO", "LHLO") and not args:
        from mailtalk.client.conversation import client_name

        return _match(current, [client_name()])
    if verb in ("MAIL", "RCPT") and not args:
        opener = "FROM:<" if verb == "MAIL" else "TO:<"
        return [] if current.upper().startswith(opener) else _match(current, [opener])
    params: list[str] = []
    if verb == "MAIL":
        if "SIZE" in extensions:
            params.append("SIZE=")
        if "8BITMIME" in extensions:
            params += ["BODY=8BITMIME", "BODY=7BIT"]
        if "SMTPUTF8" in extensions:
            params.append("SMTPUTF8")
        if "DSN" in extensions:
            params += ["RET=FULL", "RET=HDRS", "ENVID="]
    elif verb == "RCPT" and "DSN" in extensions:
        params += ["NOTIFY=SUCCESS,FAILURE,DELAY", "NOTIFY=NEVER", "ORCPT="]
    return _match(current, params)


def _suggest_pop3(core: ClientCore, verb: str, args: list[str], current: str,
                  user: str | None) -> list[Suggestion]:
    if verb in POP3_NUMBERED and not args:
        numbers = [str(n) for n in getattr(core, "message_numbers", [])]
        return _match(current, numbers)
    if verb == "TOP" and len(args) == 1:
        return _match(current, ["0", "10"])
    if verb == "AUTH" and not args:
        return _match(current, list(getattr(core, "sasl_mechanisms", [])))
    if verb == "USER" and not args and user:
        return _match(current, [user])
    return []


def _suggest_imap(core: ClientCore, verb: str, args: list[str], current: str) -> list[Suggestion]:
    mailboxes = [quote_mailbox(m) for m in getattr(core, "mailboxes", [])] or ["INBOX"]
    if verb in IMAP_MAILBOX_FIRST and not args:
        return _match(current, mailboxes)
    if verb in IMAP_MAILBOX_SECOND and len(args) == 1:
        return _match(current, mailboxes)
    if verb == "STATUS" and len(args) >= 1:
        return _match(current.lstrip("("), IMAP_STATUS_ITEMS)
    if verb in IMAP_FETCH and len(args) >= 1:
        from mailtalk.protocols.imap import BINARY_FETCH_ITEMS, FETCH_ITEMS

        items = list(FETCH_ITEMS)
        if "BINARY" in getattr(core, "capabilities", ()):
            items += BINARY_FETCH_ITEMS
        bare = current.lstrip("(")
        opened = current[: len(current) - len(bare)]
        return [Suggestion(opened + s.text, s.meta) for s in _match(bare, items)]
    if verb in IMAP_STORE and len(args) == 1:
        return _match(current, IMAP_STORE_ITEMS)
    if verb in IMAP_STORE and len(args) >= 2:
        bare = current.lstrip("(")
        opened = current[: len(current) - len(bare)]
        return [Suggestion(opened + s.text) for s in _match(bare, IMAP_FLAGS)]
    if verb in IMAP_SEARCH:
        return _match(current, IMAP_SEARCH_KEYS)
    if verb == "AUTHENTICATE" and not args:
        return _match(current, list(getattr(core, "auth_mechanisms", [])))
    if verb == "LIST" and not args:
        return _match(current, ['"" "*"', '"" "%"'])
    if verb == "UID" and not args:
        subs = [c.split()[1] for c in core.valid_commands() if c.startswith("UID ")]
        return _match(current, subs)
    return []


class ProtocolCompleter(Completer):
    """prompt_toolkit's face of ``suggest()``; paths for :file, :save and :record."""

    def __init__(
        self,
        core_getter: Callable[[], ClientCore],
        user: str | None = None,
        extra_meta: Mapping[str, ExtraCommand] | None = None,
    ) -> None:
        self._core_getter = core_getter
        self._user = user
        self._extra_meta = extra_meta
        self._paths = PathCompleter(expanduser=True)

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        core = self._core_getter()
        text = document.text_before_cursor
        if text.startswith((":file ", ":save ", ":record ")):
            path_doc = Document(text.split(" ", 1)[1])
            yield from self._paths.get_completions(path_doc, complete_event)
            return
        words = text.split()
        current = "" if not text or text[-1].isspace() or not words else words[-1]
        in_data = getattr(core, "in_data", False)  # a header's value follows on its line
        for suggestion in suggest(core, text, self._user, self._extra_meta):
            yield Completion(
                suggestion.text + ("" if in_data else word_end(suggestion.text)),
                start_position=-len(current),
                display=suggestion.text,
                display_meta=suggestion.meta,
            )


# What a suggestion ending in one of these is only the start of: "FROM:<", "SIZE=",
# "(FLAGS" after "(": the user goes on typing right after it.
_OPEN_ENDED: Final = ("<", "=", "(", ":", "/", " ")


def word_end(text: str) -> str:
    """What follows a completed word: a space, as readline shells put after a unique
    word (bash), so that Tab again offers the next word and typing on starts one,
    instead of gluing it on ("SELECTINBOX"); nothing after an open-ended one."""
    return "" if not text or text.endswith(_OPEN_ENDED) else " "
