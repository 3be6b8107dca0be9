"""IMAP BINARY (RFC 3516) and SEARCH CHARSET: mailtalk's server beside Dovecot, and imapclient.

The same requests go to the real Dovecot (``real_servers``, on a message this test
APPENDs there and deletes again) and to mailtalk's server, and the answers are
compared: the decoded bytes, BINARY.SIZE, the response codes (UNKNOWN-CTE,
PARSE, BADCHARSET), which messages a SEARCH finds. Where mailtalk differs on
purpose it is said next to the request: a decoded part without a NUL goes out as
``{n}``, not Dovecot's ``~{n}`` (RFC 3516 4.2: it SHOULD be a plain string), and
BADCHARSET lists the charsets mailtalk knows.

imapclient (a Python IMAP library, a client that found the bug: it read
``b'~{4}'`` for BINARY.PEEK while BINARY was not advertised) runs against
mailtalk's server only.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import imapclient
import pytest

from mailtalk.servers.api import RunningServers, run_servers
from tests.interop.conftest import RealServers

TIMEOUT = 10.0
_LITERAL_AT_END = re.compile(rb"(~?)\{(\d+)\}\r\n\Z")
_FETCH_ITEM = re.compile(rb"(BINARY(?:\.SIZE)?\[[0-9.]*\](?:<\d+>)?) (~?\{\d+\}|NIL|\"\"|\d+)")

NESTED = (b"From: a@b\r\nSubject: =?ISO-8859-1?Q?K=E4se?= mp\r\nMIME-Version: 1.0\r\n"
          b"Content-Type: multipart/mixed; boundary=XX\r\n\r\npre\r\n"
          b"--XX\r\nContent-Type: text/plain; charset=utf-8\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe K=C3=A4se\r\n"
          b"--XX\r\nContent-Type: application/octet-stream\r\n"
          b"Content-Transfer-Encoding: base64\r\n\r\nAAECAw==\r\n"
          b"--XX\r\nContent-Type: message/rfc822\r\n\r\n"
          b"Subject: in\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8=\r\n"
          b"--XX\r\nContent-Type: text/plain\r\n\r\nplain \xe2\x82\xac\r\n"
          b"--XX--\r\n")
NUL = b"From: a@b\r\nSubject: nul\r\n\r\nab\x00cd\r\n"
UNKNOWN = (b"From: a@b\r\nContent-Type: application/octet-stream\r\n"
           b"Content-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n")
CORRUPT = (b"From: a@b\r\nContent-Type: text/plain\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\nSGVs*bG8=\r\n")


class Session:
    """A byte-level IMAP session: each command's responses, literals resolved."""

    def __init__(self, host: str, port: int) -> None:
        self.sock = socket.create_connection((host, port), timeout=TIMEOUT)
        self.buffer = b""
        self.count = 0
        self.line()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; got {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def response(self) -> tuple[bytes, list[bytes]]:
        """One response: its text (markers kept), and its literals."""
        text, literals = b"", []
        while True:
            line = self.line()
            text += line
            match = _LITERAL_AT_END.search(line)
            if match is None:
                return text, literals
            size = int(match.group(2))
            while len(self.buffer) < size:
                self.buffer += self.sock.recv(65536)
            literals.append(self.buffer[:size])
            self.buffer = self.buffer[size:]

    def command(self, text: bytes, literal: bytes | None = None, *, literal8: bool = False
                ) -> tuple[list[tuple[bytes, list[bytes]]], bytes]:
        """(untagged responses, the tagged line) of one command; ``literal`` ends it."""
        self.count += 1
        tag = b"t%d" % self.count
        if literal is None:
            self.sock.sendall(tag + b" " + text + b"\r\n")
        else:
            marker = b"~{%d}" if literal8 else b"{%d}"
            self.sock.sendall(tag + b" " + text + b" " + marker % len(literal) + b"\r\n")
            go_ahead = self.line()
            assert go_ahead.startswith(b"+"), go_ahead
            self.sock.sendall(literal + b"\r\n")
        untagged = []
        while True:
            response, literals = self.response()
            if response.startswith(tag + b" "):
                return untagged, response
            untagged.append((response, literals))


def status(tagged: bytes) -> str:
    """``OK``, ``NO UNKNOWN-CTE``, ``NO BADCHARSET``...: the status and the code's first word."""
    match = re.match(rb"\S+ (OK|NO|BAD)(?: \[([A-Z-]+))?", tagged)
    assert match, tagged
    return " ".join(part.decode() for part in match.groups() if part)


def fetched(untagged: list[tuple[bytes, list[bytes]]]) -> dict[str, tuple[str, bytes | int]]:
    """BINARY items of FETCH responses: name -> (marker kind, data or size)."""
    items: dict[str, tuple[str, bytes | int]] = {}
    for text, literals in untagged:
        if b" FETCH " not in text:
            continue
        queue = list(literals)
        for name, value in _FETCH_ITEM.findall(text):
            if value.isdigit():
                items[name.decode()] = ("number", int(value))
            elif value.startswith(b"~"):
                items[name.decode()] = ("literal8", queue.pop(0))
            elif value.startswith(b"{"):
                items[name.decode()] = ("literal", queue.pop(0))
            else:
                items[name.decode()] = ("string", b"")
    return items


@contextlib.contextmanager
def appended(host: str, port: int, messages: list[bytes]) -> Iterator[tuple[Session, list[int]]]:
    """A session on INBOX holding ``messages`` (APPENDed as literal8), deleted afterwards."""
    session = Session(host, port)
    uids: list[int] = []
    try:
        assert status(session.command(b"LOGIN alice secret")[1]).startswith("OK")
        for message in messages:
            tagged = session.command(b"APPEND INBOX", message, literal8=True)[1]
            match = re.search(rb"APPENDUID \d+ (\d+)", tagged)
            assert match, tagged
            uids.append(int(match.group(1)))
        assert status(session.command(b"SELECT INBOX")[1]).startswith("OK")
        yield session, uids
    finally:
        with contextlib.suppress(OSError, AssertionError, ConnectionError):
            if uids:
                listed = ",".join(map(str, uids)).encode()
                session.command(b"UID STORE " + listed + b" +FLAGS.SILENT (\\Deleted)")
                session.command(b"UID EXPUNGE " + listed)
        session.close()


@pytest.fixture
def ours(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, smtp=None, imap=0, users=[("alice", "secret")]) as servers:
        yield servers


FETCHES = [
    (0, b"(BINARY.PEEK[] BINARY.SIZE[])"),
    (0, b"(BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[2] BINARY.SIZE[2])"),
    (0, b"(BINARY.PEEK[3] BINARY.SIZE[3] BINARY.PEEK[3.1] BINARY.PEEK[4] BINARY.SIZE[4])"),
    (0, b"(BINARY.PEEK[1]<0.3> BINARY.PEEK[2]<1.2> BINARY.PEEK[2]<0.2>)"),
    (1, b"(BINARY.PEEK[1] BINARY.SIZE[1] BINARY.PEEK[])"),
    (2, b"BINARY.PEEK[1]"),
    (2, b"BINARY.SIZE[1]"),
    (3, b"BINARY.PEEK[1]"),
]


def test_binary_answers_match_dovecot(real_servers: RealServers, ours: RunningServers) -> None:
    messages = [NESTED, NUL, UNKNOWN, CORRUPT]
    answers = []
    for host, port in ((real_servers.host, real_servers.imap), (ours.host, ours.port("imap"))):
        with appended(host, port, messages) as (session, uids):
            capabilities = session.command(b"CAPABILITY")[0][0][0]
            assert b" BINARY" in capabilities
            got = []
            for index, items in FETCHES:
                untagged, tagged = session.command(b"UID FETCH %d " % uids[index] + items)
                got.append((status(tagged), fetched(untagged)))
            body = session.command(b"UID FETCH %d BODY.PEEK[TEXT]" % uids[1])[0]
            got.append(("BODY[TEXT]", {"literals": ("", body[0][1][0])}))
            answers.append(got)
    dovecot, mailtalk = answers
    for (_, items), theirs, mine in zip(FETCHES, dovecot[:-1], mailtalk[:-1], strict=True):
        assert theirs[0] == mine[0], (items, theirs, mine)
        for name, (kind, value) in theirs[1].items():
            my_kind, my_value = mine[1][name]
            assert my_value == value, (items, name, value, my_value)
            # A literal8 exactly when there is a NUL (Dovecot: for any decoded data).
            if isinstance(value, bytes) and b"\0" in value:
                assert (kind, my_kind) == ("literal8", "literal8"), (items, name)
            elif kind == "literal8":
                assert my_kind == "literal", (items, name)
    # BODY[] of a message with a NUL: 0x80 in its place, in both.
    assert dovecot[-1] == mailtalk[-1] == ("BODY[TEXT]", {"literals": ("", b"ab\x80cd\r\n")})


SEARCHES = [
    (b"UTF-8", "K\u00e4se".encode()),
    (b"utf8", "K\u00e4se".encode()),
    (b"US-ASCII", b"mp"),
    (b"ISO-8859-1", "K\u00e4se".encode("latin-1")),
    (b"latin1", "K\u00e4se".encode("latin-1")),
    (b"windows-1252", "\u20ac".encode("cp1252")),
    (b"ISO-8859-1", "\u00e9".encode("latin-1")),  # found in neither
    (b"x-unknown", b"x"),
]


def test_search_charsets_match_dovecot(real_servers: RealServers, ours: RunningServers) -> None:
    answers = []
    for host, port in ((real_servers.host, real_servers.imap), (ours.host, ours.port("imap"))):
        with appended(host, port, [NESTED]) as (session, (uid,)):
            got = []
            for charset, text in SEARCHES:
                for key in (b"SUBJECT", b"TEXT"):
                    untagged, tagged = session.command(
                        b"UID SEARCH CHARSET %s UID %d %s" % (charset, uid, key), text
                    )
                    found = [line for line, _ in untagged if line.startswith(b"* SEARCH")]
                    got.append((charset, key, status(tagged), found))
            # The search string as a quoted string in the charset, as Dovecot takes it.
            untagged, tagged = session.command(
                b'UID SEARCH CHARSET ISO-8859-1 UID %d SUBJECT "K\xe4se"' % uid)
            got.append((b"quoted", b"SUBJECT", status(tagged),
                        [line for line, _ in untagged if line.startswith(b"* SEARCH")]))
            answers.append([(c, k, s, [f.replace(b"%d" % uid, b"UID") for f in found])
                            for c, k, s, found in got])
    dovecot, mailtalk = answers
    assert mailtalk == dovecot
    assert (b"UTF-8", b"TEXT", "OK", [b"* SEARCH UID\r\n"]) in mailtalk
    assert (b"x-unknown", b"SUBJECT", "NO BADCHARSET", []) in mailtalk


def test_imapclient_binary_search_charset(ours: RunningServers) -> None:
    client = imapclient.IMAPClient(ours.host, port=ours.port("imap"), ssl=False, timeout=TIMEOUT)
    try:
        client.login("alice", "secret")
        assert b"BINARY" in client.capabilities()
        client.append("INBOX", NESTED)
        client.select_folder("INBOX")
        (uid,) = client.search(["ALL"])
        data = client.fetch([uid], ["BINARY.PEEK[1]", "BINARY.SIZE[1]", "BINARY.PEEK[3.1]"])
        assert data[uid][b"BINARY[1]"] == "Grüße Käse".encode()
        assert data[uid][b"BINARY.SIZE[1]"] == len("Grüße Käse".encode())
        assert data[uid][b"BINARY[3.1]"] == b"Hello"
        # A literal8 (a part with a NUL) is beyond imapclient's parser (4.1 reads
        # b"~{4}", from Dovecot too); the server sends one only when BINARY is asked.
        for charset in ("utf8", "UTF-8", "iso-8859-1", "latin1", "windows-1252"):
            assert client.search(["SUBJECT", "Käse"], charset=charset) == [uid], charset
        assert client.search(["TEXT", "€"], charset="windows-1252") == [uid]
        client.append("INBOX", UNKNOWN)
        with pytest.raises(imapclient.exceptions.IMAPClientError, match="UNKNOWN-CTE"):
            client.fetch([uid + 1], ["BINARY.PEEK[1]"])
    finally:
        with contextlib.suppress(Exception):
            client.logout()
