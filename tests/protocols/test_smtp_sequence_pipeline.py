"""PIPELINING (RFC 2920) in the one client sequence, sans-IO: MAIL, every RCPT and DATA
(or the first BDAT) as one ``Batch``, the replies matched in order.

The server is a list of replies per batch: they are fed to the client core all
together, as one read would bring them, whole, a byte at a time, or cut at odd
places, and handed to the sequence in the order the core parses them.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mailtalk.protocols.common import LocalProtocolError, Role
from mailtalk.protocols.smtp import END_OF_DATA, Reply
from mailtalk.protocols.smtp_connection import SMTPConnection
from mailtalk.protocols.smtp_plan import (
    Await,
    Batch,
    Chunk,
    Command,
    Done,
    Drop,
    Ending,
    Message,
    Plan,
    Quit,
    Stage,
)
from mailtalk.protocols.smtp_sequence import ClientSequence
from tests.protocols.test_smtp import CHUNKERS, Chunker, whole

EHLO = b"250-mx.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 8BITMIME\r\n"


def replies(core: SMTPConnection, data: bytes, chunker: Chunker) -> Iterator[Reply]:
    """Every reply in ``data``, fed in ``chunker``'s pieces, in order."""
    for piece in chunker(data):
        core.receive_data(piece)
        while isinstance(event := core.next_event(), Reply):
            yield event


def run(
    plan: Plan, batch_replies: bytes, chunker: Chunker = whole, after: bytes = b"250 ok\r\n",
    lmtp: bool = False,
) -> tuple[list[object], Done]:
    """Drive ``plan`` to its end: the greeting, EHLO's reply, ``batch_replies`` to the
    Batch (all of them fed before any is handed over), ``after`` to anything else.
    What was asked of the driver, in order (a Batch as its lines), and how it ended."""
    core = SMTPConnection(role=Role.CLIENT, lmtp=lmtp)
    sequence = ClientSequence(core, plan)
    asked: list[object] = []
    waiting: Iterator[Reply] = iter(())

    def answer(data: bytes) -> None:
        for reply in replies(core, data, chunker):
            sequence.receive(reply)

    while True:
        action = sequence.next_action()
        match action:
            case Done():
                return asked, action
            case Await():
                reply = next(waiting, None)
                if reply is None:
                    answer(b"220 mx.test\r\n")
                else:
                    asked.append(f"await {reply.recipient}")
                    sequence.receive(reply)
            case Command(line=line):
                asked.append(line)
                core.send_line(line)
                answer(EHLO if line.startswith(("EHLO", "LHLO")) else after)
            case Chunk():
                asked.append(action.line)
                core.send_line(action.line)
                core.send_chunk(b"x" * action.size)
                answer(after)
            case Message():
                asked.append("<message>")
                core.send_message(b"hi\r\n")
                answer(after)
            case Batch(items=items):
                asked.append(tuple(item.line for item in items))
                for item in items:
                    core.send_line(item.line)
                    if isinstance(item, Chunk):
                        core.send_chunk(b"x" * item.size)
                got = list(replies(core, batch_replies, chunker))
                for reply in got[: len(items)]:
                    sequence.receive(reply)
                    if sequence.result.closing:
                        break
                waiting = iter(got[len(items) :])  # LMTP: more replies after BDAT LAST
            case Quit() | Drop():
                asked.append(type(action).__name__.upper())


def plan(**extra: object) -> Plan:
    fields: dict[str, object] = {
        "helo": "c.test", "sender": "a@b.test", "recipients": ("x@mx.test", "y@mx.test"),
        "pipeline": True,
    }  # fmt: skip
    fields.update(extra)
    return Plan(**fields)  # type: ignore[arg-type]


@CHUNKERS
def test_mail_rcpt_and_data_go_as_one_batch_and_replies_match_in_order(
    chunker: Chunker,
) -> None:
    asked, done = run(
        plan(), b"250 2.1.0 ok\r\n550 5.1.1 no x\r\n250 2.1.5 ok y\r\n354 go\r\n", chunker
    )
    assert asked == [
        "EHLO c.test",
        ("MAIL FROM:<a@b.test>", "RCPT TO:<x@mx.test>", "RCPT TO:<y@mx.test>", "DATA"),
        "<message>",
        "QUIT",
    ]
    result = done.result
    assert [(rcpt, reply.code) for rcpt, reply in result.recipients] == [
        ("x@mx.test", 550), ("y@mx.test", 250)
    ]  # fmt: skip
    assert result.accepted == ["y@mx.test"] and result.sent and result.refusal is None
    assert result.used == ["PIPELINING"]
    assert [(e.stage, e.verb, e.reply.code) for e in result.exchanges[2:]] == [
        (Stage.MAIL, "MAIL", 250), (Stage.RCPT, "RCPT", 550), (Stage.RCPT, "RCPT", 250),
        (Stage.DATA, "DATA", 354), (Stage.MESSAGE, END_OF_DATA, 250),
    ]  # fmt: skip


@CHUNKERS
def test_every_recipient_refused_and_354_to_data_ends_the_message_empty(
    chunker: Chunker,
) -> None:
    asked, done = run(plan(), b"250 ok\r\n550 no\r\n451 later\r\n354 go\r\n", chunker)
    assert asked[2:] == [".", "QUIT"]  # never the message itself
    refusal = done.result.refusal
    assert refusal is not None and refusal.stage is Stage.RCPT and refusal.reply is not None
    assert refusal.reply.code == 550 and not done.result.sent


def test_mail_refused_judged_first_and_data_refused_sends_nothing_more() -> None:
    asked, done = run(plan(), b"553 bad sender\r\n503 need MAIL\r\n503 need MAIL\r\n503 no\r\n")
    assert asked[2:] == ["QUIT"]
    refusal = done.result.refusal
    assert refusal is not None and refusal.stage is Stage.MAIL and refusal.reply is not None
    assert refusal.reply.code == 553 and done.result.recipients == []


def test_a_421_ends_the_batch_there_without_quit() -> None:
    asked, done = run(plan(), b"250 ok\r\n421 4.7.0 going away\r\n")
    assert asked[2:] == []  # no QUIT after a 421, and no wait for the replies never coming
    refusal = done.result.refusal
    assert done.result.closing and refusal is not None and refusal.stage is Stage.RCPT


def test_a_421_to_data_is_not_blamed_on_the_accepted_recipients() -> None:
    _, done = run(plan(), b"250 ok\r\n250 ok\r\n250 ok\r\n421 4.3.2 shutting down\r\n")
    refusal = done.result.refusal
    assert refusal is not None and refusal.stage is Stage.DATA
    assert done.result.accepted == ["x@mx.test", "y@mx.test"]


@CHUNKERS
def test_chunking_pipelines_the_first_bdat_and_sends_the_rest_after(chunker: Chunker) -> None:
    asked, done = run(
        plan(chunk_size=40, length=100), b"250 ok\r\n250 ok\r\n250 ok\r\n250 40 octets\r\n",
        chunker,
    )  # fmt: skip
    assert asked == [
        "EHLO c.test",
        ("MAIL FROM:<a@b.test>", "RCPT TO:<x@mx.test>", "RCPT TO:<y@mx.test>", "BDAT 40"),
        "BDAT 40",
        "BDAT 20 LAST",
        "QUIT",
    ]
    assert done.result.sent and done.result.used == ["PIPELINING", "CHUNKING"]


def test_a_refused_pipelined_chunk_ends_the_transaction() -> None:
    asked, done = run(
        plan(chunk_size=40, length=100), b"250 ok\r\n550 no\r\n550 no\r\n554 no recipients\r\n"
    )
    assert asked[2:] == ["QUIT"]
    refusal = done.result.refusal
    assert refusal is not None and refusal.stage is Stage.RCPT


def test_lmtp_with_bdat_last_in_the_batch_reads_one_reply_per_recipient() -> None:
    asked, done = run(
        plan(chunk_size=1000, length=100),
        b"250 ok\r\n250 ok\r\n250 ok\r\n250 2.0.0 x done\r\n452 4.2.2 y over quota\r\n",
        lmtp=True,
    )
    assert asked[0] == "LHLO c.test" and asked[1][-1] == "BDAT 100 LAST"  # type: ignore[index]
    assert asked[2:] == ["await y@mx.test", "QUIT"]
    deliveries = [(rcpt, reply.code) for rcpt, reply in done.result.deliveries]
    assert deliveries == [("x@mx.test", 250), ("y@mx.test", 452)]


def test_stopping_after_rcpt_batches_mail_and_rcpt_only() -> None:
    asked, done = run(plan(stop_after=Stage.RCPT), b"250 ok\r\n250 ok\r\n250 ok\r\n")
    assert asked[1] == ("MAIL FROM:<a@b.test>", "RCPT TO:<x@mx.test>", "RCPT TO:<y@mx.test>")
    assert asked[2:] == ["QUIT"] and done.result.stopped_after is Stage.RCPT


def test_dropping_after_data_leaves_the_354_unanswered() -> None:
    asked, _ = run(
        plan(stop_after=Stage.DATA, ending=Ending.DROP), b"250 ok\r\n550 no\r\n550 no\r\n354 go\r\n"
    )
    assert asked[2:] == ["DROP"]  # no "." when the plan drops


def test_without_pipeline_planned_the_commands_go_one_by_one() -> None:
    asked, _ = run(plan(pipeline=False), b"")
    assert asked[1:5] == ["MAIL FROM:<a@b.test>", "RCPT TO:<x@mx.test>", "RCPT TO:<y@mx.test>",
                          "DATA"]  # fmt: skip


def test_required_and_not_offered_stops_before_mail() -> None:
    core = SMTPConnection(role=Role.CLIENT)
    sequence = ClientSequence(core, plan(requires=frozenset({"PIPELINING"})))
    for data, line in [(b"220 hi\r\n", None), (b"250 mx.test\r\n", "EHLO c.test")]:
        action = sequence.next_action()
        if line is not None:
            assert action == Command(line)
            core.send_line(line)
        core.receive_data(data)
        reply = core.next_event()
        assert isinstance(reply, Reply)
        sequence.receive(reply)
    assert isinstance(sequence.next_action(), Quit)
    done = sequence.next_action()
    assert isinstance(done, Done) and done.result.refusal is not None
    assert done.result.refusal.missing == "PIPELINING"


def test_next_action_before_every_batch_reply_is_an_error() -> None:
    core = SMTPConnection(role=Role.CLIENT)
    sequence = ClientSequence(core, plan())
    core.receive_data(b"220 hi\r\n")
    sequence.next_action()
    sequence.receive(core.next_event())  # type: ignore[arg-type]
    core.send_line(sequence.next_action().line)  # type: ignore[union-attr]
    core.receive_data(EHLO)
    sequence.receive(core.next_event())  # type: ignore[arg-type]
    batch = sequence.next_action()
    assert isinstance(batch, Batch) and len(batch.items) == 4
    for item in batch.items:
        core.send_line(item.line)
    core.receive_data(b"250 ok\r\n")
    sequence.receive(core.next_event())  # type: ignore[arg-type]
    assert sequence.waiting_for == "RCPT"
    with pytest.raises(LocalProtocolError):
        sequence.next_action()
