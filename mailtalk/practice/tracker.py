"""Following a lesson as it is done: new journal events in, steps ticked off.

``LessonTracker`` holds the lesson being worked on: after every new event (``poll``) or
when asked (``:check``) it evaluates the current step's check; a step that holds is
done, and the next one is evaluated over the same events, so a client that does several
steps in one go (swaks, a mail program) ticks them all.

What the servers did since the lesson began counts, whether a practice prompt was open
then or not: a tracker starts from the journal's events since the lesson's ``since``
(a solution run from another terminal, a prompt closed and opened again).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from mailtalk.practice.checks import Event, Situation, evaluate
from mailtalk.practice.lessons import Lesson, Step
from mailtalk.practice.progress import LessonProgress
from mailtalk.servers.journal import JournalReader, utc_now

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
        # what happened before the lesson began is not the learner's
        history: list[Event] = list(tail.read())
        if progress.since is None:  # not begun: it begins now
            progress.since, history = utc_now(), []
        since = progress.since
        history = [event for event in history if str(event.get("time", "")) >= since]
        self.events = history[-MAX_EVENTS:]
        self.lesson_start = 0
        step_since = progress.step_since or since
        self.step_start = sum(1 for event in self.events
                              if str(event.get("time", "")) < step_since)
        self.new_events: list[Event] = []  # the last poll's (a hint answers a new refusal)

    @property
    def done(self) -> bool:
        return self.progress.step >= len(self.lesson.steps)

    @property
    def current(self) -> Step | None:
        return None if self.done else self.lesson.steps[self.progress.step]

    def poll(self) -> list[StepDone]:
        """Read what the servers did since, and tick off the steps that now hold."""
        self._read()
        return self.check()

    def _read(self) -> None:
        self.new_events = list(self.tail.read())
        self.events += self.new_events
        if len(self.events) > MAX_EVENTS:
            cut = len(self.events) - MAX_EVENTS
            del self.events[:cut]
            self.lesson_start = max(0, self.lesson_start - cut)
            self.step_start = max(0, self.step_start - cut)

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
        self.progress.step_since = utc_now()
        if self.done:
            self.progress.done = True
        return step

    def restart(self) -> None:
        """From the first step again, counting only what happens from now on."""
        self.progress.restart(utc_now())
        self._read()  # not checked: what came before the restart does not count
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
