"""The commit threads of a server (``store/commits.py``): deliveries that end together
are committed together (one fsync of ``new/`` for them, one wake-up of the event loop),
and each session hears of its own outcome only once its message is durable: its file
fsynced before the rename into ``new/``, ``new/`` fsynced after it."""

from __future__ import annotations

import asyncio
import errno
import os
from pathlib import Path

import pytest

from mailtalk.store import Delivery, DeliveryStateError, Maildir, StoreError, commits
from mailtalk.store.commits import BatchCommitter
from tests.store.fsync_trace import Trace

SESSIONS = 8
EACH = 5


@pytest.fixture
def maildir(tmp_path: Path) -> Maildir:
    maildir = Maildir(tmp_path / "Maildir")
    maildir.create()
    return maildir


@pytest.fixture
def wakeups(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many outcomes each wake-up of the event loop carried."""
    carried: list[int] = []
    settle = commits._settle

    def counting(settled: list[object]) -> None:
        carried.append(len(settled))
        settle(settled)  # type: ignore[arg-type]

    monkeypatch.setattr(commits, "_settle", counting)
    return carried


async def deliver(committer: BatchCommitter, maildir: Maildir, text: bytes) -> list[Path]:
    delivery = Delivery([maildir])
    delivery.write(text)
    return await committer.commit(delivery)


def test_sessions_ending_together_share_the_fsync_of_new_and_each_is_durable_first(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch, wakeups: list[int]
) -> None:
    trace = Trace(monkeypatch)
    committer = BatchCommitter()
    answered: dict[str, int] = {}  # final path -> when its session heard of it

    async def session(number: int) -> None:
        for n in range(EACH):
            (path,) = await deliver(committer, maildir, b"Subject: %d/%d\n\nbody\n" % (number, n))
            answered[os.fspath(path)] = trace.tick()

    async def main() -> None:
        await asyncio.gather(*(session(number) for number in range(SESSIONS)))

    asyncio.run(main())
    assert len(answered) == SESSIONS * EACH == len(os.listdir(maildir.new_dir))
    assert os.listdir(maildir.tmp_dir) == []
    new = os.fspath(maildir.new_dir)
    new_syncs = [(began, ended) for path, began, ended in trace.fsyncs if path == new]
    file_syncs = {path: ended for path, _, ended in trace.fsyncs if path != new}
    for path, heard in answered.items():
        source, renamed = trace.renames[path]
        # The data was synced before the message had its name in new/ ...
        assert file_syncs[source] < renamed, path
        # ... and new/ was synced after that, before the session heard of it.
        assert any(renamed < began and ended < heard for began, ended in new_syncs), path
    # Shared: fewer fsyncs of new/, and fewer wake-ups of the loop, than messages.
    assert len(new_syncs) < SESSIONS * EACH * 0.75, len(new_syncs)
    assert sum(wakeups) == SESSIONS * EACH
    assert len(wakeups) < SESSIONS * EACH * 0.75, wakeups


def run_sessions(committer: BatchCommitter, maildir: Maildir) -> dict[str, int]:
    """SESSIONS sessions delivering EACH messages; when each heard of its message."""
    answered: dict[str, int] = {}
    clock = iter(range(1, 1_000_000))

    async def session(number: int) -> None:
        for n in range(EACH):
            (path,) = await deliver(committer, maildir, b"Subject: %d/%d\n\nbody\n" % (number, n))
            answered[os.fspath(path)] = next(clock)

    async def main() -> None:
        await asyncio.gather(*(session(number) for number in range(SESSIONS)))

    asyncio.run(main())
    return answered


def test_a_disk_that_keeps_up_is_synced_by_the_committer_alone(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    Trace(monkeypatch, slow=0.005, fake_files=True)
    monkeypatch.setattr(commits, "SLOW_FSYNC_SECONDS", 0.05)  # nothing is that slow here
    committer = BatchCommitter()
    assert len(run_sessions(committer, maildir)) == SESSIONS * EACH
    assert committer._helpers == 0  # no thread woken for nothing


def test_a_slow_disk_calls_helpers_whose_fsyncs_overlap(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = Trace(monkeypatch, slow=0.005, slow_files=0.02)
    committer = BatchCommitter()
    assert len(run_sessions(committer, maildir)) == SESSIONS * EACH
    assert sorted(os.listdir(maildir.new_dir)) == sorted(p.name for p in maildir.new_messages())
    new = os.fspath(maildir.new_dir)
    files = [(began, ended) for path, began, ended in trace.fsyncs if path != new]
    assert len(files) == SESSIONS * EACH
    overlapping = sum(
        1 for i, (b1, e1) in enumerate(files) for b2, e2 in files[i + 1 :] if b1 < e2 and b2 < e1
    )
    assert committer._helpers > 0 and overlapping > 0, (committer._helpers, overlapping)


def test_the_fsync_of_new_runs_beside_the_next_batchs_file_fsyncs(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    # new/ and the files each slow to sync: the publisher's fsync of new/ for one batch
    # and the committer's fsyncs of the next batch's files wait for the disk together.
    trace = Trace(monkeypatch, slow=0.02, slow_files=0.01)
    committer = BatchCommitter()
    assert len(run_sessions(committer, maildir)) == SESSIONS * EACH
    new = os.fspath(maildir.new_dir)
    new_syncs = [(began, ended) for path, began, ended in trace.fsyncs if path == new]
    files = [(began, ended) for path, began, ended in trace.fsyncs if path != new]
    beside = sum(1 for b1, e1 in new_syncs if any(b1 < e2 and b2 < e1 for b2, e2 in files))
    assert beside > 0, (new_syncs, files)


def test_a_message_whose_fsync_fails_fails_alone(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = Trace(monkeypatch)
    trace.fail_content = b"Subject: doomed"
    committer = BatchCommitter()

    async def main() -> list[list[Path] | BaseException]:
        texts = [b"Subject: fine %d\n\nbody\n" % n for n in range(4)]
        texts.insert(2, b"Subject: doomed\n\nbody\n")
        return await asyncio.gather(
            *(deliver(committer, maildir, text) for text in texts), return_exceptions=True
        )

    outcomes = asyncio.run(main())
    failed = outcomes.pop(2)
    assert isinstance(failed, StoreError) and failed.errno == errno.EIO
    assert "syncing the message to disk" in str(failed)
    assert all(isinstance(outcome, list) for outcome in outcomes), outcomes
    delivered = sorted(path.read_bytes() for path in maildir.new_messages())
    assert delivered == sorted(b"Subject: fine %d\n\nbody\n" % n for n in range(4))
    assert os.listdir(maildir.tmp_dir) == []


def test_a_failed_fsync_of_new_fails_the_sessions_it_was_to_cover_and_no_later_one(
    maildir: Maildir, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = Trace(monkeypatch, slow=0)
    trace.fail_directory = OSError(errno.EIO, "Input/output error")
    committer = BatchCommitter()

    async def main() -> tuple[BaseException | list[Path], list[Path]]:
        first = await asyncio.gather(deliver(committer, maildir, b"a\n"), return_exceptions=True)
        second = await deliver(committer, maildir, b"b\n")
        return first[0], second

    failed, (later,) = asyncio.run(main())
    # Its name may be in new/, but not durably: the session must not answer 250.
    assert isinstance(failed, StoreError) and failed.errno == errno.EIO
    assert "publishing the message" in str(failed)
    assert later.read_bytes() == b"b\n"
    assert os.listdir(maildir.tmp_dir) == []


def test_committing_a_delivery_that_was_aborted_is_the_callers_error(maildir: Maildir) -> None:
    committer = BatchCommitter()
    delivery = Delivery([maildir])
    delivery.abort()
    with pytest.raises(DeliveryStateError):
        asyncio.run(committer.commit(delivery))
