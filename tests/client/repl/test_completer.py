"""Completion from the protocol state: cores driven by canned server bytes, queried both
through prompt_toolkit ``Document``s and the pure ``suggest()``."""

from __future__ import annotations

from typing import Any

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from mailtalk.client.repl.completer import ProtocolCompleter, quote_mailbox, suggest
from mailtalk.protocols.imap import FETCH_ITEMS, IMAPConnection
from mailtalk.protocols.smtp_connection import SMTPConnection
from tests.client.repl.cores import (
    imap_authenticated,
    imap_not_authenticated,
    imap_selected,
    pop3_authorization,
    pop3_transaction,
    say,
    smtp_connected,
    smtp_ready,
)

# --------------------------------------------------------------------------- helpers


def complete(core: Any, text: str, user: str | None = None) -> list[str]:
    """What the completions insert for ``text`` with the cursor at its end, without the
    space after a completed word (test_completed_word_ends_in_a_space)."""
    completer = ProtocolCompleter(lambda: core, user)
    document = Document(text, len(text))
    return [c.display_text if c.text == c.display_text + " " else c.text
            for c in completer.get_completions(document, CompleteEvent())]


def words(core: Any, text: str, user: str | None = None) -> list[str]:
    return [s.text for s in suggest(core, text, user)]


# --------------------------------------------------------------------------- SMTP


def test_smtp_before_ehlo() -> None:
    core = smtp_connected()
    assert sorted(complete(core, "")) == sorted(
        ["EHLO", "HELO", "NOOP", "RSET", "VRFY", "HELP", "QUIT"]
    )
    assert "MAIL" not in complete(core, "M")
    assert complete(core, "D") == []


def test_smtp_before_greeting_only_quit() -> None:
    assert complete(SMTPConnection(), "") == ["QUIT"]


def test_smtp_after_ehlo_without_extensions() -> None:
    core = smtp_ready("PIPELINING")
    offered = complete(core, "")
    assert "MAIL" in offered
    assert "STARTTLS" not in offered and "AUTH" not in offered
    assert "DATA" not in offered and "RCPT" not in offered


def test_smtp_after_ehlo_with_starttls_and_auth() -> None:
    core = smtp_ready("STARTTLS", "AUTH PLAIN LOGIN")
    assert {"MAIL", "STARTTLS", "AUTH"} <= set(complete(core, ""))
    assert complete(core, "ST") == ["STARTTLS"]
    assert complete(core, "AU") == ["AUTH"]


def test_smtp_old_style_auth_equals() -> None:
    core = smtp_ready("AUTH=LOGIN PLAIN")
    assert "AUTH" in complete(core, "")
    assert complete(core, "AUTH ") == ["LOGIN", "PLAIN"]


def test_smtp_auth_offers_exactly_advertised_mechanisms() -> None:
    core = smtp_ready("AUTH PLAIN LOGIN CRAM-MD5")
    assert complete(core, "AUTH ") == ["PLAIN", "LOGIN", "CRAM-MD5"]
    assert complete(core, "AUTH C") == ["CRAM-MD5"]
    assert complete(core, "auth p") == ["plain"]


def test_smtp_auth_not_offered_after_authenticating() -> None:
    core = smtp_ready("AUTH PLAIN")
    say(core, "AUTH PLAIN AGEAYg==", b"235 2.7.0 ok\r\n")
    assert "AUTH" not in complete(core, "")


def test_smtp_ehlo_offers_a_name() -> None:
    names = complete(smtp_connected(), "EHLO ")
    assert len(names) == 1 and names[0]


def test_smtp_mail_from_opener() -> None:
    core = smtp_ready("SIZE 1000")
    assert complete(core, "MAIL ") == ["FROM:<"]
    assert complete(core, "MAIL F") == ["FROM:<"]
    assert complete(core, "MAIL FROM:<a@b>") == []
    assert complete(core, "mail f") == ["from:<"]


def test_smtp_rcpt_to_opener() -> None:
    core = smtp_ready()
    say(core, "MAIL FROM:<a@b>", b"250 ok\r\n")
    assert complete(core, "RCPT ") == ["TO:<"]


@pytest.mark.parametrize(
    ("extensions", "expected"),
    [
        ((), []),
        (("SIZE 1000",), ["SIZE="]),
        (("8BITMIME",), ["BODY=8BITMIME", "BODY=7BIT"]),
        (("SMTPUTF8",), ["SMTPUTF8"]),
        (("SIZE", "8BITMIME", "SMTPUTF8"), ["SIZE=", "BODY=8BITMIME", "BODY=7BIT", "SMTPUTF8"]),
        (("DSN",), ["RET=FULL", "RET=HDRS", "ENVID="]),
    ],
)
def test_smtp_mail_parameters_by_extension(extensions: tuple[str, ...],
                                           expected: list[str]) -> None:
    core = smtp_ready(*extensions)
    assert complete(core, "MAIL FROM:<a@b> ") == expected


def test_smtp_mail_parameter_prefix() -> None:
    core = smtp_ready("SIZE 1000", "8BITMIME")
    assert complete(core, "MAIL FROM:<a@b> B") == ["BODY=8BITMIME", "BODY=7BIT"]
    assert complete(core, "MAIL FROM:<a@b> SIZE=100 BODY=8") == ["BODY=8BITMIME"]


def test_smtp_no_data_before_accepted_rcpt() -> None:
    core = smtp_ready()
    say(core, "MAIL FROM:<a@b>", b"250 ok\r\n")
    assert "DATA" not in complete(core, "")
    assert complete(core, "D") == []
    say(core, "RCPT TO:<nobody@b>", b"550 5.1.1 no such user\r\n")
    assert "DATA" not in complete(core, "")
    say(core, "RCPT TO:<c@d>", b"250 ok\r\n")
    assert complete(core, "DA") == ["DATA"]
    assert "RCPT" in complete(core, "")


def test_smtp_bdat_only_with_chunking() -> None:
    core = smtp_ready("CHUNKING")
    say(core, "MAIL FROM:<a@b>", b"250 ok\r\n")
    say(core, "RCPT TO:<c@d>", b"250 ok\r\n")
    assert "BDAT" in complete(core, "")
    core = smtp_ready()
    say(core, "MAIL FROM:<a@b>", b"250 ok\r\n")
    say(core, "RCPT TO:<c@d>", b"250 ok\r\n")
    assert "BDAT" not in complete(core, "")


def test_smtp_data_mode_headers() -> None:
    core = smtp_ready()
    say(core, "MAIL FROM:<a@b>", b"250 ok\r\n")
    say(core, "RCPT TO:<c@d>", b"250 ok\r\n")
    say(core, "DATA", b"354 go ahead\r\n")
    assert core.in_data
    headers = complete(core, "")
    assert {"From: ", "To: ", "Subject: "} <= set(headers)
    assert "MAIL" not in headers and "QUIT" not in headers
    assert complete(core, "Su") == ["Subject: "]
    assert complete(core, "su") == ["Subject: "]  # header names keep their case
    assert complete(core, "Subject: hel") == []  # no completion inside a header value
    # In DATA a line starting with ':' is message text, not a meta-command.
    assert complete(core, ":a") == []


def test_smtp_lowercase_prefix_gives_lowercase() -> None:
    core = smtp_ready("STARTTLS")
    assert complete(core, "m") == ["mail"]
    assert complete(core, "st") == ["starttls"]
    assert complete(core, "Ma") == ["MAIL"]  # mixed case: the protocol's case
    assert sorted(complete(smtp_connected(), "h")) == ["helo", "help"]


def test_smtp_starttls_gone_after_tls() -> None:
    core = smtp_ready("STARTTLS")
    say(core, "STARTTLS", b"220 go ahead\r\n")
    assert core.wants_tls_upgrade
    core.tls_started()
    assert complete(core, "ST") == []
    assert sorted(complete(core, "")) == sorted(
        ["EHLO", "HELO", "NOOP", "RSET", "VRFY", "HELP", "QUIT"]
    )


def test_completion_start_position_replaces_the_word() -> None:
    core = smtp_ready("AUTH PLAIN")
    completer = ProtocolCompleter(lambda: core)
    (completion,) = completer.get_completions(Document("AUTH PL", 7), CompleteEvent())
    assert completion.text == "PLAIN "
    assert completion.start_position == -2
    (completion,) = completer.get_completions(Document("AUTH ", 5), CompleteEvent())
    assert completion.start_position == 0


def test_completion_uses_text_before_the_cursor_only() -> None:
    core = smtp_ready()
    completer = ProtocolCompleter(lambda: core)
    document = Document("MA FROM:<a@b>", 2)
    assert [c.text for c in completer.get_completions(document, CompleteEvent())] == ["MAIL "]


def test_completed_word_ends_in_a_space() -> None:
    """A word is inserted with a space after it, as bash does, so that the next word is
    not glued on; an open-ended one ("FROM:<", "SIZE=", a header) without."""
    completer = ProtocolCompleter(lambda: imap_selected())

    def inserted(text: str) -> list[str]:
        document = Document(text, len(text))
        return [c.text for c in completer.get_completions(document, CompleteEvent())]

    assert inserted("SELECT") == ["SELECT "]
    assert inserted("FETCH 1 (FL") == ["(FLAGS "]
    smtp = ProtocolCompleter(lambda: smtp_ready())
    assert [c.text for c in smtp.get_completions(Document("MAIL F", 6), CompleteEvent())] == [
        "FROM:<"]


def test_suggest_matches_the_completer() -> None:
    core = smtp_ready("STARTTLS", "AUTH PLAIN LOGIN", "SIZE 10")
    for text in ("", "m", "AUTH ", "MAIL ", "MAIL FROM:<a@b> ", ":", ":a"):
        assert words(core, text) == complete(core, text), text


# --------------------------------------------------------------------------- POP3


def test_pop3_authorization_commands() -> None:
    offered = set(complete(pop3_authorization(), ""))
    assert {"USER", "CAPA", "QUIT"} <= offered
    assert "PASS" not in offered  # only after USER got +OK
    assert not offered & {"STAT", "LIST", "RETR", "DELE"}


def test_pop3_pass_after_user() -> None:
    core = pop3_authorization()
    say(core, "USER alice", b"+OK\r\n")
    assert "PASS" in complete(core, "")


def test_pop3_user_offers_the_url_user() -> None:
    assert complete(pop3_authorization(), "USER ", user="alice") == ["alice"]
    assert complete(pop3_authorization(), "USER ") == []


def test_pop3_transaction_commands() -> None:
    offered = set(complete(pop3_transaction(), ""))
    assert {"STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "QUIT"} <= offered
    assert not offered & {"USER", "PASS", "STLS", "AUTH"}


def test_pop3_stls_only_if_advertised() -> None:
    assert "STLS" not in complete(pop3_authorization(["USER", "SASL PLAIN"]), "")
    assert "STLS" in complete(pop3_authorization(["USER", "STLS"]), "")
    assert "STLS" in complete(pop3_authorization(), "")  # no CAPA yet: maybe


def test_pop3_auth_mechanisms_from_capa() -> None:
    core = pop3_authorization(["USER", "SASL PLAIN LOGIN SCRAM-SHA-256"])
    assert "AUTH" in complete(core, "")
    assert complete(core, "AUTH ") == ["PLAIN", "LOGIN", "SCRAM-SHA-256"]
    assert complete(core, "auth s") == ["scram-sha-256"]
    assert "AUTH" not in complete(pop3_authorization(["USER"]), "")


def test_pop3_message_numbers_from_stat() -> None:
    core = pop3_transaction()
    assert complete(core, "RETR ") == []
    say(core, "STAT", b"+OK 3 4500\r\n")
    assert complete(core, "RETR ") == ["1", "2", "3"]
    assert complete(core, "DELE ") == ["1", "2", "3"]


def test_pop3_message_numbers_from_list_and_deletions() -> None:
    core = pop3_transaction()
    say(core, "LIST", b"+OK 3 messages\r\n1 120\r\n2 200\r\n12 300\r\n.\r\n")
    assert complete(core, "RETR ") == ["1", "2", "12"]
    assert complete(core, "RETR 1") == ["1", "12"]
    say(core, "DELE 2", b"+OK deleted\r\n")
    assert complete(core, "DELE ") == ["1", "12"]
    say(core, "RSET", b"+OK\r\n")
    assert complete(core, "RETR ") == ["1", "2", "12"]


def test_pop3_top_line_counts() -> None:
    core = pop3_transaction()
    say(core, "STAT", b"+OK 1 100\r\n")
    assert complete(core, "TOP ") == ["1"]
    assert complete(core, "TOP 1 ") == ["0", "10"]


def test_pop3_during_sasl_only_cancel() -> None:
    core = pop3_authorization(["SASL PLAIN"])
    say(core, "AUTH PLAIN", b"+ \r\n")
    assert core.sasl_pending
    assert complete(core, "") == ["*"]


# --------------------------------------------------------------------------- IMAP


def test_imap_before_greeting_nothing() -> None:
    assert complete(IMAPConnection(), "") == []


def test_imap_not_authenticated() -> None:
    offered = set(complete(imap_not_authenticated(), ""))
    assert offered == {"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "AUTHENTICATE", "LOGIN"}


def test_imap_logindisabled_hides_login() -> None:
    core = imap_not_authenticated("IMAP4rev1 STARTTLS LOGINDISABLED")
    assert "LOGIN" not in complete(core, "")


def test_imap_authenticated_and_selected() -> None:
    authenticated = set(complete(imap_authenticated(), ""))
    assert {"SELECT", "EXAMINE", "LIST", "STATUS", "APPEND", "LOGOUT"} <= authenticated
    assert not authenticated & {"FETCH", "STORE", "LOGIN", "UID", "EXPUNGE"}
    selected = set(complete(imap_selected(), ""))
    assert {"FETCH", "STORE", "SEARCH", "UID", "EXPUNGE", "CLOSE", "SELECT"} <= selected


def test_imap_user_tag_is_skipped() -> None:
    core = imap_authenticated()
    assert complete(core, "x1 SEL") == ["SELECT"]
    assert complete(core, "SEL") == ["SELECT"]
    assert complete(core, "x1 sel") == ["select"]
    assert complete(core, "a002 SELECT ")[:1] == ["INBOX"]


def test_imap_select_offers_inbox_before_list() -> None:
    assert complete(imap_authenticated(), "SELECT ") == ["INBOX"]


def test_imap_select_mailboxes_from_list_quoted() -> None:
    core = imap_selected()
    assert complete(core, "SELECT ") == [
        "INBOX", '"Sent Items"', "Archive/2024", '"say \\"hi\\""'
    ]
    assert complete(core, "EXAMINE A") == ["Archive/2024"]
    assert complete(core, 'x1 STATUS "Se') == ['"Sent Items"']
    assert complete(core, 'STATUS "S') == ['"Sent Items"', '"say \\"hi\\""']
    assert complete(core, "COPY 1:3 ") == complete(core, "SELECT ")
    assert complete(core, "UID MOVE 7 Ar") == ["Archive/2024"]


def test_quote_mailbox() -> None:
    assert quote_mailbox("INBOX") == "INBOX"
    assert quote_mailbox("Sent Items") == '"Sent Items"'
    assert quote_mailbox('a"b\\c') == '"a\\"b\\\\c"'
    assert quote_mailbox("") == '""'


def test_imap_fetch_items_keep_the_paren() -> None:
    core = imap_selected()
    assert complete(core, "FETCH 1 (") == ["(" + item for item in FETCH_ITEMS]
    assert complete(core, "FETCH 1 (FL") == ["(FLAGS"]
    assert complete(core, "FETCH 1:* (FLAGS EN") == ["ENVELOPE"]
    assert complete(core, "x1 UID FETCH 1:* (BODY.P") == ["(BODY.PEEK[]"]
    assert complete(core, "x1 uid fetch 1:* (body.p") == ["(body.peek[]"]
    completer = ProtocolCompleter(lambda: core)
    (completion,) = completer.get_completions(Document("FETCH 1 (FL", 11), CompleteEvent())
    assert completion.start_position == -3  # replaces "(FL" with "(FLAGS"


def test_imap_binary_fetch_items_only_when_advertised() -> None:
    core = imap_selected()  # IMAP4rev1 MOVE UIDPLUS: no BINARY
    assert complete(core, "FETCH 1 (BIN") == []
    core = imap_not_authenticated("IMAP4rev1 BINARY")
    say(core, "LOGIN a b", b"a001 OK in\r\n")
    say(core, "SELECT INBOX", b"a002 OK [READ-WRITE] ok\r\n")
    assert complete(core, "FETCH 1 (BIN") == ["(BINARY[]", "(BINARY.PEEK[]", "(BINARY.SIZE[]"]


def test_imap_store_items_and_flags() -> None:
    core = imap_selected()
    assert "+FLAGS" in complete(core, "STORE 1 ")
    assert complete(core, "STORE 1 +FLAGS (\\Se") == ["(\\Seen"]
    assert complete(core, "UID STORE 5 FLAGS \\D") == ["\\Deleted", "\\Draft"]


def test_imap_uid_subcommands() -> None:
    core = imap_selected()
    assert set(complete(core, "UID ")) == {"FETCH", "STORE", "COPY", "MOVE", "SEARCH", "EXPUNGE"}
    assert complete(core, "x1 UID F") == ["FETCH"]


def test_imap_uid_subcommands_follow_capabilities() -> None:
    core = imap_not_authenticated("IMAP4rev1")
    say(core, "LOGIN a b", b"a001 OK in\r\n")
    say(core, "SELECT INBOX", b"a002 OK [READ-WRITE] ok\r\n")
    assert set(complete(core, "UID ")) == {"FETCH", "STORE", "COPY", "SEARCH"}


def test_imap_search_keys() -> None:
    core = imap_selected()
    assert complete(core, "SEARCH UNS") == ["UNSEEN"]
    assert "SINCE" in complete(core, "UID SEARCH ")


def test_imap_authenticate_mechanisms() -> None:
    core = imap_not_authenticated()
    assert complete(core, "AUTHENTICATE ") == ["PLAIN", "XOAUTH2"]
    assert complete(core, "a1 AUTHENTICATE X") == ["XOAUTH2"]
    assert complete(core, "a1 authenticate x") == ["xoauth2"]


def test_imap_list_patterns() -> None:
    assert complete(imap_authenticated(), "LIST ") == ['"" "*"', '"" "%"']


# --------------------------------------------------------------------------- meta-commands


@pytest.mark.parametrize("factory", [smtp_ready, pop3_transaction, imap_selected])
def test_meta_command_names(factory: Any) -> None:
    core = factory()
    assert complete(core, ":a") == [":auth"]
    assert complete(core, ":rec") == [":record", ":reconnect"]
    assert complete(core, ":reco") == [":record", ":reconnect"]
    assert complete(core, ":recon") == [":reconnect"]
    assert {":help", ":quit", ":raw", ":file", ":save", ":starttls", ":explain", ":record"} <= set(
        complete(core, ":")
    )


def test_meta_completion_replaces_the_colon_word() -> None:
    completer = ProtocolCompleter(lambda: smtp_ready())
    (completion,) = completer.get_completions(Document(":a", 2), CompleteEvent())
    assert completion.start_position == -2


def test_meta_auth_and_raw_arguments() -> None:
    core = smtp_ready("AUTH PLAIN")
    assert complete(core, ":auth ") == ["plain"]  # only what the server offers
    assert complete(core, ":auth l") == []
    offered = smtp_ready("AUTH LOGIN CRAM-MD5 DIGEST-MD5 SCRAM-SHA-256")
    # the weak ones (named only) come after the others
    assert complete(offered, ":auth ") == ["scram-sha-256", "cram-md5", "login", "digest-md5"]
    assert complete(offered, ":auth c") == ["cram-md5"]
    assert complete(core, ":raw ") == ["on", "off"]
    assert complete(core, ":auth plain ") == []


def test_meta_xclient_offers_the_attributes_the_server_advertised() -> None:
    # Postfix's list; REVERSE_NAME is not one --xclient takes, so it is not offered
    postfix = smtp_ready("XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT")
    assert complete(postfix, ":xclient ") == [
        "ADDR=", "NAME=", "PORT=", "PROTO=", "HELO=", "LOGIN=", "DESTADDR=", "DESTPORT=",
    ]  # fmt: skip
    assert complete(postfix, ":xclient ADDR") == ["ADDR="]  # the word being typed counts
    assert complete(postfix, ":xclient ADDR=192.0.2.1 ") == [
        "NAME=", "PORT=", "PROTO=", "HELO=", "LOGIN=", "DESTADDR=", "DESTPORT=",
    ]  # fmt: skip
    assert complete(postfix, ":xclient ADDR=192.0.2.1 n") == ["name="]
    assert complete(postfix, ":xclient ADDR=19") == []  # a value: nothing to offer
    assert complete(smtp_ready("XCLIENT ADDR NAME"), ":xclient ") == ["ADDR=", "NAME="]
    assert complete(smtp_ready("PIPELINING"), ":xclient ") == []  # not offered here
    assert "ADDR=" in complete(smtp_connected(), ":xclient ")  # before EHLO: all of ours


@pytest.mark.parametrize(
    ("factory", "expected"),
    [(smtp_ready, {"RCPT", "MAIL", "EHLO"}), (pop3_transaction, {"RETR", "DELE"}),
     (imap_selected, {"FETCH", "SELECT"})],
)
def test_meta_help_offers_protocol_commands(factory: Any, expected: set[str]) -> None:
    core = factory()
    assert expected <= set(complete(core, ":help "))
    assert all(not c.startswith(":") for c in complete(core, ":help "))


def test_meta_help_prefix() -> None:
    assert "RCPT" in complete(smtp_ready(), ":help R")
    assert "rcpt" in complete(smtp_ready(), ":help r")


def test_file_completes_paths(tmp_path: Any) -> None:
    (tmp_path / "message.eml").write_text("Subject: x\n")
    core = smtp_ready()
    text = f":file {tmp_path}/mes"
    assert complete(core, text) == ["sage.eml"]
