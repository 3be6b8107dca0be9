"""Fault rules: parsing, #N counting, conditions, greylisting, the fired log, scenarios."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.servers.fault_rules import (
    COMMANDS,
    FaultAction,
    FaultContext,
    FaultRule,
    FaultRuleError,
    FiredFault,
    parse_rule,
    parse_rules,
)
from mailtalk.servers.fault_scenarios import (
    Scenario,
    UnknownScenarioError,
    scenario,
    scenario_names,
)
from mailtalk.servers.faults import FaultPlan


class Clock:
    """A clock a test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# ---------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------


def test_parse_nth_rcpt_with_enhanced_code() -> None:
    rule = parse_rule("smtp:rcpt#2=452 4.2.2 Mailbox full")
    assert (rule.protocol, rule.command, rule.occurrence, rule.conditions) == (
        "smtp",
        "rcpt",
        2,
        (),
    )
    assert rule.action == FaultAction("reply", "452", "4.2.2 Mailbox full")
    assert rule.action.code == 452
    assert rule.action.enhanced == "4.2.2"
    assert rule.action.line == "452 4.2.2 Mailbox full"
    assert str(rule) == rule.text == "smtp:rcpt#2=452 4.2.2 Mailbox full"


def test_parse_reply_without_occurrence() -> None:
    rule = parse_rule("smtp:mail=421 4.7.0 Try again later")
    assert rule.occurrence is None
    assert (rule.action.kind, rule.action.code, rule.action.text) == (
        "reply",
        421,
        "4.7.0 Try again later",
    )


def test_parse_reply_code_alone_and_without_enhanced_code() -> None:
    assert parse_rule("smtp:quit=221").action == FaultAction("reply", "221", "")
    action = parse_rule("smtp:rcpt=550 sorry, no mailbox here by that name").action
    assert action.enhanced is None
    assert action.text == "sorry, no mailbox here by that name"


def test_parse_disconnect() -> None:
    assert parse_rule("smtp:data=disconnect").action == FaultAction("disconnect")
    assert parse_rule("smtp:data=DISCONNECT").action.kind == "disconnect"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("smtp:ehlo=delay 5s", 5.0),
        ("smtp:ehlo=delay 250ms", 0.25),
        ("smtp:ehlo=delay 1.5s", 1.5),
        ("smtp:connect=delay 0s", 0.0),
    ],
)
def test_parse_delay(text: str, seconds: float) -> None:
    action = parse_rule(text).action
    assert action.kind == "delay"
    assert action.seconds == pytest.approx(seconds)
    assert action.code is None


def test_parse_condition() -> None:
    rule = parse_rule("smtp:rcpt:to=bob@*=550 5.1.1 No such user")
    assert [(c.field, c.pattern) for c in rule.conditions] == [("to", "bob@*")]
    assert rule.action.line == "550 5.1.1 No such user"


def test_parse_several_conditions() -> None:
    rule = parse_rule("smtp:mail:tls=no:auth=no:client=192.0.2.*=530 5.7.0 Must issue a STARTTLS")
    assert [(c.field, c.pattern) for c in rule.conditions] == [
        ("tls", "no"),
        ("auth", "no"),
        ("client", "192.0.2.*"),
    ]


def test_parse_ipv6_client_glob_keeps_its_colons() -> None:
    rule = parse_rule("smtp:connect:client=::1=421 4.3.2 Go away")
    assert rule.conditions[0].pattern == "::1"
    rule = parse_rule("smtp:mail:client=fe80::*:tls=no=530 5.7.0 TLS first")
    assert [(c.field, c.pattern) for c in rule.conditions] == [
        ("client", "fe80::*"),
        ("tls", "no"),
    ]


def test_parse_action_text_may_contain_equals_and_colons() -> None:
    rule = parse_rule("smtp:rcpt:to=*@example.net=554 5.7.1 <{to}>: Relay=denied: no")
    assert rule.conditions[0].pattern == "*@example.net"
    assert rule.action.text == "5.7.1 <{to}>: Relay=denied: no"


def test_parse_greylist_and_tempfail_once() -> None:
    grey = parse_rule("smtp:rcpt=greylist 451 4.7.1 Greylisted, please try again later")
    assert grey.action == FaultAction("greylist", "451", "4.7.1 Greylisted, please try again later")
    once = parse_rule("smtp:mail=tempfail-once 421 4.3.0 Try later")
    assert once.action.kind == "tempfail-once"


def test_parse_pop3_and_imap_rules() -> None:
    pop = parse_rule("pop3:pass=-ERR [AUTH] Invalid login")
    assert (pop.protocol, pop.command, pop.action.status, pop.action.text) == (
        "pop3",
        "pass",
        "-ERR",
        "[AUTH] Invalid login",
    )
    assert pop.action.code is None
    imap = parse_rule("imap:login=NO [AUTHENTICATIONFAILED] Invalid credentials")
    assert (imap.action.status, imap.action.text) == (
        "NO",
        "[AUTHENTICATIONFAILED] Invalid credentials",
    )
    assert parse_rule("imap:select=bye Server shutting down").action.status == "BYE"
    assert parse_rule("pop3:retr#1=disconnect").action.kind == "disconnect"
    assert parse_rule("pop3:user:user=alice=-err no").action.status == "-ERR"
    assert parse_rule("imap:login=tempfail-once NO [UNAVAILABLE] try later").action.kind == (
        "tempfail-once"
    )


def test_parse_is_lenient_about_case_and_spaces() -> None:
    rule = parse_rule("  SMTP:RCPT#1=452 4.2.2 Mailbox full  ")
    assert (rule.protocol, rule.command, rule.text) == (
        "smtp",
        "rcpt",
        "SMTP:RCPT#1=452 4.2.2 Mailbox full",
    )


def test_every_command_parses() -> None:
    for protocol, commands in COMMANDS.items():
        reply = {"smtp": "451 4.3.0 no", "pop3": "-ERR no", "imap": "NO no"}[protocol]
        for command in commands:
            assert parse_rule(f"{protocol}:{command}={reply}").command == command


def test_parse_rules_and_rule_objects_in_a_plan() -> None:
    rules = parse_rules(["smtp:mail=disconnect", "smtp:rcpt=delay 1ms"])
    assert all(isinstance(rule, FaultRule) for rule in rules)
    assert FaultPlan(rules).rules == tuple(rules)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("smtp", "expected PROTO:COMMAND=ACTION"),
        ("ftp:mail=250 ok", "unknown protocol"),
        ("smtp:=250 ok", "expected a command"),
        ("smtp:frob=250 ok", "unknown smtp command"),
        ("pop3:ehlo=-ERR no", "unknown pop3 command"),
        ("smtp:rcpt#0=452 full", "count from 1"),
        ("smtp:rcpt#=452 full", "'#' must be followed by a number"),
        ("smtp:rcpt#x=452 full", "'#' must be followed by a number"),
        ("smtp:rcpt", "missing '=ACTION'"),
        ("smtp:rcpt=", "missing action"),
        ("smtp:rcpt 2=452 full", "expected ':FIELD=GLOB' or '=ACTION'"),
        ("smtp:rcpt:to=bob@*", "missing '=ACTION'"),
        ("smtp:rcpt:size=1=250 ok", "unknown smtp field"),
        ("smtp:rcpt::to=x=250 ok", "expected ':FIELD=GLOB'"),
        ("pop3:pass:helo=x=-ERR no", "unknown pop3 field"),
        ("smtp:mail:to=bob@*=550 no", "the to field exists only for rcpt"),
        ("smtp:ehlo:from=a@b=550 no", "the from field exists only for"),
        ("smtp:connect:helo=x=554 no", "not known at connect"),
        ("smtp:rcpt:to==550 no", "empty pattern"),
        ("smtp:rcpt:tls=maybe=550 no", "tls is yes or no"),
        ("smtp:rcpt=hello", "3-digit reply code"),
        ("smtp:rcpt=4521 full", "3-digit reply code"),
        ("smtp:rcpt=199 odd", "200 to 559"),
        ("smtp:rcpt=600 odd", "200 to 559"),
        ("smtp:rcpt=480 odd", "200 to 559"),
        ("smtp:rcpt=452 5.2.2 Mailbox full", "does not match reply 452"),
        ("smtp:rcpt=452 6.2.2 Mailbox full", "enhanced status code is 2.X.Y"),
        ("smtp:data=disconnect now", "disconnect takes no text"),
        ("smtp:data=delay", "expected 'delay Ns' or 'delay Nms'"),
        ("smtp:data=delay 5 minutes", "expected 'delay Ns' or 'delay Nms'"),
        ("smtp:data=delay -1s", "expected 'delay Ns' or 'delay Nms'"),
        ("smtp:data=delay 99999s", "at most 3600s"),
        ("smtp:rcpt=tempfail-once", "tempfail-once needs a reply"),
        ("smtp:rcpt=greylist 550 5.7.1 no", "temporary (4xx)"),
        ("smtp:mail=tempfail-once 250 ok", "temporary (4xx)"),
        ("pop3:pass=greylist -ERR no", "greylist is an SMTP action"),
        ("pop3:pass=tempfail-once +OK fine", "needs an -ERR reply"),
        ("imap:login=tempfail-once OK fine", "needs a NO, BAD or BYE reply"),
        ("pop3:pass=452 full", "+OK/-ERR"),
        ("imap:login=MAYBE later", "OK/NO/BAD/BYE/PREAUTH"),
        ("smtp:rcpt=450 4.2.0 see {bogus}", "unknown placeholder"),
        ("smtp:rcpt=450 4.2.0 bell\x07", "control characters"),
        ("smtp:rcpt=450 a\nsmtp:mail=250 b", "single line"),
    ],
)
def test_parse_errors_are_clear_and_one_line(text: str, fragment: str) -> None:
    with pytest.raises(FaultRuleError) as caught:
        parse_rule(text)
    message = str(caught.value)
    assert fragment in message
    assert message.startswith("bad fault rule ")
    assert "\n" not in message


def test_parse_error_points_at_the_bad_part() -> None:
    with pytest.raises(FaultRuleError, match=r"\(at 'frob'\)"):
        parse_rule("smtp:frob=250 ok")
    with pytest.raises(FaultRuleError, match=r"\(at 'maybe'\)"):
        parse_rule("smtp:rcpt:tls=maybe=550 no")
    with pytest.raises(FaultRuleError, match=r"\(at '5\.2\.2'\)"):
        parse_rule("smtp:rcpt=452 5.2.2 Mailbox full")


def test_a_bad_rule_makes_the_plan_fail() -> None:
    with pytest.raises(FaultRuleError):
        FaultPlan(["smtp:mail=250 ok", "smtp:nope=250 ok"])


# A grammar-shaped generator reaches the deep branches; plain text the shallow ones.
_PIECES = st.sampled_from(
    [
        "smtp", "pop3", "imap", "ftp", ":", "#", "=", " ", "rcpt", "mail", "data-end",
        "pass", "login", "to", "from", "tls", "client", "yes", "no", "*", "@", "::1",
        "2", "0", "452", "4.2.2", "5.2.2", "-ERR", "NO", "disconnect", "delay", "5s",
        "ms", "greylist", "tempfail-once", "{to}", "{x}", "[=]", "\t", "\x00", "é",
        "rate ", "3/2s", "100/min", "/", " per ", "sender", "recipient", "user",
        "trickle ", "10B/s", "1KB/s", "0B/s", "starttls",
    ]
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_random_text_parses_or_raises_fault_rule_error(text: str) -> None:
    try:
        rule = parse_rule(text)
    except FaultRuleError:
        return
    assert isinstance(rule, FaultRule)


@settings(max_examples=600, deadline=None)
@given(st.lists(_PIECES, max_size=14).map("".join))
def test_rule_shaped_text_parses_or_raises_fault_rule_error(text: str) -> None:
    try:
        rule = parse_rule(text)
    except FaultRuleError as error:
        assert "\n" not in str(error)
        return
    assert rule.protocol in ("smtp", "pop3", "imap")
    assert rule.action.kind in (
        "reply", "disconnect", "delay", "greylist", "tempfail-once", "rate", "trickle"
    )
    # A rule that parsed can be used.
    plan = FaultPlan([rule])
    plan.session("h", protocol=rule.protocol).on_command(rule.command, client="::1", to="a@b")


# ---------------------------------------------------------------------------
# Counting
# ---------------------------------------------------------------------------


def test_nth_rcpt_fires_per_transaction_and_restarts_after_rset() -> None:
    plan = FaultPlan(["smtp:rcpt#2=452 4.2.2 Mailbox full"])
    faults = plan.session(1)
    faults.on_command("ehlo", helo="client.example")
    faults.on_command("mail", sender="a@example.org")
    assert faults.on_command("rcpt", rcpt="b@example.org") is None
    second = faults.on_command("rcpt", rcpt="c@example.org")
    assert second is not None and second.line == "452 4.2.2 Mailbox full"
    assert faults.on_command("rcpt", rcpt="d@example.org") is None  # the 3rd
    faults.on_command("rset")
    faults.on_command("mail", sender="a@example.org")
    assert faults.on_command("rcpt") is None
    assert faults.on_command("rcpt") is not None  # the 2nd of the new transaction
    assert plan.fired_rules() == ["smtp:rcpt#2=452 4.2.2 Mailbox full"] * 2


@pytest.mark.parametrize("resetting", ["rset", "helo", "ehlo"])
def test_rset_helo_and_ehlo_restart_the_transaction_counts(resetting: str) -> None:
    plan = FaultPlan(["smtp:mail#1=451 4.3.0 first MAIL of a transaction"])
    faults = plan.session("s")
    assert faults.on_command("mail") is not None
    assert faults.on_command("mail") is None
    faults.on_command(resetting)
    assert faults.on_command("mail") is not None


def test_end_of_message_restarts_the_transaction_counts() -> None:
    plan = FaultPlan(["smtp:rcpt#1=450 4.2.0 first RCPT", "smtp:data-end#1=250 2.0.0 Fine"])
    faults = plan.session("s")
    for _ in range(3):  # three messages on one connection
        faults.on_command("mail")
        assert faults.on_command("rcpt") is not None
        assert faults.on_command("rcpt") is None
        faults.on_command("data")
        assert faults.on_command("data-end") is not None
    assert faults.count("rcpt") == 0


def test_explicit_reset_transaction() -> None:
    plan = FaultPlan(["smtp:data#1=554 5.5.1 No"])
    faults = plan.session("s")
    assert faults.on_command("data") is not None
    assert faults.on_command("data") is None
    faults.reset_transaction()
    faults.reset_transaction()  # twice is harmless
    assert faults.on_command("data") is not None


def test_other_commands_count_per_session() -> None:
    plan = FaultPlan(["smtp:noop#3=421 4.7.0 Enough", "smtp:ehlo#2=421 4.7.0 One EHLO only"])
    faults = plan.session("s")
    assert faults.on_command("ehlo") is None
    assert faults.on_command("noop") is None
    faults.on_command("rset")
    assert faults.on_command("noop") is None
    assert faults.on_command("ehlo") is not None  # RSET/EHLO do not reset session counts
    assert faults.on_command("noop") is not None
    assert faults.count("noop") == 3


def test_sessions_count_separately() -> None:
    plan = FaultPlan(["smtp:connect#1=554 5.7.1 No"])
    assert plan.session(1).on_command("connect") is not None
    assert plan.session(2).on_command("connect") is not None
    assert plan.fired_rules() == ["smtp:connect#1=554 5.7.1 No"] * 2


def test_pop3_and_imap_count_per_session() -> None:
    plan = FaultPlan(
        ["pop3:pass#2=-ERR [AUTH] Invalid login", "imap:login=NO [AUTHENTICATIONFAILED] no"]
    )
    pop = plan.session("p", protocol="pop3")
    assert pop.on_command("pass") is None
    action = pop.on_command("PASS")
    assert action is not None and (action.status, action.code, action.line) == (
        "-ERR",
        None,
        "-ERR [AUTH] Invalid login",
    )
    imap = plan.session("i", protocol="imap")
    assert imap.on_command("login").line == "NO [AUTHENTICATIONFAILED] no"  # type: ignore[union-attr]
    smtp = plan.session("s")
    assert smtp.on_command("pass") is None  # other protocols' rules do not apply


def test_session_rejects_an_unknown_protocol() -> None:
    with pytest.raises(ValueError, match="unknown protocol"):
        FaultPlan().session(1, protocol="ftp")


# ---------------------------------------------------------------------------
# Conditions
# ---------------------------------------------------------------------------


def test_conditions_are_anded() -> None:
    plan = FaultPlan(["smtp:mail:tls=no:auth=no=530 5.7.0 Must issue a STARTTLS command first"])
    faults = plan.session("s", client="192.0.2.1")
    assert faults.on_command("mail", tls=True, auth=False) is None
    assert faults.on_command("mail", tls=False, auth=True) is None
    hit = faults.on_command("mail", tls="no", auth="no")
    assert hit is not None and hit.code == 530


def test_tls_and_auth_default_to_no_and_are_remembered() -> None:
    plan = FaultPlan(["smtp:mail:tls=no=530 5.7.0 Must issue a STARTTLS command first"])
    faults = plan.session("s")
    assert faults.on_command("mail") is not None
    faults.set(tls=True)
    faults.reset_transaction()
    assert faults.on_command("mail") is None


def test_glob_is_case_insensitive() -> None:
    plan = FaultPlan(["smtp:rcpt:to=BOB@*=550 5.1.1 No such user"])
    faults = plan.session("s")
    assert faults.on_command("rcpt", to="bob@Example.ORG") is not None
    assert faults.on_command("rcpt", to="alice@example.org") is None


def test_each_field_condition() -> None:
    plan = FaultPlan(
        [
            "smtp:mail:from=spammer@*=553 5.7.1 Go away",
            "smtp:ehlo:helo=*.invalid=550 5.7.1 Bad HELO",
            "smtp:connect:client=203.0.113.*=554 5.7.1 Blocked",
            "smtp:rcpt:user=alice=452 4.2.2 Alice is over quota",
        ]
    )
    bad = plan.session("bad", client="203.0.113.9")
    assert bad.on_command("connect").code == 554  # type: ignore[union-attr]
    good = plan.session("good", client="198.51.100.7")
    assert good.on_command("connect") is None
    assert good.on_command("ehlo", helo="host.invalid").code == 550  # type: ignore[union-attr]
    assert good.on_command("ehlo", helo="host.example") is None
    assert good.on_command("mail", **{"from": "Spammer@example.net"}).code == 553  # type: ignore[union-attr]
    assert good.on_command("mail", sender="friend@example.net") is None
    assert good.on_command("rcpt", to="x@example.org") is None
    good.set(auth=True, user="alice")
    assert good.on_command("rcpt", to="x@example.org").code == 452  # type: ignore[union-attr]


def test_from_is_remembered_for_the_transaction_only() -> None:
    plan = FaultPlan(["smtp:rcpt:from=a@*=451 4.7.1 Not from a"])
    faults = plan.session("s")
    faults.on_command("mail", sender="a@example.org")
    assert faults.on_command("rcpt", to="x@example.org") is not None
    faults.on_command("rset")
    assert faults.on_command("rcpt", to="x@example.org") is None  # no sender any more


def test_to_is_not_remembered() -> None:
    plan = FaultPlan(["smtp:rcpt:to=*=451 4.7.1 Any recipient"])
    faults = plan.session("s")
    assert faults.on_command("rcpt", to="x@example.org") is not None
    assert faults.on_command("rcpt") is None


def test_a_missing_field_does_not_match_but_an_empty_one_can() -> None:
    plan = FaultPlan(["smtp:mail:from=*=451 4.7.1 Any sender, even <>"])
    faults = plan.session("s")
    assert faults.on_command("mail") is None
    assert faults.on_command("mail", sender="") is not None
    assert faults.on_command("mail", sender=None) is not None  # None keeps the known value


def test_escaped_equals_in_a_glob() -> None:
    plan = FaultPlan(["smtp:mail:from=bounce+*[=]*@*=451 4.7.1 No VERP"])
    faults = plan.session("s")
    assert faults.on_command("mail", sender="bounce+bob=example.org@lists.example") is not None


def test_first_rule_that_fires_wins() -> None:
    plan = FaultPlan(["smtp:rcpt:to=bob@*=550 5.1.1 No such user", "smtp:rcpt=452 4.2.2 Full"])
    faults = plan.session("s")
    assert faults.on_command("rcpt", to="bob@example.org").code == 550  # type: ignore[union-attr]
    assert faults.on_command("rcpt", to="eve@example.org").code == 452  # type: ignore[union-attr]


def test_check_takes_a_context_directly() -> None:
    plan = FaultPlan(["smtp:rcpt#2:to=*@example.org=452 4.2.2 Full"])
    event = FaultContext("smtp", "rcpt", 2, {"rcpt": "b@example.org", "tls": "no"}, "x")
    assert event.fields == {"to": "b@example.org", "tls": "no"}
    action = plan.check(event)
    assert action is not None and action.code == 452
    assert plan.check(FaultContext("smtp", "rcpt", 1, {"to": "b@example.org"})) is None


# ---------------------------------------------------------------------------
# Actions, placeholders
# ---------------------------------------------------------------------------


def test_delay_and_disconnect_come_back_as_actions() -> None:
    plan = FaultPlan(["smtp:ehlo=delay 5s", "smtp:connect=delay 20ms", "smtp:data=disconnect"])
    faults = plan.session("s")
    connect = faults.on_command("connect")
    assert connect is not None and connect.kind == "delay"
    assert connect.seconds == pytest.approx(0.02)
    ehlo = faults.on_command("ehlo")
    assert ehlo is not None and (ehlo.kind, ehlo.seconds, ehlo.code) == ("delay", 5.0, None)
    data = faults.on_command("data")
    assert data is not None and data.kind == "disconnect" and data.line == ""


def test_placeholders_are_filled_when_the_rule_fires() -> None:
    plan = FaultPlan(["smtp:rcpt=450 4.2.0 <{to}>: Greylisted, see http://h/help/{domain}.html"])
    action = plan.session("s", client="192.0.2.1").on_command("rcpt", to="bob@example.org")
    assert action is not None
    assert action.text == "4.2.0 <bob@example.org>: Greylisted, see http://h/help/example.org.html"
    assert plan.rules[0].action.text.startswith("4.2.0 <{to}>")  # the rule is unchanged


def test_render_leaves_unknown_braces_alone() -> None:
    action = FaultAction("reply", "OK", "literal {5} and {to}")
    assert action.render({"to": "x"}).text == "literal {5} and x"


# ---------------------------------------------------------------------------
# Greylisting and tempfail-once
# ---------------------------------------------------------------------------

GREYLIST = "smtp:rcpt=greylist 451 4.7.1 Greylisted, please try again later"


def _attempt(
    plan: FaultPlan, session: str, client: str, sender: str, rcpt: str
) -> FaultAction | None:
    faults = plan.session(session, client=client)
    faults.on_command("ehlo", helo="client.example")
    faults.on_command("mail", sender=sender)
    return faults.on_command("rcpt", to=rcpt)


def test_greylist_first_attempt_refused_retry_passes_with_default_min_age() -> None:
    plan = FaultPlan([GREYLIST], clock=Clock())
    first = _attempt(plan, "1", "192.0.2.1", "a@example.org", "b@example.net")
    assert first is not None and first.kind == "reply" and first.line.startswith("451 4.7.1")
    assert _attempt(plan, "2", "192.0.2.1", "a@example.org", "b@example.net") is None
    assert _attempt(plan, "3", "192.0.2.1", "a@example.org", "b@example.net") is None
    assert plan.fired_rules() == [GREYLIST]


def test_greylist_each_part_of_the_triple_counts() -> None:
    plan = FaultPlan([GREYLIST], clock=Clock())
    assert _attempt(plan, "1", "192.0.2.1", "a@example.org", "b@example.net") is not None
    assert _attempt(plan, "2", "198.51.100.1", "a@example.org", "b@example.net") is not None
    # the same /24 is the same client, as postgrey's --lookup-by-subnet
    assert _attempt(plan, "2b", "192.0.2.2", "a@example.org", "b@example.net") is None
    assert _attempt(plan, "3", "192.0.2.1", "c@example.org", "b@example.net") is not None
    assert _attempt(plan, "4", "192.0.2.1", "a@example.org", "d@example.net") is not None
    assert _attempt(plan, "5", "192.0.2.1", "A@EXAMPLE.ORG", "b@example.net") is None  # case


def test_greylist_minimum_age_with_an_injected_clock() -> None:
    clock = Clock()
    plan = FaultPlan([GREYLIST], clock=clock, greylist_min_age=300)
    triple = ("192.0.2.1", "a@example.org", "b@example.net")
    assert _attempt(plan, "1", *triple) is not None
    clock.advance(299)
    assert _attempt(plan, "2", *triple) is not None  # too early: refused again
    clock.advance(1)
    assert _attempt(plan, "3", *triple) is None  # 300 s after the first attempt
    clock.advance(10_000)
    assert _attempt(plan, "4", *triple) is None
    assert [f.time for f in plan.fired] == [1000.0, 1299.0]


def test_greylist_state_persists_in_a_json_file(tmp_path: Path) -> None:
    path = tmp_path / "greylist.json"
    clock = Clock(1_700_000_000.0)
    plan = FaultPlan([GREYLIST], clock=clock, greylist_min_age=60, state_path=path)
    assert _attempt(plan, "1", "192.0.2.1", "a@example.org", "b@example.net") is not None
    saved = json.loads(path.read_text())
    assert saved == {
        "version": 2,
        "greylist": [
            ["192.0.2.0/24", "a@example.org", "b@example.net", 1_700_000_000.0, 1_700_000_000.0]
        ],
    }
    clock.advance(61)
    restarted = FaultPlan([GREYLIST], clock=clock, greylist_min_age=60, state_path=path)
    assert _attempt(restarted, "2", "192.0.2.1", "a@example.org", "b@example.net") is None
    assert _attempt(restarted, "3", "203.0.113.9", "a@example.org", "b@example.net") is not None


def test_greylist_ignores_an_unreadable_state_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "greylist.json"
    path.write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="mailtalk.faults"):
        plan = FaultPlan([GREYLIST], clock=Clock(), state_path=path)
    assert "ignoring unreadable fault state" in caplog.text
    assert _attempt(plan, "1", "192.0.2.1", "a@example.org", "b@example.net") is not None
    assert json.loads(path.read_text())["version"] == 2


def test_a_passing_greylist_lets_later_rules_fire() -> None:
    plan = FaultPlan([GREYLIST, "smtp:rcpt=452 4.2.2 Full"], clock=Clock())
    assert _attempt(plan, "1", "192.0.2.1", "a@x.org", "b@y.org").code == 451  # type: ignore[union-attr]
    assert _attempt(plan, "2", "192.0.2.1", "a@x.org", "b@y.org").code == 452  # type: ignore[union-attr]


def test_tempfail_once_fires_once_in_the_server_life() -> None:
    plan = FaultPlan(["smtp:mail=tempfail-once 421 4.3.0 Try later", "smtp:mail=250 2.1.0 Ok then"])
    first = plan.session(1).on_command("mail")
    assert first is not None and (first.kind, first.code) == ("reply", 421)
    for session in range(2, 6):
        later = plan.session(session).on_command("mail")
        assert later is not None and later.code == 250  # the next rule
    assert plan.fired_rules()[0] == "smtp:mail=tempfail-once 421 4.3.0 Try later"


def test_tempfail_once_without_a_fallback_rule_means_normal_service() -> None:
    plan = FaultPlan(["pop3:pass=tempfail-once -ERR [SYS/TEMP] Try later"])
    assert plan.session(1, protocol="pop3").on_command("pass") is not None
    assert plan.session(2, protocol="pop3").on_command("pass") is None


# ---------------------------------------------------------------------------
# The fired log
# ---------------------------------------------------------------------------


def test_fired_faults_are_recorded_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock(50.0)
    plan = FaultPlan(["smtp:data=disconnect"], clock=clock)
    with caplog.at_level(logging.INFO, logger="mailtalk.faults"):
        plan.session(7).on_command("data")
    assert plan.fired == [
        FiredFault(
            rule="smtp:data=disconnect",
            session_id="7",
            protocol="smtp",
            command="data",
            occurrence=1,
            action=FaultAction("disconnect"),
            time=50.0,
        )
    ]
    assert "smtp:data=disconnect" in caplog.text and "session 7" in caplog.text
    plan.fired.clear()  # a copy: the log itself is untouched
    assert len(plan.fired) == 1
    plan.clear_fired()
    assert plan.fired == [] and plan.fired_rules() == []


def test_nothing_fires_without_rules() -> None:
    plan = FaultPlan()
    faults = plan.session("s")
    for command in ("connect", "ehlo", "mail", "rcpt", "data", "data-end", "quit"):
        assert faults.on_command(command) is None
    assert plan.fired == []


def test_many_threads() -> None:
    plan = FaultPlan(
        [
            "smtp:mail=tempfail-once 421 4.3.0 Once",
            GREYLIST,
            "smtp:rcpt#3=452 4.2.2 Third recipient",
        ]
    )
    threads_count, rounds = 16, 25
    barrier = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def client(number: int) -> None:
        try:
            barrier.wait()
            for round_ in range(rounds):
                faults = plan.session(f"{number}-{round_}", client=f"192.0.2.{number}")
                faults.on_command("ehlo", helo="h")
                faults.on_command("mail", sender=f"s{number}@example.org")
                for rcpt in range(4):
                    faults.on_command("rcpt", to=f"r{rcpt}@example.net")
                faults.on_command("data")
                faults.on_command("data-end")
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    fired = plan.fired_rules()
    assert fired.count("smtp:mail=tempfail-once 421 4.3.0 Once") == 1
    # Each (client, sender, recipient) triple is greylisted exactly once...
    assert fired.count(GREYLIST) == threads_count * 4
    # ... in each thread's first session; every later session hits the third-recipient
    # rule once (in a first session the greylist rule, earlier in the list, wins).
    sessions = threads_count * rounds
    assert fired.count("smtp:rcpt#3=452 4.2.2 Third recipient") == sessions - threads_count
    assert len(plan.fired) == len(fired)


# ---------------------------------------------------------------------------
# Scenarios
# ---------------------------------------------------------------------------


def test_scenario_names() -> None:
    assert set(scenario_names()) >= {
        "relay-denied",
        "sender-domain",
        "disk-full",
        "greylist",
        "tls-required",
    }


@pytest.mark.parametrize("name", scenario_names())
def test_every_scenario_is_documented_and_its_rules_parse(name: str) -> None:
    found = scenario(name)
    assert isinstance(found, Scenario) and found.name == name
    assert len(found.description) > 200  # something a learner can read
    assert "\n\n" in found.description or found.description.count(". ") >= 2
    for rule in parse_rules(found.rules):
        assert rule.protocol in ("smtp", "pop3", "imap")
    assert found.rules or found.settings  # it changes something


def test_scenario_settings_and_rules() -> None:
    assert scenario("relay-denied").settings == {"relay": "deny"}
    assert scenario("relay-denied").rules == ()
    assert scenario("sender-domain").settings == {"check_sender_domain": True}
    assert scenario("disk-full").rules[0] == "smtp:mail=452 4.3.1 Insufficient system storage"
    assert {parse_rule(r).protocol for r in scenario("disk-full").rules} == {
        "smtp", "imap", "pop3",
    }
    assert scenario("lock-busy").settings == {"lock_busy": True}
    assert scenario("quota-exceeded").settings == {"quota_bytes": 1}
    assert parse_rule(scenario("bad-password").rules[0]).action.line == (
        '-ERR [AUTH] Password supplied for "{user}" is incorrect.'
    )
    assert scenario("tls-required").rules == (
        "smtp:mail:tls=no=530 5.7.0 Must issue a STARTTLS command first",
    )
    assert parse_rule(scenario("greylist").rules[0]).action.kind == "greylist"


def test_greylist_scenario_first_attempt_451_then_passes() -> None:
    plan = FaultPlan.from_scenario("greylist", clock=Clock())
    action = _attempt(plan, "1", "192.0.2.1", "a@example.org", "bob@example.net")
    assert action is not None
    assert action.line == (
        "451 4.7.1 <bob@example.net>: Recipient address rejected: Greylisted, "
        "please try again later"
    )
    assert _attempt(plan, "2", "192.0.2.1", "a@example.org", "bob@example.net") is None


def test_tls_required_scenario() -> None:
    plan = FaultPlan.from_scenario("tls-required")
    faults = plan.session("s")
    assert faults.on_command("mail").line == "530 5.7.0 Must issue a STARTTLS command first"  # type: ignore[union-attr]
    faults.set(tls=True)
    assert faults.on_command("mail") is None


def test_unknown_scenario_is_a_key_error_with_a_clear_message() -> None:
    with pytest.raises(KeyError) as caught:
        scenario("no-such-thing")
    assert isinstance(caught.value, UnknownScenarioError)
    assert str(caught.value).startswith("unknown scenario 'no-such-thing'; known: relay-denied")


def test_the_rule_language_is_still_reachable_from_the_plans_module() -> None:
    """``from mailtalk.servers.faults import parse_rule`` (its home before the split)
    still works, loading the rule language then."""
    import mailtalk.servers.faults as faults

    assert faults.parse_rule is parse_rule and faults.FaultAction is FaultAction
    assert faults.scenario is scenario and faults.UnknownScenarioError is UnknownScenarioError
    with pytest.raises(AttributeError):
        faults.no_such_name  # noqa: B018
