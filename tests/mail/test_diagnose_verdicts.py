"""The verdicts of ``mailtalk diagnose`` as data: the rules in the code and the wording in
``mailtalk/knowledge/verdicts.toml`` name the same verdicts, and every verdict's wording
fills in from the values its diagnosis gives, whichever way its choices go."""

from __future__ import annotations

import itertools
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mailtalk.exitcodes import ExitCode
from mailtalk.knowledge import read_data
from mailtalk.knowledge.verdicts import kinds, verdict, verdict_keys
from mailtalk.mail.diagnose import login, relay, sender
from mailtalk.net.mx import MXHost, MXResult
from mailtalk.protocols.common import ReplyClass

RULES: dict[str, tuple[Any, ...]] = {
    "relay": relay.RULES,
    "login": login.RULES,
    "sender": sender.RULES,
}


def test_every_verdict_in_the_rules_has_its_wording_and_back() -> None:
    assert set(kinds()) == set(RULES)
    for kind, rules in RULES.items():
        in_code = [rule.verdict for rule in rules]
        assert len(in_code) == len(set(in_code)), f"{kind}: a verdict has two rules"
        assert sorted(in_code) == sorted(verdict_keys(kind)), kind


def test_every_rule_list_ends_with_a_rule_that_always_holds() -> None:
    """decide() takes the first rule that holds: the last must hold for any evidence."""
    assert relay.RULES[-1].applies(relay.RelayEvidence())
    assert login.RULES[-1].applies(login.LoginEvidence("server", "user"))
    assert sender.RULES[-1].applies(sender.SenderEvidence("a@b.test", MXResult("b.test", "ok")))


def test_the_relay_scope_rules_are_the_relay_rules_for_a_stranger_relayed() -> None:
    assert all(rule in relay.RULES for rule in relay.SCOPE_RULES)


# --- every verdict worded with its diagnosis's values ------------------------------


@dataclass
class Event:
    """A server reply as the diagnoses see it."""

    raw: bytes
    reply_class: ReplyClass
    final: bool = True


def relay_evidence() -> relay.RelayEvidence:
    found = relay.Findings(
        peer="81.2.69.160",
        greeting="220 mx.isp.test ESMTP",
        auth_after_tls=["PLAIN"],
        starttls=True,
        tls_ok=True,
        stranger_mail=relay.Step("MAIL FROM:<me@isp.test>", "250 ok", True),
        stranger_rcpt=relay.Step(
            "RCPT TO:<you@example.net>", "554 5.7.1 Relay access denied", False,
            "relay_denied", "the server will not relay",
        ),
        auth_reply=relay.Step("AUTH as me", "235 ok", True),
        auth_mail=relay.Step("MAIL FROM:<me@isp.test>", "250 ok", True),
        auth_rcpt=relay.Step("RCPT TO:<you@example.net>", "550 not with this sender", False),
    )
    return relay.RelayEvidence(
        where="smtp.isp.test:25",
        domain="example.net",
        sender="me@isp.test",
        recipient="you@example.net",
        auth_user="me",
        mx=MXResult("example.net", "nxdomain", (), "example.net does not exist"),
        found=found,
        server="81.2.69.160",
        tries=[
            relay.RelayTry("93.184.216.34", "relays", "250 ok"),
            relay.RelayTry("127.0.0.254", "refused", "554 no"),
        ],
    )


def login_evidence() -> login.LoginEvidence:
    from mailtalk.knowledge.explain import explain

    return login.LoginEvidence(
        "mail.example.org:587",
        "alice",
        how="over TLS, after STARTTLS",
        tls_failure="certificate: the certificate has expired. Try --cafile",
        mechanisms=["CRAM-MD5"],
        reply=Event(b"535 5.7.8 Authentication credentials invalid\r\n", ReplyClass.PERMANENT),
        explained=explain("535 5.7.8 Authentication credentials invalid", "smtp", "AUTH"),
    )


def sender_evidence() -> sender.SenderEvidence:
    mx = MXResult("example.org", "ok", (MXHost(10, "mx.example.org", ("192.0.2.1",)),), "1 MX")
    return sender.SenderEvidence("me@example.org", mx, spf=["v=spf1 a", "v=spf1 mx"])


VALUES = {
    "relay": lambda: relay.wording_values(relay_evidence()),
    "login": lambda: login.wording_values(login_evidence()),
    "sender": lambda: sender.wording_values(sender_evidence()),
}


def choices(kind: str, key: str) -> Iterator[tuple[str, list[object]]]:
    """(the value that picks, the values it may take) for every choice the verdict's
    wording may use."""
    data = read_data("verdicts.toml")[kind]
    phrases = {**data.get("phrases", {}), **data[key].get("phrases", {})}
    for name, phrase in phrases.items():
        if isinstance(phrase, dict):
            picks = [p for p in phrase if p != "by"]
            yield phrase.get("by", name), [{"true": True, "false": False}.get(p, p) for p in picks]


def flags(kind: str, key: str) -> list[str]:
    entry = read_data("verdicts.toml")[kind][key]
    return [
        fix["when"]
        for fix in [*entry.get("user", []), *entry.get("admin", [])]
        if isinstance(fix, dict)
    ]


def placeholders(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


@pytest.mark.parametrize("language", ["en", "nl"])
@pytest.mark.parametrize(
    ("kind", "key"), [(kind, key) for kind in RULES for key in verdict_keys(kind)]
)
def test_each_verdict_renders_with_its_placeholders_filled(
    kind: str, key: str, language: str
) -> None:
    """In English, and in Dutch (verdicts.po) with no English text of the file left."""
    from mailtalk.knowledge.translation import translation
    from mailtalk.knowledge.verdicts import texts as english_texts

    gettext = translation(language).gettext
    english = {t for t in english_texts() if any(c.isalpha() for c in t)}
    values = VALUES[kind]()
    picked = list(choices(kind, key))
    ways = [
        [(name, option) for option in options] for name, options in picked
    ] + [[(flag, True), (flag, False)] for flag in flags(kind, key)]
    for combination in itertools.product(*ways):
        worded = verdict(kind, key, {**values, **dict(combination)}, gettext)
        texts = [worded.summary, *worded.fixes_user, *worded.fixes_admin]
        if worded.security is not None:
            texts.append(worded.security)
        for text in texts:
            assert text.strip() == text and text, (key, combination, text)
            assert not placeholders(text) and "{" not in text and "}" not in text, text
            assert "  " not in text, (key, text)
            assert language == "en" or text not in english, (key, text)
        assert isinstance(worded.exit_code, ExitCode)
        assert (worded.security is not None) == (worded.exit_code is ExitCode.OPEN_RELAY)


def test_a_verdict_says_what_its_values_say() -> None:
    worded = verdict("relay", "relay_denied_needs_auth_after_tls", relay.wording_values(
        relay_evidence()
    ))
    assert worded.id == "relay_denied_needs_auth_after_tls"
    assert worded.summary == (
        "smtp.isp.test:25 is not example.net's MX and relays only for its own users; it "
        "offers AUTH only after STARTTLS, and you did not authenticate."
    )
    assert worded.fixes_user[1] == (
        "Port 25 is where MTAs deliver to MXs; mail clients submit on 587 (STARTTLS) or "
        "465 (TLS) with AUTH."
    )
    assert worded.fixes_user[2].endswith(
        "`mailtalk send --from me@isp.test --to you@example.net`."
    )
    assert worded.exit_code is ExitCode.FAILED


def test_two_wordings_of_one_verdict_report_the_same_id() -> None:
    values = relay.wording_values(relay_evidence())
    here = verdict("relay", "relays_for_all_tried_here", values)
    network = verdict("relay", "relays_for_all_tried_network", {**values, "why": "unknown"})
    assert here.id == network.id == "relays_for_all_tried"
    assert here.summary != network.summary


def test_the_wording_is_read_only_when_a_diagnosis_asks() -> None:
    """`mailtalk explain` starts without reading verdicts.toml, nor importing its loader."""
    import subprocess
    import sys

    code = (
        "import sys; from mailtalk.cli import main; sys.argv = ['mailtalk', 'explain', '550']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('mailtalk.knowledge.verdicts' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False
    )
    assert result.stderr.strip().splitlines()[-1] == "False", result.stderr
