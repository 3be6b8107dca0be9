"""A hostile server's escape sequences never reach the terminal, a file or a report raw.

Every path where a server's words reach output is driven here with a ScriptedPeer
sending ``tests.hostile.HOSTILE`` (window title, screen clear, NUL, C1, DEL, bare CR,
bidi override): pipe mode (plain and --raw, SMTP, POP3 and IMAP, the inline
explanation, :explain, the error line), --transcript and --record files, send,
diagnose login, mx --probe, mailtalk run (human, -v, --json, --tap, --junit) and
mailtalk explain reading a log. Each output must hold the bytes escaped, and no raw
control character. The REPL's paths are in tests/client/repl/test_repl_hostile.py.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from tests.cli.test_cli import child_env
from tests.client.scripted import mailtalk
from tests.hostile import (
    HOSTILE,
    SHOWN,
    assert_clean,
    assert_clean_json,
    assert_shown,
    json_strings,
)
from tests.peers import Close, Expect, ScriptedPeer

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))

H = HOSTILE


def smtp_script() -> list[object]:
    """Hostile text in the greeting, a multi-line reply, a refusal, and a broken line."""
    return [
        b"220 " + H + b"\r\n",
        Expect(b"EHLO"),
        b"250-" + H + b"\r\n250 8BITMIME\r\n",
        Expect(b"MAIL"),
        b"550 5.7.1 " + H + b"\r\n",
        Expect(b"NOOP"),
        H + b"\r\n",
        Close(),
    ]


SMTP_INPUT = b"EHLO me\nMAIL FROM:<a@example.test>\n:explain\nNOOP\n"


@pytest.mark.parametrize("raw", [False, True], ids=["plain", "raw"])
def test_pipe_smtp_escapes_server_controls_everywhere(tmp_path: Path, raw: bool) -> None:
    transcript = tmp_path / "t.log"
    record = tmp_path / "r.mt"
    args = ["smtp", "--transcript", str(transcript), "--record", str(record)]
    with ScriptedPeer(smtp_script()) as peer:
        result = mailtalk(*args, *(["--raw"] if raw else []), f"127.0.0.1:{peer.port}",
                          stdin=SMTP_INPUT)
    assert result.returncode == 5, result.stderr
    assert_clean(result.stdout)
    assert_clean(result.stderr)
    if not raw:
        assert f"S: 220 {SHOWN}" in result.out_lines
        assert f"S: 550 5.7.1 {SHOWN}" in result.out_lines
    else:
        assert "S: 220 \\x1b]0;pwned\\x07 " in result.stdout
    # the :explain block and the error line quote the server too
    assert SHOWN in result.stderr.split("mailtalk: ")[0], result.stderr
    error = result.error_lines[-1]
    assert error.startswith("mailtalk: the server broke the protocol")
    assert SHOWN in error
    transcript_text = transcript.read_bytes()
    assert_clean(transcript_text)
    assert_shown(transcript_text)
    assert_clean(record.read_bytes())


def test_pipe_pop3_status_and_body_lines() -> None:
    script = [
        b"+OK " + H + b"\r\n",
        Expect(b"RETR 1"),
        b"+OK " + H + b"\r\nSubject: " + H + b"\r\n\r\n" + H + b"\r\n.\r\n",
        Expect(b"STAT"),
        b"-ERR " + H + b"\r\n",
        Expect(b"QUIT"),
        b"+OK bye\r\n",
        Close(),
    ]
    with ScriptedPeer(script) as peer:
        result = mailtalk("pop3", f"127.0.0.1:{peer.port}", stdin=b"RETR 1\nSTAT\nQUIT\n")
    assert result.returncode == 1, result.stderr
    assert_clean(result.stdout)
    assert_clean(result.stderr)
    assert f"S: Subject: {SHOWN}" in result.out_lines
    assert f"S: {SHOWN}" in result.out_lines
    assert f"S: -ERR {SHOWN}" in result.out_lines


def test_pipe_imap_untagged_and_tagged() -> None:
    script = [
        b"* OK " + H + b"\r\n",
        Expect(b"a001 NOOP"),
        b"* OK " + H + b"\r\na001 NO " + H + b"\r\n",
        Expect(b"a002 LOGOUT"),
        b"* BYE\r\na002 OK\r\n",
        Close(),
    ]
    with ScriptedPeer(script) as peer:
        result = mailtalk("imap", f"127.0.0.1:{peer.port}", stdin=b"NOOP\nLOGOUT\n")
    assert result.returncode == 1, result.stderr
    assert_clean(result.stdout)
    assert_clean(result.stderr)
    assert f"S: * OK {SHOWN}" in result.out_lines
    assert f"S: a001 NO {SHOWN}" in result.out_lines


def test_send_text_and_json() -> None:
    def script() -> list[object]:
        return [
            b"220 " + H + b"\r\n",
            Expect(b"EHLO"),
            b"250-" + H + b"\r\n250 8BITMIME\r\n",
            Expect(b"MAIL"),
            b"550 5.7.1 " + H + b"\r\n",
            Expect(b"QUIT"),
            b"221 bye\r\n",
            Close(),
        ]

    with ScriptedPeer(script(), script()) as peer:
        base = [MAILTALK, "send", "--from", "a@example.test", "--to", "b@example.net",
                "--server", f"127.0.0.1:{peer.port}"]
        text = subprocess.run(base, capture_output=True, text=True, env=child_env(), timeout=30)
        as_json = subprocess.run([*base, "--json"], capture_output=True, text=True,
                                 env=child_env(), timeout=30)
    assert text.returncode == 1, text.stderr
    assert_clean(text.stdout + text.stderr)
    assert f"S: 550 5.7.1 {SHOWN}" in text.stdout.splitlines()
    assert SHOWN in text.stderr
    assert as_json.returncode == 1, as_json.stderr
    assert_clean_json(as_json.stdout)
    assert SHOWN in json_strings(as_json.stdout)


def test_diagnose_login_text_and_json() -> None:
    def script() -> list[object]:
        return [
            b"+OK " + H + b"\r\n",
            Expect(b"CAPA"),
            b"+OK\r\nUSER\r\n" + H + b"\r\n.\r\n",
            Expect(b"USER alice"),
            b"+OK\r\n",
            Expect(b"PASS"),
            b"-ERR [AUTH] " + H + b"\r\n",
            Expect(b"QUIT"),
            b"+OK\r\n",
            Close(),
        ]

    env = {**child_env(), "MAILTALK_PASSWORD": "secret"}
    with ScriptedPeer(script(), script()) as peer:
        base = [MAILTALK, "diagnose", "login", f"pop3://127.0.0.1:{peer.port}",
                "--user", "alice"]
        text = subprocess.run(base, capture_output=True, text=True, env=env, timeout=30,
                              stdin=subprocess.DEVNULL)
        as_json = subprocess.run([*base, "--json"], capture_output=True, text=True, env=env,
                                 timeout=30, stdin=subprocess.DEVNULL)
    assert text.returncode == 1, text.stderr
    assert_clean(text.stdout + text.stderr)
    evidence = " ".join(text.stdout.split())  # unwrapped
    assert f"login in plain text: -ERR [AUTH] {SHOWN}" in evidence
    assert as_json.returncode == 1, as_json.stderr
    assert_clean_json(as_json.stdout)
    assert SHOWN in json_strings(as_json.stdout)


@pytest.fixture(scope="module")
def dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("hostile-dns")
    (root / "dns").mkdir()
    (root / "dns" / "records").write_text(
        "hostile.test MX 10 mx.hostile.test\nmx.hostile.test A 127.0.0.1\n"
    )
    with run_servers(root, dns=0) as servers:
        yield servers


def test_mx_probe_text_and_json(dns: RunningServers) -> None:
    def script() -> list[object]:
        return [
            b"220 " + H + b"\r\n",
            Expect(b"EHLO"),
            b"250-mx.hostile.test\r\n250 " + H + b"\r\n",
            Expect(b"QUIT"),
            b"221 bye\r\n",
            Close(),
        ]

    with ScriptedPeer(script(), script()) as peer:
        base = [MAILTALK, "mx", "--resolver", f"127.0.0.1:{dns.port('dns')}", "--timeout", "5",
                "--probe", "--port", str(peer.port), "hostile.test"]
        text = subprocess.run(base, capture_output=True, text=True, env=child_env(),
                              timeout=30)
        as_json = subprocess.run([*base, "--json"], capture_output=True, text=True,
                                 env=child_env(), timeout=30)
    assert text.returncode == 0, text.stderr
    assert_clean(text.stdout + text.stderr)
    assert f"220 {SHOWN}" in text.stdout
    assert as_json.returncode == 0, as_json.stderr
    assert_clean_json(as_json.stdout)
    assert SHOWN in json_strings(as_json.stdout)


def test_run_reports(tmp_path: Path) -> None:
    def script() -> list[object]:
        return [
            b"220 " + H + b"\r\n",
            Expect(b"EHLO"),
            b"250 " + H + b"\r\n",
            Expect(b"MAIL"),
            b"550 5.7.1 " + H + b"\r\n",
            Close(),
        ]

    junit = tmp_path / "report.xml"
    with ScriptedPeer(*[script() for _ in range(4)]) as peer:
        session = tmp_path / "s.mt"
        session.write_text(
            f"connect smtp://127.0.0.1:{peer.port}\nS: 220\nC: EHLO me\nS: 250\n"
            "C: MAIL FROM:<a@example.test>\nS: 250\n"
        )
        outputs = {}
        for mode in (["-v"], ["--json"], ["--tap"], ["--junit", str(junit)]):
            done = subprocess.run([MAILTALK, "run", *mode, str(session)], capture_output=True,
                                  text=True, env=child_env(), timeout=30)
            assert done.returncode == 1, done.stderr
            assert_clean(done.stdout + done.stderr)
            outputs[mode[0]] = done.stdout
    assert f"S: 220 {SHOWN}" in outputs["-v"]
    assert f"got: 550 5.7.1 {SHOWN}" in outputs["-v"]
    assert_clean_json(outputs["--json"])
    assert SHOWN in json_strings(outputs["--json"])
    assert "\\\\x1b]0;pwned" in outputs["--tap"]  # a JSON string in the YAML block
    assert_clean(junit.read_bytes())
    assert "\\x1b]0;pwned" in junit.read_text()


def test_explain_of_a_log_line_text_and_json() -> None:
    line = b"Dec  1 10:00:00 mx postfix/smtp[1]: said: 550 5.7.1 " + H + b"\n"
    for extra in ([], ["--json"]):
        done = subprocess.run([MAILTALK, "explain", *extra, "-"], input=line,
                              capture_output=True, env=child_env(), timeout=30)
        assert done.returncode == 0, done.stderr
        out = done.stdout.decode()
        assert_clean(out + done.stderr.decode())
        if extra:
            assert_clean_json(out)
            out = json_strings(out)
        assert "\\x1b]0;pwned" in out
