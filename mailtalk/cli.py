"""The command line: the root click group, its error handling, and ``main``.

The commands themselves live in ``mailtalk.commands`` (one module per family) and
are imported only when they run or are listed, so ``mailtalk --version`` builds
none of their options. Kept light on purpose: ``--version`` and every ``--help``
must not import prompt_toolkit, rich, dnspython or asyncio, so the modules that
need them are imported inside the commands that use them.

The Environment (``mailtalk.environment``: streams, tty flags, variables, colour,
output mode, width, XDG paths, ``--debug``) is made here, once per invocation, by the
root group, and kept as the root context's ``obj``; a test swaps it with
``CliRunner().invoke(cli, args, obj=Environment.for_test(...))``. A command takes it
as its first argument with ``@pass_environment`` and hands it to its feature's
``run(options, env)``::

    @cli.command()
    @click.argument("url")
    @pass_environment
    def connect(env: Environment, url: str) -> None:
        from mailtalk.client.command import ConnectOptions, run

        sys.exit(run(ConnectOptions(...), env))

Nothing below the CLI reads ``sys.stdout.isatty()`` or ``os.environ`` to decide how
to write: it asks the Environment.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import click

from mailtalk import __version__
from mailtalk.exitcodes import EXIT_CODE_HELP, ExitCode

if TYPE_CHECKING:
    from mailtalk.environment import Environment

F = TypeVar("F", bound=Callable[..., Any])
R = TypeVar("R")

EXIT_STATUS_EPILOG = "\b\nExit status:\n" + "\n".join(
    f"  {int(code):<4} {text}" for code, text in EXIT_CODE_HELP.items()
)


# Which module of mailtalk.commands defines each command, in the order they are
# listed (completions and the man page follow it). A command's module is imported
# only when that command runs, or when everything is listed (--help, completions),
# so ``mailtalk --version`` builds none of the ~100 options.
COMMAND_MODULES = {
    "connect": "session",
    "smtp": "session",
    "pop3": "session",
    "imap": "session",
    "practice": "practice",
    "serve": "serve",
    "run": "run",
    "mx": "mail",
    "send": "mail",
    "diagnose": "mail",
    "explain": "explain",
    "completion": "completion",
}


class MailtalkGroup(click.Group):
    """Loads commands lazily; turns every error into one readable line and the right
    exit status."""

    _commands: dict[str, click.Command]

    @property  # type: ignore[override]
    def commands(self) -> dict[str, click.Command]:
        """Every command: imports all their modules the first time it is read."""
        if not self.__dict__.get("_all_loaded"):
            self.__dict__["_all_loaded"] = True
            import importlib

            for module in dict.fromkeys(COMMAND_MODULES.values()):
                importlib.import_module(f"mailtalk.commands.{module}")
            self._commands = {
                name: self._commands[name]
                for name in sorted(self._commands, key=_listing_order)
            }
        return self._commands

    @commands.setter
    def commands(self, value: dict[str, click.Command]) -> None:
        self._commands = value

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        # the command modules register here while being imported: no full load
        name = name or cmd.name
        if name is None:
            raise TypeError("a command needs a name")
        self._commands[name] = cmd

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is not None and cmd_name not in self._commands:
            import importlib

            importlib.import_module(f"mailtalk.commands.{module}")
        return self._commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(self.commands)

    def make_context(
        self, info_name: str | None, args: list[str], parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        # the root's own options are parsed here, before invoke: `mailtalk --fo`
        if parent is None:  # click's errors in the language of the command line
            from mailtalk.clicklanguage import language_of_arguments, speak

            speak(language_of_arguments(args, getattr(extra.get("obj"), "variables", os.environ)))
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.exceptions.ClickException as error:
            raise _said_in_one_line(error) from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, command, rest = super().resolve_command(ctx, args)
        from mailtalk.clicklanguage import (
            language_of_arguments,
            remembered_language,
            speak,
            speaks_language,
        )

        if command is not None and not speaks_language(command):
            speak("en")  # serve, completion: English, their errors too
        elif command is not None and hasattr(command, "remembered_language"):
            # practice: the lessons' language of last time (the root's callback, which
            # makes the environment, runs after this)
            from mailtalk.environment import Environment

            env = ctx.obj if isinstance(ctx.obj, Environment) else Environment.from_process()
            saved = remembered_language(command, env)
            if saved is not None:
                speak(language_of_arguments(args, env.variables, saved))
        return name, command, rest

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.exceptions.ClickException as error:
            raise _said_in_one_line(error) from None
        except (click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("mailtalk: interrupted", err=True)
            ctx.exit(ExitCode.INTERRUPTED)
        except BrokenPipeError:
            # The reader went away (| head): stop quietly, as cat does, and keep Python
            # from complaining when it flushes stdout on the way out.
            with contextlib.suppress(OSError):
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
            ctx.exit(ExitCode.PIPE_CLOSED)
        except Exception as error:  # the one place that turns any error into a line
            from mailtalk.errors import exit_code_for, one_line

            if environment_of(ctx).debug:
                raise
            click.echo(f"mailtalk: {one_line(error)}", err=True)
            if exit_code_for(error) == ExitCode.FAILED and not _is_known(error):
                click.echo("mailtalk: run again with --debug to see the trace", err=True)
            ctx.exit(exit_code_for(error))


class CAFile(click.Path):
    """--cafile: a readable file holding at least one PEM certificate.

    Checked while the options are read (exit status 2, before connecting), by
    ``mailtalk.net.tls.check_cafile``, which also checks ``cafile=`` in session files.
    """

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from mailtalk.language import WordedError
        from mailtalk.net.tls import check_cafile

        path = os.fsdecode(super().convert(value, param, ctx))
        try:
            return check_cafile(path)
        except WordedError as error:
            from mailtalk.clicklanguage import spoken_gettext

            self.fail(f"{path}: {error.said(spoken_gettext())}", param, ctx)


class OutputFile(click.Path):
    """A file mailtalk writes (--transcript, --record, --junit): its directory must
    exist and be writable, and the file, if there, writable; checked while the options
    are read (exit status 2), not after the conversation."""

    def __init__(self) -> None:
        super().__init__(dir_okay=False, writable=True)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        from mailtalk.terminal import output_file_problem

        path = os.fsdecode(super().convert(value, param, ctx))
        problem = output_file_problem(path)
        if problem:
            self.fail(problem, param, ctx)
        return path


class ResolveEntry(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.3 on
    """--resolve NAME:ADDRESS: connect to ADDRESS when NAME is asked for (curl's
    --resolve, without the port): a server before its DNS exists, a practice world."""

    name = "NAME:ADDRESS"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        import ipaddress

        if isinstance(value, tuple):
            return value
        name, sep, address = str(value).partition(":")
        address = address.strip("[]")
        try:
            ipaddress.ip_address(address)
        except ValueError:
            self.fail(f"{value!r} is not NAME:ADDRESS (an IP address after the first ':')",
                      param, ctx)
        if not sep or not name:
            self.fail(f"{value!r} is not NAME:ADDRESS", param, ctx)
        return (name.lower().rstrip("."), address)


def _said_in_one_line(error: click.exceptions.ClickException) -> Exception:
    """Say a click error (unknown option or command, missing or bad argument) in one
    line, and end with its exit status (2 for usage), where click would print the
    usage, a "Try --help" line, a blank line and "Error: ...".

    ``mailtalk`` alone still prints the help (click >= 8.2 raises it as an error)."""
    if type(error).__name__ == "NoArgsIsHelpError":  # new in click 8.2
        return error
    from mailtalk.clicklanguage import help_hint
    from mailtalk.errors import click_error_line

    click.echo(f"mailtalk: {click_error_line(error, help_hint)}", err=True)
    return click.exceptions.Exit(error.exit_code)


def _listing_order(name: str) -> int:
    order = list(COMMAND_MODULES)
    return order.index(name) if name in order else len(order)


def _is_known(error: BaseException) -> bool:
    from mailtalk.errors import is_expected

    return is_expected(error)


def environment_of(ctx: click.Context) -> Environment:
    """The Environment of this invocation: the one the root group made (or a test gave),
    else this process's, with ``--debug`` if it was given."""
    from mailtalk.environment import Environment

    root = ctx.find_root()
    if isinstance(root.obj, Environment):
        return root.obj
    return Environment.from_process(debug_option=bool(root.params.get("debug")))


def pass_environment(command: Callable[..., R]) -> Callable[..., R]:
    """Hand a command the invocation's Environment as its first argument (``env``)."""

    @functools.wraps(command)
    def with_environment(*args: Any, **kwargs: Any) -> R:
        return command(environment_of(click.get_current_context()), *args, **kwargs)

    return with_environment


@click.group(
    cls=MailtalkGroup,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="\b\nExamples:\n"
    "  mailtalk smtp mail.example.com\n"
    "  mailtalk connect submission://alice@mail.example.com\n"
    "  mailtalk imap --tls imap.example.com\n"
    "  printf 'EHLO me\\nQUIT\\n' | mailtalk smtp localhost\n\n" + EXIT_STATUS_EPILOG,
)
@click.version_option(__version__, "-V", "--version", prog_name="mailtalk")
@click.option("--debug", is_flag=True, help="Show the full trace of unexpected errors.")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Per-host defaults from FILE instead of $MAILTALK_CONFIG or "
    "$XDG_CONFIG_HOME/mailtalk/config.toml (e.g. mailtalk --config hosts.toml send "
    "--server work ...).",
)
@click.option("--no-config", is_flag=True, help="Ignore the config file.")
@click.pass_context
def cli(ctx: click.Context, debug: bool, config_file: str | None, no_config: bool) -> None:
    """Talk SMTP, POP3 and IMAP to mail servers, with a tool that knows each protocol.

    You type the raw protocol, as with telnet; mailtalk completes what is valid
    now, tags IMAP commands, dot-stuffs DATA, does the base64 of AUTH and shows
    where you are in the conversation. Lines starting with ":" are mailtalk's
    own commands (:help lists them).
    """
    import gc

    from mailtalk.environment import Environment

    if not gc.isenabled():
        # Off while the command line loaded (mailtalk.__main__): what that made is kept
        # out of the collector's sight, or the first collection would walk all of it.
        gc.freeze()
        gc.enable()
    # read by commands/host_defaults.py, only by the commands that connect
    ctx.meta["mailtalk.config"] = (config_file, no_config)
    if not isinstance(ctx.obj, Environment):
        ctx.obj = Environment.from_process(debug_option=debug)
    elif debug:
        ctx.obj = ctx.obj.replace(debug_option=True)


def main() -> None:
    cli(prog_name="mailtalk")
