"""What decides an explanation besides the words (issue 11): the command the reply
answered, the protocol, the server that sent it (its greeting), and whether that
server handles the address's domain itself.

Each wording below is a real server's (the interop tests get them from the real
peers; ``tests/interop/test_explain_real.py``).
"""

from __future__ import annotations

import json

import pytest

from mailtalk.knowledge.explain import Explanation, explain
from tests.knowledge.test_replies import FOLDED_GMAIL

POSTFIX_BANNER = "220 mail.mailtalk.test ESMTP Postfix (Debian/GNU)"
EXIM_BANNER = "220 mx.exim.test ESMTP Exim 4.96 Tue, 01 Dec 2026 10:00:00 +0000"
OPENSMTPD_BANNER = "220 mx.test ESMTP OpenSMTPD"
AIOSMTPD_BANNER = "220 localhost.localdomain Python SMTP 1.4.6"
MAILTALK_BANNER = "220 localhost ESMTP mailtalk reference server ready"
MAILTALK_POP3_BANNER = "+OK mailtalk POP3 server ready <1234.5678@localhost>"


def everything(explanation: Explanation) -> str:
    """Every word the explanation says, as one string."""
    return json.dumps(explanation.to_json()) + " " + explanation.one_line()


# --- item 25: the command the reply answered decides ----------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        "503 5.5.1 Error: need MAIL command",  # Postfix
        "503 5.5.1 Bad sequence of commands: send MAIL FROM first",  # mailtalk
        "503 sender not yet given",  # Exim
        "503 Bad sequence of commands",  # RFC 5321
    ],
)
def test_the_one_line_after_rcpt_says_send_mail_from_first(reply: str) -> None:
    line = explain(reply, "smtp", "RCPT").one_line()
    assert "MAIL FROM first" in line, line


def test_mail_from_without_angle_brackets_is_not_about_rcpt() -> None:
    # the reference server's answer to the classic telnet mistake
    reply = "501 5.5.4 Syntax error in parameters or arguments: use MAIL FROM:<address>"
    explanation = explain(reply, "smtp", "MAIL FROM: alice@example.test")
    assert explanation.category == "syntax_error"
    assert "RCPT" not in everything(explanation)
    assert "angle brackets" in explanation.one_line()


def test_bye_after_logout_is_the_normal_end() -> None:
    # GNU Mailutils imap4d's goodbye matches no wording: the command settles it
    assert explain("* BYE Session terminating.", "imap", "LOGOUT").category == "ok"


def test_a_pop3_login_failure_is_not_explained_with_smtp_auth() -> None:
    explanation = explain("-ERR [AUTH] Bad login", "pop3", "PASS")
    assert explanation.category == "auth_failed"
    assert "AUTH" not in explanation.one_line().replace("[AUTH]", "")
    assert "given with AUTH" not in everything(explanation)


@pytest.mark.parametrize(
    ("reply", "command"),
    [
        ("a1 BAD FETCH Unknown token in message data item", "FETCH"),  # Mailutils
        ("a2 BAD APPEND Too many arguments", "APPEND"),  # Mailutils
        ("a3 BAD Error in IMAP command APPEND: Invalid arguments.", "APPEND"),  # Dovecot
        ("a4 BAD Missing or invalid argument to SEARCH", "SEARCH"),  # UW-IMAP
    ],
)
def test_imap_bad_gets_no_smtp_advice(reply: str, command: str) -> None:
    for explanation in (explain(reply, "imap", command), explain(reply)):
        assert explanation.category == "syntax_error"
        text = everything(explanation)
        for smtp_word in ("MAIL FROM", "RCPT", "EHLO", "HELO"):
            assert smtp_word not in text, (smtp_word, text)


def test_an_untagged_imap_bad_without_command_gets_imap_advice() -> None:
    explanation = explain("* BAD Invalid tag", "imap")
    assert "MAIL FROM" not in everything(explanation)


# --- item 26: AUTH that the server does not offer here -----------------------------------


@pytest.mark.parametrize(
    ("reply", "banner"),
    [
        ("503 5.5.1 Error: authentication not enabled", POSTFIX_BANNER),  # Postfix on 25
        ("503 AUTH command used when not advertised", EXIM_BANNER),  # Exim before STARTTLS
        ("503 5.5.1 Invalid command: Command not supported", OPENSMTPD_BANNER),  # OpenSMTPD
    ],
)
def test_auth_not_offered_points_to_submission_and_starttls(reply: str, banner: str) -> None:
    for explanation in (
        explain(reply, "smtp", "AUTH PLAIN AGFsaWNlAHNlY3JldA==", banner=banner),
        explain(reply, "smtp", "AUTH"),
    ):
        line = explanation.one_line()
        assert "not offer" in line, line
        assert "step" not in line  # not "a step is missing"
        fixes = " ".join(explanation.fixes_user)
        assert "587" in fixes and "STARTTLS" in fixes, fixes
        assert explanation.category == "syntax_error"  # the corpus's label for Postfix's


def test_auth_not_enabled_is_read_without_the_command_too() -> None:
    for reply in (
        "503 5.5.1 Error: authentication not enabled",
        "503 AUTH command used when not advertised",
    ):
        assert "not offer" in explain(reply).one_line()


def test_command_not_supported_after_another_command_is_not_about_auth() -> None:
    line = explain("503 5.5.1 Invalid command: Command not supported", "smtp", "ETRN").one_line()
    assert "AUTH" not in line


# --- item 27: wordings that claim too much -----------------------------------------------


def test_exim_sender_without_domain_is_a_syntax_problem_not_a_block_list() -> None:
    explanation = explain("501 bad: sender address must contain a domain", "smtp", "MAIL")
    assert explanation.matched is not None and explanation.matched.id == "sender-address-syntax"
    assert "block list" not in explanation.one_line()


def test_exim_unrouteable_address_gives_both_readings() -> None:
    alone = explain("550 Unrouteable address")
    causes = " ".join(alone.causes)
    assert "no such user" in causes.lower() and "DNS" in causes
    assert alone.category == "dns_or_routing"  # nothing says the server is the domain's MX


def test_exim_unrouteable_address_for_the_servers_own_domain_is_an_unknown_user() -> None:
    own = explain(
        "550 Unrouteable address", "smtp", "RCPT TO:<nosuch@exim.test>", banner=EXIM_BANNER
    )
    assert own.category == "unknown_user"
    assert "no such user" in own.one_line().lower()
    assert any("DNS" in cause or "route" in cause for cause in own.causes[1:])
    # told outright, as a diagnosis that looked up the MX can
    told = explain("550 Unrouteable address", "smtp", "RCPT TO:<bob@example.org>", local=True)
    assert told.category == "unknown_user"


def test_exim_unrouteable_address_for_another_domain_is_routing_first() -> None:
    other = explain(
        "550 Unrouteable address", "smtp", "RCPT TO:<bob@example.org>", banner=EXIM_BANNER
    )
    assert other.category == "dns_or_routing"
    assert "no such user" in " ".join(other.causes).lower()
    told = explain("550 Unrouteable address", "smtp", "RCPT TO:<bob@example.org>", local=False)
    assert told.category == "dns_or_routing"


def test_user_unknown_does_not_cite_exims_unrouteable_wording() -> None:
    from mailtalk.knowledge.catalogue import patterns

    entry = next(p for p in patterns("replies_smtp.toml") if p.id == "user-unknown")
    assert "Unrouteable" not in entry.source


@pytest.mark.parametrize("banner", [None, AIOSMTPD_BANNER])
def test_a_shared_wording_names_no_product(banner: str | None) -> None:
    # aiosmtpd (a handler's refusal), Courier and Sendmail all say "Relaying denied"
    explanation = explain("550 5.7.1 Relaying denied", "smtp", "RCPT", banner=banner)
    assert explanation.category == "relay_denied"
    assert "Sendmail" not in everything(explanation)


def test_sendmails_own_form_still_names_sendmail() -> None:
    explanation = explain("550 5.7.1 <bob@example.net>... Relaying denied")
    assert explanation.matched is not None and explanation.matched.origin == "Sendmail"


def test_a_banner_of_other_software_rules_out_a_products_wording() -> None:
    # Dovecot's words, which mailtalk's POP3 server uses too: its greeting says
    # which server it is, and then nothing about Dovecot is claimed
    reply = "-ERR [AUTH] Authentication failed."
    dovecot = explain(reply, "pop3", "PASS", banner="+OK Dovecot (Debian) ready.")
    assert dovecot.matched is not None and "Dovecot" in dovecot.matched.origin
    ours = explain(reply, "pop3", "PASS", banner=MAILTALK_POP3_BANNER)
    assert ours.category == "auth_failed" and ours.software == "mailtalk"
    assert "Dovecot" not in everything(ours)


def test_opensmtpd_words_a_relay_refusal_as_an_unknown_recipient() -> None:
    own = explain(
        "550 Invalid recipient: <nosuch@mx.test>", "smtp", "RCPT TO:<nosuch@mx.test>",
        banner=OPENSMTPD_BANNER,
    )
    assert own.category == "unknown_user"
    foreign = explain("550 Invalid recipient: <bob@example.org>", "smtp", "RCPT", local=False)
    assert foreign.category == "relay_denied"
    # nothing known: the likelier reading first, the other one next
    alone = explain("550 Invalid recipient: <bob@example.org>")
    assert alone.category == "unknown_user"
    assert "relay" in alone.causes[1]


def test_the_reference_servers_relay_refusal_is_explained_by_its_own_rules() -> None:
    reply = (
        "554 5.7.1 <bob@elsewhere.example>: Relay access denied: "
        "this server only takes mail for its own domains"
    )
    for banner in (MAILTALK_BANNER, None):
        explanation = explain(reply, "smtp", "RCPT TO:<bob@elsewhere.example>", banner=banner)
        text = everything(explanation)
        assert explanation.category == "relay_denied"
        assert "rcpthosts" in text and "relayclients" in text
        for postfix_word in ("reject_unauth_destination", "mynetworks", "Postfix wording"):
            assert postfix_word not in text, postfix_word


def test_the_reference_servers_in_use_is_explained_by_its_own_lock() -> None:
    reply = "-ERR [IN-USE] Unable to lock maildrop: lock busy! Is another session active?"
    for banner in (MAILTALK_POP3_BANNER, None):
        explanation = explain(reply, "pop3", "PASS", banner=banner)
        text = everything(explanation)
        assert explanation.category == "mailbox_locked"
        assert "flock" in text
        assert "qpopper" not in text and ".user.pop" not in text


def test_the_reference_servers_from_lines_refusal_points_at_its_mbox() -> None:
    """The same words as qpopper 4's; the greeting says whose, and so which mbox."""
    reply = ("-ERR [SYS/PERM] Unable to process From lines (envelopes), change recognition "
             "modes or check for corrupted mail drop.")
    ours = explain(reply, "pop3", "PASS", banner=MAILTALK_POP3_BANNER)
    assert ours.matched is not None and ours.matched.origin == "mailtalk"
    assert ours.category == "other" and ours.transient is False
    text = everything(ours)
    assert "ROOT/mail/USER/mbox" in text and ".user.pop" not in text
    theirs = explain(reply, "pop3", "PASS")
    assert theirs.matched is not None and theirs.matched.origin == "qpopper"
    assert ".user.pop" in everything(theirs)


def test_the_reference_servers_quota_refusal_is_not_qpoppers_drop_copy() -> None:
    reply = "-ERR [SYS/TEMP] Unable to copy mail spool file, quota exceeded"
    explanation = explain(reply, "pop3", "PASS", banner=MAILTALK_POP3_BANNER)
    assert explanation.category == "mailbox_full_quota"
    assert "qpopper" not in everything(explanation)


@pytest.mark.parametrize(
    "reply",
    [
        "-ERR Message 1 is deleted.",  # mailtalk
        "-ERR message 2 already deleted",  # RFC 1939
        "-ERR Message has been deleted",  # GNU Mailutils
    ],
)
def test_a_deleted_message_is_explained(reply: str) -> None:
    for explanation in (explain(reply), explain(reply, "pop3", "RETR 1")):
        assert "deleted" in explanation.one_line() and "RSET" in everything(explanation)
        assert "Read the reply text" not in explanation.one_line()


def test_421_alone_says_nothing_about_a_554_greeting() -> None:
    explanation = explain("421")
    said = " ".join(explanation.causes + explanation.fixes_user + explanation.fixes_admin)
    assert "554" not in said


@pytest.mark.parametrize(
    ("reply", "word"),
    [
        ("554 5.7.1 <bob@example.net>: Relay access denied", "mydestination"),
        ("550 relay not permitted", "relay_to_domains"),
        ("553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)", "rcpthosts"),
        ("550 5.1.1 <bob@example.com>... User unknown", "spelling"),
        ("552 5.3.4 Message size exceeds fixed limit", "message_size_limit"),
    ],
)
def test_a_fix_is_given_once(reply: str, word: str) -> None:
    explanation = explain(reply)
    for fixes in (explanation.fixes_user, explanation.fixes_admin):
        assert sum(word in fix for fix in fixes) <= 1, fixes


# --- item 28 --------------------------------------------------------------------------------


def test_a_folded_postfix_log_line_is_read_as_the_reply_it_holds() -> None:
    explanation = explain(FOLDED_GMAIL)
    assert explanation.category == "rate_limited_greylist"
    assert explanation.command == "RCPT"


# --- item 29 --------------------------------------------------------------------------------


def test_a_response_code_after_the_command_name_is_recognised() -> None:
    explanation = explain("a1 NO COPY [TRYCREATE] failed")
    assert explanation.response_code == "TRYCREATE"
    assert explanation.command == "COPY"
    assert "CREATE" in explanation.one_line()


def test_general_keyword_causes_hold_for_every_protocol() -> None:
    # a generic entry lends POP3 and IMAP replies its cause: it names no SMTP step
    from mailtalk.knowledge.catalogue import patterns

    smtp_words = ("MAIL FROM", "RCPT", "EHLO", "HELO", "DATA", "given with AUTH", "MTA")
    wrong = [
        (pattern.id, word)
        for pattern in patterns("replies_smtp.toml")
        if pattern.generic
        for word in smtp_words
        if word in pattern.cause
    ]
    assert wrong == []


def test_a_pop3_reply_without_code_or_command_gets_the_general_cause() -> None:
    assert explain("-ERR Bad login").one_line() == (
        "authentication failed (permanent): "
        "The server did not accept the user name and password."
    )
    line = explain("-ERR Command not permitted when TLS active").one_line()
    assert "wrong point" in line, line


def test_only_a_recipients_domain_makes_the_server_its_own() -> None:
    # the readings are about where a recipient's mail goes; a sender in the
    # server's domain says nothing about that
    after_mail = explain(
        "550 Unrouteable address", "smtp", "MAIL FROM:<alice@exim.test>", banner=EXIM_BANNER
    )
    # not "no such user" (the reading for a recipient of the server's own domain):
    # after MAIL FROM the address that does not route is the sender's
    assert after_mail.category == "sender_domain"


def test_the_command_says_the_protocol_when_the_words_do_not() -> None:
    # a client's error message quoting the server without its status: after SELECT
    # the missing mailbox is a folder; after RCPT the same words are a recipient
    quoted = 'Error: Got response: ["Mailbox doesn\'t exist: Archive"] from server'
    after_select = explain(quoted, command="SELECT")
    assert (after_select.protocol, after_select.category) == ("imap", "other")
    assert explain("Mailbox does not exist", command="RCPT TO:<bob@example.org>").category == (
        "unknown_user"
    )
    # a reply that names its protocol keeps it, whatever command was given
    assert explain("550 5.1.1 User unknown", command="SELECT").protocol == "smtp"


def test_a_reply_on_a_line_of_its_own_after_a_logs_words() -> None:
    logged = "temporary SMTP delivery error when sending to mx.example.net\n\n451 4.7.1 Try later"
    explanation = explain(logged)
    assert (explanation.code, explanation.category) == ("451", "rate_limited_greylist")


def test_a_message_format_code_after_data_is_no_policy_block() -> None:
    # X.6 says the message's format, even where a 554 after DATA is otherwise a filter
    nul = explain("554 5.6.0 Message contains NUL characters", command="end of data")
    assert nul.category == "syntax_error"
    assert explain("554 5.7.1 Rejected by filter", command="end of data").category == (
        "spam_or_policy_block"
    )


def test_a_command_not_implemented_is_no_policy_block() -> None:
    assert explain("502 5.7.0 You hear someone cursing shoplifters").category == "syntax_error"
    assert explain("550 5.7.0 Policy rejection").category == "spam_or_policy_block"


def test_rights_on_a_folder_are_no_refused_login() -> None:
    # "permission denied" after a folder command is about the folder's rights (ACL)
    for command in ("GETQUOTAROOT", "CREATE", "DELETE"):
        refused = explain("a1 NO failed: permission denied", command=command)
        assert refused.category == "other", (command, refused.category)
    refused = explain("a1 NO failed: permission denied", command="LOGIN")
    assert refused.category == "auth_failed"


def test_a_refusal_with_an_informational_code_is_no_success() -> None:
    refused = explain("A1 NO [NOMODSEQ] cannot SEARCH MODSEQ in this mailbox")
    assert refused.category != "ok"


def test_the_status_word_is_not_read_as_words() -> None:
    # "BAD Command requires ..." is no "bad command"
    before_login = explain("A1 BAD Command requires authentication.")
    assert before_login.category == "sequence_error"


def test_too_many_failed_logins_is_a_block_for_a_while() -> None:
    for reply in (
        "-ERR Invalid user name or password. Too many invalid logon attempts.",
        "535 Authentication failed. Too many invalid logon attempts.",
    ):
        assert explain(reply).category == "rate_limited_greylist", reply
    assert explain("535 Authentication failed.").category == "auth_failed"


def test_a_disabled_recipient_is_no_unknown_user() -> None:
    # the mailbox exists but is switched off (RFC 3463 X.2.1); blind labellers agree
    for reply in (
        "451 4.2.1 Delivery to mailbox is disabled",
        "550 Account disabled <alice@example.com>",
        "550 5.2.1 <bob@example.net> User is inactive",
    ):
        assert explain(reply).category == "other", reply
    assert explain("550 5.1.1 <bob@example.net>: User unknown").category == "unknown_user"
    # a disabled account at login is a refused login
    assert explain("-ERR account disabled", command="PASS").category == "auth_failed"


def test_a_bye_says_an_outage_only_in_its_words() -> None:
    assert explain("* BYE Selected mailbox has been deleted").category == "other"
    assert explain("* BYE Server or process shutdown").category == "service_unavailable"
    assert explain("* BYE Connection closed because of timeout").category == "other"


def test_an_internal_error_is_the_servers_whatever_else_the_reply_says() -> None:
    for reply, command in (
        ("-ERR [SYS/TEMP] Internal error: HrLogin failed", "PASS"),
        ("451 5.1.1 Internal error during delivery", "RCPT"),
        ("501 Internal server error while checking return path", "MAIL"),
        ("A1 NO Unable to store message flags.", "STORE"),
    ):
        assert explain(reply, command=command).category == "storage_temp", reply
    # a folder that cannot be opened is the folder's
    assert explain("a12 NO SELECT Couldn't open mailbox").category == "other"


def test_a_refused_login_that_asks_for_tls_is_about_tls() -> None:
    refused = explain(
        "a1 NO LOGIN failed: Plain text password authentication is disallowed. "
        "Please try enabling SSL or TLS in your mail client."
    )
    assert refused.category == "tls_required"
    assert explain("a1 NO LOGIN failed: authentication failure").category == "auth_failed"


def test_what_logout_and_quit_answer() -> None:
    # LOGOUT asks for the BYE; a POP3 QUIT refused is the UPDATE state failing
    assert explain("* BYE Binc IMAP shutting down", command="LOGOUT").category == "ok"
    assert explain("* BYE Binc IMAP shutting down").category == "service_unavailable"
    assert explain("-ERR Ehum..Bye", command="QUIT").category == "storage_temp"


def test_the_greeting_has_no_sender_yet() -> None:
    forged = explain("451 4.1.8 Possibly forged hostname for 192.0.2.1", command="greeting")
    assert forged.category == "spam_or_policy_block"


def test_a_log_quoting_an_imap_success_is_a_success() -> None:
    assert explain("<= 'A2 OK Success [THROTTLED]'").category == "ok"


def test_turning_on_smtp_authentication_is_authenticating_first() -> None:
    asked = explain("550-Please turn on SMTP Authentication in your mail client.")
    assert asked.category == "auth_required"


def test_a_transcripts_marks_are_not_the_servers_words() -> None:
    assert explain("SENT: +OK Mailbox locked and ready").category == "ok"
    greeting = explain("SMTP: 220 We do not authorize the use of this system for bulk e-mail")
    assert greeting.category == "ok"
    assert explain("S: 550 5.1.1 <bob@example.org>: User unknown").category == "unknown_user"


def test_the_authentication_results_codes_are_a_policy_block() -> None:
    # RFC 7372 X.7.20-X.7.26 (DKIM, SPF, reverse DNS, DMARC) say what failed
    dmarc = explain("550-5.7.26 Your email has been blocked because the sender is unauthenticated.")
    assert dmarc.category == "spam_or_policy_block"


def test_a_message_that_cannot_be_parsed_is_a_syntax_error() -> None:
    for reply in (
        "A1 NO Message contains invalid header",
        "A1 NO Message has no header/body separator",
        "451 Bare newline detected",
    ):
        assert explain(reply).category == "syntax_error", reply


def test_a_well_formed_command_the_server_cannot_carry_out() -> None:
    assert explain("A1 NO Operation is not supported on mailbox").category == "other"
    assert explain("a4 NO AUTHENTICATE method not supported").category == "syntax_error"


def test_a_postfix_style_over_quota_is_not_called_gmail() -> None:
    # "user is over quota" is the words of Postfix's and others' quota checks; Gmail's
    # own is "The email account that you tried to reach is over quota"
    postfix = explain("452 4.2.2 <bob@example.com>: Recipient address rejected: user is over quota")
    assert postfix.category == "mailbox_full_quota"
    assert postfix.matched is None or postfix.matched.origin != "Gmail"
    gmail = explain("452 4.2.2 The email account that you tried to reach is over quota.")
    assert gmail.matched is not None and gmail.matched.origin == "Gmail"
