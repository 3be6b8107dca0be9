"""The IMAP core (RFC 3501 / RFC 9051): bytes in, events out, with no I/O.

One ``IMAPConnection`` class plays either role. As a client it parses responses
(untagged ``*``, tagged completions and ``+`` continuation requests), each assembled
with its literals into one event, adds tags to the lines the user types and tracks
the session state from the commands it sent and the completions they got. As a
server it parses command lines, literals included, asks for ``+`` before
synchronizing literals, and formats responses. Both roles run the same transition
table.

This module is the state and the commands: the state table, checking and tagging
what is sent, and what a tagged or untagged response does to the session. Where a
response or command ends, literals (``{n}`` followed by exactly n raw bytes)
included, is IMAP's framing, ``protocols/imap_framing.py``, whose ``IMAPReader``
``IMAPConnection`` extends; the events it hands out and the parsers of their text
are ``protocols/imap_events.py``.

The client role reads responses with ``next_event()`` and writes with
``send_line()``; the server role reads commands with ``next_command()`` and writes
with ``send()``.
"""

from __future__ import annotations

import enum
import re
from typing import Final

from mailtalk.protocols.common import (
    Continuation,
    LineBuffer,
    LocalProtocolError,
    NoEvent,
    RemoteProtocolError,
    Role,
    decode_text,
    peer_text,
    redact_mistyped_login,
)
from mailtalk.protocols.imap_events import (
    ClientInput,
    Command,
    ContinuationResponse,
    LiteralRequested,
    ServerResponse,
    Tagged,
    Untagged,
    parse_capabilities,
    parse_list_mailbox,
    read_string,
    split_code,
    token_spans,
)
from mailtalk.protocols.imap_framing import (
    CRLF,
    LITERAL_AT_END_TEXT,
    MAX_LITERAL,
    MAX_SIZE_DIGITS,
    Assembly,
    IMAPReader,
    check_one_line,
    format_with_literals,
)


class IMAPState(enum.Enum):
    GREETING = "greeting"  # connected, waiting for "* OK", "* PREAUTH" or "* BYE"
    NOT_AUTHENTICATED = "not-authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


# ID (RFC 2971) is valid in any state; ENABLE (RFC 5161) only once logged in and
# before a mailbox is selected.
_ANY_STATE: Final = ("CAPABILITY", "NOOP", "LOGOUT", "ID")
_NOT_AUTHENTICATED: Final = ("STARTTLS", "AUTHENTICATE", "LOGIN")
_AUTHENTICATED_ONLY: Final = ("ENABLE",)
_AUTHENTICATED: Final = (
    "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "LIST",
    "LSUB", "STATUS", "APPEND", "NAMESPACE", "IDLE", "GETQUOTA", "GETQUOTAROOT", "SETQUOTA",
)
_SELECTED: Final = (
    "CHECK", "CLOSE", "UNSELECT", "EXPUNGE", "SEARCH", "FETCH", "STORE", "COPY", "MOVE",
    "UID FETCH", "UID STORE", "UID COPY", "UID MOVE", "UID SEARCH", "UID EXPUNGE",
    "SORT", "UID SORT", "THREAD", "UID THREAD",
)

# The commands valid in each state (RFC 3501 6, RFC 9051 6). Extension commands are
# narrowed further by the advertised capabilities in valid_commands().
VALID_COMMANDS: Final[dict[IMAPState, tuple[str, ...]]] = {
    IMAPState.GREETING: (),
    IMAPState.NOT_AUTHENTICATED: _ANY_STATE + _NOT_AUTHENTICATED,
    IMAPState.AUTHENTICATED: _ANY_STATE + _AUTHENTICATED + _AUTHENTICATED_ONLY,
    IMAPState.SELECTED: _ANY_STATE + _AUTHENTICATED + _SELECTED,
    IMAPState.LOGOUT: (),
}

# Every command word the tagger recognises; "UID" is the prefix of the UID commands.
KNOWN_COMMANDS: Final[frozenset[str]] = frozenset(
    {verb for verbs in VALID_COMMANDS.values() for verb in verbs if " " not in verb}
    | {"UID", "GETQUOTA", "GETQUOTAROOT", "SETQUOTA", "GETACL", "SETACL", "MYRIGHTS",
       "LISTRIGHTS", "DELETEACL", "GETMETADATA", "SETMETADATA", "COMPRESS", "XLIST"}
)

# Commands that exist only when the server advertised the capability on the right.
EXTENSION_OF_COMMAND: Final[dict[str, str]] = {
    "MOVE": "MOVE",
    "UID MOVE": "MOVE",
    "UNSELECT": "UNSELECT",
    "IDLE": "IDLE",
    "NAMESPACE": "NAMESPACE",
    "ENABLE": "ENABLE",
    "ID": "ID",
    "UID EXPUNGE": "UIDPLUS",
    "GETQUOTA": "QUOTA",
    "GETQUOTAROOT": "QUOTA",
    "SETQUOTA": "QUOTA",
    "SORT": "SORT",
    "UID SORT": "SORT",
    # THREAD=ORDEREDSUBJECT, THREAD=REFERENCES...: any capability with this prefix.
    "THREAD": "THREAD=",
    "UID THREAD": "THREAD=",
}
# RFC 9051 made these part of the base protocol.
_IN_IMAP4REV2: Final = frozenset({"MOVE", "UNSELECT", "IDLE", "NAMESPACE", "ENABLE", "UIDPLUS"})

# How a tagged completion moves the session, keyed by (command completed, status).
# A missing key leaves the state as it is.
TRANSITIONS: Final[dict[tuple[str, str], IMAPState]] = {
    ("LOGIN", "OK"): IMAPState.AUTHENTICATED,
    ("AUTHENTICATE", "OK"): IMAPState.AUTHENTICATED,
    ("SELECT", "OK"): IMAPState.SELECTED,
    ("EXAMINE", "OK"): IMAPState.SELECTED,
    # RFC 3501 6.3.1: a failed SELECT closes the mailbox that was selected before.
    ("SELECT", "NO"): IMAPState.AUTHENTICATED,
    ("EXAMINE", "NO"): IMAPState.AUTHENTICATED,
    ("CLOSE", "OK"): IMAPState.AUTHENTICATED,
    ("UNSELECT", "OK"): IMAPState.AUTHENTICATED,
    ("LOGOUT", "OK"): IMAPState.LOGOUT,
}

# How an untagged status response moves the session, keyed by (state, kind).
UNTAGGED_TRANSITIONS: Final[dict[tuple[IMAPState, str], IMAPState]] = {
    (IMAPState.GREETING, "OK"): IMAPState.NOT_AUTHENTICATED,
    (IMAPState.GREETING, "PREAUTH"): IMAPState.AUTHENTICATED,
    (IMAPState.GREETING, "BYE"): IMAPState.LOGOUT,
    (IMAPState.NOT_AUTHENTICATED, "BYE"): IMAPState.LOGOUT,
    (IMAPState.AUTHENTICATED, "BYE"): IMAPState.LOGOUT,
    (IMAPState.SELECTED, "BYE"): IMAPState.LOGOUT,
}

HINTS: Final[dict[IMAPState, str]] = {
    IMAPState.GREETING: "wait for the server's * OK greeting",
    IMAPState.NOT_AUTHENTICATED: "LOGIN user password (or CAPABILITY, STARTTLS)",
    IMAPState.AUTHENTICATED: 'LIST "" "*", then SELECT INBOX',
    IMAPState.SELECTED: "FETCH 1:* (FLAGS ENVELOPE), SEARCH ALL, LOGOUT",
    IMAPState.LOGOUT: "the server is closing the connection: :reconnect or :quit",
}

# FETCH data items, for completion (RFC 3501 6.4.5).
FETCH_ITEMS: Final[tuple[str, ...]] = (
    "FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "BODY",
    "BODY[]", "BODY.PEEK[]", "BODY[HEADER]", "BODY[HEADER.FIELDS (FROM TO SUBJECT DATE)]",
    "BODY[TEXT]", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "ALL", "FAST", "FULL",
)
# ... and those of RFC 3516, offered only when the server advertises BINARY.
BINARY_FETCH_ITEMS: Final[tuple[str, ...]] = ("BINARY[]", "BINARY.PEEK[]", "BINARY.SIZE[]")

TAGGED_STATUSES: Final = frozenset({"OK", "NO", "BAD"})

# Which argument of a command is a secret (0-based, after the verb).
SECRET_ARGUMENT: Final[dict[str, int]] = {"LOGIN": 1, "AUTHENTICATE": 1}

# A tag is any atom character except "+" (RFC 3501 9, "tag"); "*" is not allowed either.
_TAG = re.compile(r'[^\s(){%*"\\\]+\x00-\x1f\x7f]+\Z')


# -- typed commands -----------------------------------------------------------------


def split_command(line: str) -> tuple[str | None, str, str]:
    """A typed command as (tag the user gave or None, VERB, rest).

    The first word is a known command: no tag. Else the second word is a known
    command: the first word is the user's tag. Else the first word is taken as an
    unknown command. ``UID FETCH`` counts as the verb ``"UID FETCH"``.
    """
    words = line.strip().split(" ")
    words = [w for w in words if w]
    tag: str | None = None
    if not words:
        return None, "", ""
    if words[0].upper() not in KNOWN_COMMANDS and len(words) > 1 and (
        words[1].upper() in KNOWN_COMMANDS
    ):
        tag = words[0]
        words = words[1:]
    verb = words[0].upper()
    consumed = 1
    if verb == "UID" and len(words) > 1:
        verb = f"UID {words[1].upper()}"
        consumed = 2
    # The rest keeps the user's spacing: find it after the consumed words.
    rest = line.strip()
    for word in ([tag] if tag else []) + words[:consumed]:
        rest = rest[rest.index(word) + len(word) :]
    return tag, verb, rest.strip()


def _redact_arguments(text: str, secret_index: int | None, first_index: int) -> str:
    """``text`` with the argument numbered ``secret_index`` replaced by ``***``.

    The arguments of ``text`` are numbered from ``first_index``. A literal marker
    is not replaced: it is the literal's data, on the next line, that is secret.
    """
    if secret_index is None:
        return text
    for number, (start, end) in enumerate(token_spans(text), start=first_index):
        if number == secret_index:
            if LITERAL_AT_END_TEXT.search(text[start:end]) and end == len(text.rstrip()):
                return text
            return text[:start] + "***" + text[end:]
    return text


# -- the connection ------------------------------------------------------------------


class IMAPConnection(IMAPReader):
    """An IMAP session in one role; see the module docstring."""

    protocol: str = "imap"

    def __init__(
        self, role: Role = Role.CLIENT, *, max_literal: int = MAX_LITERAL, tls: bool = False
    ) -> None:
        super().__init__(role, max_literal)
        self.tls = tls
        self.state = IMAPState.GREETING
        self.capabilities: set[str] = set()
        self.capabilities_known = False
        self.auth_mechanisms: list[str] = []
        self.mailboxes: list[str] = []
        self.selected_mailbox: str | None = None
        self.exists: int | None = None
        self.wants_tls_upgrade = False
        # Commands sent (client) or received (server) without their completion yet.
        self.pending: dict[str, str] = {}
        self._tag_counter = 0
        self._pending_mailbox: dict[str, str] = {}  # SELECT/EXAMINE tag -> mailbox
        # Client role: the command whose line the user is still typing (after a
        # literal marker), the literal being typed, and what answers a "+".
        self._continued_tag: str | None = None
        self._continued_verb = ""
        self._literal_to_send = 0
        self._literal_secret = False
        self._literal_argument = 0  # index of the literal's argument in its command
        self._awaiting_continuation = False
        self._sasl_pending = False
        self._idling = False
        # Server role: a synchronizing literal waits for our "+"; a "+" we sent
        # outside a literal wants one raw line back.
        self._needs_continuation = False
        self._expect_response_line = False

    # -- shared -------------------------------------------------------------------

    @property
    def state_name(self) -> str:
        return self.state.value

    @property
    def authenticated(self) -> bool:
        return self.state in (IMAPState.AUTHENTICATED, IMAPState.SELECTED)

    @property
    def awaiting_reply(self) -> bool:
        return bool(self.pending) or (self.state is IMAPState.GREETING and not self._closed)


    def next_event(self) -> ServerResponse | NoEvent:
        """Client role: the next response from the server, NEED_DATA or CONNECTION_CLOSED.

        The server role reads with ``next_command()``: keeping the two apart lets each
        role's events be typed exactly (the client's satisfy ``ServerEvent``).
        """
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("the server role reads commands with next_command()")
        return self._next_response()

    def tls_started(self) -> None:
        self.wants_tls_upgrade = False
        self.tls = True
        # RFC 3501 6.2.1: capabilities from before TLS are not to be trusted.
        self.capabilities = set()
        self.capabilities_known = False
        self.auth_mechanisms = []

    def _set_capabilities(self, names: list[str]) -> None:
        self.capabilities = set(names)
        self.capabilities_known = True
        self.auth_mechanisms = [n[5:] for n in names if n.startswith("AUTH=") and n[5:]]

    def _apply_tagged(self, command: str | None, status: str) -> None:
        if self.state is IMAPState.LOGOUT or command is None:
            return
        new_state = TRANSITIONS.get((command, status))
        if new_state is not None:
            self.state = new_state
        if command == "STARTTLS" and status == "OK":
            self.wants_tls_upgrade = True
            # Bytes after the OK were sent in clear text before TLS: they must not
            # be read as if they came over TLS (the STARTTLS injection attack).
            self._buffer = LineBuffer()
        if self.state is not IMAPState.SELECTED:
            self.selected_mailbox = None
            self.exists = None

    def _apply_untagged(self, kind: str) -> None:
        new_state = UNTAGGED_TRANSITIONS.get((self.state, kind))
        if new_state is not None:
            self.state = new_state

    def _finish_close(self) -> NoEvent:
        self.pending.clear()
        self.state = IMAPState.LOGOUT
        self._continued_tag = None
        self._awaiting_continuation = False
        self._sasl_pending = False
        self._idling = False
        return super()._finish_close()

    # -- client role ----------------------------------------------------------------

    @property
    def awaiting_continuation(self) -> bool:
        """A synchronizing literal was announced: wait for the server's ``+``."""
        return self._awaiting_continuation

    @property
    def in_command_continuation(self) -> bool:
        """The next line the user types continues a command: send it without a tag."""
        return self._continued_tag is not None or self._sasl_pending or self._idling

    @property
    def sasl_pending(self) -> bool:
        """The server sent ``+`` to AUTHENTICATE: the next line is SASL data (``*`` cancels)."""
        return self._sasl_pending

    @property
    def idling(self) -> bool:
        """IDLE was accepted with ``+``: only ``DONE`` may be sent."""
        return self._idling

    @property
    def literal_bytes_left(self) -> int:
        """Bytes of the literal the user is typing that are still to come."""
        return self._literal_to_send

    def _new_tag(self) -> str:
        while True:
            self._tag_counter += 1
            tag = f"a{self._tag_counter:03d}"
            if tag not in self.pending:
                return tag

    def send_line(self, line: str) -> bytes:
        """Bytes for a line the user typed: a tag added when it has none, CRLF added."""
        if self.role is not Role.CLIENT:
            raise LocalProtocolError("send_line() is for the client role")
        check_one_line(line)
        data = line.encode("utf-8")
        if self._continued_tag is not None:
            if self._awaiting_continuation:
                raise LocalProtocolError(
                    "wait for the server's + before sending the literal"
                )
            return self._send_continued(data)
        if self._sasl_pending:
            self._sasl_pending = False
            return data + CRLF
        if self._idling or "IDLE" in self.pending.values():
            if line.strip().upper() != "DONE":
                raise LocalProtocolError("IDLE is running: DONE ends it")
            self._idling = False
            return b"DONE" + CRLF
        tag, verb, rest = split_command(line)
        if not verb:
            raise LocalProtocolError("an empty line is not an IMAP command")
        if tag is None:
            tag = self._new_tag()
            data = tag.encode("utf-8") + b" " + line.strip().encode("utf-8")
        else:
            if tag in self.pending:
                raise LocalProtocolError("the tag {tag} is still waiting for its completion",
                                         tag=tag)
            data = line.strip().encode("utf-8")
        self.pending[tag] = verb
        if verb in ("SELECT", "EXAMINE"):
            mailbox, _, _ = read_string(rest, 0, (), 0)
            if mailbox is not None:
                self._pending_mailbox[tag] = mailbox
        self._continued_tag = tag
        self._continued_verb = verb
        self._literal_argument = 0
        self._after_command_text(rest)
        return data + CRLF

    def _after_command_text(self, text: str) -> None:
        """Command text was sent: a literal marker at its end continues the command."""
        match = LITERAL_AT_END_TEXT.search(text)
        if match is None:
            self._continued_tag = None
            self._literal_to_send = 0
            self._literal_secret = False
            return
        if len(match.group(2)) > MAX_SIZE_DIGITS:
            raise LocalProtocolError("that literal size is not believable")
        self._literal_argument += len(token_spans(text[: match.start()]))
        self._literal_to_send = int(match.group(2))
        self._awaiting_continuation = not match.group(3)
        self._literal_secret = (
            SECRET_ARGUMENT.get(self._continued_verb) == self._literal_argument
        )

    def _split_continued(self, data: bytes) -> tuple[bytes, bytes]:
        """A typed continuation line as (bytes of the literal, command bytes after it)."""
        wire = data + CRLF
        taken = min(self._literal_to_send, len(wire))
        return wire[:taken], wire[taken:]

    def _send_continued(self, data: bytes) -> bytes:
        literal_part, rest = self._split_continued(data)
        was_in_literal = self._literal_to_send > 0
        self._literal_to_send -= len(literal_part)
        if self._literal_to_send:
            return data + CRLF  # the literal goes on in the next line
        if was_in_literal:
            self._literal_argument += 1
            self._literal_secret = False
            if not rest:
                return data + CRLF  # the line end was the literal's; the command goes on
        self._after_command_text(decode_text(rest.rstrip(b"\r\n")))
        return data + CRLF

    def redact(self, line: str) -> str:
        """The line as it may be stored: passwords and SASL data replaced by ``***``."""
        if self.role is not Role.CLIENT:
            return line
        if self._continued_tag is not None:
            return self._redact_continued(line)
        if self._sasl_pending:
            return line if line.strip() == "*" else "***"
        if self._idling:
            return line
        _tag, verb, rest = split_command(line)
        secret_index = SECRET_ARGUMENT.get(verb)
        if secret_index is None:
            return redact_mistyped_login(line, KNOWN_COMMANDS)
        if not rest:
            return line
        redacted = _redact_arguments(rest, secret_index, 0)
        if redacted == rest:
            return line
        prefix = line[: len(line) - len(line.lstrip())] + line.strip()[: -len(rest)]
        return prefix + redacted

    def _redact_continued(self, line: str) -> str:
        data = line.encode("utf-8")
        literal_part, rest = self._split_continued(data)
        secret_index = SECRET_ARGUMENT.get(self._continued_verb)
        shown_literal = literal_part[: len(data)]  # not the CRLF send_line adds
        shown = "***" if self._literal_secret and literal_part else decode_text(shown_literal)
        if not rest or rest == CRLF[len(CRLF) - len(rest) :]:
            return shown
        rest_text = decode_text(rest[: len(rest) - 2] if rest.endswith(CRLF) else rest)
        first_index = self._literal_argument + (1 if literal_part else 0)
        return shown + _redact_arguments(rest_text, secret_index, first_index)

    def valid_commands(self) -> list[str]:
        commands = []
        caps = self.capabilities
        rev2 = "IMAP4REV2" in caps
        for verb in VALID_COMMANDS[self.state]:
            if verb == "STARTTLS":
                if self.tls or (self.capabilities_known and "STARTTLS" not in caps):
                    continue
            elif verb == "LOGIN":
                if "LOGINDISABLED" in caps:
                    continue
            elif verb in EXTENSION_OF_COMMAND and self.capabilities_known:
                needed = EXTENSION_OF_COMMAND[verb]
                offered = (
                    any(cap.startswith(needed) for cap in caps)
                    if needed.endswith("=")
                    else needed in caps
                )
                if not offered and not (rev2 and needed in _IN_IMAP4REV2):
                    continue
            commands.append(verb)
        return commands

    def next_hint(self) -> str:
        if self._awaiting_continuation:
            return "wait for the server's + before sending the literal"
        if self._continued_tag is not None:
            if self._literal_to_send:
                return f"the literal: {self._literal_to_send} more bytes (each line end counts 2)"
            return "the rest of the command after the literal (an empty line ends it)"
        if self._sasl_pending:
            return "the base64 answer to the server's + challenge (* cancels)"
        if self._idling:
            return "DONE ends IDLE"
        if self.wants_tls_upgrade:
            return "TLS is starting"
        if self.state is IMAPState.NOT_AUTHENTICATED and "LOGINDISABLED" in self.capabilities:
            if "STARTTLS" in self.capabilities and not self.tls:
                return "STARTTLS (LOGIN is disabled until TLS)"
            return "AUTHENTICATE " + (self.auth_mechanisms[0] if self.auth_mechanisms else "")
        return HINTS[self.state]

    def _next_response(self) -> ServerResponse | NoEvent:
        while True:
            line = self._next_line()
            if isinstance(line, NoEvent):
                return line
            assembly = self._assembly
            if assembly is None:
                if not line.content and not line.truncated:
                    raise RemoteProtocolError("an empty line is not an IMAP response")
                if line.content.startswith(b"+"):
                    return self._continuation(line.content, line.raw)
                assembly = self._assembly = Assembly()
            assembly.add_text(decode_text(line.content), line.raw)
            if self._literal_after(assembly, line) is not None:
                continue
            self._assembly = None
            return self._finish_response(assembly)

    def _continuation(self, content: bytes, raw: bytes) -> Continuation:
        text = decode_text(content[2:] if content[1:2] == b" " else content[1:])
        if self._awaiting_continuation:
            self._awaiting_continuation = False
        elif "AUTHENTICATE" in self.pending.values():
            self._sasl_pending = True
        elif "IDLE" in self.pending.values():
            self._idling = True
        return Continuation(text, raw)

    def _finish_response(self, assembly: Assembly) -> ServerResponse:
        text = assembly.text
        if text.startswith("* ") or text == "*":
            return self._finish_untagged(assembly, text[2:])
        tag, _, rest = text.partition(" ")
        status, _, rest = rest.partition(" ")
        status = status.upper()
        if not _TAG.match(tag) or status not in TAGGED_STATUSES:
            raise RemoteProtocolError("not an IMAP response: {text}", text=peer_text(text))
        if self.state is IMAPState.GREETING:
            raise RemoteProtocolError("expected an IMAP greeting (* OK), got {text}",
                                      text=peer_text(text))
        code, message = split_code(rest.strip())
        command = self.pending.pop(tag, None)
        response = Tagged(
            tag=tag,
            status=status,
            code=code,
            text=message,
            command=command,
            raw=bytes(assembly.raw),
            literals=tuple(assembly.literals),
            truncated=assembly.truncated,
        )
        if tag == self._continued_tag:
            # The server refused the command before we finished typing it.
            self._continued_tag = None
            self._awaiting_continuation = False
            self._literal_to_send = 0
        if command == "AUTHENTICATE":
            self._sasl_pending = False
        if command == "IDLE":
            self._idling = False
        if code is not None and status == "OK":
            names = parse_capabilities(code)
            if names:
                self._set_capabilities(names)
        mailbox = self._pending_mailbox.pop(tag, None)
        self._apply_tagged(command, status)
        if self.state is IMAPState.SELECTED and command in ("SELECT", "EXAMINE"):
            self.selected_mailbox = mailbox
        return response

    def _finish_untagged(self, assembly: Assembly, text: str) -> Untagged:
        if not text.strip():
            raise RemoteProtocolError("an untagged response with nothing in it")
        response = Untagged(
            text=text,
            literals=tuple(assembly.literals),
            raw=bytes(assembly.raw),
            truncated=assembly.truncated,
        )
        kind = response.kind
        if self.state is IMAPState.GREETING and kind not in ("OK", "PREAUTH", "BYE"):
            raise RemoteProtocolError("expected an IMAP greeting (* OK), got {text}",
                                      text=peer_text(text))
        if kind == "CAPABILITY":
            self._set_capabilities(parse_capabilities(text))
        elif kind in ("OK", "PREAUTH") and response.code is not None:
            names = parse_capabilities(response.code)
            if names:
                self._set_capabilities(names)
        elif kind in ("LIST", "LSUB", "XLIST"):
            name = parse_list_mailbox(response)
            if name is not None and name not in self.mailboxes:
                self.mailboxes.append(name)
        elif kind == "EXISTS":
            self.exists = response.number
        elif kind == "EXPUNGE" and self.exists:
            self.exists -= 1
        self._apply_untagged(kind)
        return response

    # -- server role ----------------------------------------------------------------

    @property
    def needs_continuation(self) -> bool:
        """Server role: the client waits for ``+`` before sending its literal."""
        return self._needs_continuation

    @property
    def command_so_far(self) -> str:
        """Server role: the text of the command being read, up to the literal it waits
        for (literals as their markers); "" between commands. What a
        :class:`LiteralRequested` belongs to, for a server deciding whether to say ``+``."""
        assembly = self._assembly
        return assembly.text if assembly is not None else ""

    def reject_literal(self) -> None:
        """Server role: forget the command whose literal we refused (with a tagged NO/BAD)."""
        if self.role is not Role.SERVER or not self._needs_continuation:
            raise LocalProtocolError("there is no literal waiting to be refused")
        self._needs_continuation = False
        self._assembly = None

    def send(self, event: ServerResponse) -> bytes:
        """Bytes for a response (server role); moves the state as the client will see it."""
        if self.role is not Role.SERVER:
            raise LocalProtocolError("send() of a response is for the server role")
        if isinstance(event, Untagged):
            check_one_line(event.text)
            self._apply_untagged(event.kind)
            return format_with_literals("* " + event.text, event.literals)
        if isinstance(event, Tagged):
            if event.status not in TAGGED_STATUSES:
                raise LocalProtocolError("a tagged status is OK, NO or BAD, not {status}",
                                         status=event.status)
            if not _TAG.match(event.tag):
                raise LocalProtocolError("{tag!r} is not a valid tag", tag=event.tag)
            line = f"{event.tag} {event.status}"
            if event.code:
                line += f" [{event.code}]"
            if event.text:
                line += f" {event.text}"
            check_one_line(line)
            command = self.pending.pop(event.tag, None)
            self._apply_tagged(command, event.status)
            return line.encode("utf-8") + CRLF
        check_one_line(event.text)
        if self._needs_continuation:
            self._needs_continuation = False
        else:
            self._expect_response_line = True
        # RFC 3501 9: continue-req = "+" SP (resp-text / base64) CRLF, so the space
        # stays even when an AUTHENTICATE challenge is empty.
        return f"+ {event.text}".encode() + CRLF

    def next_command(self) -> ClientInput | NoEvent:
        """Server role: the next command (or literal request, or line after our ``+``)."""
        if self.role is not Role.SERVER:
            raise LocalProtocolError("the client role reads responses with next_event()")
        while True:
            line = self._next_line()
            if isinstance(line, NoEvent):
                return line
            assembly = self._assembly
            if assembly is None and self._expect_response_line:
                self._expect_response_line = False
                return ContinuationResponse(decode_text(line.content), line.raw)
            if assembly is None:
                assembly = self._assembly = Assembly()
                assembly.add_text(decode_text(line.content), line.raw)
                self._parse_command_head(assembly.text)  # a bad head fails now, not later
            else:
                assembly.add_text(decode_text(line.content), line.raw)
            marker = self._literal_after(assembly, line)
            if marker is not None:
                if marker.synchronizing:
                    self._needs_continuation = True
                    tag, _, _ = self._parse_command_head(assembly.text)
                    return LiteralRequested(tag=tag, size=marker.size)
                continue
            self._assembly = None
            self._needs_continuation = False
            tag, verb, args = self._parse_command_head(assembly.text)
            self.pending[tag] = verb
            return Command(
                tag=tag,
                verb=verb,
                args=args,
                literals=tuple(assembly.literals),
                raw=bytes(assembly.raw),
                truncated=assembly.truncated,
                streamed=tuple(assembly.streamed),
            )

    def _parse_command_head(self, text: str) -> tuple[str, str, str]:
        """(tag, VERB, args) of a command; a bad head drops the command and raises."""
        tag, _, rest = text.partition(" ")
        verb, _, args = rest.partition(" ")
        verb = verb.upper()
        if verb == "UID":
            sub, _, args = args.partition(" ")
            verb = f"UID {sub.upper()}"
        if not _TAG.match(tag) or not re.fullmatch(r"[A-Z0-9.\-_]+( [A-Z0-9.\-_]+)?", verb):
            self._assembly = None
            raise RemoteProtocolError("not an IMAP command: {text!r}", text=text[:80])
        return tag, verb, args
