"""The servers' journal as real clients make it: swaks, curl and mpop, and ``mailtalk
serve --journal`` as a program.

swaks logs in with STARTTLS and AUTH PLAIN or LOGIN, relays and delivers; curl reads
over POP3 (STLS, SASL PLAIN) and IMAP (STARTTLS; AUTHENTICATE with SASL-IR, and LOGIN);
mpop fetches over STLS. The journal has what a lesson's check needs from each, and
none of the password's forms. ``mailtalk serve --journal -`` is run as a subprocess:
standard output is only events, live, the start-up line on standard error; a reader
that goes away stops it with 141; a journal that cannot be written is one line and 2.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from mailtalk.servers.journal import Journal, read_events
from tests.interop.clients import (
    client_env,
    mailtalk_command,
    read_line,
    require_binary,
    stop_process,
)
from tests.servers.journaling import PASSWORD, USER, events, secret_forms, wait_event, wait_for

pytestmark = pytest.mark.interop

DOMAIN = "example.test"
ALICE = f"{USER}@{DOMAIN}"
TIMEOUT = 20
MESSAGE = b"From: bob@example.org\nTo: alice@example.test\nSubject: fetched\n\nbody\n"


def run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        args, capture_output=True, env=client_env(tmp_path), timeout=TIMEOUT, check=False,
        start_new_session=True,
    )  # fmt: skip
    return subprocess.CompletedProcess(
        args, result.returncode, result.stdout.decode(errors="replace"),
        result.stderr.decode(errors="replace"),
    )  # fmt: skip


def describe(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"


def assert_no_secrets(path: Path) -> None:
    data = path.read_bytes().lower()
    assert data, "the journal is empty"
    for form in secret_forms():
        assert form.lower() not in data, f"{form!r} is in the journal"


@pytest.fixture
def journaled(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> Iterator[tuple[Any, Path]]:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path)
    servers = mailtalk_servers(
        smtp=0, submission=0, pop3=0, imap=0, users=[(USER, PASSWORD)], domains=[DOMAIN],
        journal=journal,
    )  # fmt: skip
    yield servers, path
    journal.close()


def put(servers: Any, name: str, data: bytes = MESSAGE) -> None:
    maildir = servers.maildir(USER)
    maildir.create()
    (maildir.new_dir / name).write_bytes(data)


# -- swaks ----------------------------------------------------------------------------


def swaks_submission(
    servers: Any, tmp_path: Path, mechanism: str, password: str, *options: str
) -> subprocess.CompletedProcess[str]:
    """swaks from alice on the submission port: STARTTLS (verified), then AUTH."""
    return run([
        require_binary("swaks"), "--server", f"127.0.0.1:{servers.port('submission')}",
        "--tls", "--tls-verify", "--tls-ca-path", str(servers.cafile),
        "--auth", mechanism, "--auth-user", USER, "--auth-password", password,
        "--from", ALICE, *options,
    ], tmp_path)  # fmt: skip


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_swaks_starttls_auth(journaled: tuple[Any, Path], tmp_path: Path, mechanism: str) -> None:
    servers, path = journaled
    result = swaks_submission(
        servers, tmp_path, mechanism, PASSWORD, "--to", f"friend@example.net,{ALICE}",
        "--header", f"Subject: via swaks {mechanism}",
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    close = wait_event(path, event="close", proto="smtp")
    session = [e for e in read_events(path) if e.get("session") == close["session"]]
    assert [e["event"] for e in session if e["event"] in ("tls", "auth")] == ["tls", "auth"]
    auth = events(path, event="auth")[0]
    assert (auth["user"], auth["mechanism"], auth["ok"]) == (USER, mechanism, True)
    assert events(path, event="command", verb="AUTH")[0]["tls"] is True
    delivered = events(path, event="message", outcome="delivered")[0]
    queued = events(path, event="message", outcome="queued")[0]
    assert delivered["subject"] == queued["subject"] == f"via swaks {mechanism}"
    assert queued["recipients"] == ["friend@example.net"]
    assert (servers.maildir(USER).new_dir / delivered["file"]).is_file()
    assert close["reason"] == "quit" and close["user"] == USER and close["tls"] is True
    assert_no_secrets(path)


def test_swaks_wrong_password(journaled: tuple[Any, Path], tmp_path: Path) -> None:
    servers, path = journaled
    wrong = PASSWORD + "x"
    result = swaks_submission(servers, tmp_path, "LOGIN", wrong, "--to", "friend@example.net")
    assert result.returncode != 0, describe(result)
    wait_event(path, event="close", proto="smtp")
    assert [e["ok"] for e in events(path, event="auth")] == [False]
    assert events(path, event="command", verb="AUTH")[0]["code"] == 535
    assert wrong.encode() not in path.read_bytes()
    assert_no_secrets(path)


# -- curl and mpop ----------------------------------------------------------------


def curl(url: str, tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary("curl")
    return run([binary, "--silent", "--show-error", "--max-time", str(TIMEOUT),
                "--user", f"{USER}:{PASSWORD}", *options, url], tmp_path)  # fmt: skip


def test_curl_pop3_stls(journaled: tuple[Any, Path], tmp_path: Path) -> None:
    servers, path = journaled
    put(servers, "1.M1P1.test")
    result = curl(f"pop3://127.0.0.1:{servers.port('pop3')}/1", tmp_path,
                  "--ssl-reqd", "--cacert", str(servers.cafile))  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert "Subject: fetched" in result.stdout
    close = wait_event(path, event="close", proto="pop3")
    auth = events(path, event="auth", proto="pop3")[0]
    assert auth["ok"] is True and auth["user"] == USER
    retr = events(path, event="command", verb="RETR")[0]
    assert retr["code"] == "+OK" and retr["tls"] is True
    assert close["reason"] == "quit" and (close["marked"], close["deleted"]) == (0, 0)
    assert_no_secrets(path)


def test_curl_imap_starttls(journaled: tuple[Any, Path], tmp_path: Path) -> None:
    servers, path = journaled
    put(servers, "1.M1P1.test")
    # PLAIN asked for: the server also offers CRAM-MD5 and SCRAM, which curl prefers
    result = curl(f"imap://127.0.0.1:{servers.port('imap')}/INBOX;UID=1", tmp_path,
                  "--ssl-reqd", "--cacert", str(servers.cafile),
                  "--login-options", "AUTH=PLAIN")  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert "Subject: fetched" in result.stdout
    close = wait_event(path, event="close", proto="imap")
    command = events(path, event="command", verb="AUTHENTICATE")[0]  # SASL-IR: one line
    assert command["code"] == "OK" and command["tls"] is True
    assert command["args"] == "PLAIN <redacted>"
    auth = events(path, event="auth", proto="imap")[0]
    assert (auth["ok"], auth["mechanism"], auth["user"]) == (True, "PLAIN", USER)
    assert events(path, event="command", verb="SELECT")[0]["code"] == "OK"
    assert events(path, event="command", verb="UID FETCH")[0]["mailbox"] == "INBOX"
    assert close["user"] == USER and close["tls"] is True
    assert_no_secrets(path)


def test_mpop_stls(journaled: tuple[Any, Path], tmp_path: Path) -> None:
    servers, path = journaled
    put(servers, "1.M1P1.test")
    binary = require_binary("mpop")
    maildir = tmp_path / "mpop-maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    rc = tmp_path / "mpoprc"
    rc.write_text(
        f"account alice\nhost 127.0.0.1\nport {servers.port('pop3')}\nuser {USER}\n"
        f"password {PASSWORD}\ntls on\ntls_starttls on\ntls_trust_file {servers.cafile}\n"
        f"delivery maildir {maildir}\nkeep off\nuidls_file {tmp_path / 'uidls'}\ntimeout 10\n"
    )
    rc.chmod(0o600)
    result = run([binary, "-C", str(rc), "alice"], tmp_path)
    assert result.returncode == 0, describe(result)
    close = wait_event(path, event="close", proto="pop3")
    assert (close["reason"], close["marked"], close["deleted"]) == ("quit", 1, 1)
    assert events(path, event="auth", proto="pop3")[0]["ok"] is True
    assert any(e["event"] == "tls" for e in read_events(path))
    assert_no_secrets(path)


# -- mailtalk serve --journal ---------------------------------------------------------


@contextlib.contextmanager
def serve_journal(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    """``mailtalk serve --journal - --json``: (process, its --json line from stderr)."""
    stderr = tmp_path / "serve.stderr"
    process = subprocess.Popen(
        [*mailtalk_command(), "serve", "--root", str(tmp_path / "root"), "--smtp", "0",
         "--user", f"{USER}:{PASSWORD}", "--domain", DOMAIN, "--journal", "-", "--json"],
        stdout=subprocess.PIPE, stderr=stderr.open("wb"), env=client_env(tmp_path),
    )  # fmt: skip
    try:
        info = json.loads(wait_for(lambda: stderr.read_text().partition("\n")[0], TIMEOUT))
        yield process, info
    finally:
        stop_process(process, TIMEOUT)


def test_serve_journal_to_standard_output(tmp_path: Path) -> None:
    swaks = require_binary("swaks")
    with serve_journal(tmp_path) as (process, info):
        port = info["listeners"][0]["port"]
        result = run([swaks, "--server", f"127.0.0.1:{port}", "--from", "bob@example.org",
                      "--to", ALICE, "--auth", "PLAIN", "--auth-user", USER,
                      "--auth-password", PASSWORD, "--header", "Subject: live"], tmp_path)
        assert result.returncode == 0, describe(result)
        assert process.stdout is not None
        deadline = time.monotonic() + TIMEOUT
        lines = []
        while not lines or json.loads(lines[-1])["event"] != "close":
            # Live: each event comes while the server runs, not when it stops.
            lines.append(read_line(process, max(deadline - time.monotonic(), 0.1)))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=TIMEOUT) == 0
        lines += process.stdout.read().splitlines(keepends=True)
    got = [json.loads(line) for line in lines]  # every line on stdout is an event
    assert [e["event"] for e in got][:2] == ["connect", "command"]
    assert {"auth", "message", "close"} <= {e["event"] for e in got}
    assert [e["subject"] for e in got if e["event"] == "message"] == ["live"]
    assert all(e["server"] == "localhost" for e in got)
    text = b"".join(lines).lower()
    for form in secret_forms():
        assert form.lower() not in text


def test_serve_stops_when_the_journal_reader_goes(tmp_path: Path) -> None:
    with serve_journal(tmp_path) as (process, info):
        assert process.stdout is not None
        process.stdout.close()  # | head has read enough
        port = info["listeners"][0]["port"]
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as sock:
            sock.recv(100)  # the greeting: its connect event hit the closed pipe
        assert process.wait(timeout=TIMEOUT) == 141
        assert "Traceback" not in (tmp_path / "serve.stderr").read_text()


def test_serve_journal_that_cannot_be_written(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    result = run([*mailtalk_command(), "serve", "--root", str(tmp_path / "root"), "--smtp", "0",
                  "--journal", str(tmp_path / "file" / "j.jsonl")], tmp_path)
    assert result.returncode == 2, describe(result)
    assert result.stderr == (
        f"mailtalk: cannot write the journal {tmp_path / 'file' / 'j.jsonl'}: not a directory\n"
    )
