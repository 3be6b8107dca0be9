"""What the SMTP client sequence is given, what it asks of its driver, and what it gives back.

The sequence itself (``protocols/smtp_sequence.py``) decides which command comes
next; this module is the data it works in, which its drivers (``mail.smtp_steps``,
``servers.delivery``) and callers (``mail.send``, ``mail.diagnose.relay``,
``mail.mx``) build and read too:

* the ``Plan``: which stages run (``Stage``), where to stop (``STOP_POINTS``,
  ``QUIT_POINTS``), the TLS policy, how to end (``Ending``), the extensions asked
  for, with the checks of their values (DSN's NOTIFY, xtext, SMTPUTF8);
* the actions the driver is asked to do, ``Await`` to ``Done``;
* the ``Result``: each ``Exchange`` in order, each recipient's reply, and the
  ``Refusal`` that ended it, if one did.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from mailtalk.language import N_, WordedError
from mailtalk.protocols.smtp import GREETING, Reply


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
    SUCCESS, FAILURE, DELAY; a ValueError (a WordedError) says what is wrong."""
    words = [word.strip().upper() for word in value.split(",")]
    if words == ["NEVER"]:
        return "NEVER"
    wrong = [word for word in words if word not in NOTIFY_WORDS]
    if wrong or not words or len(set(words)) != len(words):
        raise WordedError(N_("give NEVER, or one or more of SUCCESS,FAILURE,DELAY (no repeats)"))
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
        return verb_of(self.command)


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
        return verb_of(self.command)


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


def verb_of(command: str) -> str:
    """``MAIL`` for ``MAIL FROM:<a@b>``; a pseudo-command (``<greeting>``) as it is."""
    word = command.split(" ", 1)[0]
    return word if word.startswith("<") else word.upper()
