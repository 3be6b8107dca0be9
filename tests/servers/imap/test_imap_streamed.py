"""A big message's whole text goes out from disk in chunks (servers.imap.streamed): the
bytes are the ones the in-memory FETCH renderer gives, byte for byte."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.imap import selected
from mailtalk.servers.imap.streamed import CHUNK, STREAM_ABOVE

# LF and CRLF lines, a bare CR, a CR right at a read boundary before its LF, a NUL: what
# the streamed literal has to turn into CRLF and 0x80 exactly as to_crlf/no_nul do.
HEAD = b"From: a@example.test\nSubject: big\r\n\n"
TAIL = b"\rbare CR\nNUL \x00 here\r\nlast line without an end"


def message() -> bytes:
    filler = b"z" * (CHUNK - len(HEAD) - 1) + b"\r\n"  # the CR ends the first read
    body = (b"a line of the body\n" * ((STREAM_ABOVE + CHUNK) // 19))
    return HEAD + filler + body + TAIL


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, imap=0, users=[("alice", "secret")]) as running:
        new = tmp_path / "mail" / "alice" / "Maildir" / "new"
        new.mkdir(parents=True, exist_ok=True)
        for number in (1, 2):
            (new / f"170000000{number}.big{number}.test").write_bytes(message())
        fetch(running.port("imap"), b"c NOOP")  # a first session claims \\Recent
        yield running


def fetch(port: int, command: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"a LOGIN alice secret\r\nb SELECT INBOX\r\n" + command + b"\r\n")
        data = b""
        while b"\r\nc OK" not in data and b"\r\nc NO" not in data:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    start = data.index(b"\r\n", data.index(b"b OK")) + 2
    return data[start:]


@pytest.mark.parametrize(
    "items",
    [b"BODY.PEEK[]", b"(UID RFC822.SIZE BODY.PEEK[] FLAGS INTERNALDATE)", b"(BODY.PEEK[] UID)"],
)
@pytest.mark.parametrize("verb", [b"FETCH", b"UID FETCH"])
def test_streamed_fetch_is_byte_for_byte_the_rendered_one(
    servers: RunningServers, monkeypatch: pytest.MonkeyPatch, verb: bytes, items: bytes
) -> None:
    command = b"c " + verb + b" 1:2 " + items
    streamed = fetch(servers.port("imap"), command)
    monkeypatch.setattr(selected, "STREAM_ABOVE", 1 << 62)  # every message rendered
    rendered = fetch(servers.port("imap"), command)
    assert streamed == rendered
    assert b"\x00" not in streamed and b"NUL \x80 here" in streamed


def test_streamed_rfc822_sets_seen_as_the_rendered_one(
    servers: RunningServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    streamed = fetch(servers.port("imap"), b"c FETCH 1 RFC822")
    monkeypatch.setattr(selected, "STREAM_ABOVE", 1 << 62)
    rendered = fetch(servers.port("imap"), b"c FETCH 2 RFC822")
    assert streamed.replace(b"* 1 FETCH", b"* 2 FETCH") == rendered
    assert rendered.split(b"\r\n")[-3].endswith(b" FLAGS (\\Seen))")
