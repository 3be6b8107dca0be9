"""The practice lessons, read from their folders: data, not code.

Each lesson is a folder ``lessons/NN-slug/`` holding

``lesson.toml``
    ``connect`` (the URL the practice REPL opens for it, a world host name in it),
    ``[setup]`` (what the world needs for this lesson: ``faults`` and ``scenarios`` per
    host, extra DNS ``records``, ``control`` files per host), and the ``[[step]]`` list:
    each step a ``key``, a ``check`` (a predicate, see ``checks.py``) and how many hints
    its prose gives.
``en.md``, ``nl.md``
    The prose in each language: ``# Title``, the introduction, then one
    ``## KEY`` section a step (its goal) with ``### hint`` sections under it, the last
    hint the solution. A lesson in one language lacks nothing the other has (a test
    holds every lesson to it).
``solution.mt`` and ``wrong.mt``
    Session files (``mailtalk run``) that do the lesson and that miss it: the tests run
    both against a fresh world.

``load_lessons()`` reads them all once, in number order.
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from mailtalk.practice.checks import Predicate, problems

LESSONS_DIR: Final = Path(__file__).with_name("lessons")
LANGUAGES: Final = ("en", "nl")
_FOLDER = re.compile(r"^(\d\d)-([a-z0-9-]+)$")


class LessonError(ValueError):
    """A lesson folder that does not hold a sound lesson; one line, naming the file."""


@dataclass(frozen=True)
class Prose:
    """A lesson's words in one language."""

    title: str
    intro: str
    goals: dict[str, str]  # step key -> what to do
    hints: dict[str, list[str]]  # step key -> graduated hints, the last the solution


@dataclass(frozen=True)
class Step:
    key: str
    check: Predicate


@dataclass(frozen=True)
class Lesson:
    number: int
    slug: str
    folder: Path
    connect: str
    steps: tuple[Step, ...]
    setup: dict[str, Any] = field(default_factory=dict)
    prose: dict[str, Prose] = field(default_factory=dict)  # language -> words

    @property
    def name(self) -> str:
        """``02-smtp-by-hand``"""
        return self.folder.name

    def words(self, language: str) -> Prose:
        """The prose in ``language``, English where a language is missing."""
        return self.prose.get(language) or self.prose["en"]

    def step_index(self, key: str) -> int:
        return [step.key for step in self.steps].index(key)


def parse_prose(text: str, where: str) -> Prose:
    """``# Title``, intro, ``## key`` goals with ``### hint`` sections under them."""
    title = ""
    intro: list[str] = []
    goals: dict[str, list[str]] = {}
    hints: dict[str, list[list[str]]] = {}
    current: list[str] = intro
    step: str | None = None
    for line in text.splitlines():
        if line.startswith("# ") and not title:
            title = line[2:].strip()
            continue
        if line.startswith("## "):
            step = line[3:].strip()
            if step in goals:
                raise LessonError(f"{where}: step {step} twice")
            goals[step] = current = []
            hints[step] = []
            continue
        if line.startswith("### "):
            if step is None or line[4:].strip().lower() != "hint":
                raise LessonError(f"{where}: '### hint' belongs under a '## step' heading")
            current = []
            hints[step].append(current)
            continue
        current.append(line)
    if not title:
        raise LessonError(f"{where}: no '# Title' line")
    return Prose(
        title=title,
        intro=_paragraphs(intro),
        goals={key: _paragraphs(lines) for key, lines in goals.items()},
        hints={key: [_paragraphs(lines) for lines in found] for key, found in hints.items()},
    )


def _paragraphs(lines: list[str]) -> str:
    """The lines without the blank ones around them; a first line indented as a command
    to type keeps its indentation (the coach shows such lines as they are)."""
    while lines and not lines[0].strip():
        lines = lines[1:]
    return "\n".join(lines).rstrip()


def load_lesson(folder: Path) -> Lesson:
    match = _FOLDER.match(folder.name)
    if match is None:
        raise LessonError(f"{folder.name}: a lesson folder is named NN-slug")
    try:
        data = tomllib.loads((folder / "lesson.toml").read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise LessonError(f"{folder.name}/lesson.toml: {error}") from None
    steps = []
    for number, entry in enumerate(data.get("step", []), 1):
        key = entry.get("key")
        if not isinstance(key, str) or not key:
            raise LessonError(f"{folder.name}/lesson.toml: step {number} has no key")
        found = problems(entry.get("check"), f"{folder.name} step {key}")
        if found:
            raise LessonError(found[0])
        steps.append(Step(key=key, check=entry["check"]))
    if not steps:
        raise LessonError(f"{folder.name}/lesson.toml: no [[step]]")
    if not isinstance(data.get("connect"), str):
        raise LessonError(f"{folder.name}/lesson.toml: no connect URL")
    prose = {}
    for language in LANGUAGES:
        path = folder / f"{language}.md"
        if path.is_file():
            prose[language] = parse_prose(path.read_text(encoding="utf-8"), path.name)
    if "en" not in prose:
        raise LessonError(f"{folder.name}: no en.md")
    return Lesson(
        number=int(match.group(1)),
        slug=match.group(2),
        folder=folder,
        connect=data["connect"],
        steps=tuple(steps),
        setup=dict(data.get("setup", {})),
        prose=prose,
    )


@functools.cache
def load_lessons(directory: Path = LESSONS_DIR) -> tuple[Lesson, ...]:
    """Every lesson in number order."""
    folders = sorted(p for p in directory.iterdir() if p.is_dir() and _FOLDER.match(p.name))
    lessons = tuple(load_lesson(folder) for folder in folders)
    numbers = [lesson.number for lesson in lessons]
    if len(set(numbers)) != len(numbers):
        raise LessonError("two lessons share a number")
    return lessons


def find_lesson(wanted: str, lessons: tuple[Lesson, ...] | None = None) -> Lesson:
    """A lesson by number (``2``, ``02``) or slug (``smtp-by-hand``)."""
    lessons = load_lessons() if lessons is None else lessons
    for lesson in lessons:
        if wanted.isdigit() and int(wanted) == lesson.number:
            return lesson
        if wanted in (lesson.slug, lesson.name):
            return lesson
    known = ", ".join(str(lesson.number) for lesson in lessons)
    raise LookupError(f"no lesson {wanted!r}; the lessons are {known} (--list names them)")
