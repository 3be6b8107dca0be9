"""The SMTP client's sequence: which command comes next, given a plan and the replies so far.

Four jobs talk SMTP as a client from the greeting to QUIT: ``mailtalk send``,
``mailtalk diagnose relay``, ``mailtalk mx --probe`` and the reference server's
onward delivery. They share this one sequence (RFC 5321 3.3 and 4.3.2, RFC 3207,
RFC 4954, RFC 1870, RFC 6152)::

    the greeting
    EHLO                          HELO when EHLO gets a 5xx (an SMTP-only server)
    XCLIENT, EHLO again           when the plan names a client (Postfix XCLIENT)
    STARTTLS, TLS, EHLO again     when the plan requires it, or it is offered
    AUTH                          the driver runs the SASL exchange
    MAIL FROM:<sender>            SIZE=, BODY=8BITMIME, SMTPUTF8, RET=, ENVID= when
                                  offered and planned
    RCPT TO:<each recipient>      each recipient's reply kept; NOTIFY=, ORCPT= (DSN)
    DATA, the message             or BDAT chunks, the last with LAST (CHUNKING)
    QUIT

With PIPELINING offered and planned (``send --pipeline``, RFC 2920) MAIL, every RCPT
and DATA (or the first BDAT chunk) go as one ``Batch``: the driver writes them in
one write and hands back each reply in order, and each is then judged as if it had
come alone.

and differ only in their ``Plan``. Over an LMTP core (``SMTPConnection(lmtp=True)``,
RFC 2033) the same sequence says LHLO (never HELO: LMTP has none), and after the
final dot it reads the one reply per accepted recipient the core says is still
owed (``Await``s), keeping each in ``Result.deliveries``. PRDR (``send --prdr``,
draft-hall-prdr) is the same mode in SMTP: MAIL FROM carries PRDR when offered, and
a 353 to the final dot is followed by one reply per accepted recipient (kept in
``Result.deliveries``) and a final reply for the message. The plans set which
stages run, where to stop (``send --quit-after``/``--drop-after``; ``diagnose
relay`` stops after RCPT and never
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

An extension the plan ``requires`` (``send --dsn-notify``, ``--smtputf8``,
``--chunking``, ``--8bitmime``, ``--size``: the user asked for it by name, or an
address needs SMTPUTF8) and the server did not offer ends the sequence before MAIL
with a ``Refusal`` whose ``missing`` names it; so does a message over the server's
SIZE when the plan checks it. Without being required, an extension the server does
not offer is never used.

A reply that refuses a stage ends the sequence (``Result.refusal``) and the plan's
ending follows, except after a 421 (RFC 5321 3.8: the server is closing the
channel, so nothing more is sent). A plan that ``persist``s goes on past a refused
greeting, EHLO and HELO, to see what the server says to MAIL and RCPT (a
diagnosis); a delivery stops at the first refusal.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Final

from mailtalk.language import N_
from mailtalk.protocols.common import ClientCore, LocalProtocolError, Role
from mailtalk.protocols.smtp import (
    END_OF_DATA,
    GREETING,
    PRDR_START,
    Reply,
    SMTPConnection,
    SMTPState,
)


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
    # Extensions asked for by name: not offered, the sequence stops before MAIL.
    requires: frozenset[str] = frozenset()
    check_size: bool = False  # refuse locally a ``size`` over the server's SIZE limit
    smtputf8: bool = False  # SMTPUTF8 on MAIL when offered (RFC 6531)
    dsn: DSN | None = None  # RFC 3461 parameters, sent when DSN is offered
    chunk_size: int | None = None  # the message in BDAT chunks (RFC 3030) when offered
    # MAIL, RCPT and DATA (or the first BDAT) in one Batch when PIPELINING is offered
    pipeline: bool = False
    length: int = 0  # the message's octets as BDAT sends them (CRLF line ends)
    # Postfix XCLIENT attributes, (NAME, value) checked by protocols.xclient: sent
    # after EHLO (part of the EHLO stage), and required: not offered ends the sequence
    xclient: tuple[tuple[str, str], ...] = ()
    # PRDR on MAIL when offered: a reply per recipient to the message (draft-hall-prdr)
    prdr: bool = False

    def __post_init__(self) -> None:
        if self.sender is not None and not self.recipients:
            raise ValueError("a plan with a sender needs at least one recipient")
        if self.stop_after is Stage.DATA and self.ending is not Ending.DROP:
            raise ValueError(
                "after DATA's 354 every line is the message, QUIT or RSET too: "
                "a plan that stops there can only drop the connection"
            )


@dataclass(frozen=True)
class DSN:
    """What a delivery status notification is asked for (RFC 3461): NOTIFY= and ORCPT=
    on each RCPT, RET= and ENVID= on MAIL; None leaves a parameter out."""

    notify: str | None = None  # NEVER, or a comma list of SUCCESS, FAILURE, DELAY
    ret: str | None = None  # FULL or HDRS
    envid: str | None = None  # the envelope identifier, as given (xtext-encoded here)
    orcpt: bool = False  # ORCPT=rfc822;<the recipient> on each RCPT


NOTIFY_WORDS: Final = ("SUCCESS", "FAILURE", "DELAY")


def check_notify(value: str) -> str:
    """NOTIFY's value upper-cased and checked (RFC 3461 4.1): NEVER alone, or some of
    SUCCESS, FAILURE, DELAY; a ValueError says what is wrong."""
    words = [word.strip().upper() for word in value.split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    wrong = [word for word in words if word not in NOTIFY_WORDS]
    if wrong or not words or len(set(words)) != len(words):
        raise ValueError("give NEVER, or one or more of SUCCESS,FAILURE,DELAY (no repeats)")
    return ",".join(words)


def xtext(text: str) -> str:
    """``text`` as RFC 3461 4 xtext: "+", "=", controls, space and what is not ASCII
    as +XX (each UTF-8 octet); ENVID= and ORCPT= carry their values so."""
    out = []
    for byte in text.encode("utf-8"):
        if 33 <= byte <= 126 and byte not in (0x2B, 0x3D):
            out.append(chr(byte))
        else:
            out.append(f"+{byte:02X}")
    return "".join(out)


def needs_smtputf8(address: str) -> bool:
    """An address with a non-ASCII local part or domain needs SMTPUTF8 (RFC 6531 3.2)."""
    return not address.isascii()


# -- what the driver is asked to do ------------------------------------------------


@dataclass(frozen=True)
class Await:
    """Read the next reply without sending anything and ``receive()`` it: the greeting,
    or with LMTP the next recipient's reply to the message."""

    answering: str = GREETING


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
class Chunk:
    """Send ``BDAT <size>`` (``LAST`` on the last) and octets ``start:start+size`` of the
    message as they are (no dot-stuffing, RFC 3030 2), then ``receive()`` the reply."""

    start: int
    size: int
    last: bool

    @property
    def line(self) -> str:
        return f"BDAT {self.size}" + (" LAST" if self.last else "")


@dataclass(frozen=True)
class Batch:
    """PIPELINING (RFC 2920): write every item (a ``Command``'s line, a ``Chunk``'s line
    and octets) in one write, then ``receive()`` each item's reply in order."""

    items: tuple[Command | Chunk, ...]


@dataclass(frozen=True)
class Quit:
    """Send QUIT; its reply, if it comes soon, changes nothing. Then ``next_action()``."""


@dataclass(frozen=True)
class Drop:
    """Close the connection without QUIT (``Ending.DROP``), then ``next_action()``."""


@dataclass(frozen=True)
class Done:
    result: Result


Action = Await | Command | StartTLS | Authenticate | Message | Chunk | Batch | Quit | Drop | Done
_NEEDS_REPLY: Final = (Await, Command, Authenticate, Message, Chunk)


class _MoreReplies:
    """What the steps yield while a Batch's further replies are still due: no action,
    the driver goes on handing replies over."""


_MORE: Final = _MoreReplies()
_Step = Action | _MoreReplies  # what the steps yield


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
    required and not offered, or another extension the plan requires (``missing``
    names it, ``reason`` says why in a sentence). After RCPT, it is the first
    recipient's refusal (every recipient was refused), or a 421.
    """

    stage: Stage
    command: str
    reply: Reply | None
    missing: str | None = None
    reason: str = ""
    # the reason as a template and its values (``reason`` filled in), for a caller that
    # says it in a person's language, as a core error's (common.ProtocolError)
    reason_template: str = ""
    reason_values: tuple[tuple[str, object], ...] = ()

    def said_reason(self, gettext: Callable[[str], str]) -> str:
        """``reason`` in the language of ``gettext``."""
        if not self.reason_template:
            return self.reason
        return gettext(self.reason_template).format(**dict(self.reason_values))

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
    # LMTP and PRDR: each accepted recipient's reply to the message (RFC 2033 4.2), in
    # order
    deliveries: list[tuple[str, Reply]] = field(default_factory=list)
    # PRDR: the final reply for the whole message, after the per-recipient ones
    prdr_final: Reply | None = None
    refusal: Refusal | None = None
    stopped_after: Stage | None = None  # the plan's stop point, reached
    closing: bool = False  # the server said 421 (or the core saw it close): no QUIT
    # The extensions the transaction used (SIZE, 8BITMIME, SMTPUTF8, DSN, CHUNKING), in
    # the order they came up.
    used: list[str] = field(default_factory=list)

    @property
    def accepted(self) -> list[str]:
        """The recipients the server took (2xx to RCPT), in the plan's order."""
        return [rcpt for rcpt, reply in self.recipients if reply.code // 100 == 2]

    @property
    def sent(self) -> bool:
        """The server took the message (2xx to its final dot; with LMTP, for at least
        one recipient)."""
        if self.deliveries:
            final = self.prdr_final
            return bool(self.delivered) and (final is None or final.code // 100 == 2)
        reply = self.reply(Stage.MESSAGE)
        return reply is not None and reply.code // 100 == 2

    @property
    def delivered(self) -> list[str]:
        """LMTP and PRDR: the recipients whose reply to the message was 2xx."""
        return [rcpt for rcpt, reply in self.deliveries if reply.code // 100 == 2]

    @property
    def undelivered(self) -> list[tuple[str, Reply]]:
        """LMTP and PRDR: the recipients taken at RCPT but refused the message."""
        return [(rcpt, reply) for rcpt, reply in self.deliveries if reply.code // 100 != 2]

    def reply(self, stage: Stage) -> Reply | None:
        """The last reply of ``stage``; None if none came."""
        exchanges = self.exchanges_of(stage)
        return exchanges[-1].reply if exchanges else None

    def exchanges_of(self, stage: Stage) -> list[Exchange]:
        return [exchange for exchange in self.exchanges if exchange.stage is stage]


def _missing(missing: str, reason: str, /, **values: object) -> Refusal:
    """The sequence ends before MAIL: ``missing`` is required and not offered (or the
    message is over SIZE), ``reason`` a template filled with ``values``."""
    return Refusal(Stage.MAIL, "MAIL", None, missing=missing, reason=reason.format(**values),
                   reason_template=reason, reason_values=tuple(values.items()))


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
        self._expecting = 0  # replies still due to the last action (a Batch: several)
        self._batch_verbs: list[str] = []  # a Batch's verbs whose replies are still due
        self._done: Done | None = None
        self._waiting_for = GREETING
        # PIPELINING: the replies of the Batch, by stage, for the stages to judge
        # (line, reply, whether the server was closing by then)
        self._batched: dict[Stage, list[tuple[str, Reply, bool]]] = {}
        self._first_chunk_sent = 0  # octets of the message the Batch's BDAT carried

    @property
    def waiting_for(self) -> str:
        """What the last action waits on (or did): ``<greeting>``, a verb (``EHLO``,
        ``STARTTLS`` during the handshake too, ``RCPT``, ...), ``<end-of-data>``."""
        return self._waiting_for

    def next_action(self) -> Action:
        if self._done is not None:
            return self._done
        if self._expecting:
            raise LocalProtocolError("the reply to {command} has not been received",
                                     command=self._waiting_for)
        action = self._next if self._next is not None else self._advance(None)
        self._next = None
        assert not isinstance(action, _MoreReplies)  # only ever after a Batch's reply
        if isinstance(action, _NEEDS_REPLY):
            self._expecting = 1
        elif isinstance(action, Batch):
            self._expecting = len(action.items)
        return action

    def receive(self, reply: Reply) -> None:
        """The reply to the last ``Await``, ``Command``, ``Authenticate``, ``Message``
        or ``Chunk``; after a ``Batch``, each item's reply in turn."""
        if not self._expecting:
            raise LocalProtocolError("no reply is awaited now")
        if not isinstance(reply, Reply):
            raise LocalProtocolError("an SMTP reply is needed, not {reply!r}", reply=reply)
        self._expecting -= 1
        if self._batch_verbs:
            self._batch_verbs.pop(0)
            if self._batch_verbs:
                self._waiting_for = self._batch_verbs[0]
        action = self._advance(reply)
        if isinstance(action, _MoreReplies):
            if not self._expecting:
                raise LocalProtocolError("the steps wait for more replies than the Batch has")
            return
        if self._expecting and not self.result.closing:
            raise LocalProtocolError("the steps went on before every reply of the Batch")
        self._expecting = 0  # after a 421 the rest of a Batch's replies never come
        if not isinstance(action, Batch):
            self._batch_verbs = []
        self._next = action

    def _advance(self, reply: Reply | None) -> Action | _MoreReplies:
        try:
            action = self._steps.send(reply)
        except StopIteration:
            self._done = Done(self.result)
            return self._done
        if isinstance(action, Command):
            self._waiting_for = _verb(action.line)
        elif isinstance(action, Await):
            self._waiting_for = action.answering
        elif isinstance(action, Authenticate):
            self._waiting_for = "AUTH"
        elif isinstance(action, Message):
            self._waiting_for = END_OF_DATA
        elif isinstance(action, Chunk):
            self._waiting_for = "BDAT"
        elif isinstance(action, Batch):
            self._batch_verbs = [_verb(item.line) for item in action.items]
            self._waiting_for = self._batch_verbs[0]
        elif isinstance(action, Quit):
            self._waiting_for = "QUIT"
        return action

    # -- the stages, in order ------------------------------------------------------

    def _run(self) -> Generator[_Step, Reply | None, None]:
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

    def _greeting(self) -> Generator[_Step, Reply | None, bool]:
        if GREETING not in self.core.pending_commands:
            return True  # a connection past its greeting
        reply = yield from self._ask(Stage.CONNECT, Await(), GREETING)
        return self._check(Stage.CONNECT, GREETING, reply)

    def _hello(self) -> Generator[_Step, Reply | None, bool]:
        if self.core.greeted:
            return True
        line = f"{self.core.hello_verb} {self.plan.helo}"
        reply = yield from self._ask(Stage.EHLO, Command(line), line)
        if reply.code // 100 == 5 and not self.core.lmtp:
            # RFC 5321 4.1.4: a server that knows only HELO (LMTP has no HELO)
            line = f"HELO {self.plan.helo}"
            reply = yield from self._ask(Stage.EHLO, Command(line), line)
        if not self._check(Stage.EHLO, line, reply):
            return False
        if not self.plan.xclient:
            return True
        return (yield from self._xclient())

    def _xclient(self) -> Generator[_Step, Reply | None, bool]:
        """XCLIENT with the plan's attributes; its reply is a new 220 greeting, after
        which the server wants EHLO again (Postfix XCLIENT_README)."""
        from mailtalk.protocols.xclient import missing_attributes, xclient_line

        why = missing_attributes(self.plan.xclient, self.core.extensions)
        if why is not None:
            self.result.refusal = Refusal(Stage.EHLO, "XCLIENT", None, "XCLIENT", why)
            return False
        line = xclient_line(self.plan.xclient)
        reply = yield from self._ask(Stage.EHLO, Command(line), line)
        if not self._check(Stage.EHLO, line, reply):
            return False
        self._use("XCLIENT")
        line = f"EHLO {self.plan.helo}"
        reply = yield from self._ask(Stage.EHLO, Command(line), line)
        return self._check(Stage.EHLO, line, reply)

    def _tls(self) -> Generator[_Step, Reply | None, bool]:
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
        # RFC 3207 4.2: what came before TLS is forgotten
        line = f"{self.core.hello_verb} {self.plan.helo}"
        reply = yield from self._ask(Stage.TLS, Command(line), line)
        return self._check(Stage.TLS, line, reply)

    def _auth(self) -> Generator[_Step, Reply | None, bool]:
        if not self.plan.auth or self.core.authenticated:
            return True
        offered = Authenticate(tuple(self.core.auth_mechanisms), self.core.tls)
        reply = yield from self._ask(Stage.AUTH, offered, "AUTH")
        return self._check(Stage.AUTH, "AUTH", reply)

    def _mail(self) -> Generator[_Step, Reply | None, bool]:
        plan, extensions = self.plan, self.core.extensions
        for keyword in sorted(plan.requires):
            if keyword not in extensions:
                self.result.refusal = _missing(
                    keyword, N_("the server did not offer {keyword} in its EHLO reply"),
                    keyword=keyword)
                return False
        limit = self.core.max_size
        if plan.check_size and plan.size is not None and limit is not None and plan.size > limit:
            self.result.refusal = _missing(
                "SIZE", N_("the message is {size} bytes, over the server's SIZE {limit}"),
                size=plan.size, limit=limit)
            return False
        line = f"MAIL FROM:<{plan.sender}>"
        if plan.size is not None and "SIZE" in extensions:
            line += f" SIZE={plan.size}"
            self._use("SIZE")
        if plan.eight_bit and "8BITMIME" in extensions:
            line += " BODY=8BITMIME"
            self._use("8BITMIME")
        if plan.smtputf8 and "SMTPUTF8" in extensions:
            line += " SMTPUTF8"
            self._use("SMTPUTF8")
        if plan.prdr and "PRDR" in extensions:
            line += " PRDR"
            self._use("PRDR")
        dsn = plan.dsn
        if dsn is not None and "DSN" in extensions:
            if dsn.ret:
                line += f" RET={dsn.ret}"
            if dsn.envid:
                line += f" ENVID={xtext(dsn.envid)}"
        if not self._pipelining:
            reply = yield from self._ask(Stage.MAIL, Command(line), line)
            return self._check(Stage.MAIL, line, reply)
        yield from self._batch(line)
        _, reply, closing = self._batched[Stage.MAIL][0]
        return self._check(Stage.MAIL, line, reply, closing)

    @property
    def _pipelining(self) -> bool:
        """MAIL, RCPT and DATA go as one Batch: planned, offered, and more than MAIL asked."""
        return (
            self.plan.pipeline
            and "PIPELINING" in self.core.extensions
            and self.plan.stop_after is not Stage.MAIL
        )

    def _batch(self, mail_line: str) -> Generator[_Step, Reply | None, None]:
        """MAIL, every RCPT and (unless the plan stops after RCPT) DATA or the first BDAT
        chunk as one Batch (RFC 2920 3.1: DATA or BDAT may end a group); each reply is
        kept in ``_batched`` for its stage to judge, as if it had come alone."""
        items: list[tuple[Stage, Command | Chunk]] = [(Stage.MAIL, Command(mail_line))]
        for recipient in self.plan.recipients:
            items.append((Stage.RCPT, Command(self._rcpt_line(recipient))))
        if self.plan.stop_after is not Stage.RCPT:
            if self._chunking:
                chunk = self._chunk_at(0)
                items.append((Stage.MESSAGE, chunk))
                self._first_chunk_sent = chunk.size
            else:
                items.append((Stage.DATA, Command("DATA")))
        self._use("PIPELINING")
        reply = yield Batch(tuple(item for _, item in items))
        for index, (stage, item) in enumerate(items):
            if index:
                reply = yield _MORE
            assert reply is not None  # receive() hands over a Reply
            # The core may have parsed every reply of the Batch already, so its state
            # says nothing of this one: only its own 421 says the server is closing.
            closing = reply.code == 421
            self.result.exchanges.append(Exchange(stage, item.line, reply))
            self._batched.setdefault(stage, []).append((item.line, reply, closing))
            if closing:
                self.result.closing = True
                return  # the server closes: the rest of the replies never come
        if self.core.state is SMTPState.CLOSED:
            self.result.closing = True

    def _rcpt_parameters(self, recipient: str) -> str:
        dsn = self.plan.dsn
        if dsn is None or "DSN" not in self.core.extensions:
            return ""
        self._use("DSN")
        params = ""
        if dsn.notify:
            params += f" NOTIFY={dsn.notify}"
        if dsn.orcpt:
            # RFC 6533 3: a UTF-8 address goes as utf-8; with SMTPUTF8 on, else rfc822
            kind = "utf-8" if not recipient.isascii() else "rfc822"
            params += f" ORCPT={kind};{xtext(recipient)}"
        return params

    def _rcpt_line(self, recipient: str) -> str:
        return f"RCPT TO:<{recipient}>" + self._rcpt_parameters(recipient)

    def _rcpt(self) -> Generator[_Step, Reply | None, bool]:
        first_refusal: Refusal | None = None
        batched = self._batched.get(Stage.RCPT)
        for index, recipient in enumerate(self.plan.recipients):
            if batched is None:
                line = self._rcpt_line(recipient)
                reply = yield from self._ask(Stage.RCPT, Command(line), line)
            elif index < len(batched):
                line, reply, closing = batched[index]
            else:
                break  # cut short by a 421 (the refusal is the 421's stage's)
            if batched is None:
                closing = self.result.closing
            self.result.recipients.append((recipient, reply))
            if closing:
                self.result.refusal = Refusal(Stage.RCPT, line, reply)
                return False
            if reply.code // 100 != 2 and first_refusal is None:
                first_refusal = Refusal(Stage.RCPT, line, reply)
        if not self.result.accepted:
            self.result.refusal = first_refusal
            return False
        return True

    def _data(self) -> Generator[_Step, Reply | None, bool]:
        if self._chunking:
            return True  # no DATA: the message goes in BDAT chunks
        batched = self._batched.get(Stage.DATA)
        if batched is not None:
            _, reply, _ = batched[0]
        else:
            reply = yield from self._ask(Stage.DATA, Command("DATA"), "DATA")
        if reply.code // 100 != 3 or self.result.closing:  # the core's table: 3xx starts it
            self.result.refusal = Refusal(Stage.DATA, "DATA", reply)
            return False
        return True

    @property
    def _chunking(self) -> bool:
        return self.plan.chunk_size is not None and "CHUNKING" in self.core.extensions

    def _message(self) -> Generator[_Step, Reply | None, bool]:
        if not self._chunking:
            reply = yield from self._ask(Stage.MESSAGE, Message(), END_OF_DATA)
            if self.core.lmtp or self._prdr_started(reply):
                return (yield from self._per_recipient(END_OF_DATA, reply))
            return self._check(Stage.MESSAGE, END_OF_DATA, reply)
        self._use("CHUNKING")
        batched = self._batched.get(Stage.MESSAGE)
        start = 0
        while True:
            chunk = self._chunk_at(start)
            if batched and start == 0:
                _, reply, _ = batched[0]  # the first chunk went with MAIL and RCPT
            else:
                reply = yield from self._ask(Stage.MESSAGE, chunk, chunk.line)
            if chunk.last and (self.core.lmtp or self._prdr_started(reply)):
                return (yield from self._per_recipient(chunk.line, reply))
            if not self._check(Stage.MESSAGE, chunk.line, reply):
                return False  # a refused chunk ends the transaction (RFC 3030 2)
            if chunk.last:
                return True
            start += chunk.size

    def _chunk_at(self, start: int) -> Chunk:
        total, step = self.plan.length, max(1, self.plan.chunk_size or 1)
        size = min(step, total - start)
        return Chunk(start, size, last=start + size >= total)

    def _prdr_started(self, reply: Reply) -> bool:
        """PRDR: the server's 353 to the message says per-recipient replies follow."""
        return "PRDR" in self.result.used and reply.code == PRDR_START

    def _per_recipient(self, command: str, first: Reply) -> Generator[_Step, Reply | None, bool]:
        """LMTP: ``first`` and the rest of the replies to the message, one per
        accepted recipient (RFC 2033 4.2); refused when no recipient got it. PRDR:
        ``first`` is the 353, the replies per recipient follow, then the final one
        (kept as the message's reply: a 5xx there refuses the message for all)."""
        deliveries = self.result.deliveries
        prdr = not self.core.lmtp
        reply = first
        if prdr:
            reply = yield from self._ask(Stage.MESSAGE, Await(END_OF_DATA), END_OF_DATA)
        # Counted from the recipients, not from what the core still owes: the driver
        # may have fed it every reply already (they came in one read).
        owed = max(1, len(self.result.accepted))
        while True:
            deliveries.append((reply.recipient or "", reply))
            if self.result.closing or len(deliveries) >= owed:
                break
            reply = yield from self._ask(Stage.MESSAGE, Await(END_OF_DATA), END_OF_DATA)
        final: Reply | None = None
        if prdr and not self.result.closing:
            final = yield from self._ask(Stage.MESSAGE, Await(END_OF_DATA), END_OF_DATA)
            self.result.prdr_final = final
        taken = final is None or final.code // 100 == 2
        if self.result.delivered and not self.result.closing and taken:
            return True
        refused = next((r for _, r in deliveries if r.code // 100 != 2), final or reply)
        self.result.refusal = Refusal(Stage.MESSAGE, command, refused)
        return False

    def _end(self) -> Generator[_Step, Reply | None, None]:
        if self.result.closing or self.core.state is SMTPState.CLOSED:
            return
        ending = self.plan.ending
        if self.core.state is SMTPState.DATA and ending is not Ending.DROP:
            # A pipelined DATA got its 354 though MAIL or every RCPT was refused: the
            # server reads what follows as the message, so it is ended at once, empty
            # (RFC 2920 3.1), before QUIT or RSET can be heard as commands.
            reply = yield Command(".")
            assert reply is not None  # receive() hands over a Reply
            self._record(Stage.DATA, END_OF_DATA, reply)
            if self.result.closing:
                return
        if ending is Ending.QUIT:
            yield Quit()
        elif ending is Ending.DROP:
            yield Drop()
        elif ending is Ending.RSET and self.result.exchanges_of(Stage.MAIL):
            reply = yield Command("RSET")
            assert reply is not None  # receive() hands over a Reply

    # -- helpers ---------------------------------------------------------------------

    def _use(self, keyword: str) -> None:
        if keyword not in self.result.used:
            self.result.used.append(keyword)

    def _ask(
        self, stage: Stage, action: Action, command: str
    ) -> Generator[_Step, Reply | None, Reply]:
        reply = yield action
        assert reply is not None  # receive() hands over a Reply
        self._record(stage, command, reply)
        return reply

    def _record(self, stage: Stage, command: str, reply: Reply) -> None:
        self.result.exchanges.append(Exchange(stage, command, reply))
        if reply.code == 421 or self.core.state is SMTPState.CLOSED:
            self.result.closing = True

    def _check(
        self, stage: Stage, command: str, reply: Reply, closing: bool | None = None
    ) -> bool:
        """Go on after ``reply``? A refusal is kept in the result; a plan that persists
        goes on past a refused greeting, EHLO and HELO (not past a 421). ``closing``:
        whether the server was closing by that reply (a Batch's reply judged later)."""
        if closing is None:
            closing = self.result.closing
        if reply.code // 100 == 2 and not closing:
            return True
        if self.plan.persist and stage in (Stage.CONNECT, Stage.EHLO) and not closing:
            return True
        self.result.refusal = Refusal(stage, command, reply)
        return False
