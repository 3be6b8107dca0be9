"""The journal's writer and readers: JSON lines, rotation, partial lines, errors at start.

The sessions' events are tested in ``test_journal_sessions.py`` and
``test_journal_delivery.py``; here the file itself: bounded by rotation (and memory
flat while it rotates), read whole lines only (a reader never sees half an event, a
follower picks the rest up later, across a rotation), a file that cannot be opened
stops the start with one line, and a write that fails loses the event, not the session.
"""

from __future__ import annotations

import io
import json
import smtplib
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtalk.servers.api import run_servers
from mailtalk.servers.app import ConfigError, ReferenceServers, ServeConfig
from mailtalk.servers.journal import (
    HEAD_LIMIT,
    HeadCollector,
    Journal,
    JournalReader,
    parse_line,
    read_events,
    short_text,
    subject_of,
)


def write_numbered(journal: Journal, start: int, count: int, pad: int = 100) -> None:
    for number in range(start, start + count):
        journal.write("mx.test", "command", n=number, text="x" * pad)


# -- rotation -------------------------------------------------------------------------


def test_rotation_keeps_the_file_bounded(tmp_path: Path) -> None:
    path = tmp_path / "journal.jsonl"
    journal = Journal(path, max_bytes=4096)
    write_numbered(journal, 0, 500)
    rotated = path.with_name("journal.jsonl.1")
    assert rotated.is_file() and path.is_file()
    assert 0 < path.stat().st_size <= 4096
    assert 4096 - 300 < rotated.stat().st_size <= 4096
    numbers = [event["n"] for event in read_events(path)]
    # The newest events, in order, the older ones dropped with the FILE.1 before.
    assert numbers == list(range(numbers[0], 500))
    assert 20 < len(numbers) < 100
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    journal.close()


def test_rotation_memory_stays_flat(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl", max_bytes=64 * 1024)
    write_numbered(journal, 0, 2000)  # warm up: the file has rotated already
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        write_numbered(journal, 2000, 20000)  # ~3 MiB through a 64 KiB journal
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert grown < 64 * 1024, f"memory grew by {grown} bytes"
    assert sum(p.stat().st_size for p in tmp_path.iterdir()) <= 2 * 64 * 1024
    journal.close()


def test_standard_output_is_never_rotated() -> None:
    stream = io.StringIO()
    journal = Journal(None, max_bytes=100, stream=stream)
    write_numbered(journal, 0, 20)
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["n"] for line in lines] == list(range(20))


def test_each_event_is_one_line_with_time_server_and_kind(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.write("mx.example.net", "command", text="two\r\nlines é")
    (line,) = path.read_text(encoding="utf-8").splitlines()
    event = json.loads(line)
    assert list(event)[:3] == ["time", "server", "event"]
    assert event["server"] == "mx.example.net" and event["event"] == "command"
    assert event["time"].endswith("Z") and len(event["time"]) == len("2026-12-06T20:42:44.123Z")
    assert "é" in line  # UTF-8, not \u escapes: readable with grep


def test_text_that_is_no_unicode_is_written_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    journal.write("a", "command", text="\udc80 lone surrogate")
    journal.write("a", "close", reason="quit")
    assert journal.error is None
    assert [e["event"] for e in read_events(path)] == ["command", "close"]


def test_listeners_get_every_event() -> None:
    seen: list[dict[str, object]] = []
    journal = Journal(None, stream=io.StringIO())
    journal.listeners.append(seen.append)
    journal.write("a", "connect", port=25)
    journal.write("a", "close", reason="quit")
    assert [(e["event"], e["server"]) for e in seen] == [("connect", "a"), ("close", "a")]


# -- reading: half-written lines ------------------------------------------------------


def test_read_events_skips_a_half_written_last_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path)
    write_numbered(journal, 0, 2)
    journal.close()
    with path.open("a") as handle:
        handle.write('{"time":"2026-12-06T20:42:44.123Z","server":"a","event":"comm')
    assert [event["n"] for event in read_events(path)] == [0, 1]


def test_reader_waits_for_the_rest_of_a_line(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    reader = JournalReader(path)
    assert reader.read() == []  # no file yet
    line = json.dumps({"time": "t", "server": "a", "event": "close", "reason": "quit"}) + "\n"
    with path.open("w") as handle:
        handle.write(line + line[:20])
        handle.flush()
        assert [e["reason"] for e in reader.read()] == ["quit"]
        assert reader.read() == []  # still half a line
        handle.write(line[20:])
        handle.flush()
        assert [e["reason"] for e in reader.read()] == ["quit"]
        handle.write("not json\n")
        handle.flush()
        assert reader.read() == []  # a damaged line is skipped, not fatal


def test_reader_follows_across_rotation(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    journal = Journal(path, max_bytes=2048)
    reader = JournalReader(path)
    seen: list[int] = []
    for start in range(0, 294, 7):  # read between bursts that each rotate at most once
        write_numbered(journal, start, 7, pad=40)
        seen += [event["n"] for event in reader.read()]
    assert path.with_name("j.jsonl.1").exists()
    assert seen == list(range(294))  # nothing lost at a rotation, nothing twice
    journal.close()


@settings(max_examples=60, deadline=None)
@given(
    texts=st.lists(st.text(min_size=0, max_size=30), min_size=1, max_size=12),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_reader_gives_each_event_once_however_the_bytes_arrive(
    tmp_path_factory: pytest.TempPathFactory, texts: list[str], cuts: list[int]
) -> None:
    path = tmp_path_factory.mktemp("follow") / "j.jsonl"
    data = "".join(
        json.dumps({"server": "a", "event": "command", "text": text}, ensure_ascii=False) + "\n"
        for text in texts
    ).encode()
    reader = JournalReader(path)
    got = []
    position = 0
    with path.open("wb") as handle:
        for cut in [*sorted({min(cut, len(data)) for cut in cuts}), len(data)]:
            handle.write(data[position:cut])
            handle.flush()
            position = max(position, cut)
            got += [event["text"] for event in reader.read()]
    assert got == texts


@given(st.binary(max_size=200))
def test_parse_line_never_raises(data: bytes) -> None:
    event = parse_line(data)
    assert event is None or "event" in event


def test_short_text_is_one_bounded_line() -> None:
    assert short_text("a\r\nb") == "a  b"
    long = short_text("x" * 500)
    assert len(long) == 200 and long.endswith("…")


def test_subject_is_decoded_from_the_head() -> None:
    collector = HeadCollector()
    collector.feed(b"From: a@b\r\nSubject: =?utf-8?q?h=C3=A9llo?=\r\n")
    collector.feed(b" world\r\n\r\nbody Subject: no\r\n")
    collector.feed(b"more body\r\n")
    assert subject_of(collector.head) == "héllo world"
    assert subject_of(b"From: a@b\r\n\r\n") is None
    assert subject_of(b"Subject: caf\xe9\r\n\r\n") == "caf\ufffd"  # raw 8-bit: shown as such
    big = HeadCollector()
    for _ in range(100):
        big.feed(b"X-Filler: " + b"y" * 1000 + b"\r\n")
    assert len(big.head) == HEAD_LIMIT


# -- errors --------------------------------------------------------------------------


def test_a_journal_that_cannot_be_opened_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    journal = Journal(tmp_path / "file" / "journal.jsonl")  # under a file: cannot be made
    with pytest.raises(ConfigError) as caught:
        ReferenceServers(ServeConfig(root=tmp_path / "root", journal=journal))
    message = str(caught.value)
    assert message.startswith(f"cannot write the journal {tmp_path / 'file' / 'journal.jsonl'}")
    assert "\n" not in message


class Broken(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_failing_journal_loses_events_not_sessions(tmp_path: Path) -> None:
    errors: list[OSError] = []
    journal = Journal(None, stream=Broken())
    journal.on_error = errors.append
    with run_servers(tmp_path, smtp=0, users=[("alice", "pw")], journal=journal) as servers:
        for _ in range(2):
            with smtplib.SMTP("127.0.0.1", servers.port("smtp"), timeout=10) as client:
                client.sendmail("bob@example.org", ["alice@localhost"], b"Subject: s\r\n\r\nx\r\n")
        assert len(servers.messages("alice")) == 2
    assert len(errors) == 1 and isinstance(errors[0], BrokenPipeError)
    assert isinstance(journal.error, BrokenPipeError)
