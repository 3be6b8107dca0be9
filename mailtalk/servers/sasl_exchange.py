"""One SASL exchange on a server, sans-IO: SMTP AUTH, POP3 AUTH and IMAP AUTHENTICATE
alike. Given the mechanism and the initial response, and then each answer line, it
says what happens next; each server says that in its own words and changes its own
state.

The lines are the protocols' (base64, ``*`` to cancel, ``=`` for an empty initial
response); PLAIN and LOGIN are decoded here; CRAM-MD5, SCRAM and the token mechanisms
are :mod:`mailtalk.protocols.sasl_server`'s, driven through this, and loaded only
when one is asked for (most sessions never use them).

Where the servers have always differed, :class:`Dialect` says how, so that no
client meets a change: ``=`` is IMAP's empty PLAIN answer but bad base64 to POP3 and
SMTP; ``*`` as PLAIN's initial response cancels in POP3 and IMAP, and is bad base64
to SMTP, which takes ``AUTH PLAIN =`` as no initial response; only SMTP offers LOGIN.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

if TYPE_CHECKING:
    from mailtalk.protocols import sasl_server

# LOGIN's prompts (draft-murchison-sasl-login): what every client expects to see.
LOGIN_PROMPTS: Final = (b"Username:", b"Password:")


@dataclass(frozen=True)
class Dialect:
    """How one protocol reads PLAIN's and LOGIN's lines (see the module's words)."""

    equals_is_empty: bool  # "=" answers PLAIN with nothing, rather than being bad base64
    star_first_cancels: bool  # "*" as PLAIN's initial response cancels
    equals_first_waits: bool  # "=" as PLAIN's initial response: challenge, as with none
    login: bool  # LOGIN is offered


SMTP: Final = Dialect(equals_is_empty=False, star_first_cancels=False,
                      equals_first_waits=True, login=True)
POP3: Final = Dialect(equals_is_empty=False, star_first_cancels=True,
                      equals_first_waits=False, login=False)
IMAP: Final = Dialect(equals_is_empty=True, star_first_cancels=True,
                      equals_first_waits=False, login=False)


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
    """The client's line broke the exchange, which is over. ``kind``: ``base64`` (not
    base64, or PLAIN's or LOGIN's text not UTF-8), ``fields`` (a PLAIN answer without
    its three fields), or ``mechanism`` (``detail`` says what, in the mechanism's words)."""

    kind: Literal["base64", "fields", "mechanism"]
    detail: str = ""


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

    def __init__(self, name: str, dialect: Dialect,
                 mechanism: sasl_server.ServerMechanism | None = None) -> None:
        self.name = name  # upper case, as journaled
        self.dialect = dialect
        self.over = False
        self._mechanism = mechanism  # None: PLAIN or LOGIN, read here
        self._login_user: str | None = None  # LOGIN's first answer

    def start(self, initial: str | None) -> Step:
        """The first step, given the initial response (None: the client sent none)."""
        if self._mechanism is not None:
            if initial is None:
                return self._step(self._mechanism.start(None))
            data = _decode(initial)
            return self._step(data if isinstance(data, Malformed) else self._mechanism.start(data))
        if initial is None or (self.dialect.equals_first_waits and initial.strip() == "="
                               and self.name == "PLAIN"):
            return Challenge(LOGIN_PROMPTS[0] if self.name == "LOGIN" else b"")
        if self.name == "PLAIN" and self.dialect.star_first_cancels:
            return self.answer(initial)
        return self._password_answer(initial)

    def answer(self, line: str) -> Step:
        """The client's line after a challenge."""
        if self.over:
            raise RuntimeError(f"the {self.name} exchange is over")
        if line.strip() == "*":
            return self._end(Cancelled())
        if self._mechanism is None:
            return self._password_answer(line)
        data = _decode(line)
        return self._step(data if isinstance(data, Malformed) else self._mechanism.respond(data))

    def checked(self, ok: bool) -> Step:
        """The verdict on the last :class:`Verify`."""
        assert self._mechanism is not None, "PLAIN and LOGIN end in Credentials"
        return self._step(self._mechanism.checked(ok))

    def _password_answer(self, line: str) -> Step:
        """A PLAIN answer, or LOGIN's user name or password."""
        line = line.strip()
        try:
            text = base64.b64decode("" if line == "=" and self.dialect.equals_is_empty else line,
                                    validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return self._end(Malformed("base64"))
        if self.name == "LOGIN":
            if self._login_user is None:
                self._login_user = text
                return Challenge(LOGIN_PROMPTS[1])
            return self._end(Credentials("", self._login_user, text))
        fields = text.split("\0")
        if len(fields) != 3:
            return self._end(Malformed("fields"))
        return self._end(Credentials(*fields))

    def _step(self, step: sasl_server.ServerStep | Malformed) -> Step:
        """The mechanism's step in this module's terms."""
        from mailtalk.protocols import sasl_server

        if isinstance(step, Malformed):
            return self._end(step)
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


def _decode(line: str) -> bytes | Malformed:
    """A line of a mechanism's exchange as bytes (``=``: none), or why it is not one."""
    from mailtalk.protocols import sasl

    try:
        return sasl.decode(line)
    except sasl.SASLError:
        return Malformed("base64")
