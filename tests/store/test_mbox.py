"""An mbox file as a POP3 maildrop: splitting it as qpopper does, reading messages back,
and rewriting it without the deleted ones, whole or not at all.

The parser is fed whole, a byte at a time (one-byte preads) and in odd blocks, and by
Hypothesis with any bytes: it parses or says it cannot (MboxFormatError), nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.store.mbox import (
    MboxChangedError,
    MboxFormatError,
    MboxMaildrop,
    MboxMessage,
    MboxMessageReader,
    entry,
    is_from_line,
    pieces,
    quote,
    scan,
    unquote,
)
from mailtalk.store.sizes import RFC822SizeCounter
from tests.tinyfs import fill, mounted_tmpfs

Opener = Callable[[bytes], int]  # bytes -> a descriptor open on a file holding them

FIRST = b"From: Alice <alice@isp.test>\nSubject: one\n\nFrom the start.\n>From here\n"
SECOND = b"Subject: two\n\nbody\n"


class Opened:
    """A file of bytes, open for reading by descriptor."""

    def __init__(self, path: Path, data: bytes) -> None:
        path.write_bytes(data)
        self.fd = os.open(path, os.O_RDONLY)

    def close(self) -> None:
        os.close(self.fd)


@pytest.fixture
def opened(tmp_path: Path) -> Iterator[Opener]:
    files: list[Opened] = []

    def make(data: bytes) -> int:
        files.append(Opened(tmp_path / f"mbox{len(files)}", data))
        return files[-1].fd

    yield make
    for file in files:
        file.close()


def texts(fd: int, messages: list[MboxMessage]) -> list[bytes]:
    out = []
    for message in messages:
        with MboxMessageReader(fd, message) as reader:
            out.append(reader.read())
    return out


# -- From_ lines ----------------------------------------------------------------------


@pytest.mark.parametrize("line", [
    b"From alice@isp.test Tue Dec  2 12:30:00 2025\n",
    b"From alice@isp.test  Tue Dec  2 12:30:00 2025\n",  # Postfix local(8): two spaces
    b"From MAILER-DAEMON Fri Jul  8 12:08:34 2011\n",
    b"From - Mon Jan 01 00:00:00 2024\n",  # Netscape/Thunderbird
    b"From user Wed Dec  2 05:53 1992\n",
    b"From user Wed Dec  2 05:53 PST 1992\n",
    b"From user Wed Dec  2 05:53:22 -0700 1992\n",
    b"From user Wed Dec  2 05:53:22 1992 -0700\n",
    b"From user Wed Dec 12 05:53:22 1992 PST remote from uucp.example\n",
    b"From user Wed Dec  2 05:53:22 1992\r\n",
])
def test_from_lines_qpopper_takes(line: bytes) -> None:
    assert is_from_line(line)


@pytest.mark.parametrize("line", [
    b"From: Alice <alice@isp.test>\n",  # a header, not an envelope
    b"From alice@isp.test\n",  # no date
    b"From alice@isp.test Tue Dec  2 2025\n",  # no time
    b"from alice@isp.test Tue Dec  2 12:30:00 2025\n",
    b">From alice@isp.test Tue Dec  2 12:30:00 2025\n",
    b" From alice@isp.test Tue Dec  2 12:30:00 2025\n",
    b"From alice@isp.test Tue Dec  2 12:30:00 2025",  # no line end
    b"From alice@isp.test Tue Dec  2 12:30:00 2025 \n",
    b"\n",
])
def test_lines_that_are_not_from_lines(line: bytes) -> None:
    assert not is_from_line(line)


# -- splitting ------------------------------------------------------------------------


def test_messages_are_split_unquoted_and_measured(opened: Opener) -> None:
    data = (b"From alice@isp.test Tue Dec  2 12:30:00 2025\n"
            b"Subject: one\n\n>From the start.\n>>From here\nFrom not after a blank\n\n"
            b"From bob  Tue Dec  2 12:30:01 2025\nSubject: two\n\nbody\n\n")
    fd = opened(data)
    messages, end = scan(fd)
    assert end == len(data)
    one = b"Subject: one\n\nFrom the start.\n>From here\nFrom not after a blank\n"
    assert texts(fd, messages) == [one, b"Subject: two\n\nbody\n"]
    first, second = messages
    assert (first.uid, first.offset, second.uid, second.offset) == (1, 0, 2, first.stop)
    assert data[first.offset:first.start] == b"From alice@isp.test Tue Dec  2 12:30:00 2025\n"
    assert data[first.end:first.stop] == b"\n"  # the empty line before the next From_
    assert first.size == len(one)  # two ">" fewer than the file holds
    assert first.rfc822_size == first.size + one.count(b"\n")
    assert first.pop3_size == first.rfc822_size and not first.unterminated
    assert first.uidl != second.uidl and len(first.uidl) == 40
    # entry() quotes what scan() unquotes.
    fd = opened(entry(one, "alice@isp.test", 1764678600) + entry(b"Subject: two\n\nbody\n",
                                                                "bob", 1764678601))
    assert texts(fd, scan(fd)[0]) == [one, b"Subject: two\n\nbody\n"]


def test_an_empty_file_is_an_empty_maildrop(opened: Opener) -> None:
    assert scan(opened(b"")) == ([], 0)


@pytest.mark.parametrize("data", [
    b"\nFrom alice@isp.test Tue Dec  2 12:30:00 2025\nSubject: x\n\nbody\n",
    b"From: Alice <alice@isp.test>\nSubject: x\n\nbody\n",
    b"From alice@isp.test\nSubject: x\n\nbody\n",
    b"\x01\x01\x01\x01\nSubject: an MMDF file\n\n\x01\x01\x01\x01\n",
    b"x",
])
def test_a_file_not_beginning_with_a_from_line_cannot_be_split(opened: Opener, data: bytes) -> None:
    with pytest.raises(MboxFormatError, match="the first line is not a From line"):
        scan(opened(data))


def test_a_from_line_separates_only_after_an_empty_line(opened: Opener) -> None:
    inner = b"From carol Tue Dec  2 12:30:00 2025\n"
    data = (b"From alice Tue Dec  2 12:30:00 2025\nSubject: x\n\nbody\n" + inner
            + b"more\n\n" + inner + b"Subject: y\n\n")
    fd = opened(data)
    messages, _ = scan(fd)
    assert texts(fd, messages) == [b"Subject: x\n\nbody\n" + inner + b"more\n", b"Subject: y\n"]


def test_an_overlong_line_is_never_a_separator(opened: Opener) -> None:
    long_from = b"From alice Tue Dec  2 12:30:00 2025" + b" " * 100 + b"\n"
    data = b"From a Tue Dec  2 12:30:00 2025\n\n" + b"x" * 300 + b"\n\n" + long_from
    fd = opened(data)
    messages, _ = scan(fd, piece=64)
    assert len(messages) == 1  # the long line has pieces: none of them a From_ line
    assert texts(fd, messages)[0] == data[data.index(b"\n") + 1:]


def test_a_last_message_without_a_line_end(opened: Opener) -> None:
    fd = opened(b"From a Tue Dec  2 12:30:00 2025\nSubject: x\n\nno end")
    (message,), _ = scan(fd)
    assert texts(fd, [message]) == [b"Subject: x\n\nno end"]
    assert message.unterminated and message.pop3_size == message.rfc822_size + 2


def test_crlf_files(opened: Opener) -> None:
    data = (b"From a Tue Dec  2 12:30:00 2025\r\nSubject: x\r\n\r\n>From y\r\n\r\n"
            b"From b Tue Dec  2 12:30:01 2025\r\nSubject: y\r\n\r\nz\r\n")
    fd = opened(data)
    messages, _ = scan(fd)
    assert texts(fd, messages) == [b"Subject: x\r\n\r\nFrom y\r\n", b"Subject: y\r\n\r\nz\r\n"]
    assert messages[0].rfc822_size == messages[0].size  # already CRLF


def test_identical_messages_get_different_uidls(opened: Opener) -> None:
    one = entry(SECOND, "bob", 0)
    fd = opened(one + one + one)
    messages, _ = scan(fd)
    assert len({m.uidl for m in messages}) == 3
    assert all(len(m.uidl) <= 70 for m in messages)


@pytest.mark.parametrize("block", [1, 2, 3, 7, 64])
def test_one_byte_at_a_time_is_the_same_as_whole(opened: Opener, block: int) -> None:
    data = (entry(FIRST, "alice", 0) + b"From x Tue Dec  2 12:30:00 2025\n" + b"y" * 200
            + b"\n\n" + entry(SECOND + b">>From z\n", "bob", 1) + b"tail without end")
    fd = opened(data)
    whole = scan(fd)
    assert scan(fd, block=block) == whole
    assert scan(fd, block=block, piece=50)[1] == len(data)


def test_reading_in_chunks_and_by_lines_is_the_same(opened: Opener) -> None:
    fd = opened(entry(FIRST * 50, "alice", 0))
    (message,), _ = scan(fd)
    with MboxMessageReader(fd, message) as reader:
        chunks = []
        while chunk := reader.read(7):
            chunks.append(chunk)
    with MboxMessageReader(fd, message) as reader:
        head = reader.read(3)
        lines = [head, *reader]
    expected = FIRST * 50
    assert b"".join(chunks) == b"".join(lines) == expected
    assert len(expected) == message.size


# -- Hypothesis -------------------------------------------------------------------------

_lines = st.lists(
    st.one_of(
        st.binary(max_size=20),
        st.sampled_from([b"", b"From x", b">From y", b">>From z", b"From a Tue Dec  2 12:30:00 "
                         b"2025", b"\r", b".", b"From "]),
    ),
    max_size=12,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_lines, max_size=5), st.integers(1, 40))
def test_what_entry_writes_scan_reads_back(tmp_path_factory, bodies, block: int) -> None:
    messages = [b"\n".join(lines) + b"\n" if lines else b"" for lines in bodies]
    data = b"".join(entry(message, "sender@example.test", 1e9 + n)
                    for n, message in enumerate(messages))
    path = tmp_path_factory.mktemp("rt") / "mbox"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        found, end = scan(fd, block=block)
        assert texts(fd, found) == messages
        assert end == len(data)
    finally:
        os.close(fd)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=400), st.integers(1, 64), st.integers(8, 80))
def test_any_bytes_parse_or_are_refused(tmp_path_factory, data: bytes, block: int,
                                        piece: int) -> None:
    path = tmp_path_factory.mktemp("any") / "mbox"
    path.write_bytes(b"From a Tue Dec  2 12:30:00 2025\n" + data if data[:1] == b"!" else data)
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            found, end = scan(fd, block=block, piece=piece)
        except MboxFormatError:
            return
        assert end == path.stat().st_size
        assert found or end == 0
        for message, text in zip(found, texts(fd, found), strict=True):
            counter = RFC822SizeCounter()
            counter.feed(text)
            assert (message.size, message.rfc822_size) == (counter.size, counter.rfc822_size)
            assert message.offset < message.start <= message.end <= message.stop
        assert [m.stop for m in found[:-1]] == [m.offset for m in found[1:]]
        joined = b"".join(p for _, p in pieces(fd, block=block, piece=piece))
        assert joined == path.read_bytes()
    finally:
        os.close(fd)


@given(st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=8))
def test_quoting_round_trips(lines: list[bytes]) -> None:
    """mboxrd: quoted, no line is a From_ line any more; unquoted, every line is back."""
    quoted = quote(b"\n".join(lines)).split(b"\n")
    assert not any(line.startswith(b"From ") for line in quoted)
    assert [unquote(line, True) for line in quoted] == (lines or [b""])


# -- a session's maildrop, and deleting -------------------------------------------------


def write_mbox(path: Path, *messages: bytes) -> bytes:
    data = b"".join(entry(m, f"s{n}", 1e9 + n) for n, m in enumerate(messages))
    path.write_bytes(data)
    return data


def test_remove_rewrites_without_the_deleted_and_keeps_what_came_meanwhile(
    tmp_path: Path,
) -> None:
    path = tmp_path / "mbox"
    data = write_mbox(path, FIRST, SECOND, b"Subject: three\n\n3\n")
    path.chmod(0o640)
    with MboxMaildrop(path) as drop:
        first, second, third = drop.messages()
        late = entry(b"Subject: late\n\nwhile you read\n", "late", 2e9)
        with path.open("ab") as appending:
            appending.write(late)
        drop.remove([second.uid])
    assert path.read_bytes() == (data[first.offset:first.stop] + data[third.offset:third.stop]
                                 + late)
    assert path.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["mbox"]  # no temporary file left
    with MboxMaildrop(path) as drop:
        assert [m.uidl for m in drop.messages()][:2] == [first.uidl, third.uidl]


def test_removing_every_message_leaves_an_empty_mbox(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    write_mbox(path, FIRST, SECOND)
    with MboxMaildrop(path) as drop:
        drop.remove([1, 2])
    assert path.read_bytes() == b""


def test_removing_nothing_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    write_mbox(path, FIRST)
    before = path.stat()
    with MboxMaildrop(path) as drop:
        drop.remove([])
        drop.remove([7])
    assert path.stat().st_ino == before.st_ino


def test_a_file_replaced_meanwhile_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    write_mbox(path, FIRST, SECOND)
    with MboxMaildrop(path) as drop:
        replacement = tmp_path / "new"
        write_mbox(replacement, SECOND)
        os.rename(replacement, path)  # an editor saving by renaming
        with pytest.raises(MboxChangedError):
            drop.remove([1])
        # RETR still reads the file as it was scanned.
        with drop.open_message(1) as reader:
            assert reader.read() == FIRST
    assert path.read_bytes() == entry(SECOND, "s0", 1e9)


def test_a_file_shortened_or_rewritten_in_place_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "mbox"
    data = write_mbox(path, FIRST, SECOND)
    with MboxMaildrop(path) as drop:
        with path.open("r+b") as editing:
            editing.write(b"X")  # the first From_ line is one no longer
        with pytest.raises(MboxChangedError):
            drop.remove([2])
        assert path.read_bytes() == b"X" + data[1:]
        os.truncate(path, 10)
        with pytest.raises(MboxChangedError):
            drop.remove([2])


def test_a_full_disk_during_the_rewrite_leaves_the_mbox_whole(tmp_path: Path) -> None:
    with mounted_tmpfs(tmp_path / "tiny", "1m") as tiny:
        path = tiny / "mbox"
        data = write_mbox(path, FIRST * 2000, SECOND)
        fill(tiny)
        with MboxMaildrop(path) as drop, pytest.raises(OSError) as raised:
            drop.remove([2])
        assert raised.value.errno == 28  # ENOSPC
        assert path.read_bytes() == data
        assert sorted(p.name for p in tiny.iterdir()) == ["filler", "mbox"]
