"""Commands that arrive together with the end of the TLS handshake, on all three servers.

mpop (``tls_starttls on``) sends ``STLS``, completes TLS 1.3 and sends ``CAPA`` at
once: its Finished message and the ``CAPA`` record can reach the server in one TCP
segment, so the server reads the command in the same read that ends the handshake.
These tests make that happen on purpose: the client drives TLS through
``ssl.MemoryBIO`` over a raw socket, holds its Finished back until the first
command is encrypted behind it, and sends both in one segment (``TCP_CORK``).
Every protocol must answer that command, and a second one pipelined with it.
"""

from __future__ import annotations

import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers

TIMEOUT = 5.0


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("early-data")
    with run_servers(root, smtp=0, pop3=0, imap=0, users=[("alice", "secret")]) as running:
        yield running


@dataclass(frozen=True)
class Dialogue:
    """How one protocol reaches TLS, and two commands with what must answer them."""

    protocol: str
    before_tls: bytes  # the commands before the upgrade, the last one asking for it
    ready: bytes  # how the go-ahead line begins
    commands: bytes  # sent in the segment that carries the client's Finished
    answers: re.Pattern[bytes]  # everything that must come back over TLS, whole


DIALOGUES = [
    Dialogue(
        "smtp",
        b"EHLO client.test\r\nSTARTTLS\r\n",
        b"220 ",
        b"EHLO client.test\r\nNOOP\r\n",
        re.compile(rb"(250-[^\r\n]*\r\n)*250 [^\r\n]*\r\n250 [^\r\n]*\r\n"),
    ),
    Dialogue(
        "pop3",
        b"STLS\r\n",
        b"+OK ",
        b"CAPA\r\nQUIT\r\n",
        re.compile(rb"\+OK [^\r\n]*\r\n([^\r\n]*\r\n)*?\.\r\n\+OK [^\r\n]*\r\n"),
    ),
    Dialogue(
        "imap",
        b"a1 STARTTLS\r\n",
        b"a1 OK ",
        b"a2 CAPABILITY\r\na3 NOOP\r\n",
        re.compile(rb"\* CAPABILITY [^\r\n]*\r\na2 OK [^\r\n]*\r\na3 OK [^\r\n]*\r\n"),
    ),
]


class Wire:
    """A raw socket with a TLS client in memory: we decide what leaves in which segment."""

    def __init__(self, port: int, cafile: Path) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.plain = b""
        context = ssl.create_default_context(cafile=str(cafile))
        context.minimum_version = ssl.TLSVersion.TLSv1_3  # as mpop negotiated it
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def close(self) -> None:
        self.sock.close()

    def plain_line(self) -> bytes:
        while b"\r\n" not in self.plain:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise AssertionError(f"closed in plain text; got {self.plain!r}")
            self.plain += chunk
        line, _, self.plain = self.plain.partition(b"\r\n")
        return line + b"\r\n"

    def handshake_holding_the_finished(self) -> None:
        """Run the handshake up to the point where only the client's Finished is left."""
        assert not self.plain, f"bytes after the go-ahead, before TLS: {self.plain!r}"
        while True:
            try:
                self.tls.do_handshake()
                return  # the Finished is in self.outgoing, not sent yet
            except ssl.SSLWantReadError:
                self.sock.sendall(self.outgoing.read())
                data = self.sock.recv(65536)
                if not data:
                    raise AssertionError("the server closed during the handshake") from None
                self.incoming.write(data)

    def send_finished_with(self, commands: bytes) -> None:
        """The Finished and the commands, encrypted, in one corked write: one segment."""
        self.tls.write(commands)
        flight = self.outgoing.read()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 1)
        self.sock.sendall(flight)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CORK, 0)

    def read_tls_until(self, answers: re.Pattern[bytes]) -> bytes:
        received = bytearray()
        while not answers.fullmatch(received):
            try:
                received += self.tls.read(65536)
                continue
            except ssl.SSLWantReadError:
                pass
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                raise AssertionError(
                    f"no answer within {TIMEOUT}s to the commands sent with the Finished; "
                    f"got {bytes(received)!r}"
                ) from None
            if not data:
                break
            self.incoming.write(data)
        return bytes(received)


@pytest.mark.skipif(not hasattr(socket, "TCP_CORK"), reason="needs TCP_CORK (Linux)")
@pytest.mark.parametrize("dialogue", DIALOGUES, ids=[d.protocol for d in DIALOGUES])
def test_commands_in_the_segment_that_ends_the_handshake_are_answered(
    servers: RunningServers, dialogue: Dialogue
) -> None:
    wire = Wire(servers.port(dialogue.protocol), servers.cafile)
    try:
        wire.plain_line()  # the greeting
        wire.sock.sendall(dialogue.before_tls)
        while not wire.plain_line().startswith(dialogue.ready):
            pass  # EHLO's lines
        wire.handshake_holding_the_finished()
        wire.send_finished_with(dialogue.commands)
        received = wire.read_tls_until(dialogue.answers)
    finally:
        wire.close()
    assert dialogue.answers.fullmatch(received), received
