"""The real ``mailtalk`` in pipe mode (stdin not a terminal) against the real Postfix/Dovecot.

Lines go in on stdin; the conversation comes out on stdout as ``C:``/``S:`` lines,
mailtalk's notes on stderr as ``# ...``; the exit status is 1 when a reply failed.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.interop.conftest import RealServers

pytestmark = pytest.mark.interop

TIMEOUT = 30
MAILDIR = Path("/home/alice/Maildir")
PLAIN_SECRET = base64.b64encode(b"\0alice\0secret").decode()


def mailtalk_command() -> list[str]:
    script = Path(sys.executable).with_name("mailtalk")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "mailtalk"]


def run_pipe(
    args: list[str],
    lines: list[str],
    tmp_path: Path,
    password: str | None = None,
    new_session: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Run ``mailtalk ARGS`` with ``lines`` on a pipe as stdin; stdout/stderr captured."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("MAILTALK_") and key != "NO_COLOR"
    }
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    if password is not None:
        env["MAILTALK_PASSWORD"] = password
    return subprocess.run(
        [*mailtalk_command(), *args],
        input="".join(line + "\n" for line in lines),
        capture_output=True,
        text=True,
        env=env,
        timeout=TIMEOUT,
        check=False,
        # No controlling terminal: getpass cannot fall back to /dev/tty.
        start_new_session=new_session,
    )


def out_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return result.stdout.splitlines()


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def find_delivered(subject: str, timeout: float = 10.0) -> Path:
    deadline = time.monotonic() + timeout
    needle = f"Subject: {subject}".encode()
    while True:
        for folder in ("new", "cur"):
            directory = MAILDIR / folder
            for path in directory.iterdir() if directory.is_dir() else ():
                try:
                    if needle in path.read_bytes():
                        return path
                except OSError:
                    continue
        if time.monotonic() > deadline:
            raise AssertionError(f"no message with subject {subject!r} in {MAILDIR}")
        time.sleep(0.1)


# ---------------------------------------------------------------- SMTP


def test_smtp_refused_rcpt_exits_one(real_servers: RealServers, tmp_path: Path) -> None:
    result = run_pipe(
        ["smtp", f"localhost:{real_servers.smtp}"],
        [
            "EHLO client.test",
            "MAIL FROM:<bill@isp.test>",
            "RCPT TO:<linus@torvalds.org>",
            "RSET",
            "QUIT",
        ],
        tmp_path,
    )
    assert result.returncode == 1, describe(result)
    lines = out_lines(result)
    assert lines[0].startswith("S: 220 ")
    assert lines[1] == "C: EHLO client.test"
    assert "S: 250-STARTTLS" in lines
    # Each command's replies come before the next command.
    i = lines.index("C: RCPT TO:<linus@torvalds.org>")
    assert lines[i + 1] == "S: 554 5.7.1 <linus@torvalds.org>: Relay access denied"
    assert lines[i + 2 :] == ["C: RSET", "S: 250 2.0.0 Ok", "C: QUIT", "S: 221 2.0.0 Bye"]
    assert "# connected to localhost:25" in result.stderr
    assert "\x1b[" not in result.stdout  # no colours on a pipe


def test_smtp_accepted_session_exits_zero(real_servers: RealServers, tmp_path: Path) -> None:
    result = run_pipe(
        ["smtp", f"localhost:{real_servers.smtp}"],
        [
            "EHLO client.test",
            "MAIL FROM:<bill@isp.test>",
            f"RCPT TO:<{real_servers.address}>",
            "RSET",
            "QUIT",
        ],
        tmp_path,
    )
    assert result.returncode == 0, describe(result)
    lines = out_lines(result)
    assert f"C: RCPT TO:<{real_servers.address}>" in lines
    assert "S: 250 2.1.5 Ok" in lines
    assert lines[-1] == "S: 221 2.0.0 Bye"


def test_smtp_data_is_dot_stuffed_and_delivered(real_servers: RealServers, tmp_path: Path) -> None:
    subject = f"mailtalk pipe {uuid.uuid4().hex[:12]}"
    result = run_pipe(
        ["smtp", f"localhost:{real_servers.smtp}"],
        [
            "EHLO client.test",
            "MAIL FROM:<bill@isp.test>",
            f"RCPT TO:<{real_servers.address}>",
            "DATA",
            f"Subject: {subject}",
            "",
            ".a line that starts with a dot",
            "ordinary line",
            ".",
            "QUIT",
        ],
        tmp_path,
    )
    assert result.returncode == 0, describe(result)
    lines = out_lines(result)
    assert "S: 354 End data with <CR><LF>.<CR><LF>" in lines
    # What went on the wire is shown: the leading dot doubled.
    assert "C: ..a line that starts with a dot" in lines
    assert any(re.fullmatch(r"S: 250 2\.0\.0 Ok: queued as \w+", line) for line in lines)
    delivered = find_delivered(subject)
    try:
        body = delivered.read_text(encoding="utf-8").splitlines()
        assert ".a line that starts with a dot" in body
        assert "ordinary line" in body
    finally:
        delivered.unlink(missing_ok=True)


def test_smtp_starttls_option(real_servers: RealServers, tmp_path: Path) -> None:
    result = run_pipe(
        [
            "connect",
            f"smtp://localhost:{real_servers.smtp}",
            "--starttls",
            "--cafile",
            real_servers.cafile,
        ],
        ["EHLO client.test", "QUIT"],
        tmp_path,
    )
    assert result.returncode == 0, describe(result)
    lines = out_lines(result)
    starttls = lines.index("C: STARTTLS")
    assert lines[starttls + 1] == "S: 220 2.0.0 Ready to start TLS"
    # mailtalk said EHLO itself before STARTTLS, and the user's EHLO came after TLS.
    assert any(line.startswith("C: EHLO ") for line in lines[:starttls])
    assert lines.index("C: EHLO client.test") > starttls
    assert re.search(r"(?m)^# TLS: TLSv1\.[23], ", result.stderr), describe(result)
    assert "NOT verified" not in result.stderr
    # After TLS the server no longer offers STARTTLS.
    assert "S: 250-STARTTLS" not in lines[starttls:]


# ---------------------------------------------------------------- POP3


def test_pop3_pass_is_redacted(real_servers: RealServers, tmp_path: Path) -> None:
    result = run_pipe(
        ["pop3", f"localhost:{real_servers.pop3}"],
        ["USER alice", f"PASS {real_servers.password}", "STAT", "QUIT"],
        tmp_path,
    )
    assert result.returncode == 0, describe(result)
    lines = out_lines(result)
    assert lines[:5] == [
        "S: +OK Dovecot (Debian) ready.",
        "C: USER alice",
        "S: +OK",
        "C: PASS ***",
        "S: +OK Logged in.",
    ]
    assert "C: STAT" in lines
    assert any(re.fullmatch(r"S: \+OK \d+ \d+", line) for line in lines)
    assert real_servers.password not in result.stdout + result.stderr


def test_pop3_error_reply_exits_one(real_servers: RealServers, tmp_path: Path) -> None:
    result = run_pipe(
        ["pop3", f"localhost:{real_servers.pop3}"],
        ["USER alice", f"PASS {real_servers.password}", "RETR 999999", "QUIT"],
        tmp_path,
    )
    assert result.returncode == 1, describe(result)
    lines = out_lines(result)
    i = lines.index("C: RETR 999999")
    assert lines[i + 1].startswith("S: -ERR ")
    assert lines[i + 2 :] == ["C: QUIT", "S: +OK Logging out."]


# ---------------------------------------------------------------- IMAP


def test_imap_tags_and_redacted_login(real_servers: RealServers, tmp_path: Path) -> None:
    result = run_pipe(
        ["imap", f"localhost:{real_servers.imap}"],
        [f"LOGIN alice {real_servers.password}", "SELECT INBOX", "LOGOUT"],
        tmp_path,
    )
    assert result.returncode == 0, describe(result)
    lines = out_lines(result)
    assert lines[0].startswith("S: * OK ")
    assert lines[1] == "C: a001 LOGIN alice ***"
    assert any(re.fullmatch(r"S: a001 OK .*Logged in", line) for line in lines)
    assert "C: a002 SELECT INBOX" in lines
    assert any(re.fullmatch(r"S: \* \d+ EXISTS", line) for line in lines)
    assert any(line.startswith("S: a002 OK [READ-WRITE]") for line in lines)
    assert "C: a003 LOGOUT" in lines
    assert "S: * BYE Logging out" in lines
    assert real_servers.password not in result.stdout + result.stderr


def test_imap_meta_auth_reads_mailtalk_password(real_servers: RealServers, tmp_path: Path) -> None:
    result = run_pipe(
        ["imap", f"localhost:{real_servers.imap}"],
        [":auth plain alice", "SELECT INBOX", "LOGOUT"],
        tmp_path,
        password=real_servers.password,
        new_session=True,
    )
    assert result.returncode == 0, describe(result)
    lines = out_lines(result)
    i = lines.index("C: a001 AUTHENTICATE PLAIN")
    assert lines[i + 1].rstrip() == "S: +"
    assert lines[i + 2] == "C: ***"
    assert re.fullmatch(r"S: a001 OK .*Logged in", lines[i + 3])
    assert "C: a002 SELECT INBOX" in lines
    assert "# authenticated as alice" in result.stderr
    assert "password for" not in result.stderr  # nothing was asked
    output = result.stdout + result.stderr
    assert real_servers.password not in output
    assert PLAIN_SECRET not in output


def test_meta_auth_without_password_or_terminal_fails_cleanly(
    real_servers: RealServers, tmp_path: Path
) -> None:
    # Dovecot's POP3 offers AUTH PLAIN (so :auth goes as far as the password), and no
    # wrong password ever reaches it (its failure delay would slow every other login
    # from 127.0.0.1): without one, nothing is sent after CAPA.
    result = run_pipe(
        ["pop3", f"localhost:{real_servers.pop3}"],
        [":auth plain alice", "QUIT"],
        tmp_path,
        new_session=True,  # no controlling terminal
    )
    assert "MAILTALK_PASSWORD" in result.stderr, describe(result)
    assert result.returncode != 0, describe(result)
    # The script's next line was not taken for the password.
    assert "C: AUTH PLAIN" not in out_lines(result), describe(result)
    assert "C: QUIT" not in out_lines(result), describe(result)
    assert "GetPassWarning" not in result.stderr


# ---------------------------------------------------------------- width


def test_notes_and_explanations_wrap_to_80_columns_as_comments(
    real_servers: RealServers, tmp_path: Path
) -> None:
    """Postfix's relay refusal is explained in some 200 characters and the TLS line in
    130: on a pipe (no terminal, no $COLUMNS) they come in lines of at most 80 columns,
    each still a "# " comment; the server's own lines on stdout stay whole."""
    result = run_pipe(
        ["connect", f"smtp://localhost:{real_servers.smtp}", "--starttls",
         "--cafile", real_servers.cafile],
        ["EHLO client.test", "MAIL FROM:<bill@isp.test>", "RCPT TO:<linus@torvalds.org>",
         "QUIT"],
        tmp_path,
    )
    assert result.returncode == 1, describe(result)
    notes = result.stderr.splitlines()
    assert all(len(line) <= 80 for line in notes), describe(result)
    assert all(line.startswith("#") for line in notes), describe(result)
    tls = next(i for i, line in enumerate(notes) if line.startswith("# TLS: "))
    assert notes[tls + 1].startswith("#   "), describe(result)
    why = next(i for i, line in enumerate(notes) if line.startswith("# ↳ relaying denied"))
    assert notes[why + 1].startswith("#   "), describe(result)
    said = " ".join(line.removeprefix("#").strip() for line in notes[why:])
    assert "the client is neither in mynetworks nor SASL-authenticated" in said
    assert "S: 554 5.7.1 <linus@torvalds.org>: Relay access denied" in out_lines(result)
