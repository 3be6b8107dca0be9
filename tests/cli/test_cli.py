"""The command line in-process (click's CliRunner) and as a real process.

Every failure must be one ``mailtalk: ...`` line on stderr with the documented
exit status, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from mailtalk import __version__
from mailtalk.cli import cli
from mailtalk.exitcodes import ExitCode
from tests.peers import (
    SMTP_GREETING,
    Hold,
    ScriptedPeer,
    refused_port,
)

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))
COMMANDS = ["connect", "smtp", "pop3", "imap"]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("MAILTALK_DEBUG", None)
    env["NO_COLOR"] = "1"
    # English, whatever the developer's locale: explanations follow LANG (issue 14)
    for variable in ("LANGUAGE", "LC_ALL", "LC_MESSAGES"):
        env.pop(variable, None)
    env["LANG"] = "C.UTF-8"
    return env


def run(*args: str, stdin: bytes = b"", timeout: float = 10) -> subprocess.CompletedProcess[str]:
    if not Path(MAILTALK).exists():  # pragma: no cover - a venv without the script
        pytest.skip("the mailtalk console script is not installed next to python")
    process = subprocess.run(
        [MAILTALK, *args], input=stdin, capture_output=True, timeout=timeout, env=child_env()
    )
    return subprocess.CompletedProcess(
        process.args, process.returncode,
        process.stdout.decode("utf-8", "replace"), process.stderr.decode("utf-8", "replace"),
    )


def invoke(*args: str, stdin: str = "") -> Result:
    return CliRunner().invoke(cli, list(args), input=stdin, prog_name="mailtalk")


def assert_one_error_line(stderr: str, *fragments: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("# ")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith("mailtalk: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in lines[0], stderr
    return lines[0]


# --------------------------------------------------------------------------- version/help


def test_version_in_process() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"mailtalk, version {__version__}"
    assert invoke("-V").stdout == result.stdout


def test_version_subprocess() -> None:
    process = run("--version")
    assert process.returncode == 0
    assert __version__ in process.stdout
    assert process.stderr == ""


def test_python_dash_m() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "mailtalk", "--version"],
        capture_output=True, text=True, timeout=10, env=child_env(),
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == f"mailtalk, version {__version__}"


def test_version_and_help_stay_light() -> None:
    """--version and --help must not import the REPL's heavy dependencies."""
    code = (
        "import sys\n"
        "from mailtalk.cli import cli\n"
        "for args in (['--version'], ['--help'], ['smtp', '--help']):\n"
        "    try:\n"
        "        cli(args, prog_name='mailtalk')\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('prompt_toolkit', 'rich', 'dns', 'asyncio') if m in sys.modules]\n"
        "sys.stderr.write(repr(heavy))\n"
    )
    process = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=10, env=child_env()
    )
    assert process.stderr == "[]"


def test_root_help() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    for word in ("Examples:", "Exit status", *COMMANDS):
        assert word in result.stdout
    for code in ExitCode:
        assert f"  {int(code):<4} " in result.stdout
    assert invoke("-h").stdout == result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert "Examples:" in result.stdout
    assert "Exit status" in result.stdout
    assert f"mailtalk {command}" in result.stdout
    for option in ("--starttls", "--insecure", "--cafile", "--timeout", "--transcript", "--raw"):
        assert option in result.stdout


def command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``group``, as the words that name it."""
    context = click.Context(group)
    paths: list[tuple[str, ...]] = []
    for name in group.list_commands(context):
        command = group.get_command(context, name)
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
    return paths


def test_every_help_has_examples_and_exit_statuses() -> None:
    """Groups too: `mailtalk diagnose --help` is where a user looks first."""
    for path in command_paths(cli):
        text = run(*path, "--help").stdout
        assert "Exit status" in text, " ".join(path)
        assert "Examples:" in text or "mailtalk completion bash" in text, " ".join(path)


def test_connect_help_lists_schemes() -> None:
    text = invoke("connect", "--help").stdout
    for scheme in ("smtp://", "submission://", "smtps://", "pop3://", "pop3s://", "imap://",
                   "imaps://"):
        assert scheme in text


@pytest.mark.parametrize("command", COMMANDS)
def test_command_help_subprocess(command: str) -> None:
    process = run(command, "--help")
    assert process.returncode == 0
    assert "Examples:" in process.stdout and "Exit status" in process.stdout


def test_no_command_shows_usage() -> None:
    result = invoke()
    assert result.exit_code in (0, 2)
    assert "Usage:" in result.output


# --------------------------------------------------------------------------- usage errors


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["connect", "mail.example.com"], "is not a URL"),
        (["connect", "http://h"], "unknown scheme 'http'"),
        (["connect", "smtp://h:99999"], "is not a port number"),
        (["connect", "smtp://"], "no host given"),
        (["smtp", "h:abc"], "is not a port number"),
        (["imap", "[::1"], "unclosed ["),
    ],
)
def test_bad_target_is_usage_error_in_process(args: list[str], fragment: str) -> None:
    result = invoke(*args)
    assert result.exit_code == ExitCode.USAGE
    assert_one_error_line(result.stderr, fragment)
    assert result.stdout == ""


def test_bad_url_subprocess() -> None:
    process = run("connect", "gopher://h")
    assert process.returncode == 2
    assert_one_error_line(process.stderr, "unknown scheme 'gopher'")
    assert process.stdout == ""


def test_ipv4_and_ipv6_exclude_each_other() -> None:
    result = invoke("smtp", "-4", "-6", "127.0.0.1:25")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "-4 and -6 exclude each other")
    process = run("connect", "-4", "-6", "imap://127.0.0.1")
    assert process.returncode == 2
    assert_one_error_line(process.stderr, "-4 and -6")


def test_missing_cafile_is_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    result = invoke("smtp", "--tls", "--cafile", str(missing), "127.0.0.1")
    assert result.exit_code == 2
    assert "--cafile" in result.stderr and "does not exist" in result.stderr
    assert "Traceback" not in result.output
    process = run("connect", "--cafile", str(missing), "smtps://127.0.0.1")
    assert process.returncode == 2
    assert "does not exist" in process.stderr and "Traceback" not in process.stderr


def test_cafile_that_is_a_directory_is_usage_error(tmp_path: Path) -> None:
    result = invoke("imap", "--cafile", str(tmp_path), "127.0.0.1")
    assert result.exit_code == 2
    assert "--cafile" in result.stderr


@pytest.mark.parametrize("value", ["0", "-1", "soon"])
def test_bad_timeout_is_usage_error(value: str) -> None:
    result = invoke("smtp", "--timeout", value, "127.0.0.1")
    assert result.exit_code == 2
    assert "--timeout" in result.stderr


def test_unknown_option_is_usage_error() -> None:
    result = invoke("smtp", "--frobnicate", "h")
    assert result.exit_code == 2
    assert_one_error_line(result.stderr, "no such option '--frobnicate'")


def every_command_path() -> list[list[str]]:
    """Every command as typed (``send``, ``diagnose relay``...) that has options."""
    from mailtalk.cli import COMMAND_MODULES

    # explain reads "-ERR ..." and any other word as the reply: it has no unknown options
    paths = [[name] for name in COMMAND_MODULES if name not in ("diagnose", "explain")]
    group = cli.get_command(click.Context(cli), "diagnose")
    assert isinstance(group, click.Group)
    return [*paths, *(["diagnose", name] for name in group.list_commands(click.Context(group)))]


@pytest.mark.parametrize("command", [" ".join(path) for path in every_command_path()])
def test_an_unknown_option_is_one_line_and_status_2_everywhere(command: str) -> None:
    # click would print four lines: the usage, "Try ... for help.", a blank, "Error: ..."
    process = run(*command.split(), "--no-such-option")
    assert process.returncode == 2
    assert process.stdout == ""
    assert process.stderr.splitlines() == [
        f"mailtalk: no such option '--no-such-option' (try 'mailtalk {command} --help')"
    ]


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--fo"], "mailtalk: no such option '--fo' (try 'mailtalk --help')"),
        (["send", "--fo"], "mailtalk: no such option '--fo' (did you mean one of: "
         "'--from', '--json', '--to'?) (try 'mailtalk send --help')"),
        (["sendx"], "mailtalk: no such command 'sendx' (did you mean 'send'?) "
         "(try 'mailtalk --help')"),
        (["diagnose", "rely"], "mailtalk: no such command 'rely' (did you mean 'relay'?) "
         "(try 'mailtalk diagnose --help')"),
        (["explain"], "mailtalk: missing argument 'REPLY...' (try 'mailtalk explain --help')"),
        (["smtp", "h", "extra"],
         "mailtalk: got unexpected extra argument (extra) (try 'mailtalk smtp --help')"),
        (["smtp", "--timeout", "soon", "h"],
         "mailtalk: invalid value for '--timeout': 'soon' is not a valid float range"),
        (["completion", "csh"], "mailtalk: invalid value for 'SHELL': 'csh' is not one of "
         "'bash', 'zsh', 'fish'"),
    ],
)
def test_click_usage_errors_are_one_line(args: list[str], line: str) -> None:
    process = run(*args)
    assert (process.returncode, process.stdout, process.stderr.splitlines()) == (2, "", [line])


def test_no_arguments_still_prints_the_help() -> None:
    process = run()
    assert process.returncode in (0, 2)
    assert "Usage: mailtalk [OPTIONS] COMMAND" in process.stdout + process.stderr


# --------------------------------------------------------------------------- connecting


def test_connection_refused_in_process() -> None:
    port = refused_port()
    result = invoke("connect", f"smtp://127.0.0.1:{port}")
    assert result.exit_code == ExitCode.CONNECT
    assert_one_error_line(result.stderr, "connection refused", str(port))


def test_connection_refused_subprocess() -> None:
    port = refused_port()
    process = run("pop3", f"127.0.0.1:{port}", stdin=b"QUIT\n")
    assert process.returncode == 3
    assert_one_error_line(process.stderr, "cannot connect to 127.0.0.1 port", "connection refused")


def test_ipv6_only_to_an_ipv4_address() -> None:
    process = run("smtp", "-6", "127.0.0.1:25")
    assert process.returncode == 3
    assert_one_error_line(process.stderr, "127.0.0.1")


def test_plain_server_on_implicit_tls_url() -> None:
    script = [SMTP_GREETING, Hold()]
    with ScriptedPeer(script) as peer:
        process = run("connect", "--timeout", "5", f"smtps://127.0.0.1:{peer.port}",
                      stdin=b"QUIT\n")
    assert process.returncode == ExitCode.TLS
    line = assert_one_error_line(process.stderr, f"127.0.0.1:{peer.port}")
    assert "TLS" in line and "plain text" in line


def test_plain_server_on_implicit_tls_in_process() -> None:
    with ScriptedPeer([SMTP_GREETING, Hold()]) as peer:
        result = invoke("imap", "--tls", "--timeout", "5", f"127.0.0.1:{peer.port}")
    assert result.exit_code == ExitCode.TLS
    assert_one_error_line(result.stderr, "TLS handshake")


def test_silent_server_on_implicit_tls_times_out() -> None:
    """A server that never answers the ClientHello: TLS failed (4), not a hang."""
    with ScriptedPeer([Hold()]) as peer:
        process = run("connect", "--timeout", "0.5", f"imaps://127.0.0.1:{peer.port}")
    assert process.returncode == ExitCode.TLS
    assert_one_error_line(process.stderr, "TLS handshake", "0.5 s")
