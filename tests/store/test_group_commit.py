"""Group commit of the Maildir ``new/`` fsync: concurrent deliveries share one
directory fsync, and none returns before an fsync that began after its rename."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from mailtalk.store import Delivery, Maildir, StoreError
from mailtalk.store.filesystem import fsync_directory_shared
from tests.store.fsync_trace import Trace

THREADS = 8
EACH = 10


def test_concurrent_deliveries_share_the_fsync_of_new_and_each_is_covered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildir = Maildir(tmp_path / "Maildir")
    maildir.create()
    trace = Trace(monkeypatch)
    returned: dict[str, int] = {}
    errors: list[BaseException] = []

    def deliver_some(worker: int) -> None:
        try:
            for n in range(EACH):
                with Delivery([maildir]) as delivery:
                    delivery.write(b"Subject: %d/%d\n\nbody\n" % (worker, n))
                    (path,) = delivery.commit()
                returned[os.fspath(path)] = trace.tick()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=deliver_some, args=(w,)) for w in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(returned) == THREADS * EACH == len(os.listdir(maildir.new_dir))
    new_syncs = [(b, e) for path, b, e in trace.fsyncs if path == os.fspath(maildir.new_dir)]
    for path, when_returned in returned.items():
        _, renamed = trace.renames[path]
        # Durable: some fsync of new/ began after the rename and ended before commit returned.
        assert any(renamed < began and ended < when_returned for began, ended in new_syncs), path
    # Shared: fewer fsyncs of new/ than deliveries (they overlap: each takes 10 ms).
    assert len(new_syncs) < THREADS * EACH * 0.75, len(new_syncs)


def run_in_threads(path: Path, count: int) -> list[BaseException | None]:
    results: list[BaseException | None] = [None] * count

    def one(i: int) -> None:
        try:
            fsync_directory_shared(path)
        except BaseException as error:
            results[i] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
        time.sleep(0.002)  # the first is inside its fsync when the others arrive
    for thread in threads:
        thread.join()
    return results


def test_a_failed_fsync_fails_exactly_the_callers_it_was_to_cover(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trace = Trace(monkeypatch, slow=0.05)
    # The first caller's fsync fails; the others arrived during it, so a new one
    # covers them and succeeds.
    trace.fail_directory = OSError(errno.EIO, "Input/output error")
    first, *others = run_in_threads(tmp_path, 4)
    assert isinstance(first, OSError) and first.errno == errno.EIO
    assert others == [None, None, None]
    # A caller never takes a later success for the fsync that failed it, nor does a
    # failure of one directory reach callers of another.
    assert run_in_threads(tmp_path, 2) == [None, None]


def test_a_failed_fsync_of_new_is_a_store_error_and_leaves_nothing_in_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    maildir = Maildir(tmp_path / "Maildir")
    maildir.create()
    trace = Trace(monkeypatch, slow=0)
    trace.fail_directory = OSError(errno.EIO, "Input/output error")
    with pytest.raises(StoreError), Delivery([maildir]) as delivery:
        delivery.write(b"Subject: x\n\nbody\n")
        delivery.commit()
    assert os.listdir(maildir.tmp_dir) == []
