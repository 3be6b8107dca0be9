"""`mailtalk practice`: the course's mail world on this machine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from mailtalk.cli import EXIT_STATUS_EPILOG, cli, pass_environment
from mailtalk.commands.languageoption import lang_option

if TYPE_CHECKING:
    from mailtalk.environment import Environment


@cli.command(
    epilog="\b\nExamples:\n"
    "  mailtalk practice                    the world, its map, lesson and prompt\n"
    "  mailtalk practice --lang nl --lesson 2\n"
    "  mailtalk practice --list\n"
    "  mailtalk practice --keep             leave it running for other terminals\n"
    "  eval \"$(mailtalk practice --vars)\"; mailtalk run \"$LESSON/solution.mt\"\n"
    "  echo :check | mailtalk practice      what the servers saw done since the\n"
    "                                       lesson began, a prompt open or not\n"
    "  mailtalk practice --status --json    where everything is, as JSON\n"
    "  mailtalk practice --stop\n"
    "  mailtalk practice --reset --root /tmp/world\n"
    "\b\n--status exits 0 when a world runs at ROOT, 3 when none does.\n"
    "MAILTALK_PRACTICE_PORTS=free uses free ports even where the standard ones\n"
    "(25, 587, 110, ...) could be bound; =shared puts every host on 127.0.0.1.\n\n"
    + EXIT_STATUS_EPILOG
)
@click.option(
    "--root",
    type=click.Path(file_okay=False),
    help="The world's folder: hosts, mail, DNS records, journal, map "
    "[default: $XDG_STATE_HOME/mailtalk/practice].",
)
@click.option("--reset", is_flag=True, help="Start from a fresh world (wipes ROOT first).")
@click.option(
    "--keep", is_flag=True, help="Start the world in the background and leave it running."
)
@click.option("--status", is_flag=True, help="Show the map of the world running at ROOT.")
@click.option("--stop", is_flag=True, help="Stop the world running at ROOT.")
@click.option("--json", "as_json", is_flag=True, help="With --status or --keep: the map as JSON.")
@lang_option("The lessons' language")
@click.option("--list", "list_lessons", is_flag=True, help="List the lessons.")
@click.option("--lesson", type=click.IntRange(min=1), metavar="N", help="Start at lesson N.")
@click.option("--glossary", is_flag=True, help="The words of the course (MUA, MTA, MX...).")
@click.option(
    "--vars",
    "session_variables",
    is_flag=True,
    help="The running world's addresses, and LESSON (the lesson's folder, with "
    "--lesson N lesson N's), as export lines, for "
    'eval "$(mailtalk practice --vars)" before mailtalk run "$LESSON/solution.mt".',
)
@click.option("--run-world", is_flag=True, hidden=True)
@pass_environment
def practice(
    env: Environment,
    root: str | None,
    reset: bool,
    keep: bool,
    status: bool,
    stop: bool,
    as_json: bool,
    lang: str | None,
    list_lessons: bool,
    lesson: int | None,
    glossary: bool,
    session_variables: bool,
    run_world: bool,
) -> None:
    """Practise on a small mail internet of your own, offline, on loopback.

    Starts the course's world in this process: a DNS, your ISP's mail server
    (mail.isp.test: submission with STARTTLS and AUTH, relaying for its users,
    delivery by MX lookup), example.net's MX (mx.example.net: SMTP in, POP3
    and IMAP out, a Maildir per user) and a stranger's server that refuses to
    relay, each on a loopback address of its own. It prints the map (who
    plays MUA, MTA and MDA, where, on which ports, the practice accounts) and
    opens a prompt with a coach on the lesson's server: :lesson, :hint,
    :check, :map, :dns, :skip, :reset. Steps tick when the servers see them
    done, whatever client did them, since the lesson began (a prompt open or
    not). Piped in, the lines go to that server and the coach's :commands work
    (echo :check | mailtalk practice). :quit stops the world.
    """
    from mailtalk.practice.command import PracticeOptions, run

    options = PracticeOptions(
        root=Path(root) if root else None,
        reset=reset,
        keep=keep,
        status=status,
        stop=stop,
        as_json=as_json,
        lang="nl" if lang == "nl" else "en" if lang == "en" else None,
        list_lessons=list_lessons,
        lesson=lesson,
        glossary=glossary,
        session_variables=session_variables,
        run_world=run_world,
    )
    sys.exit(run(options, env))


def _remembered_language(env: Environment) -> str | None:
    """The lessons' language chosen last time, for click's errors about the options
    (``mailtalk practice --lesosn 2`` in the language of the lessons)."""
    from mailtalk.practice.session import load_progress

    return load_progress(env).language


practice.remembered_language = _remembered_language  # type: ignore[attr-defined]
