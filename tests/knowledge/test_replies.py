"""Finding and taking apart replies for ``mailtalk explain`` (knowledge.replies)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mailtalk.knowledge.replies import (
    find_embedded,
    looks_like_reply,
    parse,
    split_replies,
)


@pytest.mark.parametrize(
    ("text", "protocol", "code", "enhanced", "response", "rest"),
    [
        ("550", "smtp", "550", None, None, ""),
        ("5.7.1", "smtp", None, "5.7.1", None, ""),
        ("4.2.2", "smtp", None, "4.2.2", None, ""),
        ("554 5.7.1 <bob@example.net>: Relay access denied", "smtp", "554", "5.7.1", None,
         "<bob@example.net>: Relay access denied"),
        ("503 Need MAIL before RCPT", "smtp", "503", None, None, "Need MAIL before RCPT"),
        ("250 2.0.0 Ok: queued as 4F2", "smtp", "250", "2.0.0", None, "Ok: queued as 4F2"),
        ("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", "smtp", "553",
         "5.7.1", None, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)"),
        ("-ERR [IN-USE] lock busy! Is another session active?", "pop3", "-ERR", None, "IN-USE",
         "lock busy! Is another session active?"),
        ("+OK Dovecot ready.", "pop3", "+OK", None, None, "Dovecot ready."),
        ("-ERR [SYS/TEMP] Unable to copy mail spool file, quota exceeded (122)", "pop3", "-ERR",
         None, "SYS/TEMP", "Unable to copy mail spool file, quota exceeded (122)"),
        ("a001 NO [AUTHENTICATIONFAILED] Authentication failed.", "imap", "NO", None,
         "AUTHENTICATIONFAILED", "Authentication failed."),
        ("* OK [UIDNEXT 4] Predicted next UID", "imap", "OK", None, "UIDNEXT",
         "Predicted next UID"),
        ("* BYE Server shutting down", "imap", "BYE", None, None, "Server shutting down"),
        ("NO [OVERQUOTA] Quota exceeded", "imap", "NO", None, "OVERQUOTA", "Quota exceeded"),
    ],
)
def test_parse(text: str, protocol: str, code: str | None, enhanced: str | None,
               response: str | None, rest: str) -> None:
    parsed = parse(text)
    assert (parsed.protocol, parsed.code, parsed.enhanced_code, parsed.response_code, parsed.text) \
        == (protocol, code, enhanced, response, rest)


def test_multi_line_smtp_reply_joins_the_texts_and_keeps_the_first_enhanced_code() -> None:
    parsed = parse(
        "550-5.7.1 [192.0.2.1] The IP you're using to send mail is not authorized\n"
        "550-5.7.1 to send email directly to our servers.\n"
        "550 5.7.1 Please use the SMTP relay at your service provider. gsmtp"
    )
    assert parsed.code == "550" and parsed.enhanced_code == "5.7.1"
    assert parsed.text.endswith("at your service provider. gsmtp")
    assert "5.7.1" not in parsed.text


def test_plain_words_are_not_taken_for_imap() -> None:
    # "No such user here" starts with NO; without a bracket or --protocol imap it is text
    parsed = parse("No such user here")
    assert parsed.protocol is None and parsed.code is None
    assert parse("No such user here", "imap").code == "NO"
    # an untagged-looking line needs a tag with a digit or *
    assert parse("Relay NO way").protocol is None


def test_a_response_code_alone_needs_the_protocol() -> None:
    assert parse("IN-USE", "pop3").response_code == "IN-USE"
    assert parse("[OVERQUOTA]", "imap").response_code == "OVERQUOTA"
    assert parse("[OVERQUOTA]").response_code == "OVERQUOTA"


def test_imap_continuation_only_with_the_protocol() -> None:
    assert parse("+ Ready for literal data", "imap").code == "+"
    assert parse("+ idling", None).code is None


def test_postfix_log_line_gives_the_reply_and_the_command() -> None:
    line = (
        "Dec  3 06:00:00 mx postfix/smtp[4242]: 4F2: to=<bob@example.net>, "
        "relay=mx.example.net[192.0.2.7]:25, delay=0.3, status=bounced (host "
        "mx.example.net[192.0.2.7] said: 550 5.1.1 <bob@example.net>: Recipient address "
        "rejected: User unknown in local recipient table (in reply to RCPT TO command))"
    )
    parsed = parse(line)
    assert (parsed.code, parsed.enhanced_code, parsed.command) == ("550", "5.1.1", "RCPT")
    assert parsed.embedded
    assert "in reply to" not in parsed.text


def test_exchange_bounce_quotes_the_reply() -> None:
    parsed = find_embedded(
        "Remote Server returned '550 5.1.1 RESOLVER.ADR.RecipNotFound; not found'"
    )
    assert parsed is not None
    assert (parsed.code, parsed.enhanced_code) == ("550", "5.1.1")
    assert parsed.text == "RESOLVER.ADR.RecipNotFound; not found"


def test_exim_log_names_the_command() -> None:
    parsed = parse("SMTP error from remote mail server after RCPT TO:<bob@example.net>: "
                   "550 Unrouteable address")
    assert (parsed.code, parsed.command) == ("550", "RCPT")


def test_dates_ports_and_addresses_are_not_codes() -> None:
    assert find_embedded("2026-12-03 06:43:27 connect from [192.0.2.1]:25") is None
    assert not looks_like_reply("connection to 192.0.2.1 port 587 closed")


def test_split_replies_joins_smtp_continuations_only() -> None:
    lines = ["250-mx.example.com", "250-PIPELINING", "250 8BITMIME", "",
             "550 5.1.1 no such user", "-ERR [IN-USE] busy", "a1 NO nope"]
    assert split_replies(lines) == [
        "250-mx.example.com\n250-PIPELINING\n250 8BITMIME",
        "550 5.1.1 no such user",
        "-ERR [IN-USE] busy",
        "a1 NO nope",
    ]


def test_split_replies_keeps_an_unfinished_multi_line_reply() -> None:
    assert split_replies(["550-5.7.1 first", "550-5.7.1 second"]) == [
        "550-5.7.1 first\n550-5.7.1 second"
    ]


@given(st.text(max_size=300), st.sampled_from([None, "smtp", "pop3", "imap"]))
def test_parse_never_fails(text: str, protocol: str | None) -> None:
    parsed = parse(text, protocol)  # type: ignore[arg-type]
    assert parsed.raw == text.strip()


@given(st.lists(st.text(max_size=80), max_size=20))
def test_split_replies_loses_no_line(lines: list[str]) -> None:
    joined = "\n".join(split_replies(lines))
    for line in lines:
        if line.strip():
            assert line.strip() in joined


# Gmail's rate-limit reply as Postfix logs it: the lines of the multi-line reply
# folded into one, each continuation still carrying its "450-4.2.1" (issue 11).
FOLDED_GMAIL = (
    "Dec  3 06:00:00 mx postfix/smtp[4242]: 4F2: to=<bob@gmail.com>, "
    "relay=gmail-smtp-in.l.google.com[192.0.2.27]:25, delay=1.2, status=deferred (host "
    "gmail-smtp-in.l.google.com[192.0.2.27] said: 450-4.2.1 The user you are trying to "
    "contact is receiving mail at a rate that 450-4.2.1 prevents additional messages from "
    "being delivered. Please resend your 450-4.2.1 message at a later point. If the user is "
    "able to receive mail at 450-4.2.1 that time, your message will be delivered. For more "
    "information, 450-4.2.1 please visit 450 4.2.1 "
    "https://support.google.com/mail/?p=ReceivingRate d2si1 - gsmtp "
    "(in reply to RCPT TO command))"
)


def test_a_folded_multi_line_reply_in_a_log_line_is_unfolded() -> None:
    parsed = parse(FOLDED_GMAIL)
    assert (parsed.code, parsed.enhanced_code, parsed.command) == ("450", "4.2.1", "RCPT")
    assert "450" not in parsed.text and "4.2.1" not in parsed.text
    assert "at a rate that prevents additional messages" in parsed.text
    assert parsed.text.startswith("The user you are trying to contact")


def test_a_code_inside_the_text_of_a_one_line_reply_stays() -> None:
    parsed = parse(
        "said: 550 5.7.1 rejected: see 550-5.7.1 in our FAQ (in reply to RCPT TO command)"
    )
    assert parsed.text == "rejected: see 550-5.7.1 in our FAQ"


@pytest.mark.parametrize(
    ("text", "status", "response", "rest"),
    [
        # GNU Mailutils imap4d writes the command name before the response code
        ("a1 NO COPY [TRYCREATE] failed", "NO", "TRYCREATE", "failed"),
        ("a2 OK [READ-WRITE] SELECT Completed", "OK", "READ-WRITE", "SELECT Completed"),
        ("a3 NO UID COPY [TRYCREATE] failed", "NO", "TRYCREATE", "failed"),
        ("a4 NO APPEND [TRYCREATE] failed", "NO", "TRYCREATE", "failed"),
        # a capitalised word before a bracket is text, not a command name
        ("a5 NO Mailbox [Gmail]/Sent does not exist", "NO", None,
         "Mailbox [Gmail]/Sent does not exist"),
    ],
)
def test_imap_response_code_after_the_command_name(
    text: str, status: str, response: str | None, rest: str
) -> None:
    parsed = parse(text)
    assert (parsed.protocol, parsed.code, parsed.response_code, parsed.text) == (
        "imap", status, response, rest
    )


def test_the_command_named_in_a_mailutils_reply_is_kept() -> None:
    assert parse("a1 NO COPY [TRYCREATE] failed").command == "COPY"
    assert parse("a3 NO UID COPY [TRYCREATE] failed").command == "COPY"
    assert parse("a1 NO [TRYCREATE] Mailbox doesn't exist").command is None


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("a1 NO LOGIN User name or passwd rejected", "LOGIN"),  # GNU Mailutils
        ("a5 BAD FETCH Unknown token or missing closing parenthesis", "FETCH"),
        ("* BYE LOGOUT received", "LOGOUT"),  # Cyrus
        ("a2 NO Login failed: authentication failure", None),  # not in capitals
        ("* OK IMAP4rev1", None),
    ],
)
def test_the_command_a_reply_starts_with(text: str, command: str | None) -> None:
    assert parse(text).command == command


@pytest.mark.parametrize(
    ("line", "protocol", "code", "text"),
    [
        ("fetchmail: POP3< -ERR Protocol error.", "pop3", "-ERR", "Protocol error."),
        (
            "Host2 failure: Error login on [imap.example.com] with user [foo] auth [LOGIN]: "
            "2 BAD Invalid characters in atom",
            "imap",
            "BAD",
            "Invalid characters in atom",
        ),
        (
            "OfflineImapError: Error SELECTing mailbox 'INBOX.Alerts', server reply:\n"
            "('NO', [\"Mailbox doesn't exist: INBOX.Alerts\"])",
            "imap",
            "NO",
            "Mailbox doesn't exist: INBOX.Alerts",
        ),
        ("fetchmail: IMAP< A0005 BAD Error in command", "imap", "BAD", "Error in command"),
    ],
)
def test_a_clients_log_line_quoting_a_pop3_or_imap_reply(
    line: str, protocol: str, code: str, text: str
) -> None:
    parsed = parse(line)
    assert (parsed.protocol, parsed.code, parsed.text, parsed.embedded) == (
        protocol, code, text, True
    )
    assert parsed.raw == line.strip() and code in parsed.said and "fetchmail" not in parsed.said


@pytest.mark.parametrize("line", ["No such user here", "The server said NO", "BYE for now, Bob"])
def test_words_that_only_look_like_a_status_are_no_reply(line: str) -> None:
    assert parse(line).code is None
