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

The ``Plan``, the actions it asks of its driver and the ``Result`` are data, in
``protocols/smtp_plan.py``; this module is the ``ClientSequence`` that goes from the
one to the other.

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

from collections.abc import Generator
from typing import Final

from mailtalk.language import N_
from mailtalk.protocols.common import ClientCore, LocalProtocolError, Role
from mailtalk.protocols.smtp import END_OF_DATA, GREETING, PRDR_START, Reply, SMTPState
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.protocols.smtp_plan import (
    Action,
    Authenticate,
    Await,
    Batch,
    Chunk,
    Command,
    Done,
    Drop,
    Ending,
    Exchange,
    Message,
    Plan,
    Quit,
    Refusal,
    Result,
    Stage,
    StartTLS,
    TLSPolicy,
    verb_of,
    xtext,
)

_NEEDS_REPLY: Final = (Await, Command, Authenticate, Message, Chunk)


class _MoreReplies:
    """What the steps yield while a Batch's further replies are still due: no action,
    the driver goes on handing replies over."""


_MORE: Final = _MoreReplies()
_Step = Action | _MoreReplies  # what the steps yield


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
            self._waiting_for = verb_of(action.line)
        elif isinstance(action, Await):
            self._waiting_for = action.answering
        elif isinstance(action, Authenticate):
            self._waiting_for = "AUTH"
        elif isinstance(action, Message):
            self._waiting_for = END_OF_DATA
        elif isinstance(action, Chunk):
            self._waiting_for = "BDAT"
        elif isinstance(action, Batch):
            self._batch_verbs = [verb_of(item.line) for item in action.items]
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
            template, values = why
            self.result.refusal = Refusal(
                Stage.EHLO, "XCLIENT", None, "XCLIENT", template.format(**values),
                reason_template=template, reason_values=tuple(values.items()))
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


def _missing(missing: str, reason: str, /, **values: object) -> Refusal:
    """The sequence ends before MAIL: ``missing`` is required and not offered (or the
    message is over SIZE), ``reason`` a template filled with ``values``."""
    return Refusal(Stage.MAIL, "MAIL", None, missing=missing, reason=reason.format(**values),
                   reason_template=reason, reason_values=tuple(values.items()))
