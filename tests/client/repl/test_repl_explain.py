"""Explanations inline in the REPL and in pipe mode, against the reference SMTP server."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cli.test_cli import child_env
from tests.client.repl.test_repl_faults import Session, start  # noqa: F401 - the fixture

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))


def test_failure_replies_get_a_line_and_explain_the_full_story(
    start: Callable[..., Session],  # noqa: F811 - the fixture imported above
    mailtalk_server: Any,
) -> None:
    session = start("smtp", f"127.0.0.1:{mailtalk_server.port('smtp')}")
    session.type("EHLO client.test")
    session.expect_exact("250 ")
    session.wait_prompt()
    session.type("RCPT TO:<bob@example.test>")
    session.expect_exact("503 ")
    session.child.expect_exact("↳ commands out of order (permanent)".encode(), timeout=5)
    session.wait_prompt()
    session.type(":explain")
    session.expect_exact("After RCPT")
    session.expect_exact("Likely causes")
    session.wait_prompt()
    session.type("MAIL FROM:<me@example.test>")
    session.expect_exact("250 ")
    session.wait_prompt()
    session.type("RCPT TO:<bob@elsewhere.example>")
    session.child.expect_exact("↳ relaying denied (permanent)".encode(), timeout=5)
    session.wait_prompt()
    session.type(":explain -ERR [IN-USE] lock busy! Is another session active?")
    session.expect_exact("mailbox in use")
    session.wait_prompt()
    session.type(":explain nonsense words")
    session.expect_exact("is not a reply or a code")
    session.wait_prompt()
    assert session.quit_with_ctrl_d() == 0
    screen = session.screen
    # success replies get no explanation line
    ehlo_part = screen.split("RCPT TO:<bob@example.test>")[0]
    assert "↳" not in ehlo_part
    assert "Traceback" not in screen


def test_pipe_mode_explains_on_stderr(mailtalk_server: Any) -> None:
    script = b"EHLO client.test\nRCPT TO:<bob@example.test>\nQUIT\n"
    result = subprocess.run(
        [MAILTALK, "smtp", f"127.0.0.1:{mailtalk_server.port('smtp')}"],
        input=script,
        capture_output=True,
        timeout=20,
        env=child_env(),
    )
    stderr = result.stderr.decode()
    stdout = result.stdout.decode()
    assert result.returncode == 1  # a failure reply
    assert "S: 503 " in stdout
    explained = [line for line in stderr.splitlines() if line.startswith("# ↳ ")]
    assert len(explained) == 1, stderr
    assert explained[0].startswith("# ↳ commands out of order (permanent): ")
    assert "↳" not in stdout  # the conversation on stdout stays clean
