"""Following a lesson as it is done: new journal events in, steps ticked off.

``LessonTracker`` holds the lesson being worked on: after every new event (``poll``) or
when asked (``:check``) it evaluates the current step's check; a step that holds is
done, and the next one is evaluated over the same events, so a client that does several
steps in one go (swaks, a mail program) ticks them all.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mailtalk.practice.checks import Event, Situation, evaluate
from mailtalk.practice.lessons import Lesson, Step
from mailtalk.practice.progress import LessonProgress
from mailtalk.servers.journal import JournalReader

# Events kept in memory; the oldest go first (a world left running for days).
MAX_EVENTS: Final = 50_000


@dataclass(frozen=True)
class StepDone:
    step: Step
    index: int  # its place in the lesson, from 0


class LessonTracker:
    """One lesson being worked on, against a world's journal and stores."""

    def __init__(
        self,
        lesson: Lesson,
        progress: LessonProgress,
        tail: JournalReader,
        server_root: Callable[[str], Path | None],
    ) -> None:
        self.lesson = lesson
        self.progress = progress
        self.tail = tail
        self.server_root = server_root
        self.events: list[Event] = []
        self._dropped = 0  # events let go of, to keep memory bounded
        tail.read()  # what happened before the lesson began is not the learner's
        self.lesson_start = 0
        self.step_start = 0
        self.new_events: list[Event] = []

    @property
    def done(self) -> bool:
        return self.progress.step >= len(self.lesson.steps)

    @property
    def current(self) -> Step | None:
        return None if self.done else self.lesson.steps[self.progress.step]

    def poll(self) -> list[StepDone]:
        """Read what the servers did since, and tick off the steps that now hold."""
        self.new_events = list(self.tail.read())
        self.events += self.new_events
        if len(self.events) > MAX_EVENTS:
            cut = len(self.events) - MAX_EVENTS
            del self.events[:cut]
            self.lesson_start = max(0, self.lesson_start - cut)
            self.step_start = max(0, self.step_start - cut)
        return self.check()

    def check(self) -> list[StepDone]:
        ticked: list[StepDone] = []
        while (step := self.current) is not None:
            situation = Situation(
                self.events, self.server_root, self.step_start, self.lesson_start
            )
            if not evaluate(step.check, situation):
                break
            ticked.append(StepDone(step, self.progress.step))
            self.progress.step += 1
        if self.done:
            self.progress.done = True
        return ticked

    def skip(self) -> Step | None:
        """Pass over the current step (the learner asked); the step skipped, if any."""
        step = self.current
        if step is None:
            return None
        self.progress.skipped.append(step.key)
        self.progress.step += 1
        self.step_start = len(self.events)
        if self.done:
            self.progress.done = True
        return step

    def restart(self) -> None:
        """From the first step again, counting only what happens from now on."""
        self.progress.step = 0
        self.progress.done = False
        self.progress.skipped.clear()
        self.poll()
        self.lesson_start = self.step_start = len(self.events)

    def last_failure(self) -> dict[str, Any] | None:
        """The newest reply among the events just read, if it was a refusal: what a
        contextual hint answers (a refusal followed by a success needs no hint)."""
        for event in reversed(self.new_events):
            if event.get("event") in ("command", "connect"):
                return dict(event) if is_refusal(event.get("code")) else None
        return None


def is_refusal(code: object) -> bool:
    """4xx/5xx, -ERR, NO and BAD: the server said no."""
    text = str(code or "").upper()
    return text[:1] in ("4", "5") or text in ("-ERR", "NO", "BAD")
