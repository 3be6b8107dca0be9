"""NO_COLOR on a terminal: no style at all, in every command.

no-color.org asks that a non-empty ``NO_COLOR`` (whatever its value) turn colour off;
rich and prompt_toolkit both honour it but keep bold, dim, italic, reverse and their
resets. mailtalk's standard is stricter: with ``NO_COLOR`` its output on a terminal
carries no escape sequence, except the cursor moves a line editor cannot do without
(the REPL's prompt), which carry no style.

Each command runs as the real binary in a pseudo-terminal (pexpect); each check is
also run without ``NO_COLOR`` to show that the same output is styled then.
"""

from __future__ import annotations

import io
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pexpect = pytest.importorskip("pexpect")

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))
ESCAPE = re.compile(rb"\x1b")
# SGR, "select graphic rendition": colours, bold, dim, italic, reverse, reset
STYLE = re.compile(rb"\x1b\[[0-9;:]*m")


def terminal_env(no_color: str | None, tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "TERM": "xterm-256color", "PROMPT_TOOLKIT_NO_CPR": "1",
           "XDG_STATE_HOME": str(tmp_path / "state"), "LANG": "C.UTF-8"}
    for variable in ("NO_COLOR", "FORCE_COLOR", "MAILTALK_DEBUG", "LANGUAGE", "LC_ALL",
                     "LC_MESSAGES", "COLUMNS", "LINES"):
        env.pop(variable, None)
    if no_color is not None:
        env["NO_COLOR"] = no_color
    return env


def on_a_terminal(
    args: list[str], no_color: str | None, tmp_path: Path,
    talk: Callable[[Any], None] | None = None,
) -> bytes:
    """Everything ``mailtalk ARGS`` wrote to its terminal (standard output and error)."""
    log = io.BytesIO()
    child = pexpect.spawn(MAILTALK, args, env=terminal_env(no_color, tmp_path),
                          dimensions=(40, 100), timeout=30)
    child.logfile_read = log
    if talk is not None:
        talk(child)
    child.expect(pexpect.EOF)
    child.close()
    assert b"Traceback" not in log.getvalue()
    return log.getvalue()


ONE_SHOT = {
    "explain": ["explain", "550 5.7.1 <x@example.org>: Relay access denied"],
    "mx": ["mx", "no-such-domain.invalid"],
}


@pytest.mark.parametrize("command", list(ONE_SHOT))
@pytest.mark.parametrize("no_color", ["1", "0", "anything"])
def test_one_shot_commands_write_no_escape(command: str, no_color: str,
                                           tmp_path: Path) -> None:
    assert STYLE.search(on_a_terminal(ONE_SHOT[command], None, tmp_path))
    output = on_a_terminal(ONE_SHOT[command], no_color, tmp_path)
    assert output.strip()
    assert not ESCAPE.search(output), output


def test_an_empty_no_color_changes_nothing(tmp_path: Path) -> None:
    assert STYLE.search(on_a_terminal(ONE_SHOT["explain"], "", tmp_path))


def test_sends_progress_bar_writes_no_escape(
    mailtalk_server: Any, tmp_path: Path
) -> None:
    # over a MiB: a progress bar on standard error, a terminal here
    message = tmp_path / "big.eml"
    message.write_text("Subject: big\n\n" + ("x" * 76 + "\n") * 16000)
    args = ["send", "--from", "bob@example.org", "--to", "alice@example.test",
            "--server", f"127.0.0.1:{mailtalk_server.port('smtp')}", "--data", str(message)]
    assert ESCAPE.search(on_a_terminal(args, None, tmp_path))
    output = on_a_terminal(args, "1", tmp_path)
    assert b"sending the message" in output  # said once, when done
    assert not ESCAPE.search(output), output


def test_pipe_mode_on_a_terminal_writes_no_escape(mailtalk_server: Any, tmp_path: Path) -> None:
    script = tmp_path / "pipe.sh"
    script.write_text(f"printf 'EHLO me\\nRCPT TO:<x@example.org>\\nQUIT\\n' | "
                      f"'{MAILTALK}' smtp 127.0.0.1:{mailtalk_server.port('smtp')}\n")
    args = ["sh", str(script)]

    def run(no_color: str | None) -> bytes:
        child = pexpect.spawn(args[0], args[1:], env=terminal_env(no_color, tmp_path),
                              timeout=30)
        child.expect(pexpect.EOF)
        return child.before  # type: ignore[no-any-return]

    assert STYLE.search(run(None))
    output = run("1")
    assert b"221" in output
    assert not ESCAPE.search(output), output


def test_the_repl_writes_no_style(mailtalk_server: Any, tmp_path: Path) -> None:
    """The prompt, replies, notes, the toolbar and :explain's block: no bold, colour,
    reverse or reset; only the cursor's moves."""

    def talk(child: Any) -> None:
        for line, answer in [(None, "smtp>"), ("EHLO me", "250 "),
                             ("MAIL FROM:<bob@example.org>", "250 "),
                             ("RCPT TO:<x@example.org>", "5"), (":explain", "What to do"),
                             ("QUIT", "221 ")]:
            if line is not None:
                child.send(line + "\r")
            child.expect_exact(answer)
        child.send("\x04")

    args = ["smtp", f"127.0.0.1:{mailtalk_server.port('smtp')}"]
    assert STYLE.search(on_a_terminal(args, None, tmp_path, talk))
    output = on_a_terminal(args, "1", tmp_path, talk)
    assert not STYLE.search(output), sorted(set(STYLE.findall(output)))
