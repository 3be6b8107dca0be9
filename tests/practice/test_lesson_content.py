"""Every lesson as written: it loads, both languages give every step a goal and the same
number of hints, every check is sound, and its session files parse. (Whether the checks
say the right thing is tested against a running world, in test_lessons_run.py.)"""

from __future__ import annotations

import subprocess

import pytest

from mailtalk.practice.lessons import (
    LANGUAGES,
    Lesson,
    LessonError,
    find_lesson,
    load_lessons,
    parse_prose,
)
from mailtalk.script.format import parse_file

LESSONS = load_lessons()
# What a session file may name: every host and service of the world, and its CA.
VARIABLES = {
    f"{host}_{service}": "127.0.0.1:1"
    for host in ("NS_ISP_TEST", "MAIL_ISP_TEST", "MX_EXAMPLE_NET", "MAIL_STRANGER_TEST")
    for service in ("DNS", "SMTP", "SUBMISSION", "SMTPS", "POP3", "POP3S", "IMAP", "IMAPS")
}


def test_there_are_lessons_numbered_in_order() -> None:
    assert LESSONS
    numbers = [lesson.number for lesson in LESSONS]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_both_languages_cover_every_step(lesson: Lesson) -> None:
    keys = [step.key for step in lesson.steps]
    for language in LANGUAGES:
        words = lesson.prose.get(language)
        assert words is not None, f"{lesson.name} has no {language}.md"
        assert words.title and words.intro, f"{lesson.name}/{language}.md"
        assert list(words.goals) == keys, f"{lesson.name}/{language}.md steps"
        for key in keys:
            assert words.goals[key], f"{lesson.name}/{language}.md: {key} has no goal"
            assert words.hints[key], f"{lesson.name}/{language}.md: {key} has no hint"
    english, dutch = lesson.prose["en"], lesson.prose["nl"]
    for key in keys:
        assert len(english.hints[key]) == len(dutch.hints[key]), f"{lesson.name}: {key}"


@pytest.fixture(scope="module")
def cafile(tmp_path_factory: pytest.TempPathFactory) -> str:
    from mailtalk.servers.certs import ensure_certificates

    return str(ensure_certificates(tmp_path_factory.mktemp("ca")).ca_cert)


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_the_solutions_parse(lesson: Lesson, cafile: str) -> None:
    """solution and wrong: a session file (.mt, for mailtalk run), or a shell script (.sh)
    where the lesson is more than one session (files edited between them, DNS asked);
    every session file of the folder parses."""
    for name in ("solution", "wrong"):
        session = lesson.folder / f"{name}.mt"
        script = lesson.folder / f"{name}.sh"
        assert session.is_file() != script.is_file(), f"{lesson.name}: one {name}.mt or .sh"
        if script.is_file():
            checked = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
            assert checked.returncode == 0, checked.stderr
    variables = {**VARIABLES, "CA": cafile, "EXPECT": "*", "PASSWORD_TRIED": "x",
                 "SMTP_EXPECT": "*", "POP3_EXPECT": "*"}
    for path in lesson.folder.glob("*.mt"):
        parse_file(str(path), variables=variables, environment={})


def test_a_lesson_is_found_by_number_or_slug() -> None:
    first = LESSONS[0]
    assert find_lesson(str(first.number)) is first
    assert find_lesson(f"{first.number:02d}") is first
    assert find_lesson(first.slug) is first
    with pytest.raises(LookupError, match="--list names them"):
        find_lesson("no-such-lesson")


def test_prose_that_breaks_the_format_is_refused() -> None:
    with pytest.raises(LessonError, match="no '# Title'"):
        parse_prose("## step\ngoal\n", "x.md")
    with pytest.raises(LessonError, match="belongs under"):
        parse_prose("# T\n### hint\nh\n", "x.md")
    with pytest.raises(LessonError, match="step a twice"):
        parse_prose("# T\n## a\ngoal\n## a\nagain\n", "x.md")
    prose = parse_prose("# T\nintro\n\n## a\ngoal\n### hint\none\n### hint\ntwo\n", "x.md")
    assert prose.title == "T" and prose.intro == "intro"
    assert prose.goals == {"a": "goal"} and prose.hints == {"a": ["one", "two"]}
    # an answer's first line to type keeps its indentation, like the others
    typed = parse_prose("# T\n## a\ngoal\n### hint\n\n    HELO x\n    QUIT\n\n", "x.md")
    assert typed.hints == {"a": ["    HELO x\n    QUIT"]}


# The longest a learner's world makes them: the last block's address, a five-digit port,
# the default root under the home folder.
SHOWN = {
    **{name: "127.77.255.3:65535" for name in VARIABLES},
    **{f"{name}_PORT": "65535" for name in VARIABLES},
    **{f"{host}_ADDRESS": "127.77.255.3" for host in
       ("NS_ISP_TEST", "MAIL_ISP_TEST", "MX_EXAMPLE_NET", "MAIL_STRANGER_TEST")},
    "CA": "~/.local/state/mailtalk/practice/tls/ca.pem",
    "ROOT": "~/.local/state/mailtalk/practice",
    **{f"{host}_ROOT": f"~/.local/state/mailtalk/practice/hosts/{name}"
       for host, name in (("NS_ISP_TEST", "ns.isp.test"), ("MAIL_ISP_TEST", "mail.isp.test"),
                          ("MX_EXAMPLE_NET", "mx.example.net"),
                          ("MAIL_STRANGER_TEST", "mail.stranger.test"))},
}


@pytest.mark.parametrize("lesson", LESSONS, ids=lambda lesson: lesson.name)
def test_the_coach_shows_the_prose_within_80_columns(lesson: Lesson) -> None:
    """Every intro, goal and hint as the coach prints it (wrapped, the world's addresses
    filled in, a hint's lines to type as they are) fits an 80-column terminal, and
    names no variable the world does not have."""
    from mailtalk.practice.coach import _wrap, fill_variables

    for language in LANGUAGES:
        words = lesson.prose[language]
        texts = [(words.intro, "")] + [(goal, "  ") for goal in words.goals.values()]
        texts += [(hint, "  ") for hints in words.hints.values() for hint in hints]
        for text, indent in texts:
            shown = _wrap(fill_variables(text, SHOWN), indent=indent)
            assert "${" not in shown, f"{lesson.name}/{language}.md: {shown}"
            for line in shown.splitlines():
                assert len(line) <= 80, f"{lesson.name}/{language}.md: {line!r}"
