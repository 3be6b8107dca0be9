"""Exit statuses every command agrees on (issue 11, item 15).

- Connected, then no reply within --timeout: 5 (the server broke off the
  conversation), as ``mailtalk run`` says; 3 is for not getting connected at all.
- A TLS handshake that gets no answer: 4 (TLS failed).
- --transcript (or --record, --junit) in a directory that does not exist: 2, a bad
  option, said before connecting.
- --cafile that holds no certificate: 2, in one line naming the file, for connect,
  send, diagnose relay, diagnose login, mx --probe, and cafile= in a session file.
- A --cafile that does not hold the server's issuer: 4, saying that file did not
  hold it (not "use --cafile" again).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from mailtalk.servers.certs import ensure_certificates
from tests.cli.test_cli import child_env
from tests.client.scripted import mailtalk
from tests.peers import SMTP_GREETING, Expect, Hold, ScriptedPeer, refused_port

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MAILTALK, *args], capture_output=True, text=True, timeout=60,
                          env={**child_env(), **(env or {})}, stdin=subprocess.DEVNULL)


def error_lines(stderr: str) -> list[str]:
    """The lines saying what went wrong (click's usage errors too are said this way)."""
    return [line for line in stderr.splitlines() if line.startswith("mailtalk: ")]


# --------------------------------------------------------------------------- timeouts


def test_no_reply_after_connecting_is_5_in_pipe_mode() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO"), Hold()]
    with ScriptedPeer(script) as peer:
        result = mailtalk("smtp", "--timeout", "0.5", f"127.0.0.1:{peer.port}",
                          stdin=b"EHLO me\nQUIT\n")
    assert result.returncode == 5
    assert result.error_lines == ["mailtalk: no reply from 127.0.0.1 within 0.5 s (--timeout)"]


def test_no_greeting_is_5_in_pipe_mode_send_and_run(tmp_path: Path) -> None:
    session = tmp_path / "greet.mt"
    with ScriptedPeer([Hold()], [Hold()], [Hold()]) as peer:
        session.write_text(f"connect smtp://127.0.0.1:{peer.port}\nS: 220\n")
        pipe = mailtalk("smtp", "--timeout", "0.5", f"127.0.0.1:{peer.port}", stdin=b"")
        sent = run("send", "--from", "a@example.test", "--to", "b@example.test", "--server",
                   f"127.0.0.1:{peer.port}", "--timeout", "0.5")
        replayed = run("run", "--timeout", "0.5", str(session))
    assert (pipe.returncode, sent.returncode, replayed.returncode) == (5, 5, 5)


def test_refused_connection_is_still_3() -> None:
    result = mailtalk("smtp", f"127.0.0.1:{refused_port()}", stdin=b"QUIT\n")
    assert result.returncode == 3


def test_tls_handshake_without_answer_is_4() -> None:
    with ScriptedPeer([Hold()]) as peer:
        result = mailtalk("smtp", "--tls", "--timeout", "0.5", f"127.0.0.1:{peer.port}",
                          stdin=b"QUIT\n")
    assert result.returncode == 4
    assert result.error_lines == [
        "mailtalk: no answer from 127.0.0.1 to the TLS handshake within 0.5 s (--timeout)"
    ]


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize("option", ["--transcript", "--record"])
@pytest.mark.parametrize("command", [["smtp", "127.0.0.1:25"], ["connect", "imap://127.0.0.1"]])
def test_an_output_file_in_no_directory_is_a_bad_option(
    option: str, command: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "no" / "such" / "t.log"
    result = mailtalk(command[0], option, str(missing), command[1], stdin=b"QUIT\n")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        f"mailtalk: invalid value for '{option}': cannot write {missing}: "
        f"there is no directory {missing.parent}"
    ]


def test_run_junit_in_no_directory_is_a_bad_option(tmp_path: Path) -> None:
    script = tmp_path / "s.mt"
    script.write_text("connect smtp://127.0.0.1:25\n")
    report = tmp_path / "no" / "r.xml"
    result = run("run", "--junit", str(report), str(script))
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"mailtalk: cannot write {report}: there is no directory {report.parent}"
    ]


@pytest.fixture
def not_a_ca(tmp_path: Path) -> Path:
    path = tmp_path / "hostname"
    path.write_text("mail.example.test\n")  # what /etc/hostname holds
    return path


def cafile_commands(cafile: Path) -> list[list[str]]:
    """Every command that takes --cafile, each given ``cafile``."""
    ca = str(cafile)
    return [
        ["connect", "--cafile", ca, "smtps://127.0.0.1:1"],
        ["smtp", "--tls", "--cafile", ca, "127.0.0.1:1"],
        ["send", "--from", "a@example.test", "--to", "b@example.test", "--server",
         "127.0.0.1:1", "--tls", "--cafile", ca],
        ["diagnose", "relay", "--from", "a@example.test", "--to", "b@example.test",
         "--server", "127.0.0.1:1", "--cafile", ca],
        ["diagnose", "login", "pop3s://127.0.0.1:1", "--user", "alice", "--cafile", ca],
        ["mx", "--probe", "--cafile", ca, "example.test"],
    ]


def test_a_cafile_with_no_certificate_is_a_bad_option_everywhere(not_a_ca: Path) -> None:
    for command in cafile_commands(not_a_ca):
        result = run(*command, env={"MAILTALK_PASSWORD": "x"})
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr and "_ssl.c" not in result.stderr
        assert error_lines(result.stderr) == [
            f"mailtalk: invalid value for '--cafile': {not_a_ca}: "
            "no CA certificate in it (PEM expected)"
        ], command


def test_a_cafile_with_no_certificate_in_a_session_file_is_a_bad_script(
    not_a_ca: Path, tmp_path: Path
) -> None:
    script = tmp_path / "tls.mt"
    script.write_text(f"connect smtps://127.0.0.1:1 cafile={not_a_ca}\nS: 220\n")
    result = run("run", str(script))
    assert result.returncode == 2
    assert error_lines(result.stderr) == [
        f"mailtalk: {script}:1: cafile={not_a_ca}: no CA certificate in it (PEM expected)"
    ]


def test_a_cafile_without_the_issuer_says_so(
    mailtalk_servers: Callable[..., Any], tmp_path: Path
) -> None:
    running = mailtalk_servers(smtps=0, domains=["example.test"])
    other_ca = ensure_certificates(tmp_path / "other").ca_cert
    result = mailtalk("smtp", "--tls", "--cafile", str(other_ca),
                      f"127.0.0.1:{running.port('smtps')}", stdin=b"QUIT\n")
    assert result.returncode == 4
    [line] = result.error_lines
    assert f"which is neither in {other_ca} nor in the system's trusted CAs" in line
    assert "not in your trusted CAs" not in line
    assert line.endswith(
        "Use --cafile FILE with the issuer's certificate, or --insecure to skip verification."
    )


# --------------------------------------------------------------------------- serve


def help_exit_statuses(command: str) -> dict[int, str]:
    """The ``Exit status:`` table of ``mailtalk COMMAND --help``: code -> meaning."""
    text = run(command, "--help").stdout.split("Exit status:\n", 1)[1]
    table: dict[int, str] = {}
    for line in text.splitlines():
        code, _, meaning = line.strip().partition(" ")
        if code.isdigit():
            table[int(code)] = meaning.strip()
    return table


def test_serve_help_says_the_statuses_serve_exits_with(tmp_path: Path) -> None:
    """Ctrl-C stops the servers with 0 (they say what they took), a port taken is 3,
    a control file that does not parse is 2: the help says those, not the connecting
    commands' table (130 for Ctrl-C, 7 for an open relay)."""
    table = help_exit_statuses("serve")
    assert "Ctrl-C" in table[0] and "listen" in table[3] and "control" in table[2]
    assert 130 not in table and 7 not in table

    serving = subprocess.Popen(
        [MAILTALK, "serve", "--root", str(tmp_path / "one"), "--smtp", "0", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env())
    try:
        assert serving.stdout is not None
        port = json.loads(serving.stdout.readline())["listeners"][0]["port"]
        taken = run("serve", "--root", str(tmp_path / "two"), "--smtp", str(port))
        assert taken.returncode == 3, taken.stderr
        assert error_lines(taken.stderr) == [
            f"mailtalk: cannot listen on 127.0.0.1 port {port} for smtp: address already in use"]
    finally:
        serving.send_signal(signal.SIGINT)
        _, stderr = serving.communicate(timeout=30)
    assert serving.returncode == 0, stderr
    assert "Traceback" not in stderr

    (tmp_path / "one" / "control" / "rcpthosts").write_text("not a domain!\n")
    broken = run("serve", "--root", str(tmp_path / "one"), "--smtp", "0")
    assert broken.returncode == 2
    assert len(error_lines(broken.stderr)) == 1 and "rcpthosts:1" in broken.stderr


# --------------------------------------------------------------------------- --server


@pytest.mark.parametrize("server", ["localhost:99999", "[::1"])
def test_a_bad_server_is_a_bad_argument_for_send_and_diagnose_relay(server: str) -> None:
    """One line naming --server and what is wrong with it, exit 2, before any DNS
    question (a resolver that does not exist is never asked): not an unexpected error
    with a trace on offer."""
    silent = f"127.0.0.1:{refused_port()}"
    for command in (["send", "--from", "a@example.test", "--to", "b@example.test"],
                    ["diagnose", "relay", "--from", "a@example.test", "--to", "b@example.test",
                     "--resolver", silent, "--timeout", "1"]):
        result = run(*command, "--server", server)
        assert result.returncode == 2, result.stderr
        assert error_lines(result.stderr) == [f"mailtalk: --server: {error_text(server)}"]
        assert "unexpected" not in result.stderr and "--debug" not in result.stderr


def error_text(server: str) -> str:
    return ("'99999' is not a port number (1-65535)" if server.endswith("99999")
            else f"unclosed [ in {server!r}")


@pytest.mark.parametrize("command", [
    ["smtp", "smtp://127.0.0.1:25"],  # read as an IPv6 address, then looked up in the DNS
    ["smtp", "smtp://127.0.0.1"],  # "'//127.0.0.1' is not a port number"
    ["imap", "--tls", "imaps://alice@127.0.0.1"],  # logged in as the user "imaps://alice"
    ["send", "--from", "a@example.test", "--to", "b@example.test", "--server",
     "smtp://127.0.0.1:25"],
])  # fmt: skip
def test_a_url_where_host_port_belongs_says_so(command: list[str]) -> None:
    url = next(word for word in command if "://" in word)
    result = run(*command)
    assert result.returncode == 2, result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].endswith(f"{url!r} is a URL; give HOST[:PORT] here")
    assert "# connected" not in result.stderr
