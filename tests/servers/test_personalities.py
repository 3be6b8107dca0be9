"""MTA personalities: complete, well-formed, faithful to the real wordings, lazily loaded."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailtalk.servers.personalities import (
    DEFAULT_PERSONALITY,
    KEYS,
    PLACEHOLDERS,
    REPLY_VALUES,
    Personality,
    PersonalityError,
    UnknownPersonalityError,
    personality,
    personality_names,
)

NAMES = ("mailtalk", "postfix", "qmail", "sendmail", "exim")

# The reply classes each key may have (first digit of the code).
CLASSES: dict[str, set[int]] = {
    "banner": {2},
    "ehlo_greeting": {2},
    "helo": {2},
    "mail_ok": {2},
    "rcpt_ok": {2},
    "data_start": {3},
    "data_ok": {2},
    "quit": {2},
    "rset": {2},
    "noop": {2},
    "vrfy": {2},
    "help": {2, 5},  # Postfix has no HELP
    "relay_denied": {5},
    "unknown_user": {5},
    "need_mail": {5},
    "need_rcpt": {5},
    "nested_mail": {2, 5},  # qmail starts a new transaction
    "need_helo": {2, 5},  # qmail does not require HELO
    "auth_before_helo": {5},
    "sender_domain": {4, 5},  # Postfix: 450 by default
    "sender_domain_tempfail": {4},
    "syntax_error": {5},
    "unknown_command": {5},
    "unknown_parameter": {2, 5},  # qmail ignores parameters
    "line_too_long": {5},
    "message_too_big": {5},
    "size_exceeded": {5},
    "storage_full": {4},
    "bare_newline": {4, 5},  # qmail: 451
    "bad_sender_syntax": {5},
    "bad_recipient_syntax": {5},
    "no_valid_recipients": {5},
    "too_many_recipients": {4},
    "expn_disabled": {5},
    "auth_ok": {2},
    "auth_failed": {5},
    "auth_required": {5},
    "auth_needs_tls": {5},
    "tls_ready": {2},
    "tls_not_available": {4},
    "tls_required": {5},
    "too_many_connections": {4},
    "timeout": {4},
    "shutdown": {4},
    "early_talker_greeting": {5},
    "early_talker_rejected": {5},
    "too_many_errors": {4},
    "too_many_auth_failures": {4},
}
EXACT_CODES = {
    "banner": 220,
    "ehlo_greeting": 250,
    "helo": 250,
    "data_start": 354,
    "quit": 221,
    "vrfy": 252,
    "auth_ok": 235,
    "tls_ready": 220,
}
SAMPLE = {
    "me": "mx.example.org",
    "date": "Mon, 1 Jan 2024 12:00:00 +0000",
    "helo": "client.example.net",
    "client": "192.0.2.7",
    "sender": "alice@example.net",
    "rcpt": "bob@example.org",
    "queue_id": "4F3A21C0D2",
    "argument": "bob",
    "command": "MAIL",
    "syntax": "MAIL FROM:<address>",
    "detail": "use MAIL FROM:<address>",
    "parameter": "FOO=BAR",
    "max_size": "10240000",
}


def every(name: str) -> Personality:
    return personality(name)


def test_names_default_first() -> None:
    assert personality_names() == NAMES
    assert DEFAULT_PERSONALITY == "mailtalk"
    assert personality().name == "mailtalk"
    assert personality(" Postfix ").name == "postfix"


def test_unknown_personality_is_a_key_error_with_a_clear_message() -> None:
    with pytest.raises(KeyError) as caught:
        personality("courier")
    assert isinstance(caught.value, UnknownPersonalityError)
    assert str(caught.value) == (
        "unknown personality 'courier'; known: mailtalk, postfix, qmail, sendmail, exim"
    )


def test_the_contract_covers_the_keys() -> None:
    assert set(CLASSES) == set(KEYS) == set(REPLY_VALUES)
    assert {"me", "date", "rcpt", "sender", "queue_id", "max_size"} <= PLACEHOLDERS


@pytest.mark.parametrize("name", NAMES)
def test_every_personality_defines_every_key(name: str) -> None:
    persona = every(name)
    assert tuple(persona.replies) == KEYS
    assert persona.software and persona.description
    assert persona.extensions and all(isinstance(e, str) for e in persona.extensions)


@pytest.mark.parametrize("name", NAMES)
def test_codes_are_valid_and_of_the_right_class(name: str) -> None:
    for key, reply in every(name).replies.items():
        assert 200 <= reply.code <= 559 and reply.code % 100 // 10 <= 5, (name, key)
        assert reply.code // 100 in CLASSES[key], (name, key, reply.code)
        if key in EXACT_CODES:
            assert reply.code == EXACT_CODES[key], (name, key)


@pytest.mark.parametrize("name", NAMES)
def test_enhanced_codes_match_the_reply_class(name: str) -> None:
    for key, reply in every(name).replies.items():
        for line in reply.text.split("\n"):
            match = re.match(r"([0-9])\.[0-9]{1,3}\.[0-9]{1,3}\b", line)
            if match:
                assert int(match.group(1)) == reply.code // 100, (name, key, reply.text)


@pytest.mark.parametrize("name", NAMES)
def test_formatting_with_every_placeholder_works(name: str) -> None:
    persona = every(name)
    for key in KEYS:
        code, text = persona.reply(key, **SAMPLE)
        assert code == persona.replies[key].code
        assert "{" not in text and "}" not in text, (name, key, text)
        lines = persona.lines(key, **SAMPLE)
        assert lines[-1].startswith(f"{code} ") or lines[-1] == str(code)
        assert all(line.startswith(f"{code}-") for line in lines[:-1])
        assert all("\r" not in line and "\n" not in line for line in lines)


@pytest.mark.parametrize("name", NAMES)
def test_templates_use_only_the_values_the_server_gives(name: str) -> None:
    for key, reply in every(name).replies.items():
        assert reply.placeholders <= REPLY_VALUES[key] | {"me", "date"}, (name, key)
        assert reply.placeholders <= PLACEHOLDERS


@pytest.mark.parametrize("name", NAMES)
def test_every_wording_says_where_it_comes_from(name: str) -> None:
    for key, reply in every(name).replies.items():
        assert re.search(r"\S.* \[(checked|recalled|mailtalk)\]$", reply.source), (name, key)


def test_a_missing_value_fails_loudly() -> None:
    persona = personality("postfix")
    with pytest.raises(
        PersonalityError, match=r"postfix reply 'relay_denied' needs a value for rcpt"
    ):
        persona.reply("relay_denied", me="mx.example.org")
    with pytest.raises(PersonalityError, match="needs a value for me"):
        persona.reply("banner")
    with pytest.raises(PersonalityError, match="no reply 'nonsense'"):
        persona.reply("nonsense", me="x")


def test_extra_values_are_ignored_and_date_is_filled_in() -> None:
    code, text = personality("postfix").reply("rset", me="mx", rcpt="unused")
    assert (code, text) == (250, "2.0.0 Ok")
    code, text = personality("sendmail").reply("banner", me="mx.example.org")
    assert code == 220
    assert re.fullmatch(
        r"mx\.example\.org ESMTP Sendmail 8\.18\.1/8\.18\.1; "
        r"\w{3}, \d{1,2} \w{3} \d{4} [\d:]{8} [+-]\d{4}",
        text,
    )


def test_qmail_errors_end_in_a_bracketed_status_code() -> None:
    exceptions = {"bare_newline"}  # "451 See http://pobox.com/~djb/docs/smtplf.html."
    for key, reply in personality("qmail").replies.items():
        if reply.code >= 400 and key not in exceptions:
            assert re.search(r"\(#[245]\.\d{1,3}\.\d{1,3}\)$", reply.text), (key, reply.text)
            assert reply.text.rstrip()[-4] != " "


def test_postfix_sendmail_and_mailtalk_errors_carry_enhanced_codes() -> None:
    for name in ("postfix", "sendmail", "mailtalk"):
        for key, reply in personality(name).replies.items():
            if reply.code >= 400 and key != "shutdown":
                # A greeting goes before EHLO, so before ENHANCEDSTATUSCODES (RFC 2034).
                greeting = {"too_many_connections", "early_talker_greeting"}
                assert reply.enhanced is not None or key in greeting, (name, key)


def test_exim_sends_no_enhanced_codes() -> None:
    for key, reply in personality("exim").replies.items():
        assert reply.enhanced is None, key


@pytest.mark.parametrize(
    ("name", "key", "values", "expected"),
    [
        ("qmail", "banner", {}, (220, "mx.example.org ESMTP")),
        ("qmail", "relay_denied", {"rcpt": "b@x"},
         (553, "sorry, that domain isn't in my list of allowed rcpthosts (#5.7.1)")),
        ("qmail", "need_mail", {}, (503, "MAIL first (#5.5.1)")),
        ("qmail", "need_rcpt", {}, (503, "RCPT first (#5.5.1)")),
        ("qmail", "syntax_error", {"command": "MAIL", "syntax": "", "detail": "", "argument": ""},
         (555, "syntax error (#5.5.4)")),
        ("qmail", "data_ok", {"queue_id": "1700000000 qp 4242"}, (250, "ok 1700000000 qp 4242")),
        ("postfix", "banner", {}, (220, "mx.example.org ESMTP Postfix")),
        ("postfix", "relay_denied", {"rcpt": "bob@example.net"},
         (554, "5.7.1 <bob@example.net>: Relay access denied")),
        ("postfix", "unknown_user", {"rcpt": "nobody@example.org"},
         (550, "5.1.1 <nobody@example.org>: Recipient address rejected: "
               "User unknown in local recipient table")),
        ("postfix", "need_mail", {}, (503, "5.5.1 Error: need MAIL command")),
        ("postfix", "need_rcpt", {}, (503, "5.5.1 Error: need RCPT command")),
        ("postfix", "sender_domain", {"sender": "a@nowhere.invalid"},
         (450, "4.1.8 <a@nowhere.invalid>: Sender address rejected: Domain not found")),
        ("postfix", "unknown_command", {"command": "FOO"},
         (502, "5.5.2 Error: command not recognized")),
        ("postfix", "data_ok", {"queue_id": "4F3A21C0D2"},
         (250, "2.0.0 Ok: queued as 4F3A21C0D2")),
        ("postfix", "tls_required", {}, (530, "5.7.0 Must issue a STARTTLS command first")),
        ("postfix", "bare_newline", {},
         (521, "5.5.2 mx.example.org Error: bare <LF> received")),
        ("postfix", "syntax_error",
         {"command": "MAIL", "syntax": "MAIL FROM:<address>", "detail": "", "argument": "x"},
         (501, "5.5.4 Syntax: MAIL FROM:<address>")),
        ("sendmail", "relay_denied", {"rcpt": "bob@example.net"},
         (550, "5.7.1 <bob@example.net>... Relaying denied")),
        ("sendmail", "unknown_user", {"rcpt": "nobody@example.org"},
         (550, "5.1.1 <nobody@example.org>... User unknown")),
        ("sendmail", "need_mail", {}, (503, "5.0.0 Need MAIL before RCPT")),
        ("sendmail", "sender_domain", {"sender": "a@nowhere.invalid"},
         (553, "5.1.8 <a@nowhere.invalid>... Domain of sender address a@nowhere.invalid "
               "does not exist")),
        ("exim", "relay_denied", {"rcpt": "b@x"}, (550, "relay not permitted")),
        ("exim", "unknown_user", {"rcpt": "b@x"}, (550, "Unrouteable address")),
        ("exim", "need_mail", {}, (503, "sender not yet given")),
        ("exim", "ehlo_greeting", {"helo": "client.example", "client": "192.0.2.7"},
         (250, "mx.example.org Hello client.example [192.0.2.7]")),
        ("mailtalk", "sender_domain", {"sender": "a@nowhere.invalid"},
         (501, "5.1.8 Sender domain must exist")),
        ("mailtalk", "too_many_recipients", {}, (452, "4.5.3 Too many recipients")),
        ("sendmail", "early_talker_greeting", {"client": "192.0.2.7"},
         (554, "mx.example.org ESMTP not accepting messages")),
        ("sendmail", "early_talker_rejected", {"command": "MAIL"},
         (550, "5.0.0 Command rejected")),
        ("exim", "early_talker_greeting", {"client": "192.0.2.7"},
         (554, "SMTP synchronization error")),
        ("postfix", "early_talker_greeting", {"client": "192.0.2.7"},
         (521, "5.5.1 Protocol error")),
    ],
)  # fmt: skip
def test_real_wordings(
    name: str, key: str, values: dict[str, str], expected: tuple[int, str]
) -> None:
    assert personality(name).reply(key, me="mx.example.org", **values) == expected


def test_multi_line_replies() -> None:
    lines = personality("exim").lines(
        "sender_domain", me="mx.example.org", sender="a@nowhere.invalid"
    )
    assert lines == [
        "550-Verification failed for <a@nowhere.invalid>",
        "550-Unrouteable address",
        "550 Sender verify failed",
    ]
    assert personality("postfix").lines("rset", me="mx") == ["250 2.0.0 Ok"]


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("postfix", r"[0-9A-F]{10,16}"),
        ("qmail", r"\d+ qp \d+"),
        ("sendmail", r"[0-9A-Za-x]{8}\d{6,7}"),
        ("exim", r"[0-9A-Za-z]{6}-[0-9A-Za-z]{6}-[0-9A-Za-z]{2}"),
        ("mailtalk", r"[0-9A-F]{18}"),
    ],
)
def test_queue_ids_look_like_the_mta_and_are_deterministic(name: str, pattern: str) -> None:
    persona = personality(name)
    first = persona.queue_id(1, 1_700_000_000.5)
    assert re.fullmatch(pattern, first), first
    assert persona.queue_id(1, 1_700_000_000.5) == first
    assert persona.queue_id(2, 1_700_000_000.5) != first
    assert re.fullmatch(pattern, persona.queue_id(123_456))
    # Two servers (processes) in the same second never hand out the same id.
    pids = (1, 4242, 65535, 4_194_303)  # up to Linux's largest pid_max
    ids = {persona.queue_id(n, 1_700_000_000.5, process=p) for n in (1, 2, 3) for p in pids}
    assert len(ids) == 3 * len(pids), ids
    for pid in pids:
        assert re.fullmatch(pattern, persona.queue_id(9, process=pid))


def test_loaded_lazily() -> None:
    """What a server pays at start for these modules (bench/serve_startup.py): no
    tomllib; and a fault plan without rules loads no rule language (the grammar, its
    dataclasses and regexes) nor the scenarios."""
    code = (
        "import sys, time; import mailtalk.servers.personalities; "
        "from mailtalk.servers.faults import FaultPlan; "
        "plan = FaultPlan([], time.time).with_rules([]); "
        "assert plan.rules == () and plan.fired == []; "
        "print('tomllib' in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith('mailtalk.servers.fault')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False ['mailtalk.servers.faults']"


def test_what_each_personality_does_with_an_early_talker() -> None:
    """After the early_talker_greeting: Sendmail still answers HELO, EHLO, NOOP and RSET
    (srvrsmtp.c nullserver); Exim and postscreen (drop) hang up; the rest wait for QUIT."""
    assert personality("sendmail").early_talker_allows == {"HELO", "EHLO", "NOOP", "RSET"}
    closing = {name for name in NAMES if personality(name).early_talker_closes}
    assert closing == {"exim", "postfix"}
    for name in ("mailtalk", "qmail"):
        assert not personality(name).early_talker_allows
        # RFC 5321 3.1: after a 554 greeting, "503 bad sequence of commands" until QUIT
        assert personality(name).template("early_talker_rejected").code == 503


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("early_talker_allows", ["ehlo"], "early_talker_allows must be a list of verbs"),
        ("early_talker_allows", "EHLO", "early_talker_allows must be a list of verbs"),
        ("early_talker_closes", "yes", "early_talker_closes must be true or false"),
    ],
)
def test_bad_early_talker_fields_are_refused(field: str, value: object, message: str) -> None:
    import tomllib
    from importlib import resources

    from mailtalk.servers import personalities

    raw = resources.files("mailtalk.knowledge").joinpath("personalities.toml").read_text()
    table = tomllib.loads(raw)["personality"]["mailtalk"]
    table[field] = value
    with pytest.raises(PersonalityError, match=message):
        personalities._personality("mailtalk", table)  # the loader's own check


def test_each_personality_parses_alone_to_its_table_in_the_whole_file() -> None:
    """A server parses only its own personality's block of the file: each block must be
    the whole of that table, with nothing of another's."""
    import tomllib
    from importlib import resources

    from mailtalk.servers import personalities

    raw = resources.files("mailtalk.knowledge").joinpath("personalities.toml").read_text()
    whole = tomllib.loads(raw)["personality"]
    blocks = personalities._blocks()
    assert tuple(blocks) == tuple(whole) == NAMES
    for name, block in blocks.items():
        assert tomllib.loads(block)["personality"] == {name: whole[name]}


def test_a_server_parses_only_the_personality_it_uses(tmp_path: Path) -> None:
    # without the parsed copy of knowledge/__pycache__ (test_parsed_copy.py), which
    # would spare the parse: an empty directory in its place
    code = (
        "import tomllib\n"
        "import mailtalk.knowledge\n"
        f"mailtalk.knowledge._CACHE = {str(tmp_path)!r}\n"
        "from mailtalk.servers import personalities\n"
        "parsed = []\n"
        "loads = tomllib.loads\n"
        "tomllib.loads = lambda text: parsed.append(text) or loads(text)\n"
        "personalities.personality('postfix')\n"
        "assert len(parsed) == 1 and '[personality.postfix]' in parsed[0], parsed\n"
        "assert '[personality.qmail]' not in parsed[0]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
