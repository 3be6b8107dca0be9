"""The reference SMTP server next to the real ones: the same dialogue, the same answers.

Each test plays one dialogue against a real MTA (Postfix on 127.0.0.1, Exim on
127.0.0.6) and against ``mailtalk serve``, and compares the reply codes. Where the
real servers differ from each other (AUTH before EHLO: stock Postfix takes it,
Exim refuses it), the reference server's personality says which one it follows.
No message is sent to a real server: every dialogue ends before DATA.
"""

from __future__ import annotations

import base64
import socket
import ssl
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from tests.interop.conftest import Peer, RealServers

pytestmark = pytest.mark.interop

TIMEOUT = 10.0
STARTTLS = "STARTTLS"  # the step that also runs the handshake


def auth_plain(user: str, password: str) -> str:
    return "AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()).decode()


def talk(host: str, port: int, context: ssl.SSLContext, steps: Sequence[str]) -> list[str]:
    """Each step's reply as ``"CODE text"`` (the last line of a multi-line reply)."""
    sock: socket.socket = socket.create_connection((host, port), timeout=TIMEOUT)
    replies: list[str] = []
    try:
        stream = sock.makefile("rb")

        def reply() -> str:
            while True:
                line = stream.readline()
                if not line:
                    raise AssertionError(f"{host}:{port} closed; replies so far: {replies}")
                if line[3:4] != b"-":
                    return line.decode("utf-8", "replace").rstrip("\r\n")

        reply()  # the greeting
        for step in steps:
            sock.sendall(step.encode() + b"\r\n")
            replies.append(reply())
            if step == STARTTLS and replies[-1].startswith("220"):
                stream.close()
                sock = context.wrap_socket(sock, server_hostname=host)
                stream = sock.makefile("rb")
        sock.sendall(b"QUIT\r\n")
    finally:
        sock.close()
    return replies


def codes(replies: list[str]) -> list[int]:
    return [int(reply[:3]) for reply in replies]


@pytest.fixture(scope="module")
def ours(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("vs-real")
    with run_servers(
        root, smtp=0, submission=0, users=[("alice", "secret")], domains=["mailtalk.test"]
    ) as servers:
        yield servers


@pytest.fixture(scope="module")
def ours_as_postfix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("vs-real-postfix")
    with run_servers(
        root, submission=0, users=[("alice", "secret")], personality="postfix"
    ) as servers:
        yield servers


def our_context(servers: RunningServers) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(Path(servers.cafile)))


def test_postmaster_is_accepted_like_postfix(
    real_servers: RealServers, ours: RunningServers
) -> None:
    """RFC 5321 4.5.1, as Postfix does it: <postmaster> without a domain, any case, and
    postmaster@ the local domain, from a client that may not relay; someone else's
    postmaster is a relaying question."""
    steps = [
        "EHLO client.test",
        "MAIL FROM:<stranger@example.org>",
        "RCPT TO:<postmaster>",
        "RCPT TO:<Postmaster>",
        f"RCPT TO:<POSTMASTER@{real_servers.domain}>",
        "RCPT TO:<postmaster@elsewhere.example>",
        "RSET",
    ]
    real = talk(real_servers.host, real_servers.smtp, real_servers.ssl_context(), steps)
    mine = talk(ours.host, ours.port("smtp"), our_context(ours), steps)
    assert codes(real) == [250, 250, 250, 250, 250, 554, 250], real
    assert codes(mine) == codes(real), mine


AUTH_AFTER_HELO = ["EHLO client.test", STARTTLS, "HELO client.test", auth_plain("alice", "secret")]
AUTH_WITHOUT_EHLO_AFTER_TLS = ["EHLO client.test", STARTTLS, auth_plain("alice", "secret")]


def test_auth_after_helo_is_accepted_like_postfix(
    real_servers: RealServers, ours: RunningServers
) -> None:
    real = talk(
        real_servers.host, real_servers.submission, real_servers.ssl_context(), AUTH_AFTER_HELO
    )
    mine = talk(ours.host, ours.port("submission"), our_context(ours), AUTH_AFTER_HELO)
    assert codes(real) == [250, 220, 250, 235], real
    assert codes(mine) == codes(real), mine


def test_auth_with_no_ehlo_since_starttls_postfix_personality_like_postfix(
    real_servers: RealServers, ours_as_postfix: RunningServers
) -> None:
    """Stock Postfix (smtpd_helo_required = no) takes AUTH without a new EHLO."""
    real = talk(
        real_servers.host,
        real_servers.submission,
        real_servers.ssl_context(),
        AUTH_WITHOUT_EHLO_AFTER_TLS,
    )
    mine = talk(
        ours_as_postfix.host,
        ours_as_postfix.port("submission"),
        our_context(ours_as_postfix),
        AUTH_WITHOUT_EHLO_AFTER_TLS,
    )
    assert codes(real) == [250, 220, 235], real
    assert codes(mine) == codes(real), mine


def test_auth_with_no_ehlo_since_starttls_is_503_like_exim(
    exim: Peer, ours: RunningServers
) -> None:
    """Exim offers AUTH only in an EHLO reply, and answers 503 to AUTH before it; so does
    mailtalk's own personality (after HELO, mailtalk takes it, as Postfix does)."""
    real = talk(exim.host, exim.port("submission"), exim.ssl_context(),
                AUTH_WITHOUT_EHLO_AFTER_TLS)
    mine = talk(ours.host, ours.port("submission"), our_context(ours),
                AUTH_WITHOUT_EHLO_AFTER_TLS)
    assert codes(real)[:2] == [250, 220] and codes(real)[2] == 503, real
    assert codes(mine) == codes(real), mine
    assert mine[2] == "503 5.5.1 Bad sequence of commands: send HELO or EHLO first"
