"""Tests of the IMAP core: client and server roles, literals, tags, state, redaction."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.protocols.common import (
    CONNECTION_CLOSED,
    NEED_DATA,
    ClientCore,
    LocalProtocolError,
    RemoteProtocolError,
    ReplyClass,
    Role,
)
from mailtalk.protocols.imap import (
    FETCH_ITEMS,
    TRANSITIONS,
    VALID_COMMANDS,
    Continuation,
    IMAPConnection,
    IMAPState,
    split_command,
)
from mailtalk.protocols.imap_events import (
    Command,
    ContinuationResponse,
    Event,
    LiteralRequested,
    Tagged,
    Untagged,
)

CAPS = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS AUTH=PLAIN AUTH=LOGIN"
)
GREETING = f"* OK [CAPABILITY {CAPS}] Dovecot ready.\r\n".encode()

MESSAGE = (
    b"From: alice@example.com\r\n"
    b"To: bob@example.com\r\n"
    b"Subject: parens\r\n"
    b"\r\n"
    b"A line with only a paren follows:\r\n"
    b")\r\n"
    b"a003 OK this is not a completion, it is body text\r\n"
    b"* 9 EXISTS neither is this\r\n"
)
HEADER = b"Subject: two\r\n\r\n"
BODY_TEXT = b"second body {5}\r\n.\r\n"

DOVECOT = (
    GREETING
    + b"a001 OK [CAPABILITY IMAP4rev1 SASL-IR ID ENABLE IDLE SORT UNSELECT CHILDREN NAMESPACE "
    b"UIDPLUS MOVE LITERAL+ SPECIAL-USE] Logged in\r\n"
    b'* LIST (\\HasNoChildren) "." INBOX\r\n'
    b'* LIST (\\HasNoChildren \\Sent) "." "Sent Items"\r\n'
    b'* LIST (\\HasNoChildren \\Trash) "." Trash\r\n'
    b'* LIST (\\HasNoChildren) "." "Say \\"hi\\""\r\n'
    b'* LIST (\\HasNoChildren) "." {11}\r\nHello World\r\n'
    b"a002 OK List completed (0.001 + 0.000 secs).\r\n"
    b"* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\r\n"
    b"* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)]"
    b" Flags permitted.\r\n"
    b"* 2 EXISTS\r\n"
    b"* 0 RECENT\r\n"
    b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n"
    b"* OK [UIDNEXT 3] Predicted next UID\r\n"
    b"a003 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n"
    + b"* 1 FETCH (UID 1 BODY[] {%d}\r\n" % len(MESSAGE)
    + MESSAGE
    + b")\r\n"
    b"a004 OK Fetch completed (0.001 + 0.000 secs).\r\n"
    + b"* 2 FETCH (BODY[HEADER] {%d}\r\n" % len(HEADER)
    + HEADER
    + b" BODY[TEXT] {%d}\r\n" % len(BODY_TEXT)
    + BODY_TEXT
    + b" FLAGS (\\Seen))\r\n"
    b"a005 OK Fetch completed.\r\n"
    b"* BYE Logging out\r\n"
    b"a006 OK Logout completed.\r\n"
)

COMMANDS = (
    "LOGIN alice secret",
    'LIST "" "*"',
    "SELECT INBOX",
    "FETCH 1 (UID BODY[])",
    "FETCH 2 (BODY[HEADER] BODY[TEXT] FLAGS)",
    "LOGOUT",
)


def drain(conn: IMAPConnection) -> list[Event]:
    """Every event the connection can give now, in either role."""
    events: list[Event] = []
    while True:
        event = conn.next_event() if conn.role is Role.CLIENT else conn.next_command()
        if event is NEED_DATA or event is CONNECTION_CLOSED:
            return events
        assert not isinstance(event, type(NEED_DATA))
        events.append(event)


def state(conn: IMAPConnection) -> IMAPState:
    # A function call, so that mypy does not keep a narrowed state across sends.
    return conn.state


def greeted_client(greeting: bytes = GREETING) -> IMAPConnection:
    client = IMAPConnection()
    client.receive_data(greeting)
    assert len(drain(client)) == 1
    return client


def logged_in_client() -> IMAPConnection:
    client = greeted_client()
    client.send_line("LOGIN alice secret")
    client.receive_data(b"a001 OK Logged in\r\n")
    drain(client)
    assert state(client) is IMAPState.AUTHENTICATED
    return client


def selected_client() -> IMAPConnection:
    client = logged_in_client()
    client.send_line("SELECT INBOX")
    client.receive_data(b"* 2 EXISTS\r\na002 OK [READ-WRITE] Select completed\r\n")
    drain(client)
    assert state(client) is IMAPState.SELECTED
    return client


def run_transcript(chunk_size: int | None) -> tuple[IMAPConnection, list[Event]]:
    client = IMAPConnection()
    sent = [client.send_line(command) for command in COMMANDS]
    assert sent[0] == b"a001 LOGIN alice secret\r\n"
    events: list[Event] = []
    if chunk_size is None:
        client.receive_data(DOVECOT)
        events += drain(client)
    else:
        for start in range(0, len(DOVECOT), chunk_size):
            client.receive_data(DOVECOT[start : start + chunk_size])
            events += drain(client)
    client.receive_data(b"")
    events += drain(client)
    assert client.next_event() is CONNECTION_CLOSED
    return client, events


# -- the Dovecot transcript -------------------------------------------------------------


def test_client_satisfies_the_shared_core_interface() -> None:
    core: ClientCore = IMAPConnection()
    assert core.protocol == "imap"


def test_dovecot_transcript_whole() -> None:
    client, events = run_transcript(None)
    greeting = events[0]
    assert isinstance(greeting, Untagged)
    assert greeting.kind == "OK"
    assert greeting.code is not None and greeting.code.startswith("CAPABILITY IMAP4rev1")
    assert greeting.message == "Dovecot ready."
    assert greeting.reply_class is ReplyClass.INFO and not greeting.final

    login = events[1]
    assert isinstance(login, Tagged)
    assert (login.tag, login.status, login.command) == ("a001", "OK", "LOGIN")
    assert login.text == "Logged in"
    assert login.reply_class is ReplyClass.POSITIVE and login.final

    lists = [e for e in events if isinstance(e, Untagged) and e.kind == "LIST"]
    assert len(lists) == 5
    assert lists[-1].literals == (b"Hello World",)
    assert lists[-1].text == 'LIST (\\HasNoChildren) "." {11}'
    assert client.mailboxes == ["INBOX", "Sent Items", "Trash", 'Say "hi"', "Hello World"]

    by_kind = {e.kind: e for e in events if isinstance(e, Untagged)}
    assert by_kind["EXISTS"].number == 2
    assert by_kind["RECENT"].number == 0
    assert by_kind["FLAGS"].message.startswith("(\\Answered")
    codes = [e.code for e in events if isinstance(e, Untagged) and e.kind == "OK"]
    assert "UIDVALIDITY 1700000000" in codes
    assert "UIDNEXT 3" in codes
    assert "PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)" in codes

    select = events[events.index(by_kind["EXISTS"]) + 4]
    assert isinstance(select, Tagged)
    assert (select.command, select.code) == ("SELECT", "READ-WRITE")

    fetches = [e for e in events if isinstance(e, Untagged) and e.kind == "FETCH"]
    assert len(fetches) == 2
    first, second = fetches
    assert first.number == 1
    assert first.literals == (MESSAGE,)
    assert first.text == f"1 FETCH (UID 1 BODY[] {{{len(MESSAGE)}}})"
    assert not first.truncated
    assert second.literals == (HEADER, BODY_TEXT)
    assert second.text == (
        f"2 FETCH (BODY[HEADER] {{{len(HEADER)}}} BODY[TEXT] {{{len(BODY_TEXT)}}}"
        " FLAGS (\\Seen))"
    )
    # The body text that looked like a completion did not complete anything.
    tagged = [e for e in events if isinstance(e, Tagged)]
    assert [t.tag for t in tagged] == ["a001", "a002", "a003", "a004", "a005", "a006"]
    assert [t.command for t in tagged] == [
        "LOGIN", "LIST", "SELECT", "FETCH", "FETCH", "LOGOUT",
    ]

    bye = events[-2]
    assert isinstance(bye, Untagged) and bye.kind == "BYE"
    assert bye.reply_class is ReplyClass.PERMANENT
    assert state(client) is IMAPState.LOGOUT
    assert not client.awaiting_reply
    # Every byte the server sent is in exactly one event.
    assert b"".join(e.raw for e in events if isinstance(e, Untagged | Tagged)) == DOVECOT


def test_dovecot_transcript_byte_at_a_time_gives_identical_events() -> None:
    _, whole = run_transcript(None)
    _, bytewise = run_transcript(1)
    _, odd = run_transcript(7)
    assert bytewise == whole
    assert odd == whole


def test_capabilities_and_auth_mechanisms_from_greeting_and_login_code() -> None:
    client = greeted_client()
    assert state(client) is IMAPState.NOT_AUTHENTICATED
    assert "STARTTLS" in client.capabilities
    assert "LITERAL+" in client.capabilities
    assert client.auth_mechanisms == ["PLAIN", "LOGIN"]
    client.send_line("LOGIN alice secret")
    client.receive_data(b"a001 OK [CAPABILITY IMAP4rev1 MOVE UNSELECT] Logged in\r\n")
    drain(client)
    assert client.capabilities == {"IMAP4REV1", "MOVE", "UNSELECT"}
    assert client.auth_mechanisms == []


def test_untagged_capability_response_replaces_capabilities() -> None:
    client = greeted_client(b"* OK ready\r\n")
    assert not client.capabilities_known
    client.send_line("CAPABILITY")
    client.receive_data(b"* CAPABILITY IMAP4rev1 AUTH=XOAUTH2 LOGINDISABLED\r\na001 OK done\r\n")
    events = drain(client)
    assert isinstance(events[0], Untagged) and events[0].kind == "CAPABILITY"
    assert client.capabilities == {"IMAP4REV1", "AUTH=XOAUTH2", "LOGINDISABLED"}
    assert client.auth_mechanisms == ["XOAUTH2"]


# -- tags -------------------------------------------------------------------------------


def test_generated_tags_count_up() -> None:
    client = greeted_client()
    assert client.send_line("capability") == b"a001 capability\r\n"
    assert client.send_line("NOOP") == b"a002 NOOP\r\n"
    assert client.pending == {"a001": "CAPABILITY", "a002": "NOOP"}
    assert client.awaiting_reply


def test_user_tags_are_kept_and_remembered() -> None:
    client = greeted_client()
    assert client.send_line("x1 noop") == b"x1 noop\r\n"
    assert client.send_line("t2 UID FETCH 1:* FLAGS") == b"t2 UID FETCH 1:* FLAGS\r\n"
    assert client.pending == {"x1": "NOOP", "t2": "UID FETCH"}
    client.receive_data(b"x1 OK NOOP done\r\nt2 OK UID FETCH done\r\n")
    completions = drain(client)
    assert [c.command for c in completions if isinstance(c, Tagged)] == ["NOOP", "UID FETCH"]
    assert not client.awaiting_reply


def test_unknown_command_gets_a_tag() -> None:
    client = greeted_client()
    assert client.send_line("XYZZY plugh") == b"a001 XYZZY plugh\r\n"
    assert client.pending == {"a001": "XYZZY"}


def test_uid_commands_combine_into_one_verb() -> None:
    assert split_command("uid fetch 1:* (FLAGS)") == (None, "UID FETCH", "1:* (FLAGS)")
    assert split_command("t1 UID  store 1 +FLAGS (\\Seen)") == (
        "t1", "UID STORE", "1 +FLAGS (\\Seen)"
    )
    assert split_command("NOOP NOOP") == (None, "NOOP", "NOOP")


def test_tag_still_pending_cannot_be_reused() -> None:
    client = greeted_client()
    client.send_line("t1 NOOP")
    with pytest.raises(LocalProtocolError):
        client.send_line("t1 NOOP")


def test_generated_tags_skip_pending_user_tags() -> None:
    client = greeted_client()
    client.send_line("a001 NOOP")
    assert client.send_line("NOOP") == b"a002 NOOP\r\n"


def test_line_breaks_and_empty_lines_are_refused() -> None:
    client = greeted_client()
    with pytest.raises(LocalProtocolError):
        client.send_line("NOOP\r\na999 LOGOUT")
    with pytest.raises(LocalProtocolError):
        client.send_line("   ")


def test_unknown_tag_completion_has_no_command() -> None:
    client = greeted_client()
    client.receive_data(b"zz9 BAD who are you\r\n")
    (event,) = drain(client)
    assert isinstance(event, Tagged)
    assert event.command is None and event.status == "BAD"
    assert event.reply_class is ReplyClass.PERMANENT


# -- client literals ---------------------------------------------------------------------


def test_synchronizing_literal_waits_for_continuation() -> None:
    client = logged_in_client()
    assert client.send_line("APPEND INBOX {7}") == b"a002 APPEND INBOX {7}\r\n"
    assert client.awaiting_continuation
    assert client.in_command_continuation
    with pytest.raises(LocalProtocolError):
        client.send_line("Hello")  # the server has not said + yet
    client.receive_data(b"+ Ready for literal data\r\n")
    (plus,) = drain(client)
    assert isinstance(plus, Continuation)
    assert plus.text == "Ready for literal data"
    assert plus.reply_class is ReplyClass.INTERMEDIATE and plus.final
    assert not client.awaiting_continuation
    assert client.in_command_continuation
    # "Hello" + CRLF is exactly the 7 bytes: the command goes on in the next line.
    assert client.send_line("Hello") == b"Hello\r\n"
    assert client.in_command_continuation
    assert client.literal_bytes_left == 0
    assert client.send_line("") == b"\r\n"
    assert not client.in_command_continuation
    assert client.send_line("NOOP") == b"a003 NOOP\r\n"


def test_literal_ending_inside_a_line_continues_the_command_text() -> None:
    client = logged_in_client()
    client.send_line("APPEND INBOX (\\Seen) {3}")
    client.receive_data(b"+ go\r\n")
    drain(client)
    # Three bytes of literal, then the rest of the command, with another literal.
    assert client.send_line("abc {2}") == b"abc {2}\r\n"
    assert client.awaiting_continuation
    client.receive_data(b"+ go\r\n")
    drain(client)
    assert client.send_line("xy") == b"xy\r\n"
    assert not client.in_command_continuation
    assert client.pending == {"a002": "APPEND"}


def test_multi_line_literal_counts_line_ends() -> None:
    client = logged_in_client()
    client.send_line("APPEND INBOX {19}")
    client.receive_data(b"+ Ready\r\n")
    drain(client)
    client.send_line("Subject: hi")  # 13 bytes with CRLF
    assert client.literal_bytes_left == 6
    assert "6 more bytes" in client.next_hint()
    client.send_line("")  # 2 more
    client.send_line("hi")  # 4 more: the literal is complete
    assert client.literal_bytes_left == 0
    assert client.in_command_continuation
    client.send_line("")
    assert not client.in_command_continuation


def test_literal_plus_does_not_wait() -> None:
    client = logged_in_client()
    assert client.send_line("APPEND INBOX {5+}") == b"a002 APPEND INBOX {5+}\r\n"
    assert not client.awaiting_continuation
    assert client.in_command_continuation
    assert client.send_line("abc") == b"abc\r\n"
    assert client.send_line("") == b"\r\n"
    assert not client.in_command_continuation


def test_refused_literal_ends_the_continuation() -> None:
    client = logged_in_client()
    client.send_line("APPEND INBOX {99999999}")
    client.receive_data(b"a002 NO [TOOBIG] Too big\r\n")
    (refusal,) = drain(client)
    assert isinstance(refusal, Tagged) and refusal.code == "TOOBIG"
    assert not client.awaiting_continuation
    assert not client.in_command_continuation
    assert client.send_line("NOOP") == b"a003 NOOP\r\n"


# -- AUTHENTICATE, IDLE and redaction --------------------------------------------------------


def test_authenticate_continuation_is_untagged_and_redacted() -> None:
    client = greeted_client()
    assert client.redact("AUTHENTICATE PLAIN") == "AUTHENTICATE PLAIN"
    assert client.send_line("AUTHENTICATE PLAIN") == b"a001 AUTHENTICATE PLAIN\r\n"
    assert not client.in_command_continuation
    client.receive_data(b"+ \r\n")
    (plus,) = drain(client)
    assert isinstance(plus, Continuation) and plus.text == ""
    assert client.sasl_pending and client.in_command_continuation
    secret = "AGFsaWNlAHNlY3JldA=="
    assert client.redact(secret) == "***"
    assert "cancel" in client.next_hint()
    assert client.send_line(secret) == secret.encode() + b"\r\n"
    assert not client.sasl_pending
    client.receive_data(b"a001 OK Logged in\r\n")
    drain(client)
    assert state(client) is IMAPState.AUTHENTICATED and client.authenticated


def test_authenticate_cancel_with_star() -> None:
    client = greeted_client()
    client.send_line("t1 AUTHENTICATE LOGIN")
    client.receive_data(b"+ VXNlcm5hbWU6\r\n")
    drain(client)
    assert client.redact("*") == "*"
    assert client.send_line("*") == b"*\r\n"
    client.receive_data(b"t1 BAD Authentication aborted\r\n")
    drain(client)
    assert state(client) is IMAPState.NOT_AUTHENTICATED
    assert not client.in_command_continuation


@pytest.mark.parametrize(
    ("line", "shown"),
    [
        ("LOGIN alice secret", "LOGIN alice ***"),
        ("a1 login alice secret", "a1 login alice ***"),
        ('LOGIN "alice smith" "pass word"', 'LOGIN "alice smith" ***'),
        ('LOGIN alice "with \\" quote"', "LOGIN alice ***"),
        ("LOGIN alice {6}", "LOGIN alice {6}"),
        ("AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==", "AUTHENTICATE PLAIN ***"),
        ("t9 AUTHENTICATE PLAIN =", "t9 AUTHENTICATE PLAIN ***"),
        ("SELECT INBOX", "SELECT INBOX"),
        ("LOGIN alice", "LOGIN alice"),
        # mistyped logins: refused by the server, but the password was typed
        ("LOG alice secret", "LOG alice ***"),
        ("a1 LOGN alice secret", "a1 LOGN alice ***"),
        ("AUTH PLAN AGFsaWNlAHNlY3JldA==", "AUTH PLAN ***"),
        ("PASS secret", "PASS ***"),  # POP3's, typed to IMAP
        ("LSUB \"\" *", "LSUB \"\" *"),
    ],
)
def test_redact_lines(line: str, shown: str) -> None:
    client = greeted_client()
    assert client.redact(line) == shown


def test_login_password_literal_is_secret() -> None:
    client = greeted_client()
    assert client.redact("LOGIN alice {6}") == "LOGIN alice {6}"
    client.send_line("LOGIN alice {6}")
    client.receive_data(b"+ Ready\r\n")
    drain(client)
    assert client.redact("secret") == "***"
    assert client.send_line("secret") == b"secret\r\n"
    assert not client.in_command_continuation


def test_login_user_literal_then_plain_password_is_redacted() -> None:
    client = greeted_client()
    client.send_line("LOGIN {5}")
    client.receive_data(b"+ Ready\r\n")
    drain(client)
    assert client.redact("alice secret") == "alice ***"
    client.send_line("alice {6}")
    assert client.awaiting_continuation
    client.receive_data(b"+ Ready\r\n")
    drain(client)
    assert client.redact("secret") == "***"
    client.send_line("secret")
    assert not client.in_command_continuation


def test_idle_done_is_sent_untagged() -> None:
    client = selected_client()
    client.send_line("IDLE")
    client.receive_data(b"+ idling\r\n* 3 EXISTS\r\n")
    events = drain(client)
    assert isinstance(events[0], Continuation)
    assert client.idling and client.in_command_continuation
    assert client.exists == 3
    with pytest.raises(LocalProtocolError):
        client.send_line("NOOP")
    assert client.send_line("done") == b"DONE\r\n"
    client.receive_data(b"a003 OK Idle completed\r\n")
    drain(client)
    assert not client.idling and not client.awaiting_reply


# -- state table ---------------------------------------------------------------------------


def test_state_is_data() -> None:
    assert TRANSITIONS[("SELECT", "NO")] is IMAPState.AUTHENTICATED
    assert TRANSITIONS[("LOGOUT", "OK")] is IMAPState.LOGOUT
    assert "UID EXPUNGE" in VALID_COMMANDS[IMAPState.SELECTED]


def test_failed_select_leaves_selected_state() -> None:
    client = selected_client()
    assert client.selected_mailbox == "INBOX"
    client.send_line('SELECT "No Such"')
    client.receive_data(b"a003 NO Mailbox doesn't exist: No Such\r\n")
    drain(client)
    assert state(client) is IMAPState.AUTHENTICATED
    assert client.selected_mailbox is None


def test_examine_close_unselect_and_failed_login() -> None:
    client = greeted_client()
    client.send_line("LOGIN alice wrong")
    client.receive_data(b"a001 NO [AUTHENTICATIONFAILED] Authentication failed.\r\n")
    drain(client)
    assert state(client) is IMAPState.NOT_AUTHENTICATED and not client.authenticated
    client.send_line("LOGIN alice secret")
    client.receive_data(b"a002 OK Logged in\r\n")
    drain(client)
    client.send_line('EXAMINE "Sent Items"')
    client.receive_data(b"a003 OK [READ-ONLY] Examine completed\r\n")
    drain(client)
    assert state(client) is IMAPState.SELECTED
    assert client.selected_mailbox == "Sent Items"
    client.send_line("CLOSE")
    client.receive_data(b"a004 OK Close completed\r\n")
    drain(client)
    assert state(client) is IMAPState.AUTHENTICATED
    client.send_line("SELECT INBOX")
    client.send_line("UNSELECT")
    client.receive_data(b"a005 OK selected\r\na006 OK Unselect completed\r\n")
    drain(client)
    assert state(client) is IMAPState.AUTHENTICATED


def test_preauth_greeting_and_bye_greeting() -> None:
    preauth = greeted_client(b"* PREAUTH [CAPABILITY IMAP4rev2] welcome back\r\n")
    assert state(preauth) is IMAPState.AUTHENTICATED and preauth.authenticated
    refused = greeted_client(b"* BYE Too many connections\r\n")
    assert state(refused) is IMAPState.LOGOUT
    assert refused.valid_commands() == []


def test_unsolicited_bye_means_logout() -> None:
    client = selected_client()
    client.receive_data(b"* BYE Server shutting down\r\n")
    drain(client)
    assert state(client) is IMAPState.LOGOUT


def test_not_an_imap_greeting() -> None:
    client = IMAPConnection()
    client.receive_data(b"220 mail.example.com ESMTP Postfix\r\n")
    with pytest.raises(RemoteProtocolError):
        client.next_event()
    assert state(client) is IMAPState.GREETING


def test_close_mid_literal_raises_then_reports_closed() -> None:
    client = greeted_client()
    client.receive_data(b"* 1 FETCH (BODY[] {100}\r\nshort")
    assert client.next_event() is NEED_DATA
    client.receive_data(b"")
    with pytest.raises(RemoteProtocolError):
        client.next_event()
    assert client.next_event() is CONNECTION_CLOSED
    assert state(client) is IMAPState.LOGOUT


def test_starttls_upgrade_forgets_capabilities_and_buffered_bytes() -> None:
    client = greeted_client()
    assert "STARTTLS" in client.valid_commands()
    client.send_line("STARTTLS")
    # A man in the middle appends a plaintext response after the OK: it must be dropped.
    client.receive_data(b"a001 OK Begin TLS negotiation now.\r\n* BYE injected\r\n")
    events = drain(client)
    assert len(events) == 1
    assert client.wants_tls_upgrade
    client.tls_started()
    assert not client.wants_tls_upgrade and client.tls
    assert client.capabilities == set() and not client.capabilities_known
    assert "STARTTLS" not in client.valid_commands()
    assert state(client) is IMAPState.NOT_AUTHENTICATED


# -- valid commands and hints -------------------------------------------------------------------


def test_valid_commands_per_state_before_capabilities_are_known() -> None:
    client = greeted_client(b"* OK ready\r\n")
    assert client.valid_commands() == [
        "CAPABILITY", "NOOP", "LOGOUT", "ID", "STARTTLS", "AUTHENTICATE", "LOGIN",
    ]
    assert IMAPConnection().valid_commands() == []


def test_valid_commands_narrowed_by_capability() -> None:
    client = greeted_client(b"* OK [CAPABILITY IMAP4rev1 LOGINDISABLED STARTTLS] hi\r\n")
    assert "LOGIN" not in client.valid_commands()
    assert "STARTTLS" in client.valid_commands()
    assert client.next_hint() == "STARTTLS (LOGIN is disabled until TLS)"

    client = greeted_client(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n")
    assert "STARTTLS" not in client.valid_commands()
    client.send_line("LOGIN a b")
    client.receive_data(b"a001 OK [CAPABILITY IMAP4rev1 IDLE UIDPLUS] in\r\n")
    drain(client)
    authenticated = client.valid_commands()
    assert "SELECT" in authenticated and "IDLE" in authenticated
    assert "NAMESPACE" not in authenticated and "ENABLE" not in authenticated
    assert "LOGIN" not in authenticated and "FETCH" not in authenticated
    client.send_line("SELECT INBOX")
    client.receive_data(b"a002 OK selected\r\n")
    drain(client)
    selected = client.valid_commands()
    assert {"FETCH", "UID FETCH", "UID EXPUNGE", "CLOSE", "SEARCH"} <= set(selected)
    assert "MOVE" not in selected and "UID MOVE" not in selected and "UNSELECT" not in selected


def test_imap4rev2_implies_move_and_unselect() -> None:
    client = greeted_client(b"* PREAUTH [CAPABILITY IMAP4rev2] hi\r\n")
    client.send_line("SELECT INBOX")
    client.receive_data(b"a001 OK selected\r\n")
    drain(client)
    assert {"MOVE", "UID MOVE", "UNSELECT", "NAMESPACE"} <= set(client.valid_commands())
    assert "ID" not in client.valid_commands()


def test_hints_follow_the_state() -> None:
    client = IMAPConnection()
    assert "greeting" in client.next_hint()
    client.receive_data(b"* OK hi\r\n")
    drain(client)
    assert client.next_hint().startswith("LOGIN user password")
    client.send_line("LOGIN a b")
    client.receive_data(b"a001 OK in\r\n")
    drain(client)
    assert client.next_hint() == 'LIST "" "*", then SELECT INBOX'
    client.send_line("SELECT INBOX")
    client.receive_data(b"a002 OK in\r\n")
    drain(client)
    assert client.next_hint().startswith("FETCH 1:*")
    assert client.state_name == "selected"


def test_fetch_items_for_completion() -> None:
    for item in ("FLAGS", "BODY.PEEK[]", "RFC822.SIZE", "ENVELOPE", "BODYSTRUCTURE", "FULL"):
        assert item in FETCH_ITEMS
    assert any(item.startswith("BODY[HEADER.FIELDS") for item in FETCH_ITEMS)


# -- response parsing details ---------------------------------------------------------------------


def test_literal8_and_literal_plus_from_server() -> None:
    client = selected_client()
    client.receive_data(b"* 1 FETCH (BINARY[] ~{3}\r\n\x00\x01\x02 RFC822 {2+}\r\nab)\r\n")
    (event,) = drain(client)
    assert isinstance(event, Untagged)
    assert event.literals == (b"\x00\x01\x02", b"ab")
    assert event.text == "1 FETCH (BINARY[] ~{3} RFC822 {2+})"


def test_oversized_literal_is_consumed_not_stored() -> None:
    client = IMAPConnection(max_literal=1024)
    client.receive_data(b"* OK hi\r\n")
    drain(client)
    big = b"x" * 100_000
    client.receive_data(b"* 1 FETCH (BODY[] {100000}\r\n")
    assert client.next_event() is NEED_DATA
    for start in range(0, len(big), 4096):
        client.receive_data(big[start : start + 4096])
        assert len(client._buffer) <= 4096  # the literal's bytes are dropped as they come
        drain(client)
    client.receive_data(b" UID 7)\r\n* 2 EXISTS\r\n")
    events = drain(client)
    fetch, exists = events
    assert isinstance(fetch, Untagged)
    assert fetch.truncated
    assert fetch.literals == (b"",)
    assert fetch.text == "1 FETCH (BODY[] {100000} UID 7)"
    assert isinstance(exists, Untagged) and exists.number == 2


def test_oversized_literal_in_one_chunk() -> None:
    client = IMAPConnection(max_literal=10)
    client.receive_data(b"* OK hi\r\n* 1 FETCH (BODY[] {20}\r\n" + b"y" * 20 + b")\r\n")
    events = drain(client)
    assert isinstance(events[1], Untagged) and events[1].truncated
    small = IMAPConnection(max_literal=10)
    small.receive_data(b"* OK hi\r\n* 1 FETCH (BODY[] {10}\r\n" + b"y" * 10 + b")\r\n")
    kept = drain(small)[1]
    assert isinstance(kept, Untagged) and kept.literals == (b"y" * 10,) and not kept.truncated


def test_70_kib_line_is_cut() -> None:
    client = greeted_client()
    client.receive_data(b"* SEARCH " + b"1 " * 35 * 1024 + b"\r\n* 1 EXISTS\r\n")
    search, exists = drain(client)
    assert isinstance(search, Untagged) and search.kind == "SEARCH"
    assert search.truncated
    assert len(search.raw) <= 64 * 1024
    assert isinstance(exists, Untagged) and exists.number == 1 and not exists.truncated


def test_non_utf8_bytes_do_not_crash() -> None:
    client = greeted_client()
    client.receive_data(b'* LIST () "/" "Entw\xfcrfe"\r\n* OK \xff\xfe caf\xc3\xa9\r\n')
    listing, ok = drain(client)
    assert isinstance(listing, Untagged) and "\\xfc" in listing.text
    assert client.mailboxes == ["Entw\\xfcrfe"]
    assert isinstance(ok, Untagged) and ok.message.endswith("café")


def test_response_codes_and_untagged_no() -> None:
    client = greeted_client()
    client.receive_data(b"* NO [ALERT] Disk almost full\r\n* BAD garbage\r\n")
    no, bad = drain(client)
    assert isinstance(no, Untagged) and no.code == "ALERT" and no.message == "Disk almost full"
    assert no.reply_class is ReplyClass.PERMANENT
    assert isinstance(bad, Untagged) and bad.code is None


def test_unparseable_server_lines_raise_remote_error() -> None:
    junks = (
        b"\r\n",
        b"*\r\n",
        b"a1 MAYBE fine\r\n",
        b"hello\r\n",
        b"* 1 FETCH {99999999999999999999999}\r\n",
    )
    for junk in junks:
        client = greeted_client()
        client.receive_data(junk + b"* 1 EXISTS\r\n")
        with pytest.raises(RemoteProtocolError):
            client.next_event()
        # The bad line is consumed: the conversation can go on.
        event = client.next_event()
        assert isinstance(event, Untagged) and event.kind == "EXISTS"


def test_data_after_close_is_misuse() -> None:
    client = greeted_client()
    client.receive_data(b"")
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"* OK late\r\n")


def test_roles_are_not_interchangeable() -> None:
    with pytest.raises(LocalProtocolError):
        IMAPConnection(role=Role.SERVER).send_line("NOOP")
    with pytest.raises(LocalProtocolError):
        IMAPConnection().send(Tagged("a1", "OK", None, "done"))


# -- server role ---------------------------------------------------------------------------------


def test_server_parses_commands_and_literals() -> None:
    server = IMAPConnection(role=Role.SERVER)
    server.receive_data(b"a1 uid fetch 1:* (FLAGS)\r\nb2 APPEND INBOX {5}\r\n")
    fetch = server.next_command()
    assert fetch == Command("a1", "UID FETCH", "1:* (FLAGS)", (), b"a1 uid fetch 1:* (FLAGS)\r\n")
    request = server.next_command()
    assert request == LiteralRequested(tag="b2", size=5)
    assert server.needs_continuation
    assert server.next_command() is NEED_DATA
    assert server.send(Continuation("Ready")) == b"+ Ready\r\n"
    assert not server.needs_continuation
    server.receive_data(b"hello\r\n")
    append = server.next_command()
    assert isinstance(append, Command)
    assert (append.tag, append.verb, append.args) == ("b2", "APPEND", "INBOX {5}")
    assert append.literals == (b"hello",)


def test_server_literal_plus_does_not_ask_for_continuation() -> None:
    server = IMAPConnection(role=Role.SERVER)
    server.receive_data(b"c3 LOGIN {5+}\r\nalice {6+}\r\nsecret\r\n")
    command = server.next_command()
    assert isinstance(command, Command)
    assert command.args == "{5+} {6+}"
    assert command.literals == (b"alice", b"secret")
    assert not server.needs_continuation


def test_server_rejects_a_literal() -> None:
    server = IMAPConnection(role=Role.SERVER)
    server.receive_data(b"a1 APPEND INBOX {999999}\r\n")
    assert isinstance(server.next_command(), LiteralRequested)
    assert server.send(Tagged("a1", "NO", "TOOBIG", "too big")) == b"a1 NO [TOOBIG] too big\r\n"
    server.reject_literal()
    server.receive_data(b"a2 NOOP\r\n")
    noop = server.next_command()
    assert isinstance(noop, Command) and noop.verb == "NOOP"


def test_server_formats_responses_and_tracks_state() -> None:
    server = IMAPConnection(role=Role.SERVER)
    assert server.send(Untagged("OK [CAPABILITY IMAP4rev1] hi")) == (
        b"* OK [CAPABILITY IMAP4rev1] hi\r\n"
    )
    assert state(server) is IMAPState.NOT_AUTHENTICATED
    server.receive_data(b"a1 LOGIN alice secret\r\n")
    assert isinstance(server.next_command(), Command)
    server.send(Tagged("a1", "OK", None, "Logged in"))
    assert state(server) is IMAPState.AUTHENTICATED
    assert server.send(Untagged("1 FETCH (BODY[] {3})", (b"a\r\n",))) == (
        b"* 1 FETCH (BODY[] {3}\r\na\r\n)\r\n"
    )
    with pytest.raises(LocalProtocolError):
        server.send(Untagged("1 FETCH (BODY[])", (b"abc",)))
    with pytest.raises(LocalProtocolError):
        server.send(Tagged("a1", "MAYBE", None, "x"))
    with pytest.raises(LocalProtocolError):
        server.send(Untagged("OK hi\r\n* BYE injected"))


def test_server_sasl_exchange() -> None:
    server = IMAPConnection(role=Role.SERVER)
    server.send(Untagged("OK hi"))
    server.receive_data(b"a1 AUTHENTICATE PLAIN\r\n")
    assert isinstance(server.next_command(), Command)
    # RFC 3501 9: "+" SP, even with nothing after it.
    assert server.send(Continuation("")) == b"+ \r\n"
    server.receive_data(b"AGFsaWNlAHNlY3JldA==\r\n")
    response = server.next_command()
    assert response == ContinuationResponse("AGFsaWNlAHNlY3JldA==", b"AGFsaWNlAHNlY3JldA==\r\n")
    server.send(Tagged("a1", "OK", None, "Logged in"))
    assert state(server) is IMAPState.AUTHENTICATED


@pytest.mark.parametrize(
    "line", [b"\r\n", b"a1\r\n", b"* NOOP\r\n", b"+ NOOP\r\n", b"a1 N\xffOP\r\n"]
)
def test_server_refuses_unparseable_commands(line: bytes) -> None:
    server = IMAPConnection(role=Role.SERVER)
    server.receive_data(line + b"a2 NOOP\r\n")
    with pytest.raises(RemoteProtocolError):
        server.next_command()
    noop = server.next_command()
    assert isinstance(noop, Command) and noop.tag == "a2"


def test_client_paired_with_server() -> None:
    client = IMAPConnection()
    server = IMAPConnection(role=Role.SERVER)

    def to_client(*responses: Untagged | Tagged | Continuation) -> list[Event]:
        for response in responses:
            client.receive_data(server.send(response))
        return drain(client)

    def to_server(line: str) -> list[Event]:
        server.receive_data(client.send_line(line))
        return drain(server)

    to_client(Untagged("OK [CAPABILITY IMAP4rev1 LITERAL+ MOVE] ready"))
    assert state(client) is state(server) is IMAPState.NOT_AUTHENTICATED
    assert client.capabilities == {"IMAP4REV1", "LITERAL+", "MOVE"}

    (request,) = to_server("LOGIN alice {6}")
    assert request == LiteralRequested(tag="a001", size=6)
    (plus,) = to_client(Continuation("Ready"))
    assert isinstance(plus, Continuation)
    (login,) = to_server("secret")
    assert isinstance(login, Command)
    assert (login.tag, login.verb, login.args, login.literals) == (
        "a001", "LOGIN", "alice {6}", (b"secret",)
    )
    to_client(Tagged("a001", "OK", None, "Logged in"))
    assert state(client) is state(server) is IMAPState.AUTHENTICATED

    assert to_server("APPEND INBOX {8+}") == []
    # Exactly 8 bytes of literal: the CRLF after them ends the command on both sides.
    (append,) = to_server("Hi there")
    assert not client.in_command_continuation
    assert isinstance(append, Command)
    assert append.literals == (b"Hi there",)


def test_client_paired_with_server_fetch_round_trip() -> None:
    client = greeted_client(b"* PREAUTH hi\r\n")
    server = IMAPConnection(role=Role.SERVER)
    server.send(Untagged("PREAUTH hi"))
    server.receive_data(client.send_line("t7 SELECT INBOX"))
    select = server.next_command()
    assert isinstance(select, Command) and select.tag == "t7"
    client.receive_data(server.send(Untagged("1 EXISTS")))
    client.receive_data(server.send(Tagged("t7", "OK", "READ-WRITE", "done")))
    drain(client)
    assert state(client) is state(server) is IMAPState.SELECTED
    server.receive_data(client.send_line("FETCH 1 BODY[]"))
    assert isinstance(server.next_command(), Command)
    client.receive_data(server.send(Untagged(f"1 FETCH (BODY[] {{{len(MESSAGE)}}})", (MESSAGE,))))
    client.receive_data(server.send(Tagged("a001", "OK", None, "Fetch completed")))
    fetch, done = drain(client)
    assert isinstance(fetch, Untagged) and fetch.literals == (MESSAGE,)
    assert isinstance(done, Tagged) and done.command == "FETCH"


# -- robustness ------------------------------------------------------------------------------------


def _drain_or_remote_error(conn: IMAPConnection) -> None:
    for _ in range(10_000):
        try:
            event = conn.next_event() if conn.role is Role.CLIENT else conn.next_command()
        except RemoteProtocolError:
            continue
        if event is NEED_DATA or event is CONNECTION_CLOSED:
            return
    raise AssertionError("next_event() never ran out of events")


imap_ish = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [b"\r\n", b"{3}\r\n", b"{0}\r\n", b"~{2}\r\n", b"{5+}\r\n", b"* ", b"+ ", b"a1 OK ",
             b"a001 ", b"LOGIN ", b"* 1 FETCH (", b"[CAPABILITY X]", b"\xff\xfe", b"\"", b")"]
        ),
    ),
    max_size=30,
).map(b"".join)


@settings(max_examples=int(os.environ.get("IMAP_FUZZ_EXAMPLES", "300")), deadline=None)
@given(data=imap_ish, chunk=st.integers(min_value=1, max_value=17), greet=st.booleans())
def test_arbitrary_server_bytes_parse_or_raise_remote_error(
    data: bytes, chunk: int, greet: bool
) -> None:
    client = IMAPConnection(max_literal=4)
    client.send_line("NOOP")
    client.send_line("APPEND INBOX {3+}")
    if greet:
        data = b"* OK hi\r\n" + data
    for start in range(0, len(data), chunk):
        client.receive_data(data[start : start + chunk])
        _drain_or_remote_error(client)
    client.receive_data(b"")
    _drain_or_remote_error(client)
    assert client.next_event() is CONNECTION_CLOSED


@settings(max_examples=int(os.environ.get("IMAP_FUZZ_EXAMPLES", "300")), deadline=None)
@given(data=imap_ish, chunk=st.integers(min_value=1, max_value=17))
def test_arbitrary_client_bytes_parse_or_raise_remote_error(data: bytes, chunk: int) -> None:
    server = IMAPConnection(role=Role.SERVER, max_literal=4)
    server.send(Untagged("OK hi"))
    for start in range(0, len(data), chunk):
        server.receive_data(data[start : start + chunk])
        _drain_or_remote_error(server)
    server.receive_data(b"")
    _drain_or_remote_error(server)
    assert server.next_command() is CONNECTION_CLOSED


@settings(max_examples=100, deadline=None)
@given(
    literal=st.binary(max_size=200),
    split=st.integers(min_value=1, max_value=50),
)
def test_any_literal_round_trips_in_any_chunking(literal: bytes, split: int) -> None:
    server = IMAPConnection(role=Role.SERVER)
    wire = server.send(Untagged(f"1 FETCH (BODY[] {{{len(literal)}}})", (literal,)))
    client = greeted_client(b"* PREAUTH hi\r\n")
    events: list[Event] = []
    for start in range(0, len(wire), split):
        client.receive_data(wire[start : start + split])
        events += drain(client)
    (fetch,) = events
    assert isinstance(fetch, Untagged)
    assert fetch.literals == (literal,)
    assert fetch.raw == wire
