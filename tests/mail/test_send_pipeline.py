"""``mailtalk send --pipeline`` (RFC 2920) as a real process.

Two servers: a small raw socket server in the test, which reads what arrives after
its reply to EHLO and answers nothing until MAIL, every RCPT and DATA are there (a
client that waits for each reply gets no answer and times out), so it sees the one
write and the order of the replies it chooses; and ``mailtalk serve``, which
delivers. The same against Postfix and Exim is in tests/interop/test_send_pipeline_real.py.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tests.mail.test_send_diagnose import mailtalk, new_messages, start

EHLO_PIPELINING = b"250-raw.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"


@dataclass
class RawServer:
    """One SMTP session: greets, answers EHLO with ``ehlo``, then waits (up to 10 s) for
    the whole batch (up to ``DATA``) before answering it with ``batch_replies``."""

    ehlo: bytes = EHLO_PIPELINING
    batch_replies: bytes = b"250 ok\r\n250 ok\r\n354 go\r\n"
    after_dot: bytes = b"250 queued\r\n"
    reads: list[bytes] = field(default_factory=list)  # each recv after EHLO's reply
    received: bytes = b""  # everything after EHLO's reply
    error: str | None = None

    def __post_init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        with conn, conn.makefile("rb") as lines:
            conn.sendall(b"220 raw.test ESMTP\r\n")
            lines.readline()  # EHLO
            conn.sendall(self.ehlo)
            if b"PIPELINING" not in self.ehlo:
                self.received = lines.readline()
                conn.sendall(b"221 bye\r\n")
                return
            try:
                while b"DATA\r\n" not in self.received and b"QUIT\r\n" not in self.received:
                    data = conn.recv(65536)  # not lines: the raw reads are the evidence
                    if not data:
                        break
                    self.reads.append(data)
                    self.received += data
            except TimeoutError:
                self.error = "the batch never came whole: the client waited for replies"
                return
            conn.sendall(self.batch_replies)
            rest = b""
            while not rest.endswith(b"QUIT\r\n"):
                data = conn.recv(65536)
                if not data:
                    break
                rest += data
                if rest.endswith(b"\r\n.\r\n") or rest == b".\r\n":
                    conn.sendall(self.after_dot)
            self.received += rest
            conn.sendall(b"221 bye\r\n")

    def wait(self) -> None:
        self.thread.join(15)
        self.listener.close()
        assert self.error is None, self.error


def send_raw(server: RawServer, *extra: str, to: tuple[str, ...] = ("x@raw.test",)) -> Any:
    recipients = [arg for address in to for arg in ("--to", address)]
    result = mailtalk(
        "send", "--from", "a@b.test", *recipients, "--server", f"127.0.0.1:{server.port}",
        "--timeout", "20", "--body", "piped", *extra,
    )  # fmt: skip
    server.wait()
    return result


def test_mail_rcpt_and_data_arrive_in_one_read_before_any_reply() -> None:
    server = RawServer(batch_replies=b"250 ok\r\n550 5.1.1 no x\r\n250 ok y\r\n354 go\r\n")
    result = send_raw(server, "--pipeline", "--json", to=("x@raw.test", "y@raw.test"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert server.reads == [
        b"MAIL FROM:<a@b.test>\r\nRCPT TO:<x@raw.test>\r\nRCPT TO:<y@raw.test>\r\nDATA\r\n"
    ]
    assert b"\r\npiped\r\n.\r\n" in server.received
    summary = json.loads(result.stdout.splitlines()[-1])
    # the replies matched in order: the 550 is x's, the 250 y's
    assert summary["accepted"] == ["y@raw.test"] and summary["result"] == "sent"
    assert summary["extensions_used"] == ["PIPELINING"]


def test_each_refusal_explained_and_a_stray_354_ended_empty() -> None:
    server = RawServer(
        batch_replies=b"553 5.7.1 sender rejected\r\n503 5.5.1 need MAIL\r\n354 go\r\n",
        after_dot=b"554 5.5.1 no valid recipients\r\n",
    )
    result = send_raw(server, "--pipeline")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [
        "mailtalk: x@raw.test: MAIL FROM refused: 553 5.7.1 sender rejected"
    ]
    assert "S: 553 5.7.1 sender rejected\n  ↳ " in result.stdout  # explained as before
    # the 354 came though MAIL was refused: a lone dot ends it, never the message
    assert server.received.endswith(b"DATA\r\n.\r\nQUIT\r\n")
    assert b"piped" not in server.received


def test_pipeline_not_offered_is_one_line_and_exit_1() -> None:
    server = RawServer(ehlo=b"250-raw.test\r\n250 8BITMIME\r\n")
    result = send_raw(server, "--pipeline")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "mailtalk: x@raw.test: the server did not offer PIPELINING in its EHLO reply"
    ]
    assert server.received == b"QUIT\r\n"  # nothing of the transaction was sent


def test_pipeline_through_mailtalk_serve_delivers(mailtalk_servers: Callable[..., Any]) -> None:
    running = start(mailtalk_servers)
    for extra in ([], ["--chunking", "--chunk-size", "64"]):
        result = mailtalk(
            "send", "--from", "bob@isp.test", "--to", "alice@isp.test", "--to",
            "nobody@isp.test", "--server", f"127.0.0.1:{running.port('smtp')}", "--pipeline",
            "--body", "pipelined " + " ".join(extra), "--json", *extra,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout + result.stderr
        summary = json.loads(result.stdout.splitlines()[-1])
        assert summary["accepted"] == ["alice@isp.test"]
        assert summary["extensions_used"][0] == "PIPELINING"
    bodies = [path.read_bytes() for path in new_messages(running, "alice")]
    assert sum(b"pipelined \n" in body for body in bodies) == 1
    assert sum(b"pipelined --chunking --chunk-size 64" in body for body in bodies) == 1
