"""The reference IMAP server (``mailtalk serve --imap``) over real sockets.

Most tests drive it with Python's imaplib, as a real client would; byte-level
checks (IDLE, literals, garbage) use a raw socket. Mail arrives over SMTP, the
way it does in the running server.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import imaplib
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtalk.servers.api import RunningServers, run_servers

USERS = [("alice", "secret"), ("bob", "hunter2")]
TAGGED = re.compile(rb"^[A-Za-z0-9.\-_]+ (OK|NO|BAD)( .*)?\r\n$", re.DOTALL)


def deliver(servers: RunningServers, subject: str = "hello", body: str = "Hello Alice.\r\n",
            to: str = "alice@localhost") -> None:
    message = (f"From: Bob <bob@example.com>\r\nTo: {to}\r\nSubject: {subject}\r\n"
               f"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\n\r\n{body}")
    with smtplib.SMTP("127.0.0.1", servers.port("smtp")) as client:
        client.sendmail("bob@example.com", [to], message.encode())


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, imap=0, imaps=0, users=USERS) as running:
        yield running


def login(servers: RunningServers, user: str = "alice", password: str = "secret"
          ) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"), timeout=10)
    client.login(user, password)
    return client


@contextlib.contextmanager
def session(servers: RunningServers, mailbox: str | None = "INBOX") -> Iterator[imaplib.IMAP4]:
    client = login(servers)
    try:
        if mailbox is not None:
            typ, _ = client.select(mailbox)
            assert typ == "OK"
        yield client
    finally:
        with contextlib.suppress(Exception):
            client.logout()


class Raw:
    """A byte-level IMAP client on a socket."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.greeting = self.line()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; got {self.buffer!r}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line + b"\r\n"

    def until_tagged(self, tag: bytes) -> list[bytes]:
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if line.startswith(tag + b" "):
                return lines

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def raw_login(port: int) -> Raw:
    raw = Raw(port)
    raw.send(b"l LOGIN alice secret\r\n")
    assert raw.until_tagged(b"l")[-1].startswith(b"l OK")
    return raw


# ---------------------------------------------------------------------------
# Greeting, capabilities, login
# ---------------------------------------------------------------------------


def test_greeting_and_capabilities(servers: RunningServers) -> None:
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"), timeout=10)
    caps = set(client.capabilities)
    assert {"IMAP4REV1", "IDLE", "UIDPLUS", "MOVE", "STARTTLS", "AUTH=PLAIN", "NAMESPACE",
            "UNSELECT", "SASL-IR", "ENABLE", "ID", "LITERAL-"} <= caps
    assert "LOGINDISABLED" not in caps  # loopback
    typ, _data = client.capability()
    assert typ == "OK"
    assert client.noop()[0] == "OK"
    assert client.logout()[0] == "BYE"


def test_login_good_and_bad(servers: RunningServers) -> None:
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"), timeout=10)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login("alice", "wrong")
    assert client.login("alice", "secret")[0] == "OK"
    assert "STARTTLS" not in client.capability()[1][0].decode()
    client.logout()


def test_authenticate_plain_both_ways(servers: RunningServers) -> None:
    client = imaplib.IMAP4("127.0.0.1", servers.port("imap"), timeout=10)
    typ, _ = client.authenticate("PLAIN", lambda _: b"\0alice\0secret")
    assert typ == "OK"
    client.logout()
    raw = Raw(servers.port("imap"))
    token = base64.b64encode(b"\0alice\0secret")
    raw.send(b"a AUTHENTICATE PLAIN " + token + b"\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a OK")
    raw.close()
    raw = Raw(servers.port("imap"))
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert raw.line().startswith(b"+")
    raw.send(base64.b64encode(b"\0alice\0nope") + b"\r\n")
    assert b"AUTHENTICATIONFAILED" in raw.until_tagged(b"a")[-1]
    raw.send(b"b AUTHENTICATE PLAIN\r\n")
    raw.line()
    raw.send(b"*\r\n")
    assert raw.until_tagged(b"b")[-1].startswith(b"b BAD")
    raw.close()


def test_commands_in_wrong_state(servers: RunningServers) -> None:
    raw = Raw(servers.port("imap"))
    raw.send(b"a SELECT INBOX\r\nb FETCH 1 FLAGS\r\nc FROB\r\n")
    assert raw.until_tagged(b"a")[-1].startswith(b"a BAD")
    assert raw.until_tagged(b"b")[-1].startswith(b"b BAD")
    assert raw.until_tagged(b"c")[-1].startswith(b"c BAD")
    raw.close()


# ---------------------------------------------------------------------------
# Mailboxes
# ---------------------------------------------------------------------------


def test_select_and_examine(servers: RunningServers) -> None:
    deliver(servers)
    deliver(servers, "second")
    client = login(servers)
    typ, data = client.select("INBOX")
    assert (typ, data) == ("OK", [b"2"])
    assert client.untagged_responses.get("RECENT") == [b"2"]
    assert client.untagged_responses.get("UIDVALIDITY")
    assert client.untagged_responses.get("UIDNEXT") == [b"3"]
    assert client.untagged_responses.get("UNSEEN") == [b"1"]
    assert b"\\Seen" in client.untagged_responses["PERMANENTFLAGS"][0]
    assert "READ-WRITE" in client.untagged_responses
    typ, data = client.select("INBOX", readonly=True)
    assert typ == "OK"
    assert client.untagged_responses.get("RECENT") == [b"0"]  # the first session claimed them
    assert "READ-ONLY" in client.untagged_responses
    # EXAMINE: FETCH BODY[] does not set \Seen, STORE is refused
    client.fetch("1", "(BODY[])")
    assert b"\\Seen" not in client.fetch("1", "(FLAGS)")[1][0]
    typ, data = client.store("1", "+FLAGS", "(\\Seen)")
    assert typ == "NO"
    typ, data = client.select("Nope")
    assert typ == "NO" and b"NONEXISTENT" in data[0]
    client.logout()


def test_list_create_delete_rename_subscribe_status(servers: RunningServers) -> None:
    with session(servers, None) as client:
        typ, data = client.list('""', '""')
        assert data == [b'(\\Noselect) "." ""']
        assert client.create("Archive.2024")[0] == "OK"
        assert client.create("Lists")[0] == "OK"
        typ, data = client.create("Lists")
        assert typ == "NO" and b"ALREADYEXISTS" in data[0]
        typ, data = client.list()
        # Archive, Drafts, Junk, Sent and Trash were made at the first login (SPECIAL-USE).
        assert data == [b'(\\HasNoChildren) "." "INBOX"',
                        b'(\\HasChildren \\Archive) "." "Archive"',
                        b'(\\HasNoChildren) "." "Archive.2024"',
                        b'(\\HasNoChildren \\Drafts) "." "Drafts"',
                        b'(\\HasNoChildren \\Junk) "." "Junk"',
                        b'(\\HasNoChildren) "." "Lists"',
                        b'(\\HasNoChildren \\Sent) "." "Sent"',
                        b'(\\HasNoChildren \\Trash) "." "Trash"']
        assert client.list('""', "L%")[1] == [b'(\\HasNoChildren) "." "Lists"']
        assert client.list("Archive.", "%")[1] == [b'(\\HasNoChildren) "." "Archive.2024"']
        for name in ("Archive", "Drafts", "Junk", "Sent", "Trash"):
            assert client.unsubscribe(name)[0] == "OK"
        assert client.subscribe("Lists")[0] == "OK"
        assert client.lsub()[1] == [b'() "." "Lists"']
        assert client.unsubscribe("Lists")[0] == "OK"
        assert client.lsub()[1] == [None]
        assert client.rename("Lists", '"Old Lists"')[0] == "OK"
        assert b'"Old Lists"' in b" ".join(client.list()[1])
        typ, data = client.rename("Nope", "Other")
        assert typ == "NO" and b"NONEXISTENT" in data[0]
        assert client.delete('"Old Lists"')[0] == "OK"
        typ, data = client.delete("INBOX")
        assert typ == "NO"
        deliver(servers)
        typ, data = client.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN SIZE)")
        assert typ == "OK"
        assert re.fullmatch(
            rb'"INBOX" \(MESSAGES 1 RECENT 1 UIDNEXT 2 UIDVALIDITY \d+ UNSEEN 1 SIZE \d+\)',
            data[0]), data
        typ, data = client.status("Nope", "(MESSAGES)")
        assert typ == "NO"
        assert client.namespace()[1] == [b'(("" ".")) NIL NIL']
        typ, data = client.enable("UTF8=ACCEPT")
        assert typ == "OK"
        assert client.list('""', "INBOX")[1] == [b'(\\HasNoChildren) "." "INBOX"']
    raw = Raw(servers.port("imap"))
    raw.send(b'i ID ("name" "test")\r\n')
    lines = raw.until_tagged(b"i")
    assert lines[0].startswith(b'* ID ("name" "mailtalk"') and lines[-1].startswith(b"i OK")
    raw.close()


# ---------------------------------------------------------------------------
# APPEND, FETCH, STORE, SEARCH
# ---------------------------------------------------------------------------


def test_append_with_flags_and_date(servers: RunningServers) -> None:
    message = b"From: a@example.com\r\nSubject: appended\r\n\r\nbody line\r\n"
    with session(servers) as client:
        date = imaplib.Time2Internaldate(time.mktime((2023, 5, 17, 12, 30, 0, 0, 0, -1)))
        typ, data = client.append("INBOX", "(\\Seen \\Flagged $Work)", date, message)
        assert typ == "OK"
        assert re.fullmatch(rb"\[APPENDUID \d+ 1\] .*", data[0])
        assert client.noop()[0] == "OK"
        typ, data = client.fetch("1", "(FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        head, body = data[0]
        assert b"\\Seen" in head and b"\\Flagged" in head and b"$Work" in head
        assert b'INTERNALDATE "17-May-2023 12:30:00' in head
        assert f"RFC822.SIZE {len(message)}".encode() in head
        assert body == message
        typ, data = client.append("Nope", None, None, message)
        assert typ == "NO" and b"TRYCREATE" in data[0]


def test_append_large_literal(servers: RunningServers) -> None:
    line = b"x" * 998 + b"\r\n"
    message = b"Subject: big\r\n\r\n" + line * 3000  # 3 MB
    with session(servers) as client:
        assert client.append("INBOX", None, None, message)[0] == "OK"
        client.noop()
        _typ, data = client.fetch("1", "(RFC822.SIZE BODY.PEEK[])")
        assert data[0][1] == message
    stored = list((servers.root / "mail/alice/Maildir/cur").iterdir())
    assert len(stored) == 1 and stored[0].stat().st_size == len(message.replace(b"\r\n", b"\n"))


def literal_response(raw: Raw, tag: bytes) -> tuple[list[bytes], bytes]:
    """The lines up to ``tag``'s tagged one, each literal read whole into its line."""
    lines = []
    while True:
        line = raw.line()
        match = re.search(rb"\{(\d+)\}\r\n$", line)
        if match:
            size = int(match.group(1))
            while len(raw.buffer) < size:
                raw.buffer += raw.sock.recv(65536)
            line, raw.buffer = line + raw.buffer[:size], raw.buffer[size:]
            line += raw.line()
        lines.append(line)
        if line.startswith(tag + b" "):
            return lines[:-1], line


@pytest.mark.parametrize("size", [40, 300_000], ids=["small", "streamed"])
def test_binary_append_with_literal8_and_fetch(servers: RunningServers, size: int) -> None:
    # RFC 3516: advertised, so APPEND takes a ~{n} literal8 (NUL octets and all), and
    # only BINARY answers may carry one; BODY[] shows a NUL as 0x80 (as Dovecot).
    text = b"ab\x00cd\r\n" * (size // 7)
    message = b"From: a@b\r\nSubject: nul\r\n\r\n" + text
    raw = raw_login(servers.port("imap"))
    try:
        raw.send(b"c CAPABILITY\r\n")
        assert b" BINARY" in raw.until_tagged(b"c")[0]
        raw.send(b"a APPEND INBOX ~{%d}\r\n" % len(message))
        assert raw.line().startswith(b"+ ")
        raw.send(message + b"\r\n")
        assert re.match(rb"a OK \[APPENDUID \d+ 1\]", raw.until_tagged(b"a")[-1])
        raw.send(b"s SELECT INBOX\r\nf FETCH 1 (BINARY.PEEK[1] BINARY.SIZE[1])\r\n")
        raw.until_tagged(b"s")
        (fetched,), tagged = literal_response(raw, b"f")
        assert tagged == b"f OK Fetch completed\r\n"
        assert fetched == (b"* 1 FETCH (BINARY[1] ~{%d}\r\n" % len(text) + text
                           + b" BINARY.SIZE[1] %d)\r\n" % len(text))
        raw.send(b"g FETCH 1 (BODY.PEEK[TEXT] FLAGS)\r\n")
        (fetched,), _ = literal_response(raw, b"g")
        shown = text.replace(b"\x00", b"\x80")
        assert fetched == (b"* 1 FETCH (BODY[TEXT] {%d}\r\n" % len(text) + shown
                           + b" FLAGS (\\Recent))\r\n")
    finally:
        raw.close()
    (stored,) = (servers.root / "mail/alice/Maildir/cur").iterdir()
    assert stored.read_bytes() == message.replace(b"\r\n", b"\n")


def test_binary_of_what_does_not_decode_fails_the_fetch(servers: RunningServers) -> None:
    messages = [
        b"From: a@b\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVsbG8=\r\n",
        b"From: a@b\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 x\r\n",
        b"From: a@b\r\nContent-Transfer-Encoding: base64\r\n\r\nSGVs*bG8=\r\n",
    ]
    with session(servers) as client:
        for message in messages:
            assert client.append("INBOX", None, None, message)[0] == "OK"
        client.noop()
        typ, data = client.fetch("1", "(BINARY.PEEK[1])")
        assert typ == "OK" and data[0][1] == b"Hello"
        for number, code in (("2", b"UNKNOWN-CTE"), ("3", b"PARSE")):
            typ, data = client.fetch(number, "(BINARY.PEEK[1])")
            assert typ == "NO" and data[0].startswith(b"[" + code + b"] "), data
        # RFC 3516 4.2: the command fails; the messages that decode are still sent.
        typ, data = client.fetch("1:3", "(BINARY.SIZE[1])")
        assert typ == "NO" and data[0].startswith(b"[PARSE] "), data
        assert client.untagged_responses.pop("FETCH") == [b"1 (BINARY.SIZE[1] 5)"]
        assert client.noop()[0] == "OK"


def test_search_charset_unknown_lists_the_known(servers: RunningServers) -> None:
    raw = raw_login(servers.port("imap"))
    try:
        raw.send(b"s SELECT INBOX\r\nx SEARCH CHARSET X-UNKNOWN ALL\r\n")
        raw.until_tagged(b"s")
        (tagged,) = raw.until_tagged(b"x")
        assert tagged.startswith(b"x NO [BADCHARSET (UTF-8 US-ASCII ISO-8859-1 ISO-8859-2 ")
        assert b" WINDOWS-1252 " in tagged
        assert tagged.endswith(b" UTF-7)] Unsupported charset\r\n")
        raw.send(b"y SEARCH CHARSET latin1 ALL\r\n")
        assert raw.until_tagged(b"y") == [b"* SEARCH\r\n", b"y OK Search completed\r\n"]
    finally:
        raw.close()


def test_search_sort_and_thread_refuse_alike(
    servers: RunningServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One place says the refusals the searching commands share: BAD for keys that do
    not parse, NO [BADCHARSET] for a charset not known, NO [LIMIT] past the time."""
    from mailtalk.servers.imap import selected

    deliver(servers, "one")
    heads = {b"SEARCH": b"SEARCH CHARSET %s", b"UID SORT": b"UID SORT (SUBJECT) %s",
             b"THREAD": b"THREAD REFERENCES %s"}
    raw = raw_login(servers.port("imap"))
    try:
        raw.send(b"s SELECT INBOX\r\n")
        raw.until_tagged(b"s")
        for verb, head in heads.items():
            raw.send(b"c " + head % b"X-UNKNOWN" + b" ALL\r\n")
            (tagged,) = raw.until_tagged(b"c")
            assert tagged.startswith(b"c NO [BADCHARSET (UTF-8 "), (verb, tagged)
            assert tagged.endswith(b"] Unsupported charset\r\n")
            raw.send(b"b " + head % b"UTF-8" + b" NOSUCHKEY\r\n")
            (tagged,) = raw.until_tagged(b"b")
            assert tagged.startswith(b"b BAD "), (verb, tagged)
        monkeypatch.setattr(selected, "SEARCH_TIME_LIMIT", -1.0)  # past it at once
        for verb, head in heads.items():
            raw.send(b"t " + head % b"UTF-8" + b" ALL\r\n")
            (tagged,) = raw.until_tagged(b"t")
            what = verb.removeprefix(b"UID ").capitalize()
            assert tagged == b"t NO [LIMIT] " + what + b" took more than -1 s; narrow it down\r\n"
    finally:
        raw.close()


def test_fetch_items(servers: RunningServers) -> None:
    deliver(servers, "fetch me", "Line one.\r\nLine two.\r\n")
    with session(servers) as client:
        stored = next((servers.root / "mail/alice/Maildir/cur").iterdir()).read_bytes()
        crlf = stored.replace(b"\n", b"\r\n")
        typ, data = client.fetch("1", "(BODY.PEEK[])")
        assert data[0][1] == crlf
        typ, data = client.fetch("1", "(FLAGS)")
        assert b"\\Seen" not in data[0]
        header, _, text = crlf.partition(b"\r\n\r\n")
        assert client.fetch("1", "(BODY.PEEK[HEADER])")[1][0][1] == header + b"\r\n\r\n"
        assert client.fetch("1", "(BODY.PEEK[TEXT])")[1][0][1] == text
        assert client.fetch("1", "(RFC822.HEADER)")[1][0][1] == header + b"\r\n\r\n"
        typ, data = client.fetch("1", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert data[0][1] == b"Subject: fetch me\r\n\r\n"
        typ, data = client.fetch("1", "(BODY.PEEK[]<0.4>)")
        assert data[0][1] == crlf[:4]
        typ, data = client.fetch("1", "(ENVELOPE)")
        assert b'"fetch me"' in data[0] and b'"bob" "example.com"' in data[0]
        typ, data = client.fetch("1", "(BODYSTRUCTURE)")
        assert b'("TEXT" "PLAIN"' in data[0]
        typ, data = client.fetch("1", "(UID RFC822.SIZE INTERNALDATE)")
        assert f"RFC822.SIZE {len(crlf)}".encode() in data[0] and b"UID 1" in data[0]
        typ, data = client.fetch("1", "ALL")
        assert typ == "OK"
        # BODY[] sets \Seen and reports the new FLAGS
        typ, data = client.fetch("1", "(BODY[])")
        assert b"\\Seen" in data[0][0] or b"\\Seen" in data[1]
        typ, data = client.uid("FETCH", "1", "(FLAGS)")
        assert b"UID 1" in data[0] and b"\\Seen" in data[0]
        with pytest.raises(imaplib.IMAP4.error, match="BAD"):
            client.fetch("5", "(FLAGS)")
        with pytest.raises(imaplib.IMAP4.error, match="BAD"):
            client.fetch("1", "(NONSENSE)")


def test_store_search_copy_move_expunge(servers: RunningServers) -> None:
    for n in range(5):
        deliver(servers, f"message {n}", f"body {n}\r\n")
    with session(servers) as client:
        typ, data = client.store("1:2", "+FLAGS", "(\\Flagged)")
        assert [b"\\Flagged" in d for d in data] == [True, True]
        typ, data = client.store("2", "-FLAGS.SILENT", "(\\Flagged)")
        assert data == [None]
        typ, data = client.uid("STORE", "3", "FLAGS", "(\\Seen $Label1)")
        assert b"UID 3" in data[0] and b"$Label1" in data[0]
        assert client.search(None, "FLAGGED")[1] == [b"1"]
        assert client.search(None, "UNSEEN")[1] == [b"1 2 4 5"]
        assert client.search(None, 'SUBJECT "message 4"')[1] == [b"5"]
        assert client.search(None, "BODY", '"body 2"')[1] == [b"3"]
        assert client.search(None, "KEYWORD", "$Label1")[1] == [b"3"]
        assert client.uid("SEARCH", "2:*")[1] == [b"2 3 4 5"]
        assert client.search("UTF-8", "ALL")[1] == [b"1 2 3 4 5"]
        assert client.search("KOI8-R", "ALL")[1] == [b"1 2 3 4 5"]
        typ, data = client.search("X-UNKNOWN", "ALL")
        assert typ == "NO" and data[0].startswith(b"[BADCHARSET (UTF-8 ")
        client.create("Saved")
        typ, data = client.copy("1:2", "Saved")
        assert typ == "OK" and re.fullmatch(rb"\[COPYUID \d+ 1:2 1:2\] .*", data[0])
        typ, data = client.copy("1", "Missing")
        assert typ == "NO" and b"TRYCREATE" in data[0]
        typ, data = client.uid("MOVE", "4", "Saved")
        assert typ == "OK"
        assert client.untagged_responses.pop("EXPUNGE") == [b"4"]
        assert re.fullmatch(rb"\[COPYUID \d+ 4 3\] .*", client.untagged_responses.pop("OK")[-1])
        client.store("1", "+FLAGS", "(\\Deleted)")
        client.store("3", "+FLAGS", "(\\Deleted)")
        typ, data = client.expunge()
        assert data == [b"3", b"1"]  # highest first
        client.store("1", "+FLAGS", "(\\Deleted)")
        typ, data = client.uid("EXPUNGE", "5")  # message 1 is UID 2: not expunged
        assert typ == "OK"
        assert client.search(None, "ALL")[1] == [b"1 2"]
        typ, data = client.uid("FETCH", "1:*", "(FLAGS)")
        assert [re.search(rb"UID (\d+)", d).group(1) for d in data] == [b"2", b"5"]
        assert client.close()[0] == "OK"  # expunges UID 2 silently
        client.select("INBOX")
        assert client.uid("SEARCH", "ALL")[1] == [b"5"]
        assert client.status("Saved", "(MESSAGES)")[1] == [b'"Saved" (MESSAGES 3)']
        assert client._simple_command("UNSELECT")[0] == "OK"
        with pytest.raises(imaplib.IMAP4.error, match="BAD"):
            client.check()  # not selected any more


# ---------------------------------------------------------------------------
# Several sessions, IDLE
# ---------------------------------------------------------------------------


def test_two_sessions_see_each_others_changes(servers: RunningServers) -> None:
    deliver(servers)
    deliver(servers, "second")
    with session(servers) as one, session(servers) as two:
        one.store("1", "+FLAGS", "(\\Flagged)")
        two.noop()
        fetches = two.untagged_responses.pop("FETCH", [])
        assert any(b"\\Flagged" in f for f in fetches), fetches
        one.store("2", "+FLAGS", "(\\Deleted)")
        one.expunge()
        # no EXPUNGE during FETCH: the message numbers stay put
        _typ, data = two.fetch("1:2", "(UID)")
        assert len(data) == 2
        assert "EXPUNGE" not in two.untagged_responses
        two.noop()
        assert two.untagged_responses.pop("EXPUNGE") == [b"2"]
        two.untagged_responses.pop("EXISTS", None)
        deliver(servers, "third")
        two.noop()
        assert two.untagged_responses.pop("EXISTS") == [b"2"]


def test_idle_woken_by_delivery(servers: RunningServers) -> None:
    deliver(servers)
    raw = raw_login(servers.port("imap"))
    raw.send(b"s SELECT INBOX\r\n")
    raw.until_tagged(b"s")
    raw.send(b"i IDLE\r\n")
    assert raw.line().startswith(b"+ ")
    started = time.monotonic()
    deliver(servers, "while idling")
    line = raw.line()
    assert line == b"* 2 EXISTS\r\n"
    assert time.monotonic() - started < 3
    assert raw.line() == b"* 2 RECENT\r\n"  # both are \\Recent in this session
    raw.send(b"DONE\r\n")
    assert raw.until_tagged(b"i")[-1].startswith(b"i OK")
    raw.close()


def test_idle_sees_other_session_flags(servers: RunningServers) -> None:
    deliver(servers)
    raw = raw_login(servers.port("imap"))
    raw.send(b"s SELECT INBOX\r\n")
    raw.until_tagged(b"s")
    raw.send(b"i IDLE\r\n")
    raw.line()
    with session(servers) as other:
        other.store("1", "+FLAGS", "(\\Answered)")
    line = raw.line()
    assert line.startswith(b"* 1 FETCH (FLAGS (") and b"\\Answered" in line
    raw.send(b"DONE\r\n")
    assert raw.until_tagged(b"i")[-1].startswith(b"i OK")
    raw.close()


def test_idle_polls_changes_from_outside(servers: RunningServers) -> None:
    """A change no watcher hears of (another process) shows within the ~1 s poll."""
    deliver(servers)
    raw = raw_login(servers.port("imap"))
    raw.send(b"s SELECT INBOX\r\n")
    raw.until_tagged(b"s")
    raw.send(b"i IDLE\r\n")
    raw.line()
    cur = servers.root / "mail/alice/Maildir/cur"
    (path,) = cur.iterdir()
    base = path.name.partition(":")[0]
    path.rename(cur / f"{base}:2,F")
    line = raw.line()
    assert line.startswith(b"* 1 FETCH (FLAGS (") and b"\\Flagged" in line, line
    raw.send(b"DONE\r\n")
    assert raw.until_tagged(b"i")[-1].startswith(b"i OK")
    raw.close()


# ---------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------


def _tls(servers: RunningServers) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(servers.cafile))


def test_starttls_and_imaps(servers: RunningServers) -> None:
    client = imaplib.IMAP4("localhost", servers.port("imap"), timeout=10)
    assert client.starttls(ssl_context=_tls(servers))[0] == "OK"
    assert "STARTTLS" not in client.capabilities
    assert client.login("alice", "secret")[0] == "OK"
    client.logout()
    client2 = imaplib.IMAP4_SSL("localhost", servers.port("imaps"), ssl_context=_tls(servers),
                                timeout=10)
    assert "STARTTLS" not in client2.capabilities
    assert client2.login("alice", "secret")[0] == "OK"
    assert client2.select("INBOX")[0] == "OK"
    client2.logout()


def test_starttls_drops_injected_commands(servers: RunningServers) -> None:
    raw = Raw(servers.port("imap"))
    raw.send(b"a STARTTLS\r\nb LOGIN alice secret\r\n")
    assert raw.line().startswith(b"a OK")
    tls = _tls(servers).wrap_socket(raw.sock, server_hostname="localhost")
    tls.sendall(b"c NOOP\r\n")
    data = b""
    while b"c OK" not in data:
        data += tls.recv(4096)
    assert b"b " not in data
    tls.close()


class FakeTransport(asyncio.Transport):
    """A transport from a non-loopback address, recording what the server writes."""

    def __init__(self, peer: str) -> None:
        super().__init__()
        self.peer = peer
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return (self.peer, 40000) if name == "peername" else default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        pass

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # everything written is taken at once: no queue to limit

    def resume_reading(self) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0


def test_logindisabled_when_not_loopback(servers: RunningServers) -> None:
    from mailtalk.servers.imap.server import IMAPServerProtocol

    async def talk(peer: str) -> bytes:
        protocol = IMAPServerProtocol(servers.context, "imap")
        transport = FakeTransport(peer)
        protocol.connection_made(transport)
        protocol.data_received(b"a CAPABILITY\r\nb LOGIN alice secret\r\n"
                               b"c AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        await asyncio.sleep(0.05)
        protocol.connection_lost(None)
        return transport.written

    written = asyncio.run(talk("192.0.2.1"))
    capability = next(x for x in written.split(b"\r\n") if x.startswith(b"* CAPABILITY"))
    assert b"LOGINDISABLED" in capability and b"AUTH=PLAIN" not in capability
    assert b"STARTTLS" in capability
    assert b"b NO [PRIVACYREQUIRED]" in written
    assert b"c NO [PRIVACYREQUIRED]" in written


def test_idle_timeout_and_connection_limit(tmp_path: Path) -> None:
    with run_servers(tmp_path, imap=0, users=USERS, idle_timeout=0.5,
                     max_connections=1) as running:
        raw = Raw(running.port("imap"))
        second = Raw(running.port("imap"))
        assert second.greeting.startswith(b"* BYE")
        second.close()
        assert raw.line().startswith(b"* BYE")
        raw.close()


# ---------------------------------------------------------------------------
# Limits, faults, scenarios, durability
# ---------------------------------------------------------------------------


def test_literal_cap(servers: RunningServers) -> None:
    raw = raw_login(servers.port("imap"))
    raw.send(b"a APPEND INBOX {999999999999}\r\n")
    line = raw.line()
    assert line.startswith(b"a NO [TOOBIG]"), line
    raw.send(b"b NOOP\r\n")
    assert raw.until_tagged(b"b")[-1].startswith(b"b OK")
    raw.close()
    raw = Raw(servers.port("imap"))
    raw.send(b"a LOGIN {99999999}\r\n")  # before login: small literals only
    assert raw.line().startswith(b"a NO [TOOBIG]")
    raw.send(b"b LOGIN {5}\r\n")
    assert raw.line().startswith(b"+")
    raw.send(b"alice {6}\r\n")
    assert raw.line().startswith(b"+")
    raw.send(b"secret\r\n")
    assert raw.until_tagged(b"b")[-1].startswith(b"b OK")
    raw.close()


def test_literal_cap_setting(tmp_path: Path) -> None:
    with run_servers(tmp_path, imap=0, users=USERS, max_literal=1000) as running, \
            session(running) as client:
        typ, data = client.append("INBOX", None, None, b"x" * 2000)
        assert typ == "NO" and b"TOOBIG" in data[0]
        assert client.append("INBOX", None, None, b"Subject: s\r\n\r\nok\r\n")[0] == "OK"
        raw = raw_login(running.port("imap"))
        raw.send(b"a APPEND INBOX {2000+}\r\n" + b"y" * 2000 + b"\r\n")
        assert raw.until_tagged(b"a")[-1].startswith(b"a NO [TOOBIG]")
        raw.send(b"b APPEND INBOX (\\Seen) {12+}\r\nSubject:\r\n\r\n\r\n")
        assert re.match(rb"b OK \[APPENDUID \d+ 2\]", raw.until_tagged(b"b")[-1])
        raw.close()


def test_fault_select_unavailable(tmp_path: Path) -> None:
    rule = "imap:select=NO [UNAVAILABLE] Mailbox temporarily unavailable"
    with run_servers(tmp_path, imap=0, users=USERS, faults=[rule]) as running:
        client = login(running)
        typ, data = client.select("INBOX")
        assert typ == "NO" and data == [b"[UNAVAILABLE] Mailbox temporarily unavailable"]
        assert client.select("INBOX", readonly=True)[0] == "OK"
        client.logout()
        assert running.fired_faults() == [rule]


def test_fault_fetch_disconnect(tmp_path: Path) -> None:
    with run_servers(tmp_path, imap=0, users=USERS, faults=["imap:fetch=disconnect"]) as running:
        deliver(running)
        with session(running) as client, pytest.raises(imaplib.IMAP4.abort):
            client.fetch("1", "(FLAGS)")


def test_fault_delay(tmp_path: Path) -> None:
    rules = ["imap:noop=delay 0.3s"]
    with run_servers(tmp_path, imap=0, users=USERS, faults=rules) as running, \
            session(running) as client:
        started = time.monotonic()
        assert client.noop()[0] == "OK"
        assert time.monotonic() - started >= 0.25


def test_a_delayed_search_keeps_the_next_command_waiting(tmp_path: Path) -> None:
    # the delay fault's deferred work starts the SEARCH's own (on a worker thread):
    # the pipelined NOOP must wait for both, so the replies come in order
    rules = ["imap:search=delay 0.3s"]
    with run_servers(tmp_path, imap=0, users=USERS, faults=rules) as running:
        deliver(running)
        raw = raw_login(running.port("imap"))
        raw.send(b"s SELECT INBOX\r\n")
        assert raw.until_tagged(b"s")[-1].startswith(b"s OK")
        raw.send(b"a1 SEARCH ALL\r\na2 NOOP\r\n")
        lines = raw.until_tagged(b"a2")
        tagged = [line.split()[0] for line in lines if line[:1] != b"*"]
        assert tagged == [b"a1", b"a2"], lines
        raw.close()


def test_fault_append_overquota_before_literal(tmp_path: Path) -> None:
    rule = "imap:append=NO [OVERQUOTA] Quota exceeded"
    with run_servers(tmp_path, imap=0, users=USERS, faults=[rule]) as running:
        raw = raw_login(running.port("imap"))
        raw.send(b"a APPEND INBOX {10}\r\n")
        assert raw.line() == b"a NO [OVERQUOTA] Quota exceeded\r\n"
        raw.close()


def test_scenario_bad_password(tmp_path: Path) -> None:
    with run_servers(tmp_path, imap=0, users=USERS, scenarios=["bad-password"]) as running:
        client = imaplib.IMAP4("127.0.0.1", running.port("imap"), timeout=10)
        with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
            client.login("alice", "secret")


def test_scenario_quota_exceeded(tmp_path: Path) -> None:
    with run_servers(tmp_path, imap=0, users=USERS, scenarios=["quota-exceeded"]) as running:
        deliver(running)
        with session(running) as client:
            typ, data = client.append("INBOX", None, None, b"Subject: s\r\n\r\nx\r\n")
            assert typ == "NO" and b"OVERQUOTA" in data[0]
            client.create("Other")
            typ, data = client.copy("1", "Other")
            assert typ == "NO" and b"OVERQUOTA" in data[0]


def test_scenario_disk_full(tmp_path: Path) -> None:
    with run_servers(tmp_path, imap=0, users=USERS, scenarios=["disk-full"]) as running, \
            session(running) as client:
        typ, data = client.append("INBOX", None, None, b"Subject: s\r\n\r\nx\r\n")
        assert typ == "NO" and b"UNAVAILABLE" in data[0]


def test_uids_stable_across_restart(tmp_path: Path) -> None:
    with run_servers(tmp_path, imap=0, users=USERS) as running:
        for n in range(3):
            deliver(running, f"m{n}")
        with session(running) as client:
            validity = client.untagged_responses["UIDVALIDITY"][0]
            client.store("2", "+FLAGS", "(\\Deleted)")
            client.expunge()
            uids = client.uid("SEARCH", "ALL")[1]
    with run_servers(tmp_path, imap=0, users=USERS) as running, session(running) as client:
        assert client.untagged_responses["UIDVALIDITY"][0] == validity
        assert client.uid("SEARCH", "ALL")[1] == uids == [b"1 3"]
        assert client.untagged_responses["UIDNEXT"] == [b"4"]


# ---------------------------------------------------------------------------
# Garbage
# ---------------------------------------------------------------------------


def _check_responses(data: bytes) -> None:
    """Every response is ``* ...``, ``+ ...`` or ``TAG OK|NO|BAD ...``; literals skipped.

    ``data`` may stop anywhere (the connection closed): a cut last response is ignored.
    """
    pos = 0
    while True:
        end = data.find(b"\r\n", pos)
        if end < 0:
            return
        line = data[pos : end + 2]
        assert line.startswith((b"* ", b"+")) or TAGGED.match(line), line
        pos = end + 2
        while (marker := re.search(rb"\{(\d+)\}\r\n$", line)) is not None:
            pos += int(marker.group(1))  # the literal, then the rest of the response
            end = data.find(b"\r\n", pos)
            if end < 0:
                return
            line = data[pos : end + 2]
            pos = end + 2


VERBS = ["CAPABILITY", "NOOP", "SELECT", "EXAMINE", "CREATE", "DELETE", "RENAME", "LIST",
         "LSUB", "STATUS", "APPEND", "FETCH", "UID FETCH", "STORE", "UID STORE", "SEARCH",
         "UID SEARCH", "COPY", "MOVE", "UID EXPUNGE", "EXPUNGE", "CHECK", "CLOSE", "UNSELECT",
         "NAMESPACE", "ENABLE", "ID", "SUBSCRIBE", "AUTHENTICATE", "LOGIN", "IDLE", "FROB"]
ARGS = st.lists(
    st.one_of(
        st.sampled_from(["1", "1:*", "*", "INBOX", '"a b"', "()", "(FLAGS)", "(\\Seen)",
                         "BODY[]", "{3}", "{0}", "{2+}", "ALL", "NIL", "+FLAGS", '""', "(UID",
                         ")", "%", "Foo.Bar", "\\", '"', "(BODY.PEEK[HEADER] ENVELOPE)"]),
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=8),
    ),
    max_size=4,
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(VERBS), ARGS, st.binary(max_size=6)), max_size=6))
def test_random_commands_never_crash(
    servers: RunningServers, commands: list[tuple[str, list[str], bytes]]
) -> None:
    marker = servers.root / "delivered"
    if not marker.exists():
        deliver(servers)
        marker.touch()
    raw = raw_login(servers.port("imap"))
    raw.send(b"s SELECT INBOX\r\n")
    raw.until_tagged(b"s")
    sent = b""
    for verb, args, junk in commands:
        junk = junk.replace(b"\n", b"").replace(b"\r", b"")
        sent += " ".join(["t", verb, *args]).encode() + junk + b"\r\n"
    raw.send(sent + b"DONE\r\nzz NOOP\r\n")
    received = raw.buffer
    with contextlib.suppress(OSError):
        raw.sock.settimeout(2)
        while not re.search(rb"(^|\r\n)zz (OK|NO|BAD)", received):
            chunk = raw.sock.recv(65536)
            if not chunk:
                break
            received += chunk
    raw.close()
    _check_responses(raw.greeting + received)
    fresh = Raw(servers.port("imap"))
    fresh.send(b"n NOOP\r\n")
    assert fresh.until_tagged(b"n")[-1].startswith(b"n OK")
    fresh.close()


def test_dropped_connection_mid_append_leaves_nothing(servers: RunningServers) -> None:
    """A streamed APPEND that never finishes is aborted: no file in the folder."""
    with socket.create_connection(("127.0.0.1", servers.port("imap")), timeout=10) as sock:
        reader = sock.makefile("rb")
        reader.readline()
        sock.sendall(b"a1 LOGIN alice secret\r\n")
        assert reader.readline().startswith(b"a1 OK")
        sock.sendall(b"a2 APPEND INBOX {5000000}\r\n")
        assert reader.readline().startswith(b"+")
        sock.sendall(b"Subject: cut\r\n\r\n" + b"y" * 1_000_000)
    maildir = servers.root / "mail/alice/Maildir"

    def files(sub: str) -> list[Path]:
        folder = maildir / sub
        return list(folder.iterdir()) if folder.is_dir() else []

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and files("tmp"):
        time.sleep(0.05)
    assert files("tmp") == [] and files("cur") == [] and files("new") == []


def test_large_append_streams_with_bounded_memory(tmp_path: Path) -> None:
    """A 40 MB APPEND to a server process grows its memory by a few MB at most."""
    import json
    import subprocess
    import sys

    size = 40 * 1024 * 1024
    command = [sys.executable, "-m", "mailtalk", "serve", "--root", str(tmp_path / "root"),
               "--imap", "0", "--user", "alice:secret", "--json"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE)
    try:
        assert server.stdout is not None
        port = json.loads(server.stdout.readline())["listeners"][0]["port"]

        def resident_kib() -> int:
            status = Path(f"/proc/{server.pid}/status").read_text()
            return int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]

        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            reader = sock.makefile("rb")
            reader.readline()
            sock.sendall(b"a1 LOGIN alice secret\r\n")
            assert reader.readline().startswith(b"a1 OK")
            baseline = resident_kib()
            sock.sendall(b"a2 APPEND INBOX {%d}\r\n" % size)
            assert reader.readline().startswith(b"+")
            head = b"Subject: big\r\n\r\n"
            block = (b"z" * 98 + b"\r\n") * 10_000
            sent, peak = 0, baseline
            sock.sendall(head)
            sent = len(head)
            while sent < size:
                piece = block[: size - sent]
                sock.sendall(piece)
                sent += len(piece)
                peak = max(peak, resident_kib())
            sock.sendall(b"\r\n")
            assert reader.readline().startswith(b"a2 OK [APPENDUID")
        growth = peak - baseline
        print(f"VmRSS baseline {baseline} KiB, peak {peak} KiB, growth {growth} KiB")
        assert growth < 16 * 1024, f"the server grew by {growth} KiB for a 40 MB APPEND"
        stored = list((tmp_path / "root/mail/alice/Maildir/cur").iterdir())
        assert len(stored) == 1
        assert stored[0].stat().st_size == size - (size - len(head)) // 100 - 2
    finally:
        server.terminate()
        server.wait(timeout=10)
