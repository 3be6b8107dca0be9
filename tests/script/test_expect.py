"""``S:`` expectations: codes, enhanced codes, status words, text patterns, untagged."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.script.expect import (
    ExpectationError,
    check_protocol,
    parse_expectation,
    reply_of,
)

RELAY_DENIED = "554 5.7.1 <bob@example.net>: Relay access denied"
EHLO = (
    "250-mx.example.test Hello client.test\r\n"
    "250-PIPELINING\r\n"
    "250-SIZE 10240000\r\n"
    "250-STARTTLS\r\n"
    "250-AUTH PLAIN LOGIN\r\n"
    "250 8BITMIME"
)
QUEUED = "250 2.0.0 Ok: queued as 4XyZ12AbC"


def matches(expectation: str, raw: str, protocol: str = "smtp") -> bool:
    return parse_expectation(expectation).matches(reply_of(raw, protocol))


# ---------------------------------------------------------------------------
# parsing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "code", "enhanced", "text"),
    [
        ("250", "250", None, None),
        ("2xx", "2xx", None, None),
        ("2XX", "2xx", None, None),
        ("25x", "25x", None, None),
        ("5.7.1", None, "5.7.1", None),
        ("5.X.X", None, "5.x.x", None),
        ("250 2.1.5", "250", "2.1.5", None),
        ("554 5.7.1 *Relay access denied*", "554", "5.7.1", "*Relay access denied*"),
        ("5.7.1 Relay", None, "5.7.1", None),  # see test_enhanced_code_then_text below
        ("+OK", "+OK", None, None),
        ("+ok", "+OK", None, None),
        ("-ERR", "-ERR", None, None),
        ("OK", "OK", None, None),
        ("no", "NO", None, None),
        ("BAD", "BAD", None, None),
        ("BYE", "BYE", None, None),
        ("+", "+", None, None),
        ("OK [READ-WRITE]", "OK", None, "[READ-WRITE]"),
        ("queued", None, None, "queued"),
        ("/queued as [A-Z0-9]+/", None, None, "/queued as [A-Z0-9]+/"),
    ],
)
def test_parse(source: str, code: str | None, enhanced: str | None, text: str | None) -> None:
    expectation = parse_expectation(source)
    assert expectation.code == code
    assert expectation.enhanced == enhanced
    if source != "5.7.1 Relay":
        assert expectation.text == text
    assert not expectation.any_reply and not expectation.untagged
    assert expectation.describe() == source.strip()


def test_enhanced_code_then_text() -> None:
    expectation = parse_expectation("5.7.1 relay access")
    assert expectation.enhanced == "5.7.1"
    assert matches("5.7.1 relay access", RELAY_DENIED)
    assert not matches("5.7.1 relay granted", RELAY_DENIED)


def test_any_and_untagged() -> None:
    assert parse_expectation("*").any_reply
    assert parse_expectation("  *  ").any_reply
    untagged = parse_expectation("* 3 EXISTS")
    assert untagged.untagged and untagged.text == "3 EXISTS"
    assert untagged.matches_untagged(["FLAGS (\\Seen)", "3 EXISTS", "0 RECENT"])
    assert not untagged.matches_untagged(["FLAGS (\\Seen)", "4 EXISTS"])
    assert not untagged.matches_untagged([])


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("2x0", "2x0 is not a reply code"),
        ("6xx", "6xx is not a reply code"),
        ("600 *queued*", "600 is not a reply code"),
        ("099", "099 is not a reply code"),
        ("3.1.1", "3.1.1 is not an enhanced status code"),
        ("250 9.1.1 ok", "9.1.1 is not an enhanced status code"),
        ("5.1000.1", "5.1000.1 is not an enhanced status code"),
    ],
)
def test_what_looks_like_a_code_and_is_none_is_an_error(source: str, message: str) -> None:
    with pytest.raises(ExpectationError, match=message):
        parse_expectation(source)


@pytest.mark.parametrize(
    ("source", "protocol", "message"),
    [
        ("+OK", "smtp", "+OK is a status of POP3"),
        ("OK", "smtp", "OK is a status of IMAP"),
        ("+", "smtp", "+ is the POP3 and IMAP continuation"),
        ("* OK", "smtp", "IMAP untagged"),
        ("25", "smtp", "25 is not a reply code"),
        ("2500 ok", "smtp", "2500 is not a reply code"),
        ("250", "pop3", "250 is an SMTP reply code; POP3 answers +OK or -ERR"),
        ("NO", "pop3", "NO is a status of IMAP"),
        ("* OK", "pop3", "IMAP untagged"),
        ("5.7.1", "pop3", "enhanced status codes"),
        ("2xx", "imap", "2xx is an SMTP reply code; IMAP answers OK, NO or BAD"),
        ("-ERR", "imap", "-ERR is a status of POP3"),
        ("250-PIPELINING", "imap", "250 is an SMTP reply code"),
    ],
)
def test_what_a_protocol_never_answers(source: str, protocol: str, message: str) -> None:
    problem = check_protocol(parse_expectation(source), protocol)
    assert problem is not None and message in str(problem)


@pytest.mark.parametrize(
    ("source", "protocol"),
    [
        ("250", "smtp"), ("5.7.1", "smtp"), ("250-SIZE", "smtp"), ("queued", "smtp"),
        ("*", "smtp"), ("*queued*", "smtp"), ("/^2/", "smtp"), ("+OK", "pop3"),
        ("-ERR", "pop3"), ("+", "pop3"), ("1 message", "pop3"), ("OK", "imap"),
        ("* 3 EXISTS", "imap"), ("+", "imap"), ("BYE", "imap"), ("12 EXISTS", "imap"),
    ],
)  # fmt: skip
def test_what_a_protocol_may_answer(source: str, protocol: str) -> None:
    assert check_protocol(parse_expectation(source), protocol) is None


def test_pop3_continuation_is_plus() -> None:
    assert matches("+", "+ ", "pop3")
    assert matches("+", "+ UGFzc3dvcmQ6", "pop3")
    assert not matches("+", "+OK", "pop3")


@pytest.mark.parametrize("source", ["", "   ", "\t"])
def test_empty_expectation(source: str) -> None:
    with pytest.raises(ExpectationError, match="needs an expectation"):
        parse_expectation(source)


@pytest.mark.parametrize("source", ["250 /(unclosed/", "/[a-/", "* /(?P<x/", "5.7.1 /a{2,1}/"])
def test_bad_regex(source: str) -> None:
    with pytest.raises(ExpectationError, match="bad pattern"):
        parse_expectation(source)


def test_expectation_error_is_a_value_error() -> None:
    assert issubclass(ExpectationError, ValueError)


@settings(max_examples=500, deadline=None)
@given(st.text(), st.sampled_from(["smtp", "pop3", "imap"]), st.text(max_size=80))
def test_any_expectation_parses_or_raises_expectation_error(
    source: str, protocol: str, raw: str
) -> None:
    try:
        expectation = parse_expectation(source)
    except ExpectationError:
        return
    result = expectation.matches(reply_of(raw, protocol))
    assert result in (True, False)


# ---------------------------------------------------------------------------
# SMTP codes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expectation", "raw", "expected"),
    [
        ("250", "250 OK", True),
        ("250", "251 User not local", False),
        ("2xx", "251 User not local", True),
        ("2xx", "354 go ahead", False),
        ("25x", "251 ok", True),
        ("25x", "221 bye", False),
        ("5xx", RELAY_DENIED, True),
        ("4xx", RELAY_DENIED, False),
        ("5.7.1", RELAY_DENIED, True),
        ("5.x.x", RELAY_DENIED, True),
        ("5.7.x", RELAY_DENIED, True),
        ("5.7.2", RELAY_DENIED, False),
        ("4.x.x", RELAY_DENIED, False),
        ("5.7.1", "554 Relay access denied", False),  # no enhanced code: no match
        ("554 5.7.1", RELAY_DENIED, True),
        ("550 5.7.1", RELAY_DENIED, False),
        ("554 5.7.2", RELAY_DENIED, False),
        ("OK", "250 OK", False),  # OK is the IMAP status word, never an SMTP code
        ("250 OK", "250 OK", True),
        ("+OK", "250 OK", False),
        ("*", "421 4.3.2 shutting down", True),
    ],
)
def test_smtp_codes(expectation: str, raw: str, expected: bool) -> None:
    assert matches(expectation, raw) is expected


def test_status_words_never_match_numeric_codes() -> None:
    assert not matches("2xx", "+OK 2 320", "pop3")
    assert not matches("2xx", "a1 OK done", "imap")
    assert not matches("250", "+OK", "pop3")


# ---------------------------------------------------------------------------
# POP3 and IMAP statuses
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expectation", "raw", "expected"),
    [
        ("+OK", "+OK 2 320", True),
        ("+ok", "+OK 2 320", True),
        ("-ERR", "+OK 2 320", False),
        ("-ERR", "-ERR [AUTH] Authentication failed", True),
        ("-ERR *[AUTH]*", "-ERR [AUTH] Authentication failed", True),
        ("-ERR authentication failed", "-ERR [AUTH] Authentication failed", True),
        ("+OK 2 320", "+OK 2 320", True),
        ("+OK 3 320", "+OK 2 320", False),
        ("OK", "+OK 2 320", False),
        ("*", "-ERR no", True),
    ],
)
def test_pop3(expectation: str, raw: str, expected: bool) -> None:
    assert matches(expectation, raw, "pop3") is expected


@pytest.mark.parametrize(
    ("expectation", "raw", "expected"),
    [
        ("OK", "a001 OK LOGIN completed", True),
        ("ok", "a001 OK LOGIN completed", True),
        ("NO", "a001 OK LOGIN completed", False),
        ("NO", "a002 NO [AUTHENTICATIONFAILED] Authentication failed.", True),
        ("NO authentication failed", "a002 NO [AUTHENTICATIONFAILED] Authentication failed.", True),
        (
            "NO *AUTHENTICATIONFAILED*",
            "a002 NO [AUTHENTICATIONFAILED] Authentication failed.",
            True,
        ),
        ("BAD", "a003 BAD Error in IMAP command", True),
        ("BAD", "a003 NO nope", False),
        ("OK *READ-WRITE*", "a004 OK [READ-WRITE] Select completed", True),
        ("OK /\\[READ-WRITE\\]/", "a004 OK [READ-WRITE] Select completed", True),
        ("OK /\\[READ-ONLY\\]/", "a004 OK [READ-WRITE] Select completed", False),
        ("OK select completed", "a004 OK [READ-WRITE] Select completed", True),
        ("BYE", "* BYE Logging out", True),
        ("OK", "* OK [CAPABILITY IMAP4rev1] Dovecot ready.", True),
        ("+", "+ Ready for literal data", True),
        ("OK", "+ Ready for literal data", False),
        ("PREAUTH", "* PREAUTH welcome", True),
    ],
)
def test_imap(expectation: str, raw: str, expected: bool) -> None:
    assert matches(expectation, raw, "imap") is expected


# ---------------------------------------------------------------------------
# text patterns: words, glob, /regex/; all ignore case
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expectation", "expected"),
    [
        ("250 queued", True),
        ("250 QUEUED AS", True),
        ("250 Ok: queued", True),
        ("250 rejected", False),
        ("250 *queued*", True),
        ("250 *QUEUED AS ????????*", True),
        ("250 *queued as ?????????", True),
        ("250 *rejected*", False),
        ("250 Ok:*", True),
        ("250 /queued as [A-Z0-9]+$/", True),
        ("250 /QUEUED AS [a-z0-9]{9}/", True),
        ("250 /^queued/", False),  # the text starts with "Ok:", the codes are not in it
        ("250 /^ok: queued/", True),
        ("250 /queued as [0-9]+$/", False),
        ("/queued/", True),
        ("queued", True),
        ("*queued*", True),
        ("2.0.0 queued", True),
        ("2.0.0 *queued*", True),
        ("251 queued", False),  # the code decides first
    ],
)
def test_text_patterns(expectation: str, expected: bool) -> None:
    assert matches(expectation, QUEUED) is expected


def test_patterns_see_the_text_not_the_codes() -> None:
    assert not matches("554 *554*", RELAY_DENIED)
    assert not matches("554 /5\\.7\\.1/", RELAY_DENIED)
    assert matches("554 *Relay access denied*", RELAY_DENIED)
    assert matches("554 5.7.1 *relay ACCESS denied*", RELAY_DENIED)
    assert matches("554 <bob@example.net>", RELAY_DENIED)


def test_regex_spans_the_lines_of_a_multi_line_reply() -> None:
    assert matches("250 /pipelining.*starttls/", EHLO)
    assert not matches("250 /starttls.*pipelining/", EHLO)


@pytest.mark.parametrize(
    ("expectation", "expected"),
    [
        ("250", True),
        ("2xx", True),
        ("250 STARTTLS", True),
        ("250 starttls", True),
        ("250 *STARTTLS*", True),
        ("250 *AUTH PLAIN*", True),
        ("250 8BITMIME", True),  # the last line
        ("250 mx.example.test", True),  # the first line
        ("250 CHUNKING", False),
        ("250 *SMTPUTF8*", False),
        ("5xx", False),
    ],
)
def test_multi_line_smtp_replies(expectation: str, expected: bool) -> None:
    assert matches(expectation, EHLO) is expected


def test_multi_line_error_reply() -> None:
    raw = "550-5.7.1 Message rejected\r\n550-5.7.1 see https://example.test/why\r\n550 5.7.1 policy"
    assert matches("550 5.7.1", raw)
    assert matches("5.7.1 *example.test/why*", raw)
    assert not matches("5.7.2", raw)


def test_glob_question_mark_and_brackets_in_globs() -> None:
    assert matches("250 *queued as 4?yZ*", QUEUED)
    # [ is a plain character (response codes are written in brackets), not a class
    assert not matches("250 *queued as [0-9]X*", QUEUED)
    assert matches("+OK *[IN-USE]*", "+OK [IN-USE] busy", "pop3")


def test_glob_must_reach_the_end_of_the_text() -> None:
    assert not matches("250 *Ok: queued", QUEUED)
    assert matches("250 *Ok: queued*", QUEUED)


def test_glob_must_match_from_the_start_of_the_text() -> None:
    assert not matches("250 queued*", QUEUED)


def test_response_code_in_brackets_is_not_a_character_class() -> None:
    assert not matches("OK [READ-ONLY]", "a004 OK [READ-WRITE] Select completed", "imap")
    assert matches("OK [READ-WRITE]", "a004 OK [READ-WRITE] Select completed", "imap")
    assert matches("-ERR [AUTH]", "-ERR [AUTH] Authentication failed", "pop3")


def test_untagged_patterns() -> None:
    lines = ["CAPABILITY IMAP4rev1 IDLE", "1 EXISTS", "OK [UIDNEXT 2] Predicted next UID"]
    assert parse_expectation("* CAPABILITY *IDLE*").matches_untagged(lines)
    assert parse_expectation("* capability").matches_untagged(lines)
    assert parse_expectation("* /^\\d+ EXISTS$/").matches_untagged(lines)
    assert not parse_expectation("* /^\\d+ RECENT$/").matches_untagged(lines)
    assert not parse_expectation("* 2 EXISTS").matches_untagged(lines)


GREETING = "220 localhost ESMTP mailtalk reference server ready"


@pytest.mark.parametrize(
    ("expectation", "expected"),
    [
        ("220 ESMTP ready", True),  # not side by side: each is a word of the text
        ("220 ready ESMTP", True),  # in any order
        ("220 server ready", True),
        ("220 esmtp READY", True),
        ("220 ESMTP ready fast", False),
        ("220 ESMTP read", False),  # whole words: "read" is not "ready"
        ("220 ESM", False),
        ("ESMTP ready", True),  # without a code
    ],
)
def test_words_are_whole_words_in_any_order(expectation: str, expected: bool) -> None:
    assert matches(expectation, GREETING) is expected


def test_missing_words_are_named() -> None:
    reply = reply_of(GREETING, "smtp")
    assert parse_expectation("220 ESMTP fast ready slow").missing_words(reply) == [
        "fast",
        "slow",
    ]
    assert parse_expectation("220 ESMTP ready").missing_words(reply) == []
    assert parse_expectation("220 *ESMTP*").missing_words(reply) == []  # a glob has no words


def test_words_in_any_order_in_untagged_and_line_expectations() -> None:
    assert parse_expectation("* EXISTS 3").matches_untagged(["FLAGS ()", "3 EXISTS"])
    assert not parse_expectation("* 3 RECENT").matches_untagged(["3 EXISTS", "0 RECENT"])
    line = parse_expectation("250-PLAIN AUTH")
    assert line.matches_a_line("250-x.test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
    assert not line.matches_a_line("250-x.test\r\n250-AUTH LOGIN\r\n250 PLAIN\r\n")


def test_words_are_matched_as_written_not_as_a_regex() -> None:
    assert matches("250 ok: queued as 4xyz12abc", QUEUED)
    assert not matches("250 queued.as", QUEUED)  # the dot is a dot
    assert matches("+OK (x) +", "+OK (x) + more", "pop3")
