"""Tests of the POP3 core, both roles, without any socket."""

from __future__ import annotations

import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    MAX_LINE,
    NEED_DATA,
    LocalProtocolError,
    NoEvent,
    RemoteProtocolError,
    ReplyClass,
    Role,
)
from mailtalk.protocols.pop3 import (
    AUTH_RESPONSE,
    MAX_BODY,
    MAX_TRACKED_MESSAGES,
    VALID_COMMANDS,
    Command,
    Continuation,
    POP3Connection,
    POP3State,
    Response,
    apop_digest,
    format_response,
)

Answer = Response | Continuation | NoEvent

GREETING = b"+OK Dovecot ready. <1896.697170952@dbc.mtview.ca.us>\r\n"
CAPA_BODY = (
    b"+OK\r\n"
    b"CAPA\r\n"
    b"TOP\r\n"
    b"UIDL\r\n"
    b"RESP-CODES\r\n"
    b"PIPELINING\r\n"
    b"AUTH-RESP-CODE\r\n"
    b"STLS\r\n"
    b"USER\r\n"
    b"SASL PLAIN LOGIN\r\n"
    b".\r\n"
)
RETR_1 = (
    b"+OK 120 octets\r\n"
    b"From: bob@example.org\r\n"
    b"Subject: dots\r\n"
    b"\r\n"
    b"..leading dot\r\n"
    b"...two dots\r\n"
    b"..\r\n"
    b"end\r\n"
    b".\r\n"
)

# A Dovecot session as (what the client types, what the server answers).
DOVECOT_SESSION: list[tuple[str | None, bytes]] = [
    (None, GREETING),
    ("CAPA", CAPA_BODY),
    ("USER alice", b"+OK\r\n"),
    ("PASS wonderland", b"+OK Logged in.\r\n"),
    ("STAT", b"+OK 2 320\r\n"),
    ("LIST", b"+OK 2 messages:\r\n1 120\r\n2 200\r\n.\r\n"),
    ("UIDL", b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n2 QhdPYR:00WBw1Ph7x7\r\n.\r\n"),
    ("RETR 1", RETR_1),
    ("TOP 2 0", b"+OK\r\nSubject: second\r\n\r\n.\r\n"),
    ("DELE 1", b"+OK Marked to be deleted.\r\n"),
    ("RSET", b"+OK\r\n"),
    ("DELE 2", b"+OK Marked to be deleted.\r\n"),
    ("QUIT", b"+OK Logging out, messages deleted.\r\n"),
]


def drain(conn: POP3Connection) -> list[Answer]:
    events: list[Answer] = []
    while True:
        event = conn.next_event()
        if event is NEED_DATA:
            return events
        events.append(event)
        if event is CONNECTION_CLOSED:
            return events


def drain_commands(server: POP3Connection) -> list[Command | NoEvent]:
    events: list[Command | NoEvent] = []
    while True:
        event = server.next_command()
        if event is NEED_DATA:
            return events
        events.append(event)
        if event is CONNECTION_CLOSED:
            return events


def run_session(chunk: int | None) -> tuple[list[Answer], list[str], POP3Connection]:
    """Play DOVECOT_SESSION; ``chunk`` bytes per receive_data (None: each answer whole)."""
    client = POP3Connection()
    events: list[Answer] = []
    states: list[str] = []
    for typed, answer in DOVECOT_SESSION:
        if typed is not None:
            client.send_line(typed)
        step = chunk or len(answer)
        for start in range(0, len(answer), step):
            client.receive_data(answer[start : start + step])
            events += drain(client)
        states.append(client.state_name)
    client.receive_data(b"")
    events += drain(client)
    states.append(client.state_name)
    return events, states, client


def greeted(greeting: bytes = GREETING, max_body: int = MAX_BODY) -> POP3Connection:
    client = POP3Connection(max_body=max_body)
    client.receive_data(greeting)
    assert len(drain(client)) == 1
    return client


def exchange(client: POP3Connection, line: str, answer: bytes) -> Answer:
    client.send_line(line)
    client.receive_data(answer)
    events = drain(client)
    assert len(events) == 1, events
    return events[0]


def logged_in(max_body: int = MAX_BODY) -> POP3Connection:
    client = greeted(max_body=max_body)
    exchange(client, "USER alice", b"+OK\r\n")
    exchange(client, "PASS wonderland", b"+OK Logged in.\r\n")
    assert client.state is POP3State.TRANSACTION
    return client


# -- the canned Dovecot session ------------------------------------------------------


def test_dovecot_session_events_and_states() -> None:
    events, states, client = run_session(None)
    assert events[-1] is CONNECTION_CLOSED
    answers = events[:-1]
    assert all(isinstance(a, Response) for a in answers)
    responses = [a for a in answers if isinstance(a, Response)]
    # Every answer is matched to its command and keeps the exact bytes received.
    assert [r.command for r in responses] == [None] + [
        typed.split()[0] for typed, _ in DOVECOT_SESSION[1:] if typed
    ]
    assert [r.raw for r in responses] == [answer for _, answer in DOVECOT_SESSION]
    assert all(r.ok and not r.truncated and r.final for r in responses)
    assert all(r.reply_class is ReplyClass.POSITIVE for r in responses)

    greeting, capa, _user, _pass, stat, listing, uidl, retr, top = responses[:9]
    assert greeting.text == "Dovecot ready. <1896.697170952@dbc.mtview.ca.us>"
    assert greeting.lines is None
    assert capa.lines is not None and capa.lines[-1] == b"SASL PLAIN LOGIN"
    assert stat.text == "2 320" and stat.lines is None
    assert listing.text == "2 messages:"
    assert listing.lines == (b"1 120", b"2 200")
    assert uidl.lines == (b"1 whqtswO00WBw418f9t5JxYwZ", b"2 QhdPYR:00WBw1Ph7x7")
    assert retr.lines == (
        b"From: bob@example.org",
        b"Subject: dots",
        b"",
        b".leading dot",
        b"..two dots",
        b".",
        b"end",
    )
    assert top.lines == (b"Subject: second", b"")

    assert states == [
        "authorization",  # greeting
        "authorization",  # CAPA
        "authorization",  # USER
        "transaction",  # PASS
        "transaction", "transaction", "transaction", "transaction", "transaction",
        "transaction", "transaction", "transaction",  # STAT .. DELE 2
        "update",  # QUIT
        "closed",  # the server hung up
    ]
    assert client.authenticated
    assert client.apop_timestamp == "<1896.697170952@dbc.mtview.ca.us>"
    assert client.capabilities["SASL"] == ["PLAIN", "LOGIN"]
    assert client.sasl_mechanisms == ["PLAIN", "LOGIN"]
    assert client.message_numbers == [1]  # DELE 1 was undone by RSET, DELE 2 stands
    assert not client.awaiting_reply


@pytest.mark.parametrize("chunk", [1, 2, 7, 64])
def test_dovecot_session_in_small_chunks_gives_identical_events(chunk: int) -> None:
    whole, whole_states, _ = run_session(None)
    pieces, piece_states, _ = run_session(chunk)
    assert pieces == whole
    assert piece_states == whole_states


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=40), min_size=1, max_size=200))
def test_any_split_of_the_stream_gives_identical_events(sizes: list[int]) -> None:
    whole, _, _ = run_session(None)
    stream = b"".join(answer for _, answer in DOVECOT_SESSION)
    client = POP3Connection()
    for typed, _ in DOVECOT_SESSION:
        if typed is not None:
            client.send_line(typed)  # all pipelined: the FIFO keeps them apart
    events: list[Answer] = []
    position = 0
    for size in sizes:
        if position >= len(stream):
            break
        client.receive_data(stream[position : position + size])
        position += size
        events += drain(client)
    if position < len(stream):
        client.receive_data(stream[position:])
        events += drain(client)
    client.receive_data(b"")
    events += drain(client)
    assert events == whole


# -- answers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("wire", "code", "text"),
    [
        (b"-ERR [IN-USE] Mailbox is locked by another POP3 session\r\n", "IN-USE",
         "Mailbox is locked by another POP3 session"),
        (b"-ERR [AUTH] Authentication failed.\r\n", "AUTH", "Authentication failed."),
        (b"-ERR [SYS/TEMP] Temporary server failure\r\n", "SYS/TEMP",
         "Temporary server failure"),
        (b"-ERR [LOGIN-DELAY] wait 900 seconds\r\n", "LOGIN-DELAY", "wait 900 seconds"),
        (b"-ERR [SYS/PERM]\r\n", "SYS/PERM", ""),
        (b"-ERR Unknown command\r\n", None, "Unknown command"),
        (b"-ERR [not a code] text\r\n", None, "[not a code] text"),
        (b"-err lower case status\n", None, "lower case status"),
    ],
)
def test_error_answers_and_response_codes(wire: bytes, code: str | None, text: str) -> None:
    client = greeted()
    answer = exchange(client, "PASS secret", wire)
    assert isinstance(answer, Response)
    assert (answer.ok, answer.code, answer.text) == (False, code, text)
    assert answer.reply_class is ReplyClass.PERMANENT
    assert answer.raw == wire
    assert client.state is POP3State.AUTHORIZATION


def test_error_to_a_multiline_command_is_one_line() -> None:
    client = logged_in()
    client.send_line("RETR 9")
    client.send_line("NOOP")
    client.receive_data(b"-ERR [SYS/TEMP] no such message\r\n+OK\r\n")
    retr, noop = drain(client)
    assert isinstance(retr, Response) and isinstance(noop, Response)
    assert (retr.command, retr.ok, retr.lines) == ("RETR", False, None)
    assert (noop.command, noop.ok) == ("NOOP", True)


def test_pipelined_commands_are_answered_in_order() -> None:
    client = logged_in()
    for line in ("STAT", "LIST", "LIST 2", "UIDL 1", "RETR 1", "DELE 7", "NOOP"):
        client.send_line(line)
    assert client.pending_commands == ("STAT", "LIST", "LIST", "UIDL", "RETR", "DELE", "NOOP")
    client.receive_data(
        b"+OK 2 320\r\n"
        b"+OK\r\n1 120\r\n2 200\r\n.\r\n"
        b"+OK 2 200\r\n"
        b"+OK 1 whqtswO00WBw418f9t5JxYwZ\r\n"
        b"+OK\r\nbody\r\n.\r\n"
        b"-ERR no such message\r\n"
        b"+OK\r\n"
    )
    answers = [a for a in drain(client) if isinstance(a, Response)]
    assert [(a.command, a.ok, a.lines) for a in answers] == [
        ("STAT", True, None),
        ("LIST", True, (b"1 120", b"2 200")),
        ("LIST", True, None),
        ("UIDL", True, None),
        ("RETR", True, (b"body",)),
        ("DELE", False, None),
        ("NOOP", True, None),
    ]
    assert not client.awaiting_reply


def test_answer_with_nothing_outstanding_is_a_one_line_response() -> None:
    client = logged_in()
    client.receive_data(b"-ERR autologout; idle for too long\r\n")
    (answer,) = drain(client)
    assert isinstance(answer, Response)
    assert (answer.ok, answer.command, answer.lines) == (False, None, None)


def test_greeting_without_timestamp_and_refused_greeting() -> None:
    client = greeted(b"+OK POP3 server ready\r\n")
    assert client.apop_timestamp is None
    assert "APOP" not in client.valid_commands()

    refused = POP3Connection()
    refused.receive_data(b"-ERR [SYS/TEMP] too many connections\r\n")
    (answer,) = drain(refused)
    assert isinstance(answer, Response) and answer.code == "SYS/TEMP"
    # no session follows a negative greeting: nothing may be sent but :reconnect
    assert refused.state is POP3State.CLOSED
    assert refused.valid_commands() == []
    refused.receive_data(b"")
    assert drain(refused) == [CONNECTION_CLOSED]
    assert refused.state is POP3State.CLOSED


def test_apop_digest_matches_rfc_1939_example() -> None:
    client = greeted()
    assert client.apop_timestamp is not None
    digest = apop_digest(client.apop_timestamp, "tanstaaf")
    assert digest == "c4c9334bac560ecc979e58001b3e22fb"
    assert "APOP" in client.valid_commands()
    exchange(client, f"APOP mrose {digest}", b"+OK maildrop has 1 message (369 octets)\r\n")
    assert client.state is POP3State.TRANSACTION and client.authenticated


def test_garbage_status_line_raises_and_the_stream_goes_on() -> None:
    client = logged_in()
    client.send_line("NOOP")
    client.receive_data(b"HTTP/1.1 400 Bad Request\r\n+OK\r\n")
    with pytest.raises(RemoteProtocolError, match=r"HTTP/1\.1 400"):
        client.next_event()
    (answer,) = drain(client)
    assert isinstance(answer, Response) and answer.command == "NOOP"


@pytest.mark.parametrize("line", [b"+OKAY\r\n", b"+ challenge\r\n", b"OK\r\n", b"\r\n"])
def test_lines_that_are_not_answers_raise(line: bytes) -> None:
    client = logged_in()
    client.send_line("STAT")
    client.receive_data(line)
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_close_in_the_middle_of_a_body_gives_a_truncated_response() -> None:
    client = logged_in()
    client.send_line("RETR 1")
    client.receive_data(b"+OK\r\nSubject: cut\r\npart")
    assert drain(client) == []
    client.receive_data(b"")
    answer, closed = drain(client)
    assert closed is CONNECTION_CLOSED
    assert isinstance(answer, Response)
    assert answer.truncated and answer.lines == (b"Subject: cut", b"part")
    assert client.state is POP3State.CLOSED and not client.awaiting_reply


# -- bounded memory --------------------------------------------------------------------


def test_endless_body_is_capped_and_the_stream_stays_in_sync() -> None:
    client = logged_in(max_body=4096)
    client.send_line("RETR 1")
    client.send_line("NOOP")
    client.receive_data(b"+OK here it comes\r\n")
    tracemalloc.start()
    try:
        line = b"this line repeats forever and ever\r\n"
        block = line * 1000
        for _ in range(200):  # 200k lines, 7 MB
            client.receive_data(block)
            assert drain(client) == []
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000  # one block in flight plus the 4 KiB kept, nowhere near 7 MB
    client.receive_data(b".\r\n+OK\r\n")
    retr, noop = drain(client)
    assert isinstance(retr, Response) and isinstance(noop, Response)
    assert retr.truncated and retr.ok
    assert retr.lines is not None and 0 < len(retr.lines) < 100
    assert set(retr.lines) == {line.rstrip(b"\r\n")}
    assert len(retr.raw) < 4096 + 100
    assert retr.raw.endswith(b".\r\n")
    assert noop.command == "NOOP" and not noop.truncated


def test_many_empty_lines_are_capped_too() -> None:
    client = logged_in(max_body=10_000)
    client.send_line("RETR 1")
    client.receive_data(b"+OK\r\n" + b"\r\n" * 100_000 + b".\r\n")
    (retr,) = drain(client)
    assert isinstance(retr, Response) and retr.truncated
    assert retr.lines is not None and len(retr.lines) < 10_000 // 48


def test_line_over_64_kib_in_a_body_is_cut() -> None:
    client = logged_in()
    client.send_line("RETR 1")
    long_line = b"x" * (70 * 1024)
    client.receive_data(b"+OK\r\nbefore\r\n" + long_line + b"\r\nafter\r\n.\r\n")
    (retr,) = drain(client)
    assert isinstance(retr, Response) and retr.truncated
    assert retr.lines == (b"before", b"x" * MAX_LINE, b"after")


def test_status_line_over_64_kib_is_cut() -> None:
    client = logged_in()
    client.send_line("NOOP")
    client.send_line("NOOP")
    client.receive_data(b"+OK " + b"y" * (70 * 1024) + b"\r\n+OK second\r\n")
    first, second = drain(client)
    assert isinstance(first, Response) and isinstance(second, Response)
    assert first.truncated and len(first.raw) == MAX_LINE
    assert second.text == "second" and not second.truncated


def test_huge_stat_count_does_not_allocate_billions_of_numbers() -> None:
    client = logged_in()
    exchange(client, "STAT", b"+OK 999999999 1\r\n")
    assert len(client.message_numbers) == MAX_TRACKED_MESSAGES


# -- text that is not UTF-8 ------------------------------------------------------------


def test_non_utf8_bytes_never_crash() -> None:
    client = greeted(b"+OK caf\xe9 \xff\xfe ready\r\n")
    exchange(client, "USER j\u00fcrgen", b"-ERR unknown user \xc3\x28\r\n")
    client.send_line("RETR 1")
    body = b"Subject: \xe9t\xe9\r\n\r\n\x00\x01\x80\xff\r\n"
    client.receive_data(b"+OK \xff\r\n" + body + b".\r\n")
    (retr,) = drain(client)
    assert isinstance(retr, Response)
    assert retr.text == "\\xff"
    assert retr.lines == (b"Subject: \xe9t\xe9", b"", b"\x00\x01\x80\xff")


def test_typed_non_ascii_is_sent_as_utf8() -> None:
    client = greeted()
    assert client.send_line("USER j\u00fcrgen") == b"USER j\xc3\xbcrgen\r\n"


# -- redaction and SASL --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("PASS wonderland", "PASS ***"),
        ("pass with spaces in it", "pass ***"),
        ("APOP mrose c4c9334bac560ecc979e58001b3e22fb", "APOP mrose ***"),
        ("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=", "AUTH PLAIN ***"),
        ("auth xoauth2 dXNlcj1hbGljZQFhdXRo", "auth xoauth2 ***"),
        ("USER alice", "USER alice"),
        ("AUTH PLAIN", "AUTH PLAIN"),
        ("PASS", "PASS"),
        ("RETR 1", "RETR 1"),
        ("", ""),
        # mistyped logins (the server refuses them, but the password was typed)
        ("PAS wonderland", "PAS ***"),
        ("PASSS wonderland", "PASSS ***"),
        ("APO mrose c4c9334b", "APO mrose ***"),
        ("LOGIN alice wonderland", "LOGIN alice ***"),
        ("TOP 1 10", "TOP 1 10"),  # two letters from APOP, but a command of POP3
        ("RSET", "RSET"),
    ],
)
def test_redact_commands(line: str, shown: str) -> None:
    assert greeted().redact(line) == shown


def test_sasl_plain_exchange_with_challenge() -> None:
    client = greeted()
    exchange(client, "CAPA", CAPA_BODY)
    assert client.redact("AUTH PLAIN") == "AUTH PLAIN"
    challenge = exchange(client, "AUTH PLAIN", b"+ \r\n")
    assert isinstance(challenge, Continuation)
    assert challenge.text == "" and challenge.reply_class is ReplyClass.INTERMEDIATE
    assert challenge.final
    assert client.sasl_pending
    assert client.valid_commands() == ["*"]
    assert "cancel" in client.next_hint()
    secret = "AGFsaWNlAHdvbmRlcmxhbmQ="
    assert client.redact(secret) == "***"
    assert client.send_line(secret) == secret.encode() + b"\r\n"
    assert client.pending_commands == ("AUTH",)  # the base64 line is not a command
    client.receive_data(b"+OK Logged in.\r\n")
    (done,) = drain(client)
    assert isinstance(done, Response) and done.command == "AUTH"
    assert client.state is POP3State.TRANSACTION and client.authenticated
    assert not client.sasl_pending
    assert client.redact("RETR 1") == "RETR 1"


def test_sasl_login_two_challenges_and_typing_ahead_stays_secret() -> None:
    client = greeted()
    client.send_line("AUTH LOGIN")
    # Typed before the challenge arrived: still the SASL answer, still secret.
    assert client.redact("YWxpY2U=") == "***"
    client.send_line("YWxpY2U=")
    client.receive_data(b"+ VXNlcm5hbWU6\r\n")
    first = drain(client)
    assert [type(e) for e in first] == [Continuation]
    assert client.redact("d29uZGVybGFuZA==") == "***"
    client.send_line("d29uZGVybGFuZA==")
    client.receive_data(b"+ UGFzc3dvcmQ6\r\n+OK Logged in.\r\n")
    second, done = drain(client)
    assert isinstance(second, Continuation) and second.text == "UGFzc3dvcmQ6"
    assert isinstance(done, Response) and done.ok
    assert client.authenticated


def test_sasl_cancel_with_star() -> None:
    client = greeted()
    exchange(client, "AUTH PLAIN", b"+\r\n")
    assert client.redact("*") == "*"
    client.send_line("*")
    assert not client.sasl_pending
    client.receive_data(b"-ERR [AUTH] Authentication cancelled\r\n")
    (answer,) = drain(client)
    assert isinstance(answer, Response) and answer.code == "AUTH"
    assert client.state is POP3State.AUTHORIZATION and not client.authenticated
    assert client.redact("PASS x") == "PASS ***"


def test_auth_with_initial_response_is_not_a_sasl_prompt_until_challenged() -> None:
    client = greeted()
    client.send_line("AUTH PLAIN AGFsaWNlAHdvbmRlcmxhbmQ=")
    assert not client.sasl_pending
    client.receive_data(b"+OK Logged in.\r\n")
    drain(client)
    assert client.authenticated


def test_continuation_outside_auth_is_a_protocol_error() -> None:
    client = logged_in()
    client.send_line("NOOP")
    client.receive_data(b"+ what?\r\n")
    with pytest.raises(RemoteProtocolError):
        client.next_event()


def test_bare_auth_lists_mechanisms_without_logging_in() -> None:
    client = greeted()
    answer = exchange(client, "AUTH", b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n")
    assert isinstance(answer, Response)
    assert (answer.command, answer.lines) == ("AUTH", (b"PLAIN", b"LOGIN"))
    assert client.state is POP3State.AUTHORIZATION and not client.authenticated


# -- state, completion, hints ------------------------------------------------------------


def test_valid_commands_follow_state_and_user_acceptance() -> None:
    client = POP3Connection()
    assert client.valid_commands() == []
    assert client.awaiting_reply  # the greeting is awaited
    client.receive_data(GREETING)
    drain(client)
    before_user = client.valid_commands()
    assert before_user == ["USER", "APOP", "AUTH", "CAPA", "STLS", "QUIT", "UTF8"]
    assert "USER name, then PASS your-password" in client.next_hint()
    exchange(client, "USER alice", b"+OK\r\n")
    assert "PASS" in client.valid_commands()
    assert client.next_hint() .startswith("PASS your-password")
    exchange(client, "PASS wrong", b"-ERR [AUTH] Authentication failed.\r\n")
    assert "PASS" not in client.valid_commands()
    exchange(client, "USER alice", b"+OK\r\n")
    exchange(client, "PASS wonderland", b"+OK\r\n")
    assert client.valid_commands() == list(VALID_COMMANDS[POP3State.TRANSACTION])
    assert client.next_hint() == "STAT, LIST, RETR n, DELE n, QUIT"


def test_capa_narrows_the_optional_commands() -> None:
    client = greeted()
    exchange(client, "CAPA", b"+OK\r\nUSER\r\nRESP-CODES\r\n.\r\n")
    assert client.capabilities == {"USER": [], "RESP-CODES": []}
    assert client.valid_commands() == ["USER", "APOP", "CAPA", "QUIT"]
    exchange(client, "USER a", b"+OK\r\n")
    exchange(client, "PASS b", b"+OK\r\n")
    assert client.valid_commands() == [
        "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "CAPA", "QUIT",
    ]
    # A new CAPA (capabilities may change after login) widens the list again.
    exchange(client, "CAPA", b"+OK\r\nTOP\r\nUIDL\r\n.\r\n")
    assert "TOP" in client.valid_commands() and "UIDL" in client.valid_commands()


def test_capa_refused_leaves_the_table_unnarrowed() -> None:
    client = greeted()
    exchange(client, "CAPA", b"-ERR unknown command\r\n")
    assert not client.capabilities_known
    assert "STLS" in client.valid_commands() and "AUTH" in client.valid_commands()


def test_message_numbers_from_stat_list_dele_rset() -> None:
    client = logged_in()
    assert client.message_numbers == []
    exchange(client, "STAT", b"+OK 3 900\r\n")
    assert client.message_numbers == [1, 2, 3]
    exchange(client, "DELE 2", b"+OK\r\n")
    exchange(client, "DELE 3", b"-ERR no such message\r\n")
    assert client.message_numbers == [1, 3]
    # STAT leaves deleted messages out, but message 3 keeps its number.
    exchange(client, "STAT", b"+OK 2 600\r\n")
    assert client.message_numbers == [1, 3]
    exchange(client, "LIST", b"+OK\r\n1 300\r\n3 300\r\n.\r\n")
    assert client.message_numbers == [1, 3]
    exchange(client, "RSET", b"+OK\r\n")
    assert client.message_numbers == [1, 2, 3]
    exchange(client, "LIST 7", b"+OK 7 120\r\n")
    assert client.message_numbers == [1, 2, 3, 7]
    exchange(client, "LIST", b"+OK\r\n4 10\r\n5 20\r\n.\r\n")
    assert client.message_numbers == [4, 5]


def test_quit_in_authorization_closes() -> None:
    client = greeted()
    exchange(client, "QUIT", b"+OK bye\r\n")
    assert client.state is POP3State.CLOSED
    with pytest.raises(LocalProtocolError):
        client.send_line("USER alice")


def test_quit_error_in_transaction_still_enters_update() -> None:
    client = logged_in()
    exchange(client, "QUIT", b"-ERR some deleted messages not removed\r\n")
    assert client.state is POP3State.UPDATE
    assert client.valid_commands() == []
    client.receive_data(b"")
    assert drain(client) == [CONNECTION_CLOSED]
    assert client.state is POP3State.CLOSED
    assert drain(client) == [CONNECTION_CLOSED]  # stays closed, asks for nothing


def test_local_misuse_raises_local_protocol_error() -> None:
    client = greeted()
    with pytest.raises(LocalProtocolError):
        client.send_line("USER a\r\nPASS b")
    assert client.send_line("NOOP\r\n") == b"NOOP\r\n"
    with pytest.raises(LocalProtocolError):
        client.send(Response(ok=True))
    with pytest.raises(LocalProtocolError):
        client.next_command()
    client.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"+OK late\r\n")


def test_stls_upgrade_discards_plaintext_and_forgets_capabilities() -> None:
    client = greeted()
    exchange(client, "CAPA", CAPA_BODY)
    assert "STLS" in client.valid_commands()
    assert "STLS" in client.next_hint()
    client.send_line("STLS")
    client.send_line("USER pipelined-in-plaintext")
    # An attacker's injected answer right behind the +OK must not survive TLS.
    client.receive_data(b"+OK Begin TLS negotiation now.\r\n+OK injected\r\n")
    (answer,) = drain(client)
    assert isinstance(answer, Response) and answer.command == "STLS"
    assert client.wants_tls_upgrade
    assert client.valid_commands() == []
    client.receive_data(b"+OK injected later\r\n")
    assert drain(client) == []
    client.tls_started()
    assert not client.wants_tls_upgrade and client.tls
    assert client.capabilities == {} and not client.capabilities_known
    assert "STLS" not in client.valid_commands()
    assert not client.awaiting_reply
    answer = exchange(client, "CAPA", b"+OK\r\nUSER\r\nSASL PLAIN\r\n.\r\n")
    assert isinstance(answer, Response) and answer.command == "CAPA"
    assert client.sasl_mechanisms == ["PLAIN"]


def test_implicit_tls_keeps_waiting_for_the_greeting() -> None:
    client = POP3Connection()
    client.tls_started()  # pop3s: TLS before the first byte
    assert client.awaiting_reply
    client.receive_data(GREETING)
    drain(client)
    assert client.state is POP3State.AUTHORIZATION
    assert "STLS" not in client.valid_commands()


# -- server role -------------------------------------------------------------------------


def test_server_parses_commands() -> None:
    server = POP3Connection(role=Role.SERVER)
    server.receive_data(b"user alice\r\nLIST  2\r\n\r\nRETR 1\n")
    commands = drain_commands(server)
    assert commands == [
        Command("USER", ("alice",), b"user alice\r\n"),
        Command("LIST", ("2",), b"LIST  2\r\n"),
        Command("", (), b"\r\n"),
        Command("RETR", ("1",), b"RETR 1\n"),
    ]


def test_server_reports_lines_over_255_octets_and_carries_on() -> None:
    server = POP3Connection(role=Role.SERVER)
    ok_line = b"USER " + b"a" * 248 + b"\r\n"  # exactly 255 octets
    long_line = b"USER " + b"a" * 249 + b"\r\n"
    huge_line = b"X" * (100 * 1024) + b"\r\n"
    server.receive_data(ok_line + long_line + huge_line + b"NOOP\r\n")
    first, second, third, fourth = drain_commands(server)
    assert isinstance(first, Command) and first.verb == "USER" and not first.too_long
    assert second == Command("", (), long_line, too_long=True)
    assert isinstance(third, Command) and third.too_long and len(third.raw) == MAX_LINE
    assert fourth == Command("NOOP", (), b"NOOP\r\n")


def test_server_formats_answers() -> None:
    server = POP3Connection(role=Role.SERVER)
    assert server.send(Response(ok=True, text="ready <1.2@host>")) == (
        b"+OK ready <1.2@host>\r\n"
    )
    assert server.state is POP3State.AUTHORIZATION
    assert server.send(Response(ok=False, text="locked", code="IN-USE")) == (
        b"-ERR [IN-USE] locked\r\n"
    )
    assert server.send(Response(ok=False, code="SYS/TEMP")) == b"-ERR [SYS/TEMP]\r\n"
    assert server.send(Response(ok=True)) == b"+OK\r\n"
    assert server.send(Response(ok=True, lines=())) == b"+OK\r\n.\r\n"
    body = (b".", b"..x", b"", b"a.b", b".\r")
    assert server.send(Response(ok=True, text="5 octets", lines=body)) == (
        b"+OK 5 octets\r\n..\r\n...x\r\n\r\na.b\r\n..\r\r\n.\r\n"
    )
    assert server.send(Continuation("VXNlcm5hbWU6")) == b"+ VXNlcm5hbWU6\r\n"


@pytest.mark.parametrize(
    "bad",
    [
        Response(ok=False, text="no", lines=(b"x",)),
        Response(ok=True, text="a\r\nb"),
        Response(ok=True, lines=(b"a\nb",)),
        Response(ok=False, code="TWO WORDS"),
        Response(ok=False, code="BR]ACKET"),
        Continuation("a\nb"),
    ],
)
def test_server_refuses_answers_that_would_break_framing(bad: Response | Continuation) -> None:
    server = POP3Connection(role=Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.send(bad)


def test_server_states_are_moved_by_the_server() -> None:
    server = POP3Connection(role=Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.start_transaction()
    server.send(Response(ok=True, text="ready"))
    with pytest.raises(LocalProtocolError):
        server.start_update()
    server.start_transaction()
    assert server.state is POP3State.TRANSACTION and server.authenticated
    server.start_update()
    assert server.state is POP3State.UPDATE
    with pytest.raises(LocalProtocolError):
        server.send_line("NOOP")
    with pytest.raises(LocalProtocolError):
        server.next_event()

    refusing = POP3Connection(role=Role.SERVER)
    refusing.send(Response(ok=False, text="go away"))
    assert refusing.state is POP3State.CLOSED
    with pytest.raises(LocalProtocolError):
        refusing.send(Response(ok=True))


def test_server_sasl_response_lines_are_not_commands() -> None:
    server = POP3Connection(role=Role.SERVER)
    server.send(Response(ok=True, text="ready"))
    server.receive_data(b"AUTH PLAIN\r\nAGFsaWNlAHdvbmRlcmxhbmQ=\r\nSTAT\r\n")
    auth = server.next_command()
    assert auth == Command("AUTH", ("PLAIN",), b"AUTH PLAIN\r\n")
    server.send(Continuation())
    sasl = server.next_command()
    assert sasl == Command(
        AUTH_RESPONSE, ("AGFsaWNlAHdvbmRlcmxhbmQ=",), b"AGFsaWNlAHdvbmRlcmxhbmQ=\r\n"
    )
    server.send(Response(ok=True, text="Logged in."))
    stat = server.next_command()
    assert isinstance(stat, Command) and stat.verb == "STAT"


def test_server_stls_pauses_and_discards_plaintext_pipelined_after_it() -> None:
    server = POP3Connection(role=Role.SERVER)
    server.send(Response(ok=True, text="ready"))
    server.receive_data(b"CAPA\r\nSTLS\r\nUSER injected\r\n")
    _capa, stls = drain_commands(server)
    assert isinstance(stls, Command) and stls.verb == "STLS"
    assert server.next_command() is NEED_DATA  # paused until STLS is answered
    server.send(Response(ok=True, lines=(b"STLS",)))  # answers CAPA: no upgrade yet
    assert not server.wants_tls_upgrade
    assert server.next_command() is NEED_DATA
    server.send(Response(ok=True, text="Begin TLS"))
    assert server.wants_tls_upgrade
    server.receive_data(b"PASS injected\r\n")
    server.tls_started()
    assert server.tls and drain_commands(server) == []
    server.receive_data(b"USER alice\r\n")
    assert drain_commands(server) == [Command("USER", ("alice",), b"USER alice\r\n")]


def test_server_refused_stls_resumes_parsing() -> None:
    server = POP3Connection(role=Role.SERVER)
    server.send(Response(ok=True))
    server.receive_data(b"STLS\r\nUSER alice\r\n")
    assert [c.verb for c in drain_commands(server) if isinstance(c, Command)] == ["STLS"]
    server.send(Response(ok=False, text="TLS not available"))
    assert drain_commands(server) == [Command("USER", ("alice",), b"USER alice\r\n")]


def test_server_drops_an_unterminated_last_line() -> None:
    server = POP3Connection(role=Role.SERVER)
    server.receive_data(b"NOOP\r\nDELE 1")
    server.receive_data(b"")
    assert drain_commands(server) == [Command("NOOP", (), b"NOOP\r\n"), CONNECTION_CLOSED]
    assert server.state is POP3State.CLOSED


# -- client and server cores together ---------------------------------------------------------


def test_client_and_server_cores_talk_to_each_other() -> None:
    client = POP3Connection()
    server = POP3Connection(role=Role.SERVER)
    message = (b"Subject: hi", b"", b".hidden", b"..", b".", b"\xff\xfe", b"end")

    def turn(line: str) -> Response | Continuation:
        server.receive_data(client.send_line(line))
        command = server.next_command()
        assert isinstance(command, Command)
        if command.verb == "RETR":
            data = server.send(Response(ok=True, text=f"{len(message)} lines", lines=message))
        elif command.verb == "LIST":
            data = server.send(Response(ok=True, lines=(b"1 40",)))
        elif command.verb == "PASS":
            server.start_transaction()
            data = server.send(Response(ok=True, text="Logged in."))
        elif command.verb == "DELE":
            data = server.send(Response(ok=False, code="SYS/PERM", text="read-only"))
        else:
            data = server.send(Response(ok=True))
        client.receive_data(data)
        (answer,) = drain(client)
        assert not isinstance(answer, NoEvent)
        return answer

    client.receive_data(server.send(Response(ok=True, text="hello <42.7@example.org>")))
    drain(client)
    assert client.apop_timestamp == "<42.7@example.org>"
    turn("USER alice")
    turn("PASS wonderland")
    assert client.state is server.state is POP3State.TRANSACTION
    listing = turn("LIST")
    assert isinstance(listing, Response) and listing.lines == (b"1 40",)
    assert client.message_numbers == [1]
    retr = turn("RETR 1")
    assert isinstance(retr, Response)
    assert retr.lines == message and retr.text == "7 lines" and not retr.truncated
    dele = turn("DELE 1")
    assert isinstance(dele, Response) and (dele.ok, dele.code, dele.text) == (
        False, "SYS/PERM", "read-only",
    )


body_lines = st.lists(
    st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=20
)


@settings(max_examples=200, deadline=None)
@given(
    ok=st.booleans(),
    text=st.text(max_size=30).map(lambda t: t.replace("\r", "").replace("\n", "").strip()),
    code=st.none() | st.sampled_from(["IN-USE", "SYS/TEMP", "AUTH", "LOGIN-DELAY"]),
    lines=body_lines,
)
def test_round_trip_of_any_answer(
    ok: bool, text: str, code: str | None, lines: list[bytes]
) -> None:
    sent = Response(ok=ok, text=text, code=code, lines=tuple(lines) if ok else None)
    if text.startswith("[") and code is None:
        return  # would read back as a response code: ambiguous by design of RFC 2449
    client = logged_in()
    client.send_line("RETR 1")
    wire = format_response(sent)
    client.receive_data(wire)
    (received,) = drain(client)
    assert isinstance(received, Response)
    assert (received.ok, received.text, received.code, received.lines) == (
        sent.ok, text, code, sent.lines,
    )
    assert received.raw == wire


# -- fuzzing: only the two protocol errors may escape ---------------------------------------


def feed_and_drain_client(client: POP3Connection, chunks: list[bytes]) -> None:
    for chunk in [*chunks, b""]:
        client.receive_data(chunk)
        for _ in range(100_000):
            try:
                event = client.next_event()
            except RemoteProtocolError:
                continue  # the bad line was consumed: the stream goes on
            if event is NEED_DATA or event is CONNECTION_CLOSED:
                break
            assert isinstance(event, Response | Continuation)
        else:
            pytest.fail("next_event() never asked for more data")
    assert client.next_event() is CONNECTION_CLOSED
    assert client.state is POP3State.CLOSED


interesting_bytes = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [b"+OK", b"-ERR", b"+ ", b"\r\n", b"\n", b".\r\n", b"..", b"[", b"]", b"\xff"]
        ),
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(data=interesting_bytes, cut=st.integers(min_value=1, max_value=50))
def test_client_survives_arbitrary_bytes_after_retr(data: bytes, cut: int) -> None:
    client = logged_in()
    client.send_line("RETR 1")
    client.send_line("AUTH PLAIN")
    feed_and_drain_client(client, [data[i : i + cut] for i in range(0, len(data), cut)])


@settings(max_examples=200, deadline=None)
@given(data=interesting_bytes)
def test_client_survives_arbitrary_greeting(data: bytes) -> None:
    feed_and_drain_client(POP3Connection(max_body=64), [data])


@settings(max_examples=300, deadline=None)
@given(data=interesting_bytes, cut=st.integers(min_value=1, max_value=50))
def test_server_survives_arbitrary_bytes(data: bytes, cut: int) -> None:
    server = POP3Connection(role=Role.SERVER)
    server.send(Response(ok=True))
    for chunk in [*[data[i : i + cut] for i in range(0, len(data), cut)], b""]:
        server.receive_data(chunk)
        while True:
            try:
                event = server.next_command()
            except RemoteProtocolError:
                continue
            if event is NEED_DATA or event is CONNECTION_CLOSED:
                break
            assert isinstance(event, Command)
            assert event.verb == event.verb.upper()
            server.send(Response(ok=False, text="no"))  # also unpauses after STLS/QUIT
