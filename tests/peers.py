"""A scripted TCP peer on 127.0.0.1: plays a fixed script against a real client socket.

Tests that need "a server" without a real mail server use it::

    with ScriptedPeer([Send(b"220 hi\\r\\n"), Expect(b"EHLO"), Send(b"250 ok\\r\\n"),
                       Expect(b"QUIT"), Send(b"221 bye\\r\\n"), Close()]) as peer:
        run_client(port=peer.port)
    assert peer.lines(0) == [b"EHLO me", b"QUIT"]

The server listens on port 0 (the kernel picks a free port), accepts one
connection per script given, and plays each script in order on its own
connection, in one background thread: deterministic, no timing games. Bare
``bytes`` in a script mean ``Send``. Everything received is recorded per
connection (``received[i]``), and an ``Expect`` that does not match is recorded
in ``errors``; leaving the ``with`` block joins the thread and fails the test if
a step went wrong (unless the block is already failing).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from types import TracebackType

# How long any one step may wait for the client before the peer gives up.
STEP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Send:
    """Send these bytes."""

    data: bytes


@dataclass(frozen=True)
class SendChunks:
    """Send what an iterable of byte strings yields, lazily (for huge floods).

    Stops quietly if the client goes away (a broken pipe is part of the test).
    """

    chunks: Callable[[], Iterable[bytes]]


@dataclass(frozen=True)
class Expect:
    """Read one line (up to LF); it must start with ``prefix`` (case-insensitive)."""

    prefix: bytes = b""


@dataclass(frozen=True)
class ExpectUntil:
    """Read until the received bytes of this step end with ``terminator``."""

    terminator: bytes


@dataclass(frozen=True)
class ExpectBytes:
    """Read exactly ``n`` bytes."""

    n: int


@dataclass(frozen=True)
class Close:
    """Close the connection now."""


@dataclass(frozen=True)
class Hold:
    """Say nothing and keep reading until the client closes (a silent server)."""


@dataclass(frozen=True)
class Signal:
    """Set ``event``, so the test can wait until the script got this far."""

    event: threading.Event


@dataclass(frozen=True)
class WaitFor:
    """Wait until the test sets ``event`` (at most STEP_TIMEOUT)."""

    event: threading.Event


Step = Send | SendChunks | Expect | ExpectUntil | ExpectBytes | Close | Hold | Signal | WaitFor


_STEP_TYPES = (Send, SendChunks, Expect, ExpectUntil, ExpectBytes, Close, Hold, Signal, WaitFor)


def _step(item: object) -> Step:
    """A script item as a step: bytes mean Send."""
    if isinstance(item, bytes):
        return Send(item)
    if isinstance(item, _STEP_TYPES):
        return item
    raise TypeError(f"not a script step: {item!r}")


@dataclass
class _Connection:
    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    buffer: bytearray = field(default_factory=bytearray)
    eof: bool = False

    def fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.eof = True
            raise EOFError("the client closed the connection")
        self.received += data
        self.buffer += data

    def read_line(self) -> bytes:
        while b"\n" not in self.buffer:
            self.fill()
        end = self.buffer.index(b"\n") + 1
        line = bytes(self.buffer[:end])
        del self.buffer[:end]
        return line

    def read_until(self, terminator: bytes) -> bytes:
        while terminator not in self.buffer:
            self.fill()
        end = self.buffer.index(terminator) + len(terminator)
        chunk = bytes(self.buffer[:end])
        del self.buffer[:end]
        return chunk

    def read_exactly(self, n: int) -> bytes:
        while len(self.buffer) < n:
            self.fill()
        chunk = bytes(self.buffer[:n])
        del self.buffer[:n]
        return chunk

    def drain(self) -> None:
        """Read until the client closes, recording everything."""
        with contextlib.suppress(EOFError, OSError):
            while True:
                self.fill()


class ScriptedPeer:
    """A one-thread TCP server playing one script per accepted connection."""

    def __init__(self, *scripts: Sequence[object], step_timeout: float = STEP_TIMEOUT,
                 family: int = socket.AF_INET) -> None:
        if not scripts:
            raise ValueError("give at least one script")
        self.scripts = [[_step(s) for s in script] for script in scripts]
        self.step_timeout = step_timeout
        self.received: list[bytearray] = []
        self.errors: list[str] = []
        self.finished = threading.Event()
        host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
        self._listener = socket.socket(family, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(len(scripts))
        self._listener.settimeout(step_timeout)
        self.port: int = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="scripted-peer", daemon=True)
        self._current: socket.socket | None = None

    # -- the test's side -------------------------------------------------------

    def __enter__(self) -> ScriptedPeer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        # A failing block will not play its part: do not wait for it.
        self.stop(5.0 if exc_type is None else 0.0)
        if exc_type is None and self.errors:
            raise AssertionError("scripted peer: " + "; ".join(self.errors))

    def stop(self, timeout: float = 5.0) -> None:
        """Wait up to ``timeout`` s for the script to end; then close everything."""
        if not self._thread.is_alive() and self._thread.ident is None:
            self._listener.close()  # never started
            return
        self._thread.join(timeout)
        if self._thread.is_alive():
            # A Hold/Expect still waiting on a client that never left: cut it off.
            self._abort()
            self._thread.join(5.0)
        self._listener.close()

    def _abort(self) -> None:
        self._listener.close()
        sock = self._current
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def data(self, index: int = 0) -> bytes:
        """Everything received on connection ``index``."""
        return bytes(self.received[index]) if index < len(self.received) else b""

    def lines(self, index: int = 0) -> list[bytes]:
        """What connection ``index`` received, split into lines without their CRLF."""
        return [line.rstrip(b"\r") for line in self.data(index).split(b"\n") if line]

    def wait(self, timeout: float = 5.0) -> bool:
        """Wait until every script has run to its end."""
        return self.finished.wait(timeout)

    # -- the server thread -------------------------------------------------------

    def _serve(self) -> None:
        try:
            for index, script in enumerate(self.scripts):
                try:
                    sock, _ = self._listener.accept()
                except OSError as error:
                    self.errors.append(f"connection {index}: no client came ({error})")
                    return
                self._current = sock
                self.received.append(bytearray())
                try:
                    self._play(index, script, sock)
                finally:
                    self._current = None
                    with contextlib.suppress(OSError):
                        sock.close()
        finally:
            self.finished.set()

    def _play(self, index: int, script: list[Step], sock: socket.socket) -> None:
        sock.settimeout(self.step_timeout)
        conn = _Connection(sock)
        conn.received = self.received[index]
        for number, step in enumerate(script):
            where = f"connection {index} step {number} ({type(step).__name__})"
            try:
                if not self._step(conn, step):
                    return
            except EOFError:
                self.errors.append(f"{where}: the client closed the connection")
                return
            except TimeoutError:
                self.errors.append(f"{where}: nothing from the client in {self.step_timeout} s")
                return
            except OSError as error:
                self.errors.append(f"{where}: {error}")
                return

    def _step(self, conn: _Connection, step: Step) -> bool:
        """Play one step; False ends the script."""
        if isinstance(step, Send):
            conn.sock.sendall(step.data)
        elif isinstance(step, SendChunks):
            try:
                for chunk in step.chunks():
                    conn.sock.sendall(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return False
        elif isinstance(step, Expect):
            line = conn.read_line()
            if not line.lower().startswith(step.prefix.lower()):
                self.errors.append(f"expected a line starting {step.prefix!r}, got {line!r}")
                return False
        elif isinstance(step, ExpectUntil):
            conn.read_until(step.terminator)
        elif isinstance(step, ExpectBytes):
            conn.read_exactly(step.n)
        elif isinstance(step, Close):
            return False
        elif isinstance(step, Hold):
            conn.sock.settimeout(None)
            conn.drain()
            return False
        elif isinstance(step, Signal):
            step.event.set()
        elif isinstance(step, WaitFor) and not step.event.wait(self.step_timeout):
            raise TimeoutError
        return True


@contextlib.contextmanager
def scripted_peer(*scripts: Sequence[object], step_timeout: float = STEP_TIMEOUT
                  ) -> Iterator[int]:
    """``ScriptedPeer`` as a context manager yielding just the port."""
    with ScriptedPeer(*scripts, step_timeout=step_timeout) as peer:
        yield peer.port


def refused_port() -> int:
    """A loopback port nothing listens on: bound, then closed at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def wait_until(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    """Poll ``predicate`` every 10 ms until it holds or the time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


# Common openings.
SMTP_GREETING = b"220 peer.test ESMTP scripted\r\n"
POP3_GREETING = b"+OK scripted POP3 ready\r\n"
IMAP_GREETING = b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] scripted IMAP ready\r\n"


def smtp_ehlo_reply(*extensions: str) -> bytes:
    """A 250 EHLO reply advertising ``extensions``."""
    lines = ["peer.test greets you", *extensions]
    out = "".join(f"250-{line}\r\n" for line in lines[:-1]) + f"250 {lines[-1]}\r\n"
    return out.encode()
