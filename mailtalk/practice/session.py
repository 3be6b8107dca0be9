"""A practice session: the lesson chosen, the world made ready for it, the REPL with its
coach connected where the lesson starts.

Which lesson: ``--lesson N``, else the one worked on last time (practice.json) unless it
is done, else the first one not done after it. Which language: ``--lang``, else last
time's, else the locale. In pipe mode (standard input not a terminal) the session's
lines go to the lesson's server as in ``mailtalk smtp`` and the coach comes along: its
``:commands`` (``:check``, ``:hint``...) work, and what it says goes to standard error
as ``# `` lines.

A lesson begins when a session first takes it up; from then on everything the servers
see counts for it, a prompt open or not (``echo :check | mailtalk practice`` after a
solution run from another terminal ticks its steps).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mailtalk.environment import Environment
    from mailtalk.practice.lessons import Lesson
    from mailtalk.practice.progress import Progress
    from mailtalk.practice.worldmap import WorldMap

PROGRESS_FILE = "practice.json"


def load_progress(env: Environment) -> Progress:
    from mailtalk.practice.progress import Progress

    return Progress.load(env.state_dir() / PROGRESS_FILE)


def choose_lesson(wanted: int | None, progress: Progress) -> Lesson:
    from mailtalk.practice.lessons import find_lesson, load_lessons

    lessons = load_lessons()
    if wanted is not None:
        return find_lesson(str(wanted), lessons)

    def undone(lesson: Lesson) -> bool:
        state = progress.lessons.get(lesson.name)
        return state is None or not state.done

    after = 0  # where to look for one not done: after the last one worked on
    if progress.current:
        try:
            last = find_lesson(progress.current, lessons)
        except LookupError:
            pass  # a lesson of an older version: start where nothing is done
        else:
            if undone(last):
                return last
            # done: go on to the next one, not open the finished one again
            after = lessons.index(last) + 1
    for lesson in [*lessons[after:], *lessons[:after]]:
        if undone(lesson):
            return lesson
    return lessons[0]


def practise(
    world_map: WorldMap, env: Environment, language: str | None, wanted: int | None
) -> int:
    """The REPL with the coach on the lesson's server (pipe mode with the coach when
    standard input is no terminal); the exit status."""
    from mailtalk.client.options import SessionOptions
    from mailtalk.practice.coach import PracticeCoach, take_up
    from mailtalk.practice.i18n import choose_language
    from mailtalk.practice.setup import MapWorld

    world = MapWorld(world_map)
    progress = load_progress(env)
    chosen = choose_language(language, progress.language, env.variables)
    if language:
        progress.language = language
    lesson = choose_lesson(wanted, progress)
    take_up(world, progress, lesson, again=wanted is not None)
    target = world.target(lesson.connect)
    session = SessionOptions(
        target=target,
        starttls=target.tls == "starttls",
        cafile=world_map.cafile,
        debug=env.debug,
        resolve=world.resolve,
        port_moves=world.port_moves(),
        language=chosen,
    )
    coach = PracticeCoach(world, progress, chosen, lesson)
    if not env.interactive():
        from mailtalk.client.pipe import run_pipe_mode

        return run_pipe_mode(session, env, coach)
    from mailtalk.client.repl.app import Repl

    return Repl(session, env, coach).run()
