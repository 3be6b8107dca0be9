"""Durability: kill -9 at random moments, and the fsync/rename order a power cut needs.

SIGKILL leaves the kernel's page cache intact, so the kill test proves the
atomicity (nothing partial in new/, nothing committed lost to the process
dying); the order test proves what a power cut additionally needs: the data is
fsynced before its name appears in new/, and new/ is fsynced before commit()
returns.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtalk.store import Delivery, Envelope, Maildir, Queue, StoreLayout

SCRIPT = Path(__file__).with_name("crash_delivery_loop.py")
ROUNDS = 10


def stored_files(paths: list[Path]) -> Iterator[tuple[Path, bytes]]:
    """Each file with its content; hard links of one inode are read once."""
    contents: dict[tuple[int, int], bytes] = {}
    for path in paths:
        status = path.stat()
        inode = (status.st_dev, status.st_ino)
        if inode not in contents:
            contents[inode] = path.read_bytes()
        yield path, contents[inode]


def body_digest_if_complete(content: bytes) -> str | None:
    """The body's SHA-256 if the message is complete, as its trailer says, else None."""
    body, separator, trailer = content.rpartition(b"\nX-Body-Length: ")
    length, _, rest = trailer.partition(b"\nX-Body-SHA256: ")
    digest = hashlib.sha256(body).hexdigest()
    if separator and length == str(len(body)).encode() and rest == digest.encode() + b"\n":
        return digest
    return None


def test_kill_9_at_random_moments_never_leaves_partial_mail_nor_loses_committed_mail(
    tmp_path: Path,
) -> None:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    layout = StoreLayout(tmp_path)
    alice, bob, queue = layout.maildir("alice"), layout.maildir("bob"), layout.queue
    for store in (alice, bob, queue):
        store.create()
    committed_total = interrupted_rounds = 0

    for round_number in range(ROUNDS):
        writer = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(tmp_path), str(seed + round_number)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        time.sleep(rng.uniform(0.1, 0.35))
        writer.send_signal(signal.SIGKILL)
        out, err = writer.communicate(timeout=10)
        context = f"seed {seed}, round {round_number}: {err.decode()[-2000:]}"
        assert writer.returncode == -signal.SIGKILL, context
        # A line cut short by the kill is not a report; every full one is.
        committed = [line.split() for line in out.decode().split("\n")[:-1]]
        committed_total += len(committed)

        # Nothing partial anywhere a reader looks.
        published = [*alice.new_messages(), *bob.new_messages(), *queue.messages_dir.iterdir()]
        digests = {}
        for path, content in stored_files(published):
            digest = body_digest_if_complete(content)
            assert digest, f"partial message {path} ({context})"
            digests[path] = digest
        # Every message commit() returned for is there, in all three targets.
        for alice_name, bob_name, queue_id, digest in committed:
            assert digests.get(alice.new_dir / alice_name) == digest, context
            assert digests.get(bob.new_dir / bob_name) == digest, context
            assert digests.get(queue.messages_dir / queue_id) == digest, context
        # Only the killed delivery may be published without being reported, in some
        # targets: if in the queue, its envelope may be missing (an orphan).
        unreported = set(digests.values()) - {line[3] for line in committed}
        assert len(unreported) <= 1, context
        # An envelope always has its message.
        queued = queue.list()
        assert all(message.message_path.exists() for message in queued), context
        assert {message.id for message in queued} >= {line[2] for line in committed}, context

        # Leftovers of the killed delivery are only ever in tmp/ (or one orphan).
        leftovers = [*alice.tmp_dir.iterdir(), *bob.tmp_dir.iterdir(), *queue.tmp_dir.iterdir()]
        interrupted_rounds += bool(leftovers)
        for path in [*published, *leftovers, *queue.envelopes_dir.iterdir()]:
            path.unlink()  # keep the disk use of the test small

    print(f"seed {seed}: {committed_total} messages committed, {interrupted_rounds} kills mid-way")
    assert committed_total > 0
    assert interrupted_rounds > 0


@pytest.fixture
def syscalls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Records fsync, link and rename calls, naming what each one touched."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to name what an fsync touched")
    calls: list[tuple[str, str]] = []
    real_fsync, real_rename, real_link = os.fsync, os.rename, os.link

    def fsync(fd: int) -> None:
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(source: str | Path, destination: str | Path) -> None:
        calls.append(("rename", f"{source} -> {destination}"))
        real_rename(source, destination)

    def link(source: str | Path, destination: str | Path) -> None:
        calls.append(("link", f"{source} -> {destination}"))
        real_link(source, destination)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "link", link)
    return calls


def test_data_is_synced_before_it_is_named_in_new_and_new_before_commit_returns(
    tmp_path: Path, syscalls: list[tuple[str, str]]
) -> None:
    maildir = Maildir(tmp_path / "Maildir")
    maildir.create()
    queue = Queue(tmp_path / "queue")
    queue.create()
    envelope = Envelope("s@example.org", ["r@example.net"], "192.0.2.1", "helo")
    syscalls.clear()

    with Delivery([maildir, queue.enqueue_target(envelope)]) as delivery:
        delivery.write(b"Subject: durable\n\nbody\n")
        maildir_path, queued_path = delivery.commit()

    kinds = [kind for kind, _ in syscalls]
    first_fsync = syscalls[0]
    assert first_fsync[0] == "fsync" and first_fsync[1].startswith(str(maildir.tmp_dir))
    steps = [f"{kind} {what}" for kind, what in syscalls]

    def position(kind: str, fragment: str) -> int:
        return next(i for i, step in enumerate(steps) if step.startswith(kind) and fragment in step)

    # Maildir: data synced, renamed into new/, new/ synced.
    assert 0 < position("rename", f"-> {maildir_path}") < position("fsync", f"{maildir.new_dir}")
    # Queue: message renamed, messages/ synced, envelope synced, renamed, envelopes/ synced.
    envelope_path = f"{queue.envelopes_dir}/{queued_path.name}.json"
    order = [
        position("rename", f"-> {queued_path}"),
        position("fsync", str(queue.messages_dir)),
        position("fsync", f"{queue.tmp_dir}/{queued_path.name}.json"),
        position("rename", f"-> {envelope_path}"),
        position("fsync", str(queue.envelopes_dir)),
    ]
    assert order == sorted(order)
    # The first target takes the staging file itself; the other a hard link to it.
    assert kinds.count("link") == 1
