"""Following a lesson: the journal read as it grows and rotates, steps ticked, progress
kept across runs."""

from __future__ import annotations

import json
import time
from pathlib import Path

from mailtalk.practice.lessons import Lesson, Step
from mailtalk.practice.progress import LessonProgress, Progress
from mailtalk.practice.tracker import LessonTracker, is_refusal
from mailtalk.servers.journal import Journal, JournalReader


def lesson(tmp_path: Path) -> Lesson:
    return Lesson(
        number=99, slug="test", folder=tmp_path / "99-test", connect="smtp://mx.example.net",
        steps=(
            Step("greet", {"event": "connect", "server": "mx.example.net"}),
            Step("helo", {"event": "command", "verb": ["HELO", "EHLO"], "code": "250"}),
            Step("fail", {"event": "command", "verb": "RCPT", "code": "503"}),
        ),
    )


def test_steps_tick_in_order_even_when_one_client_does_several(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.write("mx.example.net", "connect", proto="smtp", session=1)  # before the lesson
    tracker = LessonTracker(lesson(tmp_path), LessonProgress(), JournalReader(path),
                            lambda host: None)
    assert tracker.poll() == []  # what came before the lesson does not count
    journal.write("mx.example.net", "connect", proto="smtp", session=2)
    journal.write("mx.example.net", "command", verb="EHLO", code="250", session=2)
    ticked = tracker.poll()
    assert [done.step.key for done in ticked] == ["greet", "helo"]
    assert tracker.current is not None and tracker.current.key == "fail"
    journal.write("mx.example.net", "command", verb="RCPT", code="503", session=2,
                  text="5.5.1 Error: need MAIL command")
    assert [done.step.key for done in tracker.poll()] == ["fail"]
    assert tracker.done and tracker.progress.done
    assert tracker.last_failure() is not None


def test_skip_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    tracker = LessonTracker(lesson(tmp_path), LessonProgress(), JournalReader(path),
                            lambda host: None)
    assert tracker.skip() is not None and tracker.progress.skipped == ["greet"]
    journal.write("mx.example.net", "command", verb="HELO", code="250", session=1)
    assert [done.step.key for done in tracker.poll()] == ["helo"]
    tracker.restart()
    assert tracker.progress.step == 0 and not tracker.progress.skipped
    assert tracker.poll() == []  # the HELO before the restart is not counted again


def test_progress_survives_a_restart_and_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "practice.json"
    progress = Progress.load(path)
    progress.current = "02-smtp-by-hand"
    progress.language = "nl"
    progress.of("02-smtp-by-hand").step = 3
    progress.of("02-smtp-by-hand").hints["rcpt"] = 2
    progress.save()
    again = Progress.load(path)
    assert again.current == "02-smtp-by-hand" and again.language == "nl"
    assert again.of("02-smtp-by-hand").step == 3
    assert again.of("02-smtp-by-hand").hints == {"rcpt": 2}
    assert "secret" not in path.read_text() and "password" not in path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["practice.json"]  # no temp left
    path.write_text("{ not json")
    fresh = Progress.load(path)
    assert fresh.lessons == {} and path.with_name("practice.json.broken").exists()
    path.write_text(json.dumps({"lessons": {"x": {"step": "many"}}, "language": "fr"}))
    odd = Progress.load(path)
    assert odd.lessons == {} and odd.language is None


def test_refusals() -> None:
    assert all(is_refusal(code) for code in ("503", "452", "-ERR", "NO", "BAD", "no"))
    assert not any(is_refusal(code) for code in ("250", "354", "+OK", "OK", None, ""))


def test_what_the_servers_did_since_the_lesson_began_counts_in_a_later_session(
    tmp_path: Path,
) -> None:
    """A lesson begun, its steps done with no tracker following (no prompt open), then
    a new tracker (a prompt opened, :check piped in): they tick."""
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    journal.write("mx.example.net", "command", verb="HELO", code="250", session=1)
    time.sleep(0.01)  # the journal's times are in milliseconds
    state = LessonProgress()
    first = LessonTracker(lesson(tmp_path), state, JournalReader(path), lambda host: None)
    assert state.since is not None and first.poll() == []  # the HELO came before
    journal.write("mx.example.net", "connect", proto="smtp", session=2)
    journal.write("mx.example.net", "command", verb="EHLO", code="250", session=2)
    later = LessonTracker(lesson(tmp_path), state, JournalReader(path), lambda host: None)
    assert [done.step.key for done in later.poll()] == ["greet", "helo"]
    assert [event["session"] for event in later.events] == [2, 2]
    saved = Progress(tmp_path / "practice.json", {"99-test": state})
    saved.save()
    assert Progress.load(saved.path).of("99-test").since == state.since


def test_a_skip_counts_for_the_next_step_from_the_skip_on(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    state = LessonProgress()
    tracker = LessonTracker(lesson(tmp_path), state, JournalReader(path), lambda host: None)
    journal.write("mx.example.net", "command", verb="RCPT", code="503", session=1)
    assert [done.step.key for done in tracker.poll()] == []  # no connect yet
    time.sleep(0.01)  # the journal's times are in milliseconds
    tracker.skip()
    tracker.skip()
    assert state.step == 2 and state.step_since is not None
    # the 503 came before the skip to its step: a later session does not count it
    later = LessonTracker(lesson(tmp_path), state, JournalReader(path), lambda host: None)
    assert later.poll() == []
    journal.write("mx.example.net", "command", verb="RCPT", code="503", session=2)
    assert [done.step.key for done in later.poll()] == ["fail"]


def test_take_up_begins_goes_on_and_begins_again(tmp_path: Path) -> None:
    progress = Progress(tmp_path / "practice.json")
    assert progress.take_up("02", "2026-01-01T00:00:00.000Z") is False  # begins
    assert progress.current == "02" and progress.of("02").since == "2026-01-01T00:00:00.000Z"
    assert progress.take_up("02", "2026-01-02T00:00:00.000Z") is True  # goes on
    progress.of("02").done, progress.of("02").step = True, 3
    assert progress.take_up("02", "2026-01-03T00:00:00.000Z") is True  # done, not asked for
    assert progress.of("02").done
    assert progress.take_up("02", "2026-01-04T00:00:00.000Z", again=True) is False
    assert progress.of("02").step == 0 and progress.of("02").since == "2026-01-04T00:00:00.000Z"
