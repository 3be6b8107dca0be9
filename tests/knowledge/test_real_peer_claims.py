"""Explanations as claims, checked against what the real peers answer.

Each reply here was provoked from a real server on loopback (scripts/real-servers:
Postfix 3.7, Exim 4.96, OpenSMTPD 6.8, Dovecot 2.3, GNU Mailutils 3.15, and
``mailtalk serve``) with mailtalk's own client in pipe mode; the explanation is
asked with the command the reply answered and the server's greeting, as pipe mode
asks it. The first cause must be the likely one given the command and the words.
"""

from __future__ import annotations

import pytest

from mailtalk.knowledge.explain import explain

POSTFIX = "220 mailtalk.test ESMTP Postfix (Debian/GNU)"
EXIM = "220 exim.test ESMTP Exim 4.96 Tue, 08 Dec 2026 00:57:02 +0000"
OPENSMTPD = "220 mx.test ESMTP OpenSMTPD"
SERVE = "220 mailtalk9.test ESMTP mailtalk reference server ready"
SERVE_POP3 = "+OK mailtalk POP3 server ready <25744.1796691464750139025@mailtalk9.test>"
DOVECOT_POP3 = "+OK Dovecot (Debian) ready."


@pytest.mark.parametrize(
    ("reply", "command", "banner"),
    [
        ("503 5.5.1 Error: nested MAIL command", "MAIL FROM:<bill@example.org>", POSTFIX),
        (
            "503-sender already given\r\n503 Too many syntax or protocol errors",
            "MAIL FROM:<bill@example.org>",
            EXIM,
        ),
        (
            "503 5.5.1 Bad sequence of commands: sender already given (RSET starts over)",
            "MAIL FROM:<bill@example.org>",
            SERVE,
        ),
        ("554 5.5.1 Error: TLS already active", "STARTTLS", POSTFIX),  # Postfix on 587
    ],
)
def test_a_command_given_twice_is_not_a_missing_step(reply: str, command: str, banner: str) -> None:
    explanation = explain(reply, "smtp", command, banner=banner)
    assert explanation.category == "sequence_error"
    assert "already given" in explanation.causes[0], explanation.causes
    assert not any("missing" in cause for cause in explanation.causes), explanation.causes
    assert "RSET" in " ".join(explanation.fixes_user)


@pytest.mark.parametrize(
    ("reply", "banner"),
    [
        ("500 5.0.0 Command line too long", OPENSMTPD),  # a 3,000-character RCPT TO
        ("500 5.5.2 Line too long", SERVE),
    ],
)
def test_a_line_too_long_is_not_a_bare_lf(reply: str, banner: str) -> None:
    explanation = explain(reply, "smtp", "RCPT TO:<" + "x" * 3000 + "@mx.test>", banner=banner)
    assert explanation.category == "syntax_error"
    assert "512 octets" in explanation.causes[0], explanation.causes
    said = " ".join(explanation.causes + explanation.fixes_user)
    assert "bare LF" not in said and "angle brackets" not in said, said


@pytest.mark.parametrize(
    ("reply", "banner"),
    [
        ("501 Invalid base64 data", EXIM),
        (
            "535 5.7.8 Error: authentication failed: Invalid base64 data in initial response",
            POSTFIX,
        ),
        ("501 5.5.2 Cannot decode the base64 answer", SERVE),
    ],
)
def test_bad_base64_after_auth_is_not_auth_missing(reply: str, banner: str) -> None:
    explanation = explain(reply, "smtp", "AUTH PLAIN !!!notbase64", banner=banner)
    assert explanation.category == "syntax_error"
    assert "base64" in explanation.causes[0], explanation.causes
    said = " ".join(explanation.causes)
    # the server took AUTH and its mechanism: neither "not offered" nor a MAIL FROM typo
    assert "not implemented" not in said and "port 25" not in said, said
    assert "angle brackets" not in said and "mechanism the server does not offer" not in said


@pytest.mark.parametrize("banner", [SERVE_POP3, DOVECOT_POP3])
def test_retr_of_a_missing_message_names_the_message_number(banner: str) -> None:
    explanation = explain("-ERR There's no message 999.", "pop3", "RETR 999", banner=banner)
    assert "message number" in explanation.causes[0].lower(), explanation.causes
    assert "typo" not in explanation.causes[0]
    # pipe mode's one line under the reply says it too, not "A typo in the command"
    assert "message number" in explanation.one_line().lower()


DOVECOT_IMAP = (
    "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ STARTTLS"
    " AUTH=PLAIN AUTH=LOGIN] Dovecot (Debian) ready."
)


def test_dovecots_unknown_command_to_retr_before_login_is_no_missing_message() -> None:
    explanation = explain("-ERR Unknown command.", "pop3", "RETR 1", banner=DOVECOT_POP3)
    assert explanation.category == "syntax_error"
    # what -ERR usually means after RETR is not what these words say
    assert explanation.context is None
    assert "current state" in explanation.causes[0]
    # "not in this state" once, not again in the category's words
    assert len(explanation.causes) == 1, explanation.causes


@pytest.mark.parametrize(
    "command", ["FETCH 999 FLAGS", "FETCH 0 FLAGS", "STORE 5000 +FLAGS (\\Seen)"]
)
def test_dovecots_invalid_messageset_names_the_mailboxs_message_numbers(command: str) -> None:
    verb = command.split()[0]
    reply = f"a5 BAD Error in IMAP command {verb}: Invalid messageset (0.001 + 0.000 secs)."
    explanation = explain(reply, "imap", command, banner=DOVECOT_IMAP)
    assert explanation.category == "syntax_error"
    assert explanation.causes == [explanation.causes[0]] and "EXISTS" in explanation.causes[0]


@pytest.mark.parametrize(
    ("reply", "banner"),
    [
        ("-ERR APOP is not valid in the TRANSACTION state", SERVE_POP3),
        ("-ERR Incorrect state", "+OK POP3 Ready <28404.1796691462@vm>"),  # GNU Mailutils
    ],
)
def test_apop_after_login_belongs_to_the_other_state(reply: str, banner: str) -> None:
    explanation = explain(reply, "pop3", "APOP alice 0123", banner=banner)
    assert explanation.category == "sequence_error"
    causes = explanation.causes
    other_state = next(i for i, cause in enumerate(causes) if "other state" in cause)
    step_missing = next(i for i, cause in enumerate(causes) if "step is missing" in cause)
    assert other_state < step_missing, causes


@pytest.mark.parametrize("command", ["SELECT NoSuchFolder", "EXAMINE NoSuchFolder"])
def test_mailutils_missing_folder_is_said_not_left_to_the_reader(command: str) -> None:
    verb = command.split()[0]
    reply = f"a7 NO {verb} Could not open NoSuchFolder: No such file or directory"
    explanation = explain(reply, "imap", command, banner="* OK IMAP4rev1")
    assert "does not exist" in explanation.causes[0], explanation.causes
    assert "Read the reply text" not in explanation.one_line()


@pytest.mark.parametrize(
    ("reply", "command", "banner"),
    [
        ("503 sender not yet given", "RCPT TO:<alice@exim.test>", EXIM),
        ("503 5.5.1 Error: need MAIL command", "RCPT TO:<alice@mailtalk.test>", POSTFIX),
        ("500 unrecognized command", "FOO", EXIM),
        ("500 5.5.2 Error: command not recognized", "FOO", POSTFIX),
    ],
)
def test_a_general_wording_does_not_restate_the_categorys_causes(
    reply: str, command: str, banner: str
) -> None:
    causes = explain(reply, "smtp", command, banner=banner).causes
    # "a step before it is missing or failed" before "A step is missing: ..." and
    # "An earlier command failed ..."; "could not parse ... or does not implement it"
    # before "A typo ..." and "... not implemented by this server"
    restated = ("wrong point of the conversation", "could not parse the command")
    assert not any(words in cause for cause in causes for words in restated), causes


@pytest.mark.parametrize(
    ("reply", "command", "banner"),
    [
        ("503 AUTH command used when not advertised", "AUTH PLAIN AGFsaWNlAHdyb25n", EXIM),
        ("503 5.5.1 Error: authentication not enabled", "AUTH PLAIN AGFsaWNlAHdyb25n", POSTFIX),
        ("503 5.5.1 Invalid command: Command not supported", "AUTH PLAIN AGFs", OPENSMTPD),
        ("504 FOO authentication mechanism not supported", "AUTH FOO", EXIM),
        (
            "535 5.7.8 Error: authentication failed: Invalid authentication mechanism",
            "AUTH FOO",
            POSTFIX,
        ),
    ],
)
def test_auths_own_refusals_say_it_once_and_nothing_about_addresses(
    reply: str, command: str, banner: str
) -> None:
    causes = explain(reply, "smtp", command, banner=banner).causes
    assert len(causes) == 1, causes  # not again as "not implemented ... (AUTH on port 25)"
    assert "angle brackets" not in causes[0] and "bare LF" not in causes[0]


@pytest.mark.parametrize(
    ("reply", "banner"),
    [
        ("-ERR [AUTH] Bad login", "+OK POP3 Ready <28404.1796691462@vm>"),  # GNU Mailutils
        ("-ERR [AUTH] Authentication failed.", SERVE_POP3),
    ],
)
def test_a_response_codes_causes_are_not_said_again_by_the_category(
    reply: str, banner: str
) -> None:
    causes = explain(reply, "pop3", "PASS secret", banner=banner).causes
    wrong_password = [cause for cause in causes if "password" in cause and "rong" in cause]
    disabled = [cause for cause in causes if "disabled" in cause]
    assert len(wrong_password) == 1 and len(disabled) == 1, causes


@pytest.mark.parametrize(
    ("reply", "banner"),
    [
        ("a020 BAD LOGIN Wrong state", "* OK IMAP4rev1"),  # GNU Mailutils imap4d
        (
            "a020 BAD [CLIENTBUG] Command not valid in this state",
            "* OK [CAPABILITY IMAP4rev1 SASL-IR] mailtalk IMAP server ready",
        ),
    ],
)
def test_login_after_logging_in_is_not_a_missing_login(reply: str, banner: str) -> None:
    causes = explain(reply, "imap", "LOGIN alice secret", banner=banner).causes
    assert "LOGIN, AUTHENTICATE or STARTTLS after login" in causes[0], causes


def test_mailutils_invalid_command_is_said_once_and_named_as_its_own() -> None:
    explanation = explain(
        "-ERR Invalid command", "pop3", "FOO", banner="+OK POP3 Ready <28404.1796691462@vm>"
    )
    assert explanation.matched is not None and "Mailutils" in explanation.matched.origin
    # not again as "not implemented by this server, or not in this state"
    assert len(explanation.causes) == 1, explanation.causes


@pytest.mark.parametrize(
    ("reply", "command", "says"),
    [
        # Postfix with Cyrus SASL on 127.0.0.1:10588, whose EHLO offers NTLM DIGEST-MD5
        # CRAM-MD5: Cyrus SASL's SASL_NOMECH and SASL_BADPROT, no refused password
        (
            "535 5.7.8 Error: authentication failed: no mechanism available",
            "AUTH PLAIN AGFsaWNlAHdyb25n",
            "does not offer",
        ),
        (
            "535 5.7.8 Error: authentication failed: bad protocol / cancel",
            "AUTH PLAIN !!!notbase64",
            "mechanism's form",
        ),
    ],
)
def test_cyrus_sasl_errors_behind_postfix_are_no_wrong_password(
    reply: str, command: str, says: str
) -> None:
    explanation = explain(reply, "smtp", command, banner=POSTFIX)
    assert explanation.category == "syntax_error"
    assert says in explanation.causes[0], explanation.causes
    assert not any("password is wrong" in cause for cause in explanation.causes)


@pytest.mark.parametrize(
    ("reply", "banner"),
    [
        ("501 5.5.4 Syntax: STARTTLS", POSTFIX),
        ("501 unexpected argument data", EXIM),
        ("501 5.5.4 Syntax error in parameters or arguments: STARTTLS takes no arguments", SERVE),
    ],
)
def test_starttls_with_an_argument_is_an_extra_part_not_starttls_missing(
    reply: str, banner: str
) -> None:
    causes = explain(reply, "smtp", "STARTTLS now", banner=banner).causes
    # the server knows STARTTLS; "AUTH ... before STARTTLS" once led only for its name
    assert "extra part" in causes[0] and "STARTTLS" in causes[0], causes


def test_dovecots_noise_after_nothing_is_tops_missing_line_count() -> None:
    # Dovecot's get_msgnum() quotes what follows the number: for TOP 1, nothing
    explanation = explain("-ERR Noise after message number: ", "pop3", "TOP 1", banner=DOVECOT_POP3)
    assert "number of lines" in explanation.causes[0], explanation.causes
    assert "not a plain number" not in " ".join(explanation.causes)
    # with text after the number it is still the extra text
    extra = explain("-ERR Noise after message number:  3661", "pop3", "RETR 1 3661")
    assert "extra text" in extra.causes[0], extra.causes


def test_exims_too_many_recipients_is_no_greylisting() -> None:
    # Exim with recipients_max 3 (127.0.0.6:2525), to the fourth RCPT TO
    explanation = explain(
        "452 too many recipients", "smtp", "RCPT TO:<alice@exim.test>", banner=EXIM
    )
    said = " ".join(explanation.causes + explanation.fixes_user + explanation.fixes_admin)
    assert "recipients" in explanation.causes[0]
    assert "reylist" not in said and "reputation" not in said, said


def test_a_wording_alone_keeps_the_categorys_fix_where_it_has_none() -> None:
    explanation = explain("504 FOO authentication mechanism not supported", "smtp", "AUTH FOO")
    assert explanation.fixes_admin, explanation


def test_exims_recipient_without_a_domain_says_the_domain_is_missing() -> None:
    reply = "501 alice: recipient address must contain a domain"
    causes = explain(reply, "smtp", "RCPT TO:alice", banner=EXIM).causes
    assert causes == [causes[0]] and "no domain" in causes[0], causes
