"""The reference POP3 server (``mailtalk serve --pop3``) over real sockets.

Byte-exact tests use a raw socket (:class:`Pop`), so what is checked is what went
over the wire; :mod:`poplib` is used where a real client library is the point.
Every server runs through the public API, :func:`mailtalk.servers.api.run_servers`.
Messages are put in the Maildir as files, the way any MDA would, so the expected
wire form can be computed from the stored bytes.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import poplib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.store.mailbox import MailboxError, MailStore

USERS = [("alice", "secret"), ("bob", "hunter2")]
STATUS_LINE = re.compile(rb"^(\+OK|-ERR)( [^\r\n]*)?\r\n\Z")
APOP_TIMESTAMP = re.compile(r"<[^<>\s@]*@[^<>\s]*>")
TIMEOUT = 5.0

SIMPLE = b"From: bob@example.org\nTo: alice@example.test\nSubject: hello\n\nline one\nline two\n"


# ---------------------------------------------------------------------------
# A raw POP3 client
# ---------------------------------------------------------------------------


class Closed(Exception):
    """The server closed the connection before a whole answer came."""


class Pop:
    """A byte-exact POP3 client on a plain socket (TLS after :meth:`stls`, or from the start)."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        timeout: float = TIMEOUT,
        context: ssl.SSLContext | None = None,
        rcvbuf: int | None = None,
    ) -> None:
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        try:
            sock.connect((host, port))
        except OSError:
            sock.close()
            raise
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname="localhost")
        self.sock: socket.socket = sock
        self.buffer = b""
        self.greeting = self.line()
        assert self.greeting.startswith(b"+OK "), self.greeting

    @property
    def timestamp(self) -> str:
        match = APOP_TIMESTAMP.search(self.greeting.decode())
        assert match, self.greeting
        return match.group(0)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def __enter__(self) -> Pop:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        try:
            chunk = self.sock.recv(1 << 20)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            raise Closed(self.buffer)
        self.buffer += chunk

    def line(self) -> bytes:
        """The next line, CRLF included."""
        while b"\r\n" not in self.buffer:
            self._fill()
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def status(self) -> bytes:
        line = self.line()
        assert STATUS_LINE.match(line), f"not a status line: {line!r}"
        return line

    def body(self) -> bytes:
        """A multi-line body as sent (still dot-stuffed), without the final ``.`` line."""
        while True:
            if self.buffer.startswith(b".\r\n"):
                self.buffer = self.buffer[3:]
                return b""
            end = self.buffer.find(b"\r\n.\r\n")
            if end >= 0:
                body, self.buffer = self.buffer[: end + 2], self.buffer[end + 5 :]
                return body
            self._fill()

    def cmd(self, line: str | bytes) -> bytes:
        """Send a one-line command; its status line."""
        data = line if isinstance(line, bytes) else line.encode()
        self.send(data + b"\r\n")
        return self.status()

    def multi(self, line: str | bytes) -> tuple[bytes, bytes | None]:
        """Send a command answered multi-line on +OK: (status line, body or None)."""
        status = self.cmd(line)
        return status, (self.body() if status.startswith(b"+OK") else None)

    def login(self, user: str = "alice", password: str = "secret") -> bytes:
        assert self.cmd(f"USER {user}") == b"+OK\r\n"
        answer = self.cmd(f"PASS {password}")
        assert answer.startswith(b"+OK Logged in: "), answer
        return answer

    def stls(self, cafile: Path) -> None:
        assert self.cmd("STLS") == b"+OK Begin TLS negotiation now.\r\n"
        assert not self.buffer, f"bytes before the TLS handshake: {self.buffer!r}"
        context = ssl.create_default_context(cafile=str(cafile))
        self.sock = context.wrap_socket(self.sock, server_hostname="localhost")

    def capa(self) -> list[str]:
        status, body = self.multi("CAPA")
        assert status == b"+OK Capability list follows\r\n", status
        assert body is not None
        return body.decode().split("\r\n")[:-1]

    def is_closed(self, timeout: float = 10.0) -> bool:
        """True if the server closes the connection (anything it still sends is kept)."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except TimeoutError:
            return False
        except (ConnectionResetError, BrokenPipeError):
            return True


def b64(data: bytes | str) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def apop_digest(timestamp: str, secret: str) -> str:
    return hashlib.md5((timestamp + secret).encode()).hexdigest()


# ---------------------------------------------------------------------------
# Expected wire forms
# ---------------------------------------------------------------------------


def crlf(stored: bytes) -> bytes:
    """The message with CRLF line ends (what LIST, STAT and RFC822 sizes count)."""
    return stored.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def wire(stored: bytes) -> bytes:
    """What RETR sends for a stored message: CRLF lines, leading dots doubled."""
    text = crlf(stored)
    if text and not text.endswith(b"\r\n"):
        text += b"\r\n"  # the last line must be ended before the final "."
    lines = text.split(b"\r\n")[:-1]
    return b"".join((b"." + x if x.startswith(b".") else x) + b"\r\n" for x in lines)


def top_wire(stored: bytes, n: int) -> bytes:
    """What TOP msg n sends: the header, the blank line, then n body lines."""
    full = wire(stored)
    head, sep, body = full.partition(b"\r\n\r\n")
    if not sep:
        return full
    lines = body.split(b"\r\n")[:-1] if body else []
    return head + b"\r\n\r\n" + b"".join(x + b"\r\n" for x in lines[:n])


# ---------------------------------------------------------------------------
# Servers and messages
# ---------------------------------------------------------------------------


class ErrorRecords(logging.Handler):
    """The errors the servers log: an exception in a protocol callback is logged, not raised."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def server_errors() -> Iterator[ErrorRecords]:
    """Every test: the servers logged no error (no crash inside a session)."""
    handler = ErrorRecords()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
    texts = [record.getMessage() for record in handler.records]
    assert not texts, f"the servers logged errors: {texts}"


@contextlib.contextmanager
def pop3_servers(root: Path, **options: Any) -> Iterator[RunningServers]:
    options.setdefault("users", USERS)
    options.setdefault("domains", ["example.test"])
    options.setdefault("smtp", None)
    options.setdefault("pop3", 0)
    options.setdefault("pop3s", 0)
    with run_servers(root, **options) as servers:
        yield servers


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[RunningServers]:
    with pop3_servers(tmp_path / "root") as running:
        yield running


_sequence = iter(range(1, 1 << 30))


def deliver(servers: RunningServers | Path, data: bytes, user: str = "alice") -> str:
    """Put a message in ``user``'s new/ as an MDA would; returns its name (the UIDL)."""
    root = servers if isinstance(servers, Path) else servers.root
    new = Path(root) / "mail" / user / "Maildir" / "new"
    for sub in ("tmp", "new", "cur"):
        (new.parent / sub).mkdir(parents=True, exist_ok=True)
    n = next(_sequence)
    name = f"{1700000000 + n}.M{n:06d}P{os.getpid()}.pop3test"
    (new.parent / "tmp" / name).write_bytes(data)
    os.rename(new.parent / "tmp" / name, new / name)
    return name


def stored(servers: RunningServers, user: str = "alice") -> list[str]:
    """The bases of the message files in new/ and cur/."""
    maildir = Path(servers.root) / "mail" / user / "Maildir"
    names = []
    for sub in ("new", "cur"):
        if (maildir / sub).is_dir():
            names += [p.name.split(":")[0] for p in (maildir / sub).iterdir()]
    return sorted(names)


def pop(servers: RunningServers, **kwargs: Any) -> Pop:
    return Pop(servers.port("pop3"), **kwargs)


def tls_context(servers: RunningServers) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(servers.cafile))


def lock_is_free(servers: RunningServers, user: str = "alice", wait: float = 10.0) -> bool:
    """Whether the maildrop lock can be taken now (waits a little for the server to let go)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            MailStore(servers.root).lock_maildrop(user).release()
            return True
        except MailboxError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)


def login_when_free(servers: RunningServers, wait: float = 2.0) -> Pop:
    """A logged-in session, retrying while an earlier session's lock is being released."""
    deadline = time.monotonic() + wait
    while True:
        client = pop(servers)
        client.cmd("USER alice")
        answer = client.cmd("PASS secret")
        if answer.startswith(b"+OK"):
            return client
        client.close()
        assert b"[IN-USE]" in answer and time.monotonic() < deadline, answer
        time.sleep(0.02)


# ---------------------------------------------------------------------------
# Greeting, CAPA, states
# ---------------------------------------------------------------------------


def test_greeting_has_an_apop_timestamp(servers: RunningServers) -> None:
    with pop(servers) as client:
        assert re.fullmatch(
            rb"\+OK mailtalk POP3 server ready <\d+\.\d+@localhost>\r\n", client.greeting
        )
    with pop(servers) as other:
        assert other.timestamp != client.timestamp


def test_capa_before_login(servers: RunningServers) -> None:
    with pop(servers) as client:
        capa = client.capa()
        for tag in ("TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER", "STLS"):
            assert tag in capa, capa
        assert "SASL PLAIN SCRAM-SHA-256 CRAM-MD5" in capa  # users given in clear
        assert not any(x.startswith("LOGIN-DELAY") for x in capa)
        assert client.cmd("QUIT") == b"+OK Bye\r\n"
        assert client.is_closed()


def test_capa_after_login_has_no_stls(servers: RunningServers) -> None:
    with pop(servers) as client:
        client.login()
        capa = client.capa()
        assert "STLS" not in capa
        assert {"TOP", "UIDL", "RESP-CODES", "PIPELINING"} <= set(capa)
        assert client.cmd("STLS").startswith(b"-ERR STLS is not valid in the TRANSACTION")


def test_capa_after_stls_has_no_stls(servers: RunningServers) -> None:
    with pop(servers) as client:
        client.stls(servers.cafile)
        capa = client.capa()
        assert "STLS" not in capa
        assert "USER" in capa and "SASL PLAIN SCRAM-SHA-256 CRAM-MD5" in capa
        assert client.cmd("STLS") == b"-ERR TLS is already active\r\n"
        client.login()
        assert client.cmd("STAT") == b"+OK 0 0\r\n"


def test_pop3s_capa_has_no_stls(servers: RunningServers) -> None:
    with Pop(servers.port("pop3s"), context=tls_context(servers)) as client:
        assert "STLS" not in client.capa()
        assert client.cmd("STLS") == b"-ERR TLS is already active\r\n"
        client.login()


def test_transaction_commands_refused_before_login(servers: RunningServers) -> None:
    with pop(servers) as client:
        for verb in ("STAT", "LIST", "UIDL", "RETR 1", "DELE 1", "TOP 1 0", "RSET", "NOOP"):
            answer = client.cmd(verb)
            assert (
                answer
                == f"-ERR {verb.split()[0]} is not valid in the AUTHORIZATION state\r\n".encode()
            )
        assert client.cmd("PASS secret") == b"-ERR No user name: send USER first\r\n"
        assert client.cmd("USER") == b"-ERR USER needs exactly one argument: the user name\r\n"
        assert client.cmd("XYZZY") == b"-ERR Unknown command: XYZZY\r\n"
        client.login()  # still usable
        # What the AUTHORIZATION state refused, the TRANSACTION state now answers.
        assert client.cmd("NOOP") == b"+OK\r\n"


def test_authorization_commands_refused_after_login(servers: RunningServers) -> None:
    with pop(servers) as client:
        client.login()
        for verb in ("USER alice", "PASS secret", "APOP alice 0123", "AUTH PLAIN"):
            answer = client.cmd(verb)
            name = verb.split()[0]
            assert answer == f"-ERR {name} is not valid in the TRANSACTION state\r\n".encode()
        assert client.cmd("NOOP") == b"+OK\r\n"


# ---------------------------------------------------------------------------
# Logging in: USER/PASS, APOP, AUTH PLAIN
# ---------------------------------------------------------------------------


def test_user_pass(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    with pop(servers) as client:
        assert client.cmd("user alice") == b"+OK\r\n"  # verbs are case-insensitive
        size = len(crlf(SIMPLE))
        assert (
            client.cmd("PASS secret") == f"+OK Logged in: 1 messages ({size} octets)\r\n".encode()
        )
        assert client.cmd("QUIT") == b"+OK Logging out, 0 messages deleted.\r\n"
        assert client.is_closed()


def test_password_with_a_space(tmp_path: Path) -> None:
    with (
        pop3_servers(tmp_path, users=[("carol", "two words")]) as servers,
        pop(servers) as client,
    ):
        assert client.cmd("USER carol") == b"+OK\r\n"
        # RFC 1939 7 (and every server): the argument of PASS is the rest of the line.
        assert client.cmd("PASS two words").startswith(b"+OK Logged in")


def test_password_with_two_spaces(tmp_path: Path) -> None:
    with (
        pop3_servers(tmp_path, users=[("carol", "two  spaces")]) as servers,
        pop(servers) as client,
    ):
        assert client.cmd("USER carol") == b"+OK\r\n"
        assert client.cmd("PASS two  spaces").startswith(b"+OK Logged in")


def test_wrong_password_is_auth(servers: RunningServers) -> None:
    with pop(servers) as client:
        client.cmd("USER alice")
        assert client.cmd("PASS wrong") == b"-ERR [AUTH] Authentication failed.\r\n"
        # The USER is forgotten: PASS alone is not enough for a second try.
        assert client.cmd("PASS secret") == b"-ERR No user name: send USER first\r\n"
        client.login()
    with pop(servers) as client:
        client.cmd("USER nobody")
        assert client.cmd("PASS secret") == b"-ERR [AUTH] Authentication failed.\r\n"


def test_apop(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    with pop(servers) as client:
        digest = apop_digest(client.timestamp, "secret")
        answer = client.cmd(f"APOP alice {digest}")
        assert answer.startswith(b"+OK Logged in: 1 messages"), answer
        assert client.cmd("STAT") == f"+OK 1 {len(crlf(SIMPLE))}\r\n".encode()


def test_apop_uppercase_digest(servers: RunningServers) -> None:
    with pop(servers) as client:
        digest = apop_digest(client.timestamp, "secret").upper()
        assert client.cmd(f"APOP alice {digest}").startswith(b"+OK Logged in")


def test_apop_wrong_digest_and_other_timestamp(servers: RunningServers) -> None:
    with pop(servers) as first, pop(servers) as second:
        assert first.cmd(f"APOP alice {apop_digest(first.timestamp, 'wrong')}") == (
            b"-ERR [AUTH] Authentication failed.\r\n"
        )
        # A digest made for another session's timestamp is no good here (no replay).
        assert second.cmd(f"APOP alice {apop_digest(first.timestamp, 'secret')}") == (
            b"-ERR [AUTH] Authentication failed.\r\n"
        )
        assert first.cmd("APOP alice") == b"-ERR APOP needs a user name and a digest\r\n"
        answer = first.cmd(f"APOP nobody {apop_digest(first.timestamp, 'secret')}")
        assert answer.startswith(b"-ERR [AUTH] "), answer


def test_apop_digest_of_other_characters_is_a_wrong_digest(
    servers: RunningServers, caplog: pytest.LogCaptureFixture
) -> None:
    # hmac.compare_digest refuses a str with non-ASCII characters: the digest is compared
    # as bytes, so such a digest is just wrong (it was an internal error)
    with pop(servers) as client:
        answer = client.cmd("APOP alice caf\u00e9d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0d0".encode())
        assert answer == b"-ERR [AUTH] Authentication failed.\r\n", answer
        assert client.cmd("NOOP").startswith(b"-ERR")  # still talking, not logged in
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_auth_listing(servers: RunningServers) -> None:
    with pop(servers) as client:
        status, body = client.multi("AUTH")
        assert status == b"+OK\r\n"
        assert body == b"PLAIN\r\nSCRAM-SHA-256\r\nCRAM-MD5\r\n"  # users given in clear


def test_auth_plain_initial_response(servers: RunningServers) -> None:
    with pop(servers) as client:
        answer = client.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'secret')}")
        assert answer.startswith(b"+OK Logged in"), answer
        assert client.cmd("STAT") == b"+OK 0 0\r\n"


def test_auth_plain_with_authzid_equal_to_user(servers: RunningServers) -> None:
    with pop(servers) as client:
        answer = client.cmd(f"auth plain {b64('alice' + chr(0) + 'alice' + chr(0) + 'secret')}")
        assert answer.startswith(b"+OK Logged in"), answer


def test_auth_plain_continuation(servers: RunningServers) -> None:
    with pop(servers) as client:
        client.send(b"AUTH PLAIN\r\n")
        assert client.line() == b"+ \r\n"
        answer = client.cmd(b64("\0alice\0secret"))
        assert answer.startswith(b"+OK Logged in"), answer


def test_auth_plain_cancel_bad_base64_malformed(servers: RunningServers) -> None:
    with pop(servers) as client:
        client.send(b"AUTH PLAIN\r\n")
        assert client.line() == b"+ \r\n"
        assert client.cmd("*") == b"-ERR Authentication cancelled\r\n"
        client.send(b"AUTH PLAIN\r\n")
        assert client.line() == b"+ \r\n"
        assert client.cmd("!!not base64!!") == b"-ERR Invalid base64 data in the answer\r\n"
        assert client.cmd("AUTH PLAIN %%%") == b"-ERR Invalid base64 data in the answer\r\n"
        assert client.cmd(f"AUTH PLAIN {b64('alice' + chr(0) + 'secret')}") == (
            b"-ERR [AUTH] Malformed PLAIN answer\r\n"
        )
        not_utf8 = b64(b"\0alice\0\xff\xfe")
        assert client.cmd(f"AUTH PLAIN {not_utf8}") == b"-ERR [AUTH] Malformed PLAIN answer\r\n"
        assert client.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'nope')}") == (
            b"-ERR [AUTH] Authentication failed.\r\n"
        )
        assert (
            client.cmd("AUTH DIGEST-MD5")
            == b"-ERR Unsupported authentication mechanism DIGEST-MD5\r\n"
        )
        # After all that, the session still works.
        assert client.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'secret')}").startswith(
            b"+OK Logged in"
        )


def test_poplib_user_pass_apop_and_capa(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=TIMEOUT)
    try:
        capa = client.capa()
        assert {"TOP", "UIDL", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", "USER"} <= set(capa)
        assert capa["SASL"] == ["PLAIN", "SCRAM-SHA-256", "CRAM-MD5"]
        client.apop("alice", "secret")
        assert client.stat() == (1, len(crlf(SIMPLE)))
        _, lines, octets = client.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == crlf(SIMPLE)
        assert octets == len(crlf(SIMPLE))  # poplib counts the lines as sent, CRLF included
    finally:
        client.quit()


# ---------------------------------------------------------------------------
# TLS: STLS and pop3s
# ---------------------------------------------------------------------------


def test_stls_then_login(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    with pop(servers) as client:
        client.stls(servers.cafile)
        assert isinstance(client.sock, ssl.SSLSocket)
        client.login()
        assert client.multi("RETR 1")[1] == wire(SIMPLE)
        assert client.cmd("QUIT").startswith(b"+OK Logging out")


def test_stls_drops_what_was_pipelined_behind_it(servers: RunningServers) -> None:
    """RFC 2595 4 / CVE-2011-0411: plaintext after STLS is not answered, in or out of TLS."""
    with pop(servers) as client:
        client.send(b"STLS\r\nUSER alice\r\nPASS secret\r\n")
        assert client.line() == b"+OK Begin TLS negotiation now.\r\n"
        assert client.buffer == b""
        context = tls_context(servers)
        client.sock = context.wrap_socket(client.sock, server_hostname="localhost")
        # Not logged in: the injected USER/PASS were thrown away.
        assert client.cmd("STAT") == b"-ERR STAT is not valid in the AUTHORIZATION state\r\n"
        assert client.cmd("NOOP") == b"-ERR NOOP is not valid in the AUTHORIZATION state\r\n"


def test_stls_forgets_a_plaintext_user(servers: RunningServers) -> None:
    with pop(servers) as client:
        assert client.cmd("USER alice") == b"+OK\r\n"
        client.stls(servers.cafile)
        assert client.cmd("PASS secret") == b"-ERR No user name: send USER first\r\n"


def test_stls_with_a_client_that_does_not_trust_the_ca(servers: RunningServers) -> None:
    with pop(servers) as client:
        assert client.cmd("STLS").startswith(b"+OK")
        with pytest.raises(ssl.SSLCertVerificationError):
            ssl.create_default_context().wrap_socket(client.sock, server_hostname="localhost")
    with pop(servers) as client:  # the server is fine afterwards
        client.login()


def test_poplib_stls(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=TIMEOUT)
    try:
        client.stls(context=tls_context(servers))
        assert "STLS" not in client.capa()
        client.user("alice")
        client.pass_("secret")
        assert client.stat() == (1, len(crlf(SIMPLE)))
    finally:
        client.quit()


def test_poplib_pop3s(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    client = poplib.POP3_SSL(
        "127.0.0.1", servers.port("pop3s"), timeout=TIMEOUT, context=tls_context(servers)
    )
    try:
        client.user("alice")
        client.pass_("secret")
        _, lines, _ = client.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == crlf(SIMPLE)
    finally:
        client.quit()


# ---------------------------------------------------------------------------
# STAT, LIST, UIDL, RETR, TOP: byte for byte
# ---------------------------------------------------------------------------

MESSAGES = {
    "simple": SIMPLE,
    "dot-lines": b"Subject: dots\n\n.leading dot\n..two dots\n. dot space\nmiddle . dot\n",
    "only-dot-line": b"Subject: lone dot\n\nbefore\n.\nafter\n",
    "dot-last-line": b"Subject: dot at the end\n\nbody\n.\n",
    "empty-body": b"Subject: empty body\n\n",
    "crlf-stored": b"Subject: crlf\r\n\r\nstored with CRLF\r\n.dotted\r\n",
    "blank-lines": b"Subject: blanks\n\n\n\nafter blanks\n\n",
    "header-only": b"Subject: no body at all\n",
    "utf8-8bit": "Subject: caf\u00e9\n\nna\u00efve \u2603\n".encode(),
    "long-line": b"Subject: long\n\n" + b"x" * 5000 + b"\n",
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_retr_is_byte_exact(servers: RunningServers, name: str) -> None:
    data = MESSAGES[name]
    uidl = deliver(servers, data)
    with pop(servers) as client:
        client.login()
        size = len(crlf(data))
        assert client.cmd("STAT") == f"+OK 1 {size}\r\n".encode()
        assert client.cmd("LIST 1") == f"+OK 1 {size}\r\n".encode()
        assert client.multi("LIST") == (b"+OK 1 messages\r\n", f"1 {size}\r\n".encode())
        assert client.cmd("UIDL 1") == f"+OK 1 {uidl}\r\n".encode()
        status, body = client.multi("RETR 1")
        assert status == f"+OK {size} octets\r\n".encode()
        assert body == wire(data)
        # Without the dot-stuffing, the body is exactly the CRLF message LIST counted.
        unstuffed = b"".join(
            (x[1:] if x.startswith(b".") else x) + b"\r\n" for x in body.split(b"\r\n")[:-1]
        )
        assert unstuffed == crlf(data)
        assert len(unstuffed) == size


def test_retr_many_messages_in_order(servers: RunningServers) -> None:
    names = [deliver(servers, MESSAGES[key]) for key in sorted(MESSAGES)]
    with pop(servers) as client:
        client.login()
        total = sum(len(crlf(MESSAGES[key])) for key in sorted(MESSAGES))
        assert client.cmd("STAT") == f"+OK {len(names)} {total}\r\n".encode()
        status, listing = client.multi("UIDL")
        assert status == b"+OK\r\n"
        assert listing == b"".join(f"{n} {u}\r\n".encode() for n, u in enumerate(names, 1))
        status, sizes = client.multi("LIST")
        assert sizes == b"".join(
            f"{n} {len(crlf(MESSAGES[k]))}\r\n".encode() for n, k in enumerate(sorted(MESSAGES), 1)
        )
        for number, key in enumerate(sorted(MESSAGES), 1):
            assert client.multi(f"RETR {number}")[1] == wire(MESSAGES[key])


def test_retr_after_another_client_renamed_or_removed_the_file(servers: RunningServers) -> None:
    """After login another client renames one message (an IMAP session setting \\Seen)
    and removes another: RETR follows the rename, the second time too, says the removed
    one is gone, and serves the others; pipelined, the answers stay in order."""
    keys = ["dot-lines", "simple", "crlf-stored"]
    bases = [deliver(servers, MESSAGES[key]) for key in keys]
    maildir = servers.root / "mail" / "alice" / "Maildir"
    with pop(servers) as client:
        client.login()
        [first] = [p for p in maildir.glob(f"*/{bases[0]}*") if p.parent.name != "tmp"]
        first.rename(maildir / "cur" / f"{bases[0]}:2,S")
        [second] = [p for p in maildir.glob(f"*/{bases[1]}*") if p.parent.name != "tmp"]
        second.unlink()
        client.send(b"RETR 1\r\nRETR 2\r\nRETR 3\r\nRETR 1\r\n")
        for key in (keys[0], None, keys[2], keys[0]):
            if key is None:
                assert client.status() == (
                    b"-ERR [SYS/PERM] Message 2 is gone (deleted by another client?)\r\n")
                continue
            assert client.status() == f"+OK {len(crlf(MESSAGES[key]))} octets\r\n".encode()
            assert client.body() == wire(MESSAGES[key])
        assert client.cmd("NOOP") == b"+OK\r\n"


def test_retr_zero_byte_file(servers: RunningServers) -> None:
    deliver(servers, b"")
    with pop(servers) as client:
        client.login()
        assert client.cmd("LIST 1") == b"+OK 1 0\r\n"
        assert client.multi("RETR 1") == (b"+OK 0 octets\r\n", b"")


def test_retr_last_line_without_newline(servers: RunningServers) -> None:
    data = b"Subject: no final newline\n\nfirst\n.dot\nlast line"
    deliver(servers, data)
    with pop(servers) as client:
        client.login()
        _, body = client.multi("RETR 1")
        # The last line is ended with CRLF before the terminating "." line.
        assert body == b"Subject: no final newline\r\n\r\nfirst\r\n..dot\r\nlast line\r\n"


def test_size_of_a_message_without_final_newline_matches_retr(servers: RunningServers) -> None:
    deliver(servers, b"Subject: x\n\nlast line")
    with pop(servers) as client:
        client.login()
        _, body = client.multi("RETR 1")
        assert body is not None
        assert client.cmd("LIST 1") == f"+OK 1 {len(body)}\r\n".encode()


def test_retr_of_a_large_message(servers: RunningServers) -> None:
    line = b".leading dot and some text to make the line longer " * 2 + b"\n"
    data = b"Subject: big\n\n" + line * (1_300_000 // len(line)) + b"end\n"
    assert len(data) > 1_000_000
    deliver(servers, data)
    with pop(servers) as client:
        client.login()
        status, body = client.multi("RETR 1")
        assert status == f"+OK {len(crlf(data))} octets\r\n".encode()
        assert body == wire(data)
        # The session goes on normally after a big RETR.
        assert client.cmd("NOOP") == b"+OK\r\n"


def test_retr_of_a_large_message_with_poplib(servers: RunningServers) -> None:
    data = b"Subject: big\n\n" + b"0123456789abcdef" * 60 + b"\n.\n" * 2
    data += (b"x" * 70 + b"\n") * 20_000
    assert len(data) > 1_000_000
    deliver(servers, data)
    client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=TIMEOUT)
    try:
        client.user("alice")
        client.pass_("secret")
        _, lines, _ = client.retr(1)
        assert b"\r\n".join(lines) + b"\r\n" == crlf(data)
    finally:
        client.quit()


BODY = b"Subject: top\nX-Other: yes\n\nbody 1\n.body 2\nbody 3\n\nbody 5\n"


@pytest.mark.parametrize("lines", [0, 1, 2, 3, 5, 6, 100])
def test_top(servers: RunningServers, lines: int) -> None:
    deliver(servers, BODY)
    with pop(servers) as client:
        client.login()
        status, body = client.multi(f"TOP 1 {lines}")
        assert status == f"+OK {len(crlf(BODY))} octets\r\n".encode()
        assert body == top_wire(BODY, lines)
    assert top_wire(BODY, 0) == b"Subject: top\r\nX-Other: yes\r\n\r\n"
    assert top_wire(BODY, 2) == b"Subject: top\r\nX-Other: yes\r\n\r\nbody 1\r\n..body 2\r\n"


@pytest.mark.parametrize("name", sorted(MESSAGES))
@pytest.mark.parametrize("lines", [0, 1, 1000])
def test_top_of_every_message(servers: RunningServers, name: str, lines: int) -> None:
    data = MESSAGES[name]
    deliver(servers, data)
    with pop(servers) as client:
        client.login()
        assert client.multi(f"TOP 1 {lines}")[1] == top_wire(data, lines)


def test_top_and_retr_errors(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    with pop(servers) as client:
        client.login()
        bad_top = b"-ERR TOP needs a message number and a number of lines\r\n"
        assert client.cmd("TOP 1") == bad_top
        assert client.cmd("TOP 1 -1") == bad_top
        assert client.cmd("TOP 1 x") == bad_top
        assert client.cmd("TOP 2 0") == b"-ERR There's no message 2.\r\n"
        assert client.cmd("RETR") == b"-ERR RETR needs a message number\r\n"
        assert client.cmd("RETR 0") == b"-ERR There's no message 0.\r\n"
        assert client.cmd("RETR 2") == b"-ERR There's no message 2.\r\n"
        assert client.cmd("RETR x") == b"-ERR Not a message number: x\r\n"
        assert client.cmd("RETR -1") == b"-ERR Not a message number: -1\r\n"
        assert client.cmd("LIST 99") == b"-ERR There's no message 99.\r\n"
        assert client.cmd("UIDL 99") == b"-ERR There's no message 99.\r\n"
        assert client.cmd("DELE 99") == b"-ERR There's no message 99.\r\n"
        assert client.cmd("DELE") == b"-ERR DELE needs a message number\r\n"
        huge = "9" * 40
        assert client.cmd(f"RETR {huge}") == f"-ERR There's no message {huge}.\r\n".encode()


def test_empty_maildrop(servers: RunningServers) -> None:
    with pop(servers) as client:
        assert client.login() == b"+OK Logged in: 0 messages (0 octets)\r\n"
        assert client.cmd("STAT") == b"+OK 0 0\r\n"
        assert client.multi("LIST") == (b"+OK 0 messages\r\n", b"")
        assert client.multi("UIDL") == (b"+OK\r\n", b"")
        assert client.cmd("RSET") == b"+OK 0 messages\r\n"
        assert client.cmd("QUIT") == b"+OK Logging out, 0 messages deleted.\r\n"


def test_users_have_their_own_maildrops(servers: RunningServers) -> None:
    deliver(servers, SIMPLE, user="bob")
    with pop(servers) as alice, pop(servers) as bob:
        alice.login()
        bob.login("bob", "hunter2")
        assert alice.cmd("STAT") == b"+OK 0 0\r\n"
        assert bob.cmd("STAT") == f"+OK 1 {len(crlf(SIMPLE))}\r\n".encode()


def test_message_arriving_during_a_session_waits_for_the_next(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    with pop(servers) as client:
        client.login()
        deliver(servers, SIMPLE)
        assert client.cmd("STAT") == f"+OK 1 {len(crlf(SIMPLE))}\r\n".encode()
        client.cmd("QUIT")
    with login_when_free(servers) as client:
        assert client.cmd("STAT") == f"+OK 2 {2 * len(crlf(SIMPLE))}\r\n".encode()


# ---------------------------------------------------------------------------
# UIDL stability
# ---------------------------------------------------------------------------


def uidl_listing(client: Pop) -> dict[int, str]:
    status, body = client.multi("UIDL")
    assert status == b"+OK\r\n" and body is not None
    pairs = [line.split(b" ") for line in body.split(b"\r\n")[:-1]]
    return {int(n): u.decode() for n, u in pairs}


def test_uidl_stable_across_sessions_and_restarts(tmp_path: Path) -> None:
    root = tmp_path / "root"
    names = [deliver(root, SIMPLE), deliver(root, MESSAGES["dot-lines"])]
    with pop3_servers(root) as servers:
        with pop(servers) as client:
            client.login()
            first = uidl_listing(client)
            client.multi("RETR 1")  # reading moves the file to cur/: the UIDL stays
            client.cmd("QUIT")
        assert first == {1: names[0], 2: names[1]}
        for uid in first.values():
            assert 0 < len(uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uid)
        with login_when_free(servers) as client:
            assert uidl_listing(client) == first
            client.cmd("DELE 1")
            client.cmd("QUIT")
    third = deliver(root, SIMPLE)
    with pop3_servers(root) as servers, pop(servers) as client:
        client.login()
        # Message numbers shift after a deletion; UIDLs do not.
        assert uidl_listing(client) == {1: names[1], 2: third}
        assert client.cmd("UIDL 1") == f"+OK 1 {names[1]}\r\n".encode()


def test_uidl_of_a_name_that_is_not_printable_ascii(servers: RunningServers) -> None:
    maildir = Path(servers.root) / "mail" / "alice" / "Maildir"
    deliver(servers, SIMPLE)  # creates the directories
    long_name = "1700000001." + "x" * 100
    (maildir / "new" / long_name).write_bytes(SIMPLE)
    with pop(servers) as client:
        client.login()
        uids = uidl_listing(client)
        assert len(uids) == 2
        for uid in uids.values():
            assert 0 < len(uid) <= 70 and all(0x21 <= ord(c) <= 0x7E for c in uid), uid
        client.cmd("QUIT")
    with login_when_free(servers) as client:
        assert uidl_listing(client) == uids


# ---------------------------------------------------------------------------
# DELE, RSET, QUIT and the UPDATE state
# ---------------------------------------------------------------------------


def test_dele_then_quit_removes(servers: RunningServers) -> None:
    first = deliver(servers, SIMPLE)
    second = deliver(servers, MESSAGES["dot-lines"])
    with pop(servers) as client:
        client.login()
        assert client.cmd("DELE 1") == b"+OK Marked to be deleted.\r\n"
        assert client.cmd("STAT") == f"+OK 1 {len(crlf(MESSAGES['dot-lines']))}\r\n".encode()
        assert client.multi("LIST")[1] == f"2 {len(crlf(MESSAGES['dot-lines']))}\r\n".encode()
        assert client.multi("UIDL")[1] == f"2 {second}\r\n".encode()
        assert stored(servers) == sorted([first, second])  # nothing removed before QUIT
        assert client.cmd("QUIT") == b"+OK Logging out, 1 messages deleted.\r\n"
        assert client.is_closed()
    assert stored(servers) == [second]
    assert lock_is_free(servers)


def test_deleted_message_numbers_are_refused(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    deliver(servers, SIMPLE)
    with pop(servers) as client:
        client.login()
        client.cmd("DELE 2")
        for command in ("RETR 2", "DELE 2", "LIST 2", "UIDL 2", "TOP 2 0"):
            assert client.cmd(command) == b"-ERR Message 2 is deleted.\r\n", command
        assert client.multi("RETR 1")[1] == wire(SIMPLE)


def test_dele_then_dropped_connection_removes_nothing(servers: RunningServers) -> None:
    names = sorted([deliver(servers, SIMPLE), deliver(servers, SIMPLE)])
    client = pop(servers)
    client.login()
    assert client.cmd("DELE 1").startswith(b"+OK")
    assert client.cmd("DELE 2").startswith(b"+OK")
    client.close()  # no QUIT
    assert lock_is_free(servers)
    assert stored(servers) == names
    with login_when_free(servers) as again:
        assert again.cmd("STAT").startswith(b"+OK 2 ")


def test_dele_then_reset_connection_removes_nothing(servers: RunningServers) -> None:
    names = [deliver(servers, SIMPLE)]
    client = pop(servers)
    client.login()
    client.cmd("DELE 1")
    # SO_LINGER 0: the close sends a RST instead of a FIN.
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()
    assert lock_is_free(servers)
    assert stored(servers) == names


def test_dele_then_half_close_without_quit_removes_nothing(servers: RunningServers) -> None:
    names = [deliver(servers, SIMPLE)]
    with pop(servers) as client:
        client.login()
        client.cmd("DELE 1")
        client.send(b"QUI")  # an unfinished QUIT line is not a QUIT
        client.sock.shutdown(socket.SHUT_WR)
        assert client.is_closed()
    assert lock_is_free(servers)
    assert stored(servers) == names


def test_dele_then_rset(servers: RunningServers) -> None:
    names = sorted([deliver(servers, SIMPLE), deliver(servers, SIMPLE)])
    with pop(servers) as client:
        client.login()
        client.cmd("DELE 1")
        client.cmd("DELE 2")
        assert client.cmd("STAT") == b"+OK 0 0\r\n"
        assert client.cmd("RSET") == b"+OK 2 messages\r\n"
        assert client.cmd("STAT") == f"+OK 2 {2 * len(crlf(SIMPLE))}\r\n".encode()
        assert client.multi("RETR 1")[1] == wire(SIMPLE)
        assert client.cmd("QUIT") == b"+OK Logging out, 0 messages deleted.\r\n"
    assert stored(servers) == names


def test_quit_in_authorization_state_deletes_nothing(servers: RunningServers) -> None:
    names = [deliver(servers, SIMPLE)]
    with pop(servers) as client:
        assert client.cmd("QUIT") == b"+OK Bye\r\n"
        assert client.is_closed()
    assert stored(servers) == names


def test_poplib_dele_quit(servers: RunningServers) -> None:
    keep = deliver(servers, SIMPLE)
    deliver(servers, SIMPLE)
    client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=TIMEOUT)
    client.user("alice")
    client.pass_("secret")
    client.dele(2)
    assert client.quit() == b"+OK Logging out, 1 messages deleted."
    assert stored(servers) == [keep]


# ---------------------------------------------------------------------------
# The maildrop lock: [IN-USE]
# ---------------------------------------------------------------------------

IN_USE = b"-ERR [IN-USE] Unable to lock maildrop: lock busy! Is another session active?\r\n"


def test_second_session_is_in_use_until_the_first_quits(servers: RunningServers) -> None:
    with pop(servers) as first:
        first.login()
        with pop(servers) as second:
            second.cmd("USER alice")
            assert second.cmd("PASS secret") == IN_USE
            # APOP and AUTH PLAIN meet the same lock.
            assert second.cmd(f"APOP alice {apop_digest(second.timestamp, 'secret')}") == IN_USE
            assert second.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'secret')}") == IN_USE
            assert first.cmd("QUIT").startswith(b"+OK")
            assert first.is_closed()
            # The same connection may try again and succeed.
            second.cmd("USER alice")
            assert second.cmd("PASS secret").startswith(b"+OK Logged in")


def test_lock_released_when_the_first_session_drops(servers: RunningServers) -> None:
    first = pop(servers)
    first.login()
    with pop(servers) as second:
        second.cmd("USER alice")
        assert second.cmd("PASS secret") == IN_USE
    first.close()  # no QUIT
    with login_when_free(servers) as third:
        assert third.cmd("STAT") == b"+OK 0 0\r\n"


def test_lock_is_a_real_file_lock(servers: RunningServers) -> None:
    """Another program (not the server) holding the lock is seen, and the server's lock is too."""
    with pop(servers) as client:
        client.login()
        with pytest.raises(MailboxError):
            MailStore(servers.root).lock_maildrop("alice")
        client.cmd("QUIT")
    assert lock_is_free(servers)
    holder = MailStore(servers.root).lock_maildrop("alice")
    try:
        with pop(servers) as client:
            client.cmd("USER alice")
            assert client.cmd("PASS secret") == IN_USE
    finally:
        holder.release()
    with pop(servers) as client:
        client.login()


def test_lock_of_a_sigkilled_holder_is_freed(servers: RunningServers) -> None:
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import sys, time\n"
            "from mailtalk.store.mailbox import MailStore\n"
            "lock = MailStore(sys.argv[1]).lock_maildrop('alice')\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n",
            str(servers.root),
        ],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == b"locked\n"
        with pop(servers) as client:
            client.cmd("USER alice")
            assert client.cmd("PASS secret") == IN_USE
            holder.send_signal(signal.SIGKILL)
            holder.wait(timeout=TIMEOUT)
            client.cmd("USER alice")
            assert client.cmd("PASS secret").startswith(b"+OK Logged in")
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_a_store_error_at_login_is_a_clean_sys_temp(servers: RunningServers) -> None:
    # The maildrop cannot be read (here: its index is a directory, an EISDIR): one
    # clean -ERR [SYS/TEMP] line, a warning in the log but no traceback (the autouse
    # fixture fails the test on an error record), and the maildrop lock let go.
    deliver(servers, SIMPLE)
    index = servers.maildir("alice").path / "mailtalk-uidlist"
    index.mkdir()
    with pop(servers) as client:
        assert client.cmd("USER alice") == b"+OK\r\n"
        assert client.cmd("PASS secret") == (
            b"-ERR [SYS/TEMP] The mail store failed; try later\r\n")
        assert lock_is_free(servers)
    index.rmdir()
    with pop(servers) as client:
        assert client.login().startswith(b"+OK Logged in: 1 messages")


def test_lock_released_after_idle_timeout(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, idle_timeout=0.5) as servers:
        names = [deliver(servers, SIMPLE)]
        with pop(servers) as client:
            client.login()
            client.cmd("DELE 1")
            # RFC 1939 3: the autologout closes "without sending any response".
            assert client.is_closed()
            assert client.buffer == b""
        assert lock_is_free(servers)
        # RFC 1939 3: the timeout does not enter UPDATE: nothing is deleted.
        assert stored(servers) == names


def test_idle_timeout_before_login(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, idle_timeout=0.3) as servers, pop(servers) as client:
        start = time.monotonic()
        assert client.is_closed()
        assert client.buffer == b""
        assert 0.2 < time.monotonic() - start < 10  # generous: CI machines are shared


# ---------------------------------------------------------------------------
# Quota, LOGIN-DELAY, loopback policy, connection limit
# ---------------------------------------------------------------------------


def test_over_quota_is_sys_temp(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, quota_bytes=50) as servers:
        deliver(servers, SIMPLE)  # 78 bytes stored: over 50
        with pop(servers) as client:
            client.cmd("USER alice")
            assert client.cmd("PASS secret") == (
                b"-ERR [SYS/TEMP] Unable to copy mail spool file, quota exceeded\r\n"
            )
            # bob is under quota (empty)
            client.cmd("USER bob")
            assert client.cmd("PASS hunter2").startswith(b"+OK Logged in")
        assert lock_is_free(servers)


def test_under_quota_logs_in(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, quota_bytes=len(SIMPLE)) as servers, pop(servers) as client:
        deliver(servers, SIMPLE)
        client.login()


def test_login_delay(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, login_delay=30) as servers:
        with pop(servers) as client:
            assert "LOGIN-DELAY 30" in client.capa()
            client.login()
            client.cmd("QUIT")
        with pop(servers) as client:
            client.cmd("USER alice")
            answer = client.cmd("PASS secret")
            assert re.fullmatch(
                rb"-ERR \[LOGIN-DELAY\] Logged in too recently; wait (29|30) s\r\n", answer
            ), answer
            # Another user is not delayed by alice's login.
            client.cmd("USER bob")
            assert client.cmd("PASS hunter2").startswith(b"+OK Logged in")
        assert lock_is_free(servers)


def test_login_delay_passes(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, login_delay=0.3) as servers:
        with pop(servers) as client:
            client.login()
            client.cmd("QUIT")
        time.sleep(0.4)
        with pop(servers) as client:
            client.login()


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def test_plaintext_login_refused_off_loopback_without_tls(tmp_path: Path) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("no non-loopback IPv4 address on this machine")
    deliver(tmp_path, SIMPLE)
    with pop3_servers(tmp_path, listen="0.0.0.0") as servers:
        with Pop(servers.port("pop3"), host=address) as client:
            capa = client.capa()
            assert "USER" not in capa and not any(x.startswith("SASL") for x in capa)
            assert "STLS" in capa
            refused = (
                b"-ERR [AUTH] Plaintext authentication disallowed on non-secure connections\r\n"
            )
            assert client.cmd("USER alice") == refused
            assert client.cmd("PASS secret") == b"-ERR No user name: send USER first\r\n"
            assert client.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'secret')}") == refused
            # After STLS the same client may log in.
            client.stls(servers.cafile)
            assert "USER" in client.capa()
            client.login()
            client.cmd("QUIT")
        with Pop(servers.port("pop3s"), host=address, context=tls_context(servers)) as client:
            client.login()


def test_max_connections(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, max_connections=2) as servers:
        with pop(servers), pop(servers):
            sock = socket.create_connection(("127.0.0.1", servers.port("pop3")), timeout=TIMEOUT)
            with sock:
                data = b""
                while chunk := sock.recv(1000):
                    data += chunk
                assert data == b"-ERR [SYS/TEMP] Too many connections, try again later\r\n"
        deadline = time.monotonic() + 2
        while True:  # the slots come back
            try:
                with pop(servers) as client:
                    client.login()
                    break
            except (Closed, AssertionError):
                assert time.monotonic() < deadline
                time.sleep(0.02)


# ---------------------------------------------------------------------------
# Faults and scenarios
# ---------------------------------------------------------------------------

RETR_FAULT = "pop3:retr#1=-ERR [SYS/TEMP] Unable to copy mail spool file, quota exceeded"
PAM_FAULT = "pop3:pass=-ERR [AUTH] PAM authentication failed"


def test_fault_first_retr_fails_second_works(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, faults=[RETR_FAULT]) as servers:
        deliver(servers, SIMPLE)
        with pop(servers) as client:
            client.login()
            assert client.cmd("RETR 1") == (
                b"-ERR [SYS/TEMP] Unable to copy mail spool file, quota exceeded\r\n"
            )
            assert client.multi("RETR 1") == (
                f"+OK {len(crlf(SIMPLE))} octets\r\n".encode(),
                wire(SIMPLE),
            )
        assert servers.fired_faults() == [RETR_FAULT]
        with login_when_free(servers) as client:  # #1 counts per session
            assert client.cmd("RETR 1").startswith(b"-ERR [SYS/TEMP]")
        assert servers.fired_faults() == [RETR_FAULT, RETR_FAULT]


def test_fault_pass_pam(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, faults=[PAM_FAULT]) as servers, pop(servers) as client:
        client.cmd("USER alice")
        assert client.cmd("PASS secret") == b"-ERR [AUTH] PAM authentication failed\r\n"
        assert client.cmd("STAT").startswith(b"-ERR STAT is not valid in the AUTHORIZATION")
        assert servers.fired_faults() == [PAM_FAULT]
        assert lock_is_free(servers)


def test_a_negative_greeting_closes_the_connection(tmp_path: Path) -> None:
    """After -ERR as the greeting there is no session (the core is closed): the server
    hangs up, as Dovecot does, rather than leave the client talking to nobody."""
    fault = "pop3:connect=-ERR [SYS/TEMP] Too busy"
    with pop3_servers(tmp_path, faults=[fault]) as servers:
        with socket.create_connection(("127.0.0.1", servers.port("pop3")), TIMEOUT) as sock:
            sock.settimeout(TIMEOUT)
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
        assert received == b"-ERR [SYS/TEMP] Too busy\r\n"
        assert servers.fired_faults() == [fault]


def test_a_negative_greeting_ends_the_pipe_mode_client_at_once(tmp_path: Path) -> None:
    fault = "pop3:connect=-ERR [SYS/TEMP] Too busy"
    with pop3_servers(tmp_path, faults=[fault]) as servers:
        result = subprocess.run(
            [sys.executable, "-m", "mailtalk", "pop3", f"127.0.0.1:{servers.port('pop3')}",
             "--timeout", "20"],
            input=b"USER alice\nQUIT\n", capture_output=True, timeout=15,
            env={**os.environ, "NO_COLOR": "1"},
        )
    assert result.returncode == 5, result
    assert b"S: -ERR [SYS/TEMP] Too busy" in result.stdout
    assert b"C: USER" not in result.stdout
    # an explanation wider than 80 columns continues on "#   " lines: one line still
    notes = result.stderr.decode().replace("\n#   ", " ")
    assert len(notes.splitlines()) <= 3, result.stderr
    assert b"Traceback" not in result.stderr


def test_fault_pass_with_poplib(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, faults=[PAM_FAULT]) as servers:
        client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=TIMEOUT)
        try:
            client.user("alice")
            with pytest.raises(poplib.error_proto, match=r"\[AUTH\] PAM authentication failed"):
                client.pass_("secret")
        finally:
            client.quit()


def test_fault_list_disconnect_deletes_nothing(tmp_path: Path) -> None:
    rule = "pop3:list=disconnect"
    with pop3_servers(tmp_path, faults=[rule]) as servers:
        names = [deliver(servers, SIMPLE)]
        with pop(servers) as client:
            client.login()
            client.cmd("DELE 1")
            client.send(b"LIST\r\n")
            assert client.is_closed()
            assert client.buffer == b""
        assert servers.fired_faults() == [rule]
        assert lock_is_free(servers)
        assert stored(servers) == names


def test_fault_delay(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, faults=["pop3:stat=delay 300ms"]) as servers, pop(servers) as c:
        c.login()
        start = time.monotonic()
        c.send(b"STAT\r\nNOOP\r\n")
        assert c.status() == b"+OK 0 0\r\n"
        assert c.status() == b"+OK\r\n"
        assert 0.25 < time.monotonic() - start < 2


def test_scenario_bad_password(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, scenarios=["bad-password"]) as servers, pop(servers) as client:
        client.cmd("USER alice")
        assert client.cmd("PASS secret") == (
            b'-ERR [AUTH] Password supplied for "alice" is incorrect.\r\n'
        )
        assert client.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'secret')}") == (
            b"-ERR [AUTH] Authentication failed.\r\n"
        )
        fired = servers.fired_faults()
        assert fired == [
            'pop3:pass=-ERR [AUTH] Password supplied for "{user}" is incorrect.',
            "pop3:auth=-ERR [AUTH] Authentication failed.",
        ]


def test_scenario_bad_password_refuses_apop_too(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, scenarios=["bad-password"]) as servers, pop(servers) as client:
        answer = client.cmd(f"APOP alice {apop_digest(client.timestamp, 'secret')}")
        assert answer.startswith(b"-ERR [AUTH]"), answer


def test_scenario_lock_busy(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, scenarios=["lock-busy"]) as servers, pop(servers) as client:
        client.cmd("USER alice")
        assert client.cmd("PASS secret") == IN_USE
        client.cmd("USER bob")
        assert client.cmd("PASS hunter2") == IN_USE
        assert client.cmd(f"APOP alice {apop_digest(client.timestamp, 'secret')}") == IN_USE
        assert servers.fired_faults() == []
        assert not lock_is_free(servers, wait=0)


def test_scenario_lock_busy_lets_go_when_the_servers_stop(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, scenarios=["lock-busy"]) as servers:
        assert not lock_is_free(servers, wait=0)
    assert lock_is_free(servers, wait=0.5)


def test_scenario_quota_exceeded(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, scenarios=["quota-exceeded"]) as servers, pop(servers) as client:
        deliver(servers, SIMPLE)
        client.cmd("USER alice")
        assert client.cmd("PASS secret") == (
            b"-ERR [SYS/TEMP] Unable to copy mail spool file, quota exceeded\r\n"
        )
        # An empty maildrop is within even a 1-byte quota.
        client.cmd("USER bob")
        assert client.cmd("PASS hunter2").startswith(b"+OK Logged in")


def test_scenario_disk_full(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, scenarios=["disk-full"]) as servers, pop(servers) as client:
        client.cmd("USER alice")
        assert client.cmd("PASS secret") == (
            b"-ERR [SYS/TEMP] Unable to copy mail spool file: no space left on device\r\n"
        )
        assert servers.fired_faults() == [
            "pop3:pass=-ERR [SYS/TEMP] Unable to copy mail spool file: no space left on device"
        ]


def test_scenario_disk_full_also_for_auth_plain(tmp_path: Path) -> None:
    with pop3_servers(tmp_path, scenarios=["disk-full"]) as servers, pop(servers) as client:
        answer = client.cmd(f"AUTH PLAIN {b64(chr(0) + 'alice' + chr(0) + 'secret')}")
        assert answer.startswith(b"-ERR [SYS/TEMP]"), answer


# ---------------------------------------------------------------------------
# Pipelining, long lines, garbage
# ---------------------------------------------------------------------------


def test_pipelining_everything_in_one_write(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    deliver(servers, MESSAGES["dot-lines"])
    with pop(servers) as client:
        client.send(
            b"CAPA\r\nUSER alice\r\nPASS secret\r\nSTAT\r\nLIST\r\nUIDL 2\r\nRETR 1\r\n"
            b"TOP 2 1\r\nDELE 1\r\nNOOP\r\nRSET\r\nDELE 2\r\nQUIT\r\n"
        )
        assert client.status() == b"+OK Capability list follows\r\n"
        assert b"PIPELINING\r\n" in client.body()
        assert client.status() == b"+OK\r\n"
        assert client.status().startswith(b"+OK Logged in: 2 messages")
        assert client.status().startswith(b"+OK 2 ")
        assert client.status() == b"+OK 2 messages\r\n"
        assert client.body().count(b"\r\n") == 2
        assert client.status().startswith(b"+OK 2 ")
        assert client.status().endswith(b" octets\r\n")
        assert client.body() == wire(SIMPLE)
        assert client.status().endswith(b" octets\r\n")
        assert client.body() == top_wire(MESSAGES["dot-lines"], 1)
        assert client.status() == b"+OK Marked to be deleted.\r\n"
        assert client.status() == b"+OK\r\n"
        assert client.status() == b"+OK 2 messages\r\n"
        assert client.status() == b"+OK Marked to be deleted.\r\n"
        assert client.status() == b"+OK Logging out, 1 messages deleted.\r\n"
        assert client.is_closed()
        assert client.buffer == b""
    assert len(stored(servers)) == 1


def test_pipelining_auth_plain_continuation(servers: RunningServers) -> None:
    with pop(servers) as client:
        client.send(b"AUTH PLAIN\r\n" + b64("\0alice\0secret").encode() + b"\r\nSTAT\r\n")
        assert client.line() == b"+ \r\n"
        assert client.status().startswith(b"+OK Logged in")
        assert client.status() == b"+OK 0 0\r\n"


def test_pipelining_byte_by_byte(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    with pop(servers) as client:
        for byte in b"USER alice\r\nPASS secret\r\nRETR 1\r\n":
            client.send(bytes([byte]))
        assert client.status() == b"+OK\r\n"
        assert client.status().startswith(b"+OK Logged in")
        client.status()
        assert client.body() == wire(SIMPLE)


def test_commands_after_quit_are_not_answered(servers: RunningServers) -> None:
    with pop(servers) as client:
        client.login()
        client.send(b"QUIT\r\nNOOP\r\nSTAT\r\n")
        assert client.status().startswith(b"+OK Logging out")
        assert client.is_closed()
        assert client.buffer == b""


def test_lf_only_line_ends_are_accepted(servers: RunningServers) -> None:
    with pop(servers) as client:
        client.send(b"USER alice\nPASS secret\nSTAT\n")
        assert client.status() == b"+OK\r\n"
        assert client.status().startswith(b"+OK Logged in")
        assert client.status() == b"+OK 0 0\r\n"


def test_too_long_command_line(servers: RunningServers) -> None:
    with pop(servers) as client:
        assert client.cmd(b"USER " + b"a" * 300) == b"-ERR Command line too long\r\n"
        assert client.cmd(b"X" * 100_000) == b"-ERR Command line too long\r\n"
        # 253 octets + CRLF = 255: the RFC 2449 limit is still fine.
        assert client.cmd(b"NOOP" + b" " * 249) == (
            b"-ERR NOOP is not valid in the AUTHORIZATION state\r\n"
        )
        assert client.cmd(b"NOOP" + b" " * 250) == b"-ERR Command line too long\r\n"
        client.login()


def test_garbage_and_nul_bytes(servers: RunningServers) -> None:
    with pop(servers) as client:
        for garbage in (b"\x00", b"\x00USER alice", b"\xff\xfe\xfd", b"USER \x00alice", b"", b" "):
            answer = client.cmd(garbage)
            assert answer.startswith(b"-ERR") or answer == b"+OK\r\n", (garbage, answer)
        client.send(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(14, 256)) + b"\r\n"
        )
        client.status()  # the junk line is answered with -ERR
        client.login()  # a TLS ClientHello and other junk did not derail the session
        assert client.cmd("STAT") == b"+OK 0 0\r\n"


def test_garbage_then_a_tls_client_hello_on_the_plain_port(servers: RunningServers) -> None:
    sock = socket.create_connection(("127.0.0.1", servers.port("pop3")), timeout=TIMEOUT)
    with sock, pytest.raises((ssl.SSLError, OSError)):
        tls_context(servers).wrap_socket(sock, server_hostname="localhost")
    with pop(servers) as client:
        client.login()


def test_control_bytes_are_not_echoed(servers: RunningServers) -> None:
    with pop(servers) as client:
        answer = client.cmd(b"\x00\x1b[31mHELLO\x07")
        assert not re.search(rb"[\x00-\x1f\x7f]", answer[:-2]), answer


def test_connection_closed_mid_command(servers: RunningServers) -> None:
    for partial in (b"USER ali", b"AUTH PLAIN\r\n", b"RETR 1\r\n", b"STLS\r\n"):
        client = pop(servers)
        if partial.startswith(b"RETR"):
            client.login()
        client.send(partial)
        client.close()
    with login_when_free(servers) as client:
        assert client.cmd("NOOP") == b"+OK\r\n"


def test_client_disconnects_during_a_large_retr(servers: RunningServers) -> None:
    deliver(servers, b"Subject: big\n\n" + b"y" * 200 + b"\n" * 1 + (b"z" * 998 + b"\n") * 3000)
    client = pop(servers)
    client.login()
    client.send(b"RETR 1\r\n")
    client.sock.recv(1000)
    client.close()
    assert lock_is_free(servers)
    with login_when_free(servers) as again:
        assert again.cmd("STAT").startswith(b"+OK 1 ")


# ---------------------------------------------------------------------------
# Hypothesis: random sessions
# ---------------------------------------------------------------------------

VERBS = [
    "USER", "PASS", "APOP", "AUTH", "CAPA", "QUIT", "STAT", "LIST", "RETR", "DELE",
    "NOOP", "RSET", "TOP", "UIDL", "UTF8", "LANG", "XTND", "",
]  # fmt: skip
ARGUMENT = st.one_of(
    st.sampled_from(
        ["1", "2", "3", "0", "-1", "99999999999", "alice", "secret", "PLAIN", "*", "="]
    ),
    st.text(
        alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]),
        max_size=20,
    ),
)
COMMAND_LINE = st.one_of(
    st.builds(
        lambda verb, args, lower: " ".join([verb.lower() if lower else verb, *args]).encode(),
        st.sampled_from(VERBS),
        st.lists(ARGUMENT, max_size=3),
        st.booleans(),
    ),
    st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
)


def _multiline(line: bytes, ok: bool) -> bool:
    words = line.decode("utf-8", "backslashreplace").split()
    if not ok or not words:
        return False
    verb = words[0].upper()
    if verb in ("CAPA", "RETR", "TOP"):
        return True
    return verb in ("LIST", "UIDL", "AUTH") and len(words) == 1


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=st.lists(COMMAND_LINE, max_size=15), login=st.booleans())
def test_random_sessions_never_break_the_server(
    hypothesis_servers: RunningServers, lines: list[bytes], login: bool
) -> None:
    servers = hypothesis_servers
    client = pop(servers, timeout=3)
    try:
        if login:
            client.cmd("USER alice")
            client.cmd("PASS secret")  # +OK, or [IN-USE] while the last session lets go
        sasl = False
        for line in lines:
            words = line.decode("utf-8", "backslashreplace").split()
            verb = words[0].upper() if words else ""
            if verb in ("STLS", "QUIT") and not sasl:
                continue
            client.send(line + b"\r\n")
            status = client.line()
            if status.startswith(b"+ ") or status == b"+\r\n":
                sasl = True  # the next line is the SASL answer
                continue
            assert STATUS_LINE.match(status), (line, status)
            too_long = len(line) + 2 > 255
            if not sasl and not too_long and _multiline(line, status.startswith(b"+OK")):
                body = client.body()
                for body_line in body.split(b"\r\n")[:-1]:
                    assert not body_line.startswith(b".") or body_line.startswith(b".."), body
            sasl = False
        client.send(b"QUIT\r\n")
        assert client.is_closed()
        for rest in client.buffer.split(b"\r\n")[:-1]:
            assert STATUS_LINE.match(rest + b"\r\n") or rest == b"+ ", client.buffer
    finally:
        client.close()
    # A fresh connection still works.
    with pop(servers) as fresh:
        assert fresh.cmd("USER bob") == b"+OK\r\n"
        assert fresh.cmd("PASS hunter2").startswith(b"+OK Logged in")
        assert fresh.cmd("STAT") == b"+OK 0 0\r\n"


@pytest.fixture(scope="module")
def hypothesis_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServers]:
    root = tmp_path_factory.mktemp("pop3-hypothesis")
    for key in sorted(MESSAGES):
        deliver(root, MESSAGES[key])
    with pop3_servers(root) as servers:
        yield servers


def test_no_leftover_files_in_tmp(servers: RunningServers) -> None:
    deliver(servers, SIMPLE)
    with pop(servers) as client:
        client.login()
        client.cmd("DELE 1")
        client.cmd("QUIT")
        assert client.is_closed()
    maildir = Path(servers.root) / "mail" / "alice" / "Maildir"
    assert list((maildir / "tmp").iterdir()) == []
    assert stored(servers) == []
    shutil.rmtree(maildir / "cur")  # a store without cur/ is recreated on login
    with login_when_free(servers) as client:
        assert client.cmd("STAT") == b"+OK 0 0\r\n"


def test_idle_timeout_never_lands_inside_a_retr_body(tmp_path: Path) -> None:
    """A slow reader of a big RETR is not idle: no autologout inside (or right after) the body."""
    data = b"Subject: big\n\n" + (b"z" * 99 + b"\n") * 100_000
    with pop3_servers(tmp_path, idle_timeout=0.5) as servers:
        deliver(servers, data)
        # A small fixed receive window: the 10 MB cannot all sit in the kernel's buffers.
        with pop(servers, rcvbuf=65536) as client:
            client.login()
            client.send(b"RETR 1\r\n")
            time.sleep(1.0)  # a slow reader: the server's buffers fill up
            client.is_closed(timeout=3)
            received = client.buffer
        status, _, body = received.partition(b"\r\n")
        assert status == f"+OK {len(crlf(data))} octets".encode()
        if body.endswith(b"\r\n.\r\n"):  # the message came whole: it must be the message
            assert body == wire(data) + b".\r\n"
        assert b"-ERR" not in body, "an -ERR line inside (or after) the message body"


@pytest.mark.parametrize("offset", [-2, -1, 0, 1])
def test_retr_across_the_read_chunk_boundary(servers: RunningServers, offset: int) -> None:
    """CRLF split between two 64 KiB reads, and a dot line starting right at a read boundary."""
    head = b"Subject: boundary\r\n\r\n"
    filler = b"f" * (65536 - len(head) + offset - 2)
    data = head + filler + b"\r\n.dot at the boundary\r\n.\r\n" + b"g" * 70000 + b"\r\n.end\r\n"
    deliver(servers, data)
    with pop(servers) as client:
        client.login()
        assert client.multi("RETR 1") == (f"+OK {len(data)} octets\r\n".encode(), wire(data))
        assert client.multi("TOP 1 2")[1] == top_wire(data, 2)


@pytest.mark.parametrize("argument", ["²", "1" * 5000, "٣"])
def test_message_numbers_that_are_not_ascii_numbers(servers: RunningServers, argument: str) -> None:
    """str.isdigit() says yes to "²" and "٣"; int() does not: an -ERR, not a crash."""
    deliver(servers, SIMPLE)
    with pop(servers) as client:
        client.login()
        for command in (f"LIST {argument}", f"RETR {argument}", f"TOP 1 {argument}"):
            assert client.cmd(command).startswith(b"-ERR")
        assert client.cmd("NOOP").startswith(b"+OK")
