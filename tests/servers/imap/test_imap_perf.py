"""The IMAP server's fast FETCH path must answer exactly as the general one.

Header-only FETCHes read just the header block (through the store's cache), a
FetchRenderer writes simple responses without the general renderer, and the
responses of one command leave in batches. These tests compare the fast path
byte for byte with the general one and check that caches never serve a
message that changed or went.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailtalk.protocols.common import Role
from mailtalk.protocols.imap import IMAPConnection
from mailtalk.servers.api import RunningServers, run_servers
from mailtalk.servers.imap.fetch import FetchRenderer, render_fetch
from mailtalk.servers.imap.message import FetchMessage
from mailtalk.servers.imap.message_args import parse_fetch
from mailtalk.store import Delivery, MailboxError, Maildir, MailStore
from mailtalk.store import headers as headers_module
from mailtalk.store import index as index_module

# -- the renderer and the header reader, without a server ---------------------------

FIELD_NAMES = st.sampled_from(["From", "Subject", "Date", "To", "X-Long", "from", "SUBJECT"])
VALUE = st.binary(max_size=40).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))


@st.composite
def messages(draw: st.DrawFn) -> bytes:
    lines = []
    for _ in range(draw(st.integers(0, 6))):
        name = draw(FIELD_NAMES)
        value = draw(VALUE)
        if draw(st.booleans()):
            value += b"\n\tfolded " + draw(VALUE)
        lines.append(name.encode() + b": " + value)
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    header = newline.join(lines) + (newline if lines else b"")
    blank = draw(st.sampled_from([newline, b"", b"\r\n", b"\n"]))
    body = draw(st.binary(max_size=60))
    return header + blank + body if blank else header


ITEM_LISTS = [
    "(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])",
    "(UID FLAGS INTERNALDATE)",
    "(BODY.PEEK[HEADER])",
    "(BODY.PEEK[HEADER.FIELDS.NOT (DATE)] RFC822.SIZE)",
    "(BODY.PEEK[HEADER.FIELDS (X-LONG)]<2.5>)",
    '(BODY.PEEK[HEADER.FIELDS ("x-long" Subject)] UID)',
    "(FLAGS)",
    "(RFC822.HEADER)",
    "(BODY.PEEK[TEXT])",
]


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(
    message=messages(),
    items=st.sampled_from(ITEM_LISTS),
    uid=st.booleans(),
    flags=st.sampled_from([[], ["\\Seen"], ["$Junk", "\\Flagged", "\\Seen"]]),
)
def test_fast_path_is_byte_identical(
    message: bytes, items: str, uid: bool, flags: list[str]
) -> None:
    request = parse_fetch("1 " + items, ())
    core = IMAPConnection(role=Role.SERVER)
    full = FetchMessage(
        message, uid=7, flags=flags, internaldate=1_700_000_000, rfc822_size=123, seq=3
    )
    expected = core.send(render_fetch(request.items, full, uid=uid).untagged(3))
    header = headers_module.read_header_block(_reader(message, 5))
    assert message.startswith(header)
    short = FetchMessage(
        header,
        uid=7,
        flags=flags,
        internaldate=1_700_000_000,
        rfc822_size=123,
        seq=3,
        header_only=True,
    )
    assert short.header.block == full.header.block
    assert short.header.has_blank == full.header.has_blank
    renderer = FetchRenderer(request.items, uid=uid)
    if renderer.simple:
        assert renderer.wire(short) == expected
        assert renderer.wire(full) == expected
    if renderer.fields_only:
        # A listing fetched again: the same bytes from the kept answers alone.
        answers = [short.header.subset(i.section.fields, exclude=i.section.text.endswith("NOT"))
                   for i in request.items if i.section is not None]
        kept = renderer.kept_wire(3, 7, " ".join(flags), 123, 0, answers)
        if kept is not None:
            assert kept == expected
        assert kept is not None or "<" in items or not all(answers) or any(
            b"\x00" in answer for answer in answers)
    if all(i.section is None or not i.section.part for i in request.items) and (
        "TEXT" not in items
    ):
        assert core.send(render_fetch(request.items, short, uid=uid).untagged(3)) == expected


KEPT_ITEM_LISTS = [
    "(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)])",
    "(BODY.PEEK[HEADER.FIELDS.NOT (DATE)] MODSEQ FLAGS BODY.PEEK[HEADER.FIELDS (X-LONG)])",
    '(BODY.PEEK[HEADER.FIELDS ("x%dlong" Subject)] UID)',
]


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(
    batch=st.lists(
        st.tuples(messages(), st.sampled_from([[], ["\\Seen"], ["$Junk", "\\Flagged", "\\Seen"]]),
                  st.integers(1, 2**32 - 1), st.integers(0, 10**12), st.integers(1, 2**62)),
        min_size=1, max_size=5),
    items=st.sampled_from(KEPT_ITEM_LISTS),
    uid=st.booleans(),
)
def test_kept_batch_is_each_message_wire_in_turn(
    batch: list[tuple[bytes, list[str], int, int, int]], items: str, uid: bool
) -> None:
    """Several messages' kept answers formatted in one step (a listing fetched again)
    give what wire gives for each message in turn."""
    request = parse_fetch("1 " + items, ())
    renderer = FetchRenderer(request.items, uid=uid)
    assert renderer.kept
    sections = [i.section for i in request.items if i.section is not None]
    expected = b""
    columns: list[list[Any]] = [[], [], [], [], []]
    answers: list[list[bytes]] = [[] for _ in sections]
    for message, flags, message_uid, size, modseq in batch:
        full = FetchMessage(message, uid=message_uid, flags=flags, rfc822_size=size,
                            seq=len(columns[0]) + 1, modseq=modseq)
        kept = [full.header.subset(s.fields, exclude=s.text.endswith("NOT")) for s in sections]
        if not all(kept) or any(b"\x00" in answer for answer in kept):
            continue  # wire's alone (""; NUL replaced): _kept_responses stops before it
        expected += renderer.wire(full)
        for column, value in zip(columns, (full.seq, message_uid, " ".join(flags).encode(),
                                           size, modseq), strict=True):
            column.append(value)
        for section, answer in zip(answers, kept, strict=True):
            section.append(answer)
    assert renderer.kept_batch(*columns, answers) == expected


def _reader(data: bytes, size: int):  # type: ignore[no-untyped-def]
    position = 0

    def read(wanted: int) -> bytes:
        nonlocal position
        chunk = data[position : position + min(wanted, size)]
        position += len(chunk)
        return chunk

    return read


def test_renderer_refuses_what_it_cannot_render_alike() -> None:
    assert not FetchRenderer(parse_fetch('1 (BODY.PEEK[HEADER.FIELDS ("{3}")])', ()).items).simple
    assert not FetchRenderer(parse_fetch("1 (BODY[])", ()).items).simple
    assert not FetchRenderer(parse_fetch("1 (ENVELOPE)", ()).items).simple
    assert FetchRenderer(parse_fetch("1 (FLAGS BODY.PEEK[HEADER])", ()).items).simple


# -- the store's header reader ------------------------------------------------------


def deliver(path: Path, data: bytes) -> None:
    maildir = Maildir(path)
    maildir.create()
    with Delivery([maildir]) as delivery:
        delivery.write(data)
        delivery.commit()


def test_header_cache_follows_renames_and_notices_expunges(tmp_path: Path) -> None:
    alice = MailStore(tmp_path).user_mailboxes("alice")
    deliver(alice.path, b"Subject: one\n\nbody\n")
    deliver(alice.path, b"Subject: two\n\nbody\n")
    box = alice.open("INBOX")
    first, second = (m.uid for m in box.messages())
    assert box.read_header(first) == b"Subject: one\n\n"
    assert box.header_reader()(second) == b"Subject: two\n\n"
    other = alice.open("INBOX")
    other.set_flags([first], ["\\Flagged"], "add")  # renames the file
    other.set_flags([second], ["\\Deleted"], "add")
    other.expunge()
    reader = box.header_reader()
    assert reader(first) == b"Subject: one\n\n"  # found where it went
    with pytest.raises(MailboxError) as error:
        reader(second)
    assert error.value.code == "EXPUNGEISSUED"
    with pytest.raises(MailboxError):
        box.read_header(second)


def test_header_cache_is_per_uidvalidity(tmp_path: Path) -> None:
    alice = MailStore(tmp_path).user_mailboxes("alice")
    deliver(alice.path, b"Subject: one\n\nbody\n")
    box = alice.open("INBOX")
    uid = box.messages()[0].uid
    assert box.read_header(uid) == b"Subject: one\n\n"
    key_count = len(headers_module.HEADER_CACHE._entries)
    (alice.path / index_module.INDEX_NAME).unlink()  # rebuilt: a new UIDVALIDITY
    fresh = alice.open("INBOX")
    assert fresh.uidvalidity != box.uidvalidity
    assert fresh.read_header(fresh.messages()[0].uid) == b"Subject: one\n\n"
    assert len(headers_module.HEADER_CACHE._entries) == key_count + 1


def test_header_cache_is_bounded() -> None:
    cache = headers_module._HeaderCache(2000)
    for n in range(10):
        cache.put(("f", 1, n, "b", 1), b"x" * 300)
    assert cache.get(("f", 1, 0, "b", 1)) is None
    assert cache.get(("f", 1, 9, "b", 1)) == b"x" * 300
    assert cache._bytes <= 2000


def test_long_header_without_blank_line_is_read_whole(tmp_path: Path) -> None:
    alice = MailStore(tmp_path).user_mailboxes("alice")
    data = b"".join(b"X-Field-%d: %s\n" % (n, b"v" * 50) for n in range(400))
    deliver(alice.path, data)
    box = alice.open("INBOX")
    assert box.read_header(box.messages()[0].uid) == data


# -- over a socket ------------------------------------------------------------------


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[RunningServers]:
    with run_servers(tmp_path, imap=0, users=[("alice", "secret")]) as running:
        yield running


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        self.read_line()

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(self.buffer[-200:])
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\r\n")
        return line

    def read_bytes(self, count: int) -> bytes:
        while len(self.buffer) < count:
            self.buffer += self.sock.recv(65536)
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def command(self, tag: str, text: str) -> tuple[list[tuple[bytes, list[bytes]]], bytes]:
        """(untagged responses with their literals, in order), tagged line."""
        self.sock.sendall(f"{tag} {text}\r\n".encode())
        found = []
        while True:
            line = self.read_line()
            if line.startswith(tag.encode() + b" "):
                return found, line
            literals = []
            while line.endswith(b"}"):
                size = int(line[line.rfind(b"{") + 1 : -1])
                literals.append(self.read_bytes(size))
                line += b"\r\n" + literals[-1] + self.read_line()
            found.append((line, literals))

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def fill(servers: RunningServers, count: int) -> Path:
    path = servers.root / "mail" / "alice" / "Maildir"
    for n in range(count):
        deliver(
            path,
            b"From: a@example.org\nSubject: message %d %s\nDate: today\n\n%s\n"
            % (n, b"s" * 300, b"body" * n),
        )
    return path


def test_batched_fetch_keeps_order_and_literals(servers: RunningServers) -> None:
    fill(servers, 400)  # about 150 KB of responses: more than one batch
    client = Client(servers.port("imap"))
    try:
        client.command("a", "LOGIN alice secret")
        client.command("b", "SELECT INBOX")
        for text in (
            "UID FETCH 1:* (FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)])",
            "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT])",
        ):
            found, tagged = client.command("c", text)
            assert tagged.startswith(b"c OK")
            assert [int(line.split()[1]) for line, _ in found] == list(range(1, 401))
            for n, (_, literals) in enumerate(found):
                assert literals[0] == b"Subject: message %d %s\r\n\r\n" % (n, b"s" * 300)
    finally:
        client.close()


def test_fetch_after_an_outside_expunge_answers_no(servers: RunningServers) -> None:
    path = fill(servers, 3)
    client = Client(servers.port("imap"))
    try:
        client.command("a", "LOGIN alice secret")
        client.command("b", "SELECT INBOX")
        items = "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
        found, tagged = client.command("c", f"FETCH 1:* {items}")
        assert tagged.startswith(b"c OK") and len(found) == 3
        for name in sorted((path / "cur").iterdir())[1:2]:
            name.unlink()  # another program removes message 2 meanwhile
        found, tagged = client.command("d", f"FETCH 1:* {items}")
        assert tagged.startswith(b"d NO [EXPUNGEISSUED]")
        assert [line.split()[1] for line, _ in found] == [b"1", b"3"]
    finally:
        client.close()


def test_fetch_sees_a_flag_change_made_outside(servers: RunningServers) -> None:
    path = fill(servers, 2)
    client = Client(servers.port("imap"))
    try:
        client.command("a", "LOGIN alice secret")
        client.command("b", "SELECT INBOX")
        client.command("c", "FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        first = sorted((path / "cur").iterdir())[0]
        first.rename(first.with_name(first.name + "F"))
        found, tagged = client.command("d", "NOOP")
        assert any(b"FETCH (FLAGS (" in line and b"\\Flagged" in line for line, _ in found)
        found, tagged = client.command("e", "FETCH 1 (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        assert tagged.startswith(b"e OK")
        assert found[0][1][0].startswith(b"Subject: message 0")
    finally:
        client.close()


def test_a_listing_fetched_again_reads_no_message_and_keeps_no_header_block(
    servers: RunningServers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HEADER.FIELDS answers are kept by message (a few hundred bytes each), not the
    header blocks they came from; a second listing is answered from them alone."""
    path = fill(servers, 50)
    opened: list[str] = []
    real_open = os.open

    def counting_open(name: Any, *args: Any, **kwargs: Any) -> int:
        if os.fsdecode(name).startswith((f"{path}/cur/", f"{path}/new/")):
            opened.append(os.fsdecode(name))
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(os, "open", counting_open)
    client = Client(servers.port("imap"))
    try:
        client.command("a", "LOGIN alice secret")
        client.command("b", "SELECT INBOX")
        items = "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT DATE)])"
        blocks = len(headers_module.HEADER_CACHE._entries)
        first, tagged = client.command("c", f"UID FETCH 1:* {items}")
        assert tagged.startswith(b"c OK") and len(first) == 50 and len(opened) == 50
        assert len(headers_module.HEADER_CACHE._entries) == blocks
        opened.clear()
        again, tagged = client.command("d", f"UID FETCH 1:* {items}")
        assert tagged.startswith(b"d OK") and again == first
        assert opened == []
        other, tagged = client.command("e", "UID FETCH 1:* (BODY.PEEK[HEADER.FIELDS (FROM)])")
        assert tagged.startswith(b"e OK") and len(opened) == 50  # other fields: read again
        assert other[7][1] == [b"From: a@example.org\r\n\r\n"]
        # Without PEEK the answer shows \\Seen set, rendered in full from the block.
        seen, tagged = client.command("f", "FETCH 3 (BODY[HEADER.FIELDS (SUBJECT DATE)])")
        assert tagged.startswith(b"f OK") and b"\\Seen" in seen[0][0]
        assert seen[0][1] == first[2][1]
    finally:
        client.close()


def test_a_kept_listing_is_the_read_one_with_what_changed_since(servers: RunningServers) -> None:
    """A listing answered from kept answers, many messages a step, is byte for byte the
    one read from the files; around the messages that need a read of their own (a NUL
    or an empty answer, a file renamed or removed by another program) and with the
    FLAGS another session changed meanwhile."""
    path = servers.root / "mail" / "alice" / "Maildir"
    shapes = [b"From: a@example.org\nSubject: plain %d\n\nbody\n",
              b"From: a@example.org\nSubject: nul\x00 %d\n\nbody\n",
              b"Subject: no blank line %d",
              b"X-Other: %d\n\nbody\n"]
    for n in range(700):
        deliver(path, shapes[0 if n % 37 else n // 37 % len(shapes)] % n)
    items = "(FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])"
    client = Client(servers.port("imap"))
    try:
        client.command("a", "LOGIN alice secret")
        client.command("b", "SELECT INBOX")
        first, tagged = client.command("c", f"UID FETCH 1:* {items}")
        assert tagged.startswith(b"c OK") and len(first) == 700
        again, tagged = client.command("d", f"UID FETCH 1:* {items}")
        assert tagged.startswith(b"d OK") and again == first
        assert all(b"(UID %d " % n in line for n, (line, _) in enumerate(first, 1))
        again, tagged = client.command("d2", f"UID FETCH 5,9:300,302:* {items}")
        assert tagged.startswith(b"d2 OK")
        assert again == [first[n - 1] for n in (5, *range(9, 301), *range(302, 701))]
        other = MailStore(servers.root).user_mailboxes("alice").open("INBOX")
        messages = other.messages()
        other.set_flags([messages[200].uid, messages[201].uid], ["\\Flagged"], "add")
        client.command("e", "NOOP")  # the session sees the new FLAGS
        moved = Path(messages[400].location)
        moved.rename(moved.with_name(moved.name + "F"))  # after its refresh: not seen
        Path(messages[500].location).unlink()
        found, tagged = client.command("f", f"UID FETCH 1:* {items}")
        assert tagged.startswith(b"f NO [EXPUNGEISSUED]")
        expected = first[:500] + first[501:]
        assert len(found) == len(expected)
        for n, ((line, literals), (was, was_literals)) in enumerate(
            zip(found, expected, strict=True)
        ):
            assert literals == was_literals
            if n in (200, 201):
                assert b"\\Flagged" in line and b"\\Flagged" not in was
                assert re.sub(rb"FLAGS \([^)]*\)", b"", line) == re.sub(
                    rb"FLAGS \([^)]*\)", b"", was)
            else:
                assert line == was
    finally:
        client.close()


# -- POP3: the same bytes, faster ---------------------------------------------------


class ReferenceStuffer:
    """DotStuffer as it was before its LF-only fast path: line by line."""

    def __init__(self) -> None:
        self.at_line_start = True
        self.held_cr = False

    def feed(self, chunk: bytes) -> bytes:
        if self.held_cr:
            chunk = b"\r" + chunk
            self.held_cr = False
        if chunk.endswith(b"\r"):
            self.held_cr = True
            chunk = chunk[:-1]
        out = bytearray()
        for line in chunk.splitlines(keepends=True):
            if self.at_line_start and line.startswith(b"."):
                out += b"."
            if line.endswith(b"\n"):
                out += line.removesuffix(b"\r\n").removesuffix(b"\n") + b"\r\n"
                self.at_line_start = True
            else:
                out += line
                self.at_line_start = line.endswith(b"\r")
        return bytes(out)

    def finish(self) -> bytes:
        held = b"\r" if self.held_cr else b""
        self.held_cr = False
        tail = b"" if self.at_line_start and not held else b"\r\n"
        return held + tail + b".\r\n"


@settings(max_examples=300)
@given(
    data=st.lists(
        st.sampled_from([b".", b"\n", b"\r", b"a", b"..", b"\n.", b"x\n"]), max_size=40
    ).map(b"".join),
    cuts=st.lists(st.integers(0, 80), max_size=6),
)
def test_dot_stuffing_fast_path_matches_the_line_by_line_one(data: bytes, cuts: list[int]) -> None:
    from mailtalk.servers.pop3 import DotStuffer

    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    fast, slow = DotStuffer(), ReferenceStuffer()
    assert (
        b"".join(fast.feed(c) for c in chunks) + fast.finish()
        == b"".join(slow.feed(c) for c in chunks) + slow.finish()
    )


@settings(max_examples=300)
@given(
    data=st.lists(
        st.sampled_from([b".", b"\n", b"\r", b"a", b"..", b"\n.", b"x\n", b"\r\n."]),
        max_size=40,
    ).map(b"".join)
)
def test_whole_message_wire_form_matches_the_dot_stuffer(data: bytes) -> None:
    from mailtalk.servers.pop3 import DotStuffer, wire_message

    stuffer = ReferenceStuffer()
    assert wire_message(data) == stuffer.feed(data) + stuffer.finish()
    fast = DotStuffer()
    assert wire_message(data) == fast.feed(data) + fast.finish()


def test_pop3_retr_small_and_large_messages(tmp_path: Path) -> None:
    import poplib

    with run_servers(tmp_path, pop3=0, users=[("alice", "secret")]) as servers:
        path = servers.root / "mail" / "alice" / "Maildir"
        small = b"Subject: s\n\n.dot line\nplain\n..two\n"
        large = b"Subject: l\n\n" + b".x\n" * 40000  # over 64 KiB: streamed in chunks
        deliver(path, small)
        deliver(path, large)
        client = poplib.POP3("127.0.0.1", servers.port("pop3"), timeout=10)
        try:
            client.user("alice")
            client.pass_("secret")
            for number, data in ((1, small), (2, large)):
                response, lines, _ = client.retr(number)
                assert response.startswith(b"+OK")
                assert b"\n".join(lines) + b"\n" == data
            # pipelined: answers in order
            client.sock.sendall(b"RETR 1\r\nRETR 2\r\nRETR 1\r\n")
            for data in (small, large, small):
                response, lines, _ = client._getlongresp()  # type: ignore[attr-defined]
                assert response.startswith(b"+OK")
                assert b"\n".join(lines) + b"\n" == data
        finally:
            client.quit()


def test_subset_cache_is_bounded_and_keyed_by_everything() -> None:
    from mailtalk.servers.imap import fetch as imap_fetch

    cost = 100 + imap_fetch._ENTRY_BYTES
    cache = imap_fetch._SubsetCache(10 * cost)
    inbox = (("from",), False, "/m/alice", 7)
    for uid in range(1, 5):
        cache.put(inbox, uid, b"x" * 100)
    assert cache.get(inbox, 4) == b"x" * 100
    for other in [(("from",), True, "/m/alice", 7), (("to",), False, "/m/alice", 7),
                  (("from",), False, "/m/bob", 7), (("from",), False, "/m/alice", 8)]:
        assert cache.get(other, 4) is None  # fields, NOT, folder and UIDVALIDITY all count
    # A bigger listing of another folder: the least recently used group goes first...
    sent = (("from",), False, "/m/alice/.Sent", 7)
    for uid in range(1, 8):
        cache.put(sent, uid, b"y" * 100)
    assert cache.get(inbox, 1) is None and cache.get(sent, 7) == b"y" * 100
    # ... and a listing bigger than the whole cache keeps what it has: every pass over it
    # is answered in part, none lost to its own later answers.
    for uid in range(8, 30):
        cache.put(sent, uid, b"y" * 100)
    assert [uid for uid in range(1, 30) if cache.get(sent, uid)] == list(range(1, 11))
    assert cache._bytes <= 10 * cost
