"""The POP3 core (RFC 1939, with RFC 2449 CAPA, 2595 STLS, 5034 AUTH): bytes in, events out.

One ``POP3Connection`` class plays either role, with no I/O.

As a client it parses the server's answers. Whether an answer is multi-line is
not written in the answer itself: it depends on the command it answers (``+OK``
to ``RETR`` has a body, ``+OK`` to ``DELE`` has not), so the client keeps a FIFO
of the commands it sent and matches every answer to the oldest one. The greeting
answers a pseudo-command that is queued from the start. The FIFO is what makes
PIPELINING (RFC 2449) work: several commands may be in flight.

As a server it parses command lines into ``Command`` events and formats
``Response``/``Continuation`` events into bytes, dot-stuffing bodies.

Memory is bounded everywhere: lines are cut at 64 KiB by ``LineBuffer``, bodies
are cut at ``max_body``, and the message numbers learnt from STAT are capped.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from mailtalk.protocols.common import (
    CLIENT_ROLE,
    CONNECTION_CLOSED,
    NEED_DATA,
    SERVER_ROLE,
    Continuation,
    Line,
    LineBuffer,
    LocalProtocolError,
    NoEvent,
    RemoteProtocolError,
    ReplyClass,
    Role,
    decode_text,
    peer_text,
    redact_mistyped_login,
    split_verb,
)

# Default cap on a multi-line body (RETR of a huge message, or a server that never
# sends the final "."). The rest of the body is read and dropped.
MAX_BODY: Final = 64 * 1024 * 1024
# Each kept body line costs its wire length plus this much of the budget: roughly
# what CPython spends on a small bytes object and its tuple slot. Without it a
# flood of empty lines would cost 2 bytes each against the budget and far more
# in memory.
BODY_LINE_OVERHEAD: Final = 48
# RFC 2449 section 4: a command line is at most 255 octets, CRLF included. The
# server role reports longer lines (``Command.too_long``) instead of failing, so a
# server can answer -ERR and carry on.
MAX_COMMAND_LINE: Final = 255
# STAT may claim any count; completion does not need more numbers than this.
MAX_TRACKED_MESSAGES: Final = 100_000

# Pseudo-commands: what an answer answers when it answers no typed command.
GREETING: Final = "<greeting>"
AUTH_RESPONSE: Final = "<auth-response>"  # server role: a SASL line after "+ "
# ``AUTH`` without a mechanism lists the mechanisms (Dovecot, Courier); its +OK
# does not log in, so it needs its own key in the tables below.
AUTH_LISTING: Final = "<auth-listing>"


class POP3State(enum.Enum):
    GREETING = "greeting"  # connected, waiting for the server's +OK banner
    AUTHORIZATION = "authorization"
    TRANSACTION = "transaction"
    UPDATE = "update"  # QUIT answered in TRANSACTION: the server commits and closes
    CLOSED = "closed"


# The members the methods below read, as module names: on Python 3.11 a read through
# the class (``POP3State.CLOSED``) is a Python-level hook (see the SMTP core's _DATA),
# and a server session reads four for each command, RETRs pipelined by the thousand.
_GREETING_STATE: Final = POP3State.GREETING
_AUTHORIZATION: Final = POP3State.AUTHORIZATION
_TRANSACTION: Final = POP3State.TRANSACTION
_UPDATE: Final = POP3State.UPDATE
_CLOSED: Final = POP3State.CLOSED


# RFC 1939 section 3 (plus RFC 2449 CAPA, RFC 2595 STLS, RFC 5034 AUTH, RFC 6856 UTF8).
VALID_COMMANDS: Final[dict[POP3State, tuple[str, ...]]] = {
    POP3State.GREETING: (),
    POP3State.AUTHORIZATION: ("USER", "PASS", "APOP", "AUTH", "CAPA", "STLS", "QUIT", "UTF8"),
    POP3State.TRANSACTION: (
        "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "CAPA", "QUIT",
    ),
    POP3State.UPDATE: (),
    POP3State.CLOSED: (),
}

# Every command mailtalk knows, in whatever state (a mistyped login is none of them).
_KNOWN_VERBS: Final = frozenset(verb for verbs in VALID_COMMANDS.values() for verb in verbs)

# Optional commands, and the CAPA tag that says the server has them. Once CAPA was
# answered, a command whose tag is missing is not offered.
CAPABILITY_OF_COMMAND: Final[dict[str, str]] = {
    "STLS": "STLS",
    "AUTH": "SASL",
    "TOP": "TOP",
    "UIDL": "UIDL",
    "UTF8": "UTF8",
}

# How an answer moves the session: (state, command answered, +OK?) -> new state.
# A missing key leaves the state as it is.
TRANSITIONS: Final[dict[tuple[POP3State, str, bool], POP3State]] = {
    (POP3State.GREETING, GREETING, True): POP3State.AUTHORIZATION,
    # A server that greets with -ERR will not serve this session (RFC 1939 has no way
    # on from it); it closes the connection, as Dovecot does after -ERR [SYS/TEMP].
    (POP3State.GREETING, GREETING, False): POP3State.CLOSED,
    (POP3State.AUTHORIZATION, "PASS", True): POP3State.TRANSACTION,
    (POP3State.AUTHORIZATION, "APOP", True): POP3State.TRANSACTION,
    (POP3State.AUTHORIZATION, "AUTH", True): POP3State.TRANSACTION,
    (POP3State.AUTHORIZATION, "QUIT", True): POP3State.CLOSED,
    # RFC 1939 6: -ERR to QUIT only says some deletions failed; the server closes anyway.
    (POP3State.TRANSACTION, "QUIT", True): POP3State.UPDATE,
    (POP3State.TRANSACTION, "QUIT", False): POP3State.UPDATE,
}

# Commands whose +OK carries a body, always or only when sent without an argument
# (``LIST`` lists the maildrop, ``LIST 3`` answers for one message on one line).
MULTILINE_ALWAYS: Final = frozenset({"CAPA", "RETR", "TOP"})
MULTILINE_WITHOUT_ARGUMENT: Final = frozenset({"LIST", "UIDL", "LANG", AUTH_LISTING})

# Server role: after these, what the client sent next is not parsed until the
# answer went out (after STLS it belongs to TLS; after QUIT there is nothing).
_PAUSING_COMMANDS: Final = frozenset({"STLS", "QUIT"})

HINTS: Final[dict[POP3State, str]] = {
    POP3State.GREETING: "wait for the server's +OK greeting",
    POP3State.AUTHORIZATION: (
        "USER name, then PASS your-password (or CAPA to see what the server offers)"
    ),
    POP3State.TRANSACTION: "STAT, LIST, RETR n, DELE n, QUIT",
    POP3State.UPDATE: "the server is removing deleted messages and closing the connection",
    POP3State.CLOSED: "the connection is closed: :reconnect or :quit",
}

_STATUS = re.compile(rb"(\+OK|-ERR)(?:[ \t]+(.*))?\Z", re.IGNORECASE | re.DOTALL)
# RFC 2449 section 8: "[" resp-level *("/" resp-level) "]" right after the status.
_RESPONSE_CODE = re.compile(r"\[([^\]\s/]+(?:/[^\]\s/]+)*)\](?:[ \t]+|\Z)")
_VALID_CODE = re.compile(r"[^\]\s/\[]+(?:/[^\]\s/\[]+)*\Z")
# RFC 1939 7: the APOP timestamp is a msg-id, "<process-ID.clock@hostname>".
_APOP_TIMESTAMP = re.compile(rb"<[^<>\s@]*@[^<>\s]*>")
_NUMBER = re.compile(rb"[0-9]{1,9}\Z")


@dataclass(frozen=True, slots=True)
class Response:
    """A ``+OK``/``-ERR`` answer.

    ``text`` is what follows the status and the response ``code`` (the RFC 2449
    ``[IN-USE]``, ``[SYS/TEMP]``, ... without brackets). ``lines`` is the body of a
    multi-line answer, dot-unstuffed and without line ends; None for a one-line
    answer. ``command`` is the verb answered (None for the greeting and for
    answers that arrive when no command is outstanding). ``truncated`` says part
    of the answer was dropped to bound memory (or the server closed mid-body);
    ``raw`` then holds only the bytes that were kept.

    The server role builds these with just ``ok``, ``text``, ``code`` and ``lines``.
    """

    ok: bool
    text: str = ""
    code: str | None = None
    lines: tuple[bytes, ...] | None = None
    command: str | None = None
    raw: bytes = b""
    truncated: bool = False

    @property
    def reply_class(self) -> ReplyClass:
        return ReplyClass.POSITIVE if self.ok else ReplyClass.PERMANENT

    @property
    def final(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Command:
    """A command line as the server role parsed it.

    ``verb`` is upper-cased; ``args`` are the whitespace-separated arguments. A line
    over RFC 2449's 255 octets comes as ``verb=""``, ``args=()``, ``too_long=True``
    (answer it with -ERR); an empty line also has ``verb=""``. The line after a
    ``Continuation`` is the client's SASL response: ``verb=AUTH_RESPONSE`` and the
    whole line (base64, or ``*`` to cancel) as the only argument.
    """

    verb: str
    args: tuple[str, ...]
    raw: bytes
    too_long: bool = False


Event = Response | Continuation | Command


def apop_digest(timestamp: str, secret: str) -> str:
    """The APOP digest (RFC 1939 7): MD5 of the greeting's ``<...>`` and the secret, in hex."""
    data = (timestamp + secret).encode("utf-8")
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def parse_capabilities(lines: tuple[bytes, ...]) -> dict[str, list[str]]:
    """CAPA body lines as ``{"TAG": [args...]}`` with tags upper-cased."""
    capabilities: dict[str, list[str]] = {}
    for line in lines:
        words = decode_text(line).split()
        if words:
            capabilities[words[0].upper()] = words[1:]
    return capabilities


def _number(token: bytes) -> int | None:
    return int(token) if _NUMBER.match(token) else None


def _first_number(data: bytes) -> int | None:
    words = data.split()
    return _number(words[0]) if words else None


@dataclass(slots=True)
class _Sent:
    """A command sent (or, for the server role, received) and not answered yet."""

    key: str  # the verb, or a pseudo-command
    argument: str = ""
    # AUTH with a mechanism: the SASL exchange runs until the final answer, or "*".
    sasl_open: bool = False
    initial_response: bool = False
    challenged: bool = False

    @property
    def multiline_on_ok(self) -> bool:
        if self.key in MULTILINE_ALWAYS:
            return True
        return self.key in MULTILINE_WITHOUT_ARGUMENT and not self.argument


def _sent_from_line(line: str) -> _Sent:
    verb, rest = split_verb(line)
    if verb == "AUTH":
        if not rest:
            return _Sent(AUTH_LISTING)
        _mechanism, _, initial = rest.partition(" ")
        return _Sent("AUTH", rest, sasl_open=True, initial_response=bool(initial.strip()))
    return _Sent(verb, rest)


@dataclass(slots=True)
class _Body:
    """A multi-line answer being read."""

    sent: _Sent
    ok: bool
    text: str
    code: str | None
    raw: bytearray
    truncated: bool
    lines: list[bytes]
    budget_used: int = 0
    dropping: bool = False  # over the cap: read to the final "." and drop


class POP3Connection:
    """A POP3 session in one role; see the module docstring.

    Client role: ``receive_data()``, ``next_event()`` (``Response``/``Continuation``),
    ``send_line()``. Server role: ``receive_data()``, ``next_command()`` (``Command``),
    ``send()``, ``start_transaction()``, ``start_update()``. Both: ``tls_started()``.
    """

    protocol: str = "pop3"

    def __init__(self, role: Role = CLIENT_ROLE, max_body: int = MAX_BODY) -> None:
        self.role = role
        self.max_body = max_body
        self.state = _GREETING_STATE
        self.tls = False
        self.capabilities: dict[str, list[str]] = {}
        self.capabilities_known = False  # CAPA was answered +OK (since the last TLS start)
        self.apop_timestamp: str | None = None
        self.user_accepted = False  # USER got +OK: PASS is what comes next
        self._authenticated = False
        self._wants_tls_upgrade = False
        self._buffer = LineBuffer()
        self._closed = False
        self._pending: deque[_Sent] = deque([_Sent(GREETING)])
        self._body: _Body | None = None
        self._known_messages: set[int] = set()
        self._deleted_messages: set[int] = set()
        # Server role: nothing after STLS or QUIT is parsed until it is answered.
        self._paused = False
        self._expect_sasl_response = False

    # -- shared -----------------------------------------------------------------

    @property
    def state_name(self) -> str:
        return self.state.value

    @property
    def authenticated(self) -> bool:
        return self._authenticated

    @property
    def awaiting_reply(self) -> bool:
        return bool(self._pending) and self.state is not _CLOSED

    @property
    def pending_commands(self) -> tuple[str, ...]:
        return tuple(sent.key for sent in self._pending)

    @property
    def wants_tls_upgrade(self) -> bool:
        return self._wants_tls_upgrade

    @property
    def sasl_mechanisms(self) -> list[str]:
        return [mechanism.upper() for mechanism in self.capabilities.get("SASL", [])]

    @property
    def message_numbers(self) -> list[int]:
        """Messages known to exist and not marked deleted, for completion of RETR n etc."""
        return sorted(self._known_messages - self._deleted_messages)

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means the peer closed."""
        if not data:
            self._buffer.close()
            self._closed = True
            return
        if self._closed:
            raise LocalProtocolError("receive_data() after the peer closed the connection")
        if self._wants_tls_upgrade:
            # RFC 2595 4 / CVE-2011-0411: plaintext after the STLS +OK must never be
            # taken as part of the TLS session.
            return
        self._buffer.feed(data)

    def next_event(self) -> Response | Continuation | NoEvent:
        """The next answer from the server (client role).

        The server role reads with ``next_command()`` instead: keeping the two apart
        lets this class satisfy ``ClientCore``, whose ``next_event()`` yields only
        what a server sends.
        """
        if self.role is not CLIENT_ROLE:
            raise LocalProtocolError("next_event() is for the client role; use next_command()")
        return self._next_answer()

    def tls_started(self) -> None:
        """TLS is up (after STLS, or from the start on port 995)."""
        if self._wants_tls_upgrade:
            self._buffer = LineBuffer()
            self._wants_tls_upgrade = False
            # Anything pipelined behind STLS went out in plaintext and is not
            # answered inside TLS (RFC 2595 4 forbids sending it at all).
            self._pending.clear()
        self.tls = True
        # RFC 2595 4: capabilities may change under TLS; the client must ask again.
        self.capabilities = {}
        self.capabilities_known = False

    def _enter(self, new_state: POP3State) -> None:
        if new_state is _TRANSACTION:
            self._authenticated = True
        self.state = new_state

    def _start_tls_wait(self) -> None:
        self._wants_tls_upgrade = True
        self._buffer = LineBuffer()  # drop what followed the STLS exchange in plaintext

    # -- client role ------------------------------------------------------------

    def send_line(self, line: str) -> bytes:
        """Bytes for a line the user typed, CRLF added; tracks the answer it expects.

        A line typed during a SASL exchange is the SASL response, not a command.
        """
        if self.role is not CLIENT_ROLE:
            raise LocalProtocolError("send_line() is for the client role")
        if self.state is _CLOSED:
            raise LocalProtocolError("the POP3 session is closed")
        if line.endswith("\r\n"):
            line = line[:-2]
        elif line.endswith("\n"):
            line = line[:-1]
        if "\r" in line or "\n" in line:
            raise LocalProtocolError("a line cannot contain CR or LF")
        data = line.encode("utf-8") + b"\r\n"
        exchange = self._sasl_exchange()
        if exchange is not None:
            exchange.challenged = False
            if line.strip() == "*":
                exchange.sasl_open = False  # RFC 5034 4: the server answers -ERR
            return data
        self._pending.append(_sent_from_line(line))
        return data

    def _sasl_exchange(self) -> _Sent | None:
        """The AUTH exchange the next typed line belongs to, if any.

        Lines belong to it after a challenge, and also right after ``AUTH mech``
        without an initial response: the user may type the answer before the
        challenge arrives, and it must not be taken (and stored) as a command.
        """
        if not self._pending:
            return None
        last = self._pending[-1]
        if not last.sasl_open:
            return None
        if last.challenged or not last.initial_response:
            return last
        return None

    @property
    def sasl_pending(self) -> bool:
        """The next line sent is a SASL response (base64, or ``*`` to cancel)."""
        return self._sasl_exchange() is not None

    def redact(self, line: str) -> str:
        if self.role is CLIENT_ROLE and self._sasl_exchange() is not None:
            # "*" is the protocol's cancel, never a credential: keep it readable.
            return line if line.strip() == "*" else "***"
        words = line.split()
        if not words:
            return line
        verb = words[0].upper()
        if verb == "PASS" and len(words) > 1:
            return f"{words[0]} ***"
        if verb == "APOP" and len(words) > 2:
            return f"{words[0]} {words[1]} ***"
        if verb == "AUTH" and len(words) > 2:
            return f"{words[0]} {words[1]} ***"
        return redact_mistyped_login(line, _KNOWN_VERBS)

    def valid_commands(self) -> list[str]:
        if self.role is CLIENT_ROLE and self._sasl_exchange() is not None:
            return ["*"]
        if self._wants_tls_upgrade:
            return []
        commands = []
        for verb in VALID_COMMANDS[self.state]:
            if self.role is CLIENT_ROLE and not self._offered(verb):
                continue
            commands.append(verb)
        return commands

    def _offered(self, verb: str) -> bool:
        capability = CAPABILITY_OF_COMMAND.get(verb)
        if (
            capability is not None
            and self.capabilities_known
            and capability not in self.capabilities
        ):
            return False
        if verb == "PASS":
            return self.user_accepted
        if verb == "STLS":
            return not self.tls
        if verb == "APOP":
            return self.apop_timestamp is not None
        return True

    def next_hint(self) -> str:
        if self.role is CLIENT_ROLE and self._sasl_exchange() is not None:
            return "the base64 answer to the server's + challenge (* cancels)"
        if self._wants_tls_upgrade:
            return "STLS accepted: the TLS handshake comes next"
        if self.state is _AUTHORIZATION:
            if self.user_accepted:
                return "PASS your-password (or :auth plain USER, which hides it)"
            if "STLS" in self.capabilities and not self.tls:
                return "STLS to encrypt first, then USER name and PASS your-password"
        return HINTS[self.state]

    def _next_answer(self) -> Response | Continuation | NoEvent:
        while True:
            if self._wants_tls_upgrade and not self._closed:
                return NEED_DATA
            line = None if self._wants_tls_upgrade else self._buffer.next_line()
            if line is None:
                if not self._closed:
                    return NEED_DATA
                if self._body is not None:
                    # Closed mid-body: hand over what came, marked incomplete.
                    return self._finish_body(b"", complete=False)
                self.state = _CLOSED
                self._pending.clear()
                return CONNECTION_CLOSED
            answer: Response | Continuation | None
            if self._body is not None:
                answer = self._body_line(self._body, line)
            else:
                answer = self._status_line(line)
            if answer is not None:
                return answer

    def _status_line(self, line: Line) -> Response | Continuation | None:
        """The event for a status line, or None when it opens a body."""
        content = line.content
        head = self._pending[0] if self._pending else None
        match = _STATUS.match(content)
        if match is None:
            if (content == b"+" or content.startswith(b"+ ")) and head and head.sasl_open:
                head.challenged = True
                return Continuation(decode_text(content[2:]), line.raw)
            raise RemoteProtocolError("not a POP3 status line: {text}",
                                      text=peer_text(line.content))
        ok = match.group(1).upper() == b"+OK"
        text = decode_text(match.group(2) or b"").strip()
        code = None
        code_match = _RESPONSE_CODE.match(text)
        if code_match:
            code = code_match.group(1).upper()
            text = text[code_match.end() :]
        sent = self._pending.popleft() if self._pending else None
        if ok and sent is not None and sent.multiline_on_ok:
            self._body = _Body(
                sent=sent, ok=ok, text=text, code=code, raw=bytearray(line.raw),
                truncated=line.truncated, lines=[],
            )
            return None
        response = Response(
            ok=ok, text=text, code=code, lines=None, command=_command_name(sent),
            raw=line.raw, truncated=line.truncated,
        )
        if sent is not None:
            self._learn(sent, response)
        return response

    def _body_line(self, body: _Body, line: Line) -> Response | None:
        if line.content == b"." and not line.truncated:
            return self._finish_body(line.raw, complete=True)
        if line.truncated:
            body.truncated = True
        if body.dropping:
            return None
        content = line.content[1:] if line.content.startswith(b".") else line.content
        cost = len(line.raw) + BODY_LINE_OVERHEAD
        if body.budget_used + cost > self.max_body:
            body.dropping = True
            body.truncated = True
            return None
        body.budget_used += cost
        body.lines.append(content)
        body.raw += line.raw
        return None

    def _finish_body(self, terminator: bytes, complete: bool) -> Response:
        body = self._body
        assert body is not None
        self._body = None
        body.raw += terminator
        response = Response(
            ok=body.ok, text=body.text, code=body.code, lines=tuple(body.lines),
            command=_command_name(body.sent), raw=bytes(body.raw),
            truncated=body.truncated or not complete,
        )
        self._learn(body.sent, response)
        return response

    def _learn(self, sent: _Sent, response: Response) -> None:
        learner = LEARNERS.get((sent.key, response.ok))
        if learner is not None:
            learner(self, sent, response)
        new_state = TRANSITIONS.get((self.state, sent.key, response.ok))
        if new_state is not None:
            self._enter(new_state)

    def _learn_greeting(self, sent: _Sent, response: Response) -> None:
        match = _APOP_TIMESTAMP.search(response.raw)
        self.apop_timestamp = decode_text(match.group(0)) if match else None

    def _learn_capabilities(self, sent: _Sent, response: Response) -> None:
        self.capabilities = parse_capabilities(response.lines or ())
        self.capabilities_known = True

    def _learn_user_accepted(self, sent: _Sent, response: Response) -> None:
        self.user_accepted = True

    def _learn_user_rejected(self, sent: _Sent, response: Response) -> None:
        self.user_accepted = False

    def _learn_stat(self, sent: _Sent, response: Response) -> None:
        count = _first_number(response.text.encode("utf-8"))
        if count is None:
            return
        # STAT leaves out messages marked deleted, but numbers do not shift.
        highest = min(count + len(self._deleted_messages), MAX_TRACKED_MESSAGES)
        self._known_messages = set(range(1, highest + 1))

    def _learn_list(self, sent: _Sent, response: Response) -> None:
        if response.lines is None:
            number = _first_number(response.text.encode("utf-8"))
            if number is not None:
                self._known_messages.add(number)
            return
        listed = {n for n in map(_first_number, response.lines) if n is not None}
        self._known_messages = listed | self._deleted_messages

    def _learn_dele(self, sent: _Sent, response: Response) -> None:
        number = _first_number(sent.argument.encode("utf-8"))
        if number is not None:
            self._known_messages.add(number)
            self._deleted_messages.add(number)

    def _learn_rset(self, sent: _Sent, response: Response) -> None:
        self._deleted_messages.clear()

    def _learn_stls(self, sent: _Sent, response: Response) -> None:
        self._start_tls_wait()

    # -- server role ------------------------------------------------------------

    def send(self, event: Response | Continuation) -> bytes:
        """Bytes for an answer (server role). Bodies are dot-stuffed and ended by ``.``."""
        self._check_can_answer("send")
        if isinstance(event, Continuation):
            self._expect_sasl_response = True
            return b"+ " + _one_line(event.text) + b"\r\n"
        return self._answered(event.ok, format_response(event))

    def send_ok(self, text: str) -> bytes:
        """``send(Response(True, text))`` without making the Response: the first line of
        each answer to a RETR, sent thousands of times in a row by a pipelining client."""
        self._check_can_answer("send_ok")
        return self._answered(True, b"+OK " + _one_line(text) + b"\r\n" if text else b"+OK\r\n")

    def _check_can_answer(self, method: str) -> None:
        if self.role is not SERVER_ROLE:
            raise LocalProtocolError("{method}() is for the server role", method=method)
        if self.state is _CLOSED:
            raise LocalProtocolError("the POP3 session is closed")

    def _answered(self, ok: bool, data: bytes) -> bytes:
        """``data``, the answer to the oldest command not answered yet: what it changes."""
        self._expect_sasl_response = False
        sent = self._pending.popleft() if self._pending else None
        if sent is None:
            return data
        key = sent.key
        if self.state is _GREETING_STATE and key == GREETING:
            self.state = _AUTHORIZATION if ok else _CLOSED
        elif key == "STLS" and ok:
            self._start_tls_wait()
        if key in _PAUSING_COMMANDS:
            self._paused = False
        return data

    def start_transaction(self) -> None:
        """The server accepted the credentials (server role)."""
        if self.state is not _AUTHORIZATION:
            raise LocalProtocolError("cannot log in from the {state} state", state=self.state.value)
        self._enter(_TRANSACTION)

    def start_update(self) -> None:
        """QUIT in TRANSACTION: deletions are being committed (server role)."""
        if self.state is not _TRANSACTION:
            raise LocalProtocolError("no UPDATE state after {state}", state=self.state.value)
        self._enter(_UPDATE)

    def next_command(self) -> Command | NoEvent:
        """The next command line from the client (server role).

        After STLS or QUIT nothing more is parsed until it has been answered: what
        a client sends after STLS belongs to the TLS session, not to this one.
        """
        if self.role is not SERVER_ROLE:
            raise LocalProtocolError("next_command() is for the server role")
        if self._paused or self._wants_tls_upgrade:
            return CONNECTION_CLOSED if self._closed else NEED_DATA
        line = self._buffer.next_line()
        if line is None or (not line.ending and not line.truncated):
            # An unterminated last line is never acted on: the client did not finish it.
            if self._closed:
                self.state = _CLOSED
                return CONNECTION_CLOSED
            return NEED_DATA
        if self._expect_sasl_response:
            self._expect_sasl_response = False
            return Command(AUTH_RESPONSE, (decode_text(line.content),), line.raw, line.truncated)
        if line.truncated or len(line.content) + 2 > MAX_COMMAND_LINE:
            self._pending.append(_Sent(""))
            return Command("", (), line.raw, too_long=True)
        words = decode_text(line.content).split()
        verb = words[0].upper() if words else ""
        self._pending.append(_Sent(verb))
        if verb in _PAUSING_COMMANDS:
            self._paused = True
        return Command(verb, tuple(words[1:]), line.raw)


def _command_name(sent: _Sent | None) -> str | None:
    if sent is None or sent.key == GREETING:
        return None
    return "AUTH" if sent.key == AUTH_LISTING else sent.key


def _one_line(text: str) -> bytes:
    if "\r" in text or "\n" in text:
        raise LocalProtocolError("a status line cannot contain CR or LF")
    return text.encode("utf-8")


def format_response(response: Response) -> bytes:
    """``+OK text`` / ``-ERR [CODE] text``, then the dot-stuffed body and ``.`` if any."""
    parts = [b"+OK" if response.ok else b"-ERR"]
    if response.code is not None:
        if not _VALID_CODE.match(response.code):
            raise LocalProtocolError("not a response code: {code!r}", code=response.code)
        parts.append(b"[" + response.code.encode("utf-8") + b"]")
    if response.text:
        parts.append(_one_line(response.text))
    out = bytearray(b" ".join(parts) + b"\r\n")
    if response.lines is None:
        return bytes(out)
    if not response.ok:
        raise LocalProtocolError("-ERR is always a single line")
    for line in response.lines:
        if b"\n" in line:
            raise LocalProtocolError("a body line cannot contain LF")
        if line.startswith(b"."):
            out += b"."
        out += line + b"\r\n"
    out += b".\r\n"
    return bytes(out)


# What an answer teaches the client, keyed by (command answered, +OK?).
LEARNERS: Final[dict[tuple[str, bool], Callable[[POP3Connection, _Sent, Response], None]]] = {
    (GREETING, True): POP3Connection._learn_greeting,
    ("CAPA", True): POP3Connection._learn_capabilities,
    ("USER", True): POP3Connection._learn_user_accepted,
    ("USER", False): POP3Connection._learn_user_rejected,
    ("PASS", False): POP3Connection._learn_user_rejected,
    ("STAT", True): POP3Connection._learn_stat,
    ("LIST", True): POP3Connection._learn_list,
    ("DELE", True): POP3Connection._learn_dele,
    ("RSET", True): POP3Connection._learn_rset,
    ("STLS", True): POP3Connection._learn_stls,
}
