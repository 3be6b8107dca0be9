"""Rate, greylist and trickle rules: the parser (whole, byte at a time, Hypothesis) and
the engine's decisions on a clock the test turns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.servers.fault_rules import FaultRuleError, parse_rule
from mailtalk.servers.faults import FaultPlan, RateLimiter, greylist_network


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("text", "limit", "seconds", "per"),
    [
        ("smtp:rcpt=rate 100/min=421 4.7.0 Too many messages", 100, 60.0, "client"),
        ("smtp:rcpt=rate 3/2s per recipient=421 x", 3, 2.0, "to"),
        ("smtp:mail=rate 5/10min per sender=450 4.7.1 Slow", 5, 600.0, "from"),
        ("pop3:pass=rate 5/min=-ERR [LOGIN-DELAY] wait", 5, 60.0, "client"),
        ("imap:login=rate 2 / 1h per user=NO [LIMIT] later", 2, 3600.0, "user"),
    ],
)
def test_parse_rate(text: str, limit: int, seconds: float, per: str) -> None:
    action = parse_rule(text).action
    assert (action.kind, action.limit, action.seconds, action.per) == ("rate", limit, seconds, per)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("smtp:rcpt=rate 3/2s", "a rate needs '=REPLY'"),
        ("smtp:rcpt=rate 0/2s=421 x", "a rate lets 1 to"),
        ("smtp:rcpt=rate 3/0s=421 x", "window is more than 0 s"),
        ("smtp:rcpt=rate 3/2y=421 x", "expected 'rate N/WINDOW"),
        ("smtp:ehlo=rate 3/2s per sender=421 x", "a rate per sender exists only for"),
        ("pop3:pass=rate 3/2s per sender=-ERR x", "pop3 rates are counted per client, user"),
        ("smtp:rcpt=rate 3/2s=250 5.0.0 x", "does not match"),
        ("smtp:ehlo=trickle fast", "expected 'trickle NB/s'"),
        ("smtp:ehlo=trickle 0B/s", "1 to 1000000 bytes"),
        ("smtp:starttls=trickle 5B/s", "cannot slow down starttls"),
        ("pop3:pass=greylist", "greylist is an SMTP action"),
    ],
)
def test_parse_errors_are_one_readable_line(text: str, fragment: str) -> None:
    with pytest.raises(FaultRuleError) as caught:
        parse_rule(text)
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_parse_trickle_and_bare_greylist() -> None:
    assert parse_rule("smtp:ehlo=trickle 10B/s").action.bytes_per_second == 10.0
    assert parse_rule("imap:fetch=trickle 2KB/s").action.bytes_per_second == 2000.0
    grey = parse_rule("smtp:rcpt=greylist").action
    assert (grey.kind, grey.status) == ("greylist", "450")
    assert "postgrey.schweikert.ch/help/{domain}.html" in grey.text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_rate_text_parses_or_is_refused_in_one_line(tail: str) -> None:
    for prefix in ("smtp:rcpt=rate ", "pop3:pass=rate ", "smtp:ehlo=trickle "):
        try:
            parse_rule(prefix + tail)
        except FaultRuleError as error:
            assert "\n" not in str(error)


def test_prefixes_of_a_rule_byte_at_a_time() -> None:
    rule = "smtp:rcpt:to=bob@*=rate 3/2s per recipient=421 4.7.0 Too many messages"
    for end in range(len(rule) + 1):
        try:
            parsed = parse_rule(rule[:end])
        except FaultRuleError as error:
            assert "\n" not in str(error)
        else:
            assert parsed.action.kind in ("rate", "reply")


def test_rate_is_exact_per_window_and_forgives_after_it() -> None:
    clock = Clock()
    plan = FaultPlan(["smtp:rcpt=rate 3/2s=421 4.7.0 Too many"], clock)
    answers = []
    for _ in range(5):
        session = plan.session("s")
        answers.append(session.on_command("rcpt", client="192.0.2.1", to="a@b"))
        clock.now += 0.4  # slow clients: a bucket would have let a 4th through
    assert answers[:3] == [None, None, None]
    assert [a.line for a in answers[3:] if a] == ["421 4.7.0 Too many"] * 2
    other = plan.session("t").on_command("rcpt", client="192.0.2.2", to="a@b")
    assert other is None  # per client address
    clock.now += 2.0
    assert plan.session("u").on_command("rcpt", client="192.0.2.1", to="a@b") is None


def test_rate_per_sender() -> None:
    clock = Clock()
    plan = FaultPlan(["smtp:mail=rate 1/1min per sender=450 4.7.1 Slow"], clock)
    assert plan.session("a").on_command("mail", client="1.1.1.1", sender="x@y") is None
    assert plan.session("b").on_command("mail", client="2.2.2.2", sender="x@y") is not None
    assert plan.session("c").on_command("mail", client="1.1.1.1", sender="z@y") is None


def test_rate_memory_is_bounded() -> None:
    limiter = RateLimiter(2, 10.0, max_times=64)
    for n in range(1000):
        limiter.allow(f"client{n}", float(n) / 1000)
    assert len(limiter) <= limiter.max_keys == 32
    limiter.expire(100.0)
    assert len(limiter) == 0


def test_greylist_keys_on_the_network_and_survives_a_restart(tmp_path: Path) -> None:
    clock = Clock()
    state = tmp_path / "greylist.json"

    def plan() -> FaultPlan:
        return FaultPlan(["smtp:rcpt=greylist"], clock, greylist_min_age=300,
                         greylist_lifetime=3600, state_path=state)  # fmt: skip

    first = plan().session("a").on_command("rcpt", client="192.0.2.7", sender="s@x", to="r@y")
    assert first is not None and first.text.startswith("4.2.0 <r@y>: Recipient address")
    assert "help/y.html" in first.text
    assert json.loads(state.read_text())["greylist"][0][:3] == ["192.0.2.0/24", "s@x", "r@y"]
    clock.now += 299
    again = plan().session("b").on_command("rcpt", client="192.0.2.9", sender="s@x", to="r@y")
    assert again is not None  # same /24, too early
    clock.now += 2
    after = plan()  # a restart: read from the file
    assert after.session("c").on_command("rcpt", client="192.0.2.9", sender="s@x", to="r@y") is None
    clock.now += 3601  # unseen for longer than the lifetime: greylisted afresh
    assert plan().session("d").on_command("rcpt", client="192.0.2.9", sender="s@x", to="r@y")


def test_greylist_network() -> None:
    assert greylist_network("203.0.113.77") == "203.0.113.0/24"
    assert greylist_network("2001:db8:1:2:3::4") == "2001:db8:1:2::/64"
    assert greylist_network("::ffff:192.0.2.1") == "192.0.2.0/24"
