"""What the journal tests share: a raw line client, reading the journal, the secrets.

The servers write their journal from their own thread; :func:`wait_event` polls the
file until the event looked for is there (a close comes after the client's last read).
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import re
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.journal import Journal, read_events

USER = "alice"
DOMAIN = "example.test"
PASSWORD = "pw4journalTest"  # distinctive, so a grep of the journal cannot miss it
TIMEOUT = 10.0

SMTP_REPLY = re.compile(rb"(?:^|\n)\d{3} [^\n]*\n\Z")
SMTP_CONTINUE = re.compile(rb"(?:^|\n)(?:\d{3} |334 )[^\n]*\n\Z")
POP3_STATUS = re.compile(rb"(?:^|\n)(?:\+OK|-ERR|\+ )[^\n]*\n\Z")


def secret_forms(user: str = USER, password: str = PASSWORD) -> list[bytes]:
    """The password as it may travel: plain, base64 alone (AUTH LOGIN), in a PLAIN blob."""
    forms = [password, base64.b64encode(password.encode()).decode()]
    for authzid in ("", user):
        blob = f"{authzid}\0{user}\0{password}".encode()
        forms.append(base64.b64encode(blob).decode())
    return [form.encode() for form in forms]


class Line:
    """A raw client: send lines, read until the answer is complete (a regex on the end)."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.sock: socket.socket | ssl.SSLSocket = socket.create_connection(
            (host, port), timeout=TIMEOUT
        )
        self.buffer = b""

    def read(self, done: re.Pattern[bytes] | bytes) -> str:
        if isinstance(done, bytes):  # a line starting with these bytes ends the answer
            done = re.compile(rb"(?:^|\n)" + re.escape(done) + rb"[^\n]*\n\Z")
        pattern = done
        while not pattern.search(self.buffer):
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; got {self.buffer!r}")
            self.buffer += chunk
        text, self.buffer = self.buffer.decode("utf-8", "replace"), b""
        return text

    def send(self, line: str | bytes) -> None:
        data = line.encode() if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")

    def ask(self, line: str | bytes, done: re.Pattern[bytes] | bytes) -> str:
        self.send(line)
        return self.read(done)

    def starttls(self, cafile: Path, hostname: str = "localhost") -> None:
        context = ssl.create_default_context(cafile=str(cafile))
        assert not isinstance(self.sock, ssl.SSLSocket)
        self.sock = context.wrap_socket(self.sock, server_hostname=hostname)

    def close(self) -> None:
        self.sock.close()


def matches(event: dict[str, Any], fields: dict[str, Any]) -> bool:
    return all(event.get(key) == value for key, value in fields.items())


def events(path: Path, **fields: Any) -> list[dict[str, Any]]:
    """The journal's events with these field values."""
    return [event for event in read_events(path) if matches(event, fields)]


def wait_for(condition: Callable[[], Any], timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {condition}")
        time.sleep(0.02)


def wait_event(path: Path, **fields: Any) -> dict[str, Any]:
    """The first event with these field values, once the servers have written it."""
    found: list[dict[str, Any]] = wait_for(lambda: events(path, **fields))
    return found[0]


def session_events(path: Path, server: str, session: int) -> list[dict[str, Any]]:
    return events(path, server=server, session=session)


def make_tls_dir(root: Path) -> Path:
    """Certificates made once (key generation is slow), to copy into every root."""
    with run_servers(root, smtp=0):
        pass
    return root / "tls"


def copy_tls(tls_dir: Path, root: Path) -> None:
    if not (root / "tls").exists():
        shutil.copytree(tls_dir, root / "tls")


Start = Callable[..., tuple["RunningServers", Path]]


@contextlib.contextmanager
def journalled(tmp_path: Path, tls_dir: Path) -> Iterator[Start]:
    """``start(**options)``: servers (in ``tmp_path/root``, then root1, root2...; alice a
    user of example.test) writing ``tmp_path/journal.jsonl``, stopped on exit; it
    returns (servers, path)."""
    roots = itertools.count()
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> tuple[RunningServers, Path]:
            number = next(roots)
            root = tmp_path / (f"root{number}" if number else "root")
            copy_tls(tls_dir, root)
            path = tmp_path / "journal.jsonl"
            journal = Journal(path)
            stack.callback(journal.close)
            options.setdefault("users", [(USER, PASSWORD)])
            options.setdefault("domains", [DOMAIN])
            servers = stack.enter_context(run_servers(root, journal=journal, **options))
            return servers, path

        yield start
