"""The SMTP client's sequence: which command comes next, given a plan and the replies so far.

Four jobs talk SMTP as a client from the greeting to QUIT: ``mailtalk send``,
``mailtalk diagnose relay``, ``mailtalk mx --probe`` and the reference server's
onward delivery. They share this one sequence (RFC 5321 3.3 and 4.3.2, RFC 3207,
RFC 4954, RFC 1870, RFC 6152)::

    the greeting
    EHLO                          HELO when EHLO gets a 5xx (an SMTP-only server)
    STARTTLS, TLS, EHLO again     when the plan requires it, or it is offered
    AUTH                          the driver runs the SASL exchange
    MAIL FROM:<sender>            SIZE= and BODY=8BITMIME when offered and planned
    RCPT TO:<each recipient>      each recipient's reply kept
    DATA, the message
    QUIT

and differ only in their ``Plan``: which stages, where to stop (``send
--quit-after``/``--drop-after``; ``diagnose relay`` stops after RCPT and never
sends DATA; the probe stops after TLS), and how to end (QUIT; RSET to go on with
another plan on the same connection; or dropping the connection without a word,
the only way to leave after DATA's 354 without sending the message).

Like the cores it does no I/O (h11's shape, see ``protocols/common.py``): it says
what to do next, ``next_action()``, and is told the reply, ``receive(reply)``. The
drivers do the I/O: ``mailtalk.mail.smtp_steps`` over the live-session engine (one
blocking connection, everything shown), ``mailtalk.servers.delivery`` over asyncio
streams. What the sequence needs to know about the session (the EHLO keywords,
whether TLS is on, whether the server is closing the channel) it reads from the
SMTP core the driver talks through, so there is one state table: the core's. A
sequence started on a connection that is past its greeting (or its EHLO, or its
TLS) begins where the connection is: that is how a diagnosis asks several plans in
turn on one connection.

A reply that refuses a stage ends the sequence (``Result.refusal``) and the plan's
ending follows, except after a 421 (RFC 5321 3.8: the server is closing the
channel, so nothing more is sent). A plan that ``persist``s goes on past a refused
greeting, EHLO and HELO, to see what the server says to MAIL and RCPT (a
diagnosis); a delivery stops at the first refusal.
"""

from __future__ import annotations

import enum
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Final

from mailtalk.protocols.common import ClientCore, LocalProtocolError, Role
from mailtalk.protocols.smtp import END_OF_DATA, GREETING, Reply, SMTPConnection, SMTPState


class Stage(enum.Enum):
    """The stages in their order; the values are ``send --quit-after``'s names."""

    CONNECT = "connect"  # the greeting
    EHLO = "ehlo"  # EHLO, or HELO after a 5xx to it
    TLS = "tls"  # STARTTLS, the handshake, EHLO again
    AUTH = "auth"
    MAIL = "mail"
    RCPT = "rcpt"
    DATA = "data"  # the DATA command, up to its 354
    MESSAGE = "dot"  # the message, up to the reply to its final dot


# Where a plan may stop, in order (``send --drop-after``'s choices).
STOP_POINTS: Final = ("connect", "ehlo", "tls", "auth", "mail", "rcpt", "data", "dot")
# Where a plan may stop and then QUIT (``send --quit-after``'s choices): not after
# DATA's 354, where the server reads every line, QUIT too, as the message until its
# final dot (RFC 5321 4.1.1.4); there the only way out without sending it is to drop.
QUIT_POINTS: Final = tuple(point for point in STOP_POINTS if point != "data")


class TLSPolicy(enum.Enum):
    NEVER = "never"
    IF_OFFERED = "if offered"  # opportunistic: a refused STARTTLS goes on in plain text
    REQUIRED = "required"  # not offered, or refused: the sequence ends there


class Ending(enum.Enum):
    """How a sequence ends, once it stopped (at its stop point, a refusal or the end)."""

    QUIT = "quit"
    # Reset the transaction (when MAIL was sent) and leave the session open for the
    # next plan on the same connection.
    RSET = "rset"
    OPEN = "open"  # send nothing: the next plan goes on from here
    # Close the connection without QUIT (``send --drop-after``): how a client that
    # crashes or loses its network looks to the server.
    DROP = "drop"


@dataclass(frozen=True)
class Plan:
    """What one sequence is to do; see the module docstring for the order."""

    helo: str  # the name given in EHLO/HELO
    sender: str | None = None  # None: no transaction (MAIL, RCPT, DATA are left out)
    recipients: tuple[str, ...] = ()
    starttls: TLSPolicy = TLSPolicy.NEVER
    auth: bool = False  # AUTH after EHLO (and TLS); the driver knows who and how
    size: int | None = None  # declared as SIZE= when the server offers SIZE (RFC 1870)
    eight_bit: bool = False  # the message has 8-bit bytes: BODY=8BITMIME when offered
    stop_after: Stage | None = None  # None: on to the message
    ending: Ending = Ending.QUIT
    persist: bool = False  # go on past a refused greeting, EHLO and HELO

    def __post_init__(self) -> None:
        if self.sender is not None and not self.recipients:
            raise ValueError("a plan with a sender needs at least one recipient")
        if self.stop_after is Stage.DATA and self.ending is not Ending.DROP:
            raise ValueError(
                "after DATA's 354 every line is the message, QUIT or RSET too: "
                "a plan that stops there can only drop the connection"
            )


# -- what the driver is asked to do ------------------------------------------------


@dataclass(frozen=True)
class Await:
    """Read the next reply without sending anything (the greeting) and ``receive()`` it."""


@dataclass(frozen=True)
class Command:
    """Send ``line`` (through the core's ``send_line``) and ``receive()`` its reply."""

    line: str


@dataclass(frozen=True)
class StartTLS:
    """The server accepted STARTTLS: do the TLS handshake, tell the core
    (``tls_started()``), then ask ``next_action()`` again."""


@dataclass(frozen=True)
class Authenticate:
    """Run the SASL exchange (RFC 4954) and ``receive()`` its final reply.

    ``mechanisms`` are the ones the server offered (none: it offered no AUTH here);
    ``tls`` says whether TLS is on, for advice when AUTH is missing.
    """

    mechanisms: tuple[str, ...]
    tls: bool


@dataclass(frozen=True)
class Message:
    """The server said 3xx to DATA: send the message (the core's ``send_message``,
    dot-stuffed, ended by ``.``) and ``receive()`` the reply to it."""


@dataclass(frozen=True)
class Quit:
    """Send QUIT; its reply, if it comes soon, changes nothing. Then ``next_action()``."""


@dataclass(frozen=True)
class Drop:
    """Close the connection without QUIT (``Ending.DROP``), then ``next_action()``."""


@dataclass(frozen=True)
class Done:
    result: Result


Action = Await | Command | StartTLS | Authenticate | Message | Quit | Drop | Done
_NEEDS_REPLY: Final = (Await, Command, Authenticate, Message)


# -- what came of it -------------------------------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One command of the sequence and the reply to it.

    ``command`` is the line sent; the core's pseudo-commands for what is not a
    line: ``<greeting>``, ``<end-of-data>``; ``AUTH`` for a whole SASL exchange.
    """

    stage: Stage
    command: str
    reply: Reply

    @property
    def verb(self) -> str:
        """``MAIL`` for ``MAIL FROM:<a@b>``; a pseudo-command as it is."""
        return _verb(self.command)


@dataclass(frozen=True)
class Refusal:
    """What ended a sequence before its stop point.

    ``reply`` is None where nothing was refused but something was missing: STARTTLS
    required and not offered. After RCPT, it is the first recipient's refusal (every
    recipient was refused), or a 421.
    """

    stage: Stage
    command: str
    reply: Reply | None

    @property
    def verb(self) -> str:
        """``MAIL`` for ``MAIL FROM:<a@b>``; a pseudo-command as it is."""
        return _verb(self.command)


@dataclass
class Result:
    """What a sequence got: each stage's exchanges in order, each recipient's reply, and how
    it ended (a refusal, the plan's stop point, the server closing, or none of these:
    the message was sent)."""

    exchanges: list[Exchange] = field(default_factory=list)
    recipients: list[tuple[str, Reply]] = field(default_factory=list)  # each RCPT's reply
    refusal: Refusal | None = None
    stopped_after: Stage | None = None  # the plan's stop point, reached
    closing: bool = False  # the server said 421 (or the core saw it close): no QUIT

    @property
    def accepted(self) -> list[str]:
        """The recipients the server took (2xx to RCPT), in the plan's order."""
        return [rcpt for rcpt, reply in self.recipients if reply.code // 100 == 2]

    @property
    def sent(self) -> bool:
        """The server took the message (2xx to its final dot)."""
        reply = self.reply(Stage.MESSAGE)
        return reply is not None and reply.code // 100 == 2

    def reply(self, stage: Stage) -> Reply | None:
        """The last reply of ``stage``; None if none came."""
        exchanges = self.exchanges_of(stage)
        return exchanges[-1].reply if exchanges else None

    def exchanges_of(self, stage: Stage) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if exchange.stage is stage]


def _verb(command: str) -> str:
    word = command.split(" ", 1)[0]
    return word if word.startswith("<") else word.upper()


# -- the sequence ------------------------------------------------------------------------


class ClientSequence:
    """One plan over one SMTP core in the client role; see the module docstring.

    ``next_action()`` says what to do. After an ``Await``, ``Command``,
    ``Authenticate`` or ``Message`` the driver must ``receive()`` the reply before
    asking again; after ``StartTLS``, ``Quit`` and ``Drop`` it just asks again. ``Done``
    carries the ``Result`` (also ``result``, filled as it goes: a driver that
    loses the connection half-way still has what came before).
    """

    def __init__(self, core: ClientCore, plan: Plan) -> None:
        if not isinstance(core, SMTPConnection) or core.role is not Role.CLIENT:
            raise LocalProtocolError("the SMTP client sequence needs an SMTP core, client role")
        self.core = core
        self.plan = plan
        self.result = Result()
        self._steps = self._run()
        self._next: Action | None = None  # the action after the last received reply
        self._expecting = False
        self._done: Done | None = None
        self._waiting_for = GREETING

    @property
    def waiting_for(self) -> str:
        """What the last action waits on (or did): ``<greeting>``, a verb (``EHLO``,
        ``STARTTLS`` during the handshake too, ``RCPT``, ...), ``<end-of-data>``."""
        return self._waiting_for

    def next_action(self) -> Action:
        if self._done is not None:
            return self._done
        if self._expecting:
            raise LocalProtocolError(f"the reply to {self._waiting_for} has not been received")
        action = self._next if self._next is not None else self._advance(None)
        self._next = None
        if isinstance(action, _NEEDS_REPLY):
            self._expecting = True
        return action

    def receive(self, reply: Reply) -> None:
        """The reply to the last ``Await``, ``Command``, ``Authenticate`` or ``Message``."""
        if not self._expecting:
            raise LocalProtocolError("no reply is awaited now")
        if not isinstance(reply, Reply):
            raise LocalProtocolError(f"an SMTP reply is needed, not {reply!r}")
        self._expecting = False
        self._next = self._advance(reply)

    def _advance(self, reply: Reply | None) -> Action:
        try:
            action = self._steps.send(reply)
        except StopIteration:
            self._done = Done(self.result)
            return self._done
        if isinstance(action, Command):
            self._waiting_for = _verb(action.line)
        elif isinstance(action, Await):
            self._waiting_for = GREETING
        elif isinstance(action, Authenticate):
            self._waiting_for = "AUTH"
        elif isinstance(action, Message):
            self._waiting_for = END_OF_DATA
        elif isinstance(action, Quit):
            self._waiting_for = "QUIT"
        return action

    # -- the stages, in order ------------------------------------------------------

    def _run(self) -> Generator[Action, Reply | None, None]:
        plan = self.plan
        stages = [
            (Stage.CONNECT, self._greeting),
            (Stage.EHLO, self._hello),
            (Stage.TLS, self._tls),
            (Stage.AUTH, self._auth),
        ]
        if plan.sender is not None:
            stages += [
                (Stage.MAIL, self._mail),
                (Stage.RCPT, self._rcpt),
                (Stage.DATA, self._data),
                (Stage.MESSAGE, self._message),
            ]
        if self.core.state is SMTPState.CLOSED:
            self.result.closing = True
            return
        for stage, step in stages:
            if not (yield from step()):
                break
            if plan.stop_after is stage:
                self.result.stopped_after = stage
                break
        yield from self._end()

    def _greeting(self) -> Generator[Action, Reply | None, bool]:
        if GREETING not in self.core.pending_commands:
            return True  # a connection past its greeting
        reply = yield from self._ask(Stage.CONNECT, Await(), GREETING)
        return self._check(Stage.CONNECT, GREETING, reply)

    def _hello(self) -> Generator[Action, Reply | None, bool]:
        if self.core.greeted:
            return True
        line = f"EHLO {self.plan.helo}"
        reply = yield from self._ask(Stage.EHLO, Command(line), line)
        if reply.code // 100 == 5:  # RFC 5321 4.1.4: a server that knows only HELO
            line = f"HELO {self.plan.helo}"
            reply = yield from self._ask(Stage.EHLO, Command(line), line)
        return self._check(Stage.EHLO, line, reply)

    def _tls(self) -> Generator[Action, Reply | None, bool]:
        policy = self.plan.starttls
        if policy is TLSPolicy.NEVER or self.core.tls:
            return True
        if "STARTTLS" not in self.core.extensions:
            if policy is TLSPolicy.REQUIRED:
                self.result.refusal = Refusal(Stage.TLS, "STARTTLS", None)
                return False
            return True
        reply = yield from self._ask(Stage.TLS, Command("STARTTLS"), "STARTTLS")
        if reply.code // 100 != 2:
            if policy is TLSPolicy.REQUIRED or self.result.closing:
                return self._check(Stage.TLS, "STARTTLS", reply)
            return True  # opportunistic: on in plain text
        yield StartTLS()
        if not self.core.tls:
            raise LocalProtocolError("TLS was not started after the server's yes to STARTTLS")
        line = f"EHLO {self.plan.helo}"  # RFC 3207 4.2: what came before TLS is forgotten
        reply = yield from self._ask(Stage.TLS, Command(line), line)
        return self._check(Stage.TLS, line, reply)

    def _auth(self) -> Generator[Action, Reply | None, bool]:
        if not self.plan.auth or self.core.authenticated:
            return True
        offered = Authenticate(tuple(self.core.auth_mechanisms), self.core.tls)
        reply = yield from self._ask(Stage.AUTH, offered, "AUTH")
        return self._check(Stage.AUTH, "AUTH", reply)

    def _mail(self) -> Generator[Action, Reply | None, bool]:
        plan, extensions = self.plan, self.core.extensions
        line = f"MAIL FROM:<{plan.sender}>"
        if plan.size is not None and "SIZE" in extensions:
            line += f" SIZE={plan.size}"
        if plan.eight_bit and "8BITMIME" in extensions:
            line += " BODY=8BITMIME"
        reply = yield from self._ask(Stage.MAIL, Command(line), line)
        return self._check(Stage.MAIL, line, reply)

    def _rcpt(self) -> Generator[Action, Reply | None, bool]:
        first_refusal: Refusal | None = None
        for recipient in self.plan.recipients:
            line = f"RCPT TO:<{recipient}>"
            reply = yield from self._ask(Stage.RCPT, Command(line), line)
            self.result.recipients.append((recipient, reply))
            if self.result.closing:
                self.result.refusal = Refusal(Stage.RCPT, line, reply)
                return False
            if reply.code // 100 != 2 and first_refusal is None:
                first_refusal = Refusal(Stage.RCPT, line, reply)
        if not self.result.accepted:
            self.result.refusal = first_refusal
            return False
        return True

    def _data(self) -> Generator[Action, Reply | None, bool]:
        reply = yield from self._ask(Stage.DATA, Command("DATA"), "DATA")
        if reply.code // 100 != 3 or self.result.closing:  # the core's table: 3xx starts it
            self.result.refusal = Refusal(Stage.DATA, "DATA", reply)
            return False
        return True

    def _message(self) -> Generator[Action, Reply | None, bool]:
        reply = yield from self._ask(Stage.MESSAGE, Message(), END_OF_DATA)
        return self._check(Stage.MESSAGE, END_OF_DATA, reply)

    def _end(self) -> Generator[Action, Reply | None, None]:
        if self.result.closing or self.core.state is SMTPState.CLOSED:
            return
        ending = self.plan.ending
        if ending is Ending.QUIT:
            yield Quit()
        elif ending is Ending.DROP:
            yield Drop()
        elif ending is Ending.RSET and self.result.exchanges_of(Stage.MAIL):
            reply = yield Command("RSET")
            assert reply is not None  # receive() hands over a Reply

    # -- helpers ---------------------------------------------------------------------

    def _ask(
        self, stage: Stage, action: Action, command: str
    ) -> Generator[Action, Reply | None, Reply]:
        reply = yield action
        assert reply is not None  # receive() hands over a Reply
        self.result.exchanges.append(Exchange(stage, command, reply))
        if reply.code == 421 or self.core.state is SMTPState.CLOSED:
            self.result.closing = True
        return reply

    def _check(self, stage: Stage, command: str, reply: Reply) -> bool:
        """Go on after ``reply``? A refusal is kept in the result; a plan that persists
        goes on past a refused greeting, EHLO and HELO (not past a 421)."""
        if reply.code // 100 == 2 and not self.result.closing:
            return True
        if self.plan.persist and stage in (Stage.CONNECT, Stage.EHLO) and not self.result.closing:
            return True
        self.result.refusal = Refusal(stage, command, reply)
        return False
