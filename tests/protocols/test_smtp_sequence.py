"""Tests for the SMTP client sequence: a plan, a client core, and a scripted server, no sockets.

The server is a table of replies (bytes, fed to the client core whole, a byte at a
time, or in odd pieces); the test plays the driver, as ``mail.smtp_steps.drive`` and
``servers.delivery`` do.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field, replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    LocalProtocolError,
    RemoteProtocolError,
    Role,
)
from mailtalk.protocols.smtp import Reply
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.protocols.smtp_plan import (
    QUIT_POINTS,
    STOP_POINTS,
    Authenticate,
    Await,
    Command,
    Done,
    Drop,
    Ending,
    Message,
    Plan,
    Quit,
    Result,
    Stage,
    StartTLS,
    TLSPolicy,
)
from mailtalk.protocols.smtp_sequence import ClientSequence
from tests.protocols.test_smtp import CHUNKERS, Chunker, bytewise, odd_chunks, whole

EHLO_REPLY = (
    b"250-mx.example.net\r\n250-SIZE 10240000\r\n250-8BITMIME\r\n250-STARTTLS\r\n"
    b"250 AUTH PLAIN LOGIN\r\n"
)
EHLO_AFTER_TLS = b"250-mx.example.net\r\n250-SIZE 10240000\r\n250 AUTH PLAIN LOGIN\r\n"
MESSAGE = b"Subject: hi\r\n\r\n.a line with a dot\r\n"


class Lost(Exception):
    """The scripted server closed the connection."""


@dataclass
class Server:
    """Replies by verb (``<greeting>``, ``EHLO``, ``RCPT TO:<x>`` for one recipient,
    ``<message>``, ...); a reply of ``None`` closes the connection instead."""

    replies: dict[str, bytes | None] = field(default_factory=dict)
    chunker: Chunker = whole
    tls: bool = False

    def reply_to(self, what: str) -> bytes | None:
        verb = what.split(" ", 1)[0].upper() if not what.startswith("<") else what
        if what in self.replies:
            return self.replies[what]
        if verb == "EHLO" and self.tls and "EHLO+tls" in self.replies:
            return self.replies["EHLO+tls"]
        if verb in self.replies:
            return self.replies[verb]
        return {
            "<greeting>": b"220 mx.example.net ESMTP\r\n",
            "EHLO": EHLO_AFTER_TLS if self.tls else EHLO_REPLY,
            "HELO": b"250 mx.example.net\r\n",
            "STARTTLS": b"220 2.0.0 Ready to start TLS\r\n",
            "AUTH": b"235 2.7.0 Authentication successful\r\n",
            "MAIL": b"250 2.1.0 Ok\r\n",
            "RCPT": b"250 2.1.5 Ok\r\n",
            "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
            "<message>": b"250 2.0.0 Ok: queued as 4B2F1\r\n",
            "RSET": b"250 2.0.0 Ok\r\n",
        }[verb]

    def more(self) -> bytes | None:
        """What comes after a reply that was not whole: a scripted server has no more."""
        raise AssertionError("the scripted reply was not a whole reply")


@dataclass
class AnyServer(Server):
    """Says ``answers`` in turn, whatever it is asked, then closes the connection."""

    answers: list[bytes] = field(default_factory=list)

    def reply_to(self, what: str) -> bytes | None:
        return self.more()

    def more(self) -> bytes | None:
        return self.answers.pop(0) if self.answers else None


def read_reply(core: SMTPConnection, server: Server, what: str) -> Reply:
    """The server's answer to ``what``, fed to the core; the next reply off the core."""
    data = server.reply_to(what)
    while True:
        if data is None:
            core.receive_data(b"")  # the server closes
        for chunk in server.chunker(data) if data else []:
            core.receive_data(chunk)
        event = core.next_event()
        if isinstance(event, Reply):
            return event
        if event is CONNECTION_CLOSED:
            raise Lost
        data = server.more()


def drive(
    sequence: ClientSequence, server: Server, sent: list[str] | None = None, limit: int = 100
) -> Result:
    """Play the driver: what the sequence asks, against ``server``; the lines sent
    (``<tls>``, ``<auth>``, ``<message>`` for what is not a line) go into ``sent``.
    More than ``limit`` actions fails the test: the sequence must come to an end."""
    core = sequence.core
    sent = sent if sent is not None else []
    for _ in range(limit):
        action = sequence.next_action()
        match action:
            case Done(result=result):
                return result
            case Await():
                reply = read_reply(core, server, "<greeting>")
            case Command(line=line):
                core.send_line(line)
                sent.append(line)
                reply = read_reply(core, server, line)
            case StartTLS():
                core.tls_started()
                server.tls = True
                sent.append("<tls>")
                continue
            case Authenticate():
                core.send_line("AUTH PLAIN AGFsaWNlAHNlY3JldA==")
                sent.append("<auth>")
                reply = read_reply(core, server, "AUTH")
            case Message():
                core.send_message(MESSAGE)
                sent.append("<message>")
                reply = read_reply(core, server, "<message>")
            case Quit():
                core.send_line("QUIT")
                sent.append("QUIT")
                continue
            case Drop():
                sent.append("<drop>")
                continue
        sequence.receive(reply)
    raise AssertionError(f"no end after {limit} actions")


def run(
    plan: Plan, replies: dict[str, bytes | None] | None = None, chunker: Chunker = whole
) -> tuple[Result, list[str]]:
    """``plan`` against a server answering as usual, but for ``replies``."""
    core = SMTPConnection()
    server = Server(dict(replies or {}), chunker)
    sent: list[str] = []
    return drive(ClientSequence(core, plan), server, sent), sent


DELIVERY = Plan(
    "client.example.org",
    "alice@example.org",
    ("bob@example.net", "carol@example.net"),
    starttls=TLSPolicy.IF_OFFERED,
    size=len(MESSAGE),
    eight_bit=True,
)

# -- the whole sequence ---------------------------------------------------------------


@CHUNKERS
def test_a_delivery_goes_greeting_to_quit(chunker: Chunker) -> None:
    result, sent = run(DELIVERY, chunker=chunker)
    assert sent == [
        "EHLO client.example.org",
        "STARTTLS",
        "<tls>",
        "EHLO client.example.org",
        f"MAIL FROM:<alice@example.org> SIZE={len(MESSAGE)}",  # no 8BITMIME after TLS
        "RCPT TO:<bob@example.net>",
        "RCPT TO:<carol@example.net>",
        "DATA",
        "<message>",
        "QUIT",
    ]
    assert result.sent and result.refusal is None and result.stopped_after is None
    assert result.accepted == ["bob@example.net", "carol@example.net"]
    assert [e.verb for e in result.exchanges] == [
        "<greeting>",
        "EHLO",
        "STARTTLS",
        "EHLO",
        "MAIL",
        "RCPT",
        "RCPT",
        "DATA",
        "<end-of-data>",
    ]


def test_every_chunking_gives_the_same_conversation() -> None:
    reference = run(DELIVERY, chunker=whole)
    assert run(DELIVERY, chunker=bytewise) == reference
    assert run(DELIVERY, chunker=odd_chunks) == reference


def test_mail_parameters_only_when_offered_and_planned() -> None:
    plain = Plan("c.test", "a@c.test", ("b@d.test",), size=123, eight_bit=True)
    _, sent = run(plain)
    assert "MAIL FROM:<a@c.test> SIZE=123 BODY=8BITMIME" in sent
    _, sent = run(plain, {"EHLO": b"250-mx\r\n250 PIPELINING\r\n"})
    assert "MAIL FROM:<a@c.test>" in sent
    _, sent = run(Plan("c.test", "a@c.test", ("b@d.test",)))
    assert "MAIL FROM:<a@c.test>" in sent


# -- EHLO and HELO --------------------------------------------------------------------


def test_helo_after_a_5xx_to_ehlo() -> None:
    result, sent = run(DELIVERY, {"EHLO": b"502 5.5.2 Error: command not recognized\r\n"})
    assert sent[:3] == [
        "EHLO client.example.org",
        "HELO client.example.org",
        "MAIL FROM:<alice@example.org>",
    ]
    assert "STARTTLS" not in sent  # HELO told nothing of extensions
    assert result.sent


def test_no_helo_after_a_4xx_to_ehlo_the_server_said_try_later() -> None:
    result, sent = run(DELIVERY, {"EHLO": b"451 4.3.0 try again later\r\n"})
    assert sent == ["EHLO client.example.org", "QUIT"]
    assert result.refusal is not None and result.refusal.stage is Stage.EHLO
    assert result.refusal.reply is not None and result.refusal.reply.code == 451


def test_a_refused_helo_ends_it() -> None:
    result, sent = run(DELIVERY, {"EHLO": b"500 what\r\n", "HELO": b"550 no\r\n"})
    assert sent == ["EHLO client.example.org", "HELO client.example.org", "QUIT"]
    assert result.refusal is not None and result.refusal.verb == "HELO"


# -- STARTTLS -------------------------------------------------------------------------


def test_starttls_never_is_not_sent() -> None:
    _, sent = run(Plan("c.test", "a@c.test", ("b@d.test",)))
    assert "STARTTLS" not in sent


def test_opportunistic_tls_refused_goes_on_in_plain_text() -> None:
    result, sent = run(DELIVERY, {"STARTTLS": b"454 4.7.0 TLS not available\r\n"})
    assert sent[1:3] == [
        "STARTTLS",
        f"MAIL FROM:<alice@example.org> SIZE={len(MESSAGE)} BODY=8BITMIME",
    ]
    assert result.sent


def test_required_tls_not_offered_ends_without_a_reply() -> None:
    plan = Plan("c.test", "a@c.test", ("b@d.test",), starttls=TLSPolicy.REQUIRED)
    result, sent = run(plan, {"EHLO": b"250-mx\r\n250 SIZE 100\r\n"})
    assert sent == ["EHLO c.test", "QUIT"]
    assert result.refusal is not None
    assert (result.refusal.stage, result.refusal.reply) == (Stage.TLS, None)


def test_required_tls_refused() -> None:
    plan = Plan("c.test", "a@c.test", ("b@d.test",), starttls=TLSPolicy.REQUIRED)
    result, sent = run(plan, {"STARTTLS": b"454 4.7.0 no\r\n"})
    assert sent == ["EHLO c.test", "STARTTLS", "QUIT"]
    assert result.refusal is not None and result.refusal.verb == "STARTTLS"


def test_ehlo_refused_after_tls_ends_it_without_helo() -> None:
    result, sent = run(DELIVERY, {"EHLO+tls": b"554 5.7.0 no\r\n"})
    assert sent == [
        "EHLO client.example.org",
        "STARTTLS",
        "<tls>",
        "EHLO client.example.org",
        "QUIT",
    ]
    assert result.refusal is not None
    assert (result.refusal.stage, result.refusal.verb) == (Stage.TLS, "EHLO")


def test_the_driver_must_start_tls() -> None:
    core = SMTPConnection()
    sequence = ClientSequence(core, DELIVERY)
    assert isinstance(sequence.next_action(), Await)
    server = Server()
    sequence.receive(read_reply(core, server, "<greeting>"))
    command = sequence.next_action()
    assert isinstance(command, Command)
    core.send_line(command.line)
    sequence.receive(read_reply(core, server, command.line))
    assert sequence.next_action() == Command("STARTTLS")
    core.send_line("STARTTLS")
    sequence.receive(read_reply(core, server, "STARTTLS"))
    assert isinstance(sequence.next_action(), StartTLS)
    assert sequence.waiting_for == "STARTTLS"
    with pytest.raises(LocalProtocolError, match="TLS was not started"):
        sequence.next_action()


# -- AUTH -----------------------------------------------------------------------------


def test_auth_after_tls_with_what_was_offered() -> None:
    plan = Plan("c.test", "a@c.test", ("b@d.test",), starttls=TLSPolicy.REQUIRED, auth=True)
    core = SMTPConnection()
    server = Server()
    sequence = ClientSequence(core, plan)
    for _ in range(10):
        action = sequence.next_action()
        if isinstance(action, Authenticate):
            break
        if isinstance(action, Await):
            sequence.receive(read_reply(core, server, "<greeting>"))
        elif isinstance(action, Command):
            core.send_line(action.line)
            sequence.receive(read_reply(core, server, action.line))
        else:
            assert isinstance(action, StartTLS)
            core.tls_started()
            server.tls = True
    assert action == Authenticate(("PLAIN", "LOGIN"), tls=True)


def test_auth_refused_ends_it() -> None:
    plan = Plan("c.test", "a@c.test", ("b@d.test",), auth=True)
    result, sent = run(plan, {"AUTH": b"535 5.7.8 Error: authentication failed\r\n"})
    assert sent == ["EHLO c.test", "<auth>", "QUIT"]
    assert result.refusal is not None and result.refusal.stage is Stage.AUTH


# -- stop points ----------------------------------------------------------------------


# What the client sent last before stopping after each stage (None: nothing).
LAST_BEFORE = {
    "connect": None,
    "ehlo": "EHLO c.test",
    "tls": "EHLO c.test",
    "auth": "<auth>",
    "mail": "MAIL FROM:<a@c.test>",
    "rcpt": "RCPT TO:<c@d.test>",
    "data": "DATA",
    "dot": "<message>",
}


def stopping_plan(stop: str, ending: Ending) -> Plan:
    return Plan(
        "c.test",
        "a@c.test",
        ("b@d.test", "c@d.test"),
        starttls=TLSPolicy.REQUIRED,
        auth=True,
        stop_after=Stage(stop),
        ending=ending,
    )


def test_the_stop_points_are_the_stages_in_order() -> None:
    assert tuple(stage.value for stage in Stage) == STOP_POINTS
    assert tuple(point for point in STOP_POINTS if point != "data") == QUIT_POINTS


@pytest.mark.parametrize("stop", QUIT_POINTS)
def test_stop_points_quit_there(stop: str) -> None:
    result, sent = run(stopping_plan(stop, Ending.QUIT))
    assert result.stopped_after is Stage(stop) and result.refusal is None
    assert sent[-1] == "QUIT" and "<drop>" not in sent
    last = LAST_BEFORE[stop]
    assert sent[-2:-1] == ([last] if last else [])
    assert ("DATA" in sent) == (stop == "dot")
    assert result.sent == (stop == "dot")


@pytest.mark.parametrize("stop", STOP_POINTS)
def test_stop_points_drop_there(stop: str) -> None:
    result, sent = run(stopping_plan(stop, Ending.DROP))
    assert result.stopped_after is Stage(stop) and result.refusal is None
    assert sent[-1] == "<drop>" and "QUIT" not in sent
    last = LAST_BEFORE[stop]
    assert sent[-2:-1] == ([last] if last else [])
    # after DATA's 354 the message is not sent: only the dot stage sends it
    assert ("<message>" in sent) == (stop == "dot")
    assert result.sent == (stop == "dot")


def test_a_drop_plan_drops_after_a_refusal_too() -> None:
    plan = stopping_plan("data", Ending.DROP)
    result, sent = run(plan, {"MAIL": b"553 5.7.1 Sender rejected\r\n"})
    assert sent[-2:] == ["MAIL FROM:<a@c.test>", "<drop>"]
    assert result.refusal is not None and result.refusal.stage is Stage.MAIL
    assert result.stopped_after is None


def test_a_drop_plan_sends_nothing_after_a_421() -> None:
    plan = stopping_plan("rcpt", Ending.DROP)
    result, sent = run(plan, {"MAIL": b"421 4.3.2 Shutting down\r\n"})
    assert sent[-1] == "MAIL FROM:<a@c.test>" and result.closing


@pytest.mark.parametrize("ending", [Ending.QUIT, Ending.RSET, Ending.OPEN])
def test_a_plan_that_stops_after_data_can_only_drop(ending: Ending) -> None:
    with pytest.raises(ValueError, match="can only drop"):
        Plan("c.test", "a@c.test", ("b@d.test",), stop_after=Stage.DATA, ending=ending)
    with pytest.raises(ValueError, match="recipient"):
        Plan("c.test", "a@c.test")


def test_without_a_sender_there_is_no_transaction() -> None:
    probe = Plan("c.test", starttls=TLSPolicy.IF_OFFERED, stop_after=Stage.TLS)
    result, sent = run(probe)
    assert sent == ["EHLO c.test", "STARTTLS", "<tls>", "EHLO c.test", "QUIT"]
    assert result.stopped_after is Stage.TLS


# -- recipients -----------------------------------------------------------------------


def test_each_recipient_has_its_own_outcome() -> None:
    plan = Plan("c.test", "a@c.test", ("b@d.test", "c@d.test", "e@d.test"))
    result, sent = run(
        plan,
        {
            "RCPT TO:<c@d.test>": b"550 5.1.1 <c@d.test>: Recipient address rejected\r\n",
            "RCPT TO:<e@d.test>": b"451 4.7.1 Greylisted\r\n",
        },
    )
    assert [(rcpt, reply.code) for rcpt, reply in result.recipients] == [
        ("b@d.test", 250),
        ("c@d.test", 550),
        ("e@d.test", 451),
    ]
    assert result.accepted == ["b@d.test"]
    assert "DATA" in sent and result.sent


def test_every_recipient_refused_sends_no_data() -> None:
    plan = Plan("c.test", "a@c.test", ("b@d.test", "c@d.test"))
    result, sent = run(
        plan,
        {
            "RCPT TO:<b@d.test>": b"451 4.7.1 later\r\n",
            "RCPT TO:<c@d.test>": b"550 5.1.1 unknown\r\n",
        },
    )
    assert "DATA" not in sent and sent[-1] == "QUIT"
    assert result.refusal is not None and result.refusal.stage is Stage.RCPT
    assert result.refusal.reply is not None and result.refusal.reply.code == 451  # the first
    assert len(result.recipients) == 2 and result.accepted == []


def test_a_2xx_to_data_is_no_go_ahead() -> None:
    result, sent = run(Plan("c.test", "a@c.test", ("b@d.test",)), {"DATA": b"250 ok?\r\n"})
    assert "<message>" not in sent and sent[-1] == "QUIT"
    assert result.refusal is not None and result.refusal.stage is Stage.DATA


def test_a_refused_message() -> None:
    result, sent = run(
        Plan("c.test", "a@c.test", ("b@d.test",)), {"<message>": b"554 5.7.1 spam\r\n"}
    )
    assert sent[-2:] == ["<message>", "QUIT"]
    assert not result.sent
    assert result.refusal is not None and result.refusal.stage is Stage.MESSAGE


# -- 421, drops and replies out of the blue ------------------------------------------


@pytest.mark.parametrize("verb", ["<greeting>", "EHLO", "STARTTLS", "MAIL", "RCPT", "DATA"])
def test_after_421_nothing_more_is_sent(verb: str) -> None:
    result, sent = run(DELIVERY, {verb: b"421 4.3.2 Service shutting down\r\n"})
    assert "QUIT" not in sent
    assert result.closing and result.refusal is not None
    assert result.refusal.reply is not None and result.refusal.reply.code == 421


def test_a_persisting_plan_does_not_persist_past_421() -> None:
    plan = Plan("c.test", "a@c.test", ("b@d.test",), persist=True, ending=Ending.RSET)
    result, sent = run(plan, {"<greeting>": b"421 busy\r\n"})
    assert sent == [] and result.closing


@pytest.mark.parametrize("verb", ["<greeting>", "EHLO", "STARTTLS", "RCPT", "<message>"])
def test_a_server_that_drops_the_connection(verb: str) -> None:
    core = SMTPConnection()
    sequence = ClientSequence(core, DELIVERY)
    with pytest.raises(Lost):
        drive(sequence, Server({verb: None}))
    assert sequence.waiting_for == ("<end-of-data>" if verb == "<message>" else verb)
    assert not sequence.result.sent


def test_a_reply_out_of_the_blue_is_taken_for_the_next_command() -> None:
    """A server that says more than it was asked: the core gives its replies to the
    commands in order, so the sequence goes on one reply behind, and still ends."""
    result, sent = run(
        Plan("c.test", "a@c.test", ("b@d.test",)),
        {"<greeting>": b"220 hi\r\n250 out of the blue\r\n"},
    )
    assert [e.reply.code for e in result.exchanges] == [220, 250, 250, 250, 250]
    assert result.exchanges[1].reply.lines == ("out of the blue",)
    # one reply behind, DATA got RCPT's 250: no go-ahead, so no message
    assert result.refusal is not None and result.refusal.stage is Stage.DATA
    assert sent[-1] == "QUIT" and "<message>" not in sent


def test_an_unsolicited_421_closes_it() -> None:
    result, sent = run(
        Plan("c.test", "a@c.test", ("b@d.test",)),
        {"<greeting>": b"220 hi\r\n421 4.4.2 idle too long\r\n"},
    )
    assert result.closing and "QUIT" not in sent and sent == ["EHLO c.test"]


# -- persisting and resuming: the diagnosis ------------------------------------------


def test_a_persisting_plan_asks_mail_and_rcpt_after_refusals() -> None:
    plan = Plan(
        "c.test",
        "a@c.test",
        ("b@d.test",),
        stop_after=Stage.RCPT,
        ending=Ending.RSET,
        persist=True,
    )
    result, sent = run(
        plan,
        {"<greeting>": b"554 5.7.1 no service\r\n", "EHLO": b"503 no\r\n", "HELO": b"503 no\r\n"},
    )
    assert sent == [
        "EHLO c.test",
        "HELO c.test",
        "MAIL FROM:<a@c.test>",
        "RCPT TO:<b@d.test>",
        "RSET",
    ]
    assert result.stopped_after is Stage.RCPT and result.refusal is None


def test_rset_only_after_mail() -> None:
    plan = Plan("c.test", "a@c.test", ("b@d.test",), auth=True, ending=Ending.RSET)
    _, sent = run(plan, {"AUTH": b"535 no\r\n"})
    assert sent == ["EHLO c.test", "<auth>"]
    _, sent = run(plan, {"MAIL": b"553 no\r\n"})
    assert sent == ["EHLO c.test", "<auth>", "MAIL FROM:<a@c.test>", "RSET"]


def test_plans_in_turn_on_one_connection_begin_where_it_is() -> None:
    core = SMTPConnection()
    server = Server()
    ask = Plan("c.test", "a@c.test", ("b@d.test",), stop_after=Stage.RCPT, ending=Ending.RSET)
    sent: list[str] = []
    drive(ClientSequence(core, ask), server, sent)
    assert sent == ["EHLO c.test", "MAIL FROM:<a@c.test>", "RCPT TO:<b@d.test>", "RSET"]
    sent.clear()
    encrypt = Plan("c.test", starttls=TLSPolicy.REQUIRED, stop_after=Stage.TLS, ending=Ending.OPEN)
    drive(ClientSequence(core, encrypt), server, sent)
    assert sent == ["STARTTLS", "<tls>", "EHLO c.test"]
    sent.clear()
    result = drive(ClientSequence(core, replace(ask, auth=True)), server, sent)
    assert sent == ["<auth>", "MAIL FROM:<a@c.test>", "RCPT TO:<b@d.test>", "RSET"]
    assert result.accepted == ["b@d.test"] and core.authenticated


def test_a_sequence_on_a_closed_session_is_done_at_once() -> None:
    core = SMTPConnection()
    core.receive_data(b"")
    assert core.next_event() is CONNECTION_CLOSED
    sequence = ClientSequence(core, DELIVERY)
    action = sequence.next_action()
    assert isinstance(action, Done) and action.result.closing


# -- the driver's side of the contract ------------------------------------------------


def test_next_action_before_the_reply_is_a_local_error() -> None:
    sequence = ClientSequence(SMTPConnection(), DELIVERY)
    assert isinstance(sequence.next_action(), Await)
    with pytest.raises(LocalProtocolError, match="has not been received"):
        sequence.next_action()


def test_receive_when_nothing_is_awaited_is_a_local_error() -> None:
    sequence = ClientSequence(SMTPConnection(), DELIVERY)
    with pytest.raises(LocalProtocolError, match="no reply is awaited"):
        sequence.receive(Reply(250, ("ok",)))


def test_it_needs_a_client_core() -> None:
    with pytest.raises(LocalProtocolError, match="client role"):
        ClientSequence(SMTPConnection(role=Role.SERVER), DELIVERY)


def test_done_stays_done() -> None:
    core = SMTPConnection()
    sequence = ClientSequence(core, DELIVERY)
    result = drive(sequence, Server())
    assert sequence.next_action() == Done(result)


# -- any server ------------------------------------------------------------------------


def codes() -> st.SearchStrategy[bytes]:
    return st.integers(200, 599).map(lambda code: f"{code} x\r\n".encode())


REPLY_BYTES = st.one_of(
    st.sampled_from(
        [
            b"220 hi\r\n",
            b"250 ok\r\n",
            EHLO_REPLY,
            b"354 go\r\n",
            b"421 bye\r\n",
            b"235 ok\r\n",
            b"334 VXNlcm5hbWU6\r\n",
            b"550 no\r\n",
            b"451 later\r\n",
            b"502 what\r\n",
            b"250-a\r\n250 b\r\n220 two at once\r\n",
        ]
    ),
    codes(),
    st.binary(max_size=40),
)


def plan_of(**fields: object) -> Plan:
    """A Plan; one that stops after DATA drops (the only ending it may have)."""
    if fields["stop_after"] is Stage.DATA:
        fields["ending"] = Ending.DROP
    return Plan(**fields)  # type: ignore[arg-type]


PLANS = st.builds(
    plan_of,
    helo=st.just("c.test"),
    sender=st.one_of(st.none(), st.just("a@c.test")),
    recipients=st.lists(st.sampled_from(["b@d.test", "c@d.test"]), min_size=1, max_size=3).map(
        tuple
    ),
    starttls=st.sampled_from(TLSPolicy),
    auth=st.booleans(),
    size=st.one_of(st.none(), st.integers(0, 10**6)),
    eight_bit=st.booleans(),
    stop_after=st.one_of(st.none(), st.sampled_from([Stage(s) for s in STOP_POINTS])),
    ending=st.sampled_from(Ending),
    persist=st.booleans(),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plan=PLANS, answers=st.lists(REPLY_BYTES, max_size=20), chunked=st.booleans())
def test_any_server_ends_it_or_is_a_remote_error(
    plan: Plan, answers: list[bytes], chunked: bool
) -> None:
    """Whatever the server says, the sequence comes to an end in a bounded number of
    steps, or the core raises RemoteProtocolError; it never asks the core for
    something the core refuses (no LocalProtocolError), whatever the replies."""
    server = AnyServer(chunker=odd_chunks if chunked else whole, answers=list(answers))
    sequence = ClientSequence(SMTPConnection(), plan)
    with contextlib.suppress(Lost, RemoteProtocolError):  # Lost: the driver's error
        drive(sequence, server, limit=16 + len(plan.recipients))
