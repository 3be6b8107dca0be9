"""The Environment: the one place that decides output mode, colour, width, paths and
debugging from the streams and variables, and the CLI handing it to the commands."""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailtalk.cli import cli
from mailtalk.environment import DEFAULT_WIDTH, MIN_WIDTH, Environment, OutputMode

TERMINAL = {"stdin_isatty": True, "stdout_isatty": True, "stderr_isatty": True}


def env(variables: dict[str, str] | None = None, /, **changes: object) -> Environment:
    return Environment.for_test(variables=variables or {}, **changes)


# -- output mode ------------------------------------------------------------------------


def test_json_wins_everywhere() -> None:
    assert env().output_mode(as_json=True) is OutputMode.JSON
    assert env(**TERMINAL).output_mode(as_json=True) is OutputMode.JSON


def test_rich_on_a_terminal_plain_in_a_pipe() -> None:
    assert env(**TERMINAL).output_mode() is OutputMode.RICH
    assert env().output_mode() is OutputMode.PLAIN


def test_force_color_sends_a_pipe_through_rich() -> None:
    assert env({"FORCE_COLOR": "1"}).output_mode() is OutputMode.RICH


def test_no_color_keeps_the_rich_layout_on_a_terminal() -> None:
    # the layout stays; rich itself drops the colour
    assert env({"NO_COLOR": "1"}, **TERMINAL).output_mode() is OutputMode.RICH


# -- colour -----------------------------------------------------------------------------


def test_colour_only_on_a_terminal() -> None:
    assert env(**TERMINAL).colour()
    assert not env().colour()


@pytest.mark.parametrize("value", ["1", "yes", "0"])  # no-color.org: any non-empty value
def test_no_color_turns_colour_off(value: str) -> None:
    assert not env({"NO_COLOR": value}, **TERMINAL).colour()
    assert not env({"NO_COLOR": value}, **TERMINAL).colour("stderr")


def test_an_empty_no_color_changes_nothing() -> None:
    assert env({"NO_COLOR": ""}, **TERMINAL).colour()


def test_force_color_colours_a_pipe_but_not_against_no_color() -> None:
    assert env({"FORCE_COLOR": "1"}).colour()
    assert not env({"FORCE_COLOR": "1", "NO_COLOR": "1"}, **TERMINAL).colour()


def test_a_dumb_terminal_gets_no_colour() -> None:
    assert not env({"TERM": "dumb"}, **TERMINAL).colour()
    assert env({"TERM": "xterm-256color"}, **TERMINAL).colour()


def test_colour_of_each_stream_follows_its_own_terminal() -> None:
    piped_out = env(stdout_isatty=False, stderr_isatty=True)
    assert not piped_out.colour("stdout")
    assert piped_out.colour("stderr")


# -- width ------------------------------------------------------------------------------


def test_columns_sets_the_width() -> None:
    assert env({"COLUMNS": "120"}).width() == 120
    assert env({"COLUMNS": "120"}).plain_width() == 120
    assert env({"COLUMNS": "120"}, **TERMINAL).width() == 120


def test_never_narrower_than_the_minimum() -> None:
    assert env({"COLUMNS": "10"}).width() == MIN_WIDTH
    assert env({"COLUMNS": "10"}).plain_width() == MIN_WIDTH


@pytest.mark.parametrize("columns", [None, "", "wide"])
def test_a_pipe_without_a_usable_columns_gets_the_default(columns: str | None) -> None:
    variables = {} if columns is None else {"COLUMNS": columns}
    assert env(variables).width() == DEFAULT_WIDTH
    assert env(variables).plain_width() == DEFAULT_WIDTH
    assert env(variables).width(100) == 100
    assert env(variables).plain_width(72) == 72


def test_a_terminal_without_columns_asks_the_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    monkeypatch.setattr(shutil, "get_terminal_size", lambda fallback: os.terminal_size((132, 50)))
    assert env(**TERMINAL).width() == 132
    assert env(**TERMINAL).plain_width() == DEFAULT_WIDTH  # plain text is for pipes


# -- XDG paths --------------------------------------------------------------------------


def test_xdg_state_home_holds_the_history(tmp_path: Path) -> None:
    home = env({"XDG_STATE_HOME": str(tmp_path), "HOME": "/nowhere"})
    assert home.state_dir() == tmp_path / "mailtalk"
    assert home.history_file() == tmp_path / "mailtalk" / "history"


def test_xdg_data_home_holds_the_data(tmp_path: Path) -> None:
    assert env({"XDG_DATA_HOME": str(tmp_path)}).data_dir() == tmp_path / "mailtalk"


def test_without_xdg_variables_the_defaults_under_home(tmp_path: Path) -> None:
    home = env({"HOME": str(tmp_path)})
    assert home.history_file() == tmp_path / ".local/state/mailtalk/history"
    assert home.data_dir() == tmp_path / ".local/share/mailtalk"


def test_a_relative_xdg_path_is_ignored(tmp_path: Path) -> None:
    # the XDG spec: relative paths are invalid and must be ignored
    home = env({"HOME": str(tmp_path), "XDG_STATE_HOME": "state", "XDG_DATA_HOME": "data"})
    assert home.state_dir() == tmp_path / ".local/state/mailtalk"
    assert home.data_dir() == tmp_path / ".local/share/mailtalk"


def test_no_home_variable_falls_back_to_the_users_home(monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert env().history_file() == tmp_path / ".local/state/mailtalk/history"


# -- terminals, prompts, debugging --------------------------------------------------------


def test_the_repl_needs_a_terminal_on_both_ends() -> None:
    assert env(**TERMINAL).interactive()
    assert not env(stdin_isatty=False, stdout_isatty=True).interactive()
    assert not env(stdin_isatty=True, stdout_isatty=False).interactive()


def test_a_prompt_needs_a_terminal_on_standard_input() -> None:
    assert env(stdin_isatty=True).can_prompt()
    assert not env().can_prompt()


def test_debug_from_the_option_or_the_variable() -> None:
    assert not env().debug
    assert env({"MAILTALK_DEBUG": "1"}).debug
    assert not env({"MAILTALK_DEBUG": "0"}).debug
    assert env(debug_option=True).debug


def test_for_test_streams_are_in_memory_and_variables_empty() -> None:
    made = Environment.for_test()
    assert made.variables == {}
    assert isinstance(made.stdout, io.StringIO) and isinstance(made.stderr, io.StringIO)
    assert made.stdin.read() == ""
    assert not (made.stdin_isatty or made.stdout_isatty or made.stderr_isatty)


def test_from_process_reads_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILTALK_DEBUG", "1")
    made = Environment.from_process()
    assert made.stdout is sys.stdout and made.variables is os.environ
    assert made.debug


# -- the CLI hands it down ----------------------------------------------------------------


def test_a_command_writes_to_the_environment_it_is_given() -> None:
    given = Environment.for_test()
    result = CliRunner().invoke(cli, ["explain", "--json", "550"], obj=given)
    assert result.exit_code == 0, result.output
    assert result.output == ""
    assert json.loads(given.stdout.getvalue())["code"] == "550"  # type: ignore[attr-defined]


def test_a_command_reads_the_environments_standard_input() -> None:
    given = Environment.for_test(stdin=io.StringIO("550 5.7.1 relay denied\n"))
    result = CliRunner().invoke(cli, ["explain", "--json", "-"], obj=given)
    assert result.exit_code == 0, result.output
    assert json.loads(given.stdout.getvalue())["enhanced_code"] == "5.7.1"  # type: ignore[attr-defined]


def test_errors_go_to_the_environments_standard_error() -> None:
    given = Environment.for_test()
    result = CliRunner().invoke(cli, ["explain", "hello"], obj=given)
    assert result.exit_code == 2
    assert given.stderr.getvalue().startswith("mailtalk: 'hello' is not a reply")  # type: ignore[attr-defined]


def test_the_plain_width_comes_from_the_environment() -> None:
    narrow = Environment.for_test(variables={"COLUMNS": "40"})
    CliRunner().invoke(cli, ["explain", "550"], obj=narrow)
    lines = narrow.stdout.getvalue().splitlines()  # type: ignore[attr-defined]
    wrapped = [line for line in lines if line.startswith("  ")]  # the headline is not
    assert wrapped and max(len(line) for line in wrapped) <= 40
    assert max(len(line) for line in wrapped) > 30


def test_debug_option_reaches_the_environment() -> None:
    given = Environment.for_test()
    seen: list[Environment] = []

    from mailtalk.cli import pass_environment

    @cli.command("environment-probe", hidden=True)
    @pass_environment
    def probe(env: Environment) -> None:
        seen.append(env)

    try:
        CliRunner().invoke(cli, ["--debug", "environment-probe"], obj=given)
        CliRunner().invoke(cli, ["environment-probe"], obj=given)
    finally:
        cli.commands.pop("environment-probe")
    assert [e.debug for e in seen] == [True, False]
    assert seen[1] is given


def test_the_run_command_reads_its_script_from_the_environment(tmp_path: Path) -> None:
    script = "set X y\n"  # no connect: a bad script, found before anything runs
    given = Environment.for_test(stdin=io.StringIO(script))
    result = CliRunner().invoke(cli, ["run", "-"], obj=given)
    assert result.exit_code == 2
    assert given.stderr.getvalue().startswith("mailtalk: <stdin>")  # type: ignore[attr-defined]
