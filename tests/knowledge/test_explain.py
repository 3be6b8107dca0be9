"""The explainer: the course material's problems, contexts, contradictions, the data files."""

from __future__ import annotations

import json

import pytest

from mailtalk.knowledge import catalogue as kb
from mailtalk.knowledge import codes
from mailtalk.knowledge.catalogue import CATEGORIES
from mailtalk.knowledge.explain import Explanation, explain


def _useful(explanation: Explanation) -> None:
    """What every failure explanation must carry (issue 5, "Each explanation says")."""
    assert explanation.summary
    assert explanation.side
    assert explanation.causes, "no causes"
    assert explanation.fixes_user, "no fix for the user"
    assert explanation.fixes_admin, "no fix for the admin"
    assert explanation.references, "no reference"
    assert explanation.transient is not None


# The problems of the course material, in the wording the course shows them.
COURSE = [
    ("501 5.1.8 <me@nowhere.invalid>... Sender domain must exist", "sender_domain", False),
    ("503 Need MAIL before RCPT", "sequence_error", False),
    ("503 5.0.0 Need MAIL before RCPT", "sequence_error", False),
    ("550 5.7.1 <bob@example.net>... Relaying Denied", "relay_denied", False),
    ('-ERR [AUTH] Password supplied for "alice" is incorrect.', "auth_failed", False),
    ('-ERR [AUTH] PAM authentication failed for user "alice"', "auth_failed", False),
    ("452 4.4.5 Insufficient disk space; try again later", "storage_temp", True),
    (
        "-ERR [SYS/TEMP] Unable to copy mail spool file, quota exceeded (122)",
        "mailbox_full_quota",
        True,
    ),
    (
        "-ERR [IN-USE] /var/spool/mail/alice lock busy! Is another session active? (11)",
        "mailbox_locked",
        True,
    ),
    ("-ERR Unable to process From lines (envelopes), change recognition modes.", "other", False),
]


@pytest.mark.parametrize(("reply", "category", "transient"), COURSE)
def test_course_problems(reply: str, category: str, transient: bool) -> None:
    explanation = explain(reply)
    assert explanation.category == category
    assert explanation.transient is transient
    assert explanation.matched is not None, "the course wording should have its own entry"
    _useful(explanation)


def test_relaying_denied_teaches_the_path_of_mail() -> None:
    explanation = explain("550 5.7.1 <bob@example.net>... Relaying denied")
    text = " ".join(explanation.causes + explanation.fixes_user)
    assert "MX" in text and "587" in text and "AUTH" in text
    assert "MTA" in explanation.side


def test_sender_domain_says_what_to_type_instead() -> None:
    explanation = explain("501 <me@test>... Sender domain must exist")
    assert "MAIL FROM" in explanation.causes[0]
    assert any("resolve" in fix or "exists" in fix for fix in explanation.fixes_user)


@pytest.mark.parametrize(
    "wording",
    [
        "554 5.7.1 <bob@example.net>: Relay access denied",
        "550 relay not permitted",
        "550 5.7.1 <bob@example.net>... Relaying denied",
        "553 sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)",
        "513 Relaying denied.",
        "550 5.7.1 Unable to relay",
        "550 5.4.1 Relay Access Denied",
        "550 5.7.54 SMTP; Unable to relay recipient in non-accepted domain",
        "550 Delivery is not allowed to this address.",
        "554 5.7.1 Relaying denied. Proper authentication required.",
        "550 5.7.1 Relaying denied. IP name lookup failed [192.0.2.1]",
    ],
)
def test_relay_denial_in_its_many_wordings(wording: str) -> None:
    assert explain(wording).category == "relay_denied"


def test_503_means_something_else_after_rcpt_and_after_auth() -> None:
    after_rcpt = explain("503 5.5.1 Error: bad sequence of commands", command="RCPT TO:<b@x>")
    after_auth = explain("503 5.5.1 Error: bad sequence of commands", command="AUTH PLAIN")
    assert after_rcpt.context is not None and "MAIL FROM" in after_rcpt.context
    assert after_auth.context is not None and "STARTTLS" in after_auth.context
    assert after_rcpt.context != after_auth.context
    # without the command, every reading is offered
    alone = explain("503")
    assert {after for after, _ in alone.other_contexts} >= {"RCPT", "AUTH"}


def test_554_greeting_versus_554_after_data() -> None:
    assert explain("554", command="greeting").category == "service_unavailable"
    assert explain("554", command="end of data").category == "spam_or_policy_block"


def test_a_postfix_log_line_brings_its_command() -> None:
    explanation = explain(
        "status=bounced (host mx.example.net[192.0.2.7] said: 503 5.5.1 Error: need MAIL "
        "command (in reply to RCPT TO command))"
    )
    assert explanation.command == "RCPT"
    assert explanation.context is not None


def test_contradiction_is_flagged() -> None:
    explanation = explain("550 4.2.2 Mailbox full")
    assert explanation.contradiction is not None and "contradict" in explanation.contradiction
    assert explanation.transient is False  # clients act on the basic code
    assert explain("552 5.2.2 Mailbox full").contradiction is None


def test_bare_codes() -> None:
    for entry in codes.basic_codes():
        explanation = explain(str(entry.code))
        assert explanation.category in CATEGORIES
        assert explanation.summary == entry.meaning
        if entry.code >= 400:
            _useful(explanation)
            assert explanation.transient is (entry.code < 500)
        else:
            assert explanation.category == "ok"


def test_every_registered_enhanced_code() -> None:
    for entry in codes.registry():
        for klass in "245":
            code = entry.code.replace("X", klass, 1)
            explanation = explain(code)
            assert explanation.enhanced_code == code
            assert explanation.category in CATEGORIES
            assert code in explanation.meaning[0]


def test_pop3_and_imap_response_codes_alone() -> None:
    in_use = explain("IN-USE", "pop3")
    assert in_use.category == "mailbox_locked" and in_use.transient is True
    assert explain("[LOGIN-DELAY]", "pop3").category == "login_delay"
    assert explain("OVERQUOTA", "imap").category == "mailbox_full_quota"
    assert explain("[AUTHENTICATIONFAILED]").category == "auth_failed"
    assert explain("* OK [ALERT] System going down in 5 minutes").category == "ok"


def test_imap_statuses() -> None:
    assert explain("a1 BAD Error in IMAP command received by server.").category == "syntax_error"
    assert explain("* BYE Logging out", command="LOGOUT").category == "ok"
    assert explain("a2 NO [PRIVACYREQUIRED] Plaintext login disallowed").category == "tls_required"


def test_success_is_ok_whatever_the_words() -> None:
    for reply in (
        "250-mx.example.com\n250-AUTH PLAIN LOGIN\n250 SIZE 10240000",
        "235 2.7.0 Authentication successful",
        "+OK Logged in.",
        "a1 OK [READ-WRITE] Select completed",
        "354 End data with <CR><LF>.<CR><LF>",
    ):
        explanation = explain(reply)
        assert explanation.category == "ok", reply
        assert explanation.transient is None and explanation.causes == []


def test_json_has_the_promised_fields() -> None:
    data = explain(
        "550 5.1.1 <nobody@example.com>: Recipient address rejected: "
        "User unknown in local recipient table"
    ).to_json()
    for key in (
        "protocol",
        "code",
        "enhanced_code",
        "category",
        "transient",
        "summary",
        "causes",
        "fixes",
    ):
        assert key in data
    assert (data["protocol"], data["code"], data["enhanced_code"]) == ("smtp", "550", "5.1.1")
    assert data["category"] == "unknown_user" and data["transient"] is False
    assert data["fixes"]["user"] and data["fixes"]["admin"]
    json.dumps(data)


def test_unknown_text_is_not_known() -> None:
    assert not explain("hello world").known
    assert explain("Relay access denied").known  # a wording alone is enough


# --- the data files -----------------------------------------------------------


def _all_patterns() -> list[kb.Pattern]:
    return [p for files in kb.PATTERN_FILES.values() for name in files for p in kb.patterns(name)]


def test_pattern_ids_are_unique_and_sourced() -> None:
    patterns = _all_patterns()
    ids = [p.id for p in patterns]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    assert all(p.source for p in patterns)
    for pattern in patterns:
        kb.regex(pattern)  # compiles, or names the entry


def test_every_category_has_data() -> None:
    used = {p.category for p in _all_patterns()}
    used |= {c.category for protocol in kb.CODE_FILES for c in kb.response_codes(protocol).values()}
    assert used >= set(CATEGORIES) - {"ok"}
    for name in CATEGORIES:
        category = kb.category(name)
        assert category.title and category.summary and category.side
        if name != "ok":
            assert category.causes and category.fixes_user and category.fixes_admin


def test_response_code_tables_cover_the_rfcs() -> None:
    pop3 = kb.response_codes("pop3")
    assert {"IN-USE", "LOGIN-DELAY", "SYS/TEMP", "SYS/PERM", "AUTH", "UTF8"} <= set(pop3)
    imap = kb.response_codes("imap")
    rfc3501 = {
        "ALERT",
        "BADCHARSET",
        "CAPABILITY",
        "PARSE",
        "PERMANENTFLAGS",
        "READ-ONLY",
        "READ-WRITE",
        "TRYCREATE",
        "UIDNEXT",
        "UIDVALIDITY",
        "UNSEEN",
    }
    rfc5530 = {
        "UNAVAILABLE",
        "AUTHENTICATIONFAILED",
        "AUTHORIZATIONFAILED",
        "EXPIRED",
        "PRIVACYREQUIRED",
        "CONTACTADMIN",
        "NOPERM",
        "INUSE",
        "EXPUNGEISSUED",
        "CORRUPTION",
        "SERVERBUG",
        "CLIENTBUG",
        "CANNOT",
        "LIMIT",
        "OVERQUOTA",
        "ALREADYEXISTS",
        "NONEXISTENT",
    }
    assert rfc3501 | rfc5530 <= set(imap)


def test_only_the_protocol_at_hand_is_loaded(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[str] = []
    original = kb.read_data

    def spy(name: str) -> dict[str, object]:
        read.append(name)
        return original(name)

    for cached in (kb.patterns, kb.response_codes):
        cached.cache_clear()
    monkeypatch.setattr(kb, "read_data", spy)
    try:
        explain("554 5.7.1 <bob@example.net>: Relay access denied")
        assert not any("imap" in name or "pop3" in name for name in read), read
        explain("-ERR [IN-USE] busy")
        assert "pop3_codes.toml" in read
        assert not any("imap" in name for name in read), read
    finally:
        for cached in (kb.patterns, kb.response_codes):
            cached.cache_clear()


# --- the reference servers' own wordings ------------------------------------------

# What each failure reply of a personality (servers/personalities) is about, and
# the command it answers: the explainer must read our servers right.
PERSONALITY_KEYS = {
    "relay_denied": ("relay_denied", "RCPT"),
    "unknown_user": ("unknown_user", "RCPT"),
    "need_mail": ("sequence_error", "RCPT"),
    "need_rcpt": ("sequence_error", "DATA"),
    "no_valid_recipients": ("sequence_error", "DATA"),
    "nested_mail": ("sequence_error", "MAIL"),
    "need_helo": ("sequence_error", "MAIL"),
    "sender_domain": ("sender_domain", "MAIL"),
    "sender_domain_tempfail": ("sender_domain", "MAIL"),
    "syntax_error": ("syntax_error", "MAIL"),
    "unknown_command": ("syntax_error", "FOO"),
    "message_too_big": ("message_too_big", "end of data"),
    "size_exceeded": ("message_too_big", "MAIL"),
    "storage_full": ("storage_temp", "end of data"),
    "auth_failed": ("auth_failed", "AUTH"),
    "auth_required": ("auth_required", "MAIL"),
    "tls_required": ("tls_required", "MAIL"),
    "too_many_connections": ("rate_limited_greylist", "greeting"),
    "early_talker_greeting": ("sequence_error", "greeting"),
    "early_talker_rejected": ("sequence_error", "MAIL"),
}


# Where a personality's wording says something more precise than its key.
EXCEPTIONS = {
    # submission with smtpd_client_restrictions = permit_sasl_authenticated, reject
    ("postfix", "auth_required"): "spam_or_policy_block",
    # Exim cannot tell an unknown local user from an unroutable domain
    ("exim", "unknown_user"): "dns_or_routing",
}


def test_reference_server_wordings_are_explained_right() -> None:
    """Without the greeting (explain REPLY), and with it, as the REPL explains a reply:
    the greeting names the program, and its own wordings must still be found."""
    from mailtalk.servers.personalities import personality, personality_names

    wrong = []
    for name in personality_names():
        persona = personality(name)
        greeting = "\n".join(persona.lines("banner", me="mx.example.net",
                                           date="Sun, 06 Dec 2026 21:40:34 +0000"))
        for key, (expected, command) in PERSONALITY_KEYS.items():
            template = persona.template(key)
            if template.code < 400:
                continue  # qmail takes MAIL without HELO
            values = {field: "bob@example.net" for field in template.placeholders}
            reply = "\n".join(persona.lines(key, **values))
            for banner in (None, greeting):
                got = explain(reply, "smtp", command, banner=banner).category
                if got != EXCEPTIONS.get((name, key), expected):
                    wrong.append(f"{name}.{key}: {reply!r} after {banner!r} -> {got}, "
                                 f"expected {expected}")
    assert wrong == []


def _matched_id(text: str) -> str | None:
    matched = explain(text).matched
    return matched.id if matched else None


def test_the_literal_prefilter_changes_no_match(monkeypatch: pytest.MonkeyPatch) -> None:
    """Skipping a wording whose leading literal is absent must never change the result."""
    from tests.knowledge.test_corpus import load

    texts = [entry.text for entry in load()] + [reply for reply, _, _ in COURSE]
    with_filter = [_matched_id(t) for t in texts]
    kb.patterns.cache_clear()
    monkeypatch.setattr(kb, "_leading_literal", lambda source: "")
    try:
        without = [_matched_id(t) for t in texts]
    finally:
        kb.patterns.cache_clear()
    assert with_filter == without


@pytest.mark.parametrize(
    ("source", "literal"),
    [
        (r"relay access denied", "relay access denied"),
        (r"unresolvable RFC\.?532[12]", "unresolvable rfc"),
        (r"4\.7\.28 .*unusual rate", "4.7.28 "),
        (r"abc", ""),  # too short to be worth it
        (r"user unknown|no such user", ""),  # alternation: no single literal
        (r"^550", ""),
        (r"(?i)foo bar", ""),
        (r"lock busy! Is another", "lock busy! is another"),
    ],
)
def test_leading_literal(source: str, literal: str) -> None:
    assert kb._leading_literal(source) == literal


# The course's watch-out: typing before the greeting. Each server's words for it, as
# pasted (no command known): the cause is the early talk, not a missing HELO.
EARLY_TALK = [
    ("554 mx.example.net ESMTP not accepting messages: you spoke before my greeting",
     "spoke-before-the-greeting"),
    ("503 5.5.1 Bad sequence of commands: you spoke before my greeting; only QUIT now",
     "spoke-before-the-greeting"),
    ("554 mx.example.net ESMTP not accepting messages", "sendmail-greet-pause-greeting"),
    ("550 5.0.0 Command rejected", "sendmail-command-rejected"),
    ("554 5.5.0 Command rejected", "command-rejected-protocol"),
    ("554 SMTP synchronization error", "exim-synchronization-error"),
    ("521 5.5.1 Protocol error", "postscreen-protocol-error"),
]


@pytest.mark.parametrize(("reply", "entry"), EARLY_TALK)
def test_talking_before_the_greeting_is_explained(reply: str, entry: str) -> None:
    explanation = explain(reply)
    assert explanation.category == "sequence_error"
    assert explanation.matched is not None and explanation.matched.id == entry
    assert "greeting" in explanation.causes[0]
    assert any("greeting" in fix for fix in explanation.fixes_user)
    assert explanation.transient is False


def test_a_milter_command_rejected_is_still_policy() -> None:
    """Sendmail's milter refusal (5.7.1) is not the early-talker one (5.0.0)."""
    assert explain("550 5.7.1 Command rejected").category == "spam_or_policy_block"


# RFC 4954 section 6: 454 4.7.0 is the server's own authentication failing for a
# moment; telling the user the password is wrong names the wrong cause.
TEMPORARY_AUTH_FAILURES = [
    ("454 4.7.0 Temporary authentication failure", "AUTH"),  # RFC 4954, Sendmail
    # Postfix with Dovecot SASL when the auth socket goes away
    ("454 4.7.0 Temporary authentication failure: Connection lost to authentication server",
     "AUTH"),
    ("-ERR [SYS/TEMP] Temporary authentication failure.", "PASS"),  # Dovecot POP3
    ("A1 NO [UNAVAILABLE] Temporary authentication failure.", "LOGIN"),  # Dovecot IMAP
    ("454 Temporary authentication failure", None),
]


@pytest.mark.parametrize(("reply", "command"), TEMPORARY_AUTH_FAILURES)
def test_a_temporary_authentication_failure_is_the_servers(reply: str, command: str | None) -> None:
    explanation = explain(reply, command=command)
    assert explanation.category != "auth_failed"
    assert explanation.transient is True
    said = " ".join(explanation.causes + explanation.fixes_user)
    assert "password" not in said or "may well be right" in said or "do not change" in said


def test_a_wrong_password_stays_a_wrong_password() -> None:
    for reply, command in (
        ("535 5.7.8 Error: authentication failed: authentication failure", "AUTH"),
        ("535 5.7.8 Authentication credentials invalid", "AUTH"),
        ("-ERR [AUTH] Authentication failed.", "PASS"),
    ):
        assert explain(reply, command=command).category == "auth_failed"


def test_user_not_local_is_the_server_not_serving_that_recipient() -> None:
    # RFC 5321 4.2.2: "551 User not local; please try <forward-path>": the user exists
    # somewhere else; this server will not take the mail for them
    explanation = explain("551 User not local; please try <bob@example.org>", command="RCPT")
    assert explanation.category == "relay_denied"
    assert explanation.matched is not None and explanation.matched.id == "user-not-local"
    assert explain("550 5.1.1 <bob@example.org>: User unknown", command="RCPT").category == (
        "unknown_user")
