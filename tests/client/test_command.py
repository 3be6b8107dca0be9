"""``client/command.py``: the typed options of ``mailtalk connect`` settled into the
engine's ``SessionOptions``, and ``run(options, env)`` talking through the Environment
it is given (pipe mode in-process, against a scripted peer)."""

from __future__ import annotations

import io
import socket

import pytest

from mailtalk.client.command import ConnectOptions, run
from mailtalk.environment import Environment
from mailtalk.net.target import parse_shortcut, parse_url
from tests.peers import SMTP_GREETING, Expect, ScriptedPeer, smtp_ehlo_reply


@pytest.mark.parametrize(
    ("url", "starttls", "expected"),
    [
        ("submission://mail.example.com", None, True),  # the scheme says STARTTLS
        ("submission://mail.example.com", False, False),
        ("smtp://mail.example.com", None, False),
        ("smtp://mail.example.com", True, True),
        ("smtps://mail.example.com", True, False),  # never on top of implicit TLS
        ("imaps://mail.example.com", None, False),
    ],
)
def test_starttls_as_the_scheme_says_unless_told(
    url: str, starttls: bool | None, expected: bool
) -> None:
    session = ConnectOptions(parse_url(url), starttls=starttls).session()
    assert session.starttls is expected


def test_the_address_family_from_the_flags() -> None:
    target = parse_shortcut("smtp", "localhost", False)
    assert ConnectOptions(target).session().family == 0
    assert ConnectOptions(target, ipv4=True).session().family == socket.AF_INET
    assert ConnectOptions(target, ipv6=True).session().family == socket.AF_INET6


def test_every_other_option_is_carried_over() -> None:
    target = parse_shortcut("pop3", "alice@localhost:1110", False)
    options = ConnectOptions(
        target, insecure=True, cafile="ca.pem", timeout=2.5, transcript="t.log",
        show_secrets=True, raw=True, record="s.mt",
    )
    session = options.session(debug=True)
    assert session.target is target
    assert (session.insecure, session.cafile, session.timeout) == (True, "ca.pem", 2.5)
    assert (session.transcript, session.show_secrets, session.raw) == ("t.log", True, True)
    assert (session.record, session.debug) == ("s.mt", True)


def test_without_a_terminal_run_is_pipe_mode_on_the_environments_streams() -> None:
    script = [SMTP_GREETING, Expect(b"EHLO me"), smtp_ehlo_reply(), Expect(b"QUIT"),
              b"221 bye\r\n"]
    with ScriptedPeer(script) as peer:
        env = Environment.for_test(stdin=io.StringIO("EHLO me\nQUIT\n"),
                                   variables={"TERM": "xterm"})
        target = parse_shortcut("smtp", f"127.0.0.1:{peer.port}", False)
        code = run(ConnectOptions(target, timeout=5), env)
    out = env.stdout.getvalue()  # type: ignore[attr-defined]
    assert code == 0, env.stderr.getvalue()  # type: ignore[attr-defined]
    assert "C: EHLO me" in out and "S: 221 bye" in out
    assert "\x1b[" not in out  # not a terminal: no colour
    assert "# connected to" in env.stderr.getvalue()  # type: ignore[attr-defined]


def test_force_color_colours_pipe_mode() -> None:
    script = [SMTP_GREETING, Expect(b"QUIT"), b"221 bye\r\n"]
    with ScriptedPeer(script) as peer:
        env = Environment.for_test(stdin=io.StringIO("QUIT\n"), variables={"FORCE_COLOR": "1"})
        target = parse_shortcut("smtp", f"127.0.0.1:{peer.port}", False)
        assert run(ConnectOptions(target, timeout=5), env) == 0
    assert "S: \x1b[32m221 bye" in env.stdout.getvalue()  # type: ignore[attr-defined]


def test_a_refused_connection_is_one_line_on_the_environments_stderr() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    env = Environment.for_test()
    code = run(ConnectOptions(parse_shortcut("smtp", f"127.0.0.1:{port}", False)), env)
    assert code == 3
    errors = env.stderr.getvalue().splitlines()  # type: ignore[attr-defined]
    assert [line for line in errors if line.startswith("mailtalk:")] == [
        f"mailtalk: cannot connect to 127.0.0.1 port {port}: connection refused"
    ]
