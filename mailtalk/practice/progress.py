"""What a learner has done: ``$XDG_STATE_HOME/mailtalk/practice.json``.

Per lesson: done or not, the step reached, the hints used per step, and since when the
servers' doings count for it (the journal's time when it began, and when its step was
skipped to); and the lesson last worked on and the language chosen. Never a secret (the
practice accounts' passwords are in the world's map, not here). Written whole to a
temporary file and renamed, so a crash never leaves half a file; an unreadable file is
set aside, not fatal.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class LessonProgress:
    done: bool = False
    step: int = 0  # the index of the step being worked on (== len(steps) when done)
    hints: dict[str, int] = field(default_factory=dict)  # step key -> hints shown
    skipped: list[str] = field(default_factory=list)  # steps passed over with :skip
    # The journal's time (servers.journal.utc_now) from which events count: the lesson's
    # since it began, whether a prompt was open or not; the step's since a :skip to it.
    since: str | None = None  # None: not begun
    step_since: str | None = None  # None: the lesson's

    def as_json(self) -> dict[str, Any]:
        return {"done": self.done, "step": self.step, "hints": self.hints,
                "skipped": self.skipped, "since": self.since, "step_since": self.step_since}

    def restart(self, now: str) -> None:
        """From the first step again, counting only what happens from ``now`` on."""
        self.step, self.done = 0, False
        self.skipped.clear()
        self.since, self.step_since = now, None


@dataclass
class Progress:
    path: Path
    lessons: dict[str, LessonProgress] = field(default_factory=dict)  # lesson name -> state
    current: str | None = None
    language: str | None = None

    @classmethod
    def load(cls, path: Path) -> Progress:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return cls(path)
        except (OSError, ValueError):
            # Kept for a look, and a fresh start: a broken file must not stop practice.
            with contextlib.suppress(OSError):
                os.replace(path, path.with_name(path.name + ".broken"))
            return cls(path)
        lessons = {}
        for name, entry in dict(data.get("lessons", {})).items():
            try:
                lessons[str(name)] = LessonProgress(
                    done=bool(entry.get("done", False)),
                    step=int(entry.get("step", 0)),
                    hints={str(k): int(v) for k, v in dict(entry.get("hints", {})).items()},
                    skipped=[str(key) for key in entry.get("skipped", [])],
                    since=_time_or_none(entry.get("since")),
                    step_since=_time_or_none(entry.get("step_since")),
                )
            except (AttributeError, TypeError, ValueError):
                continue
        current = data.get("current")
        language = data.get("language")
        return cls(
            path,
            lessons,
            current if isinstance(current, str) else None,
            language if language in ("en", "nl") else None,
        )

    def of(self, lesson: str) -> LessonProgress:
        return self.lessons.setdefault(lesson, LessonProgress())

    def take_up(self, lesson: str, now: str, again: bool = False) -> bool:
        """Make ``lesson`` the one worked on; it begins ``now`` the first time, and
        begins again from its first step when ``again`` (asked for by number) and it
        was done. True when it goes on from where it was."""
        self.current = lesson
        state = self.of(lesson)
        if again and state.done:
            state.restart(now)
            return False
        if state.since is None:
            state.since = now
            return False
        return True

    def save(self) -> None:
        data = {
            "current": self.current,
            "language": self.language,
            "lessons": {name: entry.as_json() for name, entry in sorted(self.lessons.items())},
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".practice.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                json.dump(data, stream, indent=1, sort_keys=True)
                stream.write("\n")
            os.replace(temporary, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise


def _time_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
