"""One explanation per reply: no advice twice in other words, the command's causes first."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from mailtalk.knowledge.explain import explain, says_the_same

HERE = Path(__file__).parent


def _replies() -> list[tuple[str, str | None]]:
    result = []
    for path in sorted([*HERE.glob("corpus/*.toml"), *HERE.glob("blind/*.toml")]):
        for table in tomllib.loads(path.read_text("utf-8"))["reply"]:
            result.append((table["text"], table.get("command")))
    return result


def test_no_explanation_says_a_cause_or_a_fix_twice() -> None:
    repeats = []
    for text, command in _replies():
        explanation = explain(text, command=command)
        for name in ("causes", "fixes_user", "fixes_admin"):
            items = getattr(explanation, name)
            for i, one in enumerate(items):
                for other in items[i + 1 :]:
                    if one == other or says_the_same(one, other):
                        repeats.append(f"{text[:60]!r} {name}: {one[:50]!r} ~ {other[:50]!r}")
    assert repeats == []


def test_the_same_advice_in_other_words_is_recognised() -> None:
    assert says_the_same(
        "Wrong user name or password.",
        "The password is wrong, or the user name is not the form the server expects.",
    )
    assert not says_the_same(
        "The mailbox has reached its quota.", "The message is larger than the server accepts."
    )


@pytest.mark.parametrize(
    ("reply", "command", "first_names"),
    [
        ("554 5.7.1 <bob@example.org>: Relay access denied", "RCPT", "RCPT"),
        ("535 5.7.8 Error: authentication failed: authentication failure", "AUTH", "AUTH"),
    ],
)
def test_causes_about_the_command_answered_come_first(
    reply: str, command: str, first_names: str
) -> None:
    causes = explain(reply, command=command).causes
    naming = [i for i, cause in enumerate(causes) if first_names in cause]
    others = [i for i, cause in enumerate(causes) if first_names not in cause]
    if naming and others:
        # a wording's own cause may lead; after it, the command's before the rest
        assert min(naming) < max(others)


def test_causes_that_name_the_server_the_greeting_names_come_first() -> None:
    # the category's causes name several programs' settings; the greeting's program first
    reply = "554 5.7.1 <bob@example.org>: relaying refused here"
    for banner, program in [
        ("220 mx.example.org ESMTP Exim 4.96", "Exim"),
        ("220 mx.example.org ESMTP Postfix (Debian)", "Postfix"),
    ]:
        explanation = explain(reply, command="RCPT", banner=banner)
        assert explanation.software == program
        # after the wording's own cause, the category's: the program's first
        rest = explanation.causes[1:]
        assert rest and program in rest[0], explanation.causes
