"""Pipelined commands are answered without waiting for the client's delayed ACK.

The reference servers accept in their own loop (``servers/listening.py``) from a socket
made with proto 0; asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP,
so for a while every session ran with Nagle's algorithm on: the second of two answers
written back to back waited for the ACK of the first, which a client holding its ACK
(delayed ACK, about 40 ms on Linux) sent late. 10,000 POP3 RETRs pipelined 50 at a time
took 6-7 s instead of 0.3-0.5 s (issue 17); 1,000 RETRs sent two at a time took 22 s
instead of 0.2 s.

The first test reads the option on the server's side of real connections (the servers
run in this process: the socket is found by its peer address); the second is the
behaviour, with a bound 30-100 times what the fixed server needs and half of what the
stall cost.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

import pytest

from mailtalk.servers.api import run_servers
from mailtalk.servers.session import IMPLICIT_TLS
from tests.servers.test_pop3_server import Pop, deliver

USERS = [("alice", "secret")]


def server_side_nodelay(client: socket.socket) -> int:
    """TCP_NODELAY of the server's socket for ``client``'s connection (same process)."""
    want = client.getsockname()
    for name in os.listdir("/proc/self/fd"):
        try:
            fd = int(name)
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            probe = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue  # closed meanwhile, or not a socket after all
        try:
            if probe.type == socket.SOCK_STREAM and probe.getpeername() == want:
                return probe.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        except OSError:
            pass  # listening or unconnected
        finally:
            probe.close()
    raise AssertionError(f"no server socket connected to {want}")


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "listener", ["smtp", "submission", "smtps", "pop3", "pop3s", "imap", "imaps"]
)
def test_every_listener_sets_tcp_nodelay(tmp_path: Path, listener: str) -> None:
    ports = {"smtp": None, listener: 0}
    with (
        run_servers(tmp_path / "root", users=USERS, **ports) as servers,  # type: ignore[arg-type]
        socket.create_connection(("127.0.0.1", servers.port(listener)), timeout=10) as raw,
    ):
        sock: socket.socket = raw
        if listener in IMPLICIT_TLS:
            context = ssl.create_default_context(cafile=str(servers.cafile))
            sock = context.wrap_socket(raw, server_hostname="localhost")
        assert sock.recv(1024)  # the greeting: the session is set up
        assert server_side_nodelay(sock) == 1


def test_1000_retrs_pipelined_two_at_a_time(tmp_path: Path) -> None:
    """Two RETRs per write: with Nagle on, every second answer waited for a delayed ACK
    (22 s for these 1,000); without it, well under a second."""
    root = tmp_path / "root"
    count = 1000
    body = b"".join(b"line %d of a short message\n" % n for n in range(8))
    for n in range(count):
        deliver(root, b"Subject: %d\n\n" % n + body)
    with (
        run_servers(root, users=USERS, smtp=None, pop3=0) as servers,
        Pop(servers.port("pop3"), timeout=30) as client,
    ):
        client.login()
        started = time.monotonic()
        for first in range(1, count + 1, 2):
            client.send(b"RETR %d\r\nRETR %d\r\n" % (first, first + 1))
            for n in (first, first + 1):
                assert client.status().endswith(b" octets\r\n")
                assert client.body().startswith(b"Subject: %d\r\n" % (n - 1))
        elapsed = time.monotonic() - started
    assert elapsed < 10, f"1,000 pipelined RETRs took {elapsed:.1f} s (the Nagle stall: 22 s)"


class CountingTransport:
    """The session's transport, its writes counted (everything else passed through)."""

    def __init__(self, transport: object, writes: list[int]) -> None:
        self._transport = transport
        self._writes = writes

    def write(self, data: bytes) -> None:
        self._writes.append(len(data))
        self._transport.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self._transport, name)


def test_a_window_of_pipelined_retrs_leaves_in_a_few_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 RETRs and a QUIT in one segment: the answers are gathered and written in
    batches of about 64 KiB (one send() per batch, not one per RETR, as Dovecot corks
    its output), all of them before the goodbye and the close."""
    from mailtalk.servers.pop3 import CHUNK, POP3ServerProtocol

    root = tmp_path / "root"
    count = 50
    body = b"".join(b"line %d of a message of about three kilobytes, as mail is\n" % n
                    for n in range(50))
    for n in range(count):
        deliver(root, b"Subject: %d\n\n" % n + body)
    writes: list[int] = []
    made = POP3ServerProtocol.connection_made

    def counting(self: POP3ServerProtocol, transport: object) -> None:
        made(self, CountingTransport(transport, writes))  # type: ignore[arg-type]

    monkeypatch.setattr(POP3ServerProtocol, "connection_made", counting)
    with (
        run_servers(root, users=USERS, smtp=None, pop3=0) as servers,
        Pop(servers.port("pop3"), timeout=30) as client,
    ):
        client.login()
        writes.clear()
        client.send(b"".join(b"RETR %d\r\n" % n for n in range(1, count + 1)) + b"QUIT\r\n")
        for n in range(1, count + 1):
            assert client.status().endswith(b" octets\r\n")
            assert client.body().startswith(b"Subject: %d\r\n" % (n - 1))
        assert client.line().startswith(b"+OK")
        assert client.sock.recv(1) == b""  # closed after the goodbye
    total = sum(writes)
    assert total > count * len(body)
    # The commands may arrive in more than one read; each read's answers leave together.
    assert len(writes) <= 2 * (total // CHUNK + 1) + 2, writes
