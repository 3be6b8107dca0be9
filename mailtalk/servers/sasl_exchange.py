"""One SASL exchange on a server, sans-IO: SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE
alike. Given the mechanism and the initial response, and then each answer line, it
says what happens next; each server says that in its own words and changes its own
state.

The lines are the protocols' and alike in all three (RFC 4954 4, RFC 5034 4, RFC
4959 3 with RFC 9051 6.2.2): the initial response is base64, or ``=`` for an empty
one; an answer after a challenge is base64 only (the empty line is the empty answer,
``=`` is not base64), or ``*`` to cancel. PLAIN and LOGIN are decoded here; CRAM-MD5,
SCRAM and the token mechanisms are :mod:`mailtalk.protocols.sasl_server`'s, driven
through this, and loaded only when one is asked for (most sessions never use them).

The servers used to read ``=`` and ``*`` each in its own way; Dovecot (POP3, IMAP),
Postfix and Exim read them as above, so now ours do too
(tests/interop/test_sasl_lines_real.py). Where those differ, ours follow the RFC:
Postfix answers 535 to a line that is not base64 (Exim and RFC 4954 say 501), and
Mailutils' imap4d NO to ``*`` and ``=`` after a challenge (Dovecot and RFC 9051 say
BAD). :class:`Dialect` keeps the one real difference: only SMTP offers LOGIN.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from mailtalk.protocols import sasl_server

# LOGIN's prompts (draft-murchison-sasl-login): what every client expects to see.
LOGIN_PROMPTS: Final = (b"Username:", b"Password:")


@dataclass(frozen=True)
class Dialect:
    """What one protocol offers beyond PLAIN and the servers' extra mechanisms (the
    exchange itself is the same in all three)."""

    login: bool  # LOGIN is offered


SMTP: Final = Dialect(login=True)
POP3: Final = Dialect(login=False)
IMAP: Final = Dialect(login=False)


# -- what happens next ------------------------------------------------------------------


@dataclass(frozen=True)
class Challenge:
    """Send this challenge and wait for the answer line."""

    data: bytes

    @property
    def line(self) -> str:
        return base64.b64encode(self.data).decode("ascii")


@dataclass(frozen=True)
class Cancelled:
    """The client cancelled with ``*``: the exchange is over."""


@dataclass(frozen=True)
class Malformed:
    """The client's line broke the exchange, which is over. ``kind``: ``base64`` (the
    line is not base64: a syntax error, 501 or BAD), ``fields`` (PLAIN's answer is
    not three UTF-8 fields), or ``mechanism`` (``detail`` says what, in the
    mechanism's words). The last two decoded, so the mechanism failed: every real
    server answers them as a failed login (535, NO, -ERR [AUTH]), not as a syntax
    error."""

    kind: Literal["base64", "fields", "mechanism"]
    detail: str = ""

    @property
    def undecodable(self) -> bool:
        """The line was not base64 (RFC 4954 4's 501, RFC 9051 6.2.2's BAD)."""
        return self.kind == "base64"


@dataclass(frozen=True)
class Credentials:
    """PLAIN or LOGIN is over: check this password (the server's guard does)."""

    authzid: str
    user: str
    password: str

    def __repr__(self) -> str:  # never a password in a log line or a traceback
        return f"Credentials(authzid={self.authzid!r}, user={self.user!r}, password=***)"


@dataclass(frozen=True)
class Verify:
    """Run ``verify`` (the proof or token of ``user``) as a password is checked, off the
    event loop and budgeted, then tell :meth:`Exchange.checked` the verdict."""

    user: str
    verify: Callable[[], bool]


@dataclass(frozen=True)
class Finished:
    """The mechanism is over, ``user`` proved to be who they said or not."""

    user: str
    ok: bool


Step = Challenge | Cancelled | Malformed | Credentials | Verify | Finished
ENDS: Final = (Cancelled, Malformed, Credentials, Finished)


class Exchange:
    """One exchange: :meth:`start`, then :meth:`answer` for each line the client sends
    after a :class:`Challenge`, and :meth:`checked` after a :class:`Verify`. Once a step
    ends it (:data:`ENDS`), ``over`` is true and it takes no more lines."""

    def __init__(self, name: str, mechanism: sasl_server.ServerMechanism | None = None) -> None:
        self.name = name  # upper case, as journaled
        self.over = False
        self._mechanism = mechanism  # None: PLAIN or LOGIN, read here
        self._login_user: str | None = None  # LOGIN's first answer

    def start(self, initial: str | None) -> Step:
        """The first step, given the initial response (None: the client sent none;
        ``=``: an empty one, which PLAIN, like Dovecot's, Postfix's and Exim's, refuses
        as a failed login rather than waiting for another)."""
        if initial is None:
            if self._mechanism is not None:
                return self._step(self._mechanism.start(None))
            return Challenge(LOGIN_PROMPTS[0] if self.name == "LOGIN" else b"")
        return self._take(_decode(initial, initial=True), first=True)

    def answer(self, line: str) -> Step:
        """The client's line after a challenge."""
        if self.over:
            raise RuntimeError(f"the {self.name} exchange is over")
        if line.strip() == "*":
            return self._end(Cancelled())
        return self._take(_decode(line), first=False)

    def _take(self, data: bytes | Malformed, first: bool) -> Step:
        """The decoded line given to the mechanism."""
        if isinstance(data, Malformed):
            return self._end(data)
        if self._mechanism is None:
            return self._password_answer(data)
        return self._step(self._mechanism.start(data) if first else self._mechanism.respond(data))

    def checked(self, ok: bool) -> Step:
        """The verdict on the last :class:`Verify`."""
        assert self._mechanism is not None, "PLAIN and LOGIN end in Credentials"
        return self._step(self._mechanism.checked(ok))

    def _password_answer(self, data: bytes) -> Step:
        """A PLAIN answer, or LOGIN's user name or password."""
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return self._end(Malformed("fields") if self.name == "PLAIN" else
                             Malformed("mechanism", "LOGIN's answer is not UTF-8"))
        if self.name == "LOGIN":
            if self._login_user is None:
                self._login_user = text
                return Challenge(LOGIN_PROMPTS[1])
            return self._end(Credentials("", self._login_user, text))
        fields = text.split("\0")
        if len(fields) != 3:
            return self._end(Malformed("fields"))
        return self._end(Credentials(*fields))

    def _step(self, step: sasl_server.ServerStep) -> Step:
        """The mechanism's step in this module's terms."""
        from mailtalk.protocols import sasl_server

        if isinstance(step, sasl_server.Challenge):
            return Challenge(step.data)
        if isinstance(step, sasl_server.Check):
            return Verify(step.user, step.verify)
        if step.malformed:
            return self._end(Malformed("mechanism", step.malformed))
        return self._end(Finished(step.user, step.ok))

    def _end(self, step: Step) -> Step:
        self.over = True
        return step


def _decode(line: str, initial: bool = False) -> bytes | Malformed:
    """A line of the exchange as bytes, or why it is not one. ``=`` is the empty
    initial response only: after a challenge it is not base64 (RFC 9051 6.2.2 names a
    non-terminal "=" invalid; Dovecot, Postfix and Exim refuse it there too)."""
    line = line.strip()
    if initial and line == "=":
        return b""
    try:
        return base64.b64decode(line, validate=True)
    except ValueError:  # binascii.Error, and a str that is not ASCII
        return Malformed("base64")
