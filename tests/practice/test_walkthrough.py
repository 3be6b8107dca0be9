"""Every lesson walked as a new user walks it, through the real binary in a terminal.

``mailtalk practice --lesson N --lang L`` on a fresh root and a fresh state, the world on
free ports (as a learner who is not root gets it). For each step the walker asks
``:hint`` until the coach says "The answer:", types the answer's command lines (those
indented in the lesson's prose) as shown, and expects the step to tick (``✓ done:`` /
``✓ gelukt:``), until "Lesson N is done" / "Les N is klaar". Nothing else is known to
it: the lines come from the screen, so an answer that does not do its step, a
placeholder the coach leaves in, or a coach command that does not work where the
learner is (in a message, on a world host's own port) fails here.

An answer's block goes to another terminal when its prose says so ("in a second
terminal", "in een ander venster") or when it starts with a ``mailtalk`` command: a
second ``mailtalk`` process in a terminal of its own, as the learner would open one.
ADDRESS and PORT (ADRES, POORT) left in an answer are the world's, from ROOT/world.json.
A lesson whose answer needs a program that is not installed is skipped, saying which.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mailtalk.practice.lessons import Lesson, load_lessons
from tests.interop.clients import mailtalk_command

pexpect = pytest.importorskip("pexpect")

from tests.client.repl.test_repl_faults import _default_signals  # noqa: E402
from tests.interop.test_repl_real import Term, term_env, terminals  # noqa: E402

LESSONS = load_lessons()
ROWS, COLS = 50, 80
STEP_WAIT = 30.0  # seconds for a step to tick once its answer is typed (mail relayed)
# What the coach says, in each language: written here, not read from the catalogue.
WORDS: dict[str, dict[str, str]] = {
    "en": {"step": r"Step (\d+) of (\d+):", "done": "✓ done:", "answer": "The answer:",
           "hint": r"Hint \d+ of \d+:", "finished": "Lesson {n} is done.",
           "map": "From another terminal:"},
    "nl": {"step": r"Stap (\d+) van (\d+):", "done": "✓ gelukt:", "answer": "Het antwoord:",
           "hint": r"Tip \d+ van \d+:", "finished": "Les {n} is klaar.",
           "map": "Vanuit een ander venster:"},
}
# A prompt waiting for a line: the REPL's (smtp>, data>, idle (DONE ends it)>...) or
# :auth's password question, in the session's language.
PROMPT = re.compile(r"^(?:[a-z0-9]+(?: \([^)]*\))?> |(?:password for|wachtwoord voor) (\S+): )$")
PROMPT_START = r"(?m)^(?:[a-z0-9]+(?: \([^)]*\))?>|(?:password for|wachtwoord voor) \S+:)"
OTHER_TERMINAL = re.compile(
    r"\b(?:second|other|another) terminal\b|\b(?:tweede|ander|andere) (?:venster|terminal)\b",
    re.IGNORECASE,
)
PLACEHOLDER = re.compile(r"\b(?:ADDRESS|ADRES)(?::(?:PORT|POORT))?\b|\b(?:PORT|POORT)\b")
SERVICE_OF_COMMAND = {"pop3": "pop3", "imap": "imap", "smtp": "smtp", "send": "smtp",
                      "diagnose": "smtp", "mx": "dns", "dig": "dns", "telnet": "smtp",
                      "nc": "smtp", "swaks": "smtp"}


@dataclass
class Block:
    """Lines of an answer to type, where to type them, and the words before them."""

    lines: list[str]
    prose: str
    elsewhere: bool  # in another terminal


def answer_blocks(answer: str) -> list[Block]:
    """The answer as the coach printed it (two spaces before every line, four more before
    a line to type): runs of lines to type, blank lines inside a run kept (a message's
    empty line after its headers), a line ending in `` \\`` joined to the next."""
    lines = [line[2:] if line.startswith("  ") else line for line in answer.split("\n")]
    blocks: list[Block] = []
    prose: list[str] = []
    run: list[str] = []
    for number, line in enumerate(lines):
        if line.startswith("    "):
            if run and run[-1].endswith(" \\"):
                run[-1] = run[-1][:-1] + line.strip()
            else:
                run.append(line[4:])
            continue
        following = next((later for later in lines[number + 1:] if later.strip()), "")
        if run and not line.strip() and following.startswith("    "):
            run.append("")  # an empty line inside the block
            continue
        if run:
            text = " ".join(prose)
            blocks.append(Block(run, text, bool(OTHER_TERMINAL.search(text))
                                or run[0].startswith("mailtalk ")))
            run, prose = [], []
        if line.strip():
            prose.append(line.strip())
    if run:
        text = " ".join(prose)
        blocks.append(Block(run, text, bool(OTHER_TERMINAL.search(text))
                            or run[0].startswith("mailtalk ")))
    return blocks


def test_answer_blocks_reads_what_the_coach_prints() -> None:
    printed = ("  Here:\n\n      USER bob\n      PASS builder\n\n  Then in a second terminal:\n"
               "\n      mailtalk send --server 127.0.0.1:25 \\\n          --to b@x.test\n"
               "\n  Back here:\n\n      DATA\n      Subject: hi\n\n      Hi.\n      .\n")
    blocks = answer_blocks(printed)
    assert [(b.lines, b.elsewhere) for b in blocks] == [
        (["USER bob", "PASS builder"], False),
        (["mailtalk send --server 127.0.0.1:25 --to b@x.test"], True),
        (["DATA", "Subject: hi", "", "Hi.", "."], False),
    ]
    assert answer_blocks("  Nothing to type: wait.") == []


class Walk:
    """One lesson in one language, walked in a terminal; a second one when asked."""

    def __init__(self, lesson: Lesson, language: str, spawn: Callable[..., Term],
                 root: Path) -> None:
        self.lesson = lesson
        self.words = WORDS[language]
        self.spawn = spawn
        self.root = root
        self.term = spawn("practice", "--lesson", str(lesson.number), "--lang", language,
                          "--root", str(root))
        self.other: Term | None = None
        self.other_prompts = True  # the other terminal is mailtalk's, with its prompts
        self.world: dict[str, Any] = {}

    # -- the steps ---------------------------------------------------------------

    def run(self) -> None:
        self.wait_prompt(self.term, timeout=30)
        assert self.words["map"] in self.term.screen.text  # the map in the lesson's language
        self.world = json.loads((self.root / "world.json").read_text(encoding="utf-8"))
        total = len(self.lesson.steps)
        finished = self.words["finished"].format(n=self.lesson.number)
        for _ in range(2 * total + 2):
            self.term.settle(0.3)
            if finished in self.term.screen.text:
                self.check_lines()
                return
            step = self.current_step()
            answer = self.ask_answer(step)
            if self.current_step() != step or finished in self.term.screen.text:
                continue  # it ticked while the hints were asked for: ask again
            start = len(self.term.screen.text)
            for block in answer_blocks(answer):
                self.do(block)
            self.wait_tick(step, start, finished)
        raise AssertionError(self.term._failure(f"lesson {self.lesson.number} never ended"))

    def check_lines(self) -> None:
        """What the coach printed fits 80 columns: a step ticked is one line, and the
        toolbar ends with its commands (the title gives way)."""
        lines = self.term.screen.text.split("\n")
        for number, line in enumerate(lines[:-1]):
            if self.words["done"] in line:
                assert not lines[number + 1].startswith("  "), f"wrapped: {line!r}"
        bottom = self.term.screen.line(ROWS - 1)
        assert bottom.endswith(":hint :check :map"), bottom

    def current_step(self) -> int:
        found = re.findall(self.words["step"], self.term.screen.text)
        assert found, self.term._failure("no step shown")
        number, total = found[-1]
        assert int(total) == len(self.lesson.steps)
        return int(number)

    def ask_answer(self, step: int) -> str:
        """:hint until the answer: the answer as printed."""
        label = rf"{re.escape(self.words['answer'])}|{self.words['hint']}"
        for _ in range(10):
            self.term.sendline(":hint")
            said = self.term.expect(label)
            start = self.term.pos
            self.wait_prompt(self.term)
            if said.group(0) == self.words["answer"]:
                end = self.term.screen.text.rfind("\n", start, self.term.pos)
                return self.term.screen.text[start:end].strip("\n")
        raise AssertionError(self.term._failure(f"step {step}: no answer after ten hints"))

    def wait_tick(self, step: int, start: int, finished: str) -> None:
        deadline = time.monotonic() + STEP_WAIT
        while time.monotonic() < deadline:
            text = self.term.screen.text[start:]
            if self.words["done"] in text and (
                finished in text or self.current_step() > step
            ):
                return
            self.term.settle(0.3)
        raise AssertionError(self.term._failure(
            f"lesson {self.lesson.number} step {step}: its answer was typed and the step "
            "did not tick"))

    # -- typing ------------------------------------------------------------------

    def do(self, block: Block) -> None:
        lines = [self.placeholders(line, block.prose) for line in block.lines]
        if not block.elsewhere:
            for line in lines:
                self.type(self.term, line)
            return
        first = lines[0]
        if first.startswith("mailtalk ") or self.other is None:
            self.open_other(first)
            lines = lines[1:]
        assert self.other is not None
        for line in lines:
            if self.other_prompts:
                self.type(self.other, line)
            else:
                self.other.sendline(line)
                self.other.settle(1.0)

    def open_other(self, command: str) -> None:
        """A second terminal running ``command``; a command that ends by itself is waited
        for, one that prompts is left open for the lines that follow."""
        words = shlex.split(command)
        if words[0] != "mailtalk" and shutil.which(words[0]) is None:
            pytest.skip(f"lesson {self.lesson.number}'s answer runs {words[0]}, "
                        "which is not installed here")
        if self.other is not None and not self.other.eof:
            self.other.child.terminate(force=True)
        self.other_prompts = words[0] == "mailtalk"
        other = self.other = (self.spawn(*words[1:]) if self.other_prompts
                              else self.spawn(*words, program=True))
        if not self.other_prompts:
            other.settle(1.0)
            return
        other._until(lambda: other.eof or PROMPT.match(other.screen.cursor_line()),
                     f"{command!r} to prompt or end", 60)
        if other.eof:
            other.wait_exit()

    def type(self, term: Term, line: str, secret: bool = False) -> None:
        """``line`` at the prompt; the next prompt waited for (its echo first, so that a
        prompt drawn again before the line went is not taken for the next one)."""
        term.pos = len(term.screen.text)
        term.sendline(line)
        if line:
            term.expect(re.escape("*" * len(line) if secret else line))
        self.wait_prompt(term)
        asked = PROMPT.match(term.screen.cursor_line())
        if asked is not None and asked.group(1) and not secret:  # :auth asks for it
            self.type(term, self.password(asked.group(1)), secret=True)

    def wait_prompt(self, term: Term, timeout: float = 20) -> None:
        term.expect(PROMPT_START, timeout)
        term.wait_screen(lambda screen: PROMPT.match(screen.cursor_line()),
                         "a prompt waiting for a line", timeout)
        term.settle(0.1)

    def password(self, login: str) -> str:
        """What the answer said the password is: the practice account's, on the map."""
        for account in self.world["accounts"]:
            if account["login"] == login:
                return str(account["password"])
        raise AssertionError(f"no practice account {login} on the map")

    def placeholders(self, line: str, prose: str) -> str:
        host = self.lesson.connect.split("://")[1].split("/")[0].split(":")[0]
        return fill_placeholders(line, prose, self.world, host)


def fill_placeholders(line: str, prose: str, world: dict[str, Any], default: str) -> str:
    """ADDRESS, PORT (ADRES, POORT) as the world has them: the host the words name (else
    ``default``, the lesson's own; else one that has the service), the service the
    command speaks."""
    if not PLACEHOLDER.search(line):
        return line
    hosts = {host["name"]: host for host in world["hosts"]}
    named = [name for name in hosts if name in f"{prose} {line}"]
    host = hosts[named[0] if named else default]
    words = line.split()
    command = words[1] if words[0] == "mailtalk" and len(words) > 1 else words[0]
    service = SERVICE_OF_COMMAND.get(command, "smtp")
    if service not in host["ports"]:
        host = next(h for h in hosts.values() if service in h["ports"])
    address, port = host["address"], str(host["ports"][service])

    def fill(match: re.Match[str]) -> str:
        word = match.group(0)
        if ":" in word:
            return f"{address}:{port}"
        return address if word in ("ADDRESS", "ADRES") else port

    return PLACEHOLDER.sub(fill, line)


def test_placeholders_are_the_worlds() -> None:
    world = {"hosts": [
        {"name": "ns.isp.test", "address": "127.77.9.1", "ports": {"dns": 5353}},
        {"name": "mx.example.net", "address": "127.77.9.3", "ports": {"smtp": 2525,
                                                                      "pop3": 1110}},
    ]}
    fill = fill_placeholders
    assert fill("mailtalk pop3 ADDRESS:PORT", "", world, "mx.example.net") == (
        "mailtalk pop3 127.77.9.3:1110")
    assert fill("telnet ADRES POORT", "", world, "mx.example.net") == "telnet 127.77.9.3 2525"
    assert fill("dig @ADDRESS -p PORT isp.test MX", "the DNS", world, "mx.example.net") == (
        "dig @127.77.9.1 -p 5353 isp.test MX")
    assert fill("QUIT", "", world, "mx.example.net") == "QUIT"


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Term]]:
    """``spawn(*args)``: ``mailtalk ARGS`` in a terminal of its own, 80 columns wide, all
    sharing one HOME and state; ``program=True`` runs ARGS as a program of its own."""
    environment = term_env(tmp_path / "state")
    environment.update(HOME=str(tmp_path), COLUMNS=str(COLS), LINES=str(ROWS),
                       MAILTALK_PRACTICE_PORTS="free")
    with terminals() as started:

        def start(*args: str, program: bool = False) -> Term:
            command = [*mailtalk_command(), *args] if not program else list(args)
            return started(command, environment, ROWS, COLS, timeout=20,
                           preexec_fn=_default_signals)

        yield start


CASES = [
    pytest.param(lesson, language, id=f"{lesson.name}-{language}")
    for lesson in LESSONS
    for language in ("en", "nl")
]


@pytest.mark.parametrize(("lesson", "language"), CASES)
def test_a_new_user_walks_the_lesson_by_its_answers(
    lesson: Lesson, language: str, spawn: Callable[..., Term], tmp_path: Path
) -> None:
    walk = Walk(lesson, language, spawn, tmp_path / "world")
    try:
        walk.run()
    finally:
        walk.term.sendline(":quit")
    assert walk.term.wait_exit() == 0
