"""Recording a session (REPL :record, --record) and replaying it with mailtalk run."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import child_env
from tests.client.repl.test_repl_faults import Session, start  # noqa: F401 - the fixture

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))


def replay(path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``mailtalk run`` with no password in its environment but ``env``'s."""
    base = child_env()
    for name in ("MAILTALK_PASSWORD", "PASSWORD", "SECRET", "NETRC"):
        base.pop(name, None)
    base["HOME"] = str(path.parent)  # no ~/.netrc of the user running the tests
    return subprocess.run(
        [MAILTALK, "run", str(path)], capture_output=True, text=True, timeout=30,
        env={**base, **env}, stdin=subprocess.DEVNULL, start_new_session=True,
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
    assert "C: PASS ${MAILTALK_PASSWORD}" in text
    assert "# needs ${MAILTALK_PASSWORD}" in text
    missing = replay(record)
    assert missing.returncode == 2  # undefined: a bad script, nothing run
    assert "MAILTALK_PASSWORD" in missing.stderr
    # the one name :auth, pipe mode and the auth directive read the password from
    assert replay(record, MAILTALK_PASSWORD="secret").returncode == 0


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


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# What a user types to log in by hand, with what to wait for after each line (a reply,
# then the prompt), and the line that stands for the login in the recording. The
# password is "secret" in every one. (The reference servers' POP3 and IMAP offer SASL
# PLAIN only.)
PLAIN = b64("\0alice\0secret")
TYPED_LOGINS: dict[str, tuple[str, list[tuple[str, str, str]], str]] = {
    "smtp AUTH LOGIN": ("smtp", [
        ("EHLO client.test", "250 ", "smtp>"), ("AUTH LOGIN", "334 ", "sasl>"),
        (b64("alice"), "334 ", "sasl>"), (b64("secret"), "235 ", "smtp>"),
        ("MAIL FROM:<alice@example.test>", "250 ", "smtp>"), ("RSET", "250 ", "smtp>"),
    ], "auth login alice"),
    "smtp AUTH PLAIN initial response": ("smtp", [
        ("EHLO client.test", "250 ", "smtp>"), (f"AUTH PLAIN {PLAIN}", "235 ", "smtp>"),
        ("MAIL FROM:<alice@example.test>", "250 ", "smtp>"),
    ], "auth plain alice"),
    "pop3 USER/PASS": ("pop3", [
        ("USER alice", "+OK", "pop3>"), ("PASS secret", "+OK", "pop3>"),
        ("STAT", "+OK", "pop3>"),
    ], "C: PASS ${MAILTALK_PASSWORD}"),
    "pop3 AUTH PLAIN": ("pop3", [
        ("AUTH PLAIN", "sasl>", "sasl>"), (PLAIN, "+OK", "pop3>"), ("STAT", "+OK", "pop3>"),
    ], "auth plain alice"),
    "imap LOGIN": ("imap", [
        ("a1 LOGIN alice secret", "a1 OK", "imap>"), ("a2 SELECT INBOX", "a2 OK", "imap>"),
    ], "C: a1 LOGIN alice ${MAILTALK_PASSWORD}"),
    "imap LOGIN quoted": ("imap", [
        ('LOGIN "alice" "secret"', "a001 OK", "imap>"), ("SELECT INBOX", "a002 OK", "imap>"),
    ], 'C: LOGIN "alice" "${MAILTALK_PASSWORD}"'),
    "imap AUTHENTICATE PLAIN": ("imap", [
        ("a1 AUTHENTICATE PLAIN", "sasl>", "sasl>"), (PLAIN, "a1 OK", "imap>"),
        ("a2 SELECT INBOX", "a2 OK", "imap>"),
    ], "auth plain alice"),
}  # fmt: skip


def assert_replays_green(record: Path, login_line: str) -> str:
    text = record.read_text()
    for secret in ("secret", b64("secret"), PLAIN, "c2VjcmV0"):
        assert secret not in text, text
    assert "${SECRET}" not in text and "${PASSWORD}" not in text, text
    assert login_line in text.splitlines(), text
    result = replay(record, MAILTALK_PASSWORD="secret")
    assert result.returncode == 0, text + result.stdout + result.stderr
    assert result.stdout.startswith("PASS "), result.stdout
    return text


@pytest.mark.parametrize("case", list(TYPED_LOGINS))
def test_a_login_typed_in_the_repl_is_recorded_so_that_it_replays_green(
    start: Callable[..., Session],  # noqa: F811
    mailtalk_servers: Callable[..., Any],
    tmp_path: Path,
    case: str,
) -> None:
    protocol, lines, login_line = TYPED_LOGINS[case]
    running = servers(mailtalk_servers)
    record = tmp_path / "typed.mt"
    session = start(protocol, f"127.0.0.1:{running.port(protocol)}", "--record", str(record))
    for line, reply, prompt in lines:
        session.type(line)
        session.expect_exact(reply)
        if reply != prompt:  # a continuation's reply is the sasl> prompt itself
            session.wait_prompt(prompt)
    assert session.quit_with_ctrl_d() == 0
    assert_replays_green(record, login_line)


@pytest.mark.parametrize("case", list(TYPED_LOGINS))
def test_a_login_in_pipe_mode_is_recorded_so_that_it_replays_green(
    mailtalk_servers: Callable[..., Any], tmp_path: Path, case: str
) -> None:
    protocol, lines, login_line = TYPED_LOGINS[case]
    running = servers(mailtalk_servers)
    record = tmp_path / "piped.mt"
    done = subprocess.run(
        [MAILTALK, protocol, f"127.0.0.1:{running.port(protocol)}", "--record", str(record)],
        input="".join(line + "\n" for line, _, _ in lines).encode(), capture_output=True,
        timeout=30, env=child_env(),
    )
    assert done.returncode == 0, done.stderr
    assert_replays_green(record, login_line)


def test_a_failed_typed_login_is_a_comment_and_the_rest_replays(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    running = servers(mailtalk_servers)
    record = tmp_path / "failed.mt"
    typed = [
        "EHLO client.test", "AUTH LOGIN", b64("alice"), b64("wrong"),  # 535
        "AUTH PLAIN", "*",  # cancelled: nothing secret, kept as it was
        "AUTH LOGIN", b64("alice"), b64("secret"), "MAIL FROM:<a$$b@example.test>", "RSET",
    ]
    subprocess.run(
        [MAILTALK, "smtp", f"127.0.0.1:{running.port('smtp')}", "--record", str(record)],
        input="".join(line + "\n" for line in typed).encode(), capture_output=True,
        timeout=30, env=child_env(),
    )
    text = assert_replays_green(record, "auth login alice")
    lines = text.splitlines()
    assert "# auth login alice failed here" in lines
    at = lines.index("C: AUTH PLAIN")
    assert lines[at : at + 4] == ["C: AUTH PLAIN", "S: 334", "C: *", "S: 501"]
    assert "d3Jvbmc=" not in text  # the wrong password is a secret too
    assert "C: MAIL FROM:<a$$$$b@example.test>" in lines  # $ written as $$: sent as typed


def test_a_recording_of_an_older_mailtalk_replays_with_mailtalk_password(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    """Recordings wrote ${PASSWORD}; they replay with the one name, MAILTALK_PASSWORD."""
    running = servers(mailtalk_servers)
    record = tmp_path / "old.mt"
    record.write_text(
        "# recorded by mailtalk on 2025-01-01 00:00:00; replay with: mailtalk run FILE\n"
        "# needs ${PASSWORD}: mailtalk run --var PASSWORD=... or export PASSWORD\n"
        f"connect pop3://127.0.0.1:{running.port('pop3')}\n"
        "S: +OK\nC: USER alice\nS: +OK\nC: PASS ${PASSWORD}\nS: +OK\nC: STAT\nS: +OK\n"
    )
    result = replay(record, MAILTALK_PASSWORD="secret")
    assert result.returncode == 0, result.stdout + result.stderr
    assert replay(record, PASSWORD="secret").returncode == 0  # as it always did
    # PASSWORD, where given, still wins
    assert replay(record, PASSWORD="wrong", MAILTALK_PASSWORD="secret").returncode == 1
    missing = replay(record)
    assert missing.returncode == 2
    assert "undefined variable ${PASSWORD}" in missing.stderr
