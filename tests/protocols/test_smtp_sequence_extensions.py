"""The client sequence's SMTP extensions (DSN, SMTPUTF8, CHUNKING, SIZE), sans-IO."""

from __future__ import annotations

import pytest

from mailtalk.protocols.common import Role
from mailtalk.protocols.smtp import Reply
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.protocols.smtp_plan import DSN, Await, Chunk, Command, Done, Plan, check_notify, xtext
from mailtalk.protocols.smtp_sequence import ClientSequence


def run(ehlo: bytes, plan: Plan) -> tuple[list[str], Done]:
    """Drive ``plan`` over a client core against canned replies: the greeting, the EHLO
    reply given, 250 to everything else; the lines sent and how it ended."""
    core = SMTPConnection(role=Role.CLIENT)
    sequence = ClientSequence(core, plan)
    sent: list[str] = []

    def answer(data: bytes) -> None:
        core.receive_data(data)
        reply = core.next_event()
        assert isinstance(reply, Reply)
        sequence.receive(reply)

    while True:
        action = sequence.next_action()
        if isinstance(action, Done):
            return sent, action
        if isinstance(action, Await):
            answer(b"220 hi\r\n")
        elif isinstance(action, Command):
            sent.append(action.line)
            core.send_line(action.line)
            answer(ehlo if action.line.startswith("EHLO") else b"250 ok\r\n")
        elif isinstance(action, Chunk):
            sent.append(action.line)
            core.send_line(action.line)
            core.send_chunk(b"x" * action.size)
            answer(b"250 ok\r\n")
        else:  # Quit
            sent.append("QUIT")


FULL_EHLO = b"250-x\r\n250-DSN\r\n250-SMTPUTF8\r\n250-CHUNKING\r\n250 SIZE 1000\r\n"


def test_every_extension_on_the_wire() -> None:
    plan = Plan(
        helo="c.test", sender="jörg@a.test", recipients=("b@c.test",),
        requires=frozenset({"DSN", "SMTPUTF8", "CHUNKING"}), smtputf8=True,
        dsn=DSN(notify="SUCCESS", ret="HDRS", envid="a b+c=", orcpt=True),
        chunk_size=400, length=900, size=900, check_size=True,
    )  # fmt: skip
    sent, done = run(FULL_EHLO, plan)
    assert sent[1] == "MAIL FROM:<jörg@a.test> SIZE=900 SMTPUTF8 RET=HDRS ENVID=a+20b+2Bc+3D"
    assert sent[2] == "RCPT TO:<b@c.test> NOTIFY=SUCCESS ORCPT=rfc822;b@c.test"
    assert sent[3:6] == ["BDAT 400", "BDAT 400", "BDAT 100 LAST"]
    assert done.result.sent and done.result.used == ["SIZE", "SMTPUTF8", "DSN", "CHUNKING"]


@pytest.mark.parametrize("keyword", ["DSN", "SMTPUTF8", "CHUNKING", "8BITMIME"])
def test_required_and_not_offered_stops_before_mail(keyword: str) -> None:
    plan = Plan(
        helo="c",
        sender="a@b.test",
        recipients=("c@d.test",),
        requires=frozenset({keyword}),
        dsn=DSN(notify="NEVER"),
        chunk_size=10,
    )
    sent, done = run(b"250-x\r\n250 PIPELINING\r\n", plan)
    assert sent == ["EHLO c", "QUIT"]
    refusal = done.result.refusal
    assert refusal is not None and refusal.missing == keyword and refusal.reply is None


def test_not_required_and_not_offered_is_never_sent() -> None:
    plan = Plan(
        helo="c",
        sender="a@b.test",
        recipients=("c@d.test",),
        dsn=DSN(notify="NEVER", envid="x"),
        chunk_size=10,
        size=5,
        smtputf8=True,
    )
    sent, _ = run(b"250 x\r\n", plan)
    assert sent[1:4] == ["MAIL FROM:<a@b.test>", "RCPT TO:<c@d.test>", "DATA"]


def test_size_over_the_limit_is_refused_locally() -> None:
    plan = Plan(helo="c", sender="a@b.test", recipients=("c@d.test",), size=1001, check_size=True)
    sent, done = run(FULL_EHLO, plan)
    assert sent == ["EHLO c", "QUIT"]
    assert done.result.refusal is not None and "over the server's SIZE 1000" in (
        done.result.refusal.reason
    )


def test_xtext_and_notify() -> None:
    assert xtext("a+b=c d\x7fé") == "a+2Bb+3Dc+20d+7F+C3+A9"
    assert check_notify("success, delay") == "SUCCESS,DELAY"
    for bad in ("never,success", "sometimes", "success,success", ""):
        with pytest.raises(ValueError):
            check_notify(bad)
