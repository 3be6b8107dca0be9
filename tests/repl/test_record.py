"""Recording a session (REPL :record, --record) and replaying it with mailtalk run."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.cli.test_cli import child_env
from tests.repl.test_repl_faults import Session, start  # noqa: F401 - the fixture

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))


def replay(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MAILTALK, "run", str(path)], capture_output=True, text=True, timeout=30,
        env={**child_env(), **env},
    )


def servers(mailtalk_servers: Callable[..., Any]) -> Any:
    return mailtalk_servers(
        smtp=0, submission=0, pop3=0, imap=0, users=[("alice", "secret")],
        domains=["example.test"],
    )


def test_record_in_the_repl_then_replay_green(
    start: Callable[..., Session],  # noqa: F811 - the fixture imported above
    mailtalk_servers: Callable[..., Any],
    tmp_path: Path,
) -> None:
    running = servers(mailtalk_servers)
    record = tmp_path / "session.mt"
    session = start(
        "smtp", f"127.0.0.1:{running.port('submission')}", "--cafile", str(running.cafile)
    )
    session.type("EHLO client.test")
    session.expect_exact("250 ")
    session.wait_prompt()
    # started mid-session: the file still starts at connect
    session.type(f":record {record}")
    session.expect_exact("recording to")
    session.wait_prompt()
    session.type(":starttls")
    session.expect_exact("TLS")
    session.wait_prompt()
    session.type("EHLO client.test")
    session.expect_exact("250 ")
    session.wait_prompt()
    session.type(":auth plain alice")
    session.expect_exact("password for alice")
    session.child.sendline("secret")
    session.expect_exact("authenticated as alice")
    session.wait_prompt()
    for line, reply in (("MAIL FROM:<alice@example.test>", "250 "),
                        ("RCPT TO:<alice@example.test>", "250 "), ("DATA", "354 ")):
        session.type(line)
        session.expect_exact(reply)
    for line in ("Subject: recorded in the REPL", "", ".a line with a dot", "."):
        session.type(line)
    session.expect_exact("queued")
    session.wait_prompt()
    session.type("RCPT TO:<x@elsewhere.example>")  # a failure is recorded as it came
    session.expect_exact("503 ")
    session.wait_prompt()
    session.type(":record stop")
    session.expect_exact("wrote")
    session.wait_prompt()
    assert session.quit_with_ctrl_d() == 0

    text = record.read_text()
    assert "secret" not in text and "c2VjcmV0" not in text  # nor its base64
    assert text.splitlines()[1] == (
        f"connect smtp://127.0.0.1:{running.port('submission')} cafile={running.cafile}"
    )
    assert "starttls" in text.splitlines()
    assert "auth plain alice" in text.splitlines()
    assert "S: 503" in text.splitlines()

    result = replay(record, MAILTALK_PASSWORD="secret")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("PASS ")
    # both runs delivered: the REPL's message and the replay's
    maildir = Path(running.root) / "mail" / "alice" / "Maildir" / "new"
    assert len(os.listdir(maildir)) >= 2


def test_record_option_in_pipe_mode_replays_and_leaves_the_password_out(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    running = servers(mailtalk_servers)
    record = tmp_path / "pop.mt"
    script = b"USER alice\nPASS secret\nSTAT\nLIST\nQUIT\n"
    done = subprocess.run(
        [MAILTALK, "pop3", f"127.0.0.1:{running.port('pop3')}", "--record", str(record)],
        input=script, capture_output=True, timeout=30, env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    text = record.read_text()
    assert "secret" not in text
    assert "C: PASS ${PASSWORD}" in text
    assert "# needs ${PASSWORD}" in text
    missing = replay(record)
    assert missing.returncode == 2  # ${PASSWORD} undefined: a bad script, nothing run
    assert "PASSWORD" in missing.stderr
    assert replay(record, PASSWORD="secret").returncode == 0


def test_record_to_a_missing_directory_is_refused_at_once(
    start: Callable[..., Session],  # noqa: F811
    mailtalk_servers: Callable[..., Any],
) -> None:
    running = servers(mailtalk_servers)
    session = start("smtp", f"127.0.0.1:{running.port('smtp')}")
    session.type(":record /nonexistent/dir/x.mt")
    session.expect_exact("cannot write in /nonexistent/dir")
    session.wait_prompt()
    assert session.quit_with_ctrl_d() == 0
