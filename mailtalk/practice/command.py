"""``mailtalk practice``: start the practice world, show its map, talk to it.

``commands/practice.py`` declares the options and builds a :class:`PracticeOptions`;
``run`` does what they ask:

* nothing: start the world in this process (``start_practice_world``), print the map and
  open the REPL on the MX's SMTP (``open_repl``); leaving the REPL stops the world. If a
  world already runs at ROOT (``--keep``, or another terminal), the REPL talks to that one
  and leaves it running.
* ``--keep``: start the world in a process of its own, in the background, and return
  once it listens; it runs until ``--stop`` (or the machine stops).
* ``--status [--json]``: the map of the world running at ROOT; exit status 0 if one runs,
  3 if none does (as "could not connect": there is nothing to talk to).
* ``--stop``: stop the world running at ROOT (SIGTERM to the process in ROOT/world.json,
  which holds ROOT/.lock); 0 also when none ran.
* ``--reset``: wipe ROOT first (only a practice root, and only when no world runs there).

``MAILTALK_PRACTICE_PORTS``: ``standard`` (the default: standard ports where they can be
bound, else free ones), ``free`` (free ports only, e.g. for root on a machine whose mail
ports are for real servers) or ``shared`` (every host on 127.0.0.1, free ports,
``control/smtproutes``: the fallback layout, forced).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from mailtalk.errors import MailtalkError, UsageError
from mailtalk.exitcodes import ExitCode

if TYPE_CHECKING:
    from mailtalk.environment import Environment
    from mailtalk.practice.world import World
    from mailtalk.practice.worldmap import WorldMap

KEEP_TIMEOUT: Final = 30.0  # seconds a --keep waits for its world to listen
STOP_TIMEOUT: Final = 10.0
LOG_BYTES: Final = 1024 * 1024  # world.log rotates past this (one old file kept)
PORTS_VARIABLE: Final = "MAILTALK_PRACTICE_PORTS"
NOT_RUNNING: Final = ExitCode.CONNECT


@dataclass(frozen=True)
class PracticeOptions:
    """What ``mailtalk practice`` was asked for, as its options say it."""

    root: Path | None = None  # None: $XDG_STATE_HOME/mailtalk/practice
    reset: bool = False
    keep: bool = False
    status: bool = False
    stop: bool = False
    as_json: bool = False
    lang: Literal["en", "nl"] | None = None  # None: from LANG/LC_MESSAGES (the lessons)
    list_lessons: bool = False
    lesson: int | None = None
    glossary: bool = False
    session_variables: bool = False  # --vars: export lines for the world's addresses
    run_world: bool = False  # the detached process of --keep (a hidden option)


def practice_root(options: PracticeOptions, env: Environment) -> Path:
    root = options.root if options.root is not None else env.state_dir() / "practice"
    return root.expanduser().absolute()


def run(options: PracticeOptions, env: Environment) -> int:
    """Do what the options ask; the exit status."""
    _check(options)
    root = practice_root(options, env)
    if options.status:
        return show_status(root, options.as_json, env)
    if options.stop:
        return stop_world(root, env, options.lang)
    if options.list_lessons or options.glossary:
        return show_lessons(options, env)
    if options.lesson is not None:
        from mailtalk.practice.lessons import find_lesson

        try:
            find_lesson(str(options.lesson))
        except LookupError as error:
            raise UsageError(str(error)) from None
    if options.session_variables:
        return show_variables(root, env, options.lesson)
    if options.run_world:
        return run_world_forever(root, env)
    if options.reset:
        from mailtalk.practice.world import reset_root

        reset_root(root)
    if options.keep:
        return keep_world(root, options.as_json, env)
    return practice(root, env, options)


def show_lessons(options: PracticeOptions, env: Environment) -> int:
    """--list (the lessons, marked when done) or --glossary, in the chosen language."""
    from mailtalk.practice.coach import glossary_text, lesson_list
    from mailtalk.practice.i18n import choose_language
    from mailtalk.practice.session import load_progress

    progress = load_progress(env)
    language = choose_language(options.lang, progress.language, env.variables)
    text = glossary_text(language) if options.glossary else lesson_list(progress, language)
    env.stdout.write(text + "\n")
    return int(ExitCode.OK)


def show_variables(root: Path, env: Environment, lesson: int | None = None) -> int:
    """--vars: the world's addresses as ``export NAME=VALUE`` lines, for
    ``eval "$(mailtalk practice --vars)"``: session files (``mailtalk run``) and the
    lessons' scripts read ``${MX_EXAMPLE_NET_SMTP}`` and the like from the environment.

    ``${LESSON}`` is the folder of the lesson worked on (``--lesson N``: lesson N's) and
    ``${LESSONS}`` the folder of them all, wherever mailtalk is installed, so that
    ``mailtalk run "$LESSON/solution.mt"`` works from any directory."""
    import shlex

    from mailtalk.practice.lessons import LESSONS_DIR
    from mailtalk.practice.session import choose_lesson, load_progress
    from mailtalk.practice.setup import MapWorld
    from mailtalk.practice.world import is_running

    if not is_running(root):
        env.stderr.write(f"mailtalk: no practice world runs at {root} (--keep starts one)\n")
        return int(NOT_RUNNING)
    variables = MapWorld(running_map(root)).session_variables()
    variables["LESSON"] = str(choose_lesson(lesson, load_progress(env)).folder)
    variables["LESSONS"] = str(LESSONS_DIR)
    for name, value in sorted(variables.items()):
        env.stdout.write(f"export {name}={shlex.quote(value)}\n")
    return int(ExitCode.OK)


def _check(options: PracticeOptions) -> None:
    given = [
        name
        for name, on in (
            ("--status", options.status),
            ("--stop", options.stop),
            ("--list", options.list_lessons),
            ("--glossary", options.glossary),
            ("--vars", options.session_variables),
            ("--keep", options.keep),
            ("--lesson", options.lesson is not None),
        )
        if on
    ]
    if given == ["--vars", "--lesson"]:
        return  # the variables, ${LESSON} naming lesson N's folder
    if len(given) > 1:
        raise UsageError(f"{' and '.join(given)} do not go together")
    if options.reset and (options.status or options.stop or options.list_lessons):
        raise UsageError(f"--reset does not go with {given[0]}")
    if options.as_json and not (options.status or options.keep):
        raise UsageError("--json goes with --status or --keep")


# -- the world in this process ----------------------------------------------------------


def layout_options(env: Environment) -> tuple[bool, bool]:
    """(prefer_standard, shared): how to choose ports, from MAILTALK_PRACTICE_PORTS."""
    mode = env.get(PORTS_VARIABLE, "standard") or "standard"
    choices = {"standard": (True, False), "free": (False, False), "shared": (False, True)}
    if mode not in choices:
        raise UsageError(f"{PORTS_VARIABLE}={mode!r}: use standard, free or shared")
    return choices[mode]


def start_practice_world(root: Path, env: Environment, *, kept: bool = False) -> World:
    """The running world at ROOT, its servers logging to ROOT/world.log (the seam where
    the lessons take over: they get the world, then open the REPL with ``open_repl``)."""
    from mailtalk.practice.world import make_root, start_world

    prefer_standard, shared = layout_options(env)
    make_root(root)
    log_to_file(root)
    return start_world(root, kept=kept, prefer_standard=prefer_standard, shared=shared)


def practice(root: Path, env: Environment, options: PracticeOptions) -> int:
    """Start the world (or find the one running at ROOT), print the map, open the REPL
    with the coach on the lesson's server."""
    from mailtalk.practice.i18n import translation
    from mailtalk.practice.world import is_running

    language = map_language(env, options.lang)
    _ = translation(language).gettext
    if is_running(root):
        world_map = running_map(root)
        write_map_text(world_map, env, session=True, language=language)
        if env.interactive():
            env.stdout.write(_("# This world runs elsewhere: :quit leaves it running "
                               "(mailtalk practice --stop stops it).") + "\n")
        return practise(world_map, env, options.lang, options.lesson)
    world = start_practice_world(root, env)
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # --stop from another terminal
    try:
        write_map_text(world.map, env, session=True, language=language)
        if env.interactive():
            env.stdout.write(_("# :quit leaves and stops the world; mailtalk practice --keep "
                               "keeps one running.") + "\n")
        return practise(world.map, env, options.lang, options.lesson)
    finally:
        world.stop()
        signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def practise(
    world_map: WorldMap, env: Environment, language: str | None, lesson: int | None
) -> int:
    from mailtalk.practice.session import practise as lesson_session

    return lesson_session(world_map, env, language, lesson)


def open_repl(
    world_map: WorldMap, env: Environment, host: str | None = None, service: str | None = None
) -> int:
    """Talk to a host of the world (the map's REPL host and service by default): the REPL
    on a terminal, pipe mode otherwise, as ``mailtalk smtp`` does. The exit status."""
    from mailtalk.client.options import SessionOptions
    from mailtalk.net.target import parse_url

    entry = world_map.host(host or world_map.repl_host)
    service = service or world_map.repl_service
    target = parse_url(f"{service}://{entry.address}:{entry.ports[service]}")
    session = SessionOptions(
        target=target,
        starttls=target.tls == "starttls",
        cafile=world_map.cafile,
        debug=env.debug,
    )
    if env.interactive():
        from mailtalk.client.repl.app import Repl

        return Repl(session, env).run()
    from mailtalk.client.pipe import run_pipe_mode

    return run_pipe_mode(session, env)


def write_map_text(
    world_map: WorldMap, env: Environment, *, session: bool = False, language: str = ""
) -> None:
    """The map as text, on standard output, in the learner's language; before a session
    in pipe mode on standard error, so that standard output holds the session alone."""
    from mailtalk.practice.i18n import translation
    from mailtalk.practice.worldmap import render_map

    gettext = translation(language or map_language(env, None)).gettext
    stream = env.stderr if session and not env.interactive() else env.stdout
    stream.write(render_map(world_map, min(env.width(), 80), home=env.get("HOME") or None,
                            gettext=gettext))
    stream.flush()


def map_language(env: Environment, option: str | None) -> str:
    """--lang, else the language chosen last time, else the locale's (as the coach)."""
    from mailtalk.practice.i18n import choose_language
    from mailtalk.practice.session import load_progress

    return choose_language(option, load_progress(env).language, env.variables)


def log_to_file(root: Path) -> None:
    """The servers' log lines go to ROOT/world.log (rotated), not to the terminal."""
    import logging
    import logging.handlers

    from mailtalk.practice.world import LOG_FILE

    logger = logging.getLogger("mailtalk")
    for handler in list(logger.handlers):
        if getattr(handler, "practice_log", False):
            logger.removeHandler(handler)
            handler.close()
    handler = logging.handlers.RotatingFileHandler(
        root / LOG_FILE, maxBytes=LOG_BYTES, backupCount=1, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s"))
    handler.practice_log = True  # type: ignore[attr-defined]
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


# -- a world in the background ----------------------------------------------------------


def running_map(root: Path) -> WorldMap:
    """The map of the world running at ROOT (MailtalkError if it has none yet)."""
    from mailtalk.practice.worldmap import MAP_FILE, MapError, read_map

    try:
        world_map = read_map(root / MAP_FILE)
    except MapError as error:
        raise MailtalkError(str(error)) from None
    if world_map is None:
        raise MailtalkError(f"a world is starting at {root}; ask again in a moment")
    return world_map


def show_status(root: Path, as_json: bool, env: Environment) -> int:
    """The map of the world running at ROOT: 0; a line saying none runs: 3."""
    from mailtalk.practice.world import is_running

    if not is_running(root):
        if as_json:
            env.stdout.write(json.dumps({"running": False, "root": str(root)}) + "\n")
        else:
            env.stdout.write(
                f"No practice world runs at {root} (mailtalk practice --keep starts one).\n"
            )
        return int(NOT_RUNNING)
    world_map = running_map(root)
    if as_json:
        env.stdout.write(json.dumps({"running": True, **world_map.as_json()}) + "\n")
    else:
        write_map_text(world_map, env)
    return int(ExitCode.OK)


def stop_world(root: Path, env: Environment, language: str | None = None) -> int:
    """Stop the world running at ROOT; 0 when it stopped or none ran. In the learner's
    language (--lang, else last time's, else the locale's), as the map is."""
    from mailtalk.practice.i18n import translation
    from mailtalk.practice.world import is_running

    _ = translation(map_language(env, language)).gettext
    if not is_running(root):
        env.stdout.write(_("No practice world runs at {root}: nothing to stop.").format(
            root=root) + "\n")
        return int(ExitCode.OK)
    world_map = running_map(root)
    try:
        os.kill(world_map.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass  # it is ending by itself
    except PermissionError:
        raise MailtalkError(
            _("the world at {root} runs as another user (pid {pid}): cannot stop it").format(
                root=root, pid=world_map.pid)
        ) from None
    deadline = time.monotonic() + STOP_TIMEOUT
    while is_running(root) or not process_gone(world_map.pid):
        if time.monotonic() > deadline:
            raise MailtalkError(
                _("the world at {root} (pid {pid}) did not stop within {seconds} s").format(
                    root=root, pid=world_map.pid, seconds=f"{STOP_TIMEOUT:g}")
            )
        time.sleep(0.05)
    env.stdout.write(_("Stopped the practice world at {root} (pid {pid}).").format(
        root=root, pid=world_map.pid) + "\n")
    return int(ExitCode.OK)


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie waiting for its parent counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def keep_world(root: Path, as_json: bool, env: Environment) -> int:
    """Start the world in a process of its own and return once it listens."""
    from mailtalk.practice.world import is_running, make_root

    if is_running(root):
        env.stderr.write(f"mailtalk: a world already runs at {root}\n")
        return show_status(root, as_json, env)
    make_root(root)  # a root that cannot be used fails here, in the foreground
    child = subprocess.Popen(
        [sys.executable, "-m", "mailtalk", "practice", "--root", str(root), "--run-world"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd="/",
        env=_child_environment(env),
        start_new_session=True,  # not stopped by the terminal's Ctrl-C or hang-up
    )
    try:
        _wait_until_listening(root, child)
    finally:
        assert child.stderr is not None
        child.stderr.close()
    return show_status(root, as_json, env)


def _child_environment(env: Environment) -> dict[str, str]:
    """The variables the world's process gets: ours, and the path to this mailtalk."""
    import mailtalk

    variables = dict(env.variables)
    package_parent = str(Path(mailtalk.__file__).resolve().parent.parent)
    paths = [package_parent, *filter(None, variables.get("PYTHONPATH", "").split(os.pathsep))]
    variables["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return variables


def _wait_until_listening(root: Path, child: subprocess.Popen[bytes]) -> None:
    from mailtalk.practice.worldmap import MAP_FILE, MapError, read_map

    deadline = time.monotonic() + KEEP_TIMEOUT
    while time.monotonic() < deadline:
        status = child.poll()
        if status is not None:
            assert child.stderr is not None
            said = child.stderr.read().decode("utf-8", "replace").strip().splitlines()
            last = said[-1].removeprefix("mailtalk: ") if said else f"exit status {status}"
            error = MailtalkError(f"the world did not start: {last}")
            try:
                error.exit_code = ExitCode(status)  # the child's own reason
            except ValueError:
                error.exit_code = ExitCode.FAILED
            raise error
        try:
            world_map = read_map(root / MAP_FILE)
        except MapError:
            world_map = None
        if world_map is not None and world_map.pid == child.pid:
            return
        time.sleep(0.05)
    child.terminate()
    raise MailtalkError(f"the world did not start within {KEEP_TIMEOUT:g} s")


def run_world_forever(root: Path, env: Environment) -> int:
    """The process ``--keep`` starts: the world, until SIGTERM (or SIGINT)."""
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    world = start_practice_world(root, env, kept=True)
    try:
        # Listening and the map written: whoever started us has read what it needs;
        # nothing more goes to the pipe it reads.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        os.close(devnull)
        while not stop.wait(3600):
            pass
    finally:
        world.stop()
    return int(ExitCode.OK)
