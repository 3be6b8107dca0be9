"""Tests for the relay queue: messages with JSON envelopes, published in that order."""

from __future__ import annotations

import errno
import json
import os
import signal
import stat
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailtalk.store import Delivery, Envelope, Queue, StoreFullError, StoreLayout
from mailtalk.store import filesystem as filesystem_module
from mailtalk.store.queue import ORPHAN_SECONDS


def make_queue(root: Path) -> Queue:
    queue = StoreLayout(root).queue
    queue.create()
    return queue


def sample_envelope() -> Envelope:
    return Envelope(
        mail_from="sender@example.org",
        rcpt_to=["a@example.net", "b@example.net"],
        client="192.0.2.7",
        helo="client.example.org",
        received_at=datetime(2024, 5, 1, 12, 30, 5, tzinfo=UTC),
    )


def everything_in(queue: Queue) -> dict[str, list[str]]:
    return {
        directory.name: sorted(path.name for path in directory.iterdir())
        for directory in (queue.tmp_dir, queue.messages_dir, queue.envelopes_dir)
    }


def test_create_makes_private_directories(tmp_path: Path) -> None:
    queue = make_queue(tmp_path)
    queue.create()

    for directory in (queue.path, queue.tmp_dir, queue.messages_dir, queue.envelopes_dir):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700


def test_enqueue_then_list(tmp_path: Path) -> None:
    queue = make_queue(tmp_path)
    message = b"Subject: relay me\n\nbody\n" * 1000

    with queue.begin(sample_envelope(), hostname="mx") as delivery:
        delivery.write(message)
        (message_path,) = delivery.commit()

    (queued,) = queue.list()
    assert queued.id == message_path.name
    assert queued.message_path == message_path == queue.messages_dir / queued.id
    assert queued.message_path.read_bytes() == message
    assert queued.size == len(message)
    assert queued.envelope == sample_envelope()
    assert queued.envelope.rcpt_to == ("a@example.net", "b@example.net")
    assert stat.S_IMODE(queued.message_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(queued.envelope_path.stat().st_mode) == 0o600
    assert everything_in(queue)["tmp"] == []


def test_envelope_file_is_the_documented_json(tmp_path: Path) -> None:
    queue = make_queue(tmp_path)
    with queue.begin(sample_envelope()) as delivery:
        delivery.write(b"12345")
        (message_path,) = delivery.commit()

    record = json.loads((queue.envelopes_dir / (message_path.name + ".json")).read_text())
    assert record == {
        "id": message_path.name,
        "mail_from": "sender@example.org",
        "rcpt_to": ["a@example.net", "b@example.net"],
        "received_at": "2024-05-01T12:30:05+00:00",
        "client": "192.0.2.7",
        "helo": "client.example.org",
        "size": 5,
    }


def test_one_delivery_reaches_local_maildirs_and_the_queue(tmp_path: Path) -> None:
    layout = StoreLayout(tmp_path)
    alice, bob = layout.maildir("alice"), layout.maildir("bob")
    for maildir in (alice, bob):
        maildir.create()
    queue = make_queue(tmp_path)
    message = b"Subject: to everyone\n\n" + b"x" * 500_000

    with Delivery([alice, queue.enqueue_target(sample_envelope()), bob]) as delivery:
        delivery.write(message)
        alice_path, queued_path, bob_path = delivery.commit()

    assert alice.new_messages() == [alice_path]
    assert bob.new_messages() == [bob_path]
    assert [queued.message_path for queued in queue.list()] == [queued_path]
    for path in (alice_path, queued_path, bob_path):
        assert path.read_bytes() == message
        # Streamed once: one inode, hard-linked into every target.
        assert path.stat().st_nlink == 3
    assert list(alice.tmp_dir.iterdir()) == list(bob.tmp_dir.iterdir()) == []
    assert everything_in(queue)["tmp"] == []


def test_remove_takes_out_envelope_and_message(tmp_path: Path) -> None:
    queue = make_queue(tmp_path)
    for _ in range(2):
        with queue.begin(sample_envelope()) as delivery:
            delivery.write(b"mail")
            delivery.commit()
    first, second = queue.list()

    queue.remove(first)

    assert queue.list() == [second]
    assert not first.message_path.exists()
    assert not first.envelope_path.exists()


def test_failing_to_write_the_envelope_takes_the_message_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue(tmp_path)

    def full_disk(self: Queue, envelope_path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Queue, "_write_envelope", full_disk)
    with pytest.raises(StoreFullError), queue.begin(sample_envelope()) as delivery:
        delivery.write(b"mail")
        delivery.commit()

    assert everything_in(queue) == {"tmp": [], "messages": [], "envelopes": []}


def test_failing_after_the_envelope_rename_never_leaves_it_without_its_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # fsync of envelopes/ fails after the rename: both must go, envelope first.
    queue = make_queue(tmp_path)
    real_fsync_directory = filesystem_module.fsync_directory

    def fsync_directory(path: Path) -> None:
        if path == queue.envelopes_dir:
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync_directory(path)

    monkeypatch.setattr(filesystem_module, "fsync_directory", fsync_directory)
    with pytest.raises(OSError, match="input/output error"), queue.begin(sample_envelope()) as d:
        d.write(b"mail")
        d.commit()

    assert everything_in(queue) == {"tmp": [], "messages": [], "envelopes": []}


KILLED_BEFORE_ENVELOPE = """
import os, signal, sys
from pathlib import Path
from mailtalk.store import Envelope, Queue

def crash(self, envelope_path, data):
    os.kill(os.getpid(), signal.SIGKILL)  # the message is in messages/, its envelope not yet

Queue._write_envelope = crash
queue = Queue(Path(sys.argv[1]))
envelope = Envelope("s@example.org", ["r@example.net"], "192.0.2.1", "helo")
with queue.begin(envelope) as delivery:
    delivery.write(b"Subject: crash\\n\\nbody\\n")
    delivery.commit()
"""


def test_a_crash_between_message_and_envelope_leaves_an_orphan_that_recover_removes(
    tmp_path: Path,
) -> None:
    queue = make_queue(tmp_path)
    with queue.begin(sample_envelope()) as delivery:
        delivery.write(b"complete")
        delivery.commit()
    (complete,) = queue.list()

    crashed = subprocess.run(
        [sys.executable, "-c", KILLED_BEFORE_ENVELOPE, str(queue.path)], capture_output=True
    )

    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    contents = everything_in(queue)
    assert len(contents["messages"]) == 2
    assert contents["envelopes"] == [complete.id + ".json"]
    assert queue.list() == [complete]  # the orphan is not a queued message
    (orphan,) = (name for name in contents["messages"] if name != complete.id)
    # The staging file was the message itself (renamed into messages/): no leftover.
    assert contents["tmp"] == []

    # Young leftovers may belong to an enqueue still running elsewhere: kept.
    assert queue.recover() == []
    old = time.time() - ORPHAN_SECONDS - 60
    for leftover in [queue.messages_dir / orphan, *queue.tmp_dir.iterdir()]:
        os.utime(leftover, (old, old))

    removed = queue.recover()

    assert removed == [queue.messages_dir / orphan]
    assert everything_in(queue) == {
        "tmp": [],
        "messages": [complete.id],
        "envelopes": [complete.id + ".json"],
    }
    assert queue.list() == [complete]
