"""`mailtalk run`: replay session files."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

from mailtalk.cli import CAFile, cli, pass_environment
from mailtalk.commands.languageoption import JOB_LANG, gettext_of, take_language
from mailtalk.commands.tlsoptions import client_tls, tls_options
from mailtalk.commands.transportoptions import checked_pipe, transport_options

if TYPE_CHECKING:
    from mailtalk.environment import Environment


@cli.command(
    epilog="\b\nExamples:\n"
    "  mailtalk run smoke.mt\n"
    "  mailtalk run -v --var TO=bob@example.net tests/*.mt\n"
    "  mailtalk run --junit report.xml --keep-going tests/*.mt\n"
    "  mailtalk run --repeat 1000 --concurrency 8 send.mt\n"
    "  mailtalk run --repeat 1000 --reuse send.mt    # one connection, loop ... end\n"
    "  printf 'connect smtp://localhost\\nS: 220\\nC: QUIT\\n' | mailtalk run -\n"
    "  mailtalk run --pipe 'exim -bh 192.0.2.1' session.mt  # Exim's rules, offline\n"
    "  mailtalk run --cafile ca.pem --sni mail.example.com --cert me.pem tls.mt\n\n"
    "\b\nSession files: one step a line. C: LINE sends, S: EXPECTATION checks the reply\n"
    "(250, 2xx, 5.7.1, +OK, NO, then optionally a glob, /regex/ or words, each a\n"
    "whole word, in any order; * for any; * TEXT for an IMAP untagged response;\n"
    "what no reply could match is a bad script). Directives: connect URL [insecure]\n"
    "[cafile=PATH], starttls, tls, auth MECHANISM USER [ENVVAR], data FILE,\n"
    "data <<EOF ... EOF, set NAME VALUE, include FILE, sleep SECONDS,\n"
    "expect-close, loop ... end, # comments; ${NAME} from --var, set, or the\n"
    "environment. Secrets never go in the file: auth takes $MAILTALK_PASSWORD\n"
    "(or ENVVAR), ~/.netrc, or asks; auth xoauth2|oauthbearer USER takes\n"
    "$MAILTALK_OAUTH2_TOKEN (or ENVVAR), or asks; recordings write neither;\n"
    "auth external [USER] (--cert) and auth gssapi [USER] (the Kerberos ticket\n"
    "of kinit) take no secret.\n\n"
    "\b\nExit status:\n"
    "  0    every file passed\n"
    "  1    a reply did not match its S: line\n"
    "  2    a bad script or bad options (nothing was run)\n"
    "  3    could not connect\n"
    "  4    TLS failed or was refused\n"
    "  5    the server closed the connection early, broke the protocol or timed out\n"
    "  6    an auth directive failed",
)
@click.argument("files", nargs=-1, required=True, metavar="FILE...")
@click.option("--var", "variables", multiple=True, metavar="NAME=VALUE", help="Set ${NAME}.")
@click.option("-k", "--keep-going", is_flag=True, help="Go on after a reply that does not match.")
@click.option("--junit", metavar="FILE", help="Write a JUnit XML report.")
@click.option("--tap", is_flag=True, help="Print TAP instead of the usual lines.")
@click.option("--json", "as_json", is_flag=True, help="Print the transcript as JSON lines.")
@click.option(
    "--repeat",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Replay each file N times and print the rate and latency percentiles.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=1000),
    default=1,
    show_default=True,
    help="Replays at once (with --repeat).",
)
@click.option(
    "--reuse",
    is_flag=True,
    help="Repeat only the file's loop ... end block, on one connection per worker.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds for connecting and for each reply.",
)
@click.option("-v", "--verbose", is_flag=True, help="Show the conversation as it happens.")
@click.option(
    "--cafile",
    type=CAFile(),
    help="Trust the CA certificates (PEM) in this file, for every connect line without "
    "a cafile= of its own.",
)
@tls_options
@transport_options
@JOB_LANG
@pass_environment
def run(
    env: Environment, files: tuple[str, ...], variables: tuple[str, ...], **options: Any
) -> None:
    """Replay session files (.mt) against servers and check every reply.

    Each FILE is a conversation written down: C: lines the client sends, S:
    lines the server must answer, and a few directives. FILE is a regular
    file of at most 16 MiB; "-" reads a script from standard input. On a
    mismatch the file stops (or goes on with --keep-going) and mailtalk shows
    what was expected, what came, and what the reply means.
    """
    from mailtalk.commands import host_defaults
    from mailtalk.script.command import RunOptions
    from mailtalk.script.command import run as replay

    tls = client_tls(env, options)
    # --json and --tap are for programs: English
    take_language(env, options, machine=options["as_json"] or options["tap"])
    options["pipe_command"] = checked_pipe(options["pipe_command"])
    _ = gettext_of(options)
    run_options = RunOptions(files=files, variables=_parse_variables(variables, _),
                             hosts=host_defaults.hosts(), tls=tls, **options)
    if files.count("-") > 1:
        raise click.UsageError(_("standard input (-) can be read once"))
    sys.exit(replay(run_options, env))


def _parse_variables(
    pairs: tuple[str, ...], _: Callable[[str], str] = str
) -> dict[str, str]:
    """``--var NAME=VALUE`` pairs as a mapping."""
    variables = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.isidentifier():
            raise click.UsageError(_("--var {pair!r}: give NAME=VALUE").format(pair=pair))
        variables[name] = value
    return variables
