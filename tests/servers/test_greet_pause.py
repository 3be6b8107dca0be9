"""The greet pause (``greet_pause``, ``serve --greet-pause``, the greet-pause scenario):
the SMTP greeting held back, and a client that talks before it refused, as Sendmail's
FEATURE(greet_pause) does.

Over real sockets, byte for byte: an early talker gets the 554 greeting at its first
byte and a refusal to every command but QUIT; a client that waits gets the usual 220
and a whole session; the journal says both. Timings are measured loosely: a pause of
a second is "not before half of it", an early 554 "long before the pause ends". Real
clients that wait (swaks, mailtalk's own pipe mode) are never taken for early talkers;
bash writing to /dev/tcp at once, as a learner typing too fast, is.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.servers.journaling import (
    DOMAIN,
    SMTP_REPLY,
    USER,
    Line,
    Start,
    events,
    journalled,
    make_tls_dir,
    session_events,
    wait_event,
)

MAILTALK = str(Path(sys.executable).with_name("mailtalk"))
LONG = 30.0  # a pause no test waits out: only an early talker ends it early
SHORT = 1.0  # a pause the waiting tests do wait out
ALICE = f"{USER}@{DOMAIN}"

@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tls_dir(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def start(tmp_path: Path, tls_dir: Path) -> Iterator[Start]:
    with journalled(tmp_path, tls_dir) as run:
        yield run


class Raw:
    """A raw SMTP client reading one line at a time (the replies here are one line,
    but EHLO's): what was sent early is answered line by line, in order."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lines = sock.makefile("rb")

    def send(self, line: str) -> None:
        self.sock.sendall(line.encode() + b"\r\n")

    def reply(self) -> str:
        """One whole reply, its lines joined by CRLF."""
        text = ""
        while True:
            line = self.lines.readline().decode()
            if not line:
                raise ConnectionError(f"closed after {text!r}")
            text += line
            if line[3:4] != "-":
                return text

    def ask(self, line: str) -> str:
        self.send(line)
        return self.reply()


def read_all(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything until the server closes the connection."""
    sock.settimeout(timeout)
    data = b""
    while chunk := sock.recv(4096):
        data += chunk
    return data


# -- an early talker ---------------------------------------------------------------


def test_an_early_talker_gets_554_and_every_command_but_quit_is_refused(start: Start) -> None:
    servers, _ = start(greet_pause=LONG)
    began = time.monotonic()
    refused = (
        "503 5.5.1 Bad sequence of commands: you spoke before my greeting; only QUIT now\r\n"
    )
    with socket.create_connection(("127.0.0.1", servers.port("smtp")), timeout=10) as sock:
        raw = Raw(sock)
        raw.send("EHLO learner.test")  # before any greeting
        assert raw.reply() == (
            "554 localhost ESMTP not accepting messages: you spoke before my greeting\r\n"
        )
        assert time.monotonic() - began < LONG / 2  # at the first byte, not the pause's end
        assert raw.reply() == refused  # the EHLO's answer
        for command in ("HELO learner.test", "MAIL FROM:<a@example.org>",
                        f"RCPT TO:<{ALICE}>", "DATA", "NOOP", "RSET", "XYZZY"):
            assert raw.ask(command) == refused, command
        assert raw.ask("QUIT").startswith("221 ")
        assert read_all(sock) == b""  # and closed
    assert not list((servers.root / "mail").glob("*/Maildir/new/*"))


def test_the_first_byte_is_enough_a_line_need_not_be_whole(start: Start) -> None:
    servers, _ = start(greet_pause=LONG)
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", servers.port("smtp")), timeout=10) as sock:
        sock.sendall(b"HE")
        sock.settimeout(LONG / 2)
        assert sock.recv(4096).startswith(b"554 ")
    assert time.monotonic() - began < LONG / 2


def test_the_early_talker_is_in_the_journal(start: Start) -> None:
    servers, path = start(greet_pause=LONG)
    with socket.create_connection(("127.0.0.1", servers.port("smtp")), timeout=10) as sock:
        sock.sendall(b"HELO learner.test\r\nMAIL FROM:<a@example.org>\r\nQUIT\r\n")
        assert read_all(sock).count(b"\r\n") == 4  # 554, 503, 503, 221
    close = wait_event(path, event="close", proto="smtp")
    got = session_events(path, "localhost", close["session"])
    assert [e["event"] for e in got] == ["connect", "command", "command", "command", "close"]
    connect = got[0]
    assert connect["code"] == 554 and "you spoke before my greeting" in connect["text"]
    assert connect["listener"] == "smtp"
    assert [(e["verb"], e["code"], e["enhanced"]) for e in got[1:4]] == [
        ("HELO", 503, "5.5.1"), ("MAIL", 503, "5.5.1"), ("QUIT", 221, "2.0.0"),
    ]
    assert close["reason"] == "quit"


def test_sendmail_answers_helo_and_ehlo_but_rejects_the_rest(start: Start) -> None:
    """srvrsmtp.c: a nullserver session still does HELO, EHLO, NOOP, RSET and QUIT."""
    servers, path = start(greet_pause=LONG, personality="sendmail")
    with socket.create_connection(("127.0.0.1", servers.port("smtp")), timeout=10) as sock:
        raw = Raw(sock)
        raw.send("EHLO learner.test")
        assert raw.reply() == "554 localhost ESMTP not accepting messages\r\n"
        assert raw.reply() == (
            "250-localhost Hello [127.0.0.1], pleased to meet you\r\n"
            "250 ENHANCEDSTATUSCODES\r\n"
        )
        assert raw.ask("NOOP").startswith("250 ")
        assert raw.ask("MAIL FROM:<a@example.org>") == "550 5.0.0 Command rejected\r\n"
        assert raw.ask("VRFY bob") == "550 5.0.0 Command rejected\r\n"
        assert raw.ask("QUIT").startswith("221 ")
    wait_event(path, event="close", proto="smtp")
    assert events(path, event="connect")[0]["code"] == 554
    assert [e["code"] for e in events(path, event="command", verb="MAIL")] == [550]


@pytest.mark.parametrize(
    ("name", "reply"),
    [("exim", b"554 SMTP synchronization error\r\n"), ("postfix", b"521 5.5.1 Protocol error\r\n")],
)
def test_exim_and_postscreen_hang_up_on_an_early_talker(
    start: Start, name: str, reply: bytes
) -> None:
    servers, path = start(greet_pause=LONG, personality=name)
    with socket.create_connection(("127.0.0.1", servers.port("smtp")), timeout=10) as sock:
        sock.sendall(b"EHLO learner.test\r\nMAIL FROM:<a@example.org>\r\n")
        assert read_all(sock) == reply  # nothing after it: the connection is closed
    close = wait_event(path, event="close", proto="smtp")
    assert close["reason"] == "server"
    assert [e["event"] for e in events(path, session=close["session"])] == ["connect", "close"]


# -- a client that waits -------------------------------------------------------------


def test_the_greeting_waits_for_the_pause(start: Start) -> None:
    servers, _ = start(greet_pause=SHORT)
    began = time.monotonic()
    with socket.create_connection(("127.0.0.1", servers.port("smtp")), timeout=10) as sock:
        sock.settimeout(SHORT / 2)
        with pytest.raises(TimeoutError):
            sock.recv(4096)  # nothing in the first half of the pause
        sock.settimeout(10)
        assert sock.recv(4096).startswith(b"220 localhost ESMTP")
    assert time.monotonic() - began >= SHORT / 2


def test_a_client_that_waits_is_not_punished(start: Start) -> None:
    servers, path = start(greet_pause=SHORT)
    line = Line(servers.port("smtp"))
    assert line.read(SMTP_REPLY).startswith("220 ")
    ehlo = line.ask("EHLO learner.test", SMTP_REPLY)
    assert "250-PIPELINING" in ehlo and "250-STARTTLS" in ehlo
    assert line.ask("MAIL FROM:<a@example.org>", SMTP_REPLY).startswith("250 ")
    assert line.ask(f"RCPT TO:<{ALICE}>", SMTP_REPLY).startswith("250 ")
    assert line.ask("DATA", SMTP_REPLY).startswith("354 ")
    assert line.ask("Subject: waited\r\n\r\nI waited.\r\n.", SMTP_REPLY).startswith("250 ")
    assert line.ask("QUIT", SMTP_REPLY).startswith("221 ")
    line.close()
    wait_event(path, event="message", outcome="delivered", subject="waited")
    assert [e["code"] for e in events(path, event="connect")] == [220]
    assert all(e["code"] < 400 for e in events(path, event="command"))


def test_a_client_that_hangs_up_during_the_pause_talked_to_no_one(start: Start) -> None:
    """An end of file is no early talk (Sendmail's pause reads a byte that is not EOF)."""
    servers, path = start(greet_pause=LONG)
    with socket.create_connection(("127.0.0.1", servers.port("smtp")), timeout=10) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert read_all(sock) == b""  # no 554: closed without a word
    close = wait_event(path, event="close", proto="smtp")
    connect = events(path, event="connect", session=close["session"])[0]
    assert connect["code"] is None and close["reason"] == "dropped"


def test_smtps_is_not_paused(start: Start) -> None:
    """TLS comes first on smtps; Sendmail pauses only before a plain-text greeting."""
    servers, _ = start(greet_pause=LONG, smtps=0)
    line = Line(servers.port("smtps"))
    line.starttls(servers.cafile)
    began = time.monotonic()
    assert line.read(SMTP_REPLY).startswith("220 ")
    assert time.monotonic() - began < LONG / 2
    line.close()


# -- turned on and off: the scenario, control/scenarios, serve --greet-pause -----------


def test_the_scenario_in_control_scenarios_comes_and_goes(start: Start) -> None:
    servers, path = start()
    scenarios = servers.root / "control" / "scenarios"
    scenarios.write_text("greet-pause\n")
    with socket.create_connection(("127.0.0.1", servers.port("smtp")), timeout=10) as sock:
        sock.sendall(b"HELO learner.test\r\nQUIT\r\n")
        assert read_all(sock).startswith(b"554 ")
    scenarios.write_text("")
    with socket.create_connection(("127.0.0.1", servers.port("smtp")), timeout=10) as sock:
        sock.sendall(b"HELO learner.test\r\nQUIT\r\n")  # early, but nobody listens for it
        assert read_all(sock).startswith(b"220 ")
    assert [e["code"] for e in events(path, event="connect")] == [554, 220]


def test_serve_greet_pause_option(tmp_path: Path) -> None:
    from tests.servers.test_serve_command import serving

    with (
        serving(tmp_path, tmp_path / "root", "--smtp", "0", "--greet-pause", "20") as server,
        socket.create_connection(("127.0.0.1", server.port("smtp")), timeout=10) as sock,
    ):
        sock.sendall(b"EHLO learner.test\r\nQUIT\r\n")
        data = read_all(sock)
    assert data.startswith(b"554 localhost ESMTP not accepting messages")
    assert data.endswith(b"\r\n221 2.0.0 localhost Service closing transmission channel\r\n")


def test_serve_greet_pause_refuses_a_bad_value(tmp_path: Path) -> None:
    result = subprocess.run(
        [MAILTALK, "serve", "--root", str(tmp_path), "--greet-pause", "-1"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2 and "--greet-pause" in result.stderr
    assert "Traceback" not in result.stderr


# -- real clients ----------------------------------------------------------------------


def test_bash_writing_at_once_is_an_early_talker(start: Start) -> None:
    """What a learner's terminal does when typing before the greeting."""
    servers, path = start(greet_pause=LONG)
    script = (
        'exec 3<>"/dev/tcp/127.0.0.1/$PORT"; printf "HELO learner.test\\r\\n" >&3; '
        "read -r greeting <&3; read -r reply <&3; printf 'QUIT\\r\\n' >&3; read -r bye <&3; "
        'echo "$greeting|$reply|$bye"'
    )
    result = subprocess.run(
        ["bash", "-c", script], env={**os.environ, "PORT": str(servers.port("smtp"))},
        capture_output=True, text=True, timeout=LONG / 2,
    )
    greeting, reply, bye = result.stdout.strip().replace("\r", "").split("|")
    assert greeting.startswith("554 ") and reply.startswith("503 ") and bye.startswith("221 ")
    wait_event(path, event="close", proto="smtp")
    assert [e["code"] for e in events(path, event="connect")] == [554]


def test_mailtalk_pipe_mode_waits_for_the_greeting(start: Start) -> None:
    """mailtalk's client reads the greeting before it sends: never an early talker."""
    servers, path = start(greet_pause=SHORT)
    result = subprocess.run(
        [MAILTALK, "smtp", f"127.0.0.1:{servers.port('smtp')}"],
        input="EHLO learner.test\nMAIL FROM:<a@example.org>\nQUIT\n",
        capture_output=True, text=True, timeout=30,
        env={k: v for k, v in os.environ.items() if not k.startswith("MAILTALK_")},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("S: 220 localhost ESMTP"), result.stdout
    assert "250 2.1.0 Sender <a@example.org> OK" in result.stdout
    wait_event(path, event="close", proto="smtp")
    assert [e["code"] for e in events(path, event="connect")] == [220]
    assert [e["code"] for e in events(path, event="command")] == [250, 250, 221]


@pytest.mark.interop
def test_swaks_waits_and_delivers(start: Start) -> None:
    if shutil.which("swaks") is None:
        if os.environ.get("MAILTALK_REQUIRE_REAL_SERVERS"):
            pytest.fail("swaks is not installed (scripts/real-servers install)")
        pytest.skip("swaks is not installed (scripts/real-servers install)")
    servers, path = start(greet_pause=SHORT)
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(servers.port("smtp")),
         "--helo", "learner.test", "--from", "a@example.org", "--to", ALICE,
         "--header", "Subject: swaks waited", "--pipeline"],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "<-  220 localhost ESMTP" in result.stdout
    wait_event(path, event="message", outcome="delivered", subject="swaks waited")
    assert [e["code"] for e in events(path, event="connect")] == [220]
