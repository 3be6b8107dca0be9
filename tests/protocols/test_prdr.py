"""PRDR (draft-hall-prdr, as Exim implements it) as a mode of the SMTP core and of the
one client sequence: MAIL FROM ... PRDR, then after the final dot a 353, one reply
per accepted recipient and a final reply, fed whole, byte by byte and in odd pieces."""

from __future__ import annotations

import pytest

from mailtalk.protocols.smtp import PRDR_START, Reply
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.protocols.smtp_plan import Await, Command, Done, Message, Plan, Result
from mailtalk.protocols.smtp_sequence import ClientSequence
from tests.protocols.test_smtp import CHUNKERS, Chunker

EHLO = b"250-exim.test\r\n250-PIPELINING\r\n250 PRDR\r\n"
# Exim 4.96 receive.c's wordings
PER_RECIPIENT = (
    b"353 PRDR content analysis beginning\r\n"
    b"250 PRDR R=<x@y> acceptance\r\n"
    b"550 PRDR test: no mail for gone@y\r\n"
    b"250 id=1xaSLJ-00033b-1x message accepted for some recipients\r\n"
)


def transaction(core: SMTPConnection, chunker: Chunker, mail: str) -> None:
    """Greeting, EHLO, MAIL, two accepted RCPTs, DATA and the message, all answered."""
    for data in (b"220 exim.test ESMTP\r\n",):
        for piece in chunker(data):
            core.receive_data(piece)
        assert isinstance(core.next_event(), Reply)
    for line, reply in (("EHLO me", EHLO), (mail, b"250 OK, PRDR Requested\r\n"),
                        ("RCPT TO:<x@y>", b"250 Accepted\r\n"),
                        ("RCPT TO:<gone@y>", b"250 Accepted\r\n"),
                        ("DATA", b"354 Enter message\r\n")):  # fmt: skip
        core.send_line(line)
        for piece in chunker(reply):
            core.receive_data(piece)
        assert isinstance(core.next_event(), Reply)
    core.send_message(b"Subject: t\r\n\r\nhi\r\n")


@CHUNKERS
def test_the_core_owes_a_reply_per_recipient_and_a_final_one(chunker: Chunker) -> None:
    core = SMTPConnection()
    transaction(core, chunker, "MAIL FROM:<a@b> PRDR")
    assert core.prdr
    for piece in chunker(PER_RECIPIENT):
        core.receive_data(piece)
    start = core.next_event()
    assert isinstance(start, Reply) and start.code == PRDR_START and start.recipient is None
    assert core.owes_recipient_replies
    one, two, final = core.next_event(), core.next_event(), core.next_event()
    assert isinstance(one, Reply) and isinstance(two, Reply) and isinstance(final, Reply)
    assert (one.recipient, one.code, two.recipient, two.code) == ("x@y", 250, "gone@y", 550)
    assert final.recipient is None and final.code == 250
    assert not core.owes_recipient_replies and not core.awaiting_reply
    assert core.state_name == "ready"  # the transaction is over: MAIL may come again


def test_without_prdr_on_mail_a_353_is_just_a_reply() -> None:
    """A 353 to a dot that did not ask for PRDR queues nothing (the server is wrong)."""
    core = SMTPConnection()
    transaction(core, lambda data: [data], "MAIL FROM:<a@b>")
    assert not core.prdr
    core.receive_data(b"353 PRDR content analysis beginning\r\n")
    assert core.next_event().code == 353  # type: ignore[union-attr]
    assert not core.awaiting_reply


def run(server_says: bytes, recipients: tuple[str, ...] = ("x@y", "gone@y"),
        ehlo: bytes = EHLO, requires: frozenset[str] = frozenset()) -> tuple[Result, list[str]]:
    core = SMTPConnection()
    plan = Plan(helo="me", sender="a@b", recipients=recipients, prdr=True, requires=requires)
    sequence = ClientSequence(core, plan)
    replies = {"EHLO": ehlo, "MAIL": b"250 OK, PRDR Requested\r\n", "RCPT": b"250 Accepted\r\n",
               "DATA": b"354 go\r\n", "QUIT": b"221 bye\r\n"}
    sent: list[str] = []
    while not isinstance(action := sequence.next_action(), Done):
        if isinstance(action, Command):
            core.send_line(action.line)
            sent.append(action.line)
            core.receive_data(replies[action.line.split()[0]])
        elif isinstance(action, Message):
            core.send_message(b"hi\n")
            core.receive_data(server_says)
        elif isinstance(action, Await) and action.answering != "<greeting>":
            pass  # the next reply is already in the buffer
        elif isinstance(action, Await):
            core.receive_data(b"220 hi\r\n")
        else:
            continue
        sequence.receive(core.next_event())  # type: ignore[arg-type]
    return action.result, sent


def test_the_sequence_asks_prdr_and_keeps_each_recipients_reply() -> None:
    result, sent = run(PER_RECIPIENT)
    assert "MAIL FROM:<a@b> PRDR" in sent
    assert [(r, reply.code) for r, reply in result.deliveries] == [("x@y", 250), ("gone@y", 550)]
    assert result.delivered == ["x@y"]
    assert [(r, reply.code) for r, reply in result.undelivered] == [("gone@y", 550)]
    assert result.prdr_final is not None and result.prdr_final.code == 250
    assert result.sent and "PRDR" in result.used
    assert result.refusal is None  # as with LMTP: the message went to someone


def test_one_recipient_gets_the_usual_reply() -> None:
    """Exim sends the 353 only for two recipients or more: one reply, as without PRDR."""
    result, _ = run(b"250 id=1xa message accepted\r\n", recipients=("x@y",))
    assert result.deliveries == [] and result.prdr_final is None
    assert result.sent and result.refusal is None


def test_a_final_refusal_refuses_the_message_for_every_recipient() -> None:
    result, _ = run(b"353 go\r\n250 ok\r\n250 ok\r\n550 id=1xa message rejected\r\n")
    assert result.delivered == ["x@y", "gone@y"]
    assert not result.sent
    assert result.refusal is not None and result.refusal.reply.code == 550  # the final one


def test_prdr_not_offered_is_not_asked() -> None:
    result, sent = run(b"250 ok\r\n", ehlo=b"250-postfix\r\n250 PIPELINING\r\n")
    assert "MAIL FROM:<a@b>" in sent and result.sent and result.used == []


def test_prdr_required_and_not_offered_ends_before_mail() -> None:
    """``send --prdr`` requires it: asked by name, not offered, no MAIL."""
    result, sent = run(PER_RECIPIENT, ehlo=b"250-postfix\r\n250 PIPELINING\r\n",
                       requires=frozenset({"PRDR"}))
    assert not any(line.startswith("MAIL") for line in sent)
    assert result.refusal is not None and result.refusal.missing == "PRDR"


@pytest.mark.parametrize("cut", range(1, len(PER_RECIPIENT)))
def test_the_replies_cut_anywhere_give_the_same_result(cut: int) -> None:
    core = SMTPConnection()
    transaction(core, lambda data: [data], "MAIL FROM:<a@b> PRDR")
    core.receive_data(PER_RECIPIENT[:cut])
    core.receive_data(PER_RECIPIENT[cut:])
    codes = [core.next_event().code for _ in range(4)]  # type: ignore[union-attr]
    assert codes == [353, 250, 550, 250] and not core.awaiting_reply
